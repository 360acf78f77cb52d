//! A JSON-RPC proxy in front of a devnet that behaves like a public endpoint when told to:
//! answers HTTP 429 to the next N requests, refuses `eth_getLogs` over more than a set number
//! of blocks, and counts what it did. Listens on 127.0.0.1 only; for tests and benches.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloy::transports::http::reqwest;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Requests passed to the upstream node.
    pub forwarded: AtomicU64,
    /// Requests answered with HTTP 429.
    pub rate_limited: AtomicU64,
    /// `eth_getLogs` calls refused for their block range.
    pub ranges_refused: AtomicU64,
    /// The widest `eth_getLogs` range forwarded, in blocks.
    pub widest_range: AtomicU64,
}

#[derive(Debug, Default)]
struct Rules {
    rate_limit_next: AtomicU32,
    /// 0: no limit.
    max_log_range: AtomicU64,
}

/// The proxy; stops when dropped.
pub struct RpcProxy {
    url: String,
    rules: Arc<Rules>,
    counters: Arc<ProxyCounters>,
    task: JoinHandle<()>,
}

impl Drop for RpcProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RpcProxy {
    /// Starts a proxy on a free 127.0.0.1 port forwarding to `upstream` (an HTTP JSON-RPC URL).
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let rules = Arc::new(Rules::default());
        let counters = Arc::new(ProxyCounters::default());
        let upstream = upstream.to_owned();
        let client = reqwest::Client::new();
        let task = tokio::spawn({
            let rules = Arc::clone(&rules);
            let counters = Arc::clone(&counters);
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let context = (
                        client.clone(),
                        upstream.clone(),
                        Arc::clone(&rules),
                        Arc::clone(&counters),
                    );
                    tokio::spawn(async move {
                        let (client, upstream, rules, counters) = context;
                        // A broken connection is the client's business.
                        let _ = serve(stream, &client, &upstream, &rules, &counters).await;
                    });
                }
            }
        });
        Ok(Self {
            url,
            rules,
            counters,
            task,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next `count` requests with HTTP 429 Too Many Requests.
    pub fn rate_limit_next(&self, count: u32) {
        self.rules.rate_limit_next.store(count, Ordering::SeqCst);
    }

    /// Refuses `eth_getLogs` over more than `blocks` blocks (0: no limit), as public endpoints do.
    pub fn limit_log_range(&self, blocks: u64) {
        self.rules.max_log_range.store(blocks, Ordering::SeqCst);
    }

    pub fn counters(&self) -> &ProxyCounters {
        &self.counters
    }
}

async fn serve(
    mut stream: TcpStream,
    client: &reqwest::Client,
    upstream: &str,
    rules: &Rules,
    counters: &ProxyCounters,
) -> std::io::Result<()> {
    loop {
        let Some(body) = read_request(&mut stream).await? else {
            return Ok(());
        };
        let (status, reply) = answer(&body, client, upstream, rules, counters).await;
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            reply.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&reply).await?;
    }
}

/// One HTTP/1.1 request's body; `None` when the client closed the connection.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Ok(Some(buffer[header_end..header_end + length].to_vec()))
}

async fn answer(
    body: &[u8],
    client: &reqwest::Client,
    upstream: &str,
    rules: &Rules,
    counters: &ProxyCounters,
) -> (&'static str, Vec<u8>) {
    let limited = rules
        .rate_limit_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if limited {
        counters.rate_limited.fetch_add(1, Ordering::SeqCst);
        return ("429 Too Many Requests", b"rate limited".to_vec());
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if request["method"] == "eth_getLogs" {
        let block = |key: &str| {
            request["params"][0][key]
                .as_str()
                .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok())
        };
        if let (Some(from), Some(to)) = (block("fromBlock"), block("toBlock")) {
            let blocks = to.saturating_sub(from).saturating_add(1);
            let max = rules.max_log_range.load(Ordering::SeqCst);
            if max > 0 && blocks > max {
                counters.ranges_refused.fetch_add(1, Ordering::SeqCst);
                let error = serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": request["id"],
                    "error": { "code": -32602, "message": format!("query exceeds max block range {max}") },
                });
                return ("200 OK", error.to_string().into_bytes());
            }
            counters.widest_range.fetch_max(blocks, Ordering::SeqCst);
        }
    }
    counters.forwarded.fetch_add(1, Ordering::SeqCst);
    let forwarded = client
        .post(upstream)
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await;
    match forwarded {
        Ok(response) => match response.bytes().await {
            Ok(bytes) => ("200 OK", bytes.to_vec()),
            Err(_) => ("502 Bad Gateway", b"upstream body".to_vec()),
        },
        Err(_) => ("502 Bad Gateway", b"upstream unreachable".to_vec()),
    }
}
