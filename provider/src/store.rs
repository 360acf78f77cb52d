//! The daemon's persistent state: leases, bid reservations, chain follower
//! cursors and the gateway's replay cache.
//!
//! One store type serves SQLite (the default, a file in the data dir) and
//! PostgreSQL (`postgres://...`) through sqlx's `Any` driver, so every query is
//! written once in SQL both accept: `$n` placeholders, BIGINT and TEXT columns,
//! `ON CONFLICT`. Times are unix seconds. Lease transitions go through
//! [`crate::lease::transition`] and are guarded by a version counter
//! (optimistic concurrency): a write based on a stale read fails with
//! [`StoreError::Conflict`] instead of overwriting.

use std::time::{SystemTime, UNIX_EPOCH};

use std::path::{Path, PathBuf};

use leasehold_contracts::CursorState;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::lease::{
    CloseReason, InvalidTransition, LeaseEvent, LeaseState, LeaseStateKind, ManifestHash,
    transition,
};

mod sent;
pub use sent::StoreJournal;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How often [`Store::apply`] re-reads and retries after losing a race.
const APPLY_ATTEMPTS: usize = 5;
/// How often [`Store::record_history`] retries a sequence number another writer took.
const HISTORY_ATTEMPTS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The URL with any password replaced by `***`.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("creating the database directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("lease {0} is not in the store")]
    LeaseNotFound(u64),
    #[error("lease {lease_id} changed concurrently: expected version {expected}, found {found}")]
    Conflict {
        lease_id: u64,
        expected: i64,
        found: i64,
    },
    #[error("lease {lease_id}: {source}")]
    Transition {
        lease_id: u64,
        #[source]
        source: InvalidTransition,
    },
    #[error("lease {lease_id} is already stored with {field} `{stored}`, not `{given}`")]
    LeaseMismatch {
        lease_id: u64,
        field: &'static str,
        stored: String,
        given: String,
    },
    #[error("corrupt row ({row}): {reason}")]
    Corrupt { row: String, reason: String },
    #[error("{what} {value} does not fit a signed 64-bit column")]
    OutOfRange { what: &'static str, value: u64 },
    #[error("reservation for order {order_id}: resources are not JSON: {source}")]
    ReservationJson {
        order_id: u64,
        #[source]
        source: serde_json::Error,
    },
}

/// A lease the chain awarded to this provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLease {
    pub lease_id: u64,
    pub order_id: u64,
    /// The tenant's address.
    pub tenant: String,
    /// Unix seconds by which the manifest must arrive.
    pub manifest_deadline: u64,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub lease_id: u64,
    pub order_id: u64,
    pub tenant: String,
    pub state: LeaseState,
    /// The received manifest's hash; kept after the lease starts closing.
    pub manifest_hash: Option<ManifestHash>,
    /// The received manifest (canonical JSON).
    pub manifest_json: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Bumped by every change; pass it back to [`Store::apply_at_version`].
    pub version: i64,
}

/// One step of a lease's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Unix seconds.
    pub at: u64,
    /// A short machine-readable name: `won`, `manifest_accepted`, `deploy_failed`, ...
    pub kind: String,
    pub message: String,
}

/// Resources held for an order while a bid is open.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    pub order_id: u64,
    pub bid_id: Option<u64>,
    pub resources: serde_json::Value,
    /// Unix seconds after which the reservation may be released.
    pub expires_at: u64,
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

const LEASE_COLUMNS: &str = "lease_id, order_id, tenant, state, manifest_hash, manifest_json, \
                             deadline, reason, created_at, updated_at, version";

