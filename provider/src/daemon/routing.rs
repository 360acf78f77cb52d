//! The daemon's side of the ingress: keeping the [`RouteTable`] equal to the leases.
//!
//! A manifest's hostnames are claimed when it is accepted (so a second lease asking for a
//! taken hostname is refused at `SendManifest`, naming the field), the upstreams are filled
//! in once the runtime runs the lease, the lease's routes go when it closes, and every
//! reconcile pass (the first one at start) routes each lease that should run from the
//! store and drops routes of any other: the table is rebuilt from the store after a
//! restart, never kept on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use leasehold_manifests::ManifestGroup;
use tracing::warn;

use super::{Core, DaemonError};
use crate::deployment::parse_manifest;
use crate::ingress::{HostnameError, RouteTable, lease_claims};
use crate::runtime::{LeaseRuntimeStatus, RuntimeScope};

/// What the daemon routes with when `[ingress]` is configured.
pub struct IngressRoutes {
    pub domain: String,
    /// Generated hostnames hash the chain and provider too.
    pub scope: RuntimeScope,
    pub table: Arc<RouteTable>,
}

/// `host:port` of each HTTP URI a service answers at: the runtime reports the port
/// exposed as 80 as an `http://` URI (Docker: the published host port; Kubernetes: the
/// NodePort).
pub fn http_upstreams(status: &LeaseRuntimeStatus) -> BTreeMap<String, Vec<String>> {
    status
        .services
        .iter()
        .map(|service| {
            let upstreams = service
                .uris
                .iter()
                .filter_map(|uri| uri.strip_prefix("http://"))
                .map(|authority| authority.trim_end_matches('/').to_owned())
                .collect();
            (service.name.clone(), upstreams)
        })
        .collect()
}

impl Core {
    /// Claims the hostnames of the lease's manifest group before the manifest is taken,
    /// keeping the upstreams its services already have.
    pub(crate) fn claim_hostnames(
        &self,
        lease_id: u64,
        group: &ManifestGroup,
    ) -> Result<(), HostnameError> {
        let Some(ingress) = &self.ingress else {
            return Ok(());
        };
        let claims = lease_claims(&ingress.scope, &ingress.domain, lease_id, group)?;
        ingress
            .table
            .replace_lease(lease_id, &claims, &BTreeMap::new())
    }

    /// Routes the lease's hostnames to where the runtime runs its services now.
    pub(crate) async fn route_lease(&self, lease_id: u64) -> Result<(), DaemonError> {
        let Some(ingress) = &self.ingress else {
            return Ok(());
        };
        let Some(record) = self.store.find_lease(lease_id).await? else {
            ingress.table.remove_lease(lease_id);
            return Ok(());
        };
        let group_name = self
            .holding(lease_id)
            .await?
            .and_then(|(_, holding)| holding.group);
        let (Some(json), Some(group_name)) = (record.manifest_json.as_deref(), group_name) else {
            // Adopted without its manifest: nothing says which hostnames it has.
            return Ok(());
        };
        let manifest = parse_manifest(json.as_bytes())?;
        let Some(group) = manifest
            .groups
            .iter()
            .find(|group| group.name == group_name)
        else {
            return Ok(());
        };
        let claims = match lease_claims(&ingress.scope, &ingress.domain, lease_id, group) {
            Ok(claims) => claims,
            Err(error) => {
                warn!(lease_id, %error, "the lease's hostnames cannot be routed");
                return Ok(());
            }
        };
        let upstreams = http_upstreams(&self.runtime.status(lease_id).await?);
        if let Err(error) = ingress.table.replace_lease(lease_id, &claims, &upstreams) {
            // Only a store holding two leases with one hostname gets here (the claim at
            // manifest time refuses the second): the first routed keeps it.
            warn!(lease_id, %error, "not routing the lease");
        }
        Ok(())
    }

    /// Removes the lease's routes.
    pub(crate) fn unroute_lease(&self, lease_id: u64) {
        if let Some(ingress) = &self.ingress {
            ingress.table.remove_lease(lease_id);
        }
    }

    /// Drops the routes of every lease that should not run: not in `wanted` (the leases a
    /// reconcile pass deployed) and not taken into deployment since (a manifest accepted
    /// while the pass ran claimed its hostnames already).
    pub(crate) async fn prune_routes(&self, wanted: &BTreeSet<u64>) -> Result<(), DaemonError> {
        let Some(ingress) = &self.ingress else {
            return Ok(());
        };
        for lease_id in ingress.table.leases() {
            if wanted.contains(&lease_id) {
                continue;
            }
            let deploying = self
                .store
                .find_lease(lease_id)
                .await?
                .is_some_and(|record| record.state.wants_workload());
            if !deploying {
                ingress.table.remove_lease(lease_id);
            }
        }
        Ok(())
    }

    /// The lease's hostnames by service (empty without an ingress).
    pub fn hostnames(&self, lease_id: u64) -> BTreeMap<String, Vec<String>> {
        self.ingress
            .as_ref()
            .map(|ingress| ingress.table.hostnames(lease_id))
            .unwrap_or_default()
    }

    /// The route table, when the ingress is configured.
    pub fn route_table(&self) -> Option<&Arc<RouteTable>> {
        self.ingress.as_ref().map(|ingress| &ingress.table)
    }
}
