//! The one place the REST API decides who may call what.
//!
//! Routes are added through [`Routes::route`], which takes only a
//! [`Scoped`] method router, and a [`Scoped`] is built only by naming the
//! [`Access`] of each method ([`get`], [`Scoped::post`], …): a route whose
//! access was not declared does not compile. The same declarations form
//! the table [`Routes::table`] answers, which the route × scope matrix test
//! walks.
//!
//! For a route needing a scope, the middleware reads
//! `Authorization: Bearer …`, answers 401 `UNAUTHENTICATED` (no, malformed,
//! unknown, expired or revoked token; with `WWW-Authenticate: Bearer`) or
//! 403 `FORBIDDEN` (the token lacks the scope), and otherwise hands the
//! request on with its [`Authorized`] in the extensions. An SSE response
//! to a token ends when that token is revoked.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use futures::StreamExt;

use super::{Access, ApiTokens, AuthMode, Authorized};
use crate::api::error::ApiError;
use crate::domain::Timestamp;

/// A method router each of whose methods declared its [`Access`].
#[derive(Debug)]
pub struct Scoped<S> {
    methods: MethodRouter<S>,
    declared: Vec<(Method, Access)>,
}

/// One declared route: path, method, what it needs.
pub type RouteEntry = (String, Method, Access);

/// The API's routes, each with its declared access (see the module docs).
#[derive(Debug)]
pub struct Routes<S> {
    router: Router<S>,
    table: Vec<RouteEntry>,
}

fn method_filter(method: &Method) -> MethodFilter {
    match *method {
        Method::POST => MethodFilter::POST,
        Method::PUT => MethodFilter::PUT,
        Method::DELETE => MethodFilter::DELETE,
        Method::PATCH => MethodFilter::PATCH,
        _ => MethodFilter::GET,
    }
}

impl<S: Clone + Send + Sync + 'static> Scoped<S> {
    fn with<H, T>(mut self, method: Method, access: Access, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        self.methods = self.methods.merge(on(method_filter(&method), handler));
        self.declared.push((method, access));
        self
    }

    /// Adds `POST` needing `access`.
    #[must_use]
    pub fn post<H: Handler<T, S>, T: 'static>(self, access: Access, handler: H) -> Self {
        self.with(Method::POST, access, handler)
    }

    /// Adds `PUT` needing `access`.
    #[must_use]
    pub fn put<H: Handler<T, S>, T: 'static>(self, access: Access, handler: H) -> Self {
        self.with(Method::PUT, access, handler)
    }

    /// Adds `DELETE` needing `access`.
    #[must_use]
    pub fn delete<H: Handler<T, S>, T: 'static>(self, access: Access, handler: H) -> Self {
        self.with(Method::DELETE, access, handler)
    }

    /// Adds `GET` needing `access`.
    #[must_use]
    pub fn get<H: Handler<T, S>, T: 'static>(self, access: Access, handler: H) -> Self {
        self.with(Method::GET, access, handler)
    }
}

fn empty<S: Clone + Send + Sync + 'static>() -> Scoped<S> {
    Scoped {
        methods: MethodRouter::new(),
        declared: Vec::new(),
    }
}

/// A route whose `GET` needs `access`.
pub fn get<S, H, T>(access: Access, handler: H) -> Scoped<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    empty().get(access, handler)
}

/// A route whose `POST` needs `access`.
pub fn post<S, H, T>(access: Access, handler: H) -> Scoped<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    empty().post(access, handler)
}

/// A route whose `PUT` needs `access`.
pub fn put<S, H, T>(access: Access, handler: H) -> Scoped<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    empty().put(access, handler)
}

/// A route whose `DELETE` needs `access`.
pub fn delete<S, H, T>(access: Access, handler: H) -> Scoped<S>
where
    S: Clone + Send + Sync + 'static,
    H: Handler<T, S>,
    T: 'static,
{
    empty().delete(access, handler)
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Adds `path` with its declared methods; each method is guarded by
    /// the access it declared.
    #[must_use]
    pub fn route(mut self, path: &str, scoped: Scoped<S>) -> Self {
        let Scoped { methods, declared } = scoped;
        // One guard per route, deciding by the request's method.
        let guard = Guard {
            declared: declared.clone(),
        };
        let methods = methods.route_layer(from_fn_with_state(guard, check));
        self.table
            .extend(declared.into_iter().map(|(m, a)| (path.to_owned(), m, a)));
        self.router = self.router.route(path, methods);
        self
    }

    /// Adds a whole router whose routes were declared elsewhere (with
    /// their own table).
    #[must_use]
    pub fn merge(mut self, other: Self) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// The declared routes.
    pub fn table(&self) -> &[RouteEntry] {
        &self.table
    }

    /// The axum router, checking requests against `tokens`.
    pub fn into_router(self, tokens: Arc<ApiTokens>) -> Router<S> {
        self.router.layer(axum::Extension(tokens))
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

/// What one route's guard knows.
#[derive(Debug, Clone)]
struct Guard {
    declared: Vec<(Method, Access)>,
}

fn unauthenticated(message: String) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn check(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let access = guard
        .declared
        .iter()
        .find(|(m, _)| {
            m == request.method() || (*m == Method::GET && request.method() == Method::HEAD)
        })
        .map_or(Access::Public, |(_, a)| *a);
    let scope = match access {
        Access::Public => return next.run(request).await,
        Access::Authenticated => None,
        Access::Scope(scope) => Some(scope),
    };
    let Some(tokens) = request.extensions().get::<Arc<ApiTokens>>().cloned() else {
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "the API router was built without its token view",
        )
        .into_response();
    };
    if tokens.mode() == AuthMode::Off {
        request.extensions_mut().insert(Authorized::anyone());
        return next.run(request).await;
    }
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let authorized = match tokens.authenticate(bearer, Timestamp::now()) {
        Ok(authorized) => authorized,
        Err(err) => {
            tracing::warn!(
                target: "hodei::audit", event = "auth_failed", method = %request.method(),
                path = %request.uri().path(), reason = %err, "API request refused"
            );
            return unauthenticated(err.to_string());
        }
    };
    if let Some(scope) = scope
        && !authorized.allows(scope)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("this token lacks the scope {scope}"),
        )
        .into_response();
    }
    if scope == Some(super::Scope::JobsSubmit)
        && let Some(id) = &authorized.token_id
        && let Err(wait) = tokens.take_submit(id)
    {
        let seconds = wait.as_secs() + 1;
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!("this token submits faster than its limit; retry in {seconds} s"),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    let revoked = authorized.revoked.clone();
    request.extensions_mut().insert(authorized);
    let response = next.run(request).await;
    match revoked {
        Some(revoked) if is_event_stream(&response) => end_on_revocation(response, revoked),
        _ => response,
    }
}

fn is_event_stream(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// The same response, whose body ends when the token is revoked.
fn end_on_revocation(
    response: Response,
    mut revoked: tokio::sync::watch::Receiver<bool>,
) -> Response {
    let (parts, body) = response.into_parts();
    let stop = async move {
        let _ = revoked.wait_for(|r| *r).await;
    };
    let stream = body.into_data_stream().take_until(Box::pin(stop));
    Response::from_parts(parts, Body::from_stream(stream))
}