impl Store {
    /// Connects to `sqlite://...` or `postgres://...` and applies pending
    /// migrations. A SQLite file's directory is created when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        create_sqlite_dir(url)?;
        let connect_error = |source| StoreError::Connect {
            url: redact_password(url),
            source,
        };
        // One direct connection first: the pool retries a refused connection
        // until its timeout and then reports only "timed out", hiding the cause.
        let mut connection = AnyConnection::connect(url).await.map_err(connect_error)?;
        MIGRATOR.run(&mut connection).await?;
        connection.close().await?;
        // SQLite serialises writers anyway; a few connections serve concurrent readers.
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(connect_error)?;
        Ok(Self { pool })
    }

    /// Applies pending migrations; a no-op when the schema is current.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records a won lease in state `Won`. Idempotent: a lease already stored
    /// is returned unchanged, with `false`. A redelivery that disagrees with the
    /// stored order or tenant is an error.
    pub async fn insert_won(&self, lease: &NewLease) -> Result<(LeaseRecord, bool), StoreError> {
        self.insert_lease(
            lease,
            &LeaseState::Won {
                manifest_deadline: lease.manifest_deadline,
            },
        )
        .await
    }

    /// Forgets a lease whose creation a chain reorg undid: its row and manifest revisions
    /// go (its history stays), so that a `LeaseCreated` of the canonical chain for the same
    /// id starts it afresh. `false` when it was not known.
    pub async fn forget_lease(&self, lease_id: u64) -> Result<bool, StoreError> {
        let id = to_db(lease_id, "lease id")?;
        let mut transaction = self.pool.begin().await?;
        sqlx::query("DELETE FROM manifest_revisions WHERE lease_id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?;
        let removed = sqlx::query("DELETE FROM leases WHERE lease_id = $1")
            .bind(id)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        transaction.commit().await?;
        Ok(removed > 0)
    }

    /// Records a lease found running in the runtime but missing from the store (the store
    /// was lost): `Running` with the order's manifest hash and no manifest text, which the
    /// tenant may deliver again later. Idempotent like [`Store::insert_won`].
    pub async fn insert_adopted(
        &self,
        lease: &NewLease,
        manifest_hash: ManifestHash,
    ) -> Result<(LeaseRecord, bool), StoreError> {
        self.insert_lease(lease, &LeaseState::Running { manifest_hash })
            .await
    }

    async fn insert_lease(
        &self,
        lease: &NewLease,
        state: &LeaseState,
    ) -> Result<(LeaseRecord, bool), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO leases (lease_id, order_id, tenant, state, manifest_hash, deadline, created_at, updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0) ON CONFLICT (lease_id) DO NOTHING",
        )
        .bind(to_db(lease.lease_id, "lease id")?)
        .bind(to_db(lease.order_id, "order id")?)
        .bind(&lease.tenant)
        .bind(state.kind().as_str())
        .bind(state.manifest_hash().map(|hash| hash.to_string()))
        .bind(
            state
                .manifest_deadline()
                .map(|deadline| to_db(deadline, "manifest deadline"))
                .transpose()?,
        )
        .bind(unix_now())
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let record = self.lease(lease.lease_id).await?;
        let mismatch = |field, stored: String, given: String| StoreError::LeaseMismatch {
            lease_id: lease.lease_id,
            field,
            stored,
            given,
        };
        if record.order_id != lease.order_id {
            return Err(mismatch(
                "order id",
                record.order_id.to_string(),
                lease.order_id.to_string(),
            ));
        }
        if !record.tenant.eq_ignore_ascii_case(&lease.tenant) {
            return Err(mismatch("tenant", record.tenant, lease.tenant.clone()));
        }
        Ok((record, inserted))
    }

    /// Stores the manifest text of a lease that has its hash but lost the text (adopted).
    /// `false` when the lease already has a manifest or another hash.
    pub async fn attach_manifest(
        &self,
        lease_id: u64,
        manifest_hash: ManifestHash,
        manifest_json: &str,
    ) -> Result<bool, StoreError> {
        let updated = sqlx::query(
            "UPDATE leases SET manifest_json = $1, updated_at = $2, version = version + 1 \
             WHERE lease_id = $3 AND manifest_hash = $4 AND manifest_json IS NULL",
        )
        .bind(manifest_json)
        .bind(unix_now())
        .bind(to_db(lease_id, "lease id")?)
        .bind(manifest_hash.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(updated == 1)
    }

    /// Counts one more failed deployment in a row; returns the count.
    pub async fn count_deploy_failure(&self, lease_id: u64) -> Result<u64, StoreError> {
        let row = sqlx::query(
            "UPDATE leases SET deploy_failures = deploy_failures + 1 WHERE lease_id = $1 \
             RETURNING deploy_failures",
        )
        .bind(to_db(lease_id, "lease id")?)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::LeaseNotFound(lease_id))?;
        let count: i64 = row.try_get("deploy_failures")?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    /// The deployment ran: the failure count starts over.
    pub async fn reset_deploy_failures(&self, lease_id: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE leases SET deploy_failures = 0 WHERE lease_id = $1 AND deploy_failures <> 0",
        )
        .bind(to_db(lease_id, "lease id")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Appends to a lease's history. Concurrent appends to one lease retry on the
    /// sequence number they raced for.
    pub async fn record_history(
        &self,
        lease_id: u64,
        kind: &str,
        message: &str,
    ) -> Result<(), StoreError> {
        let id = to_db(lease_id, "lease id")?;
        let mut attempt = 1;
        loop {
            let result = sqlx::query(
                "INSERT INTO lease_history (lease_id, seq, at, kind, message) \
                 SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4 FROM lease_history WHERE lease_id = $1",
            )
            .bind(id)
            .bind(unix_now())
            .bind(kind)
            .bind(message)
            .execute(&self.pool)
            .await;
            match result {
                Err(sqlx::Error::Database(error))
                    if error.is_unique_violation() && attempt < HISTORY_ATTEMPTS =>
                {
                    attempt += 1;
                }
                other => return other.map(|_| ()).map_err(StoreError::from),
            }
        }
    }

    /// A lease's history, oldest first.
    pub async fn history(&self, lease_id: u64) -> Result<Vec<HistoryEntry>, StoreError> {
        let Ok(id) = i64::try_from(lease_id) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT at, kind, message FROM lease_history WHERE lease_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let at: i64 = row.try_get("at")?;
                Ok(HistoryEntry {
                    at: u64::try_from(at).unwrap_or(0),
                    kind: row.try_get("kind")?,
                    message: row.try_get("message")?,
                })
            })
            .collect()
    }

    /// One lease, or [`StoreError::LeaseNotFound`].
    pub async fn lease(&self, lease_id: u64) -> Result<LeaseRecord, StoreError> {
        self.find_lease(lease_id)
            .await?
            .ok_or(StoreError::LeaseNotFound(lease_id))
    }

    /// The lease, or `None` when it is not stored (ids beyond the column's range never are).
    pub async fn find_lease(&self, lease_id: u64) -> Result<Option<LeaseRecord>, StoreError> {
        let Ok(id) = i64::try_from(lease_id) else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE lease_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_from_row).transpose()
    }

    /// Leases in one state, oldest first.
    pub async fn leases_in_state(
        &self,
        kind: LeaseStateKind,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE state = $1 ORDER BY lease_id"
        ))
        .bind(kind.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Leases still waiting for their manifest whose deadline is at or before
    /// `now`: the sweep feeds each `ManifestDeadlinePassed`.
    pub async fn leases_past_manifest_deadline(
        &self,
        now: u64,
    ) -> Result<Vec<LeaseRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {LEASE_COLUMNS} FROM leases WHERE state IN ($1, $2) AND deadline <= $3 \
             ORDER BY deadline, lease_id"
        ))
        .bind(LeaseStateKind::Won.as_str())
        .bind(LeaseStateKind::AwaitingManifest.as_str())
        .bind(to_db(now, "time")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(lease_from_row).collect()
    }

    /// Applies an event to the lease as it is now; on a lost race it re-reads
    /// and re-applies (the state machine decides again on the fresh state).
    pub async fn apply(
        &self,
        lease_id: u64,
        event: &LeaseEvent,
    ) -> Result<LeaseRecord, StoreError> {
        self.apply_retrying(lease_id, event, None).await
    }

    async fn apply_retrying(
        &self,
        lease_id: u64,
        event: &LeaseEvent,
        manifest_json: Option<&str>,
    ) -> Result<LeaseRecord, StoreError> {
        let mut attempt = 1;
        loop {
            let current = self.lease(lease_id).await?;
            match self.write_transition(current, event, manifest_json).await {
                Err(StoreError::Conflict { .. }) if attempt < APPLY_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }

    /// Applies an event only if the lease is still at `expected_version`
    /// (the version of the record the caller decided on).
    pub async fn apply_at_version(
        &self,
        lease_id: u64,
        expected_version: i64,
        event: &LeaseEvent,
    ) -> Result<LeaseRecord, StoreError> {
        let current = self.lease(lease_id).await?;
        if current.version != expected_version {
            return Err(StoreError::Conflict {
                lease_id,
                expected: expected_version,
                found: current.version,
            });
        }
        self.write_transition(current, event, None).await
    }

    /// Stores the tenant's manifest together with the `ManifestReceived` transition.
    /// A redelivery of the same manifest succeeds without a change.
    pub async fn receive_manifest(
        &self,
        lease_id: u64,
        manifest_hash: ManifestHash,
        manifest_json: &str,
    ) -> Result<LeaseRecord, StoreError> {
        let event = LeaseEvent::ManifestReceived { manifest_hash };
        self.apply_retrying(lease_id, &event, Some(manifest_json))
            .await
    }

    /// Computes the next state and writes it if it differs, guarded by the
    /// version of `current`.
    async fn write_transition(
        &self,
        current: LeaseRecord,
        event: &LeaseEvent,
        manifest_json: Option<&str>,
    ) -> Result<LeaseRecord, StoreError> {
        let lease_id = current.lease_id;
        let next = transition(&current.state, event)
            .map_err(|source| StoreError::Transition { lease_id, source })?;
        if next == current.state {
            return Ok(current);
        }
        let now = unix_now();
        let next_version = current
            .version
            .checked_add(1)
            .ok_or(StoreError::OutOfRange {
                what: "lease version",
                value: u64::MAX,
            })?;
        let deadline = next
            .manifest_deadline()
            .map(|deadline| to_db(deadline, "manifest deadline"))
            .transpose()?;
        let manifest_hash = next.manifest_hash().or(current.manifest_hash);
        let manifest_json = manifest_json
            .map(str::to_string)
            .or_else(|| current.manifest_json.clone());
        let updated = sqlx::query(
            "UPDATE leases SET state = $1, manifest_hash = $2, manifest_json = $3, deadline = $4, \
             reason = $5, updated_at = $6, version = $7 WHERE lease_id = $8 AND version = $9",
        )
        .bind(next.kind().as_str())
        .bind(manifest_hash.map(|hash| hash.to_string()))
        .bind(manifest_json.clone())
        .bind(deadline)
        .bind(next.reason())
        .bind(now)
        .bind(next_version)
        .bind(to_db(lease_id, "lease id")?)
        .bind(current.version)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            let found = self.lease(lease_id).await?.version;
            return Err(StoreError::Conflict {
                lease_id,
                expected: current.version,
                found,
            });
        }
        Ok(LeaseRecord {
            state: next,
            manifest_hash,
            manifest_json,
            updated_at: now,
            version: next_version,
            ..current
        })
    }

    /// Holds (or re-holds, e.g. once the bid id is known) resources for an order.
    pub async fn put_reservation(&self, reservation: &Reservation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO reservations (order_id, bid_id, resources, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (order_id) DO UPDATE SET \
             bid_id = excluded.bid_id, resources = excluded.resources, expires_at = excluded.expires_at",
        )
        .bind(to_db(reservation.order_id, "order id")?)
        .bind(
            reservation
                .bid_id
                .map(|bid_id| to_db(bid_id, "bid id"))
                .transpose()?,
        )
        .bind(reservation.resources.to_string())
        .bind(to_db(reservation.expires_at, "reservation expiry")?)
        .bind(unix_now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn reservation(&self, order_id: u64) -> Result<Option<Reservation>, StoreError> {
        let row = sqlx::query(
            "SELECT order_id, bid_id, resources, expires_at FROM reservations WHERE order_id = $1",
        )
        .bind(to_db(order_id, "order id")?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(reservation_from_row).transpose()
    }

    /// Every reservation, soonest expiry first (to rebuild the inventory at start).
    pub async fn reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let rows = sqlx::query(
            "SELECT order_id, bid_id, resources, expires_at FROM reservations ORDER BY expires_at, order_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(reservation_from_row).collect()
    }

    /// Releases a reservation; `false` if there was none.
    pub async fn remove_reservation(&self, order_id: u64) -> Result<bool, StoreError> {
        let removed = sqlx::query("DELETE FROM reservations WHERE order_id = $1")
            .bind(to_db(order_id, "order id")?)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed > 0)
    }

    /// Removes and returns the reservations that expired at or before `now`,
    /// in one statement so a concurrent writer cannot slip between.
    pub async fn take_expired_reservations(
        &self,
        now: u64,
    ) -> Result<Vec<Reservation>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM reservations WHERE expires_at <= $1 \
             RETURNING order_id, bid_id, resources, expires_at",
        )
        .bind(to_db(now, "time")?)
        .fetch_all(&self.pool)
        .await?;
        let mut expired = rows
            .iter()
            .map(reservation_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        expired.sort_by_key(|reservation| reservation.order_id);
        Ok(expired)
    }

    /// The next block a follower reads, if it ever saved one.
    pub async fn cursor(&self, follower: &str) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query("SELECT next_block FROM chain_cursors WHERE follower = $1")
            .bind(follower)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            let block: i64 = row.try_get("next_block")?;
            u64::try_from(block).map_err(|_| StoreError::Corrupt {
                row: format!("cursor {follower}"),
                reason: format!("block {block} is negative"),
            })
        })
        .transpose()
    }

    /// A follower's position with the block hashes it was read against.
    pub async fn cursor_state(&self, follower: &str) -> Result<Option<CursorState>, StoreError> {
        let Some(next_block) = self.cursor(follower).await? else {
            return Ok(None);
        };
        let row = sqlx::query("SELECT checkpoints FROM chain_cursors WHERE follower = $1")
            .bind(follower)
            .fetch_one(&self.pool)
            .await?;
        let text: String = row.try_get("checkpoints")?;
        let checkpoints = serde_json::from_str(&text).map_err(|error| StoreError::Corrupt {
            row: format!("cursor {follower}"),
            reason: format!("checkpoints are not valid JSON: {error}"),
        })?;
        Ok(Some(CursorState {
            next_block,
            checkpoints,
        }))
    }

    /// Saves a follower's position and checkpoints in one statement (it may move back after
    /// a reorg).
    pub async fn save_cursor_state(
        &self,
        follower: &str,
        state: &CursorState,
    ) -> Result<(), StoreError> {
        let checkpoints =
            serde_json::to_string(&state.checkpoints).map_err(|error| StoreError::Corrupt {
                row: format!("cursor {follower}"),
                reason: format!("checkpoints do not serialise: {error}"),
            })?;
        sqlx::query(
            "INSERT INTO chain_cursors (follower, next_block, updated_at, checkpoints) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (follower) DO UPDATE SET next_block = excluded.next_block, \
             updated_at = excluded.updated_at, checkpoints = excluded.checkpoints",
        )
        .bind(follower)
        .bind(to_db(state.next_block, "block number")?)
        .bind(unix_now())
        .bind(checkpoints)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Saves a follower's position (it may move back, e.g. after a reorg).
    pub async fn set_cursor(&self, follower: &str, next_block: u64) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO chain_cursors (follower, next_block, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (follower) DO UPDATE SET next_block = excluded.next_block, updated_at = excluded.updated_at",
        )
        .bind(follower)
        .bind(to_db(next_block, "block number")?)
        .bind(unix_now())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Remembers a gateway signature; `false` when the same address already
    /// used it (a replay). Atomic, so two concurrent calls cannot both win.
    pub async fn remember_signature(
        &self,
        address: &str,
        signature: &str,
        signed_at: u64,
    ) -> Result<bool, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO replay_keys (address, signature, signed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (address, signature) DO NOTHING",
        )
        .bind(address.to_ascii_lowercase())
        .bind(signature.to_ascii_lowercase())
        .bind(to_db(signed_at, "signature time")?)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// Forgets signatures made before `cutoff` (older ones fail the clock-skew
    /// check anyway); returns how many were removed.
    pub async fn prune_signatures(&self, cutoff: u64) -> Result<u64, StoreError> {
        let removed = sqlx::query("DELETE FROM replay_keys WHERE signed_at < $1")
            .bind(to_db(cutoff, "signature cutoff")?)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed)
    }
}

