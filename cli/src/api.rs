//! The REST API as the front binary speaks it: blocking requests on plain
//! `http://` connections (no async runtime, no TLS stack to load), and
//! what both halves of the CLI share about talking to it: the texts of a
//! refused or unreachable request, the bearer header, and the retry of a
//! rate-limited submit.

use std::io::BufRead;
use std::time::Duration;

use serde_json::Value;
use ureq::Body;
use ureq::http::Response;

use crate::outcome::{Done, LogLine};

/// A request the API answered with an error: its one error shape (`error`,
/// `message`) and the HTTP status.
pub fn refused(status: u16, body: &Value) -> anyhow::Error {
    let code = body["error"].as_str().unwrap_or("ERROR");
    let message = body["message"].as_str().unwrap_or("request failed");
    anyhow::anyhow!("{message} ({code}, HTTP {status})")
}

/// The context of a request that never got an answer.
pub fn unreachable(base: &str) -> String {
    format!("cannot reach the hodei server at {base} (set --server or HODEI_SERVER)")
}

/// The `Authorization` value for `token`, or why a header cannot carry it.
pub fn bearer(token: &str) -> anyhow::Result<String> {
    let value = format!("Bearer {token}");
    ureq::http::HeaderValue::from_str(&value)
        .map_err(|_| anyhow::anyhow!("the API token has characters a header cannot carry"))?;
    Ok(value)
}

/// Submits refused for the token's rate (429) are tried again after the
/// `Retry-After` the host gave, this many times at most: a loop of
/// `hodei run` faster than the token's limit is paced, not failed.
pub const RATE_LIMITED_TRIES: u32 = 30;

/// How long to wait before trying again a request answered with `status`
/// and `retry_after` (the header, in seconds): only a 429 is worth it.
pub fn retry_after(status: u16, retry_after: Option<&str>) -> Option<Duration> {
    if status != 429 {
        return None;
    }
    let seconds = retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(1);
    Some(Duration::from_secs(seconds.clamp(1, 60)))
}

/// One item of a log stream.
#[derive(Debug, Clone)]
pub enum LogEvent {
    /// A line.
    Line(LogLine),
    /// The end.
    Done(Done),
}

/// A blocking client of one host (`http://` only).
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    agent: ureq::Agent,
    authorization: Option<String>,
}

impl Client {
    /// A client of `base` sending `token`, if any.
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
            authorization: token.map(bearer).transpose()?,
        })
    }

    /// `request` with the token's header, if there is a token.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("authorization", value),
            None => request,
        }
    }

    /// A request that got no answer: the host is not there.
    fn unanswered(&self, err: ureq::Error) -> anyhow::Error {
        anyhow::Error::new(err).context(unreachable(&self.base))
    }

    fn send(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
        body: Option<&Value>,
    ) -> anyhow::Result<Response<Body>> {
        let request = self.authorized(request);
        let sent = match body {
            Some(body) => request.send_json(body),
            None => request.send_empty(),
        };
        sent.map_err(|err| self.unanswered(err))
    }

    /// `POST /api/v1/jobs`: the created job; a 429 is tried again after
    /// its `Retry-After` (see [`retry_after`]).
    pub fn submit(&self, body: &Value) -> anyhow::Result<Value> {
        let mut tries = 0;
        loop {
            tries += 1;
            let request = self.agent.post(format!("{}/api/v1/jobs", self.base));
            let mut response = self.send(request, Some(body))?;
            let wait = retry_after(
                response.status().as_u16(),
                response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
            );
            // Read whole either way, so the connection can be used again.
            let answer = answer(&mut response);
            match wait {
                Some(wait) if tries < RATE_LIMITED_TRIES => std::thread::sleep(wait),
                _ => return answer,
            }
        }
    }

    /// `POST /api/v1/jobs/{id}/cancel`.
    pub fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        let request = self
            .agent
            .post(format!("{}/api/v1/jobs/{id}/cancel", self.base));
        answer(&mut self.send(request, None)?)
    }

    /// Follows job `id`'s log (`GET /api/v1/jobs/{id}/logs?follow=true`),
    /// calling `each` with every line, until its `done` event (returned)
    /// or the end of the stream (None).
    pub fn follow(
        &self,
        id: &str,
        mut each: impl FnMut(LogLine) -> anyhow::Result<()>,
    ) -> anyhow::Result<Option<Done>> {
        let request = self
            .agent
            .get(format!("{}/api/v1/jobs/{id}/logs?follow=true", self.base));
        let mut response = self
            .authorized(request)
            .call()
            .map_err(|err| self.unanswered(err))?;
        if !response.status().is_success() {
            // A refusal: its error, as JSON.
            answer(&mut response)?;
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        let mut events = SseEvents::default();
        for line in reader.lines() {
            let line = line.map_err(|err| anyhow::anyhow!("log stream broke: {err}"))?;
            match events.push(&line)? {
                Some(LogEvent::Line(line)) => each(line)?,
                Some(LogEvent::Done(done)) => return Ok(Some(done)),
                None => {}
            }
        }
        Ok(None)
    }
}

