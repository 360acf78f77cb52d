//! One account's transaction lane: nonces, EIP-1559 fees under a cap, and transactions that a
//! real network delays or forgets.
//!
//! Invariants (ARCHITECTURE.md, "Transaction lane"):
//! - one transaction in flight per lane: [`TxLane::send`] takes the lane's turn, so nonces are
//!   assigned in order and never twice;
//! - every signed transaction is written to the [`TxJournal`] *before* it is broadcast, so a
//!   process that dies between signing and mining finds it again;
//! - before a new nonce is taken, every journaled nonce that is not settled is driven to an
//!   outcome (mined, or used by a transaction we did not send): a call whose transaction was
//!   mined before a crash is never signed again, and no nonce is skipped or reused;
//! - a transaction not mined after [`FeePolicy::stuck_after`] is replaced on the same nonce with
//!   both fees raised by at least 12.5 % (never above the caps); one the node no longer knows
//!   while its nonce is unused is broadcast again, byte for byte.

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use alloy::consensus::TxEnvelope;
use alloy::eips::BlockNumberOrTag;
use alloy::eips::eip2718::Encodable2718 as _;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder as _, TransactionBuilder as _};
use alloy::primitives::{Address, B256, Bytes, U256};
use alloy::providers::{DynProvider, Provider as _};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use tokio::sync::Mutex;
use tracing::{info, warn};

use crate::error::{ClientError, FeeCapShortfall, FundsShortfall};

/// Wei per gwei.
const WEI_PER_GWEI: u128 = 1_000_000_000;

/// A gas price in wei, written and read as decimal gwei (`"0.05"`, `30`): public L2s charge
/// fractions of a gwei.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Gwei {
    wei: u128,
}

/// A gwei amount that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a gwei amount: {reason}")]
pub struct GweiError {
    text: String,
    reason: &'static str,
}

impl Gwei {
    pub const fn from_wei(wei: u128) -> Self {
        Self { wei }
    }

    pub const fn wei(self) -> u128 {
        self.wei
    }
}

impl std::str::FromStr for Gwei {
    type Err = GweiError;

    /// Decimal gwei with at most 9 fractional digits (one wei).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let problem = |reason| GweiError {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        let (whole, fraction) = trimmed.split_once('.').unwrap_or((trimmed, ""));
        let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && fraction.is_empty() || !digits(whole) || !digits(fraction) {
            return Err(problem(
                "expected a non-negative decimal number such as 30 or 0.05",
            ));
        }
        if fraction.len() > 9 {
            return Err(problem("more than 9 decimals (finer than one wei)"));
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| problem("too large"))?
        };
        let padded = format!("{fraction:0<9}");
        let fraction: u128 = padded.parse().map_err(|_| problem("too large"))?;
        whole
            .checked_mul(WEI_PER_GWEI)
            .and_then(|wei| wei.checked_add(fraction))
            .map(Self::from_wei)
            .ok_or_else(|| problem("too large"))
    }
}

impl std::fmt::Display for Gwei {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whole = self.wei / WEI_PER_GWEI;
        let fraction = self.wei % WEI_PER_GWEI;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let fraction = format!("{fraction:09}");
            write!(f, "{whole}.{}", fraction.trim_end_matches('0'))
        }
    }
}

/// How a TOML or JSON file may spell gwei: `30`, `0.05` or `"0.05"`.
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum GweiSpelling {
    Integer(u64),
    Float(f64),
    Text(String),
}

