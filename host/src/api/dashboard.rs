//! The web dashboard: `GET /` and the page paths (`/jobs`, `/jobs/{id}`,
//! `/workers`, `/plugins`) answer the one HTML page; `/assets/{file}` its
//! CSS and JavaScript modules. Everything is embedded in the binary with
//! `include_str!` (host/assets/), so the dashboard works with no network
//! and is always the version of the host that serves it.
//!
//! The page talks to the REST API like any client. Every response carries
//! a Content-Security-Policy that allows scripts and styles from this
//! origin only and no inline script: were job text ever turned into markup
//! by mistake, an injected `<script>` or `onerror=` would still not run
//! (the page itself only ever writes data with `textContent`).

use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::Access::Public;
use crate::auth::guard::{self, Routes};

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

const INDEX: &str = include_str!("../../assets/index.html");

/// The assets: file name, content type, text.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.css", "text/css", include_str!("../../assets/app.css")),
    ("app.js", JS, include_str!("../../assets/js/app.js")),
    ("api.js", JS, include_str!("../../assets/js/api.js")),
    ("dom.js", JS, include_str!("../../assets/js/dom.js")),
    ("ansi.js", JS, include_str!("../../assets/js/ansi.js")),
    ("jobs.js", JS, include_str!("../../assets/js/jobs.js")),
    ("submit.js", JS, include_str!("../../assets/js/submit.js")),
    ("job.js", JS, include_str!("../../assets/js/job.js")),
    ("logview.js", JS, include_str!("../../assets/js/logview.js")),
    ("workers.js", JS, include_str!("../../assets/js/workers.js")),
    ("plugins.js", JS, include_str!("../../assets/js/plugins.js")),
];
const JS: &str = "text/javascript";

/// The dashboard's routes, merged into the API's. Public: the page and
/// its code hold no data; every call the page makes for data is checked
/// like any other (a 401 makes the page ask for a token).
pub fn routes() -> Routes<AppState> {
    Routes::new()
        .route("/", guard::get(Public, index))
        .route("/jobs", guard::get(Public, index))
        .route("/jobs/{id}", guard::get(Public, index))
        .route("/workers", guard::get(Public, index))
        .route("/plugins", guard::get(Public, index))
        .route("/assets/{file}", guard::get(Public, asset))
}

/// Headers every dashboard response carries.
fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Assets are small and change with the binary: revalidate.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_the_page_imports_is_served() {
        // A module imported but not listed would 404 in the browser.
        let mut imports = 0;
        for (_, _, text) in ASSETS {
            for (at, _) in text.match_indices("from \"./") {
                let rest = &text[at + 8..];
                let name = &rest[..rest.find('"').unwrap_or(0)];
                assert!(
                    ASSETS.iter().any(|(n, _, _)| *n == name),
                    "{name} is imported but not served"
                );
                imports += 1;
            }
        }
        assert!(imports > 10, "only {imports} imports found");
        for name in ["/assets/app.css", "/assets/app.js"] {
            assert!(INDEX.contains(name), "index.html does not load {name}");
        }
    }
}