fn create_sqlite_dir(url: &str) -> Result<(), StoreError> {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        return Ok(());
    };
    let file = rest.split('?').next().unwrap_or_default();
    if file.is_empty() || file == ":memory:" {
        return Ok(());
    }
    match Path::new(file).parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::create_dir_all(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            }),
        _ => Ok(()),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn to_db(value: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

fn lease_from_row(row: &AnyRow) -> Result<LeaseRecord, StoreError> {
    let lease_id: i64 = row.try_get("lease_id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        row: format!("lease {lease_id}"),
        reason,
    };
    let unsigned = |value: i64, what: &str| {
        u64::try_from(value).map_err(|_| corrupt(format!("{what} {value} is negative")))
    };
    let state_name: String = row.try_get("state")?;
    let manifest_hash: Option<String> = row.try_get("manifest_hash")?;
    let deadline: Option<i64> = row.try_get("deadline")?;
    let reason: Option<String> = row.try_get("reason")?;
    let manifest_hash = manifest_hash
        .map(|text| text.parse::<ManifestHash>())
        .transpose()
        .map_err(|error| corrupt(error.to_string()))?;

    let kind: LeaseStateKind = state_name
        .parse()
        .map_err(|error| corrupt(format!("{error}")))?;
    let need_deadline = || {
        deadline
            .ok_or_else(|| corrupt(format!("state {kind} without a deadline")))
            .and_then(|deadline| unsigned(deadline, "deadline"))
    };
    let need_hash =
        || manifest_hash.ok_or_else(|| corrupt(format!("state {kind} without a manifest hash")));
    let need_reason = || {
        reason
            .clone()
            .ok_or_else(|| corrupt(format!("state {kind} without a reason")))
    };
    let close_reason = || -> Result<CloseReason, StoreError> {
        need_reason()?
            .parse()
            .map_err(|error| corrupt(format!("{error}")))
    };
    let state = match kind {
        LeaseStateKind::Won => LeaseState::Won {
            manifest_deadline: need_deadline()?,
        },
        LeaseStateKind::AwaitingManifest => LeaseState::AwaitingManifest {
            manifest_deadline: need_deadline()?,
        },
        LeaseStateKind::Deploying => LeaseState::Deploying {
            manifest_hash: need_hash()?,
        },
        LeaseStateKind::Running => LeaseState::Running {
            manifest_hash: need_hash()?,
        },
        LeaseStateKind::Failed => LeaseState::Failed {
            manifest_hash: need_hash()?,
            reason: need_reason()?,
        },
        LeaseStateKind::Closing => LeaseState::Closing {
            reason: close_reason()?,
        },
        LeaseStateKind::Closed => LeaseState::Closed {
            reason: close_reason()?,
        },
    };
    Ok(LeaseRecord {
        lease_id: unsigned(lease_id, "lease id")?,
        order_id: unsigned(row.try_get("order_id")?, "order id")?,
        tenant: row.try_get("tenant")?,
        state,
        manifest_hash,
        manifest_json: row.try_get("manifest_json")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        version: row.try_get("version")?,
    })
}

fn reservation_from_row(row: &AnyRow) -> Result<Reservation, StoreError> {
    let order_id: i64 = row.try_get("order_id")?;
    let bid_id: Option<i64> = row.try_get("bid_id")?;
    let expires_at: i64 = row.try_get("expires_at")?;
    let resources: String = row.try_get("resources")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        row: format!("reservation for order {order_id}"),
        reason,
    };
    let unsigned = |value: i64, what: &str| {
        u64::try_from(value).map_err(|_| corrupt(format!("{what} {value} is negative")))
    };
    let order = unsigned(order_id, "order id")?;
    Ok(Reservation {
        order_id: order,
        bid_id: bid_id.map(|bid| unsigned(bid, "bid id")).transpose()?,
        resources: serde_json::from_str(&resources).map_err(|source| {
            StoreError::ReservationJson {
                order_id: order,
                source,
            }
        })?,
        expires_at: unsigned(expires_at, "expiry")?,
    })
}

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact_password("postgres://leasehold:secret@127.0.0.1:5432/db"),
            "postgres://leasehold:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact_password("sqlite:///var/lib/leasehold/provider.db?mode=rwc"),
            "sqlite:///var/lib/leasehold/provider.db?mode=rwc"
        );
    }

    #[test]
    fn ids_beyond_i64_are_refused() {
        assert!(matches!(
            to_db(u64::MAX, "lease id"),
            Err(StoreError::OutOfRange {
                what: "lease id",
                ..
            })
        ));
        assert_eq!(to_db(42, "lease id").ok(), Some(42));
    }
}

