//! Typed client errors; contract reverts are decoded against every Leasehold ABI into a readable
//! `Name(arg: value, ...)` form.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use alloy::dyn_abi::{DynSolValue, ErrorExt};
use alloy::json_abi::JsonAbi;
use alloy::primitives::{Bytes, Selector, TxHash};
use alloy::providers::PendingTransactionError;
use alloy::sol_types::{Panic, Revert, SolError, SolInterface};

use crate::bindings::{Marketplace, ProviderRegistry, TestToken};

/// A decoded revert: the custom error's name and its named, formatted arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevertReason {
    /// Custom error name (`ProviderLacksCapacity`), `Error` for `require` strings, `Panic` for
    /// assertion failures, or `unknown` when the selector matches no known ABI.
    pub name: String,
    pub args: Vec<(String, String)>,
    pub data: Bytes,
}

impl RevertReason {
    /// Decodes revert data against the Marketplace, ProviderRegistry and TestToken errors (a
    /// Marketplace call can revert with the registry's or the token's errors) and the built-in
    /// `Error(string)` / `Panic(uint256)`.
    pub fn decode(data: &Bytes) -> Self {
        let known = data
            .get(..4)
            .and_then(|selector| known_errors().get(&Selector::from_slice(selector)));
        if let Some(error) = known
            && let Ok(decoded) = error.decode_error(data)
        {
            let args = error
                .inputs
                .iter()
                .zip(decoded.body.iter())
                .enumerate()
                .map(|(i, (param, value))| {
                    let name = if param.name.is_empty() {
                        format!("arg{i}")
                    } else {
                        param.name.clone()
                    };
                    (name, format_value(value))
                })
                .collect();
            return Self {
                name: error.name.clone(),
                args,
                data: data.clone(),
            };
        }
        if let Ok(revert) = Revert::abi_decode(data) {
            return Self {
                name: "Error".to_owned(),
                args: vec![("message".to_owned(), format!("{:?}", revert.reason))],
                data: data.clone(),
            };
        }
        if let Ok(panic) = Panic::abi_decode(data) {
            let meaning = panic
                .kind()
                .map_or_else(|| "unknown panic code".to_owned(), |kind| kind.to_string());
            return Self {
                name: "Panic".to_owned(),
                args: vec![
                    ("code".to_owned(), panic.code.to_string()),
                    ("meaning".to_owned(), meaning),
                ],
                data: data.clone(),
            };
        }
        Self {
            name: "unknown".to_owned(),
            args: vec![("data".to_owned(), data.to_string())],
            data: data.clone(),
        }
    }

    /// What the user can do about this revert, for the errors a user can act on.
    pub fn advice(&self) -> Option<&'static str> {
        Some(match self.name.as_str() {
            "LeaseNotActive" => {
                "the lease is already closed; `tenant leases` lists the active ones"
            }
            "LeaseNotFound" | "OrderNotFound" | "BidNotFound" => {
                "no such id on this deployment; check the id and the network you are connected to"
            }
            "OrderNotOpen" => "the order was already matched, cancelled or closed",
            "NotTenant" => "only the order's tenant may do this; use the key that created it",
            "NotProvider" => "only the lease's provider may do this; use the provider's key",
            "LeaseSolvent" => {
                "the lease is still funded: only its tenant or provider may close it now"
            }
            "BidWindowOpen" => "the bid window is still open; wait for it to end, then settle",
            "NoEligibleBid" => "no bid can be matched; wait for bids or cancel the order",
            "ProviderLacksCapacity" | "InsufficientCapacity" => {
                "the provider has no room left for this order; pick another bid"
            }
            "ProviderNotActive" | "NotActive" => {
                "the provider is not registered and active; run `provider register` first"
            }
            "AlreadyRegistered" => "this account is already registered as a provider",
            "ProviderLacksAttribute" | "ProviderLacksGpuModel" => {
                "the provider's registration lacks what the order requires; update the registration"
            }
            "ProviderNotAudited" => {
                "the order's signedBy auditors do not attest the provider's required attributes; \
                 ask an auditor to run `tenant audit attest`"
            }
            "ProviderStakeBelowMinimum" => {
                "the provider's stake was slashed below the minimum: top it up with \
                 `provider add-stake` before it can bid or win again"
            }
            "FreeStakeBelowBond" => {
                "every bid locks a bond from the stake and the free stake does not cover one more: \
                 release the bonds of ended orders (`provider release-bonds`) or `provider add-stake`"
            }
            "BondsLocked" => {
                "bids' bonds still hold part of the stake: release them once their orders ended \
                 (`provider release-bonds`), then withdraw"
            }
            "OrderNotEnded" => "the order is still open: its bids' bonds are resolved once it ends",
            "AlreadyAttested" => "this auditor already attests that attribute for the provider",
            "NotAttested" => "this auditor does not attest that attribute for the provider",
            "PriceAboveMax" => "the bid is above the order's maximum price",
            "AlreadyBid" => "this provider already bid on the order (one bid per provider)",
            "TooManyBids" => "the order holds the maximum number of bids",
            "HasActiveLeases" => "close or let the provider's active leases end first",
            "StillUnbonding" => "the stake can be withdrawn only after the unbonding period",
            "ERC20InsufficientBalance" => {
                "the account holds too few tokens; fund it (devnet: `tenant wallet faucet`)"
            }
            "ERC20InsufficientAllowance" => "the token allowance is too low; approve more",
            _ => return None,
        })
    }

    /// The revert decoded into one of the generated error enums, e.g.
    /// `reason.typed::<Marketplace::MarketplaceErrors>()`.
    pub fn typed<E: SolInterface>(&self) -> Option<E> {
        E::abi_decode(&self.data).ok()
    }
}

