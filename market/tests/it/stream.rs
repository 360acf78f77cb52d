//! The live stream: an event reaches a subscriber soon after its block, and `Last-Event-ID`
//! replays what came after it.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// An open `GET /api/v1/stream`; `read_until` collects the raw text until it holds `needle`.
pub struct Subscription {
    socket: TcpStream,
    text: String,
}

impl Subscription {
    pub async fn open(indexer: &Indexer, last_event_id: Option<&str>) -> Self {
        let address = indexer.base.trim_start_matches("http://").to_owned();
        let mut socket = TcpStream::connect(&address).await.expect("connect");
        let mut request = format!(
            "GET /api/v1/stream HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n"
        );
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        request.push_str("\r\n");
        socket.write_all(request.as_bytes()).await.expect("request");
        let mut subscription = Self {
            socket,
            text: String::new(),
        };
        subscription
            .read_until("200 OK", Duration::from_secs(5))
            .await;
        subscription
    }

    pub async fn read_until(&mut self, needle: &str, limit: Duration) -> String {
        let started = Instant::now();
        let mut buffer = [0u8; 4096];
        while !self.text.contains(needle) {
            let left = limit.checked_sub(started.elapsed()).unwrap_or_else(|| {
                panic!(
                    "`{needle}` not streamed within {limit:?}; got:\n{}",
                    self.text
                )
            });
            match tokio::time::timeout(left, self.socket.read(&mut buffer)).await {
                Ok(Ok(0)) => panic!("stream closed; got:\n{}", self.text),
                Ok(Ok(read)) => self
                    .text
                    .push_str(&String::from_utf8_lossy(&buffer[..read])),
                Ok(Err(error)) => panic!("reading the stream: {error}"),
                Err(_) => panic!(
                    "`{needle}` not streamed within {limit:?}; got:\n{}",
                    self.text
                ),
            }
        }
        self.text.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_event_is_streamed_within_two_seconds_and_replayed_after_its_id() {
    within(async {
        let devnet = devnet().await;
        register_providers(&devnet).await;
        let db = TestDb::new(Backend::Sqlite).await;
        let indexer = Indexer::start(&devnet, &db, &["--confirmations", "0"]);
        indexer.wait_indexed(head(&devnet).await).await;
        let mut live = Subscription::open(&indexer, None).await;

        let sent = Instant::now();
        let order = client(&devnet, TENANT)
            .create_order(&new_order(&devnet, 100 * TOKEN))
            .await
            .expect("createOrder");
        let mined = Instant::now();
        let text = live
            .read_until("event: OrderCreated", Duration::from_secs(10))
            .await;
        let streamed = Instant::now();
        let from_mined = streamed.duration_since(mined);
        eprintln!(
            "OrderCreated streamed {from_mined:?} after its receipt ({:?} after sending)",
            streamed.duration_since(sent)
        );
        assert!(
            from_mined < Duration::from_secs(2),
            "streamed {from_mined:?} after the block"
        );
        assert!(text.contains(&format!("\"order_id\":\"{}\"", order.order_id)), "{text}");
        let id_line = text
            .lines()
            .find(|line| line.starts_with("id: "))
            .expect("an id line")
            .trim_start_matches("id: ")
            .to_owned();

        // A client that saw the registrations only gets everything after them on reconnect.
        let (_, events) = indexer.get("/api/v1/events").await;
        let first = &events["items"][0];
        let first_id = format!("{}:{}", first["block"], first["log_index"]);
        let mut replay = Subscription::open(&indexer, Some(&first_id)).await;
        let text = replay
            .read_until(&format!("id: {id_line}"), Duration::from_secs(5))
            .await;
        assert!(!text.contains(&format!("id: {first_id}\n")), "{text}");
        assert!(text.contains("event: ProviderRegistered"), "the second registration: {text}");

        // A malformed Last-Event-ID is refused, naming the header.
        let mut bad = TcpStream::connect(indexer.base.trim_start_matches("http://"))
            .await
            .expect("connect");
        bad.write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nLast-Event-ID: nope\r\nConnection: close\r\n\r\n")
            .await
            .expect("request");
        let mut answer = String::new();
        bad.read_to_string(&mut answer).await.expect("answer");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("\"field\":\"Last-Event-ID\""), "{answer}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_replay_ends_the_stream_instead_of_skipping_to_live_events() {
    within(async {
        let devnet = devnet().await;
        register_providers(&devnet).await;
        let db = TestDb::new(Backend::Sqlite).await;
        let indexer = Indexer::start(
            &devnet,
            &db,
            &["--confirmations", "0", "--max-stream-replay", "2"],
        );
        indexer.wait_indexed(head(&devnet).await).await;
        let (_, events) = indexer.get("/api/v1/events").await;
        let items = events["items"].as_array().expect("items").clone();
        assert!(items.len() >= 4, "{events}");
        let id = |event: &serde_json::Value| format!("{}:{}", event["block"], event["log_index"]);
        let mut replay = Subscription::open(&indexer, Some(&id(&items[0]))).await;
        // The chunked body's last chunk: the server ended the stream.
        let text = replay
            .read_until("\r\n0\r\n\r\n", Duration::from_secs(5))
            .await;
        assert!(text.contains(&format!("id: {}\n", id(&items[1]))), "{text}");
        assert!(text.contains(&format!("id: {}\n", id(&items[2]))), "{text}");
        assert!(
            !text.contains(&format!("id: {}\n", id(&items[3]))),
            "{text}"
        );
    })
    .await;
}