/// A lease's manifest revisions (update in place): the one it runs, and the latest one the
/// chain announced whose manifest has not arrived yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestRevisions {
    /// 1 is the order's manifest.
    pub applied: u64,
    pub pending: Option<(u64, ManifestHash)>,
}

impl Store {
    /// The lease's revisions; a lease never updated runs revision 1.
    pub async fn manifest_revisions(&self, lease_id: u64) -> Result<ManifestRevisions, StoreError> {
        let row = sqlx::query(
            "SELECT applied_revision, pending_revision, pending_hash FROM manifest_revisions \
             WHERE lease_id = $1",
        )
        .bind(to_db(lease_id, "lease id")?)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(ManifestRevisions {
                applied: 1,
                pending: None,
            });
        };
        let corrupt = |reason: String| StoreError::Corrupt {
            row: format!("manifest revisions of lease {lease_id}"),
            reason,
        };
        let revision = |value: i64| {
            u64::try_from(value).map_err(|_| corrupt(format!("revision {value} is negative")))
        };
        let applied = revision(row.try_get("applied_revision")?)?;
        let pending_revision: Option<i64> = row.try_get("pending_revision")?;
        let pending_hash: Option<String> = row.try_get("pending_hash")?;
        let pending = match (pending_revision, pending_hash) {
            (Some(pending), Some(hash)) => Some((
                revision(pending)?,
                hash.parse::<ManifestHash>()
                    .map_err(|error| corrupt(error.to_string()))?,
            )),
            _ => None,
        };
        Ok(ManifestRevisions { applied, pending })
    }

    /// Remembers a revision announced on chain until its manifest arrives. `false` when it
    /// is not newer than what the lease runs or already waits for (a redelivered event).
    pub async fn note_pending_revision(
        &self,
        lease_id: u64,
        revision: u64,
        manifest_hash: ManifestHash,
    ) -> Result<bool, StoreError> {
        let noted = sqlx::query(
            "INSERT INTO manifest_revisions (lease_id, applied_revision, pending_revision, pending_hash) \
             VALUES ($1, 1, $2, $3) \
             ON CONFLICT (lease_id) DO UPDATE SET pending_revision = excluded.pending_revision, \
             pending_hash = excluded.pending_hash \
             WHERE manifest_revisions.applied_revision < excluded.pending_revision \
             AND (manifest_revisions.pending_revision IS NULL \
                  OR manifest_revisions.pending_revision < excluded.pending_revision)",
        )
        .bind(to_db(lease_id, "lease id")?)
        .bind(to_db(revision, "revision")?)
        .bind(manifest_hash.to_string())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(noted == 1 && revision > 1)
    }

    /// Replaces the manifest of a lease that runs one (update in place), if the lease is
    /// still at `expected_version`, and records `revision` as applied (clearing a pending
    /// revision it reaches), all in one transaction.
    pub async fn replace_manifest(
        &self,
        lease_id: u64,
        expected_version: i64,
        manifest_hash: ManifestHash,
        manifest_json: &str,
        revision: u64,
    ) -> Result<LeaseRecord, StoreError> {
        let id = to_db(lease_id, "lease id")?;
        let revision = to_db(revision, "revision")?;
        let mut transaction = self.pool.begin().await?;
        let replaced = sqlx::query(
            "UPDATE leases SET manifest_hash = $1, manifest_json = $2, updated_at = $3, \
             version = version + 1 WHERE lease_id = $4 AND version = $5 \
             AND manifest_hash IS NOT NULL",
        )
        .bind(manifest_hash.to_string())
        .bind(manifest_json)
        .bind(unix_now())
        .bind(id)
        .bind(expected_version)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        if replaced != 1 {
            drop(transaction);
            let found = self.lease(lease_id).await?.version;
            return Err(StoreError::Conflict {
                lease_id,
                expected: expected_version,
                found,
            });
        }
        apply_revision(&mut transaction, id, revision).await?;
        transaction.commit().await?;
        self.lease(lease_id).await
    }

    /// Records that the lease runs `revision` (its first manifest arrived after updates
    /// were recorded on chain), clearing a pending revision it reaches.
    pub async fn record_applied_revision(
        &self,
        lease_id: u64,
        revision: u64,
    ) -> Result<(), StoreError> {
        let mut transaction = self.pool.begin().await?;
        apply_revision(
            &mut transaction,
            to_db(lease_id, "lease id")?,
            to_db(revision, "revision")?,
        )
        .await?;
        transaction.commit().await?;
        Ok(())
    }
}