impl fmt::Display for RevertReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name)?;
        for (i, (name, value)) in self.args.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}: {value}")?;
        }
        f.write_str(")")
    }
}

fn known_errors() -> &'static HashMap<Selector, alloy::json_abi::Error> {
    static ERRORS: OnceLock<HashMap<Selector, alloy::json_abi::Error>> = OnceLock::new();
    ERRORS.get_or_init(|| {
        let abis: [JsonAbi; 3] = [
            Marketplace::abi::contract(),
            ProviderRegistry::abi::contract(),
            TestToken::abi::contract(),
        ];
        abis.iter()
            .flat_map(|abi| abi.errors())
            .map(|error| (error.selector(), error.clone()))
            .collect()
    })
}

fn format_value(value: &DynSolValue) -> String {
    match value {
        DynSolValue::Address(address) => address.to_checksum(None),
        DynSolValue::Uint(v, _) => v.to_string(),
        DynSolValue::Int(v, _) => v.to_string(),
        DynSolValue::Bool(v) => v.to_string(),
        DynSolValue::String(v) => format!("{v:?}"),
        DynSolValue::FixedBytes(word, size) => {
            format!(
                "0x{}",
                alloy::hex::encode(word.get(..*size).unwrap_or_default())
            )
        }
        DynSolValue::Bytes(bytes) => format!("0x{}", alloy::hex::encode(bytes)),
        DynSolValue::Array(items) | DynSolValue::FixedArray(items) => {
            let inner: Vec<String> = items.iter().map(format_value).collect();
            format!("[{}]", inner.join(", "))
        }
        DynSolValue::Tuple(items) => {
            let inner: Vec<String> = items.iter().map(format_value).collect();
            format!("({})", inner.join(", "))
        }
        other => format!("{other:?}"),
    }
}

/// `; <advice>` when there is something to say, else nothing.
fn advice_suffix(reason: &RevertReason) -> String {
    reason
        .advice()
        .map_or_else(String::new, |advice| format!("; {advice}"))
}

/// Why a mined transaction failed, as far as its replay tells.
fn mined_failure(reason: &Option<Box<RevertReason>>, gas_used: u64, gas_limit: u64) -> String {
    match reason {
        Some(reason) => format!("{reason}{}", advice_suffix(reason)),
        None if gas_used >= gas_limit => format!(
            "it ran out of gas (used all {gas_limit}); the state changed after the estimate, \
             so send it again"
        ),
        None => format!(
            "its replay succeeds (used {gas_used} of {gas_limit} gas), so the state changed \
             between estimate and mining; send it again"
        ),
    }
}

/// What an account holds against what a transaction may cost, in wei.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FundsShortfall {
    pub account: alloy::primitives::Address,
    pub balance: alloy::primitives::U256,
    pub needed: alloy::primitives::U256,
}

/// A fee cap against the fee the network needs, per gas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeeCapShortfall {
    pub cap: crate::txlane::Gwei,
    pub needed: crate::txlane::Gwei,
}

