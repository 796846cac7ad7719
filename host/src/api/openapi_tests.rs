//! The document against the route table, both ways, and its shape.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

fn served_api_routes() -> BTreeSet<(String, String)> {
    // Pages for people (dashboard, docs UI) are served but not API.
    let pages: BTreeSet<(String, Method)> = crate::api::dashboard::routes()
        .table()
        .iter()
        .chain(docs_routes().table())
        .map(|(path, method, _)| (path.clone(), method.clone()))
        .collect();
    let all = crate::api::routes().merge(crate::api::upload_routes());
    all.table()
        .iter()
        .filter(|(path, method, _)| !pages.contains(&(path.clone(), method.clone())))
        // A catch-all segment (`{*path}`) is a plain parameter there.
        .map(|(path, method, _)| (path.replace("{*", "{"), method.as_str().to_owned()))
        .collect()
}

fn document_json() -> Value {
    serde_json::from_str(document()).expect("the document is JSON")
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                routes.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    routes
}

#[test]
fn every_served_route_is_documented_and_every_documented_route_is_served() {
    let served = served_api_routes();
    let documented = documented_routes(&document_json());
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in the OpenAPI document (add #[utoipa::path] and list it in ApiDoc): {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in the OpenAPI document but not served: {unserved:?}"
    );
    assert!(
        served.len() >= 30,
        "the walk saw the routes: {}",
        served.len()
    );
}

#[test]
fn the_document_is_openapi_3_1_with_the_bearer_scheme() {
    let doc = document_json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"][BEARER]["scheme"],
        "bearer"
    );
}

#[test]
fn every_error_response_is_the_one_error_shape_and_access_matches_the_table() {
    let doc = document_json();
    let table = crate::api::routes().merge(crate::api::upload_routes());
    let mut checked = 0;
    let mut ids = BTreeSet::new();
    for (path, method, access) in table.table() {
        let op = &doc["paths"][path.replace("{*", "{").as_str()][method.as_str().to_lowercase()];
        if op.is_null() {
            continue; // a page, not API (see the walk above)
        }
        let responses = op["responses"].as_object().expect("responses");
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{method} {path} {status}"
                );
            }
        }
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        assert_eq!(
            secured,
            *access != Access::Public,
            "{method} {path}: security vs the table"
        );
        if *access != Access::Public {
            assert!(
                responses.contains_key("401"),
                "{method} {path} documents 401"
            );
        }
        if matches!(access, Access::Scope(_)) {
            assert!(
                responses.contains_key("403"),
                "{method} {path} documents 403"
            );
        }
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "operationId {id} is unique");
        checked += 1;
    }
    assert!(checked >= 30, "checked {checked} operations");
}

#[test]
fn the_documented_bounds_of_log_queries_are_the_enforced_ones() {
    let doc = document_json();
    let mut seen = 0;
    for path in ["/api/v1/jobs/{id}/logs", "/api/v1/jobs/{id}/logs/page"] {
        for param in doc["paths"][path]["get"]["parameters"].as_array().unwrap() {
            let name = param["name"].as_str().unwrap();
            if ["after", "tail", "limit", "Last-Event-ID"].contains(&name) {
                assert_eq!(
                    param["schema"]["maximum"].as_u64(),
                    Some(crate::api::logs::MAX_COUNT),
                    "{path} {param}"
                );
                seen += 1;
            }
        }
    }
    assert_eq!(seen, 5);
}

#[test]
fn the_documented_bounds_of_a_jobs_numbers_are_the_enforced_ones() {
    let doc = document_json();
    let schemas = &doc["components"]["schemas"];
    let submit = &schemas["SubmitJob"]["allOf"][0]["properties"];
    let max = Some(crate::api::jobs::MAX_SAFE);
    assert_eq!(submit["timeout_secs"]["maximum"].as_u64(), max);
    for field in ["cpu_millis", "memory_mb"] {
        assert_eq!(
            schemas["Resources"]["properties"][field]["maximum"].as_u64(),
            max
        );
    }
}