/// The JSON answer of a 2xx response, or the refusal any other status
/// is.
fn answer(response: &mut Response<Body>) -> anyhow::Result<Value> {
    let status = response.status().as_u16();
    let answer: Value = response.body_mut().read_json().unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        Ok(answer)
    } else {
        Err(refused(status, &answer))
    }
}

/// Server-sent events, line by line (the subset the host sends: `event`,
/// `data`, comments), decoded into log events.
#[derive(Debug, Default)]
struct SseEvents {
    event: String,
    data: String,
}

impl SseEvents {
    /// Takes one line of the stream; an event when it ends one.
    fn push(&mut self, line: &str) -> anyhow::Result<Option<LogEvent>> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let data = std::mem::take(&mut self.data);
            return match event.as_str() {
                "done" => serde_json::from_str(&data)
                    .map(|done| Some(LogEvent::Done(done)))
                    .map_err(|err| anyhow::Error::new(err).context("bad done event")),
                "message" | "" if !data.is_empty() => serde_json::from_str(&data)
                    .map(|line| Some(LogEvent::Line(line)))
                    .map_err(|err| anyhow::Error::new(err).context("bad log event")),
                "error" => Err(anyhow::anyhow!("server error: {data}")),
                _ => Ok(None),
            };
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(value);
            }
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::{LogEvent, SseEvents, retry_after};
    use std::time::Duration;

    #[test]
    fn lines_and_done_are_decoded_and_the_rest_skipped() {
        let mut events = SseEvents::default();
        let stream = [
            ": keep-alive",
            "",
            r#"data: {"timestamp":"t","stream":"stdout","line":"a: b","sequence":1}"#,
            "",
            "event: other",
            "data: ignored",
            "",
            "event: done",
            r#"data: {"state":"FAILED","exit_code":3,"reason":null}"#,
            "",
        ];
        let got: Vec<LogEvent> = stream
            .iter()
            .filter_map(|line| events.push(line).unwrap())
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], LogEvent::Line(l) if l.line == "a: b" && l.sequence == 1));
        assert!(
            matches!(&got[1], LogEvent::Done(d) if d.state == "FAILED" && d.exit_code == Some(3))
        );
        assert!(events.push("event: error").unwrap().is_none());
        assert!(events.push("data: boom").unwrap().is_none());
        let err = events.push("").unwrap_err();
        assert_eq!(err.to_string(), "server error: boom");
        assert!(events.push("data: {not json").unwrap().is_none());
        assert!(events.push("").is_err());
    }

    #[test]
    fn only_a_429_is_tried_again() {
        assert_eq!(retry_after(429, Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(429, None), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(429, Some("0")), Some(Duration::from_secs(1)));
        assert_eq!(
            retry_after(429, Some("9999")),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after(503, Some("3")), None);
        assert_eq!(retry_after(201, None), None);
    }
}