/// Everything a [`crate::MarketplaceClient`] call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The contract rejected the call (during gas estimation or `eth_call`).
    #[error("{call} reverted: {reason}{}", advice_suffix(.reason))]
    Reverted {
        call: &'static str,
        reason: RevertReason,
    },
    /// The transaction was mined but failed (it passed estimation, then the state changed).
    /// `reason` is the revert its replay at the parent block produced, when it did.
    #[error(
        "{call}: transaction {tx_hash} was mined but failed: {}",
        mined_failure(.reason, *.gas_used, *.gas_limit)
    )]
    TxFailed {
        call: &'static str,
        tx_hash: TxHash,
        reason: Option<Box<RevertReason>>,
        gas_used: u64,
        gas_limit: u64,
    },
    #[error("{call}: RPC error: {source}")]
    Rpc {
        call: &'static str,
        #[source]
        source: Box<alloy::contract::Error>,
    },
    /// An `eth_getLogs` history read failed even over a single block.
    #[error("{call}: {source}")]
    Logs {
        call: &'static str,
        #[source]
        source: crate::follower::SourceError,
    },
    #[error("{call}: waiting for the transaction: {source}")]
    Pending {
        call: &'static str,
        #[source]
        source: Box<PendingTransactionError>,
    },
    #[error("{call}: receipt of {tx_hash} lacks the {event} event")]
    MissingEvent {
        call: &'static str,
        event: &'static str,
        tx_hash: TxHash,
    },
    #[error("{call}: contract returned {field} = {value}, which does not fit")]
    OutOfRange {
        call: &'static str,
        field: &'static str,
        value: String,
    },
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },
    /// The network needs a higher fee per gas than the configured cap allows.
    #[error(
        "{call}: the network needs a max fee of {} gwei per gas (next base fee plus tip), \
         above the cap {setting} = {} gwei; raise {setting} or wait for fees to fall",
        .fee.needed, .fee.cap
    )]
    FeeCapExceeded {
        call: &'static str,
        setting: &'static str,
        fee: Box<FeeCapShortfall>,
    },
    /// The account cannot pay for the transaction's gas and value.
    #[error(
        "{call}: insufficient funds: account {} holds {} wei, the transaction may cost up to {} \
         wei (gas limit × max fee + value); fund it with the chain's native currency",
        .shortfall.account, .shortfall.balance, .shortfall.needed
    )]
    InsufficientFunds {
        call: &'static str,
        shortfall: Box<FundsShortfall>,
    },
    /// The node refused the signed transaction outright.
    #[error("{call}: the node refused the transaction: {reason}")]
    Refused { call: &'static str, reason: String },
    /// The nonce was used by a transaction this client did not sign.
    #[error(
        "{call}: nonce {nonce} of {account} was used by a transaction this client did not send \
         (does another process sign with the same key?)"
    )]
    NonceTaken {
        call: &'static str,
        nonce: u64,
        account: alloy::primitives::Address,
    },
    /// Not mined yet after waiting; it stays journaled and is settled before the next send.
    #[error(
        "{call}: transaction {tx_hash} (nonce {nonce}) not mined after {waited_secs} s; it stays \
         in flight and is settled before the next transaction"
    )]
    StillPending {
        call: &'static str,
        nonce: u64,
        tx_hash: TxHash,
        waited_secs: u64,
    },
    #[error(transparent)]
    Journal(#[from] crate::txlane::JournalError),
}

impl ClientError {
    /// Classifies an alloy contract error: revert data becomes [`ClientError::Reverted`].
    pub fn from_contract(call: &'static str, source: alloy::contract::Error) -> Self {
        match source.as_revert_data() {
            Some(data) => ClientError::Reverted {
                call,
                reason: RevertReason::decode(&data),
            },
            None => ClientError::Rpc {
                call,
                source: Box::new(source),
            },
        }
    }

    pub(crate) fn out_of_range(
        call: &'static str,
        field: &'static str,
        value: impl fmt::Display,
    ) -> Self {
        ClientError::OutOfRange {
            call,
            field,
            value: value.to_string(),
        }
    }

    /// The decoded revert, if the failure was one (at estimation, or replayed after mining).
    pub fn revert(&self) -> Option<&RevertReason> {
        match self {
            ClientError::Reverted { reason, .. } => Some(reason),
            ClientError::TxFailed {
                reason: Some(reason),
                ..
            } => Some(reason),
            _ => None,
        }
    }

