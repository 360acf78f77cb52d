//! The JSON-RPC transport every Leasehold client uses: one or more HTTP endpoints with
//! failover, each request bounded in time, and rate limits (HTTP 429 and the providers'
//! rate-limit error codes) retried after a jittered pause.
//!
//! Layering: alloy's `RetryBackoffLayer` (with [`JitteredRateLimit`]) around [`Failover`].
//! Failover moves to the next URL on a transport failure (connection refused, timeout, HTTP
//! error) and stays on the URL that answered; a JSON-RPC error answer (a revert) is an answer
//! and goes back as it is.

use std::hash::{BuildHasher as _, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use alloy::rpc::client::{ClientBuilder, RpcClient};
use alloy::rpc::json_rpc::{RequestPacket, ResponsePacket};
use alloy::transports::http::{Http, reqwest};
use alloy::transports::layers::{RateLimitRetryPolicy, RetryBackoffLayer, RetryPolicy};
use alloy::transports::{RpcError, TransportError, TransportErrorKind, TransportFut};
use tower::Service;

use crate::error::ClientError;

/// How long one HTTP request to an endpoint may take before it counts as failed.
pub const RPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times one request is retried after a rate-limit answer.
pub const RATE_LIMIT_RETRIES: u32 = 8;

/// The pause before a retried request when the endpoint gave no hint; up to as much again is
/// added at random, so clients limited together do not retry together.
pub const RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(250);

/// Parses one URL or a comma-separated list (`http://a:8545,https://b.example`); `field` names
/// the setting in errors.
pub fn parse_rpc_urls(field: &'static str, text: &str) -> Result<Vec<reqwest::Url>, ClientError> {
    let urls: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    if urls.is_empty() {
        return Err(ClientError::InvalidInput {
            field,
            reason: "no RPC URL given".to_owned(),
        });
    }
    urls.into_iter()
        .map(|url| {
            url.parse().map_err(|e| ClientError::InvalidInput {
                field,
                reason: format!("{url:?} is not a URL: {e}"),
            })
        })
        .collect()
}

/// A client over `urls` (in order of preference) whose every HTTP request gives up after
/// `request_timeout`.
pub fn rpc_client(
    urls: &[reqwest::Url],
    request_timeout: Duration,
) -> Result<RpcClient, ClientError> {
    let http = reqwest::Client::builder()
        .timeout(request_timeout)
        .build()
        .map_err(|e| ClientError::InvalidInput {
            field: "rpc_url",
            reason: format!("cannot build the HTTP client: {e}"),
        })?;
    let transports: Vec<Http<reqwest::Client>> = urls
        .iter()
        .map(|url| Http::with_client(http.clone(), url.clone()))
        .collect();
    if transports.is_empty() {
        return Err(ClientError::InvalidInput {
            field: "rpc_url",
            reason: "no RPC URL given".to_owned(),
        });
    }
    let is_local = urls.iter().all(alloy::transports::utils::guess_local_url);
    let retry = RetryBackoffLayer::new_with_policy(
        RATE_LIMIT_RETRIES,
        0,
        u64::MAX,
        JitteredRateLimit {
            base: RATE_LIMIT_BACKOFF,
        },
    );
    Ok(ClientBuilder::default()
        .layer(retry)
        .transport(Failover::new(transports), is_local))
}

/// alloy's rate-limit detection with a jittered pause: the endpoint's hint (or
/// [`RATE_LIMIT_BACKOFF`]) plus a random part of up to as much.
#[derive(Debug, Clone, Copy)]
pub struct JitteredRateLimit {
    pub base: Duration,
}

impl RetryPolicy for JitteredRateLimit {
    fn should_retry(&self, error: &TransportError) -> bool {
        RateLimitRetryPolicy::default().should_retry(error)
    }

    fn backoff_hint(&self, error: &TransportError) -> Option<Duration> {
        let base = RateLimitRetryPolicy::default()
            .backoff_hint(error)
            .unwrap_or(self.base);
        Some(base.saturating_add(jitter(base)))
    }
}

/// A random duration below `up_to` (std's per-process random hasher keys: no extra crate for a
/// jitter that needs no quality).
fn jitter(up_to: Duration) -> Duration {
    let millis = u64::try_from(up_to.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    let random = RandomState::new().hash_one(std::time::Instant::now());
    Duration::from_millis(random % millis)
}

/// Sends each request to the preferred endpoint and, when that fails at the transport level,
/// to the next ones in order; the first that answers becomes the preferred one.
#[derive(Debug, Clone)]
pub struct Failover<S> {
    transports: Arc<Vec<S>>,
    preferred: Arc<AtomicUsize>,
}

impl<S> Failover<S> {
    pub fn new(transports: Vec<S>) -> Self {
        Self {
            transports: Arc::new(transports),
            preferred: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<S> Service<RequestPacket> for Failover<S>
where
    S: Service<RequestPacket, Future = TransportFut<'static>, Error = TransportError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        let transports = Arc::clone(&self.transports);
        let preferred = Arc::clone(&self.preferred);
        Box::pin(async move {
            let count = transports.len();
            let first = preferred.load(Ordering::Relaxed);
            let mut last_error: Option<TransportError> = None;
            for offset in 0..count {
                let index = (first + offset) % count;
                let Some(transport) = transports.get(index) else {
                    continue;
                };
                match transport.clone().call(request.clone()).await {
                    Ok(response) => {
                        preferred.store(index, Ordering::Relaxed);
                        return Ok(response);
                    }
                    Err(error) => {
                        tracing::debug!(endpoint = index, %error, "RPC endpoint failed, trying the next");
                        last_error = Some(error);
                    }
                }
            }
            Err(last_error.unwrap_or_else(|| {
                RpcError::Transport(TransportErrorKind::Custom("no RPC endpoint".into()))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists_parse_and_name_the_field_on_errors() {
        let urls = parse_rpc_urls("rpc_url", " http://a:8545 , https://b.example/rpc").unwrap();
        assert_eq!(urls.len(), 2);
        assert_eq!(urls[1].host_str(), Some("b.example"));
        assert_eq!(parse_rpc_urls("rpc_url", "http://a:8545").unwrap().len(), 1);
        let err = parse_rpc_urls("chain.rpc_url", "http://a:8545,not a url").unwrap_err();
        assert!(err.to_string().contains("chain.rpc_url"), "{err}");
        assert!(err.to_string().contains("\"not a url\""), "{err}");
        assert!(parse_rpc_urls("rpc_url", " , ").is_err());
    }

    #[test]
    fn jitter_stays_below_its_bound() {
        for _ in 0..100 {
            assert!(jitter(Duration::from_millis(10)) < Duration::from_millis(10));
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
