//! The index database: one schema for SQLite (the default, a file) and PostgreSQL
//! (`postgres://...`), written once through sqlx's `Any` driver as the provider's store is:
//! `$n` placeholders, BIGINT and TEXT columns, `ON CONFLICT`.
//!
//! The `events` table is the source of truth. Each follower range is applied in one
//! transaction together with the cursor ([`Store::commit_range`]), so a crash anywhere leaves
//! either the range fully indexed with the cursor past it, or neither. A reorg deletes the
//! events from the fork on and rebuilds every derived table from the remaining events in the
//! same transaction ([`Store::commit_range`] with a rewind).

use std::path::{Path, PathBuf};

use alloy::rpc::types::Log;
use leasehold_contracts::{ChainEvent, CursorState, Deployment};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::apply::{self, ApplyError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The tables rebuilt from `events` after a reorg (everything but `events`, `cursor`, `names`).
pub const DERIVED_TABLES: &[&str] = &[
    "providers",
    "provider_attributes",
    "provider_gpus",
    "orders",
    "bids",
    "leases",
    "payments",
    "top_ups",
    "closes",
    "price_history",
    "capacity_history",
    "names",
];

/// Every table with indexed chain data, in dump order (for status counts and comparisons).
pub const ALL_TABLES: &[&str] = &[
    "events",
    "providers",
    "provider_attributes",
    "provider_gpus",
    "orders",
    "bids",
    "leases",
    "payments",
    "top_ups",
    "closes",
    "price_history",
    "capacity_history",
    "names",
];

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
    #[error("applying an event: {0}")]
    Apply(#[from] ApplyError),
    #[error("corrupt row ({row}): {reason}")]
    Corrupt { row: String, reason: String },
}

/// A log ready to be stored: decoded, with its block time.
#[derive(Debug, Clone)]
pub struct IndexedLog {
    pub block: u64,
    pub log_index: u64,
    pub tx_hash: String,
    /// Unix seconds of the log's block.
    pub at: u64,
    pub event: ChainEvent,
    /// The log as read (for rebuilding after a reorg).
    pub raw: Log,
}

/// The index database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

impl Store {
    /// Connects to `sqlite://...` or `postgres://...` and applies pending migrations. A SQLite
    /// file's directory is created when missing.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        create_sqlite_dir(url)?;
        let connect_error = |source| StoreError::Connect {
            url: redact_password(url),
            source,
        };
        // One direct connection first: the pool retries a refused connection until its
        // timeout and then reports only "timed out", hiding the cause.
        let mut connection = AnyConnection::connect(url).await.map_err(connect_error)?;
        MIGRATOR.run(&mut connection).await?;
        connection.close().await?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .connect(url)
            .await
            .map_err(connect_error)?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub async fn cursor(&self) -> Result<Option<CursorState>, StoreError> {
        let row = sqlx::query("SELECT next_block, checkpoints FROM cursor WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let next_block: i64 = row.try_get("next_block")?;
        let checkpoints: String = row.try_get("checkpoints")?;
        let corrupt = |reason: String| StoreError::Corrupt {
            row: "cursor".to_owned(),
            reason,
        };
        Ok(Some(CursorState {
            next_block: u64::try_from(next_block).map_err(|e| corrupt(e.to_string()))?,
            checkpoints: serde_json::from_str(&checkpoints).map_err(|e| corrupt(e.to_string()))?,
        }))
    }

    /// In one transaction: undoes everything indexed from `rewind_to` on (when given) by
    /// deleting those events and rebuilding the derived tables from the rest, applies `logs`
    /// in order and saves `cursor`. Returns the logs that were new (not already stored).
    pub async fn commit_range(
        &self,
        rewind_to: Option<u64>,
        logs: &[IndexedLog],
        cursor: &CursorState,
        deployment: &Deployment,
    ) -> Result<Vec<IndexedLog>, StoreError> {
        let mut transaction = self.pool.begin().await?;
        if let Some(fork_block) = rewind_to {
            rebuild_from(&mut transaction, fork_block, deployment).await?;
        }
        let mut fresh = Vec::with_capacity(logs.len());
        for log in logs {
            if apply::record_and_apply(&mut transaction, log).await? {
                fresh.push(log.clone());
            }
        }
        let checkpoints =
            serde_json::to_string(&cursor.checkpoints).map_err(|e| StoreError::Corrupt {
                row: "cursor".to_owned(),
                reason: e.to_string(),
            })?;
        sqlx::query(
            "INSERT INTO cursor (id, next_block, checkpoints) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO UPDATE SET next_block = excluded.next_block, \
             checkpoints = excluded.checkpoints",
        )
        .bind(apply::to_db(cursor.next_block)?)
        .bind(checkpoints)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(fresh)
    }

    /// Row counts of every indexed table, in [`ALL_TABLES`] order.
    pub async fn counts(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        let mut counts = Vec::new();
        for table in ALL_TABLES {
            let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&self.pool)
                .await?;
            counts.push((*table, row.try_get::<i64, _>("n")?));
        }
        Ok(counts)
    }
}

/// Deletes the events from `fork_block` on and replays the remaining ones into emptied
/// derived tables. Replaying everything is linear in the history, but reorgs past the
/// confirmations are rare, and this way no undo logic can disagree with the forward one.
async fn rebuild_from(
    connection: &mut AnyConnection,
    fork_block: u64,
    deployment: &Deployment,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM events WHERE block >= $1")
        .bind(apply::to_db(fork_block)?)
        .execute(&mut *connection)
        .await?;
    for table in DERIVED_TABLES {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&mut *connection)
            .await?;
    }
    let rows = sqlx::query("SELECT raw, at, tx_hash FROM events ORDER BY block, log_index")
        .fetch_all(&mut *connection)
        .await?;
    for row in rows {
        let raw: String = row.try_get("raw")?;
        let at: i64 = row.try_get("at")?;
        let tx_hash: String = row.try_get("tx_hash")?;
        let corrupt = |reason: String| StoreError::Corrupt {
            row: "events".to_owned(),
            reason,
        };
        let raw: Log = serde_json::from_str(&raw).map_err(|e| corrupt(e.to_string()))?;
        let decoded = ChainEvent::decode(&raw, deployment)
            .map_err(|e| corrupt(e.to_string()))?
            .ok_or_else(|| corrupt("a stored log no longer decodes".to_owned()))?;
        let log = IndexedLog {
            block: decoded.block,
            log_index: decoded.log_index,
            tx_hash,
            at: u64::try_from(at).map_err(|e| corrupt(e.to_string()))?,
            event: decoded.event,
            raw,
        };
        apply::apply(&mut *connection, &log).await?;
    }
    Ok(())
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

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_password("postgres://leasehold:secret@127.0.0.1:5432/db"),
            "postgres://leasehold:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact_password("sqlite:///tmp/market.db?mode=rwc"),
            "sqlite:///tmp/market.db?mode=rwc"
        );
    }
}
