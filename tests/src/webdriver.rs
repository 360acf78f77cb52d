//! A W3C WebDriver client for the console's browser flows: Debian's `chromedriver` driving a
//! headless `chromium` (both from `scripts/bootstrap`), spoken as plain HTTP JSON. The
//! driver listens on 127.0.0.1 only (its default), and the whole process group (driver and
//! browser) is killed when the [`Browser`] is dropped, also when the test failed.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::free_port;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// The W3C identifier of an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A child in a process group of its own; the whole group is killed when dropped, so the
/// Chromium that chromedriver starts never outlives the test.
struct ProcessGroup(Child);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One browser session.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    screenshots: PathBuf,
    _profile: tempfile::TempDir,
    _driver: ProcessGroup,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session with a fresh profile; screenshots
    /// go to `screenshots` (created).
    pub fn start(screenshots: &Path) -> Self {
        for tool in [CHROMEDRIVER, CHROMIUM] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} is missing: run `scripts/bootstrap` (it installs Debian's chromium and chromium-driver)"
            );
        }
        std::fs::create_dir_all(screenshots)
            .unwrap_or_else(|error| panic!("creating {}: {error}", screenshots.display()));
        let port = free_port();
        let driver = ProcessGroup(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("starting {CHROMEDRIVER}: {error}")),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("tokio runtime: {error}"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|error| panic!("HTTP client: {error}"));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = runtime.block_on(async {
                let response = http.get(format!("{base}/status")).send().await.ok()?;
                let status: Value = serde_json::from_str(&response.text().await.ok()?).ok()?;
                Some(status["value"]["ready"] == true)
            });
            if ready == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on {base}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::Builder::new()
            .prefix("leasehold-chromium-")
            .tempdir()
            .unwrap_or_else(|error| panic!("browser profile dir: {error}"));
        let mut browser = Self {
            runtime,
            http,
            session: base.clone(),
            screenshots: screenshots.to_owned(),
            _profile: profile,
            _driver: driver,
        };
        let session = browser.command(
            reqwest::Method::POST,
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": CHROMIUM,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--window-size=1280,1000",
                        format!("--user-data-dir={}", browser._profile.path().display()),
                    ],
                },
            }}})),
        );
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {session}"));
        browser.session = format!("{base}/session/{id}");
        browser
    }

    /// One WebDriver command relative to the session (or the driver before it exists); the
    /// answer's `value`.
    fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`Browser::command`] that returns WebDriver's error (`error`, `message`) instead of
    /// failing the test.
    fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}{path}", self.session);
        self.runtime.block_on(async {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(body) = body {
                request = request
                    .header("content-type", "application/json")
                    .body(body.to_string());
            }
            let response = request
                .send()
                .await
                .map_err(|error| format!("WebDriver {method} {url}: {error}"))?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            let mut answer: Value = serde_json::from_str(&text)
                .map_err(|error| format!("WebDriver {method} {url}: {error}: {text}"))?;
            if status.is_success() {
                Ok(answer["value"].take())
            } else {
                Err(format!("WebDriver {method} {url}: {status} {text}"))
            }
        })
    }

    /// Runs `script` in every page this session opens from now on, before the page's own
    /// scripts (Chromium's DevTools `Page.addScriptToEvaluateOnNewDocument`, which
    /// chromedriver forwards; W3C WebDriver has no such hook). How a browser extension's
    /// content script, e.g. a wallet's `window.ethereum`, reaches the page.
    pub fn before_every_page(&self, script: &str) {
        self.command(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({
                "cmd": "Page.addScriptToEvaluateOnNewDocument",
                "params": { "source": script },
            })),
        );
    }

    pub fn goto(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Runs `script` asynchronously: it ends by calling its last argument (the callback)
    /// with the result, within the session's script timeout (30 s by default).
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Sets the value of the form field `css` selects and dispatches `event` (`input`,
    /// `change`) on it, as typing or picking would; the page's own handlers run.
    pub fn fill(&self, css: &str, value: &str, event: &str) {
        let found = self.execute(
            "const [css, value, event] = arguments;
             const field = document.querySelector(css);
             if (!field) return false;
             field.value = value;
             field.dispatchEvent(new Event(event));
             return true;",
            json!([css, value, event]),
        );
        assert_eq!(found, json!(true), "no form field matches {css}");
    }

    /// The page's visible text.
    pub fn text(&self) -> String {
        self.execute("return document.body.innerText", json!([]))
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Polls the page every 250 ms until `probe` (a script body) returns something other
    /// than `null`/`false`, failing with the page's text after `limit`.
    pub fn wait_for(&self, what: &str, limit: Duration, probe: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.execute(probe, json!([]));
            if !value.is_null() && value != false {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what}; the page said:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until the page's text contains `needle`; returns the text.
    pub fn wait_for_text(&self, needle: &str, limit: Duration) -> String {
        let probe = format!(
            "return document.body.innerText.includes({}) ? document.body.innerText : null",
            json!(needle)
        );
        self.wait_for(&format!("the text {needle:?}"), limit, &probe)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching an XPath expression, waiting for it up to `limit`.
    fn element(&self, xpath: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.command(
                reqwest::Method::POST,
                "/elements",
                Some(json!({ "using": "xpath", "value": xpath })),
            );
            if let Some(id) = found
                .as_array()
                .and_then(|elements| elements.first())
                .and_then(|element| element[ELEMENT_KEY].as_str())
            {
                return id.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {limit:?} waiting for {xpath}; the page said:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Clicks (a real WebDriver click: scrolled into view, refused when covered) the first
    /// element matching `xpath` once it exists. An element the page re-rendered between
    /// finding and clicking is found again.
    pub fn click(&self, xpath: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let id = self.element(xpath, limit);
            match self.try_command(
                reqwest::Method::POST,
                &format!("/element/{id}/click"),
                Some(json!({})),
            ) {
                Ok(_) => return,
                Err(error) if error.contains("stale element") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(error) => panic!("clicking {xpath}: {error}"),
            }
        }
    }

    /// Takes a PNG screenshot into `<screenshots>/<name>.png`; returns its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", None);
        let png = base64_decode(encoded.as_str().unwrap_or_default());
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot {name} is not a PNG"
        );
        let path = self.screenshots.join(format!("{name}.png"));
        std::fs::write(&path, &png)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: the process group is killed right after anyway.
        let _ = self.runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                self.http.delete(&self.session).send(),
            )
            .await
        });
    }
}

/// Standard base64 (what WebDriver's screenshot returns), without a dependency for it.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .filter_map(value)
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let bits = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, d)| acc | (u32::from(*d) << (18 - 6 * i)));
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64_decodes_what_webdriver_sends() {
        assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
        assert_eq!(base64_decode("TWFu"), b"Man");
        assert_eq!(base64_decode("TWE="), b"Ma");
    }
}
