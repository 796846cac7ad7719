//! Test helpers: real `hodei` and `hodei-agent` processes on 127.0.0.1,
//! a real redb file in a temp dir, and a small HTTP/SSE client.
// Each test binary uses a different subset; helpers panic on failure by
// design (they are assertions).
#![allow(dead_code, clippy::unwrap_used, clippy::needless_pass_by_value)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub mod docker;
pub mod fake_kube;
pub mod pg;
pub mod pipeline;
pub mod raw_agent;
pub mod rss;

pub const TOKEN: &str = "test-agent-token-0123456789";

/// `hodei`, the command users type: the front binary (hodei-cli), built
/// next to the `hodei-host` binary cargo built for these tests (the test
/// script builds it first). Every command line the tests give it that is
/// not `run` reaches `hodei-host` through it, by `exec`.
pub fn hodei_bin() -> PathBuf {
    let path = host_bin().with_file_name("hodei");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p hodei-cli` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A port on 127.0.0.1 nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `127.0.0.1:PORT` on a [`free_port`]: for a host that must come back on
/// the same address (its agents dial the one they were given).
pub fn free_local_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// `hodei-host`, the binary cargo built for these tests.
pub fn host_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hodei-host"))
}

/// `hodei-agent`, built next to `hodei` (the test script builds it first).
pub fn agent_bin() -> PathBuf {
    let path = hodei_bin().with_file_name("hodei-agent");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p hodei-agent` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running `hodei serve`. Killed on drop.
pub struct Host {
    child: Child,
    pub data_dir: PathBuf,
    pub http: String,
    pub grpc: String,
    pub stderr: Arc<Mutex<String>>,
    extra_args: Vec<String>,
    extra_env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
}

impl Host {
    /// A host on a fresh data dir, with ports picked by the OS.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Same, with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Same, with extra environment variables (kept across restarts).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data_dir = tmp.path().join("data");
        let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut host = Self::spawn(&data_dir, &extra, &env);
        host._tmp = Some(tmp);
        host
    }

    fn spawn(data_dir: &Path, extra: &[String], env: &[(String, String)]) -> Self {
        let mut command = Command::new(hodei_bin());
        // Info unless the one running the tests asks for more (RUST_LOG);
        // the test's own `env` wins over both.
        command.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        );
        command.envs(env.iter().map(|(k, v)| (k, v)));
        command.arg("serve");
        // Defaults for test hosts, each overridable by the test. Plugin
        // calls get 1 s rather than 10 ms: a debug build on a loaded CI
        // machine must not turn a correct plugin into a timeout.
        for (flag, value) in [
            ("--http-addr", "127.0.0.1:0"),
            ("--grpc-addr", "127.0.0.1:0"),
            ("--plugin-deadline-ms", "1000"),
            ("--masker-deadline-ms", "1000"),
            // REST auth is covered by tests/auth.rs; the others call the
            // API as it was before tokens.
            ("--api-auth", "off"),
        ] {
            if !extra.iter().any(|a| a == flag) {
                command.args([flag, value]);
            }
        }
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--agent-token", TOKEN])
            .args(extra)
            // Shared by every test host: each plugin is compiled once.
            .env(
                "HODEI_PLUGIN_CACHE_DIR",
                concat!(env!("CARGO_TARGET_TMPDIR"), "/plugin-cache"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hodei serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let pipe = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut grpc) = (None, None);
        while http.is_none() || grpc.is_none() {
            let Some(Ok(line)) = lines.next() else {
                let status = child.wait().ok();
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "hodei serve exited during start-up ({status:?}):\n{}",
                    stderr.lock().unwrap()
                );
            };
            if let Some(addr) = line.strip_prefix("hodei: http listening on ") {
                http = Some(addr.to_owned());
            }
            if let Some(addr) = line.strip_prefix("hodei: grpc listening on ") {
                grpc = Some(addr.to_owned());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            data_dir: data_dir.to_owned(),
            http: http.unwrap(),
            grpc: grpc.unwrap(),
            stderr,
            extra_args: extra.to_vec(),
            extra_env: env.to_vec(),
            _tmp: None,
        }
    }

    /// Stops the host with `signal` and starts it again on the same data
    /// directory (new ports: agents must be told, see `Agent::start`).
    pub fn restart(&mut self, signal: nix::sys::signal::Signal) {
        self.signal(signal);
        let _ = self.child.wait();
        let fresh = Self::spawn(&self.data_dir, &self.extra_args, &self.extra_env);
        let old = std::mem::replace(self, fresh);
        self._tmp = old.into_tmp();
    }

    fn into_tmp(mut self) -> Option<tempfile::TempDir> {
        self._tmp.take()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the host's stderr holds `needle`; panics with the log
    /// after `timeout`. A line the host wrote reaches us through a pipe
    /// and a reader thread, after any reply the test saw, so a positive
    /// log check must wait rather than read once.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.logs().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the host never logged {needle:?} within {timeout:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the host to exit (after [`Host::signal`]); panics after
    /// `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "host did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `hodei serve` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.http)
    }

    /// `POST /api/v1/jobs`; returns (status, body).
    pub fn submit(&self, body: &Value) -> (u16, Value) {
        request(ureq_post(&self.url("/api/v1/jobs"), body))
    }

    /// Submits and returns the id, asserting 201.
    pub fn submit_ok(&self, body: &Value) -> String {
        let (status, job) = self.submit(body);
        assert_eq!(status, 201, "{job}");
        job["id"].as_str().unwrap().to_owned()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        // A host with REST auth on left its admin token in the data dir.
        let token = std::fs::read_to_string(self.data_dir.join("admin.token")).ok();
        call(
            "GET",
            &self.url(path),
            token.as_deref().map(str::trim),
            Body::None,
        )
    }

    pub fn job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/api/v1/jobs/{id}"));
        assert_eq!(status, 200, "{job}");
        job
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        request(http_agent().delete(&self.url(path)).call())
    }

    /// `PUT /api/v1/policies/active`.
    pub fn activate(&self, name: &str, config: &str) -> (u16, Value) {
        request(
            http_agent()
                .put(&self.url("/api/v1/policies/active"))
                .send_json(json!({ "name": name, "config": config })),
        )
    }

    /// `PUT /api/v1/maskers/chain` with `chain` (a JSON list).
    pub fn set_maskers(&self, chain: Value) -> (u16, Value) {
        request(
            http_agent()
                .put(&self.url("/api/v1/maskers/chain"))
                .send_json(json!({ "maskers": chain })),
        )
    }

    /// `POST /api/v1/maskers?name=NAME` with raw bytes.
    pub fn upload_masker(&self, name: &str, bytes: &[u8]) -> (u16, Value) {
        post_raw(
            &self.url(&format!("/api/v1/maskers?name={name}")),
            "application/wasm",
            bytes.to_vec(),
        )
    }

    /// The entry of `name` in `GET /api/v1/maskers`.
    pub fn masker(&self, name: &str) -> Value {
        let (_, body) = self.get("/api/v1/maskers");
        body["maskers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == json!(name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// `POST /api/v1/policies?name=NAME` with raw bytes.
    pub fn upload_policy(&self, name: &str, bytes: &[u8]) -> (u16, Value) {
        post_raw(
            &self.url(&format!("/api/v1/policies?name={name}")),
            "application/wasm",
            bytes.to_vec(),
        )
    }

    /// The entry of `name` in `GET /api/v1/policies`.
    pub fn policy(&self, name: &str) -> Value {
        let (_, body) = self.get("/api/v1/policies");
        body["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == json!(name))
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub fn cancel(&self, id: &str) -> (u16, Value) {
        request(
            http_agent()
                .post(&self.url(&format!("/api/v1/jobs/{id}/cancel")))
                .send_empty(),
        )
    }

    /// Polls until the job is in one of `states`; panics after `timeout`.
    pub fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(id);
            if states.contains(&job["state"].as_str().unwrap()) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} not in {states:?} after {timeout:?}: {job}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until `n` workers are connected.
    pub fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = self.get("/api/v1/workers");
            let connected = body["workers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["connected"] == json!(true))
                .count();
            if connected >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} workers did not connect: {body}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads the SSE log stream to its end, handing `each` the event name
    /// and the raw data of every event, unparsed.
    pub fn sse_raw(&self, id: &str, query: &str, mut each: impl FnMut(&str, &str)) {
        let response = stream_agent()
            .get(&self.url(&format!("/api/v1/jobs/{id}/logs{query}")))
            .call()
            .expect("sse request");
        let reader = BufReader::with_capacity(1 << 20, response.into_body().into_reader());
        let mut event = String::from("message");
        for line in reader.lines() {
            let line = line.expect("sse line");
            if let Some(name) = line.strip_prefix("event:") {
                event = name.trim().to_owned();
            } else if let Some(data) = line.strip_prefix("data:") {
                each(&event, data.strip_prefix(' ').unwrap_or(data));
                if event == "done" {
                    return;
                }
            } else if line.is_empty() {
                event = String::from("message");
            }
        }
    }

    /// Reads the SSE log stream to its end.
    pub fn sse(&self, id: &str, query: &str) -> Vec<SseEvent> {
        let response = stream_agent()
            .get(&self.url(&format!("/api/v1/jobs/{id}/logs{query}")))
            .call()
            .expect("sse request");
        parse_sse(response.into_body().into_reader())
    }

    /// Runs the `hodei` CLI against this host.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(hodei_bin())
            .args(args)
            .env("HODEI_SERVER", &self.http)
            .output()
            .expect("run hodei cli")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `hodei-agent`. Killed on drop.
pub struct Agent {
    pub child: Child,
    pub name: String,
}

impl Agent {
    pub fn start(host: &Host, name: &str, labels: &str, slots: u32) -> Self {
        Self::start_env(host, name, labels, slots, &[])
    }

    /// Starts an agent whose jobs inherit `env` (agents pass their own
    /// environment on).
    pub fn start_env(
        host: &Host,
        name: &str,
        labels: &str,
        slots: u32,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_at(&host.grpc, name, labels, slots, env)
    }

    /// Starts an agent dialling `server_urls`: one URL (a proxy, say), or a
    /// comma-separated list of hosts sharing a store.
    pub fn start_at(
        server_urls: &str,
        name: &str,
        labels: &str,
        slots: u32,
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(agent_bin());
        command
            .args(["--server-url", server_urls, "--name", name])
            .args(["--slots", &slots.to_string()])
            .args(["--cancel-grace-secs", "2"])
            .env("HODEI_TOKEN", TOKEN)
            .env("HODEI_LABELS", labels)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        Self {
            child: command.spawn().expect("start hodei-agent"),
            name: name.to_owned(),
        }
    }

    /// Worker id of this agent as the host knows it (by name).
    pub fn worker_id(&self, host: &Host) -> String {
        let (_, body) = host.get("/api/v1/workers");
        body["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == json!(self.name))
            .and_then(|w| w["id"].as_str())
            .unwrap_or_else(|| panic!("no worker named {}: {body}", self.name))
            .to_owned()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server-sent event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: Value,
}

pub fn parse_sse(reader: impl std::io::Read) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
    for line in BufReader::new(reader).lines() {
        let line = line.expect("sse line");
        if line.is_empty() {
            if !data.is_empty() {
                out.push(SseEvent {
                    event: std::mem::replace(&mut event, "message".into()),
                    id: id.take(),
                    data: serde_json::from_str(&data).expect("sse data is json"),
                });
                data.clear();
                if out.last().is_some_and(|e| e.event == "done") {
                    break;
                }
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    out
}

/// The `line` fields of the data events.
pub fn lines(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event == "message")
        .map(|e| e.data["line"].as_str().unwrap().to_owned())
        .collect()
}

fn http_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// For reading a whole log stream: the answer must start within 2 minutes,
/// but reading the body may take long (2.6 million lines of a 200 MB log,
/// parsed by a debug build on a loaded 2-core machine, took more than the
/// 2 minutes `http_agent` allows for a whole call).
fn stream_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .timeout_recv_body(Some(Duration::from_secs(30 * 60)))
        .build()
        .into()
}

fn ureq_post(url: &str, body: &Value) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    http_agent().post(url).send_json(body)
}

/// Any request, with an optional bearer `token` and body (JSON, or raw
/// bytes sent as `application/wasm`); (status, JSON answer or Null).
pub fn call(method: &str, url: &str, token: Option<&str>, body: Body) -> (u16, Value) {
    let agent = http_agent();
    let auth = token.map(|t| format!("Bearer {t}"));
    macro_rules! send {
        ($builder:expr) => {{
            let mut builder = $builder;
            if let Some(auth) = &auth {
                builder = builder.header("authorization", auth);
            }
            match body {
                Body::None => request(builder.send_empty()),
                Body::Json(json) => request(builder.send_json(json)),
                Body::Wasm(bytes) => request(
                    builder
                        .header("content-type", "application/wasm")
                        .send(&bytes[..]),
                ),
            }
        }};
    }
    match method {
        "GET" => {
            let mut builder = agent.get(url);
            if let Some(auth) = &auth {
                builder = builder.header("authorization", auth);
            }
            request(builder.call())
        }
        "DELETE" => {
            let mut builder = agent.delete(url);
            if let Some(auth) = &auth {
                builder = builder.header("authorization", auth);
            }
            request(builder.call())
        }
        "POST" => send!(agent.post(url)),
        "PUT" => send!(agent.put(url)),
        other => panic!("no helper for {other}"),
    }
}

/// A request body for [`call`].
pub enum Body {
    None,
    Json(Value),
    Wasm(Vec<u8>),
}

/// POSTs `body` as JSON; (status, JSON answer or Null).
pub fn post_json(url: &str, body: &Value) -> (u16, Value) {
    request(ureq_post(url, body))
}

/// (status, JSON body or Null).
pub fn request(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut response = result.expect("http request");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sends raw bytes as a JSON POST body.
pub fn post_raw(url: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    request(
        http_agent()
            .post(url)
            .header("content-type", content_type)
            .send(&body[..]),
    )
}

/// Announces a body of `len` bytes and reads the answer before sending any
/// of it: a server that refuses by size answers from the header alone.
pub fn post_announced(url: &str, content_type: &str, len: usize) -> (u16, Value) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Posts `body` with `Transfer-Encoding: chunked` (no Content-Length: the
/// server learns the size only by reading), in 64 KiB chunks, and reads the
/// answer. A server that refuses part-way may close before it has read
/// everything, and the reset can swallow its answer on the client's side,
/// so an attempt that gets no answer at all is repeated (up to five); the
/// answer is what counts.
pub fn post_chunked(url: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_once('/').unwrap();
    for _ in 0..5 {
        let mut stream = std::net::TcpStream::connect(authority).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = format!(
            "POST /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        // Write errors are expected once the server has answered and
        // closed: what it said is read below.
        let _ = stream.write_all(head.as_bytes());
        for chunk in body.chunks(64 * 1024) {
            let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
            if stream.write_all(&framed).is_err() {
                break;
            }
        }
        let _ = stream.write_all(b"0\r\n\r\n");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let Some(status) = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()) else {
            continue;
        };
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        return (status, serde_json::from_str(body).unwrap_or(Value::Null));
    }
    panic!("no answer to a chunked POST {url} in five attempts");
}

/// Asserts the one error shape.
pub fn assert_error_shape(body: &Value, code: &str) {
    assert_eq!(body["error"], json!(code), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body.get("details").is_some(), "{body}");
    assert!(
        body["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
    assert!(
        body["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{body}"
    );
}

/// Processes whose command line contains `marker` (excluding this test).
pub fn processes_with(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

/// A component built from plugins/ by the host's build script.
pub fn plugin_wasm(file: &str) -> Vec<u8> {
    let dir = hodei_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("plugins/wasm32-wasip2/release");
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A job body running `script` with bash.
pub fn script(script: &str) -> Value {
    json!({ "command": script })
}

/// A script job for the workers labelled `role=<role>`.
pub fn script_for(role: &str, script: &str) -> Value {
    json!({ "command": script, "labels": labels(&[("role", role)]) })
}

/// Label map helper.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The workspace's `target/` directory (the one holding `hodei`'s profile
/// directory).
pub fn target_dir() -> PathBuf {
    hodei_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_owned()
}

/// Where Wasm plugins are built: the host's build script uses it, and
/// building there again reuses its compiled dependencies.
pub fn plugins_target_dir() -> PathBuf {
    target_dir().join("plugins")
}

/// Drops the outer build's wrapper and flag variables from a cargo command
/// that builds for wasm32-wasip2, as host/build.rs does: they are meant for
/// the host, and would also make cargo rebuild what the script built.
pub fn without_outer_build_env(command: &mut Command) -> &mut Command {
    for var in [
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
    ] {
        command.env_remove(var);
    }
    command
}

/// Builds workspace package `package` (a crate under plugins/) for
/// wasm32-wasip2 into [`plugins_target_dir`] and returns its component.
/// Nearly free when the host's build script already built it.
pub fn build_workspace_plugin(package: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = without_outer_build_env(&mut Command::new(cargo))
        .current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(plugins_target_dir())
        .args(["-p", package])
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building {package} for wasm32-wasip2 failed"
    );
    let file = format!("{}.wasm", package.replace('-', "_"));
    let path = plugins_target_dir()
        .join("wasm32-wasip2/release")
        .join(&file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Starts one `slots`-slot agent per `(name, labels, running)`, labelled
/// `box=<name>` plus `labels`, and runs `running` long jobs pinned to each
/// (by the built-in policy, whatever is active later). Returns the agents
/// and the long jobs, to cancel at the end.
pub fn agents_running(
    host: &Host,
    slots: u32,
    specs: &[(&str, &str, usize)],
) -> (Vec<Agent>, Vec<String>) {
    let agents: Vec<Agent> = specs
        .iter()
        .map(|(name, labels, _)| {
            let labels = match *labels {
                "" => format!("box={name}"),
                more => format!("box={name},{more}"),
            };
            Agent::start(host, name, &labels, slots)
        })
        .collect();
    host.wait_workers(specs.len());
    let mut long_jobs = Vec::new();
    for (name, _, running) in specs {
        for _ in 0..*running {
            long_jobs.push(
                host.submit_ok(&json!({ "args": ["sleep", "60"], "labels": { "box": name } })),
            );
        }
    }
    for id in &long_jobs {
        host.wait_state(id, &["RUNNING"], Duration::from_secs(20));
    }
    (agents, long_jobs)
}

/// Runs a short job that asks for nothing and returns the worker id it
/// was placed on.
pub fn placed_on(host: &Host) -> String {
    let id = host.submit_ok(&json!({ "args": ["true"] }));
    let job = host.wait_state(&id, &["SUCCEEDED"], Duration::from_secs(20));
    job["worker_id"].as_str().unwrap().to_owned()
}