impl<'de> serde::Deserialize<'de> for Gwei {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = match GweiSpelling::deserialize(deserializer)? {
            GweiSpelling::Integer(whole) => whole.to_string(),
            // The shortest text that reads back as the same float: `0.05`, not its binary value.
            GweiSpelling::Float(value) => value.to_string(),
            GweiSpelling::Text(text) => text,
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Gwei {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The two EIP-1559 fee fields of one transaction, in wei per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// Fees and patience of a lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeePolicy {
    /// The most this account pays per gas (base fee plus tip); `None`: whatever the node says.
    pub max_fee_per_gas: Option<Gwei>,
    /// The most it tips per gas.
    pub max_priority_fee_per_gas: Option<Gwei>,
    /// The setting a user changes to raise `max_fee_per_gas`, named in the cap error
    /// (`chain.max_fee_per_gas_gwei` in the provider's config, a flag in the tenant CLI).
    pub cap_setting: &'static str,
    /// A transaction not mined for this long is replaced with higher fees.
    pub stuck_after: Duration,
    /// How often the node is asked about a transaction in flight.
    pub poll_interval: Duration,
    /// How long one [`TxLane::send`] waits for its transaction before returning
    /// [`ClientError::StillPending`]; the transaction stays in the journal and is settled
    /// before the lane's next send.
    pub give_up_after: Duration,
}

impl Default for FeePolicy {
    fn default() -> Self {
        Self {
            max_fee_per_gas: None,
            max_priority_fee_per_gas: None,
            cap_setting: "max_fee_per_gas",
            stuck_after: Duration::from_secs(60),
            poll_interval: Duration::from_millis(250),
            give_up_after: Duration::from_secs(300),
        }
    }
}

/// The smallest fee a replacement may offer over `old`: 12.5 % more, rounded up, and at least
/// one wei more (nodes refuse a replacement that does not raise both fields by ~10 %).
pub fn min_bump(old: u128) -> Option<u128> {
    let raised = old.checked_mul(9)?.div_ceil(8);
    Some(raised.max(old.checked_add(1)?))
}

/// The fees of a replacement for a transaction sent with `old`, when the node now suggests
/// `fresh`: the larger of the bumped old fees and the fresh ones, within `policy`'s caps.
/// `None` when the caps leave no room for a bump the node would accept.
pub fn bumped_fees(old: Fees, fresh: Fees, policy: &FeePolicy) -> Option<Fees> {
    let max_fee = min_bump(old.max_fee_per_gas)?.max(fresh.max_fee_per_gas);
    let max_fee = cap(max_fee, policy.max_fee_per_gas);
    let tip = min_bump(old.max_priority_fee_per_gas)?.max(fresh.max_priority_fee_per_gas);
    let tip = cap(tip, policy.max_priority_fee_per_gas).min(max_fee);
    let enough =
        max_fee >= min_bump(old.max_fee_per_gas)? && tip >= min_bump(old.max_priority_fee_per_gas)?;
    enough.then_some(Fees {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: tip,
    })
}

fn cap(value: u128, limit: Option<Gwei>) -> u128 {
    limit.map_or(value, |limit| value.min(limit.wei()))
}

/// One signed transaction as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentTx {
    pub nonce: u64,
    /// 0 for the first transaction of a nonce, then one more per replacement.
    pub attempt: u32,
    pub tx_hash: B256,
    /// The EIP-2718 encoding, broadcast again as is when the node drops it.
    pub raw: Bytes,
    /// The call it makes (`confirmLease`, `withdraw`, ...), for logs and operators.
    pub purpose: String,
    pub fees: Fees,
    /// Unix seconds.
    pub sent_at: u64,
}

/// How a nonce ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// One of our transactions for it was mined.
    Mined(B256),
    /// The nonce was used by a transaction this lane never signed.
    Taken,
}

/// A journal that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("transaction journal: {0}")]
pub struct JournalError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Where a lane keeps what it signed, for one account. The provider keeps it in its database
/// (it must outlive the process); short-lived clients use [`MemoryJournal`].
#[async_trait::async_trait]
pub trait TxJournal: Send + Sync + std::fmt::Debug {
    /// Called before the transaction is broadcast.
    async fn record(&self, sent: &SentTx) -> Result<(), JournalError>;
    /// Every attempt of every nonce not yet settled, by nonce then attempt.
    async fn unsettled(&self) -> Result<Vec<SentTx>, JournalError>;
    /// Closes every attempt of `nonce`.
    async fn settle(&self, nonce: u64, settlement: Settlement) -> Result<(), JournalError>;
    /// Forgets one attempt the node refused outright (it never entered the pool).
    async fn reject(&self, tx_hash: B256) -> Result<(), JournalError>;
    /// The highest nonce whose transaction was mined.
    async fn last_mined_nonce(&self) -> Result<Option<u64>, JournalError>;
    /// The mined attempt of every nonce at or above `nonce`, by nonce: what a reorg may have
    /// taken off the chain again.
    async fn mined_from(&self, nonce: u64) -> Result<Vec<SentTx>, JournalError>;
}

