//! Test vectors of signed lease calls, for the web console's TypeScript signer
//! (`market/console/test/vectors/gateway-auth.json`, checked by its `npm test`).
//! This test fails when the Rust signer no longer produces the committed file;
//! `LEASEHOLD_BLESS=1 cargo test -p leasehold-proto --test it console_vectors`
//! rewrites it (then run the console's tests).
//!
//! Every field is produced by the Rust code the CLI and the provider use:
//! `prost` encodes the request, [`auth::signing_message`] builds the text and
//! [`auth::sign`] signs it.

use alloy::signers::local::PrivateKeySigner;
use leasehold_proto::auth::{self, Nonce, methods};
use leasehold_proto::gateway::{
    LeaseStatusRequest, SendManifestRequest, SendOrderManifestRequest, StreamEventsRequest,
    StreamLogsRequest,
};
use prost::Message;

/// anvil's public development keys 0 and 1: test-only.
const KEYS: [&str; 2] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
];

struct Case {
    /// The request's fields as a JSON object, for the console's protobuf encoder.
    request_json: String,
    method: &'static str,
    lease_id: u64,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let manifest = br#"{"version":"2.0","services":{"web":{"image":"nginx:1.27"}}}"#.to_vec();
    let manifest_text = String::from_utf8(manifest.clone()).expect("ASCII literal");
    let quoted = manifest_text.replace('"', "\\\"");
    vec![
        Case {
            request_json: format!(r#"{{"lease_id":"7","manifest_json":"{quoted}"}}"#),
            method: methods::SEND_MANIFEST,
            lease_id: 7,
            body: SendManifestRequest {
                lease_id: 7,
                manifest_json: manifest.clone(),
            }
            .encode_to_vec(),
        },
        Case {
            request_json: format!(
                r#"{{"order_id":"300","bid_id":"2","manifest_json":"{quoted}"}}"#
            ),
            method: methods::SEND_ORDER_MANIFEST,
            lease_id: 300,
            body: SendOrderManifestRequest {
                order_id: 300,
                bid_id: 2,
                manifest_json: manifest,
                auto_accept: false,
            }
            .encode_to_vec(),
        },
        Case {
            request_json: r#"{"lease_id":"18446744073709551615"}"#.into(),
            method: methods::GET_STATUS,
            lease_id: u64::MAX,
            body: LeaseStatusRequest { lease_id: u64::MAX }.encode_to_vec(),
        },
        Case {
            request_json: r#"{"lease_id":"0"}"#.into(),
            method: methods::GET_STATUS,
            lease_id: 0,
            // All-default fields encode to no bytes at all.
            body: LeaseStatusRequest { lease_id: 0 }.encode_to_vec(),
        },
        Case {
            request_json: r#"{"lease_id":"129","service":"web","follow":true,"tail":500}"#.into(),
            method: methods::STREAM_LOGS,
            lease_id: 129,
            body: StreamLogsRequest {
                lease_id: 129,
                service: "web".into(),
                follow: true,
                tail: 500,
            }
            .encode_to_vec(),
        },
        Case {
            request_json: r#"{"lease_id":"5"}"#.into(),
            method: methods::STREAM_EVENTS,
            lease_id: 5,
            body: StreamEventsRequest { lease_id: 5 }.encode_to_vec(),
        },
    ]
}

fn render() -> Result<String, Box<dyn std::error::Error>> {
    let mut vectors = Vec::new();
    for (index, case) in cases().into_iter().enumerate() {
        let signer: PrivateKeySigner = KEYS[index % KEYS.len()].parse()?;
        let timestamp = 1_700_000_000 + u64::try_from(index)? * 61;
        let nonce =
            Nonce::from(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128 + u128::try_from(index)?);
        let message =
            auth::signing_message(case.method, case.lease_id, timestamp, nonce, &case.body)?;
        let credentials = auth::sign(
            &signer,
            case.method,
            case.lease_id,
            timestamp,
            nonce,
            &case.body,
        )?;
        vectors.push(format!(
            concat!(
                "  {{\n",
                "    \"private_key\": \"{}\",\n",
                "    \"address\": \"{}\",\n",
                "    \"method\": \"{}\",\n",
                "    \"lease_id\": \"{}\",\n",
                "    \"timestamp\": {},\n",
                "    \"nonce\": \"{}\",\n",
                "    \"request\": {},\n",
                "    \"body_hex\": \"0x{}\",\n",
                "    \"message\": \"{}\",\n",
                "    \"signature\": \"0x{}\"\n",
                "  }}"
            ),
            KEYS[index % KEYS.len()],
            credentials.address.to_checksum(None),
            case.method,
            case.lease_id,
            timestamp,
            nonce,
            case.request_json,
            alloy::hex::encode(&case.body),
            message,
            alloy::hex::encode(credentials.signature.as_bytes()),
        ));
    }
    Ok(format!("[\n{}\n]\n", vectors.join(",\n")))
}

#[test]
fn console_vectors_are_what_the_rust_signer_produces() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../market/console/test/vectors/gateway-auth.json");
    let rendered = render().expect("vectors");
    if std::env::var_os("LEASEHOLD_BLESS").is_some() {
        std::fs::write(&path, &rendered).expect("write vectors");
    }
    let committed = std::fs::read_to_string(&path).expect("committed vectors");
    assert!(
        committed == rendered,
        "{} differs from what the Rust signer produces; if the change is intended, \
         rerun with LEASEHOLD_BLESS=1 and then the console's npm test",
        path.display()
    );
}
