//! Contract events as the API shows them: snake_case fields, amounts and ids as decimal
//! strings, addresses and keys as lowercase 0x-hex.

use alloy::primitives::U256;
use leasehold_contracts::{ChainEvent, CloseReason};
use serde_json::{Value, json};

use crate::apply::{address, hash, optional_key};

fn dec(value: U256) -> String {
    value.to_string()
}

fn id(value: u64) -> String {
    value.to_string()
}

/// The contract's close-reason code as its snake_case name (`unknown_<code>` for a code this
/// build does not know).
pub fn close_reason(code: u8) -> String {
    const REASONS: [CloseReason; 6] = [
        CloseReason::Unspecified,
        CloseReason::TenantRequest,
        CloseReason::ProviderRequest,
        CloseReason::ManifestNotDelivered,
        CloseReason::Insolvent,
        CloseReason::WorkloadFailed,
    ];
    REASONS
        .iter()
        .find(|reason| reason.code() == code)
        .and_then(|reason| serde_json::to_value(reason).ok())
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("unknown_{code}"))
}

/// The event's typed fields.
pub fn data(event: &ChainEvent) -> Value {
    match event {
        ChainEvent::OrderCreated(order) => json!({
            "order_id": id(order.order_id),
            "tenant": address(order.tenant),
            "token": address(order.token),
            "manifest_hash": hash(order.manifest_hash),
            "max_price_per_hour": dec(order.max_price_per_hour),
            "deposit": dec(order.deposit),
            "bid_window_end": order.bid_window_end,
            "group_name": hash(order.spec.group_name),
            "resources": {
                "cpu_milli": order.spec.resources.cpu_milli,
                "memory_mib": order.spec.resources.memory_mib,
                "storage_mib": order.spec.resources.storage_mib,
            },
            "gpu_count": order.spec.gpu_count,
            "replicas": order.spec.replicas,
            "leased_ips": order.spec.leased_ips,
        }),
        ChainEvent::OrderCancelled {
            order_id,
            tenant,
            refund,
        } => json!({"order_id": id(*order_id), "tenant": address(*tenant), "refund": dec(*refund)}),
        ChainEvent::AutoAcceptSet {
            order_id,
            provider,
            max_price_per_hour,
        } => json!({
            "order_id": id(*order_id),
            "provider": provider.map(address),
            "max_price_per_hour": dec(*max_price_per_hour),
        }),
        ChainEvent::BidPlaced {
            order_id,
            bid_id,
            provider,
            price_per_hour,
            gpu_model,
        } => json!({
            "order_id": id(*order_id),
            "bid_id": id(*bid_id),
            "provider": address(*provider),
            "price_per_hour": dec(*price_per_hour),
            "gpu_model": optional_key(*gpu_model),
        }),
        ChainEvent::BidSkipped {
            order_id,
            bid_id,
            provider,
        }
        | ChainEvent::BidWithdrawn {
            order_id,
            bid_id,
            provider,
        } => {
            json!({"order_id": id(*order_id), "bid_id": id(*bid_id), "provider": address(*provider)})
        }
        ChainEvent::BidEvicted {
            order_id,
            bid_id,
            provider,
            reason,
        } => json!({
            "order_id": id(*order_id),
            "bid_id": id(*bid_id),
            "provider": address(*provider),
            "reason": reason,
        }),
        ChainEvent::EscrowToppedUp {
            order_id,
            from,
            amount,
            escrow,
        } => json!({
            "order_id": id(*order_id),
            "from": address(*from),
            "amount": dec(*amount),
            "escrow": dec(*escrow),
        }),
        ChainEvent::LeaseCreated {
            lease_id,
            tenant,
            provider,
            bid_id,
            price_per_hour,
            gpu_model,
        } => json!({
            "lease_id": id(*lease_id),
            "tenant": address(*tenant),
            "provider": address(*provider),
            "bid_id": id(*bid_id),
            "price_per_hour": dec(*price_per_hour),
            "gpu_model": optional_key(*gpu_model),
        }),
        ChainEvent::ManifestUpdated {
            lease_id,
            revision,
            manifest_hash,
        } => json!({
            "lease_id": id(*lease_id),
            "revision": revision,
            "manifest_hash": hash(*manifest_hash),
        }),
        ChainEvent::LeaseConfirmed { lease_id, provider } => {
            json!({"lease_id": id(*lease_id), "provider": address(*provider)})
        }
        ChainEvent::DeliveryFailed {
            lease_id,
            provider,
            slashed,
        } => json!({
            "lease_id": id(*lease_id),
            "provider": address(*provider),
            "slashed": dec(*slashed),
        }),
        ChainEvent::LeaseClosed {
            lease_id,
            closed_by,
            reason,
            paid_to_provider,
            refunded_to_tenant,
        } => json!({
            "lease_id": id(*lease_id),
            "closed_by": address(*closed_by),
            "reason": close_reason(*reason),
            "paid_to_provider": dec(*paid_to_provider),
            "refunded_to_tenant": dec(*refunded_to_tenant),
        }),
        ChainEvent::PaymentWithdrawn {
            lease_id,
            provider,
            amount,
            total_paid,
        } => json!({
            "lease_id": id(*lease_id),
            "provider": address(*provider),
            "amount": dec(*amount),
            "total_paid": dec(*total_paid),
        }),
        ChainEvent::PaymentCredited {
            token,
            account,
            amount,
        } => {
            json!({"token": address(*token), "account": address(*account), "amount": dec(*amount)})
        }
        ChainEvent::Claimed {
            token,
            account,
            to,
            amount,
        } => json!({
            "token": address(*token),
            "account": address(*account),
            "to": address(*to),
            "amount": dec(*amount),
        }),
        ChainEvent::DeliveryRecorded {
            provider,
            deliveries_confirmed,
        } => json!({"provider": address(*provider), "deliveries_confirmed": deliveries_confirmed}),
        ChainEvent::StakeSlashed {
            provider,
            tenant,
            amount,
            deliveries_failed,
        } => json!({
            "provider": address(*provider),
            "tenant": address(*tenant),
            "amount": dec(*amount),
            "deliveries_failed": deliveries_failed,
        }),
        ChainEvent::ProviderRegistered {
            provider,
            profile,
            stake,
        } => {
            let mut value = profile_json(profile);
            value["provider"] = json!(address(*provider));
            value["stake"] = json!(dec(*stake));
            value
        }
        ChainEvent::ProviderUpdated { provider, profile } => {
            let mut value = profile_json(profile);
            value["provider"] = json!(address(*provider));
            value
        }
        ChainEvent::ProviderDeregistered {
            provider,
            unbonding_ends,
        } => json!({"provider": address(*provider), "unbonding_ends": unbonding_ends}),
        ChainEvent::StakeWithdrawn { provider, amount } => {
            json!({"provider": address(*provider), "amount": dec(*amount)})
        }
        ChainEvent::MarketplaceBound { marketplace } => {
            json!({"marketplace": address(*marketplace)})
        }
        ChainEvent::StakeAdded {
            provider,
            amount,
            stake,
        } => json!({"provider": address(*provider), "amount": dec(*amount), "stake": dec(*stake)}),
        ChainEvent::KeyNamed { key, name } => json!({"key": hash(*key), "name": name}),
        ChainEvent::BondReleased {
            order_id,
            bid_id,
            provider,
            amount,
        } => json!({
            "order_id": id(*order_id),
            "bid_id": id(*bid_id),
            "provider": address(*provider),
            "amount": dec(*amount),
        }),
        ChainEvent::BondForfeited {
            order_id,
            bid_id,
            provider,
            tenant,
            amount,
        } => json!({
            "order_id": id(*order_id),
            "bid_id": id(*bid_id),
            "provider": address(*provider),
            "tenant": address(*tenant),
            "amount": dec(*amount),
        }),
        ChainEvent::AttributeAttested {
            auditor,
            provider,
            attribute,
        }
        | ChainEvent::AttestationRevoked {
            auditor,
            provider,
            attribute,
        } => json!({
            "auditor": address(*auditor),
            "provider": address(*provider),
            "attribute": hash(*attribute),
        }),
    }
}

fn profile_json(profile: &leasehold_contracts::ProviderProfile) -> Value {
    json!({
        "endpoint": profile.endpoint,
        "gateway_cert_sha256": hash(profile.gateway_cert_sha256),
        "attributes": profile.attributes.iter().map(|key| hash(*key)).collect::<Vec<_>>(),
        "capacity": {
            "cpu_milli": profile.capacity.cpu_milli,
            "memory_mib": profile.capacity.memory_mib,
            "storage_mib": profile.capacity.storage_mib,
        },
        "gpus": profile.gpus.iter().map(|gpu| json!({
            "model_key": hash(gpu.model_key),
            "count": gpu.count,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_reasons_have_their_contract_names() {
        assert_eq!(close_reason(1), "tenant_request");
        assert_eq!(close_reason(4), "insolvent");
        assert_eq!(close_reason(200), "unknown_200");
    }
}