/// A journal that lives as long as the process.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    state: StdMutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    unsettled: Vec<SentTx>,
    last_mined: Option<u64>,
    /// The newest mined attempts, by nonce (a short-lived client needs only the last few).
    mined: std::collections::BTreeMap<u64, SentTx>,
}

/// How many mined transactions a [`MemoryJournal`] keeps for reorg recovery.
const MEMORY_JOURNAL_MINED: usize = 64;

impl MemoryJournal {
    fn state(&self) -> Result<std::sync::MutexGuard<'_, MemoryState>, JournalError> {
        self.state
            .lock()
            .map_err(|_| JournalError("memory journal lock poisoned".into()))
    }
}

#[async_trait::async_trait]
impl TxJournal for MemoryJournal {
    async fn record(&self, sent: &SentTx) -> Result<(), JournalError> {
        self.state()?.unsettled.push(sent.clone());
        Ok(())
    }

    async fn unsettled(&self) -> Result<Vec<SentTx>, JournalError> {
        let mut all = self.state()?.unsettled.clone();
        all.sort_by_key(|sent| (sent.nonce, sent.attempt));
        Ok(all)
    }

    async fn settle(&self, nonce: u64, settlement: Settlement) -> Result<(), JournalError> {
        let mut state = self.state()?;
        if let Settlement::Mined(hash) = settlement {
            state.last_mined = state.last_mined.max(Some(nonce));
            if let Some(winner) = state.unsettled.iter().find(|sent| sent.tx_hash == hash) {
                let winner = winner.clone();
                state.mined.insert(nonce, winner);
                while state.mined.len() > MEMORY_JOURNAL_MINED {
                    state.mined.pop_first();
                }
            }
        }
        state.unsettled.retain(|sent| sent.nonce != nonce);
        Ok(())
    }

    async fn reject(&self, tx_hash: B256) -> Result<(), JournalError> {
        self.state()?
            .unsettled
            .retain(|sent| sent.tx_hash != tx_hash);
        Ok(())
    }

    async fn last_mined_nonce(&self) -> Result<Option<u64>, JournalError> {
        Ok(self.state()?.last_mined)
    }

    async fn mined_from(&self, nonce: u64) -> Result<Vec<SentTx>, JournalError> {
        Ok(self
            .state()?
            .mined
            .range(nonce..)
            .map(|(_, sent)| sent.clone())
            .collect())
    }
}

/// What a lane has had to do, for `/metrics`.
#[derive(Debug, Default)]
pub struct LaneStats {
    /// Stuck transactions replaced with higher fees.
    pub replaced: AtomicU64,
    /// Dropped transactions broadcast again.
    pub resent: AtomicU64,
    /// Sends refused because the network needed more than the fee cap.
    pub fee_cap_exceeded: AtomicU64,
    /// Sends refused because the account could not pay for gas and value.
    pub insufficient_funds: AtomicU64,
}

impl LaneStats {
    fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Sends one account's transactions, one at a time (see the module documentation).
#[derive(Debug)]
pub struct TxLane {
    provider: DynProvider,
    wallet: EthereumWallet,
    sender: Address,
    chain_id: u64,
    policy: FeePolicy,
    journal: Arc<dyn TxJournal>,
    stats: Arc<LaneStats>,
    turn: Mutex<()>,
}

/// A node's answer to a broadcast.
enum Broadcast {
    Accepted,
    /// It refused the transaction for good (underpriced replacement, insufficient funds, ...).
    Refused(String),
}

impl TxLane {
    pub fn new(
        provider: DynProvider,
        wallet: EthereumWallet,
        chain_id: u64,
        policy: FeePolicy,
        journal: Arc<dyn TxJournal>,
    ) -> Self {
        let sender =
            alloy::network::NetworkWallet::<alloy::network::Ethereum>::default_signer_address(
                &wallet,
            );
        Self {
            provider,
            wallet,
            sender,
            chain_id,
            policy,
            journal,
            stats: Arc::new(LaneStats::default()),
            turn: Mutex::new(()),
        }
    }

    pub fn sender(&self) -> Address {
        self.sender
    }

    pub fn policy(&self) -> &FeePolicy {
        &self.policy
    }

    pub fn stats(&self) -> &Arc<LaneStats> {
        &self.stats
    }

