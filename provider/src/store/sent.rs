//! The transaction lane's journal in the store (`sent_transactions`): see
//! [`leasehold_contracts::TxJournal`] for what the lane relies on.

use alloy::primitives::{Address, B256, Bytes};
use leasehold_contracts::{Fees, JournalError, SentTx, Settlement, TxJournal};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, to_db};

const SENT_COLUMNS: &str =
    "tx_hash, nonce, attempt, purpose, raw_tx, max_fee_per_gas, max_priority_fee_per_gas, sent_at";

/// One account's journal over the store.
#[derive(Debug, Clone)]
pub struct StoreJournal {
    store: Store,
    /// Lower-case hex: the data dir may outlive a key change.
    account: String,
}

impl StoreJournal {
    pub fn new(store: Store, account: Address) -> Self {
        Self {
            store,
            account: account.to_string().to_ascii_lowercase(),
        }
    }
}

fn backend(error: StoreError) -> JournalError {
    JournalError(Box::new(error))
}

fn sent_from_row(row: &AnyRow) -> Result<SentTx, StoreError> {
    let hash: String = row.try_get("tx_hash")?;
    let corrupt = |reason: String| StoreError::Corrupt {
        row: format!("sent transaction {hash}"),
        reason,
    };
    let unsigned = |value: i64, what: &str| {
        u64::try_from(value).map_err(|_| corrupt(format!("{what} {value} is negative")))
    };
    let wei = |column: &str| -> Result<u128, StoreError> {
        let text: String = row.try_get(column)?;
        text.parse()
            .map_err(|_| corrupt(format!("{column} `{text}` is not a wei amount")))
    };
    let raw: String = row.try_get("raw_tx")?;
    Ok(SentTx {
        tx_hash: hash
            .parse::<B256>()
            .map_err(|error| corrupt(format!("hash: {error}")))?,
        nonce: unsigned(row.try_get("nonce")?, "nonce")?,
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?)
            .map_err(|_| corrupt("attempt out of range".into()))?,
        purpose: row.try_get("purpose")?,
        raw: raw
            .parse::<Bytes>()
            .map_err(|error| corrupt(format!("raw_tx: {error}")))?,
        fees: Fees {
            max_fee_per_gas: wei("max_fee_per_gas")?,
            max_priority_fee_per_gas: wei("max_priority_fee_per_gas")?,
        },
        sent_at: unsigned(row.try_get("sent_at")?, "sent_at")?,
    })
}

impl Store {
    async fn record_sent(&self, account: &str, sent: &SentTx) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO sent_transactions (tx_hash, account, nonce, attempt, purpose, raw_tx, \
             max_fee_per_gas, max_priority_fee_per_gas, sent_at, outcome) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL) ON CONFLICT (tx_hash) DO NOTHING",
        )
        .bind(sent.tx_hash.to_string())
        .bind(account)
        .bind(to_db(sent.nonce, "nonce")?)
        .bind(i64::from(sent.attempt))
        .bind(&sent.purpose)
        .bind(sent.raw.to_string())
        .bind(sent.fees.max_fee_per_gas.to_string())
        .bind(sent.fees.max_priority_fee_per_gas.to_string())
        .bind(to_db(sent.sent_at, "sent_at")?)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every attempt of every unsettled nonce of `account`, by nonce then attempt.
    pub async fn unsettled_transactions(&self, account: &str) -> Result<Vec<SentTx>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SENT_COLUMNS} FROM sent_transactions \
             WHERE account = $1 AND outcome IS NULL ORDER BY nonce, attempt"
        ))
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sent_from_row).collect()
    }

    /// Every transaction `account` ever journaled, whatever became of it, by nonce then attempt.
    pub async fn sent_transactions(&self, account: &str) -> Result<Vec<SentTx>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SENT_COLUMNS} FROM sent_transactions WHERE account = $1 ORDER BY nonce, attempt"
        ))
        .bind(account)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sent_from_row).collect()
    }

    async fn settle_nonce(
        &self,
        account: &str,
        nonce: u64,
        settlement: Settlement,
    ) -> Result<(), StoreError> {
        let (winner, others) = match settlement {
            Settlement::Mined(hash) => (hash.to_string(), "superseded"),
            Settlement::Taken => (String::new(), "taken"),
        };
        sqlx::query(
            "UPDATE sent_transactions SET outcome = CASE WHEN tx_hash = $3 THEN 'mined' ELSE $4 END \
             WHERE account = $1 AND nonce = $2 AND outcome IS NULL",
        )
        .bind(account)
        .bind(to_db(nonce, "nonce")?)
        .bind(winner)
        .bind(others)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn reject_sent(&self, tx_hash: B256) -> Result<(), StoreError> {
        sqlx::query("UPDATE sent_transactions SET outcome = 'rejected' WHERE tx_hash = $1")
            .bind(tx_hash.to_string())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn last_mined_nonce(&self, account: &str) -> Result<Option<u64>, StoreError> {
        let row = sqlx::query(
            "SELECT MAX(nonce) AS nonce FROM sent_transactions \
             WHERE account = $1 AND outcome = 'mined'",
        )
        .bind(account)
        .fetch_one(&self.pool)
        .await?;
        let nonce: Option<i64> = row.try_get("nonce")?;
        nonce
            .map(|nonce| {
                u64::try_from(nonce).map_err(|_| StoreError::Corrupt {
                    row: format!("sent transactions of {account}"),
                    reason: format!("nonce {nonce} is negative"),
                })
            })
            .transpose()
    }
}

impl Store {
    /// The mined attempt of every nonce of `account` at or above `nonce`, by nonce.
    async fn mined_from(&self, account: &str, nonce: u64) -> Result<Vec<SentTx>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SENT_COLUMNS} FROM sent_transactions \
             WHERE account = $1 AND nonce >= $2 AND outcome = 'mined' ORDER BY nonce"
        ))
        .bind(account)
        .bind(to_db(nonce, "nonce")?)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sent_from_row).collect()
    }
}

#[async_trait::async_trait]
impl TxJournal for StoreJournal {
    async fn record(&self, sent: &SentTx) -> Result<(), JournalError> {
        self.store
            .record_sent(&self.account, sent)
            .await
            .map_err(backend)
    }

    async fn unsettled(&self) -> Result<Vec<SentTx>, JournalError> {
        self.store
            .unsettled_transactions(&self.account)
            .await
            .map_err(backend)
    }

    async fn settle(&self, nonce: u64, settlement: Settlement) -> Result<(), JournalError> {
        self.store
            .settle_nonce(&self.account, nonce, settlement)
            .await
            .map_err(backend)
    }

    async fn reject(&self, tx_hash: B256) -> Result<(), JournalError> {
        self.store.reject_sent(tx_hash).await.map_err(backend)
    }

    async fn last_mined_nonce(&self) -> Result<Option<u64>, JournalError> {
        self.store
            .last_mined_nonce(&self.account)
            .await
            .map_err(backend)
    }

    async fn mined_from(&self, nonce: u64) -> Result<Vec<SentTx>, JournalError> {
        self.store
            .mined_from(&self.account, nonce)
            .await
            .map_err(backend)
    }
}
