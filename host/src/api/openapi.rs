//! The API's machine-readable contract: the OpenAPI 3.1 document, served
//! at `GET /api/v1/openapi.json`, and the browsable docs (Swagger UI, its
//! assets embedded in the binary) at `/api/v1/docs/`.
//!
//! Each handler documents itself with `#[utoipa::path]` (its parameters,
//! body, success and handler-specific errors) next to its code; [`ApiDoc`]
//! lists them. What follows from a route's declared [`Access`] in the
//! route table (`super::routes`) is not repeated on each handler but added
//! here by [`Contract`]: the bearer security requirement, 401, 403 and
//! (for `jobs:submit`) 429, and the errors every JSON body (400, 413, 415)
//! or query (400) can meet. Every 4xx/5xx is the one `Error` schema
//! (`super::error::ErrorBody`). A test walks the route table against the
//! document both ways, so a route cannot be served undocumented, nor
//! documented unserved.

use std::sync::{Arc, OnceLock};

use axum::extract::Path;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::AllOfBuilder;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::{ApiError, ErrorBody};
use super::{
    AppState, agents, artifacts, batch, events, jobs, logs, maskers, metrics, pipelines, policies,
    pools, tokens, workers,
};
use crate::auth::guard::{self, Routes};
use crate::auth::{Access, Scope};

/// Where the document is served.
pub const SPEC_PATH: &str = "/api/v1/openapi.json";
/// Where the docs UI is served (a directory: its assets are relative).
pub const DOCS_PATH: &str = "/api/v1/docs/";

/// The document: every API route, listed from the handlers' own
/// annotations, completed by [`Contract`].
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "Hodei Jobs API",
        description = "Submit and follow jobs, run the cluster. Ids are strings (jobs: UUIDs), \
            times RFC 3339 in UTC. A job's state is `state` everywhere: the job, the list \
            filter, the log's `done` event. Every 4xx/5xx body is an `Error`.",
        license(name = "Apache-2.0"),
    ),
    paths(
        jobs::submit, jobs::list, jobs::get, jobs::cancel, batch::submit,
        pipelines::create, pipelines::list, pipelines::get, pipelines::cancel, pipelines::retry,
        artifacts::list, artifacts::download,
        events::stream, events::pipeline_stream,
        logs::stream, logs::page, logs::search, logs::raw,
        workers::list, workers::queues, workers::healthz, metrics::scrape,
        pools::list, pools::get, pools::add,
        policies::list, policies::upload, policies::activate, policies::remove,
        maskers::list, maskers::upload, maskers::set_chain, maskers::remove,
        tokens::create, tokens::list, tokens::revoke,
        agents::create, agents::list, agents::revoke, agents::credentials,
        agents::revoke_credential,
        spec,
    ),
    // What the SSE stream's `data:` lines carry (its body is text).
    components(schemas(ErrorBody, Scope, logs::LineData<'static>, logs::DoneData, events::EventData<'static>)),
    modifiers(&Contract),
    tags(
        (name = "jobs", description = "Submit, list, get and cancel jobs"),
        (name = "pipelines", description = "DAGs of jobs: create, list, get, cancel, retry; their steps' artifacts"),
        (name = "logs", description = "A job's output: live (SSE), by window, searched, raw"),
        (name = "events", description = "What happens to jobs and workers, from the store's event log (SSE)"),
        (name = "workers", description = "The agents the host knows"),
        (name = "pools", description = "Worker pools and their providers"),
        (name = "policies", description = "Scheduling policies (Wasm components)"),
        (name = "maskers", description = "Secret maskers (Wasm components) and their chain"),
        (name = "tokens", description = "API tokens"),
        (name = "agents", description = "Agents' bootstrap tokens and credentials"),
        (name = "host", description = "Liveness, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// The security scheme's name in the document.
const BEARER: &str = "bearer";

/// Completes each operation from the route table (see the module docs).
#[derive(Debug)]
struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let mut bearer = Http::new(HttpAuthScheme::Bearer);
        bearer.description = Some(
            "An API token (`hodei_…`): the host's admin token (`DATA_DIR/admin.token`) or one \
             made with `POST /api/v1/tokens`. Each operation says which scope it needs."
                .to_owned(),
        );
        components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
        for name in ["SubmitJob", "PipelineStepBody"] {
            if let Some(submit) = components.schemas.get_mut(name) {
                let fields = std::mem::replace(submit, Ref::from_schema_name(name).into());
                *submit = AllOfBuilder::new()
                    .item(fields)
                    .item(utoipa::openapi::Schema::OneOf(jobs::command_or_args()))
                    .into();
            }
        }
        let table = super::routes().merge(super::upload_routes());
        for (path, method, access) in table.table() {
            // A catch-all segment (`{*path}`) is a plain parameter there.
            let Some(item) = doc.paths.paths.get_mut(&path.replace("{*", "{")) else {
                continue;
            };
            if let Some(op) = operation(item, method) {
                complete(op, *access);
            }
        }
    }
}

fn operation<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        _ => None,
    }
}

/// An `Error` response.
fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Error")))
                .build(),
        )
        .build()
}