    /// The account's balance in wei.
    pub async fn balance(&self) -> Result<U256, ClientError> {
        self.provider
            .get_balance(self.sender)
            .await
            .map_err(|e| rpc("eth_getBalance", e))
    }

    /// Settles what a previous run left in flight (see [`TxLane::send`]); returns how many
    /// nonces it settled.
    pub async fn recover(&self) -> Result<usize, ClientError> {
        let _turn = self.turn.lock().await;
        self.settle_unsettled("recover").await
    }

    /// Signs `request` (its `to`, `input`, `value` and `gas` set) with the next nonce and the
    /// capped EIP-1559 fees, journals it, broadcasts it and waits for its receipt, replacing and
    /// re-broadcasting as needed. A failed (reverted) receipt is returned as is.
    pub async fn send(
        &self,
        call: &'static str,
        request: TransactionRequest,
    ) -> Result<TransactionReceipt, ClientError> {
        let _turn = self.turn.lock().await;
        self.settle_unsettled(call).await?;
        let nonce = self.next_nonce(call).await?;
        let fees = self.fees(call).await?;
        self.check_funds(call, &request, fees).await?;
        let first = self.sign(call, &request, nonce, 0, fees).await?;
        self.journal.record(&first).await.map_err(journal)?;
        if let Broadcast::Refused(reason) = self.broadcast(call, &first).await? {
            self.journal.reject(first.tx_hash).await.map_err(journal)?;
            return Err(self.refused(call, &request, fees, reason).await);
        }
        info!(call, nonce, tx = %first.tx_hash, max_fee = fees.max_fee_per_gas, "transaction sent");
        self.await_nonce(call, Some(&request), vec![first]).await
    }

