//! `tenant audit attest|revoke|list`: the auditor side of Akash's `signedBy`.

use std::collections::HashMap;

use alloy::primitives::{Address, B256};
use leasehold_contracts::{Attestation, chain_key};
use serde::Serialize;

use crate::chain::Chain;
use crate::cli::AuditCommand;
use crate::commands::Ctx;
use crate::error::CliResult;
use crate::output::{emit, table};
use crate::wallet;

/// One attestation as printed: the attribute's name when known, else its key.
#[derive(Debug, Clone, Serialize)]
struct Listed {
    auditor: Address,
    provider: Address,
    attribute_key: B256,
    attribute: Option<String>,
}

pub async fn run(ctx: &Ctx, command: AuditCommand) -> CliResult<u8> {
    match command {
        AuditCommand::Attest {
            provider,
            attributes,
        } => change(ctx, provider, &attributes, true).await,
        AuditCommand::Revoke {
            provider,
            attributes,
        } => change(ctx, provider, &attributes, false).await,
        AuditCommand::List {
            auditor,
            provider,
            attributes,
        } => list(ctx, auditor, provider, &attributes).await,
    }
}

async fn change(
    ctx: &Ctx,
    provider: Address,
    attributes: &[String],
    attest: bool,
) -> CliResult<u8> {
    let signer = wallet::signer(&ctx.settings)?;
    let auditor = signer.address();
    let chain = Chain::connect(&ctx.settings, Some(signer)).await?;
    let keys: Vec<B256> = attributes.iter().map(|a| chain_key(a)).collect();
    if attest {
        chain.client.attest(provider, &keys).await?;
    } else {
        chain.client.revoke(provider, &keys).await?;
    }
    let verb = if attest { "attested" } else { "revoked" };
    emit(
        ctx.output,
        &serde_json::json!({
            "auditor": auditor,
            "provider": provider,
            "action": verb,
            "attributes": attributes,
        }),
        || {
            format!(
                "{auditor} {verb} for {provider}: {}\n",
                attributes.join(", ")
            )
        },
    );
    Ok(0)
}

async fn list(
    ctx: &Ctx,
    auditor: Option<Address>,
    provider: Option<Address>,
    names: &[String],
) -> CliResult<u8> {
    let chain = Chain::connect(&ctx.settings, None).await?;
    let names: HashMap<B256, &String> = names.iter().map(|n| (chain_key(n), n)).collect();
    let listed: Vec<Listed> = chain
        .client
        .attestations(auditor, provider)
        .await?
        .into_iter()
        .map(
            |Attestation {
                 auditor,
                 provider,
                 attribute,
             }| Listed {
                auditor,
                provider,
                attribute_key: attribute,
                attribute: names.get(&attribute).map(|name| (*name).clone()),
            },
        )
        .collect();
    emit(
        ctx.output,
        &serde_json::json!({ "attestations": listed }),
        || {
            if listed.is_empty() {
                return "no attestations\n".to_owned();
            }
            let mut rows = vec![
                ["AUDITOR", "PROVIDER", "ATTRIBUTE"]
                    .map(str::to_owned)
                    .to_vec(),
            ];
            for entry in &listed {
                rows.push(vec![
                    entry.auditor.to_string(),
                    entry.provider.to_string(),
                    entry
                        .attribute
                        .clone()
                        .unwrap_or_else(|| entry.attribute_key.to_string()),
                ]);
            }
            format!(
                "{}(attributes are keccak256 keys on chain; name them with --attribute key=value)\n",
                table(&rows)
            )
        },
    );
    Ok(0)
}
