//! `tenant update`: a new manifest for a running lease, keeping the lease, its volumes and
//! its URLs. The manifest must fit what the lease bought; that is checked here before any
//! transaction, and again by the provider.

use std::path::Path;
use std::time::Duration;

use alloy::primitives::B256;
use leasehold_contracts::{LeaseInfo, OrderSpec};
use serde_json::json;
use tokio::time::Instant;

use crate::chain::Chain;
use crate::commands::{Ctx, validate};
use crate::error::{CliError, CliResult, Context as _, ExitKind};
use crate::gateway;
use crate::output::emit;
use crate::records;
use crate::wallet;

/// How long to wait for the provider to run the new revision.
const ROLL_TIMEOUT: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_secs(1);

/// The group of `sdl` the lease runs, provided the new manifest fits what the lease bought:
/// the same group count as the deployment (`groups_before`, when known), the same replica
/// count, and cpu, memory, storage and GPUs within the order.
pub fn fitting_group(
    sdl: &leasehold_manifests::Sdl,
    bought: &OrderSpec,
    groups_before: Option<usize>,
) -> CliResult<String> {
    let groups = sdl.groups();
    if let Some(before) = groups_before
        && before != groups.len()
    {
        return Err(CliError::failed(
            leasehold_contracts::LeaseFitError::GroupCount {
                wanted: groups.len(),
                bought: before,
            },
        ));
    }
    let group = groups
        .iter()
        .find(|group| leasehold_contracts::group_name_key(&group.name) == bought.group_name)
        .ok_or_else(|| {
            CliError::failed(format!(
                "no group of the manifest is the lease's group (the order names group key {}); the manifest has: {}",
                bought.group_name,
                groups
                    .iter()
                    .map(|group| format!("`{}`", group.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let wanted = leasehold_contracts::order_spec_for_group(group)
        .map_err(|error| CliError::failed(error.to_string()))?;
    leasehold_contracts::check_within_lease(&group.name, &wanted, bought)
        .map_err(CliError::failed)?;
    Ok(group.name.clone())
}

fn refuse_unless_updatable(
    lease_id: u64,
    lease: &LeaseInfo,
    me: alloy::primitives::Address,
) -> CliResult<()> {
    if !lease.active {
        return Err(CliError::failed(format!(
            "lease {lease_id} is closed; only an active lease can be updated"
        )));
    }
    if lease.tenant != me {
        return Err(CliError::failed(format!(
            "{me} is not the tenant of lease {lease_id} (its tenant is {}); only the tenant can update it",
            lease.tenant
        )));
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, lease_id: u64, file: &Path) -> CliResult<u8> {
    let sdl = validate::load_valid(file)?;
    let manifest = sdl.manifest();
    let manifest_hash = B256::from(manifest.hash());
    let signer = wallet::signer(&ctx.settings)?;
    let chain = Chain::connect(&ctx.settings, Some(signer.clone())).await?;
    let lease = chain.client.lease(lease_id).await?;
    refuse_unless_updatable(lease_id, &lease, chain.sender())?;
    let order = chain.client.order(lease_id).await?;
    let dir = ctx.settings.deployments_dir();
    let mut record = records::find(&dir, chain.deployment.marketplace, lease_id);
    let group = fitting_group(
        &sdl,
        &order.bought(),
        record.as_ref().map(|r| r.groups.len()),
    )
    .map_err(|error| error.context(format!("{} does not fit lease {lease_id}", file.display())))?;

    // Sending the manifest the chain already names again is a retry: no transaction.
    let revision = if lease.manifest_hash == manifest_hash {
        lease.revision
    } else {
        chain
            .client
            .update_manifest(lease_id, manifest_hash)
            .await
            .ctx(format!("recording the new manifest of lease {lease_id}"))?
            .revision
    };
    if let Some(record) = record.as_mut() {
        record.manifest_path = std::fs::canonicalize(file).unwrap_or(file.to_path_buf());
        record.manifest_hash = manifest.hash_hex();
        record.save(&dir)?;
    }

    let provider_gateway = gateway::Gateway::of(&chain.client.provider_info(lease.provider).await?);
    let mut client = gateway::connect(&provider_gateway, signer).await?;
    match tokio::time::timeout(
        gateway::CALL_TIMEOUT,
        client.send_manifest(lease_id, manifest.canonical_json().into_bytes()),
    )
    .await
    {
        Ok(sent) => sent.map_err(CliError::from).map_err(|error| {
            error.context(format!(
                "provider {} refused the manifest",
                provider_gateway.endpoint
            ))
        })?,
        Err(_) => return Err(CliError::msg(ExitKind::Network, "SendManifest timed out")),
    }
    let deadline = Instant::now() + ROLL_TIMEOUT;
    let status = loop {
        let status = gateway::status(&mut client, lease_id).await?;
        if status.revision == revision && gateway::is_running(&status) {
            break status;
        }
        if Instant::now() >= deadline {
            return Err(CliError::msg(
                ExitKind::Timeout,
                format!(
                    "lease {lease_id} did not run revision {revision} within {}s (the provider reports revision {}, {})",
                    ROLL_TIMEOUT.as_secs(),
                    status.revision,
                    status.state
                ),
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    let uris = gateway::uris(&status);
    let document = json!({
        "lease_id": lease_id,
        "group": group,
        "revision": revision,
        "manifest_hash": manifest_hash,
        "uris": uris,
        "workload": gateway::status_json(&status),
    });
    emit(ctx.output, &document, || {
        format!(
            "lease {lease_id} (group `{group}`) runs revision {revision} (manifest {manifest_hash})\n{}",
            uris.iter()
                .map(|uri| format!("  {uri}\n"))
                .collect::<String>()
        )
    });
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = include_str!("../../../manifests/examples/hello.yaml");

    fn bought_by_hello() -> OrderSpec {
        let sdl = leasehold_manifests::parse(HELLO).expect("hello parses");
        leasehold_contracts::order_spec_for_group(&sdl.groups()[0]).expect("order spec")
    }

    #[test]
    fn a_new_image_fits_and_more_memory_is_refused_naming_the_field() {
        let bought = bought_by_hello();
        let new_image = HELLO.replace("leasehold/busybox:test", "leasehold/busybox:v2");
        let sdl = leasehold_manifests::parse(&new_image).expect("parses");
        assert_eq!(
            fitting_group(&sdl, &bought, Some(1)).expect("fits"),
            "anywhere"
        );

        let bigger = HELLO.replace("size: 64Mi", "size: 1Gi");
        let sdl = leasehold_manifests::parse(&bigger).expect("parses");
        let error = fitting_group(&sdl, &bought, None).unwrap_err();
        assert_eq!(
            format!("{:#}", error.error),
            "group `anywhere`: memory (MiB) 1024 exceeds the 64 the lease bought"
        );
        let error = fitting_group(&sdl, &bought, Some(2)).unwrap_err();
        assert!(
            format!("{:#}", error.error).contains("keeps the groups"),
            "{:#}",
            error.error
        );
    }
}
