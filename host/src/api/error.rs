//! The one JSON error shape, and the middleware that stamps it.
//!
//! Every 4xx/5xx body is
//! `{"error":"VALIDATION_ERROR","message":…,"details":…,"request_id":…,"timestamp":…}`.
//! Handlers and extractors return [`ApiError`], which travels as a response
//! extension; [`stamp`] renders it with the request's id. Responses axum
//! makes by itself (unknown route, wrong method) get the same shape there.

use axum::extract::Request;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::domain::{DomainError, Timestamp};
use crate::store::StoreError;

/// The body of every 4xx/5xx answer: what [`stamp`] writes, and the
/// `Error` schema of the OpenAPI document.
#[derive(Debug, Serialize, ToSchema)]
#[schema(
    as = Error,
    example = json!({
        "error": "VALIDATION_ERROR",
        "message": "timeout_secs: must be at least 1 (omit it for no timeout)",
        "details": [{"field": "timeout_secs", "problem": "must be at least 1 (omit it for no timeout)"}],
        "request_id": "0b6f5a2e-3f1d-4f6a-9a57-2c1e8f0e4b1d",
        "timestamp": "2026-11-22T06:13:50.123456Z"
    })
)]
pub struct ErrorBody {
    /// Stable machine-readable code: `VALIDATION_ERROR`, `MALFORMED_JSON`,
    /// `INVALID_QUERY`, `UNAUTHENTICATED`, `FORBIDDEN`, `NOT_FOUND`,
    /// `CONFLICT`, `PAYLOAD_TOO_LARGE`, `UNSUPPORTED_MEDIA_TYPE`, …
    #[schema(example = "NOT_FOUND")]
    pub error: &'static str,
    /// What happened, for a person.
    pub message: String,
    /// Structured specifics: for `VALIDATION_ERROR` a list of
    /// `{"field", "problem"}`; otherwise usually null.
    #[schema(schema_with = any_json)]
    pub details: Value,
    /// The request's id (`x-request-id`, the client's when it sent one).
    pub request_id: String,
    /// When the error was answered (RFC 3339).
    #[schema(format = DateTime)]
    pub timestamp: String,
}

/// Any JSON value (null included).
fn any_json() -> utoipa::openapi::Schema {
    utoipa::openapi::Schema::Object(
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
            .build(),
    )
}

/// An error as the API reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code (`NOT_FOUND`...).
    pub code: &'static str,
    /// What happened, for a person.
    pub message: String,
    /// Structured specifics (per-field problems...).
    pub details: Value,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 400 with per-field problems.
    pub fn validation(problems: Vec<(String, String)>) -> Self {
        let message = problems
            .iter()
            .map(|(field, problem)| format!("{field}: {problem}"))
            .collect::<Vec<_>>()
            .join("; ");
        let details = problems
            .into_iter()
            .map(|(field, problem)| serde_json::json!({ "field": field, "problem": problem }))
            .collect();
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "VALIDATION_ERROR",
            message,
            details: Value::Array(details),
        }
    }

    /// 404 for a job id.
    pub fn job_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("job {id} not found"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(id) => Self::job_not_found(&id.to_string()),
            StoreError::Domain(DomainError::IllegalTransition { from, to }) => Self::new(
                StatusCode::CONFLICT,
                "ILLEGAL_TRANSITION",
                format!("the job is {from} and cannot become {to}"),
            ),
            StoreError::Domain(other) => {
                Self::new(StatusCode::CONFLICT, "CONFLICT", other.to_string())
            }
            StoreError::Backend(_) | StoreError::Closed => {
                tracing::error!(%err, "store failure behind an API call");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "STORE_UNAVAILABLE",
                    "the job store failed; nothing was changed",
                )
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection {
            JsonRejection::JsonDataError(_) => {
                // "Failed to deserialize the JSON body into the target type: resources.cpu_millis: …"
                let problem = text
                    .split_once("target type: ")
                    .map_or(text.as_str(), |(_, p)| p);
                let (field, what) = problem.split_once(": ").unwrap_or(("body", problem));
                Self::validation(vec![(field.to_owned(), what.to_owned())])
            }
            JsonRejection::JsonSyntaxError(_) => {
                Self::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", text)
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "expected a body with `Content-Type: application/json`",
            ),
            other => {
                let status = other.status();
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    Self::new(
                        status,
                        "PAYLOAD_TOO_LARGE",
                        "request body is over the limit",
                    )
                } else {
                    Self::new(status, "BAD_REQUEST", text)
                }
            }
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(
                status,
                "PAYLOAD_TOO_LARGE",
                "request body is over the limit",
            )
        } else {
            Self::new(status, "BAD_REQUEST", rejection.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "INVALID_QUERY",
            rejection.body_text(),
        )
    }
}

/// Gives every request an id (`x-request-id`, honoured when the client sent
/// one) and renders errors in the one JSON shape.
pub async fn stamp(request: Request, next: Next) -> Response {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), ToOwned::to_owned);
    let mut response = next.run(request).await;
    let status = response.status();
    let error = response.extensions_mut().remove::<ApiError>().or_else(|| {
        (status.is_client_error() || status.is_server_error()).then(|| {
            let code = match status {
                StatusCode::NOT_FOUND => "NOT_FOUND",
                StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
                StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
                s if s.is_server_error() => "INTERNAL_ERROR",
                _ => "BAD_REQUEST",
            };
            let message = match status {
                StatusCode::PAYLOAD_TOO_LARGE => "request body is over the limit",
                other => other.canonical_reason().unwrap_or("error"),
            };
            ApiError::new(status, code, message)
        })
    });
    if let Some(error) = error {
        let body = ErrorBody {
            error: error.code,
            message: error.message,
            details: error.details,
            request_id: request_id.clone(),
            timestamp: Timestamp::now().to_rfc3339(),
        };
        let headers = std::mem::take(response.headers_mut());
        response = (error.status, axum::Json(body)).into_response();
        for (name, value) in &headers {
            if name != axum::http::header::CONTENT_TYPE
                && name != axum::http::header::CONTENT_LENGTH
            {
                response.headers_mut().insert(name, value.clone());
            }
        }
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}
