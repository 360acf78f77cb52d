//! The built console in a real browser: Debian's headless Chromium driven over WebDriver
//! (plain HTTP JSON) against `leasehold-market run` on a devnet. Ignored by default: it needs
//! `scripts/bootstrap chromium` and a built console (`scripts/console build`). Run with
//! `cargo test -p leasehold-market --test it browser -- --ignored`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256};
use leasehold_contracts::{GpuCapacity, ProviderProfile, Resources, chain_key};
use serde_json::{Value, json};

use crate::support::*;

const MODEL: &str = "nvidia/a100/80Gi/sxm";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// A child started in a process group of its own, the whole group killed when dropped: the
/// Chromium that chromedriver starts must not outlive a failed test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The cargo target directory, from where cargo put the binary under test.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_leasehold-market"))
        .parent()
        .and_then(Path::parent)
        .expect("the binary lies in <target>/<profile>/")
        .to_owned()
}

/// One WebDriver command: `method path` with a JSON body, the answer's `value`.
async fn webdriver(
    http: &reqwest::Client,
    driver: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = http.request(method.clone(), format!("{driver}{path}"));
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"));
    let status = response.status();
    let text = response.text().await.expect("WebDriver body");
    let mut answer: Value = serde_json::from_str(&text)
        .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}: {text}"));
    assert!(
        status.is_success(),
        "WebDriver {method} {path}: {status} {text}"
    );
    answer["value"].take()
}

/// Standard base64 (what WebDriver's screenshot returns), without a dependency for it.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(value)
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

#[test]
fn base64_decodes_what_webdriver_sends() {
    assert_eq!(base64_decode("iVBORw0KGgo="), b"\x89PNG\r\n\x1a\n");
    assert_eq!(base64_decode("TWFu"), b"Man");
    assert_eq!(base64_decode("TWE="), b"Ma");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium and chromedriver (scripts/bootstrap chromium) and a built console (scripts/console build)"]
async fn console_in_chromium_shows_the_providers_gpu_model_by_name() {
    within(async {
        assert!(
            Path::new(CHROMEDRIVER).is_file() && Path::new(CHROMIUM).is_file(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: run `scripts/bootstrap chromium`"
        );
        let dist = Path::new(env!("CARGO_MANIFEST_DIR")).join("console/dist");
        assert!(
            dist.join("index.html").is_file(),
            "{} has no built console: run `scripts/console build`",
            dist.display()
        );

        // A provider with eight A100s whose model name is published on chain.
        let devnet = devnet().await;
        let provider = client(&devnet, PROVIDER_A);
        provider
            .register_provider(&ProviderProfile {
                endpoint: "https://a.example:8443".to_owned(),
                gateway_cert_sha256: B256::repeat_byte(0xce),
                attributes: vec![attribute("region=eu-west")],
                capacity: Resources {
                    cpu_milli: 64_000,
                    memory_mib: 512 * 1024,
                    storage_mib: 2048 * 1024,
                },
                gpus: vec![GpuCapacity {
                    model_key: chain_key(MODEL),
                    count: 8,
                }],
            })
            .await
            .expect("register the provider");
        provider
            .add_stake(U256::from(100 * TOKEN))
            .await
            .expect("stake");
        provider
            .publish_names(&[MODEL.to_owned(), "region=eu-west".to_owned()])
            .await
            .expect("publish the names");
        let db = TestDb::new(Backend::Sqlite).await;
        let console_dir = dist.to_str().expect("UTF-8 path");
        let indexer = Indexer::start(
            &devnet,
            &db,
            &["--confirmations", "0", "--console-dir", console_dir],
        );
        indexer.wait_indexed(head(&devnet).await).await;
        let address = format!("{:#x}", provider.sender());
        let (_, shown) = indexer.get(&format!("/api/v1/providers/{address}")).await;
        assert_eq!(
            shown["gpus"][0]["name"], MODEL,
            "the API names the model: {shown}"
        );

        // chromedriver on 127.0.0.1 (its default: local connections only).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .expect("free port");
        let _driver = Killed(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .process_group(0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver"),
        );
        let driver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let started = Instant::now();
        loop {
            if let Ok(response) = http.get(format!("{driver}/status")).send().await
                && let Ok(text) = response.text().await
                && serde_json::from_str::<Value>(&text)
                    .is_ok_and(|status| status["value"]["ready"] == true)
            {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not become ready on {driver}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let profile = tempfile::tempdir().expect("browser profile dir");
        let session = webdriver(
            &http,
            &driver,
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
                        "--window-size=1280,900",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }}})),
        )
        .await;
        let id = session["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {session}"))
            .to_owned();
        let session_path = format!("/session/{id}");

        let page = format!("{}/#/market", indexer.base);
        webdriver(
            &http,
            &driver,
            reqwest::Method::POST,
            &format!("{session_path}/url"),
            Some(json!({"url": page})),
        )
        .await;
        let started = Instant::now();
        let text = loop {
            let text = webdriver(
                &http,
                &driver,
                reqwest::Method::POST,
                &format!("{session_path}/execute/sync"),
                Some(json!({"script": "return document.body.innerText", "args": []})),
            )
            .await;
            let text = text.as_str().unwrap_or_default().to_owned();
            if text.contains(MODEL) {
                break text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{page} never showed {MODEL}; the page said:\n{text}\nserver log:\n{}",
                indexer.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(text.contains("8/8"), "all eight GPUs free: {text}");

        let screenshot = webdriver(
            &http,
            &driver,
            reqwest::Method::GET,
            &format!("{session_path}/screenshot"),
            None,
        )
        .await;
        let png = base64_decode(screenshot.as_str().expect("base64 PNG"));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        let out = target_dir().join("test-output/console");
        std::fs::create_dir_all(&out).expect("output dir");
        let file = out.join("market.png");
        std::fs::write(&file, &png).expect("write the screenshot");
        eprintln!("screenshot: {}", file.display());

        webdriver(&http, &driver, reqwest::Method::DELETE, &session_path, None).await;
    })
    .await;
}
