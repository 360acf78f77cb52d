//! Readable names: `providers`, `preflight` and `bids` show the names providers published
//! on chain (`publishNames`) for their attribute and GPU model keys, in text and JSON, and
//! the hash where nobody named a key.

use alloy::primitives::U256;
use leasehold_contracts::{
    GpuCapacity, NewOrder, OrderRequirements, OrderSpec, ProviderProfile, Resources,
};

use crate::support::{Devnet, PROVIDER_A, PROVIDER_B, TENANT, code, json, key, stderr, within};

/// No manifest mentions it and it is no known model: only its published name can say what
/// the key is.
const MODEL: &str = "acme/zx9/48Gi/pcie";

fn profile(endpoint: &str, attributes: &[&str], gpus: &[(&str, u32)]) -> ProviderProfile {
    ProviderProfile {
        endpoint: endpoint.to_owned(),
        gateway_cert_sha256: alloy::primitives::B256::repeat_byte(0xce),
        attributes: attributes.iter().map(|text| key(text)).collect(),
        capacity: Resources {
            cpu_milli: 64_000,
            memory_mib: 262_144,
            storage_mib: 2_000_000,
        },
        gpus: gpus
            .iter()
            .map(|(model, count)| GpuCapacity {
                model_key: key(model),
                count: *count,
            })
            .collect(),
    }
}

fn text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_preflight_and_bids_show_published_names() {
    within(async {
        let devnet = Devnet::start().await;
        let a = devnet.client(PROVIDER_A);
        let names: Vec<String> = ["region=eu-west", "tier=community", MODEL]
            .map(str::to_owned)
            .to_vec();
        a.publish_names(&names).await.expect("publish names");
        a.register_provider(&profile(
            "127.0.0.1:7001",
            &["region=eu-west", "tier=community"],
            &[(MODEL, 4)],
        ))
        .await
        .expect("register A");
        // B's second attribute was never published: it stays a hash.
        devnet
            .client(PROVIDER_B)
            .register_provider(&profile(
                "127.0.0.1:7002",
                &["region=eu-west", "rack=unnamed-7"],
                &[],
            ))
            .await
            .expect("register B");

        let listed = devnet
            .tenant_with(devnet.env(), &["providers", "--output", "json"])
            .await;
        assert_eq!(code(&listed), Some(0), "{}", stderr(&listed));
        let listed = json(&listed);
        let find = |index: usize| {
            let address = devnet.address_json(index);
            listed["providers"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["address"] == address.as_str()))
                .cloned()
                .unwrap_or_else(|| panic!("{address} not in {listed}"))
        };
        let a_json = find(PROVIDER_A);
        assert_eq!(
            a_json["attribute_names"],
            serde_json::json!(["region=eu-west", "tier=community"])
        );
        assert_eq!(a_json["attributes"][1], key("tier=community").to_string());
        assert_eq!(a_json["gpus"][0]["model_name"], MODEL);
        assert_eq!(a_json["gpus"][0]["model_key"], key(MODEL).to_string());
        let b_json = find(PROVIDER_B);
        assert_eq!(
            b_json["attribute_names"],
            serde_json::json!(["region=eu-west", null])
        );
        let listed = devnet.tenant_with(devnet.env(), &["providers"]).await;
        let listed = text(&listed);
        assert!(
            listed.contains(&format!("0/4 {MODEL}")) && listed.contains("tier=community"),
            "{listed}"
        );
        let unnamed = key("rack=unnamed-7").to_string();
        assert!(
            listed.contains(&unnamed[..6]) && !listed.contains("rack=unnamed-7"),
            "an unnamed key shows as its hash: {listed}"
        );

        let hello = crate::support::example("hello.yaml");
        let report = devnet
            .tenant_with(devnet.env(), &["preflight", &hello, "--output", "json"])
            .await;
        assert_eq!(code(&report), Some(0), "{}", stderr(&report));
        let report = json(&report);
        let candidates = report["groups"][0]["eligible"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let a_address = devnet.address_json(PROVIDER_A);
        let a_candidate = candidates
            .iter()
            .find(|c| c["provider"] == a_address.as_str())
            .unwrap_or_else(|| panic!("A eligible: {report}"));
        assert_eq!(a_candidate["gpu_models"][0]["name"], MODEL);
        assert_eq!(a_candidate["gpu_models"][0]["key"], key(MODEL).to_string());
        assert_eq!(a_candidate["attributes"][1]["name"], "tier=community");
        let report = devnet
            .tenant_with(devnet.env(), &["preflight", &hello])
            .await;
        let report = text(&report);
        assert!(
            report.contains(&format!("[{MODEL}, region=eu-west, tier=community]")),
            "{report}"
        );

        // A GPU order only A's model fits; A bids with it.
        let tenant = devnet.client(TENANT);
        let requirements = OrderRequirements {
            allowed_gpu_models: vec![key(MODEL)],
            ..OrderRequirements::default()
        };
        let posted = tenant
            .create_order(&NewOrder {
                token: devnet.deployment.token,
                spec: OrderSpec {
                    group_name: leasehold_contracts::group_name_key("gpu"),
                    resources: Resources {
                        cpu_milli: 1_000,
                        memory_mib: 1_024,
                        storage_mib: 1_024,
                    },
                    gpu_count: 1,
                    replicas: 1,
                    leased_ips: 0,
                    requirements: requirements.clone(),
                },
                manifest_hash: alloy::primitives::B256::repeat_byte(2),
                max_price_per_hour: U256::from(100_000),
                deposit: U256::from(1_000_000),
                bid_window_secs: 3600,
                delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
            })
            .await
            .expect("create order");
        a.place_bid(
            posted.order_id,
            U256::from(5_000),
            Some(MODEL),
            &requirements,
        )
        .await
        .expect("A bids");
        let order = posted.order_id.to_string();
        let bids = devnet
            .tenant_with(devnet.env_as(TENANT), &["bids", &order, "--output", "json"])
            .await;
        assert_eq!(code(&bids), Some(0), "{}", stderr(&bids));
        let bids = json(&bids);
        assert_eq!(bids["bids"][0]["gpu_model"], MODEL, "{bids}");
        assert_eq!(bids["bids"][0]["gpu_model_key"], key(MODEL).to_string());
        assert_eq!(
            bids["bids"][0]["eligible"], true,
            "a published model is matched by the rule, not left to the chain: {bids}"
        );
        let bids = devnet
            .tenant_with(devnet.env_as(TENANT), &["bids", &order])
            .await;
        let bids = text(&bids);
        assert!(bids.contains(MODEL), "{bids}");
    })
    .await;
}
