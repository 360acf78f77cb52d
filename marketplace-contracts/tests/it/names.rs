//! Readable names of attribute and GPU model keys: published with `publishNames`, read back
//! by the resolver (`key_names`) and decoded by the follower's `ChainEvent::decode`.

use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use leasehold_contracts::bindings::ProviderRegistry;
use leasehold_contracts::{ChainEvent, GpuCapacity, MAX_NAME_LENGTH, MAX_NAMES_PER_CALL};

use crate::support::*;

const NAMES: [&str; 4] = [
    "region=eu-west",
    "tier=community",
    "nvidia/a100/80Gi/sxm",
    "nvidia/h100/80Gi/pcie",
];

#[tokio::test]
async fn a_registration_with_names_resolves_every_attribute_and_gpu_model() {
    within(async {
        let devnet = Devnet::start(None).await;
        let provider = devnet.client(PROVIDER_A);
        let anyone = devnet.client(STRANGER);
        let mut profile = profile("https://a.example:8443", resources(4_000, 8_192, 20_480));
        profile.attributes = vec![attribute(NAMES[0]), attribute(NAMES[1])];
        profile.gpus = vec![
            GpuCapacity {
                model_key: attribute(NAMES[2]),
                count: 4,
            },
            GpuCapacity {
                model_key: attribute(NAMES[3]),
                count: 2,
            },
        ];
        let names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
        assert_eq!(provider.publish_names(&names).await.unwrap(), 4);
        provider.register_provider(&profile).await.unwrap();

        let resolved = anyone.key_names().await.unwrap();
        let info = anyone.provider_info(provider.sender()).await.unwrap();
        let attributes: Vec<String> = info.attributes.iter().map(|k| resolved.label(k)).collect();
        assert_eq!(attributes, ["region=eu-west", "tier=community"]);
        let models: Vec<String> = info
            .gpus
            .iter()
            .map(|g| resolved.label(&g.model_key))
            .collect();
        assert_eq!(models, ["nvidia/a100/80Gi/sxm", "nvidia/h100/80Gi/pcie"]);
        let unnamed = attribute("region=us-east");
        assert_eq!(resolved.label(&unnamed), unnamed.to_string());

        // Re-publishing (a provider's next `update`) sends nothing and emits nothing.
        let head = devnet.rpc.get_block_number().await.unwrap();
        let mut again = names.clone();
        again.push("region=us-east".to_owned());
        assert_eq!(
            provider.publish_names(&again).await.unwrap(),
            1,
            "only the new name"
        );
        assert_eq!(provider.publish_names(&again).await.unwrap(), 0);
        let filter = Filter::new()
            .address(devnet.deployment.registry)
            .from_block(0);
        let named: Vec<(u64, B256, String)> = devnet
            .rpc
            .get_logs(&filter)
            .await
            .unwrap()
            .iter()
            .filter_map(|log| ChainEvent::decode(log, &devnet.deployment).ok().flatten())
            .filter_map(|decoded| match decoded.event {
                ChainEvent::KeyNamed { key, name } => Some((decoded.block, key, name)),
                _ => None,
            })
            .collect();
        assert_eq!(named.len(), 5, "one KeyNamed per key: {named:?}");
        for (_, key, name) in &named {
            assert_eq!(*key, attribute(name), "filed under its own hash");
        }
        assert!(
            named.iter().filter(|(block, ..)| *block > head).count() == 1,
            "the second publication emitted only region=us-east"
        );
    })
    .await;
}

#[tokio::test]
async fn name_bounds_match_the_registry_and_are_checked_before_sending() {
    within(async {
        let devnet = Devnet::start(None).await;
        let registry = ProviderRegistry::new(devnet.deployment.registry, devnet.rpc.clone());
        let max_length = registry.MAX_NAME_LENGTH().call().await.unwrap();
        let max_names = registry.MAX_NAMES().call().await.unwrap();
        assert_eq!(max_length.to::<usize>(), MAX_NAME_LENGTH);
        assert_eq!(max_names.to::<usize>(), MAX_NAMES_PER_CALL);

        let provider = devnet.client(PROVIDER_A);
        let names = vec!["region=eu-west".to_owned(), String::new()];
        let error = provider.publish_names(&names).await.unwrap_err();
        assert_eq!(error.to_string(), "invalid names: names[1] is empty");

        // More names than one call takes go out in several calls.
        let many: Vec<String> = (0..MAX_NAMES_PER_CALL + 3)
            .map(|i| format!("attribute-{i}=value"))
            .collect();
        assert_eq!(provider.publish_names(&many).await.unwrap(), many.len());
        let resolved = devnet.client(STRANGER).key_names().await.unwrap();
        assert_eq!(resolved.len(), many.len());
    })
    .await;
}