    /// The next nonce: the node's pending count, but never at or below a nonce this lane saw
    /// mined (a node that lags behind, e.g. after a failover, must not make us reuse one).
    async fn next_nonce(&self, call: &'static str) -> Result<u64, ClientError> {
        let pending = self
            .provider
            .get_transaction_count(self.sender)
            .pending()
            .await
            .map_err(|e| rpc(call, e))?;
        let after_journal = self
            .journal
            .last_mined_nonce()
            .await
            .map_err(journal)?
            .map_or(0, |nonce| nonce.saturating_add(1));
        if pending >= after_journal {
            return Ok(pending);
        }
        // Either the node lags (a failover) or a reorg took mined transactions of ours off
        // the chain. Broadcasting the very same signed bytes again is right in both cases: a
        // lagging node refuses or ignores them, a reorged chain mines them (once: same nonce),
        // and the next nonce is used only after them, so nothing is skipped or signed twice.
        let orphans = self.resend_reorged(call, pending, u64::MAX).await?;
        for orphan in orphans {
            match self.await_nonce(call, None, vec![orphan]).await {
                Ok(_) | Err(ClientError::NonceTaken { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        let pending = self
            .provider
            .get_transaction_count(self.sender)
            .pending()
            .await
            .map_err(|e| rpc(call, e))?;
        Ok(pending.max(after_journal))
    }

    /// Broadcasts again, byte for byte, every transaction of ours seen mined at a nonce in
    /// `from..below` that the node no longer knows; returns them.
    async fn resend_reorged(
        &self,
        call: &'static str,
        from: u64,
        below: u64,
    ) -> Result<Vec<SentTx>, ClientError> {
        let mut orphans = self.journal.mined_from(from).await.map_err(journal)?;
        orphans.retain(|orphan| orphan.nonce < below);
        for orphan in &orphans {
            if self
                .known_to_node(call, std::slice::from_ref(orphan))
                .await?
            {
                continue;
            }
            warn!(call, nonce = orphan.nonce, tx = %orphan.tx_hash, purpose = %orphan.purpose,
                "a transaction seen mined is no longer on the chain; sending it again");
            if let Broadcast::Accepted = self.broadcast(call, orphan).await? {
                LaneStats::count(&self.stats.resent);
            }
        }
        Ok(orphans)
    }

    /// The node's suggestion within the caps; an error when the cap is below what the next
    /// block needs.
    async fn fees(&self, call: &'static str) -> Result<Fees, ClientError> {
        let estimate = self
            .provider
            .estimate_eip1559_fees()
            .await
            .map_err(|e| rpc(call, e))?;
        let next_base_fee = self.next_base_fee(call).await?;
        let tip = cap(
            estimate.max_priority_fee_per_gas,
            self.policy.max_priority_fee_per_gas,
        );
        let needed = next_base_fee.saturating_add(tip);
        if let Some(limit) = self.policy.max_fee_per_gas
            && limit.wei() < needed
        {
            LaneStats::count(&self.stats.fee_cap_exceeded);
            return Err(ClientError::FeeCapExceeded {
                call,
                setting: self.policy.cap_setting,
                fee: Box::new(FeeCapShortfall {
                    cap: limit,
                    needed: Gwei::from_wei(needed),
                }),
            });
        }
        let max_fee = cap(estimate.max_fee_per_gas, self.policy.max_fee_per_gas).max(needed);
        Ok(Fees {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip.min(max_fee),
        })
    }

    /// The base fee of the block being built, from the fee history's last entry.
    async fn next_base_fee(&self, call: &'static str) -> Result<u128, ClientError> {
        let history = self
            .provider
            .get_fee_history(1, BlockNumberOrTag::Latest, &[])
            .await
            .map_err(|e| rpc(call, e))?;
        Ok(history.latest_block_base_fee().unwrap_or_default())
    }

    async fn check_funds(
        &self,
        call: &'static str,
        request: &TransactionRequest,
        fees: Fees,
    ) -> Result<(), ClientError> {
        let balance = self.balance().await?;
        let needed = max_cost(request, fees);
        if balance < needed {
            LaneStats::count(&self.stats.insufficient_funds);
            return Err(ClientError::InsufficientFunds {
                call,
                shortfall: Box::new(FundsShortfall {
                    account: self.sender,
                    balance,
                    needed,
                }),
            });
        }
        Ok(())
    }

    /// The error for a transaction the node refused at broadcast.
    async fn refused(
        &self,
        call: &'static str,
        request: &TransactionRequest,
        fees: Fees,
        reason: String,
    ) -> ClientError {
        if reason.to_ascii_lowercase().contains("insufficient funds") {
            LaneStats::count(&self.stats.insufficient_funds);
            return ClientError::InsufficientFunds {
                call,
                shortfall: Box::new(FundsShortfall {
                    account: self.sender,
                    balance: self.balance().await.unwrap_or_default(),
                    needed: max_cost(request, fees),
                }),
            };
        }
        ClientError::Refused { call, reason }
    }

    async fn sign(
        &self,
        purpose: &str,
        request: &TransactionRequest,
        nonce: u64,
        attempt: u32,
        fees: Fees,
    ) -> Result<SentTx, ClientError> {
        let request = request
            .clone()
            .with_from(self.sender)
            .with_nonce(nonce)
            .with_chain_id(self.chain_id)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope: TxEnvelope =
            request
                .build(&self.wallet)
                .await
                .map_err(|error| ClientError::InvalidInput {
                    field: "transaction",
                    reason: format!("{purpose}: cannot be signed: {error}"),
                })?;
        Ok(SentTx {
            nonce,
            attempt,
            tx_hash: *envelope.tx_hash(),
            raw: envelope.encoded_2718().into(),
            purpose: purpose.to_owned(),
            fees,
            sent_at: unix_now(),
        })
    }

    async fn broadcast(&self, call: &'static str, sent: &SentTx) -> Result<Broadcast, ClientError> {
        match self.provider.send_raw_transaction(&sent.raw).await {
            Ok(_) => Ok(Broadcast::Accepted),
            Err(error) => match error.as_error_resp() {
                Some(payload) => {
                    let message = payload.message.to_string();
                    let lower = message.to_ascii_lowercase();
                    // Already in the pool (a re-broadcast) counts as accepted.
                    if lower.contains("already known") || lower.contains("already imported") {
                        Ok(Broadcast::Accepted)
                    } else {
                        Ok(Broadcast::Refused(message))
                    }
                }
                None => Err(rpc(call, error)),
            },
        }
    }

    /// Settles every journaled nonce left unsettled, oldest first.
    async fn settle_unsettled(&self, call: &'static str) -> Result<usize, ClientError> {
        let unsettled = self.journal.unsettled().await.map_err(journal)?;
        let mut by_nonce: Vec<Vec<SentTx>> = Vec::new();
        for sent in unsettled {
            match by_nonce.last_mut() {
                Some(group) if group.first().map(|first| first.nonce) == Some(sent.nonce) => {
                    group.push(sent);
                }
                _ => by_nonce.push(vec![sent]),
            }
        }
        let count = by_nonce.len();
        for attempts in by_nonce {
            let nonce = attempts.first().map(|first| first.nonce);
            info!(
                call,
                ?nonce,
                attempts = attempts.len(),
                "settling a transaction sent before"
            );
            match self.await_nonce(call, None, attempts).await {
                // What the earlier call meant to do is done (or failed) on chain either way;
                // its caller re-reads the chain before doing it again.
                Ok(_) | Err(ClientError::NonceTaken { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(count)
    }

    /// Waits until one of `attempts` (all for one nonce, oldest first) is mined, replacing a
    /// stuck one and re-broadcasting a dropped one.
    async fn await_nonce(
        &self,
        call: &'static str,
        request: Option<&TransactionRequest>,
        mut attempts: Vec<SentTx>,
    ) -> Result<TransactionReceipt, ClientError> {
        let Some(first) = attempts.first() else {
            return Err(ClientError::InvalidInput {
                field: "attempts",
                reason: format!("{call}: no transaction to wait for"),
            });
        };
        let nonce = first.nonce;
        let started = Instant::now();
        let mut last_sent = Instant::now();
        let mut cap_reported = false;
        loop {
            if let Some(receipt) = self.mined(call, &attempts).await? {
                self.journal
                    .settle(nonce, Settlement::Mined(receipt.transaction_hash))
                    .await
                    .map_err(journal)?;
                return Ok(receipt);
            }
            let used = self
                .provider
                .get_transaction_count(self.sender)
                .latest()
                .await
                .map_err(|e| rpc(call, e))?;
            if used > nonce {
                // Mined between the two reads, or taken by someone else: look once more.
                if let Some(receipt) = self.mined(call, &attempts).await? {
                    self.journal
                        .settle(nonce, Settlement::Mined(receipt.transaction_hash))
                        .await
                        .map_err(journal)?;
                    return Ok(receipt);
                }
                self.journal
                    .settle(nonce, Settlement::Taken)
                    .await
                    .map_err(journal)?;
                return Err(ClientError::NonceTaken {
                    call,
                    nonce,
                    account: self.sender,
                });
            }
            if used < nonce {
                // Our nonce cannot be mined while one below it is missing: a reorg took a
                // transaction of ours seen mined off the chain.
                self.resend_reorged(call, used, nonce).await?;
            }
            let latest = attempts.last().cloned().ok_or(ClientError::InvalidInput {
                field: "attempts",
                reason: format!("{call}: no transaction to wait for"),
            })?;
            if !self.known_to_node(call, &attempts).await? {
                warn!(call, nonce, tx = %latest.tx_hash, "the node dropped the transaction; sending it again");
                if let Broadcast::Refused(reason) = self.broadcast(call, &latest).await? {
                    warn!(call, nonce, %reason, "the node refused the re-broadcast");
                } else {
                    LaneStats::count(&self.stats.resent);
                }
            }
            if last_sent.elapsed() >= self.policy.stuck_after {
                match self.replace(call, request, &latest).await? {
                    Some(replacement) => {
                        attempts.push(replacement);
                        last_sent = Instant::now();
                    }
                    None if !cap_reported => {
                        warn!(
                            call,
                            nonce,
                            cap = ?self.policy.max_fee_per_gas,
                            setting = self.policy.cap_setting,
                            "the transaction is stuck and the fee cap leaves no room to replace it"
                        );
                        cap_reported = true;
                    }
                    None => {}
                }
            }
            if started.elapsed() >= self.policy.give_up_after {
                return Err(ClientError::StillPending {
                    call,
                    nonce,
                    tx_hash: latest.tx_hash,
                    waited_secs: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(self.policy.poll_interval).await;
        }
    }

    /// The receipt of whichever attempt was mined, if one was.
    async fn mined(
        &self,
        call: &'static str,
        attempts: &[SentTx],
    ) -> Result<Option<TransactionReceipt>, ClientError> {
        for sent in attempts.iter().rev() {
            let receipt = self
                .provider
                .get_transaction_receipt(sent.tx_hash)
                .await
                .map_err(|e| rpc(call, e))?;
            if receipt.is_some() {
                return Ok(receipt);
            }
        }
        Ok(None)
    }

    /// Whether the node still holds any of the attempts.
    async fn known_to_node(
        &self,
        call: &'static str,
        attempts: &[SentTx],
    ) -> Result<bool, ClientError> {
        for sent in attempts.iter().rev() {
            let known = self
                .provider
                .get_transaction_by_hash(sent.tx_hash)
                .await
                .map_err(|e| rpc(call, e))?;
            if known.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Signs, journals and broadcasts a replacement of `stuck` with bumped fees; `None` when
    /// the caps leave no room or the node refuses it (the stuck one stays in flight).
    async fn replace(
        &self,
        call: &'static str,
        request: Option<&TransactionRequest>,
        stuck: &SentTx,
    ) -> Result<Option<SentTx>, ClientError> {
        let fresh = match self.fees(call).await {
            Ok(fresh) => fresh,
            // The network needs more than the cap: offer the cap itself, if that is a bump.
            Err(ClientError::FeeCapExceeded { fee, .. }) => Fees {
                max_fee_per_gas: fee.cap.wei(),
                max_priority_fee_per_gas: stuck.fees.max_priority_fee_per_gas,
            },
            Err(error) => return Err(error),
        };
        let Some(fees) = bumped_fees(stuck.fees, fresh, &self.policy) else {
            return Ok(None);
        };
        // After a restart the call itself is gone: the signed bytes still hold it.
        let request = match request {
            Some(request) => request.clone(),
            None => request_of(&stuck.raw)?,
        };
        let attempt = stuck.attempt.saturating_add(1);
        let replacement = self
            .sign(&stuck.purpose, &request, stuck.nonce, attempt, fees)
            .await?;
        self.journal.record(&replacement).await.map_err(journal)?;
        match self.broadcast(call, &replacement).await? {
            Broadcast::Accepted => {
                LaneStats::count(&self.stats.replaced);
                info!(
                    call,
                    nonce = stuck.nonce,
                    stuck = %stuck.tx_hash,
                    replacement = %replacement.tx_hash,
                    max_fee = fees.max_fee_per_gas,
                    "replaced a stuck transaction with higher fees"
                );
                Ok(Some(replacement))
            }
            Broadcast::Refused(reason) => {
                warn!(call, nonce = stuck.nonce, %reason, "the node refused the replacement");
                self.journal
                    .reject(replacement.tx_hash)
                    .await
                    .map_err(journal)?;
                Ok(None)
            }
        }
    }
}

/// The call a signed transaction makes (to, data, value, gas), to sign it again with new fees.
fn request_of(raw: &Bytes) -> Result<TransactionRequest, ClientError> {
    use alloy::consensus::Transaction as _;
    use alloy::eips::eip2718::Decodable2718 as _;
    let envelope =
        TxEnvelope::decode_2718(&mut raw.as_ref()).map_err(|error| ClientError::InvalidInput {
            field: "journal raw transaction",
            reason: format!("cannot be decoded: {error}"),
        })?;
    let mut request = TransactionRequest::default()
        .with_input(envelope.input().clone())
        .with_value(envelope.value())
        .with_gas_limit(envelope.gas_limit());
    if let Some(to) = envelope.to() {
        request = request.with_to(to);
    }
    Ok(request)
}

/// The most the transaction can cost: gas limit times max fee, plus the value.
fn max_cost(request: &TransactionRequest, fees: Fees) -> U256 {
    let gas = U256::from(request.gas.unwrap_or_default());
    let value = request.value.unwrap_or_default();
    gas.saturating_mul(U256::from(fees.max_fee_per_gas))
        .saturating_add(value)
}

fn rpc(call: &'static str, error: alloy::transports::TransportError) -> ClientError {
    ClientError::from_contract(call, error.into())
}

fn journal(error: JournalError) -> ClientError {
    ClientError::Journal(error)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gwei(text: &str) -> Gwei {
        text.parse().expect("gwei")
    }

    #[test]
    fn gwei_reads_decimals_exactly_and_refuses_what_is_not_an_amount() {
        assert_eq!(gwei("30").wei(), 30_000_000_000);
        assert_eq!(gwei("0.05").wei(), 50_000_000);
        assert_eq!(gwei(".5").wei(), 500_000_000);
        assert_eq!(gwei("0.000000001").wei(), 1);
        assert_eq!(gwei("0.05").to_string(), "0.05");
        assert_eq!(gwei("12").to_string(), "12");
        for bad in ["", ".", "-1", "1e9", "0.0000000001", "abc", "1.2.3"] {
            assert!(bad.parse::<Gwei>().is_err(), "{bad:?} was accepted");
        }
        let error = "-1".parse::<Gwei>().expect_err("negative").to_string();
        assert!(error.contains("`-1`"), "{error}");
    }

    #[test]
    fn gwei_deserializes_from_integers_floats_and_strings() {
        #[derive(serde::Deserialize)]
        struct Holder {
            fee: Gwei,
        }
        for (text, wei) in [
            (r#"{"fee": 30}"#, 30_000_000_000u128),
            (r#"{"fee": 0.05}"#, 50_000_000),
            (r#"{"fee": "1.5"}"#, 1_500_000_000),
        ] {
            let holder: Holder = serde_json::from_str(text).expect(text);
            assert_eq!(holder.fee.wei(), wei, "{text}");
        }
        assert!(serde_json::from_str::<Holder>(r#"{"fee": -2}"#).is_err());
    }

    fn fees(max_fee: u128, tip: u128) -> Fees {
        Fees {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
        }
    }

    #[test]
    fn a_bump_raises_both_fees_by_at_least_an_eighth() {
        let policy = FeePolicy::default();
        let old = fees(1_000, 100);
        let bumped = bumped_fees(old, fees(500, 10), &policy).expect("room");
        assert_eq!(bumped, fees(1_125, 113));
        // A node now asking for more than the bump gets what it asks.
        let bumped = bumped_fees(old, fees(5_000, 400), &policy).expect("room");
        assert_eq!(bumped, fees(5_000, 400));
        // Zero tips still rise.
        let bumped = bumped_fees(fees(8, 0), fees(0, 0), &policy).expect("room");
        assert_eq!(bumped, fees(9, 1));
    }

    #[test]
    fn a_bump_stays_within_the_caps_or_does_not_happen() {
        let policy = FeePolicy {
            max_fee_per_gas: Some(Gwei::from_wei(1_200)),
            max_priority_fee_per_gas: Some(Gwei::from_wei(150)),
            ..FeePolicy::default()
        };
        let bumped = bumped_fees(fees(1_000, 100), fees(9_000, 900), &policy).expect("room");
        assert_eq!(bumped, fees(1_200, 150));
        // 1_100 * 1.125 = 1_237.5 > 1_200: a replacement the node would refuse.
        assert_eq!(bumped_fees(fees(1_100, 100), fees(0, 0), &policy), None);
        // The tip cap leaves no room either.
        assert_eq!(bumped_fees(fees(1_000, 140), fees(0, 0), &policy), None);
    }

    #[tokio::test]
    async fn the_memory_journal_settles_every_attempt_of_a_nonce() {
        let journal = MemoryJournal::default();
        let sent = |nonce, attempt, byte| SentTx {
            nonce,
            attempt,
            tx_hash: B256::repeat_byte(byte),
            raw: Bytes::new(),
            purpose: "test".into(),
            fees: fees(1, 1),
            sent_at: 0,
        };
        journal.record(&sent(4, 1, 2)).await.expect("record");
        journal.record(&sent(4, 0, 1)).await.expect("record");
        journal.record(&sent(5, 0, 3)).await.expect("record");
        let order: Vec<_> = journal
            .unsettled()
            .await
            .expect("read")
            .iter()
            .map(|s| (s.nonce, s.attempt))
            .collect();
        assert_eq!(order, [(4, 0), (4, 1), (5, 0)]);
        journal
            .settle(4, Settlement::Mined(B256::repeat_byte(2)))
            .await
            .expect("settle");
        journal.reject(B256::repeat_byte(3)).await.expect("reject");
        assert!(journal.unsettled().await.expect("read").is_empty());
        assert_eq!(journal.last_mined_nonce().await.expect("read"), Some(4));
    }
}
