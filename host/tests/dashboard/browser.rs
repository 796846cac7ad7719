//! Headless Chromium driven over WebDriver (chromedriver + fantoccini),
//! for the dashboard tests: start, wait on the page, screenshots.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// `PATH` lookup of a program.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// A chromedriver process and a browser session through it. On drop (a
/// failed test too) the session is ended, which quits Chromium, and then
/// chromedriver's process group (Chromium's processes are in it) is killed,
/// so no browser outlives its test.
pub struct Browser {
    pub client: Client,
    driver: Child,
    session: String,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        let _ = agent
            .delete(&format!(
                "http://127.0.0.1:{}/session/{}",
                self.port, self.session
            ))
            .call();
        let group = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts Chromium, or answers `None` with the reason printed when it is
    /// not installed; under `CI=true` a missing browser fails the test
    /// (scripts/test.sh installs it with scripts/chromium.sh).
    pub async fn start() -> Option<Self> {
        let (Some(chromium), Some(driver)) = (which("chromium"), which("chromedriver")) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but chromium or chromedriver is missing: run scripts/chromium.sh"
            );
            eprintln!(
                "skipped: chromium and chromedriver are not installed (scripts/chromium.sh installs them)"
            );
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut driver = Command::new(driver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let caps = json!({
            "browserName": "chrome",
            // An alert must stay open for the XSS test to see it.
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,900", "--enable-precise-memory-info",
                    "--no-first-run", "--disable-extensions", "--disable-background-networking",
                    "--disable-breakpad", "--disable-crash-reporter",
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = driver.try_wait() {
                        panic!("chromedriver exited: {status}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("no WebDriver session within 60 s: {err}"),
            }
        };
        let session = client
            .session_id()
            .await
            .expect("session id")
            .expect("a session");
        Some(Self {
            client,
            driver,
            session,
            port,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.expect("goto");
    }

    /// Runs a script (its body; `return` answers).
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// Polls `script` every 50 ms until it answers something truthy; answers
    /// it. Panics naming `what` after `timeout`.
    pub async fn wait_js(&self, what: &str, timeout: Duration, script: &str) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.js(script).await;
            let truthy = !matches!(value, Value::Null | Value::Bool(false))
                && value != json!(0)
                && value != json!("");
            if truthy {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("click");
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.expect("clear");
        el.send_keys(text).await.expect("send keys");
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("{css}: {err}"))
    }

    /// No alert, confirm or prompt is open.
    pub async fn assert_no_dialog(&self) {
        if let Ok(text) = self.client.get_alert_text().await {
            panic!("a dialog fired: {text:?}");
        }
    }

    /// Saves a screenshot as `NAME.png` in target/dashboard-screenshots/,
    /// and in docs/screenshots/ too when `HODEI_UPDATE_SCREENSHOTS=1`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .join("dashboard-screenshots");
        std::fs::create_dir_all(&target).expect("screenshot dir");
        std::fs::write(target.join(format!("{name}.png")), &png).expect("write screenshot");
        if std::env::var("HODEI_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/screenshots");
            std::fs::create_dir_all(&docs).expect("docs/screenshots");
            std::fs::write(docs.join(format!("{name}.png")), &png).expect("write screenshot");
        }
        eprintln!("screenshot {name}.png in {}", target.display());
    }
}
