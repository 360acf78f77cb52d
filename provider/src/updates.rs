//! Update in place: the tenant records a new manifest hash on chain
//! (`Marketplace.updateManifest`, event `ManifestUpdated`) and sends that manifest over the
//! gateway; the provider checks it against the chain's latest hash and against what the
//! lease bought, stores it, and rolls the services (volumes and host ports are kept by the
//! runtime).
//!
//! The announced revision is stored as pending as soon as the event is reconciled, and the
//! follower's cursor never passes an event whose work is unfinished, so a restart between
//! the event and the manifest loses nothing; the manifest itself is checked against the
//! chain when it arrives, so it may even come before the event is followed.

use alloy::primitives::B256;
use tracing::info;

use crate::daemon::{Core, DaemonError};
use crate::deployment::{lease_deployment, parse_manifest, update_group};
use crate::lease::ManifestHash;
use crate::leases::ManifestRejected;
use crate::store::LeaseRecord;

fn invalid(error: impl std::fmt::Display) -> ManifestRejected {
    ManifestRejected::Invalid(error.to_string())
}

impl Core {
    /// Reacts to `ManifestUpdated`: remembers the announced revision of one of our leases
    /// until its manifest arrives. Leases of other providers are ignored.
    pub async fn on_manifest_updated(
        &self,
        lease_id: u64,
        revision: u32,
        manifest_hash: B256,
    ) -> Result<(), DaemonError> {
        if self.store.find_lease(lease_id).await?.is_none() {
            return Ok(());
        }
        let hash = ManifestHash(manifest_hash.0);
        if self
            .store
            .note_pending_revision(lease_id, u64::from(revision), hash)
            .await?
        {
            self.store
                .record_history(
                    lease_id,
                    "manifest_update_announced",
                    &format!(
                        "revision {revision} ({hash}) recorded on chain; waiting for its manifest"
                    ),
                )
                .await?;
            info!(lease_id, revision, manifest = %hash, "manifest update announced");
        }
        Ok(())
    }

    /// A lease's first manifest may come after the tenant recorded updates on chain (the
    /// order then names the latest hash): the lease runs that revision, not 1.
    pub(crate) async fn record_revision_of_first_manifest(
        &self,
        lease_id: u64,
        hash: ManifestHash,
    ) -> Result<(), DaemonError> {
        let on_chain = self.chain.lease(lease_id).await?;
        if on_chain.revision > 1 && on_chain.manifest_hash.0 == hash.0 {
            self.store
                .record_applied_revision(lease_id, u64::from(on_chain.revision))
                .await?;
        }
        Ok(())
    }

    /// A manifest for a lease that already runs another one: accepted when its hash is the
    /// chain's latest for the lease and its group still fits what the lease bought.
    pub(crate) async fn accept_manifest_update(
        &self,
        record: LeaseRecord,
        manifest: &[u8],
        hash: ManifestHash,
    ) -> Result<LeaseRecord, ManifestRejected> {
        let lease_id = record.lease_id;
        let on_chain = self
            .chain
            .lease(lease_id)
            .await
            .map_err(DaemonError::from)?;
        if on_chain.manifest_hash.0 != hash.0 {
            return Err(ManifestRejected::HashMismatch {
                expected: on_chain.manifest_hash.to_string(),
                got: hash.to_string(),
            });
        }
        let text = std::str::from_utf8(manifest).map_err(|_| ManifestRejected::NotUtf8)?;
        let parsed = parse_manifest(manifest).map_err(invalid)?;
        let running = record
            .manifest_json
            .as_deref()
            .map(|json| parse_manifest(json.as_bytes()))
            .transpose()
            .map_err(|e| ManifestRejected::from(DaemonError::from(e)))?
            .map_or(0, |running| running.groups.len());
        let order = self
            .chain
            .order(record.order_id)
            .await
            .map_err(DaemonError::from)?;
        let group = update_group(&parsed, &order.bought(), running).map_err(invalid)?;
        let Some((_, holding)) = self.holding(lease_id).await? else {
            return Err(DaemonError::Lease {
                lease_id,
                reason: "no allocation is recorded".into(),
            }
            .into());
        };
        if holding.group.as_deref() != Some(group.name.as_str()) {
            return Err(ManifestRejected::Invalid(format!(
                "the lease runs group `{}`; an update keeps the group",
                holding.group.as_deref().unwrap_or_default()
            )));
        }
        let deployment = lease_deployment(
            lease_id,
            &record.tenant,
            &parsed,
            &group.name,
            &holding.gpu_devices(),
            &holding.leased_ips,
        )
        .map_err(invalid)?;
        deployment.validate().map_err(invalid)?;
        self.claim_hostnames(lease_id, group)?;
        let stored = self.manifest_to_store(lease_id, &parsed, text)?;
        let revision = u64::from(on_chain.revision);
        let record = self
            .store
            .replace_manifest(lease_id, record.version, hash, &stored, revision)
            .await?;
        self.store
            .record_history(
                lease_id,
                "manifest_updated",
                &format!(
                    "revision {revision} ({hash}) matches the chain; rolling group `{}`",
                    group.name
                ),
            )
            .await?;
        info!(lease_id, revision, manifest = %hash, "manifest update accepted; rolling");
        Ok(record)
    }
}
