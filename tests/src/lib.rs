//! Helpers shared by the end-to-end flows in `e2e/`: the built binaries, bounded process
//! runs, guards that stop processes and remove containers even when a test fails, a tiny
//! HTTP client and Docker queries. The chain comes from `leasehold_contracts::devnet`.

pub mod docker;
pub mod process;
pub mod scenario;
pub mod webdriver;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Where a flow writes what a person should look at afterwards (screenshots):
/// `$LEASEHOLD_TEST_OUTPUT/<name>` when set, else `<target>/test-output/<name>` next to the
/// profile this test binary was built in.
pub fn test_output_dir(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("LEASEHOLD_TEST_OUTPUT") {
        return PathBuf::from(dir).join(name);
    }
    std::env::current_exe()
        .ok()
        .as_deref()
        // <target>/<profile>/deps/e2e-<hash>
        .and_then(|exe| exe.ancestors().nth(3))
        .map(|target| target.join("test-output").join(name))
        .unwrap_or_else(|| {
            std::env::temp_dir()
                .join("leasehold-test-output")
                .join(name)
        })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
}

/// Polls `probe` every 200 ms until it returns `Some`, failing the test after `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether something accepts TCP connections at `address`.
pub fn listening(address: &str) -> bool {
    address.parse().ok().is_some_and(|socket| {
        TcpStream::connect_timeout(&socket, Duration::from_millis(300)).is_ok()
    })
}

/// The `provider` and `tenant` executables.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub provider: PathBuf,
    pub tenant: PathBuf,
}

/// The binaries, built once per test run: `$LEASEHOLD_BIN_DIR` when set (prebuilt), else
/// `cargo build` into the target dir and profile this test binary was built in (a no-op
/// when the workspace is already built).
pub fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    match BINARIES.get_or_init(locate_or_build) {
        Ok(binaries) => binaries,
        Err(reason) => panic!("cannot get the provider and tenant binaries: {reason}"),
    }
}

fn locate_or_build() -> Result<Binaries, String> {
    let dir = build(&[
        ("leasehold-provider", "provider"),
        ("leasehold-tenant", "tenant"),
    ])?;
    in_dir(&dir)
}

/// The `leasehold-market` executable, found or built as [`binaries`] are (a separate build,
/// so that flows without the market do not wait for it).
pub fn market_binary() -> &'static Path {
    static MARKET: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = MARKET.get_or_init(|| {
        let path = build(&[("leasehold-market", "leasehold-market")])?.join("leasehold-market");
        if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{} is missing", path.display()))
        }
    });
    match built {
        Ok(path) => path,
        Err(reason) => panic!("cannot get the leasehold-market binary: {reason}"),
    }
}

/// The directory holding `(package, binary)`s: `$LEASEHOLD_BIN_DIR` when set, else where
/// `cargo build` put them in the target dir and profile this test binary was built in.
fn build(binaries: &[(&str, &str)]) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("LEASEHOLD_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    // <target>/<profile dir>/deps/e2e-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the test binary is not inside <target>/<profile>/deps")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("the profile dir has no parent")?;
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") => "dev".to_owned(),
        Some(name) => name.to_owned(),
        None => return Err("unreadable profile dir name".into()),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "-q"]);
    for (package, binary) in binaries {
        command.args(["-p", package, "--bin", binary]);
    }
    let status = command
        .args(["--profile", &profile])
        .env("CARGO_TARGET_DIR", target_dir)
        .current_dir(repo_root())
        .status()
        .map_err(|e| format!("running cargo build: {e}"))?;
    if !status.success() {
        let names: Vec<_> = binaries.iter().map(|(_, binary)| *binary).collect();
        return Err(format!(
            "cargo build of {} failed: {status}",
            names.join(" and ")
        ));
    }
    Ok(profile_dir.to_path_buf())
}

fn in_dir(dir: &Path) -> Result<Binaries, String> {
    let binaries = Binaries {
        provider: dir.join("provider"),
        tenant: dir.join("tenant"),
    };
    for path in [&binaries.provider, &binaries.tenant] {
        if !path.is_file() {
            return Err(format!("{} is missing", path.display()));
        }
    }
    Ok(binaries)
}

/// A parsed `http://host:port/path` response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// A plain HTTP/1.0 GET with a 3-second budget; `None` when nothing usable answered.
pub fn http_get(url: &str) -> Option<HttpResponse> {
    http_request("GET", url, &[], &[], Duration::from_secs(3), false)
}

/// A plain HTTP/1.0 POST of `body` with `headers`, read to the end (HTTP/1.0: the server
/// closes after the body, also after a streamed one) within `budget`.
pub fn http_post(
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    budget: Duration,
) -> Option<HttpResponse> {
    http_request("POST", url, headers, body, budget, false)
}

/// [`http_post`] of a request whose answer streams on: what arrived within `listen`, then the
/// connection is dropped.
pub fn http_post_for(
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    listen: Duration,
) -> Option<HttpResponse> {
    http_request("POST", url, headers, body, listen, true)
}

fn http_request(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: &[u8],
    budget: Duration,
    partial: bool,
) -> Option<HttpResponse> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => rest.split_at(slash),
        None => (rest, "/"),
    };
    let socket = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .ok()?
        .next()?;
    let deadline = Instant::now() + budget;
    let mut stream = TcpStream::connect_timeout(&socket, budget).ok()?;
    stream.set_read_timeout(Some(budget)).ok()?;
    stream.set_write_timeout(Some(budget)).ok()?;
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    // Bounded as a whole, not per read: a stream that trickles forever still ends.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|left| !left.is_zero());
        let Some(left) = left else {
            if partial {
                break;
            }
            return None;
        };
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(read) => raw.extend_from_slice(&chunk[..read]),
            Err(error)
                if partial
                    && matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                break;
            }
            Err(_) => return None,
        }
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(HttpResponse {
        status,
        body: body.to_owned(),
    })
}
