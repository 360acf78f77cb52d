//! Issue #15: the market server's signed gateway relay (`POST /api/v1/gateway/{provider}/
//! {Method}`) against a real provider daemon, chain and Docker engine. The calls are signed
//! with `leasehold_proto::auth`, which the console's signer equals byte for byte (the signing
//! vectors test), and sent as the console sends them: protobuf body, four headers.

use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use leasehold_e2e::scenario::{OTHER_TENANT, QUICK_DEPLOY, Scenario, TENANT, first_uri};
use leasehold_e2e::{HttpResponse, eventually, http_get, http_post, http_post_for};
use leasehold_proto::auth::{self, methods};
use leasehold_proto::gateway::{LeaseStatusRequest, StreamEventsRequest, StreamLogsRequest};
use serde_json::Value;

use crate::flows::{PRICE_A, deploy_ok, manifest};

const MINUTE: Duration = Duration::from_secs(60);

/// hello.yaml's web service, saying two lines before it serves: hello.yaml's httpd logs
/// nothing, and the relay's log stream needs lines to carry.
pub(crate) const HELLO_LOGGING: &str = r#"
version: "2.0"
services:
  web:
    image: leasehold/busybox:test
    command:
      - sh
      - -c
      - "echo relay-line-one; echo relay-line-two >&2; exec httpd -f -p 80 -h /www"
    expose:
      - port: 80
        as: 80
        to:
          - global: true
profiles:
  compute:
    web:
      resources:
        cpu:
          units: 100m
        memory:
          size: 64Mi
        storage:
          size: 128Mi
  placement:
    anywhere:
      pricing:
        web:
          denom: usdc
          amount: 1000
deployment:
  web:
    anywhere:
      profile: web
      count: 1
"#;

/// A signed call's metadata as HTTP headers.
type Metadata = Vec<(String, String)>;

fn signer(scenario: &Scenario, account: usize) -> PrivateKeySigner {
    scenario
        .devnet()
        .private_key_hex(account)
        .expect("dev key")
        .parse()
        .expect("a dev key parses")
}

/// The body and headers of `method` on `lease_id`, signed by `signer` now.
fn signed(
    signer: &PrivateKeySigner,
    method: &str,
    lease_id: u64,
    body: Vec<u8>,
) -> (Vec<u8>, Metadata) {
    let credentials = auth::sign(
        signer,
        method,
        lease_id,
        leasehold_proto::client::unix_now(),
        auth::new_nonce(),
        &body,
    )
    .expect("signing");
    let mut metadata = tonic::metadata::MetadataMap::new();
    credentials.insert_into(&mut metadata);
    let mut headers: Metadata = metadata
        .into_headers()
        .iter()
        .map(|(name, value)| {
            (
                name.to_string(),
                value.to_str().expect("ASCII metadata").to_owned(),
            )
        })
        .collect();
    headers.push((
        "Content-Type".to_owned(),
        leasehold_market::relay::PROTOBUF.to_owned(),
    ));
    (body, headers)
}

fn post(url: &str, (body, headers): &(Vec<u8>, Metadata)) -> HttpResponse {
    http_post(url, headers, body, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no HTTP answer from {url}"))
}

fn json(response: &HttpResponse) -> Value {
    serde_json::from_str(&response.body)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {response:?}"))
}

/// `(event, data)` of each SSE event in a finished stream.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut kind = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(rest) = line.strip_prefix("event:") {
                    kind = Some(rest.trim().to_owned());
                } else if let Some(rest) = line.strip_prefix("data:") {
                    data = serde_json::from_str(rest.trim()).ok();
                }
            }
            Some((kind?, data?))
        })
        .collect()
}

