//! A JSON-RPC proxy in front of anvil (on 127.0.0.1) that fails every `placeBid` of chosen
//! orders as a node would when it is unavailable (an RPC error, not a revert), and forwards
//! everything else. The daemon under test talks to the real chain through it.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use alloy::primitives::U256;
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::sol_types::SolCall;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use leasehold_contracts::bindings::Marketplace;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The running proxy; stops when dropped.
pub struct FaultyRpc {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

struct Shared {
    upstream: DynProvider,
    failing_orders: Mutex<BTreeSet<u64>>,
    refused: AtomicU64,
}

impl FaultyRpc {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream` (anvil's HTTP URL).
    pub async fn start(upstream: &str) -> Self {
        let upstream = ProviderBuilder::new()
            .connect_http(upstream.parse().expect("upstream URL"))
            .erased();
        let shared = Arc::new(Shared {
            upstream,
            failing_orders: Mutex::new(BTreeSet::new()),
            refused: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let server = tokio::spawn({
            let shared = shared.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |request| answer(shared.clone(), request));
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every `placeBid` for `order_id` fails from now on.
    pub fn fail_bids_on(&self, order_id: u64) {
        self.shared
            .failing_orders
            .lock()
            .expect("lock")
            .insert(order_id);
    }

    /// The node recovers: nothing fails any more.
    pub fn heal(&self) {
        self.shared.failing_orders.lock().expect("lock").clear();
    }

    /// How many calls the proxy refused.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyRpc {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .map(|body| body.to_bytes())
        .unwrap_or_default();
    let reply = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Array(calls)) => {
            let mut replies = Vec::with_capacity(calls.len());
            for call in calls {
                replies.push(one_call(&shared, call).await);
            }
            Value::Array(replies)
        }
        Ok(call) => one_call(&shared, call).await,
        Err(error) => json!({
            "jsonrpc": "2.0", "id": null,
            "error": {"code": -32700, "message": error.to_string()}
        }),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// The order a `placeBid` call's calldata names, if it is one.
fn place_bid_order(call: &Value) -> Option<u64> {
    let params = call.get("params")?.as_array()?;
    let request = params.first()?;
    let input = request
        .get("input")
        .or_else(|| request.get("data"))?
        .as_str()?;
    let bytes = alloy::hex::decode(input).ok()?;
    if bytes.get(..4)? != Marketplace::placeBidCall::SELECTOR.as_slice() {
        return None;
    }
    let order_id = U256::from_be_slice(bytes.get(4..36)?);
    u64::try_from(order_id).ok()
}

async fn one_call(shared: &Shared, call: Value) -> Value {
    let id = call.get("id").cloned().unwrap_or(Value::Null);
    let method = call
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let failing = place_bid_order(&call)
        .is_some_and(|order| shared.failing_orders.lock().expect("lock").contains(&order));
    if failing {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        return json!({
            "jsonrpc": "2.0", "id": id,
            "error": {"code": -32603, "message": "injected fault: the node is unavailable"}
        });
    }
    let params = call
        .get("params")
        .cloned()
        .unwrap_or(Value::Array(Vec::new()));
    let params = serde_json::value::to_raw_value(&params).expect("params serialise");
    match shared
        .upstream
        .raw_request_dyn(method.into(), &params)
        .await
    {
        Ok(result) => {
            let result: Value = serde_json::from_str(result.get()).unwrap_or(Value::Null);
            json!({"jsonrpc": "2.0", "id": id, "result": result})
        }
        Err(error) => {
            let error = match error.as_error_resp() {
                Some(payload) => json!({
                    "code": payload.code,
                    "message": payload.message,
                    "data": payload.data.as_ref().map(|data| {
                        serde_json::from_str::<Value>(data.get()).unwrap_or(Value::Null)
                    }),
                }),
                None => json!({"code": -32603, "message": error.to_string()}),
            };
            json!({"jsonrpc": "2.0", "id": id, "error": error})
        }
    }
}
