//! How an SDL group becomes an on-chain order. Tenants post this encoding and
//! providers rebuild it to match a manifest against its order, so it lives in one
//! place: the group's name, GPU models and attributes as keccak256 of their
//! canonical strings, totals with memory and storage rounded up to MiB.

use alloy::primitives::{B256, keccak256};
use leasehold_manifests::Group;

use crate::types::{OrderRequirements, OrderSpec, Resources};

const MIB: u64 = 1024 * 1024;

/// The on-chain key of a canonical string: an attribute (`region=eu-west`) or a
/// GPU model (`nvidia/a100/80Gi/sxm`).
pub fn chain_key(text: &str) -> B256 {
    keccak256(text.as_bytes())
}

/// The on-chain `groupName` of an SDL group (placement) name: the provider deploys the
/// manifest group whose name hashes to the order's.
pub fn group_name_key(name: &str) -> B256 {
    chain_key(name)
}

/// A group whose totals do not fit the order's fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group `{group}`: {what} out of range")]
pub struct OrderEncodingError {
    pub group: String,
    pub what: &'static str,
}

/// The order spec of one SDL group.
pub fn order_spec_for_group(group: &Group) -> Result<OrderSpec, OrderEncodingError> {
    let out_of_range = |what| OrderEncodingError {
        group: group.name.clone(),
        what,
    };
    let totals = group.totals().map_err(|_| out_of_range("totals"))?;
    let mut models: Vec<B256> = group
        .units
        .iter()
        .flat_map(|unit| unit.resources.gpu.models.iter())
        .map(|model| chain_key(&model.to_string()))
        .collect();
    models.sort();
    models.dedup();
    Ok(OrderSpec {
        group_name: group_name_key(&group.name),
        resources: Resources {
            cpu_milli: totals.cpu_millis,
            memory_mib: totals.memory_bytes.div_ceil(MIB),
            storage_mib: totals.storage_bytes.div_ceil(MIB),
        },
        gpu_count: u32::try_from(totals.gpu_units).map_err(|_| out_of_range("gpu units"))?,
        replicas: u16::try_from(totals.replicas).map_err(|_| out_of_range("replicas"))?,
        requirements: OrderRequirements {
            allowed_gpu_models: models,
            required_attributes: group
                .requirements
                .attributes
                .iter()
                .map(|attribute| chain_key(&format!("{}={}", attribute.key, attribute.value)))
                .collect(),
        },
    })
}