    /// The custom error name of a revert (`"ProviderLacksCapacity"`), if the failure was one.
    pub fn revert_name(&self) -> Option<&str> {
        self.revert().map(|reason| reason.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{Address, U256, address};
    use alloy::sol_types::SolError;

    #[test]
    fn decodes_marketplace_error_with_named_arguments() {
        let provider = address!("0x00000000000000000000000000000000000000aa");
        let data: Bytes = Marketplace::ProviderLacksCapacity { provider }
            .abi_encode()
            .into();
        let reason = RevertReason::decode(&data);
        assert_eq!(reason.name, "ProviderLacksCapacity");
        assert_eq!(
            reason.to_string(),
            format!(
                "ProviderLacksCapacity(provider: {})",
                provider.to_checksum(None)
            )
        );
        assert!(matches!(
            reason.typed::<Marketplace::MarketplaceErrors>(),
            Some(Marketplace::MarketplaceErrors::ProviderLacksCapacity(_))
        ));
    }

    #[test]
    fn reverts_say_what_to_do() {
        let data: Bytes = Marketplace::LeaseNotActive {
            leaseId: U256::from(7),
        }
        .abi_encode()
        .into();
        let error = ClientError::Reverted {
            call: "closeLease",
            reason: RevertReason::decode(&data),
        };
        assert_eq!(
            error.to_string(),
            "closeLease reverted: LeaseNotActive(leaseId: 7); the lease is already closed; \
             `tenant leases` lists the active ones"
        );
        let unknown = RevertReason::decode(&Bytes::from_static(&[1, 2, 3, 4]));
        assert_eq!(unknown.advice(), None);
    }

    #[test]
    fn a_mined_failure_names_the_replayed_revert_or_the_gas() {
        let data: Bytes = Marketplace::OrderNotOpen {
            orderId: U256::from(3),
            status: 3,
        }
        .abi_encode()
        .into();
        let replayed = ClientError::TxFailed {
            call: "withdrawBid",
            tx_hash: TxHash::ZERO,
            reason: Some(Box::new(RevertReason::decode(&data))),
            gas_used: 30_000,
            gas_limit: 80_000,
        };
        let text = replayed.to_string();
        assert!(text.contains("was mined but failed: OrderNotOpen(orderId: 3, status: 3); the order was already matched"), "{text}");
        assert_eq!(replayed.revert_name(), Some("OrderNotOpen"));
        let out_of_gas = ClientError::TxFailed {
            call: "closeLease",
            tx_hash: TxHash::ZERO,
            reason: None,
            gas_used: 80_000,
            gas_limit: 80_000,
        };
        assert!(
            out_of_gas
                .to_string()
                .contains("ran out of gas (used all 80000)"),
            "{out_of_gas}"
        );
    }

    #[test]
    fn decodes_registry_and_token_errors_and_strings() {
        let data: Bytes = ProviderRegistry::StillUnbonding {
            provider: Address::ZERO,
            unbondingEnds: 99,
        }
        .abi_encode()
        .into();
        let reason = RevertReason::decode(&data);
        assert_eq!(reason.name, "StillUnbonding");
        assert_eq!(
            reason.args[1],
            ("unbondingEnds".to_owned(), "99".to_owned())
        );

        let data: Bytes = TestToken::ERC20InsufficientAllowance {
            spender: Address::ZERO,
            allowance: U256::from(1),
            needed: U256::from(5),
        }
        .abi_encode()
        .into();
        assert_eq!(
            RevertReason::decode(&data).to_string(),
            format!(
                "ERC20InsufficientAllowance(spender: {}, allowance: 1, needed: 5)",
                Address::ZERO.to_checksum(None)
            )
        );

        let data: Bytes = alloy::sol_types::Revert::from("nope").abi_encode().into();
        let reason = RevertReason::decode(&data);
        assert_eq!(reason.name, "Error");
        assert!(reason.to_string().contains("nope"), "{reason}");

        let data: Bytes = alloy::sol_types::Panic::from(0x11u64).abi_encode().into();
        let reason = RevertReason::decode(&data);
        assert_eq!(reason.name, "Panic");
        assert_eq!(reason.args[0], ("code".to_owned(), "17".to_owned()));

        let reason = RevertReason::decode(&Bytes::from_static(&[1, 2, 3, 4, 5]));
        assert_eq!(reason.name, "unknown");
    }
}