/// Raises the applied revision to `revision` (never lowers it) and clears a pending
/// revision it reaches.
async fn apply_revision(
    connection: &mut AnyConnection,
    lease_id: i64,
    revision: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO manifest_revisions (lease_id, applied_revision) VALUES ($1, $2) \
         ON CONFLICT (lease_id) DO UPDATE SET applied_revision = excluded.applied_revision \
         WHERE manifest_revisions.applied_revision < excluded.applied_revision",
    )
    .bind(lease_id)
    .bind(revision)
    .execute(&mut *connection)
    .await?;
    sqlx::query(
        "UPDATE manifest_revisions SET pending_revision = NULL, pending_hash = NULL \
         WHERE lease_id = $1 AND pending_revision <= $2",
    )
    .bind(lease_id)
    .bind(revision)
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// A workload started before its lease existed (`Lease.SendOrderManifest`), under this
/// provider's bid on the order; the lease id it will run under is the order id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeculativeDeployment {
    pub order_id: u64,
    /// This provider's bid the start runs under; `None` for an auto-accept order whose
    /// `placeBid` was still being mined when the manifest came.
    pub bid_id: Option<u64>,
    /// The order's tenant, as [`NewLease::tenant`] writes it.
    pub tenant: String,
    pub manifest_hash: ManifestHash,
    /// As a lease's `manifest_json`: registry passwords sealed.
    pub manifest_json: String,
    /// The manifest group the order was created for.
    pub group: String,
}

