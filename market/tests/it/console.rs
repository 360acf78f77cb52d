//! The web console's static files (`leasehold_market::console`): served with their content
//! type, `/` is `index.html`, and no request reads anything outside the console directory.
//! Requests are written on a raw socket: an HTTP client would normalise the `..` away.

use std::path::Path;
use std::time::Duration;

use leasehold_market::console::{self, Console};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::within;

/// A response as read off the socket.
pub struct Raw {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `METHOD path` sent verbatim (no normalisation) to `address`.
pub async fn raw_request(address: &str, method: &str, path: &str) -> Raw {
    let mut socket = TcpStream::connect(address).await.expect("connect");
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    socket
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut bytes))
        .await
        .expect("response in time")
        .expect("read response");
    let split = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status: {head}"));
    Raw {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
    }
}

/// A built console in a temp dir: `index.html`, `app.js`, `app.css`, a directory, and next to
/// it (outside) a secret file a symlink inside points at.
pub fn console_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(dist.join("assets")).expect("dist");
    std::fs::write(
        dist.join("index.html"),
        "<!doctype html><title>console</title>",
    )
    .expect("html");
    std::fs::write(dist.join("app.js"), "console.log('leasehold');").expect("js");
    std::fs::write(dist.join("app.css"), "body{}").expect("css");
    std::fs::write(dist.join("assets/logo.svg"), "<svg/>").expect("svg");
    std::fs::write(dir.path().join("secret.txt"), "SECRET").expect("secret");
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), dist.join("escape.txt"))
        .expect("symlink");
    std::os::unix::fs::symlink(dir.path(), dist.join("up")).expect("dir symlink");
    dir
}

async fn serve(console: Console) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(async move {
        axum::serve(listener, console::router(console))
            .await
            .expect("serve");
    });
    address
}

#[tokio::test]
async fn the_console_is_served_with_content_types_and_nothing_outside_it() {
    within(async {
        let dir = console_dir();
        let dist = dir.path().join("dist");
        let address = serve(Console::open(&dist).expect("a built console")).await;

        let index = raw_request(&address, "GET", "/").await;
        assert_eq!(index.status, 200, "{}", index.head);
        assert_eq!(
            index.header("content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(index.body, std::fs::read(dist.join("index.html")).unwrap());
        for (path, content_type, file) in [
            ("/index.html", "text/html; charset=utf-8", "index.html"),
            ("/app.js", "text/javascript; charset=utf-8", "app.js"),
            ("/app.css", "text/css; charset=utf-8", "app.css"),
            ("/assets/logo.svg", "image/svg+xml", "assets/logo.svg"),
            ("/%61pp.js", "text/javascript; charset=utf-8", "app.js"),
            ("/app.js?v=1", "text/javascript; charset=utf-8", "app.js"),
        ] {
            let response = raw_request(&address, "GET", path).await;
            assert_eq!(response.status, 200, "{path}: {}", response.head);
            assert_eq!(
                response.header("content-type").as_deref(),
                Some(content_type),
                "{path}"
            );
            assert_eq!(
                response.header("x-content-type-options").as_deref(),
                Some("nosniff")
            );
            assert_eq!(response.body, std::fs::read(dist.join(file)).unwrap());
        }
        let head = raw_request(&address, "HEAD", "/app.js").await;
        assert_eq!(head.status, 200);
        assert!(head.body.is_empty(), "HEAD sends no body");

        // Traversal in every spelling: refused before the file system (400), or resolved
        // outside the directory (404). Never the secret.
        for (path, status) in [
            ("/../secret.txt", 400),
            ("/assets/../../secret.txt", 400),
            ("/%2e%2e/secret.txt", 400),
            ("/%2E%2E%2Fsecret.txt", 400),
            ("/.%2e/secret.txt", 400),
            ("/assets/%2e%2e/%2e%2e/secret.txt", 400),
            ("/..%5csecret.txt", 400),
            ("//etc/passwd", 400),
            ("/%2fetc%2fpasswd", 400),
            ("/./index.html", 400),
            ("/index.html%00.js", 400),
            ("/%zz", 400),
            ("/escape.txt", 404),
            ("/up/secret.txt", 404),
            ("/assets", 404),
            ("/assets/", 400),
            ("/missing.js", 404),
        ] {
            let response = raw_request(&address, "GET", path).await;
            assert_eq!(response.status, status, "{path}: {}", response.head);
            assert!(
                !String::from_utf8_lossy(&response.body).contains("SECRET"),
                "{path} leaked the file outside"
            );
            assert!(response.json()["error"]["code"].is_string(), "{path}");
        }
        // An absolute request target (proxy form) names the same path, no escape either.
        let absolute = raw_request(&address, "GET", "http://127.0.0.1/../secret.txt").await;
        assert_ne!(absolute.status, 200, "{}", absolute.head);

        let post = raw_request(&address, "POST", "/index.html").await;
        assert_eq!(post.status, 405);
        let api = raw_request(&address, "GET", "/api/v1/nothing").await;
        assert_eq!(api.status, 404);
        assert_eq!(api.json()["error"]["code"], "not_found");
    })
    .await;
}

#[tokio::test]
async fn without_a_console_the_root_says_how_to_build_it() {
    within(async {
        let address = serve(Console::none()).await;
        let response = raw_request(&address, "GET", "/").await;
        assert_eq!(response.status, 404);
        let body = response.json();
        assert_eq!(body["error"]["code"], "console_not_built", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("scripts/console build")),
            "{body}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let error = Console::open(dir.path()).expect_err("no index.html");
        assert!(error.to_string().contains("index.html"), "{error}");
        let error = Console::open(Path::new("/nonexistent/console")).expect_err("missing");
        assert!(error.to_string().contains("--console-dir"), "{error}");
    })
    .await;
}
