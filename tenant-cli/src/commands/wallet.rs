//! `tenant wallet new|import|address|balance|faucet|claim`.

use alloy::primitives::{Address, U256};
use serde_json::json;

use crate::chain::Chain;
use crate::cli::WalletCommand;
use crate::commands::Ctx;
use crate::error::{CliResult, Context as _};
use crate::output::emit;
use crate::wallet;

/// 1000 tokens of 6 decimals.
const DEFAULT_FAUCET_AMOUNT: u64 = 1_000_000_000;

pub async fn run(ctx: &Ctx, command: WalletCommand) -> CliResult<u8> {
    let settings = &ctx.settings;
    match command {
        WalletCommand::New => {
            let password = wallet::password(&settings.password, true)?;
            let signer = wallet::new_keystore(&settings.keystore, &password)?;
            let keystore = settings.keystore.display().to_string();
            emit(
                ctx.output,
                &json!({ "address": signer.address(), "keystore": keystore }),
                || format!("created {}\nkeystore: {keystore}\n", signer.address()),
            );
        }
        WalletCommand::Import { private_key_file } => {
            let key = wallet::read_private_key(private_key_file.as_deref(), settings)?;
            let password = wallet::password(&settings.password, true)?;
            wallet::import_keystore(&settings.keystore, &key, &password)?;
            let keystore = settings.keystore.display().to_string();
            emit(
                ctx.output,
                &json!({ "address": key.address(), "keystore": keystore }),
                || format!("imported {}\nkeystore: {keystore}\n", key.address()),
            );
        }
        WalletCommand::Address => {
            let signer = wallet::signer(settings)?;
            emit(ctx.output, &json!({ "address": signer.address() }), || {
                format!("{}\n", signer.address())
            });
        }
        WalletCommand::Balance { address } => {
            let (chain, owner) = chain_and_owner(ctx, address).await?;
            let eth = chain.eth_balance(owner).await?;
            let token = chain
                .token_balance(owner)
                .await
                .ctx("reading the token balance")?;
            emit(
                ctx.output,
                &json!({
                    "address": owner,
                    "eth_wei": eth.to_string(),
                    "token": chain.deployment.token,
                    "token_balance": token.to_string(),
                }),
                || {
                    format!(
                        "address  {owner}\neth      {} ({eth} wei)\ntoken    {} ({token} base units of {})\n",
                        decimal(eth, 18),
                        decimal(token, 6),
                        chain.deployment.token
                    )
                },
            );
        }
        WalletCommand::Faucet { amount, to } => {
            let signer = wallet::signer(settings)?;
            let recipient = to.unwrap_or(signer.address());
            let chain = Chain::connect(settings, Some(signer)).await?;
            let amount = amount.unwrap_or(U256::from(DEFAULT_FAUCET_AMOUNT));
            leasehold_contracts::fund_with_faucet(
                chain.client.provider(),
                chain.deployment.token,
                chain.sender(),
                &[recipient],
                amount,
            )
            .await
            .ctx("faucet (only the devnet test token has one)")?;
            let balance = chain.token_balance(recipient).await?;
            emit(
                ctx.output,
                &json!({
                    "to": recipient,
                    "minted": amount.to_string(),
                    "token_balance": balance.to_string(),
                }),
                || format!("minted {amount} to {recipient}; balance now {balance}\n"),
            );
        }
        WalletCommand::Claim { to, release_bonds } => {
            let signer = wallet::signer(settings)?;
            let me = signer.address();
            let recipient = to.unwrap_or(me);
            let chain = Chain::connect(settings, Some(signer)).await?;
            let client = &chain.client;
            let mut resolved = Vec::new();
            for order_id in release_bonds {
                let bid_ids: Vec<u64> = client
                    .locked_bonds(order_id)
                    .await?
                    .iter()
                    .map(|bond| bond.bid_id)
                    .collect();
                if !bid_ids.is_empty() {
                    resolved.extend(
                        client
                            .release_bonds(order_id, &bid_ids)
                            .await
                            .ctx(format!("releasing the bonds of order {order_id}"))?,
                    );
                }
            }
            let stake_token = client.stake_token().await?;
            let (market_credit, _) = client.claimable(chain.deployment.token, me).await?;
            let (_, registry_credit) = client.claimable(stake_token, me).await?;
            let mut claimed_market = U256::ZERO;
            let mut claimed_registry = U256::ZERO;
            if !market_credit.is_zero() {
                claimed_market = client
                    .claim(chain.deployment.token, recipient, false)
                    .await
                    .ctx("claiming from the marketplace")?;
            }
            if !registry_credit.is_zero() {
                claimed_registry = client
                    .claim(stake_token, recipient, true)
                    .await
                    .ctx("claiming from the registry")?;
            }
            let forfeited: U256 = resolved
                .iter()
                .filter(|bond| bond.forfeited_to == Some(me))
                .map(|bond| bond.amount)
                .sum();
            emit(
                ctx.output,
                &json!({
                    "to": recipient,
                    "bonds_resolved": resolved,
                    "bonds_forfeited_to_you": forfeited.to_string(),
                    "claimed_from_marketplace": claimed_market.to_string(),
                    "claimed_from_registry": claimed_registry.to_string(),
                }),
                || {
                    let mut text = String::new();
                    if !resolved.is_empty() {
                        text.push_str(&format!(
                            "resolved {} bid bond(s); {forfeited} forfeited to you\n",
                            resolved.len()
                        ));
                    }
                    if claimed_market.is_zero() && claimed_registry.is_zero() {
                        text.push_str("nothing to claim\n");
                    } else {
                        text.push_str(&format!(
                            "claimed {claimed_market} from the marketplace and {claimed_registry} from the registry (bonds, slashes) to {recipient}\n"
                        ));
                    }
                    text
                },
            );
        }
    }
    Ok(0)
}

/// The chain plus the address to inspect: the given one (no key needed) or the wallet's.
async fn chain_and_owner(ctx: &Ctx, address: Option<Address>) -> CliResult<(Chain, Address)> {
    match address {
        Some(owner) => Ok((Chain::connect(&ctx.settings, None).await?, owner)),
        None => {
            let signer = wallet::signer(&ctx.settings)?;
            let owner = signer.address();
            Ok((Chain::connect(&ctx.settings, Some(signer)).await?, owner))
        }
    }
}

/// `amount` with `decimals` decimals, without trailing zeros: 1500000 (6) -> "1.5".
pub fn decimal(amount: U256, decimals: u8) -> String {
    let scale = U256::from(10u64).pow(U256::from(decimals));
    let whole = amount / scale;
    let fraction = amount % scale;
    if fraction.is_zero() {
        return whole.to_string();
    }
    let digits = format!("{fraction:0>width$}", width = usize::from(decimals));
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_trim_trailing_zeros() {
        assert_eq!(decimal(U256::from(1_500_000u64), 6), "1.5");
        assert_eq!(decimal(U256::from(42u64), 6), "0.000042");
        assert_eq!(decimal(U256::from(3_000_000u64), 6), "3");
    }
}
