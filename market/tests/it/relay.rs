//! The gateway relay's failures that need no provider daemon: providers registered on the
//! real contracts with endpoints where nothing answers or nothing speaks TLS. The relay of
//! real calls to a real daemon is the workspace e2e flow `relay`.

use std::time::{Duration, Instant};

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::{ProviderProfile, Resources};
use leasehold_market::relay::{CONNECT_TIMEOUT, PROTOBUF};
use leasehold_proto::auth::{self, methods};
use leasehold_proto::client::unix_now;
use serde_json::Value;

use crate::support::*;

async fn register(devnet: &leasehold_contracts::devnet::Devnet, index: usize, endpoint: &str) {
    client(devnet, index)
        .register_provider(&ProviderProfile {
            endpoint: endpoint.to_owned(),
            gateway_cert_sha256: B256::repeat_byte(0xce),
            attributes: Vec::new(),
            capacity: Resources {
                cpu_milli: 1_000,
                memory_mib: 1_000,
                storage_mib: 1_000,
            },
            gpus: Vec::new(),
        })
        .await
        .unwrap_or_else(|error| panic!("register provider {index}: {error}"));
}

/// A GetStatus call on lease 1 signed by `key`, posted to the relay for `provider`.
async fn get_status(base: &str, provider: &str, key: &str) -> (u16, Value, Duration) {
    let signer: PrivateKeySigner = key.parse().expect("dev key");
    let body = vec![0x08, 0x01]; // LeaseStatusRequest { lease_id: 1 }
    let credentials = auth::sign(
        &signer,
        methods::GET_STATUS,
        1,
        unix_now(),
        auth::new_nonce(),
        &body,
    )
    .expect("signing");
    let request = reqwest::Client::new()
        .post(format!("{base}/api/v1/gateway/{provider}/GetStatus"))
        .header("content-type", PROTOBUF)
        .header(
            auth::metadata::ADDRESS,
            credentials.address.to_checksum(None),
        )
        .header(auth::metadata::TIMESTAMP, credentials.timestamp.to_string())
        .header(auth::metadata::NONCE, credentials.nonce.to_string())
        .header(
            auth::metadata::SIGNATURE,
            format!("0x{}", alloy::hex::encode(credentials.signature.as_bytes())),
        )
        .body(body);
    let started = Instant::now();
    let response = request.send().await.expect("relay answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|error| panic!("{error}: {text}"));
    (status, json, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_reports_a_silent_gateway_as_a_timeout_and_a_closed_port_as_unreachable() {
    within(async {
        // Accepts connections and never answers the TLS handshake.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent_port = silent.local_addr().expect("address").port();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        // Nothing listens here once the listener is dropped.
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .port();

        let devnet = devnet().await;
        register(
            &devnet,
            PROVIDER_A,
            &format!("https://127.0.0.1:{silent_port}"),
        )
        .await;
        register(&devnet, PROVIDER_B, &format!("127.0.0.1:{closed_port}")).await;
        let head = head(&devnet).await;
        let db = TestDb::new(Backend::Sqlite).await;
        // One call in flight at most, so that the silent gateway's call holds the only permit.
        let indexer = Indexer::start(
            &devnet,
            &db,
            &["--confirmations", "0", "--relay-max-calls", "1"],
        );
        indexer.wait_indexed(head).await;
        let tenant = devnet.private_key_hex(TENANT).expect("tenant key");
        let address = |index: usize| {
            devnet
                .address(index)
                .expect("dev address")
                .to_string()
                .to_lowercase()
        };

        let silent_call = tokio::spawn({
            let base = indexer.base.clone();
            let provider = address(PROVIDER_A);
            let tenant = tenant.clone();
            async move { get_status(&base, &provider, &tenant).await }
        });
        // Well inside the silent call's connect deadline: it holds the permit.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (code, body, took) = get_status(&indexer.base, &address(PROVIDER_B), &tenant).await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(body["error"]["code"], "relay_busy", "{body}");
        assert!(took < Duration::from_secs(2), "refused at once: {took:?}");

        let (code, body, took) = silent_call.await.expect("the silent call");
        assert_eq!(code, 504, "{body}");
        assert_eq!(body["error"]["code"], "gateway_timeout", "{body}");
        assert!(
            took >= CONNECT_TIMEOUT && took < CONNECT_TIMEOUT + Duration::from_secs(5),
            "the connect deadline bounds the wait: {took:?}"
        );

        // The permit came back with the silent call's answer.
        let (code, body, _) = get_status(&indexer.base, &address(PROVIDER_B), &tenant).await;
        assert_eq!(code, 502, "{body}");
        assert_eq!(body["error"]["code"], "gateway_unreachable", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| message.contains(&closed_port.to_string())),
            "the message names the endpoint: {body}"
        );
        let log = indexer.log();
        let access: Vec<&str> = log
            .lines()
            .filter(|line| line.contains("relayed gateway call"))
            .collect();
        assert!(
            access.iter().any(
                |line| line.contains(&format!("provider={}", address(PROVIDER_A)))
                    && line.contains("method=GetStatus")
                    && line.contains("outcome=gateway_timeout")
            ),
            "an access log line per call, with its outcome:\n{log}"
        );
        assert!(
            access
                .iter()
                .any(|line| line.contains("outcome=gateway_unreachable")
                    && line.contains(&format!("caller={}", address(TENANT)))),
            "the caller is logged:\n{log}"
        );

        // An address the index does not hold (a funded dev account that never registered).
        let (code, body, _) = get_status(&indexer.base, &address(TENANT), &tenant).await;
        assert_eq!(code, 404, "{body}");
        assert_eq!(body["error"]["code"], "unknown_provider", "{body}");
        let (code, body, _) = get_status(&indexer.base, "0xnot-an-address", &tenant).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["error"]["field"], "provider", "{body}");

        // The relay route takes POST only; a GET is no proxy either.
        let response = reqwest::get(format!(
            "{}/api/v1/gateway/{}/GetStatus",
            indexer.base,
            address(PROVIDER_B)
        ))
        .await
        .expect("GET answers");
        assert_eq!(response.status().as_u16(), 405);
        held.abort();
    })
    .await;
}

/// A gateway that presents another certificate than the one its provider registered: the
/// relay refuses it during the handshake (nothing is sent), says so with both fingerprints,
/// and keeps no connection to it, so the next call is refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refuses_a_gateway_presenting_another_certificate_than_its_registration() {
    within(async {
        let certified =
            rcgen::generate_simple_self_signed(vec!["gateway.test".to_owned()]).expect("cert");
        let cert = certified.cert.der().clone();
        let presented = leasehold_proto::tls::cert_sha256(&cert);
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let handshakes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = tokio::spawn({
            let handshakes = handshakes.clone();
            async move {
                while let Ok((socket, _)) = listener.accept().await {
                    handshakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let acceptor = acceptor.clone();
                    // The client aborts the handshake; nothing else happens here.
                    tokio::spawn(async move {
                        let _ = acceptor.accept(socket).await;
                    });
                }
            }
        });

        let devnet = devnet().await;
        // `register` pins 0xcece…, not the certificate the server presents.
        register(&devnet, PROVIDER_A, &format!("https://127.0.0.1:{port}")).await;
        let head = head(&devnet).await;
        let db = TestDb::new(Backend::Sqlite).await;
        let indexer = Indexer::start(&devnet, &db, &["--confirmations", "0"]);
        indexer.wait_indexed(head).await;
        let tenant = devnet.private_key_hex(TENANT).expect("tenant key");
        let provider = devnet
            .address(PROVIDER_A)
            .expect("dev address")
            .to_string()
            .to_lowercase();

        for attempt in 1..=2 {
            let (code, body, _) = get_status(&indexer.base, &provider, &tenant).await;
            assert_eq!(code, 502, "{body}");
            assert_eq!(
                body["error"]["code"], "gateway_certificate_mismatch",
                "{body}"
            );
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&presented.to_string())
                    && message.contains(&B256::repeat_byte(0xce).to_string()),
                "both fingerprints are named: {message}"
            );
            assert_eq!(
                handshakes.load(std::sync::atomic::Ordering::SeqCst),
                attempt,
                "each call tried a handshake of its own: no refused connection is kept"
            );
        }
        assert!(
            indexer
                .log()
                .lines()
                .any(|line| line.contains("relayed gateway call")
                    && line.contains("outcome=gateway_certificate_mismatch")
                    && line.contains("connection=none")),
            "the access line says the call had no connection:\n{}",
            indexer.log()
        );
        server.abort();
    })
    .await;
}
