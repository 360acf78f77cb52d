//! `POST /api/v1/preflight`: the preflight crate's report for an SDL, from the chain and the
//! index, equal to what the library makes of the same inputs (what `tenant preflight` prints).

use std::collections::HashMap;

use alloy::primitives::{B256, U256};
use leasehold_contracts::{GpuCapacity, ProviderProfile, Resources, chain_key};
use leasehold_preflight::{AuditVerdicts, Inputs, PlacedBid};
use serde_json::Value;

use crate::support::*;

/// Asks for one `rtx4090` (`nvidia/rtx4090/*/*`), at most 5 tokens an hour.
const SDL: &str = include_str!("../../../manifests/examples/stable-diffusion.yaml");
const GPU_MODEL: &str = "nvidia/rtx4090/24Gi/pcie";

async fn post(base: &str, body: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/preflight"))
        .header("content-type", "application/yaml")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST preflight");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_lists_the_provider_with_the_gpu_and_why_not_the_other() {
    within(async {
        let devnet = devnet().await;
        // A has the model the SDL needs, B has no GPUs; both are in region=eu-west, which
        // the order `new_order` posts requires, so both can bid on it.
        for (index, endpoint, gpus) in [
            (
                PROVIDER_A,
                "https://a.example:8443",
                vec![GpuCapacity {
                    model_key: chain_key(GPU_MODEL),
                    count: 2,
                }],
            ),
            (PROVIDER_B, "https://b.example:8443", Vec::new()),
        ] {
            let provider = client(&devnet, index);
            provider
                .register_provider(&ProviderProfile {
                    endpoint: endpoint.to_owned(),
                    gateway_cert_sha256: B256::repeat_byte(0xce),
                    attributes: vec![attribute("region=eu-west")],
                    capacity: Resources {
                        cpu_milli: 64_000,
                        memory_mib: 1 << 20,
                        storage_mib: 1 << 20,
                    },
                    gpus,
                })
                .await
                .unwrap_or_else(|error| panic!("register provider {index}: {error}"));
            provider
                .add_stake(U256::from(100 * TOKEN))
                .await
                .unwrap_or_else(|error| panic!("add stake {index}: {error}"));
        }
        let tenant = client(&devnet, TENANT);
        tenant
            .publish_names(&["region=eu-west".to_owned()])
            .await
            .expect("publish names");
        // One bid each: their recent rates (the order has one replica).
        let order = tenant
            .create_order(&new_order(&devnet, 100 * TOKEN))
            .await
            .expect("createOrder");
        let mut placed = Vec::new();
        for (index, price) in [(PROVIDER_A, 2 * TOKEN), (PROVIDER_B, 3 * TOKEN)] {
            let provider = client(&devnet, index);
            provider
                .place_bid(
                    order.order_id,
                    U256::from(price),
                    None,
                    &order.spec.requirements,
                )
                .await
                .expect("placeBid");
            placed.push(PlacedBid {
                provider: provider.sender(),
                price_per_hour: U256::from(price),
                replicas: 1,
            });
        }
        let head = head(&devnet).await;
        let db = TestDb::new(Backend::Sqlite).await;
        let indexer = Indexer::start(&devnet, &db, &["--confirmations", "0"]);
        indexer.wait_indexed(head).await;

        let (code, report) = post(&indexer.base, SDL).await;
        assert_eq!(code, 200, "{report}");
        let group = &report["groups"][0];
        let a = client(&devnet, PROVIDER_A).sender();
        let b = client(&devnet, PROVIDER_B).sender();
        let eligible = group["eligible"].as_array().expect("eligible");
        assert_eq!(eligible.len(), 1, "{report}");
        assert_eq!(eligible[0]["provider"], format!("{a:#x}"), "{report}");
        assert_eq!(eligible[0]["gpu_models"][0]["name"], GPU_MODEL, "{report}");
        assert_eq!(
            eligible[0]["attributes"][0]["name"], "region=eu-west",
            "the published name, from the index: {report}"
        );
        assert_eq!(
            eligible[0]["estimated_price_per_hour"],
            (2 * TOKEN).to_string(),
            "its indexed bid times one replica: {report}"
        );
        let ineligible = group["ineligible"].as_array().expect("ineligible");
        assert_eq!(ineligible.len(), 1, "{report}");
        assert_eq!(ineligible[0]["provider"], format!("{b:#x}"), "{report}");
        assert_eq!(ineligible[0]["reason"]["kind"], "gpu_model", "{report}");

        // The library's report for the same inputs, read here as the tenant reads them.
        let reader = client(&devnet, TENANT);
        let providers = reader.provider_infos().await.expect("providers");
        let rates: HashMap<_, _> = leasehold_preflight::recent_rates(&placed);
        let groups = leasehold_manifests::parse(SDL).expect("SDL").groups();
        let expected = leasehold_preflight::preflight(&Inputs {
            groups: &groups,
            providers: &providers,
            rates: &rates,
            published: &reader.key_names().await.expect("names"),
            audits: &AuditVerdicts::default(),
        })
        .expect("preflight");
        assert_eq!(
            report,
            serde_json::to_value(&expected).expect("json"),
            "the API's report is the library's"
        );

        // An SDL that does not validate: validate's errors, the first one's field named.
        let bad = SDL.replace("units: 2", "units: -2");
        assert_ne!(bad, SDL);
        let (code, body) = post(&indexer.base, &bad).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_sdl", "{body}");
        let field = body["error"]["field"].as_str().expect("a field");
        assert!(field.contains("cpu"), "{body}");
        let validate = reqwest::Client::new()
            .post(format!("{}/api/v1/sdl/validate", indexer.base))
            .body(bad)
            .send()
            .await
            .expect("validate");
        let validated: Value =
            serde_json::from_str(&validate.text().await.expect("body")).expect("json");
        assert_eq!(body["error"]["errors"], validated["errors"], "{body}");
    })
    .await;
}
