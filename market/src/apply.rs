//! How each contract event changes the derived tables: the one forward rule, used both while
//! following and when rebuilding after a reorg.

use alloy::primitives::{Address, B256, U256};
use leasehold_contracts::ChainEvent;
use sqlx::{AnyConnection, Row};

use crate::event_json;
use crate::store::IndexedLog;

const MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{what} {value} does not fit a signed 64-bit column")]
    OutOfRange { what: &'static str, value: String },
    #[error("stored {what} `{value}` is not a decimal amount")]
    BadAmount { what: &'static str, value: String },
    #[error("serialising the log: {0}")]
    Json(#[from] serde_json::Error),
}

pub fn to_db(value: u64) -> Result<i64, ApplyError> {
    i64::try_from(value).map_err(|_| ApplyError::OutOfRange {
        what: "value",
        value: value.to_string(),
    })
}

/// Lowercase 0x-hex, as the API shows addresses.
pub fn address(value: Address) -> String {
    format!("{value:#x}")
}

pub fn hash(value: B256) -> String {
    format!("{value:#x}")
}

/// `None` for the zero key (no GPU model).
pub fn optional_key(value: B256) -> Option<String> {
    (value != B256::ZERO).then(|| hash(value))
}

fn amount(value: &str, what: &'static str) -> Result<U256, ApplyError> {
    value.parse::<U256>().map_err(|_| ApplyError::BadAmount {
        what,
        value: value.to_owned(),
    })
}

fn mib_to_bytes(mib: u64) -> Result<i64, ApplyError> {
    mib.checked_mul(MIB)
        .ok_or_else(|| ApplyError::OutOfRange {
            what: "bytes",
            value: format!("{mib} MiB"),
        })
        .and_then(to_db)
}

/// Stores the log in `events` and applies it; `false` (and nothing changed) when it was
/// already stored, which makes redelivery harmless.
pub async fn record_and_apply(
    connection: &mut AnyConnection,
    log: &IndexedLog,
) -> Result<bool, ApplyError> {
    let inserted = sqlx::query(
        "INSERT INTO events (block, log_index, tx_hash, at, kind, data, raw) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (block, log_index) DO NOTHING",
    )
    .bind(to_db(log.block)?)
    .bind(to_db(log.log_index)?)
    .bind(&log.tx_hash)
    .bind(to_db(log.at)?)
    .bind(log.event.name())
    .bind(event_json::data(&log.event).to_string())
    .bind(serde_json::to_string(&log.raw)?)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    apply(connection, log).await?;
    Ok(true)
}

/// Applies one event to the derived tables.
pub async fn apply(connection: &mut AnyConnection, log: &IndexedLog) -> Result<(), ApplyError> {
    let block = to_db(log.block)?;
    let at = to_db(log.at)?;
    match &log.event {
        ChainEvent::OrderCreated(order) => {
            let resources = order.spec.resources;
            sqlx::query(
                "INSERT INTO orders (id, tenant, manifest_hash, state, max_price_per_hour, escrow, \
                 bid_window_end, cpu_millis, memory_bytes, storage_bytes, gpu_count, replicas, \
                 auto_accept_provider, auto_accept_max_price, created_block, created_at) \
                 VALUES ($1, $2, $3, 'open', $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, $12, $13)",
            )
            .bind(to_db(order.order_id)?)
            .bind(address(order.tenant))
            .bind(hash(order.manifest_hash))
            .bind(order.max_price_per_hour.to_string())
            .bind(order.deposit.to_string())
            .bind(to_db(order.bid_window_end)?)
            .bind(to_db(resources.cpu_milli)?)
            .bind(mib_to_bytes(resources.memory_mib)?)
            .bind(mib_to_bytes(resources.storage_mib)?)
            .bind(i64::from(order.spec.gpu_count))
            .bind(i64::from(order.spec.replicas))
            .bind(block)
            .bind(at)
            .execute(&mut *connection)
            .await?;
        }
        ChainEvent::AutoAcceptSet {
            order_id,
            provider,
            max_price_per_hour,
        } => {
            sqlx::query(
                "UPDATE orders SET auto_accept_provider = $1, auto_accept_max_price = $2 WHERE id = $3",
            )
            .bind(provider.map(address))
            .bind(max_price_per_hour.to_string())
            .bind(to_db(*order_id)?)
            .execute(&mut *connection)
            .await?;
        }
        ChainEvent::OrderCancelled { order_id, .. } => {
            sqlx::query("UPDATE orders SET state = 'cancelled', escrow = '0' WHERE id = $1")
                .bind(to_db(*order_id)?)
                .execute(&mut *connection)
                .await?;
        }
        ChainEvent::BidPlaced {
            order_id,
            bid_id,
            provider,
            price_per_hour,
            gpu_model,
        } => {
            // A bid slot freed by a withdrawal or an eviction is reused: the newest bid wins.
            sqlx::query(
                "INSERT INTO bids (order_id, bid_id, provider, price_per_hour, state, gpu_model, \
                 placed_block, placed_at) VALUES ($1, $2, $3, $4, 'open', $5, $6, $7) \
                 ON CONFLICT (order_id, bid_id) DO UPDATE SET provider = excluded.provider, \
                 price_per_hour = excluded.price_per_hour, state = 'open', \
                 gpu_model = excluded.gpu_model, placed_block = excluded.placed_block, \
                 placed_at = excluded.placed_at",
            )
            .bind(to_db(*order_id)?)
            .bind(to_db(*bid_id)?)
            .bind(address(*provider))
            .bind(price_per_hour.to_string())
            .bind(optional_key(*gpu_model))
            .bind(block)
            .bind(at)
            .execute(&mut *connection)
            .await?;
        }
        ChainEvent::BidWithdrawn {
            order_id, bid_id, ..
        } => set_bid_state(connection, *order_id, *bid_id, "withdrawn").await?,
        ChainEvent::BidEvicted {
            order_id, bid_id, ..
        } => set_bid_state(connection, *order_id, *bid_id, "evicted").await?,
        ChainEvent::BidSkipped {
            order_id, bid_id, ..
        } => set_bid_state(connection, *order_id, *bid_id, "lost").await?,
        ChainEvent::EscrowToppedUp {
            order_id,
            from,
            amount,
            escrow,
        } => {
            sqlx::query("UPDATE orders SET escrow = $1 WHERE id = $2")
                .bind(escrow.to_string())
                .bind(to_db(*order_id)?)
                .execute(&mut *connection)
                .await?;
            sqlx::query(
                "INSERT INTO top_ups (order_id, block, log_index, at, from_address, amount, escrow) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(to_db(*order_id)?)
            .bind(block)
            .bind(to_db(log.log_index)?)
            .bind(at)
            .bind(address(*from))
            .bind(amount.to_string())
            .bind(escrow.to_string())
            .execute(&mut *connection)
            .await?;
        }
        ChainEvent::LeaseCreated {
            lease_id,
            tenant,
            provider,
            bid_id,
            price_per_hour,
            gpu_model,
        } => {
            let id = to_db(*lease_id)?;
            sqlx::query(
                "INSERT INTO leases (id, order_id, bid_id, tenant, provider, price_per_hour, \
                 gpu_model, state, paid_total, confirmed_at, created_block, created_at) \
                 VALUES ($1, $1, $2, $3, $4, $5, $6, 'active', '0', NULL, $7, $8)",
            )
            .bind(id)
            .bind(to_db(*bid_id)?)
            .bind(address(*tenant))
            .bind(address(*provider))
            .bind(price_per_hour.to_string())
            .bind(optional_key(*gpu_model))
            .bind(block)
            .bind(at)
            .execute(&mut *connection)
            .await?;
            sqlx::query("UPDATE orders SET state = 'matched' WHERE id = $1")
                .bind(id)
                .execute(&mut *connection)
                .await?;
            sqlx::query(
                "UPDATE bids SET state = CASE WHEN bid_id = $1 THEN 'won' ELSE 'lost' END \
                 WHERE order_id = $2 AND (bid_id = $1 OR state = 'open')",
            )
            .bind(to_db(*bid_id)?)
            .bind(id)
            .execute(&mut *connection)
            .await?;
            sqlx::query(
                "INSERT INTO price_history (lease_id, block, log_index, at, price_per_hour, gpu_model) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(block)
            .bind(to_db(log.log_index)?)
            .bind(at)
            .bind(price_per_hour.to_string())
            .bind(optional_key(*gpu_model))
            .execute(&mut *connection)
            .await?;
            allocate(connection, log, *lease_id, *provider, *gpu_model, 1).await?;
        }
        ChainEvent::ManifestUpdated {
            lease_id,
            manifest_hash,
            ..
        } => {
            sqlx::query("UPDATE orders SET manifest_hash = $1 WHERE id = $2")
                .bind(hash(*manifest_hash))
                .bind(to_db(*lease_id)?)
                .execute(&mut *connection)
                .await?;
        }
        ChainEvent::LeaseConfirmed { lease_id, .. } => {
            sqlx::query("UPDATE leases SET confirmed_at = $1 WHERE id = $2")
                .bind(at)
                .bind(to_db(*lease_id)?)
                .execute(&mut *connection)
                .await?;
        }
        ChainEvent::PaymentWithdrawn {
            lease_id,
            amount: paid,
            total_paid,
            ..
        } => {
            let id = to_db(*lease_id)?;
            sqlx::query(
                "INSERT INTO payments (lease_id, block, log_index, at, amount, total_paid) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id)
            .bind(block)
            .bind(to_db(log.log_index)?)
            .bind(at)
            .bind(paid.to_string())
            .bind(total_paid.to_string())
            .execute(&mut *connection)
            .await?;
            sqlx::query("UPDATE leases SET paid_total = $1 WHERE id = $2")
                .bind(total_paid.to_string())
                .bind(id)
                .execute(&mut *connection)
                .await?;
            // The contract pays out of the shared order escrow.
            let escrow = order_escrow(connection, id).await?;
            sqlx::query("UPDATE orders SET escrow = $1 WHERE id = $2")
                .bind(escrow.saturating_sub(*paid).to_string())
                .bind(id)
                .execute(&mut *connection)
                .await?;
        }
        ChainEvent::LeaseClosed {
            lease_id,
            closed_by,
            reason,
            paid_to_provider,
            refunded_to_tenant,
        } => {
            let id = to_db(*lease_id)?;
            sqlx::query(
                "INSERT INTO closes (lease_id, block, log_index, at, closed_by, reason, refund, paid) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(id)
            .bind(block)
            .bind(to_db(log.log_index)?)
            .bind(at)
            .bind(address(*closed_by))
            .bind(event_json::close_reason(*reason))
            .bind(refunded_to_tenant.to_string())
            .bind(paid_to_provider.to_string())
            .execute(&mut *connection)
            .await?;
            let row =
                sqlx::query("SELECT paid_total, provider, gpu_model FROM leases WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *connection)
                    .await?;
            if let Some(row) = row {
                let paid_total: String = row.try_get("paid_total")?;
                let provider: String = row.try_get("provider")?;
                let gpu_model: Option<String> = row.try_get("gpu_model")?;
                let total = amount(&paid_total, "paid_total")?.saturating_add(*paid_to_provider);
                sqlx::query("UPDATE leases SET state = 'closed', paid_total = $1 WHERE id = $2")
                    .bind(total.to_string())
                    .bind(id)
                    .execute(&mut *connection)
                    .await?;
                let provider: Address = provider.parse().unwrap_or_default();
                let gpu_model: B256 = gpu_model
                    .and_then(|key| key.parse().ok())
                    .unwrap_or_default();
                allocate(connection, log, *lease_id, provider, gpu_model, -1).await?;
            }
            sqlx::query("UPDATE orders SET escrow = '0' WHERE id = $1")
                .bind(id)
                .execute(&mut *connection)
                .await?;
        }
        ChainEvent::ProviderRegistered {
            provider,
            profile,
            stake,
        } => {
            let capacity = profile.capacity;
            sqlx::query(
                "INSERT INTO providers (address, endpoint, status, gateway_cert_sha256, cpu_millis, \
                 memory_bytes, storage_bytes, allocated_cpu_millis, allocated_memory_bytes, \
                 allocated_storage_bytes, stake, deliveries_confirmed, deliveries_failed, \
                 active_leases, registered_block, updated_block) \
                 VALUES ($1, $2, 'active', $3, $4, $5, $6, 0, 0, 0, $7, 0, 0, 0, $8, $8) \
                 ON CONFLICT (address) DO UPDATE SET endpoint = excluded.endpoint, status = 'active', \
                 gateway_cert_sha256 = excluded.gateway_cert_sha256, cpu_millis = excluded.cpu_millis, \
                 memory_bytes = excluded.memory_bytes, storage_bytes = excluded.storage_bytes, \
                 stake = excluded.stake, registered_block = excluded.registered_block, \
                 updated_block = excluded.updated_block",
            )
            .bind(address(*provider))
            .bind(&profile.endpoint)
            .bind(hash(profile.gateway_cert_sha256))
            .bind(to_db(capacity.cpu_milli)?)
            .bind(mib_to_bytes(capacity.memory_mib)?)
            .bind(mib_to_bytes(capacity.storage_mib)?)
            .bind(stake.to_string())
            .bind(block)
            .execute(&mut *connection)
            .await?;
            replace_profile_lists(connection, *provider, profile).await?;
            record_capacity(connection, log, *provider).await?;
        }
        ChainEvent::ProviderUpdated { provider, profile } => {
            let capacity = profile.capacity;
            sqlx::query(
                "UPDATE providers SET endpoint = $1, gateway_cert_sha256 = $2, cpu_millis = $3, \
                 memory_bytes = $4, storage_bytes = $5, updated_block = $6 WHERE address = $7",
            )
            .bind(&profile.endpoint)
            .bind(hash(profile.gateway_cert_sha256))
            .bind(to_db(capacity.cpu_milli)?)
            .bind(mib_to_bytes(capacity.memory_mib)?)
            .bind(mib_to_bytes(capacity.storage_mib)?)
            .bind(block)
            .bind(address(*provider))
            .execute(&mut *connection)
            .await?;
            replace_profile_lists(connection, *provider, profile).await?;
            record_capacity(connection, log, *provider).await?;
        }
        ChainEvent::ProviderDeregistered { provider, .. } => {
            sqlx::query(
                "UPDATE providers SET status = 'unbonding', updated_block = $1 WHERE address = $2",
            )
            .bind(block)
            .bind(address(*provider))
            .execute(&mut *connection)
            .await?;
        }
        ChainEvent::StakeWithdrawn { provider, .. } => {
            // The registry pays out the whole stake and forgets the record.
            sqlx::query(
                "UPDATE providers SET status = 'deregistered', stake = '0', updated_block = $1 \
                 WHERE address = $2",
            )
            .bind(block)
            .bind(address(*provider))
            .execute(&mut *connection)
            .await?;
        }
        ChainEvent::StakeAdded {
            provider, stake, ..
        } => {
            sqlx::query("UPDATE providers SET stake = $1, updated_block = $2 WHERE address = $3")
                .bind(stake.to_string())
                .bind(block)
                .bind(address(*provider))
                .execute(&mut *connection)
                .await?;
        }
        ChainEvent::StakeSlashed {
            provider,
            amount: slashed,
            deliveries_failed,
            ..
        } => {
            reduce_stake(connection, *provider, *slashed, block).await?;
            sqlx::query("UPDATE providers SET deliveries_failed = $1 WHERE address = $2")
                .bind(i64::from(*deliveries_failed))
                .bind(address(*provider))
                .execute(&mut *connection)
                .await?;
        }
        ChainEvent::BondForfeited {
            provider,
            amount: forfeited,
            ..
        } => reduce_stake(connection, *provider, *forfeited, block).await?,
        ChainEvent::DeliveryRecorded {
            provider,
            deliveries_confirmed,
        } => {
            sqlx::query(
                "UPDATE providers SET deliveries_confirmed = $1, updated_block = $2 WHERE address = $3",
            )
            .bind(i64::from(*deliveries_confirmed))
            .bind(block)
            .bind(address(*provider))
            .execute(&mut *connection)
            .await?;
        }
        ChainEvent::KeyNamed { key, name } => {
            // The registry hashes the name itself and names each key once, so the row is
            // final; the upsert only keeps a replay (rebuild after a reorg) idempotent.
            sqlx::query(
                "INSERT INTO names (name_key, name) VALUES ($1, $2) \
                 ON CONFLICT (name_key) DO UPDATE SET name = excluded.name",
            )
            .bind(hash(*key))
            .bind(name.as_str())
            .execute(&mut *connection)
            .await?;
        }
        // Recorded in `events` only: no derived table follows them (yet).
        ChainEvent::DeliveryFailed { .. }
        | ChainEvent::PaymentCredited { .. }
        | ChainEvent::Claimed { .. }
        | ChainEvent::MarketplaceBound { .. }
        | ChainEvent::BondReleased { .. }
        | ChainEvent::AttributeAttested { .. }
        | ChainEvent::AttestationRevoked { .. } => {}
    }
    Ok(())
}

async fn set_bid_state(
    connection: &mut AnyConnection,
    order_id: u64,
    bid_id: u64,
    state: &str,
) -> Result<(), ApplyError> {
    sqlx::query("UPDATE bids SET state = $1 WHERE order_id = $2 AND bid_id = $3")
        .bind(state)
        .bind(to_db(order_id)?)
        .bind(to_db(bid_id)?)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

async fn order_escrow(connection: &mut AnyConnection, order_id: i64) -> Result<U256, ApplyError> {
    let row = sqlx::query("SELECT escrow FROM orders WHERE id = $1")
        .bind(order_id)
        .fetch_optional(&mut *connection)
        .await?;
    match row {
        Some(row) => amount(&row.try_get::<String, _>("escrow")?, "escrow"),
        None => Ok(U256::ZERO),
    }
}

async fn reduce_stake(
    connection: &mut AnyConnection,
    provider: Address,
    by: U256,
    block: i64,
) -> Result<(), ApplyError> {
    let row = sqlx::query("SELECT stake FROM providers WHERE address = $1")
        .bind(address(provider))
        .fetch_optional(&mut *connection)
        .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let stake = amount(&row.try_get::<String, _>("stake")?, "stake")?;
    sqlx::query("UPDATE providers SET stake = $1, updated_block = $2 WHERE address = $3")
        .bind(stake.saturating_sub(by).to_string())
        .bind(block)
        .bind(address(provider))
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Replaces a provider's attribute keys and GPU models, keeping the allocation of models it
/// still offers.
async fn replace_profile_lists(
    connection: &mut AnyConnection,
    provider: Address,
    profile: &leasehold_contracts::ProviderProfile,
) -> Result<(), ApplyError> {
    let who = address(provider);
    sqlx::query("DELETE FROM provider_attributes WHERE provider = $1")
        .bind(&who)
        .execute(&mut *connection)
        .await?;
    for (position, key) in profile.attributes.iter().enumerate() {
        sqlx::query(
            "INSERT INTO provider_attributes (provider, position, attribute_key) VALUES ($1, $2, $3)",
        )
        .bind(&who)
        .bind(to_db(position as u64)?)
        .bind(hash(*key))
        .execute(&mut *connection)
        .await?;
    }
    let offered: Vec<String> = profile.gpus.iter().map(|gpu| hash(gpu.model_key)).collect();
    let existing = sqlx::query("SELECT model_key FROM provider_gpus WHERE provider = $1")
        .bind(&who)
        .fetch_all(&mut *connection)
        .await?;
    for row in existing {
        let key: String = row.try_get("model_key")?;
        if !offered.contains(&key) {
            sqlx::query("DELETE FROM provider_gpus WHERE provider = $1 AND model_key = $2")
                .bind(&who)
                .bind(&key)
                .execute(&mut *connection)
                .await?;
        }
    }
    for gpu in &profile.gpus {
        sqlx::query(
            "INSERT INTO provider_gpus (provider, model_key, total, allocated) VALUES ($1, $2, $3, 0) \
             ON CONFLICT (provider, model_key) DO UPDATE SET total = excluded.total",
        )
        .bind(&who)
        .bind(hash(gpu.model_key))
        .bind(i64::from(gpu.count))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Adds (`sign` 1) or releases (`sign` -1) the resources of the lease's order on its provider.
async fn allocate(
    connection: &mut AnyConnection,
    log: &IndexedLog,
    lease_id: u64,
    provider: Address,
    gpu_model: B256,
    sign: i64,
) -> Result<(), ApplyError> {
    let row = sqlx::query(
        "SELECT cpu_millis, memory_bytes, storage_bytes, gpu_count, replicas FROM orders WHERE id = $1",
    )
    .bind(to_db(lease_id)?)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let replicas: i64 = row.try_get("replicas")?;
    let total = |column: &'static str| -> Result<i64, ApplyError> {
        let per_replica: i64 = row.try_get(column)?;
        per_replica
            .checked_mul(replicas)
            .and_then(|value| value.checked_mul(sign))
            .ok_or_else(|| ApplyError::OutOfRange {
                what: column,
                value: format!("{per_replica} x {replicas}"),
            })
    };
    let (cpu, memory, storage, gpus) = (
        total("cpu_millis")?,
        total("memory_bytes")?,
        total("storage_bytes")?,
        total("gpu_count")?,
    );
    let who = address(provider);
    sqlx::query(
        "UPDATE providers SET allocated_cpu_millis = allocated_cpu_millis + $1, \
         allocated_memory_bytes = allocated_memory_bytes + $2, \
         allocated_storage_bytes = allocated_storage_bytes + $3, \
         active_leases = active_leases + $4, updated_block = $5 WHERE address = $6",
    )
    .bind(cpu)
    .bind(memory)
    .bind(storage)
    .bind(sign)
    .bind(to_db(log.block)?)
    .bind(&who)
    .execute(&mut *connection)
    .await?;
    if gpu_model != B256::ZERO && gpus != 0 {
        sqlx::query(
            "UPDATE provider_gpus SET allocated = allocated + $1 WHERE provider = $2 AND model_key = $3",
        )
        .bind(gpus)
        .bind(&who)
        .bind(hash(gpu_model))
        .execute(&mut *connection)
        .await?;
    }
    record_capacity(connection, log, provider).await
}

/// Appends the provider's capacity and allocation after this event to `capacity_history`.
async fn record_capacity(
    connection: &mut AnyConnection,
    log: &IndexedLog,
    provider: Address,
) -> Result<(), ApplyError> {
    sqlx::query(
        "INSERT INTO capacity_history (provider, block, log_index, at, cpu_millis, memory_bytes, \
         storage_bytes, allocated_cpu_millis, allocated_memory_bytes, allocated_storage_bytes) \
         SELECT address, $1, $2, $3, cpu_millis, memory_bytes, storage_bytes, allocated_cpu_millis, \
         allocated_memory_bytes, allocated_storage_bytes FROM providers WHERE address = $4",
    )
    .bind(to_db(log.block)?)
    .bind(to_db(log.log_index)?)
    .bind(to_db(log.at)?)
    .bind(address(provider))
    .execute(&mut *connection)
    .await?;
    Ok(())
}
