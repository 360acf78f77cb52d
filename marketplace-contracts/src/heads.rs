//! New-block notifications over a WebSocket (`eth_subscribe("newHeads")`), used only to
//! wake whoever waits for the chain to move: the [`Follower`](crate::Follower) and the
//! tenant CLI. Nothing is read from the notifications but the block number: the follower
//! still reads logs by block range with its cursor and confirmations, so a dropped or late
//! notification costs latency, never a log. While the socket is down the waiters fall back
//! to their poll interval and the subscription is re-established with backoff.
//!
//! A hand-written subscriber over `tokio-tungstenite` (already in the workspace for the
//! Kubernetes exec websocket) instead of alloy's pub-sub transport: one request and one
//! notification shape are all that is needed, and no further crates are built.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use crate::follower::{Backoff, BackoffPolicy};

/// A refused WebSocket URL (see [`HeadWatch::websocket`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadWatchError {
    #[error("ws_url `{url}`: {reason}")]
    Url { url: String, reason: &'static str },
}

/// Why one subscription ended (logged; the subscriber reconnects).
#[derive(Debug, thiserror::Error)]
enum SubscriptionError {
    #[error("websocket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("eth_subscribe refused: {0}")]
    Refused(String),
    #[error("the node closed the subscription")]
    Closed,
}

/// Delay between reconnection attempts after the socket failed or closed.
const RECONNECT: BackoffPolicy = BackoffPolicy {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

/// The latest head announced by a `newHeads` subscription, kept up to date by a background
/// task that lives as long as this value (and its clones).
#[derive(Debug, Clone)]
pub struct HeadWatch {
    head: watch::Receiver<u64>,
    subscribed: watch::Receiver<bool>,
    _task: std::sync::Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HeadWatch {
    /// Subscribes to new heads at `url` (`ws://`; `wss://` is refused: no TLS stack is built
    /// for it). Returns at once: the connection is made, and remade after any failure, by a
    /// task on the current tokio runtime.
    pub fn websocket(url: &str) -> Result<Self, HeadWatchError> {
        let refuse = |reason| HeadWatchError::Url {
            url: url.to_owned(),
            reason,
        };
        let scheme = url.split_once("://").map(|(scheme, _)| scheme);
        match scheme {
            Some("ws") => {}
            Some("wss") => {
                return Err(refuse(
                    "wss:// is not supported; use ws:// (e.g. through a local tunnel) or leave it unset to poll",
                ));
            }
            _ => return Err(refuse("must start with ws://")),
        }
        let (head_tx, head) = watch::channel(0);
        let (subscribed_tx, subscribed) = watch::channel(false);
        let task = tokio::spawn(subscribe_forever(url.to_owned(), head_tx, subscribed_tx));
        Ok(Self {
            head,
            subscribed,
            _task: std::sync::Arc::new(AbortOnDrop(task)),
        })
    }

    /// The last head number announced (0 before the first).
    pub fn latest(&self) -> u64 {
        *self.head.borrow()
    }

    /// Whether the subscription is up now.
    pub fn is_subscribed(&self) -> bool {
        *self.subscribed.borrow()
    }

    /// Waits for a head not seen by this handle yet, at most `limit`. `true` when a head
    /// arrived; `false` on timeout (the caller polls as it would without a subscription).
    pub async fn wait(&mut self, limit: Duration) -> bool {
        match tokio::time::timeout(limit, self.head.changed()).await {
            Ok(Ok(())) => true,
            // The subscriber task is gone (it only ends with this value): behave as a poll.
            Ok(Err(_)) => {
                tokio::time::sleep(limit).await;
                false
            }
            Err(_) => false,
        }
    }
}

/// Waits for the next head when `heads` is a subscription, else sleeps `poll`; either way at
/// most `poll`.
pub async fn next_head_or(heads: Option<&mut HeadWatch>, poll: Duration) {
    match heads {
        Some(heads) => {
            heads.wait(poll).await;
        }
        None => tokio::time::sleep(poll).await,
    }
}

async fn subscribe_forever(url: String, head: watch::Sender<u64>, subscribed: watch::Sender<bool>) {
    let mut backoff = Backoff::new(RECONNECT);
    loop {
        let result = subscription(&url, &head, &subscribed, &mut backoff).await;
        subscribed.send_replace(false);
        if head.is_closed() {
            return;
        }
        let delay = backoff.next_delay();
        match result {
            Ok(()) | Err(SubscriptionError::Closed) => {
                info!(%url, ?delay, "newHeads subscription closed; polling until it is back");
            }
            Err(error) => {
                warn!(%url, %error, ?delay, "newHeads subscription failed; polling until it is back");
            }
        }
        tokio::time::sleep(delay).await;
    }
}

/// One connection: subscribe, then forward every announced head number.
async fn subscription(
    url: &str,
    head: &watch::Sender<u64>,
    subscribed: &watch::Sender<bool>,
    backoff: &mut Backoff,
) -> Result<(), SubscriptionError> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await?;
    socket
        .send(Message::text(
            r#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#,
        ))
        .await?;
    while let Some(message) = socket.next().await {
        let text = match message? {
            Message::Text(text) => text,
            Message::Close(_) => return Err(SubscriptionError::Closed),
            // tungstenite answers pings itself.
            _ => continue,
        };
        let Ok(value) = serde_json::from_str::<serde_json::Value>(text.as_str()) else {
            debug!(%text, "ignoring a websocket message that is not JSON");
            continue;
        };
        if value["id"] == 1 {
            if let Some(error) = value.get("error") {
                return Err(SubscriptionError::Refused(error.to_string()));
            }
            info!(%url, "subscribed to new heads");
            subscribed.send_replace(true);
            backoff.reset();
            continue;
        }
        if let Some(number) = value
            .pointer("/params/result/number")
            .and_then(serde_json::Value::as_str)
            .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok())
        {
            head.send_replace(number);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_ws_urls_are_accepted() {
        for (url, reason) in [
            ("http://127.0.0.1:8545", "must start with ws://"),
            ("127.0.0.1:8545", "must start with ws://"),
        ] {
            assert_eq!(
                HeadWatch::websocket(url).unwrap_err(),
                HeadWatchError::Url {
                    url: url.to_owned(),
                    reason
                }
            );
        }
        let error = HeadWatch::websocket("wss://node.example").unwrap_err();
        assert!(
            error.to_string().contains("wss:// is not supported"),
            "{error}"
        );
        assert!(HeadWatch::websocket("ws://127.0.0.1:1").is_ok());
    }

    #[tokio::test]
    async fn an_unreachable_socket_times_out_like_a_poll() {
        // Port 1 refuses connections: the waiter gets its poll interval, no error.
        let mut heads = HeadWatch::websocket("ws://127.0.0.1:1").expect("ws url");
        assert!(!heads.wait(Duration::from_millis(50)).await);
        assert!(!heads.is_subscribed());
        assert_eq!(heads.latest(), 0);
    }
}