#[test]
fn the_relay_carries_the_consoles_signed_calls_to_the_provider_and_nothing_else() {
    let scenario = Scenario::with_provider(PRICE_A);
    let hello = manifest(&scenario, "hello-logging.yaml", HELLO_LOGGING);
    let (document, lease) = deploy_ok(&scenario, &hello, QUICK_DEPLOY);
    let deployed = first_uri(&document);
    let provider = scenario.providers[0].address.clone();
    let (_market, base) = scenario.start_market(None);
    eventually("the provider in the index", MINUTE, || {
        http_get(&format!("{base}/api/v1/providers/{provider}"))
            .filter(|response| response.status == 200)
    });
    let tenant = signer(&scenario, TENANT);
    let relay = |method: &str| format!("{base}/api/v1/gateway/{provider}/{method}");

    // GetStatus: the lease runs, with the URI `tenant status` shows, and it serves.
    let status = post(
        &relay("GetStatus"),
        &signed(
            &tenant,
            methods::GET_STATUS,
            lease,
            prost::Message::encode_to_vec(&LeaseStatusRequest { lease_id: lease }),
        ),
    );
    assert_eq!(
        status.status,
        200,
        "{status:?}\n{}",
        scenario.provider_logs()
    );
    let status = json(&status);
    assert_eq!(status["lease_id"], lease.to_string(), "{status}");
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["services"][0]["name"], "web", "{status}");
    let uri = status["services"][0]["uris"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no URI in {status}"))
        .to_owned();
    let cli = scenario.tenant(
        TENANT,
        &["status", &lease.to_string(), "--output", "json"],
        MINUTE,
    );
    cli.expect_code(0, "tenant status");
    // The URL deploy printed must stay the lease's: the lease adopting its pre-lease start
    // keeps the container and its host port.
    assert_eq!(
        deployed,
        uri,
        "tenant deploy printed another URL than the one the lease serves\n{}",
        scenario.provider_logs()
    );
    assert!(
        cli.json().to_string().contains(&uri),
        "tenant status shows another URI than the relay's {uri}: {}\n(deploy printed {deployed})\n{}",
        cli.stdout,
        scenario.provider_logs()
    );
    eventually(&format!("HTTP 200 from {uri}"), MINUTE, || {
        http_get(&uri).filter(|response| response.status == 200)
    });

    // StreamLogs (not followed): the container's lines as SSE, then the end.
    let logs_request = StreamLogsRequest {
        lease_id: lease,
        service: String::new(),
        follow: false,
        tail: 0,
    };
    let events = eventually("both log lines through the relay", MINUTE, || {
        let response = post(
            &relay("StreamLogs"),
            &signed(
                &tenant,
                methods::STREAM_LOGS,
                lease,
                prost::Message::encode_to_vec(&logs_request),
            ),
        );
        assert_eq!(response.status, 200, "{response:?}");
        let events = sse_events(&response.body);
        let lines: Vec<_> = events
            .iter()
            .filter(|(kind, _)| kind == "log")
            .map(|(_, data)| {
                data["line"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_end()
                    .to_owned()
            })
            .collect();
        (lines.contains(&"relay-line-one".to_owned())
            && lines.contains(&"relay-line-two".to_owned()))
        .then_some(events)
    });
    let two = events
        .iter()
        .find(|(_, data)| {
            data["line"]
                .as_str()
                .unwrap_or_default()
                .starts_with("relay-line-two")
        })
        .map(|(_, data)| data.clone())
        .unwrap_or_default();
    assert_eq!(two["service"], "web", "{two}");
    assert_eq!(two["stderr"], true, "{two}");
    assert_eq!(
        events.last().map(|(kind, _)| kind.as_str()),
        Some("end"),
        "{events:?}"
    );

    // StreamEvents: the lease's history, then its container events as they happen: a
    // command run in the container (`tenant shell`) shows up as the service's exec events.
    let events_call = signed(
        &tenant,
        methods::STREAM_EVENTS,
        lease,
        prost::Message::encode_to_vec(&StreamEventsRequest { lease_id: lease }),
    );
    let events_url = relay("StreamEvents");
    let listening = std::thread::spawn(move || {
        http_post_for(
            &events_url,
            &events_call.1,
            &events_call.0,
            Duration::from_secs(10),
        )
    });
    std::thread::sleep(Duration::from_secs(2));
    let shell = scenario.tenant(TENANT, &["shell", &lease.to_string(), "--", "true"], MINUTE);
    assert_eq!(shell.code, Some(0), "{shell:?}");
    let streamed = listening
        .join()
        .expect("the events reader")
        .expect("an answer from the events relay");
    assert_eq!(streamed.status, 200, "{streamed:?}");
    let lease_events = sse_events(&streamed.body);
    // The lease's recorded history comes first, then the live engine events.
    assert!(
        lease_events
            .first()
            .is_some_and(|(kind, data)| kind == "event" && data["kind"].is_string()),
        "no history in {lease_events:?}"
    );
    assert!(
        lease_events.iter().any(|(kind, data)| kind == "event"
            && data["service"] == "web"
            && data["message"]
                .as_str()
                .is_some_and(|message| message.starts_with("exec_"))),
        "no exec event of the service in {lease_events:?}"
    );

    // Another account's signature: the provider refuses, and says why.
    let stranger = post(
        &relay("GetStatus"),
        &signed(
            &signer(&scenario, OTHER_TENANT),
            methods::GET_STATUS,
            lease,
            prost::Message::encode_to_vec(&LeaseStatusRequest { lease_id: lease }),
        ),
    );
    assert!([401, 403].contains(&stranger.status), "{stranger:?}");
    let refusal = json(&stranger);
    assert_eq!(
        refusal["error"]["code"], "gateway_permission_denied",
        "{refusal}"
    );
    let message = refusal["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("is not the tenant of lease"),
        "the provider's message is passed on: {refusal}"
    );

    // A call whose body is not what was signed: the provider's signature check refuses it.
    let (_, headers) = signed(
        &tenant,
        methods::GET_STATUS,
        lease,
        prost::Message::encode_to_vec(&LeaseStatusRequest { lease_id: lease }),
    );
    let tampered = post(
        &relay("GetStatus"),
        &(
            prost::Message::encode_to_vec(&LeaseStatusRequest {
                lease_id: lease + 1,
            }),
            headers,
        ),
    );
    assert_eq!(tampered.status, 401, "{tampered:?}");
    assert_eq!(json(&tampered)["error"]["code"], "gateway_unauthenticated");

    // Every short call above went over one connection to the gateway: the first call opened
    // it, the others (refusals included: the provider answered them) reused it; each stream
    // had a connection of its own.
    let log = scenario.market_log();
    let calls: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("relayed gateway call"))
        .collect();
    assert!(calls.len() >= 5, "an access line per call:\n{log}");
    assert!(
        calls[0].contains("connection=new"),
        "the first call connects:\n{log}"
    );
    let count = |connection: &str| {
        calls
            .iter()
            .filter(|line| line.contains(&format!("connection={connection}")))
            .count()
    };
    assert_eq!(count("new"), 1, "one shared connection:\n{log}");
    assert!(count("reused") >= 2, "the later calls reuse it:\n{log}");
    assert!(
        calls
            .iter()
            .filter(
                |line| line.contains("method=StreamLogs") || line.contains("method=StreamEvents")
            )
            .all(|line| line.contains("connection=own")),
        "streams have their own connection:\n{log}"
    );

    // Not an open proxy: a provider the index does not know, a method that is not relayed.
    let get_status = signed(
        &tenant,
        methods::GET_STATUS,
        lease,
        prost::Message::encode_to_vec(&LeaseStatusRequest { lease_id: lease }),
    );
    let nobody = post(
        &format!("{base}/api/v1/gateway/0x00000000000000000000000000000000000000aa/GetStatus"),
        &get_status,
    );
    assert_eq!(nobody.status, 404, "{nobody:?}");
    assert_eq!(json(&nobody)["error"]["code"], "unknown_provider");
    for method in ["Deploy", "Shell"] {
        let unknown = post(&relay(method), &get_status);
        assert_eq!(unknown.status, 404, "{unknown:?}");
        assert_eq!(json(&unknown)["error"]["code"], "unknown_method");
    }

    // A body over the limit is refused before anything reaches the provider.
    let oversized = signed(
        &tenant,
        methods::SEND_MANIFEST,
        lease,
        vec![0u8; leasehold_market::relay::MAX_BODY_BYTES + 1],
    );
    let too_large = post(&relay("SendManifest"), &oversized);
    assert_eq!(too_large.status, 413, "{too_large:?}");
    assert_eq!(json(&too_large)["error"]["code"], "body_too_large");

    // Missing signature headers: a 400 naming the header.
    let unsigned = post(
        &relay("GetStatus"),
        &(
            get_status.0.clone(),
            vec![(
                "Content-Type".to_owned(),
                leasehold_market::relay::PROTOBUF.to_owned(),
            )],
        ),
    );
    assert_eq!(unsigned.status, 400, "{unsigned:?}");
    assert_eq!(json(&unsigned)["error"]["field"], auth::metadata::ADDRESS);
}