/// Adds `status` unless the handler documented it (its text is closer).
fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_owned())
        .or_insert_with(|| error(description).into());
}

fn complete(op: &mut Operation, access: Access) {
    // Handlers are named after what they do in their module (`list`,
    // `get`): the id gets the tag in front, unique in the document.
    if let (Some(tag), Some(id)) = (op.tags.as_ref().and_then(|t| t.first()), &op.operation_id) {
        op.operation_id = Some(format!("{tag}_{id}"));
    }
    let scope = match access {
        Access::Public => None,
        Access::Authenticated => Some("any valid token".to_owned()),
        Access::Scope(scope) => Some(format!("the scope `{scope}` (or `admin`)")),
    };
    if let Some(needs) = scope {
        op.security = Some(vec![SecurityRequirement::new::<_, _, &str>(BEARER, [])]);
        let text = op.description.take().unwrap_or_default();
        op.description = Some(format!("{text}\n\nNeeds {needs}.").trim().to_owned());
        add(
            op,
            "401",
            "`UNAUTHENTICATED`: no, malformed, unknown, expired or revoked token",
        );
        if matches!(access, Access::Scope(_)) {
            add(op, "403", "`FORBIDDEN`: the token lacks the scope");
        }
        if access == Access::Scope(Scope::JobsSubmit) {
            add(
                op,
                "429",
                "`RATE_LIMITED`: the token submits faster than its limit (see `Retry-After`)",
            );
        }
        add(
            op,
            "503",
            "`STORE_UNAVAILABLE`: the job store failed; nothing was changed",
        );
    }
    if let Some(body) = &op.request_body {
        let json = body.content.contains_key("application/json");
        add(op, "413", "`PAYLOAD_TOO_LARGE`: the body is over the limit");
        if json {
            add(
                op,
                "400",
                "`VALIDATION_ERROR` (per field, in `details`) or `MALFORMED_JSON`",
            );
            add(
                op,
                "415",
                "`UNSUPPORTED_MEDIA_TYPE`: the body is not `application/json`",
            );
        } else {
            add(op, "500", "`INTERNAL_ERROR`: the component engine failed");
        }
    }
    let has_query = op.parameters.as_ref().is_some_and(|ps| {
        ps.iter()
            .any(|p| p.parameter_in == utoipa::openapi::path::ParameterIn::Query)
    });
    if has_query {
        add(
            op,
            "400",
            "`INVALID_QUERY`: a parameter is unknown or malformed",
        );
    }
}

/// The document as served (built once).
pub fn document() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"))
    })
}

/// The document as one host serves it: a request body's `queue` is an
/// enum of the queues this host is configured with (any other is refused
/// with 400, so the document says so rather than a bare name pattern).
pub fn document_for(fairness: &crate::scheduler::fairness::Fairness) -> String {
    fn patch(value: &mut serde_json::Value, queues: &[serde_json::Value]) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(queue) = map
                    .get_mut("properties")
                    .and_then(|p| p.get_mut("queue"))
                    .filter(|q| q.get("pattern").is_some())
                    && let Some(queue) = queue.as_object_mut()
                {
                    queue.remove("pattern");
                    queue.insert("enum".into(), queues.to_vec().into());
                }
                map.values_mut().for_each(|v| patch(v, queues));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| patch(v, queues)),
            _ => {}
        }
    }
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(document()) else {
        return document().to_owned();
    };
    let mut queues: Vec<serde_json::Value> = fairness
        .queues()
        .map(|(_, name, _)| serde_json::Value::from(&**name))
        .collect();
    queues.push(serde_json::Value::Null);
    patch(&mut doc, &queues);
    doc.to_string()
}

/// `GET /api/v1/openapi.json`: this document.
#[utoipa::path(
    get, path = "/api/v1/openapi.json", tag = "host",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub async fn spec(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let doc = Arc::clone(&state.openapi);
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

/// The docs UI's routes: pages for people, not in the document.
pub fn docs_routes() -> Routes<AppState> {
    use Access::Public;
    Routes::new()
        .route(
            DOCS_PATH.trim_end_matches('/'),
            guard::get(Public, || async { Redirect::permanent(DOCS_PATH) }),
        )
        .route(DOCS_PATH, guard::get(Public, docs_index))
        .route(
            &format!("{DOCS_PATH}{{*file}}"),
            guard::get(Public, docs_file),
        )
}

fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| Arc::new(utoipa_swagger_ui::Config::from(SPEC_PATH))))
}

async fn docs_index() -> Response {
    docs_asset("index.html")
}

async fn docs_file(Path(file): Path<String>) -> Response {
    docs_asset(&file)
}

/// One file of the embedded Swagger UI, or 404.
fn docs_asset(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, swagger_config()) {
        Ok(Some(asset)) => (
            [(header::CONTENT_TYPE, asset.content_type)],
            asset.bytes.into_owned(),
        )
            .into_response(),
        Ok(None) => ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no docs asset {file:?}"),
        )
        .into_response(),
        Err(err) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            format!("the docs asset {file:?} failed: {err}"),
        )
        .into_response(),
    }
}

#[cfg(test)]
#[path = "openapi_tests.rs"]
mod tests;