const SPECULATIVE_COLUMNS: &str =
    "order_id, bid_id, tenant, manifest_hash, manifest_json, group_name";

fn speculative_from_row(row: &AnyRow) -> Result<SpeculativeDeployment, StoreError> {
    let order_id: i64 = row.try_get("order_id")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        row: format!("speculative deployment of order {order_id}"),
        reason,
    };
    let unsigned = |value: i64, what: &str| {
        u64::try_from(value).map_err(|_| corrupt(format!("{what} {value} is negative")))
    };
    let hash: String = row.try_get("manifest_hash")?;
    Ok(SpeculativeDeployment {
        order_id: unsigned(order_id, "order id")?,
        bid_id: row
            .try_get::<Option<i64>, _>("bid_id")?
            .map(|bid_id| unsigned(bid_id, "bid id"))
            .transpose()?,
        tenant: row.try_get("tenant")?,
        manifest_hash: hash
            .parse::<ManifestHash>()
            .map_err(|error| corrupt(error.to_string()))?,
        manifest_json: row.try_get("manifest_json")?,
        group: row.try_get("group_name")?,
    })
}

impl Store {
    /// Records a pre-lease start, one per order: `Ok(None)` when it was recorded, else the
    /// deployment the order already has (left unchanged).
    pub async fn insert_speculative(
        &self,
        deployment: &SpeculativeDeployment,
    ) -> Result<Option<SpeculativeDeployment>, StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO speculative_deployments \
             (order_id, bid_id, tenant, manifest_hash, manifest_json, group_name, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(to_db(deployment.order_id, "order id")?)
        .bind(
            deployment
                .bid_id
                .map(|bid_id| to_db(bid_id, "bid id"))
                .transpose()?,
        )
        .bind(&deployment.tenant)
        .bind(deployment.manifest_hash.to_string())
        .bind(&deployment.manifest_json)
        .bind(&deployment.group)
        .bind(unix_now())
        .execute(&self.pool)
        .await?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        self.speculative(deployment.order_id).await
    }

