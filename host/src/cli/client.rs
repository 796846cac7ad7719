//! A small typed client of the REST API, shared by every CLI command.

use anyhow::{Context, bail};
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;

pub use hodei_cli::api::LogEvent;
pub use hodei_cli::outcome::{Done, LogLine};

/// The REST API at one base URL.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `base` (e.g. `http://127.0.0.1:8080`) sending `token`
    /// with every request.
    pub fn new(
        base: &str,
        token: Option<&str>,
        ca_cert: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(&hodei_cli::api::bearer(token)?)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true)
            .default_headers(headers);
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("no PEM certificate in {}", path.display()))?
            {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http.build()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn decode(response: reqwest::Response) -> anyhow::Result<Value> {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        Err(hodei_cli::api::refused(status.as_u16(), &body))
    }

    fn unreachable(&self) -> impl FnOnce(reqwest::Error) -> anyhow::Error + '_ {
        move |err| anyhow::Error::new(err).context(hodei_cli::api::unreachable(&self.base))
    }

    /// `POST /api/v1/jobs`; a 429 is tried again after its `Retry-After`
    /// (see `hodei_cli::api::retry_after`).
    pub async fn submit(&self, body: &Value) -> anyhow::Result<Value> {
        let mut tries = 0;
        loop {
            tries += 1;
            let response = self
                .http
                .post(self.url("/api/v1/jobs"))
                .json(body)
                .send()
                .await
                .map_err(self.unreachable())?;
            let wait = hodei_cli::api::retry_after(
                response.status().as_u16(),
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            );
            match wait {
                Some(wait) if tries < hodei_cli::api::RATE_LIMITED_TRIES => {
                    tokio::time::sleep(wait).await;
                }
                _ => return Self::decode(response).await,
            }
        }
    }

    /// `POST /api/v1/policies?name=N` with a component.
    pub async fn upload_policy(&self, name: &str, bytes: Vec<u8>) -> anyhow::Result<Value> {
        self.upload_component("/api/v1/policies", name, bytes).await
    }

    /// Uploads a component (a policy, a masker) to `path` under `name`.
    pub async fn upload_component(
        &self,
        path: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(self.url(path))
            .query(&[("name", name)])
            .header("content-type", "application/wasm")
            .body(bytes)
            .send()
            .await
            .map_err(self.unreachable())?;
        Self::decode(response).await
    }

    /// Any method with a JSON body (`Null` sends none).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, self.url(path));
        if !body.is_null() {
            request = request.json(body);
        }
        let response = request.send().await.map_err(self.unreachable())?;
        Self::decode(response).await
    }

    /// `GET` of any API path.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(self.unreachable())?;
        Self::decode(response).await
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub async fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(self.url(&format!("/api/v1/jobs/{id}/cancel")))
            .send()
            .await
            .map_err(self.unreachable())?;
        Self::decode(response).await
    }

    /// The job's log as a stream of lines then `Done`.
    pub async fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<u64>,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<LogEvent>> + use<>> {
        let mut query = vec![("follow", follow.to_string())];
        if let Some(tail) = tail {
            query.push(("tail", tail.to_string()));
        }
        let response = self
            .http
            .get(self.url(&format!("/api/v1/jobs/{id}/logs")))
            .query(&query)
            .send()
            .await
            .map_err(self.unreachable())?;
        if !response.status().is_success() {
            Self::decode(response).await?;
            bail!("unexpected response");
        }
        Ok(response
            .bytes_stream()
            .eventsource()
            .filter_map(|event| async move {
                let event = match event {
                    Ok(event) => event,
                    Err(err) => return Some(Err(anyhow::anyhow!("log stream broke: {err}"))),
                };
                match event.event.as_str() {
                    "done" => Some(
                        serde_json::from_str(&event.data)
                            .map(LogEvent::Done)
                            .context("bad done event"),
                    ),
                    "message" | "" => Some(
                        serde_json::from_str(&event.data)
                            .map(LogEvent::Line)
                            .context("bad log event"),
                    ),
                    "error" => Some(Err(anyhow::anyhow!("server error: {}", event.data))),
                    _ => None,
                }
            }))
    }
}
