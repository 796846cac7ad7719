//! The API's contract as a real host serves it: `/api/v1/openapi.json` is
//! an OpenAPI 3.1 document whose routes the host answers, public; the
//! docs UI at `/api/v1/docs/` is served whole by the host itself (every
//! asset the page references, no external URL: it works offline).
#![allow(clippy::unwrap_used)] // test helpers are assertions

mod common;

use std::collections::BTreeSet;

use common::Host;

/// (status, content type, body) of a GET with no token.
fn fetch(host: &Host, path: &str) -> (u16, String, String) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent();
    let mut response = agent.get(&host.url(path)).call().unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, content_type, body)
}

/// Every `src="…"` and `href="…"` of an HTML page.
fn references(html: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').unwrap();
            found.insert(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

#[test]
fn the_document_is_openapi_3_1_served_publicly_and_names_real_routes() {
    // Tokens on: the document and the docs need none, the API does.
    let host = Host::start_with(&["--api-auth", "tokens"]);
    let (status, content_type, body) = fetch(&host, "/api/v1/openapi.json");
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["paths"]["/api/v1/jobs"]["get"]["parameters"][0]["name"], "state",
        "one vocabulary: the list filter is `state`"
    );
    assert_eq!(
        doc["components"]["schemas"]["LogDone"]["properties"]["state"]["$ref"],
        "#/components/schemas/JobState"
    );
    // A documented secured route answers 401 in the documented shape.
    let (status, _, body) = fetch(&host, "/api/v1/jobs");
    assert_eq!(status, 401, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"], "UNAUTHENTICATED");
    let required = doc["components"]["schemas"]["Error"]["required"]
        .as_array()
        .unwrap();
    for field in required {
        assert!(
            error.get(field.as_str().unwrap()).is_some(),
            "{field} in {error}"
        );
    }
}

#[test]
fn the_docs_page_and_every_asset_it_references_come_from_the_host() {
    let host = Host::start_with(&["--api-auth", "tokens"]);
    let (status, _, _) = fetch(&host, "/api/v1/docs");
    assert_eq!(status, 308, "the bare path redirects to the directory");
    let (status, content_type, html) = fetch(&host, "/api/v1/docs/");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external URL in the page: {html}"
    );
    let assets = references(&html);
    assert!(
        assets.iter().any(|a| a.ends_with(".js")) && assets.iter().any(|a| a.ends_with(".css")),
        "{assets:?}"
    );
    for asset in &assets {
        let path = format!("/api/v1/docs/{}", asset.trim_start_matches("./"));
        let response = ureq::get(&host.url(&path)).call().unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let bytes = response.into_body().read_to_vec().unwrap();
        assert!(!bytes.is_empty(), "{path}");
    }
    // The initializer points the UI at this host's document, not the
    // petstore example.
    let (status, _, init) = fetch(&host, "/api/v1/docs/swagger-initializer.js");
    assert_eq!(status, 200);
    assert!(init.contains("/api/v1/openapi.json"), "{init}");
    assert!(!init.contains("petstore"), "{init}");
    let (status, _, _) = fetch(&host, "/api/v1/docs/no-such-file.js");
    assert_eq!(status, 404);
}