    pub async fn speculative(
        &self,
        order_id: u64,
    ) -> Result<Option<SpeculativeDeployment>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {SPECULATIVE_COLUMNS} FROM speculative_deployments WHERE order_id = $1"
        ))
        .bind(to_db(order_id, "order id")?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(speculative_from_row).transpose()
    }

    /// Every pre-lease start, by order id.
    pub async fn speculative_deployments(&self) -> Result<Vec<SpeculativeDeployment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SPECULATIVE_COLUMNS} FROM speculative_deployments ORDER BY order_id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(speculative_from_row).collect()
    }

    /// Records the bid a pre-lease start recorded before its bid id was known runs under.
    pub async fn set_speculative_bid(&self, order_id: u64, bid_id: u64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE speculative_deployments SET bid_id = $1 WHERE order_id = $2 AND bid_id IS NULL",
        )
        .bind(to_db(bid_id, "bid id")?)
        .bind(to_db(order_id, "order id")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets a pre-lease start (adopted by its lease, or removed); `false` if there was none.
    pub async fn remove_speculative(&self, order_id: u64) -> Result<bool, StoreError> {
        let removed = sqlx::query("DELETE FROM speculative_deployments WHERE order_id = $1")
            .bind(to_db(order_id, "order id")?)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(removed > 0)
    }
}
