//! The container runtime abstraction: one trait, several backends.
//!
//! [`Runtime`] is what the daemon's lease state machine and reconciler talk to
//! (through an `Arc<dyn Runtime>`). Everything that does not depend on a
//! particular engine lives here, so that the Docker backend ([`docker`]) and a
//! later Kubernetes backend agree on it without duplicating it: the input types,
//! validation, object naming, label keys, resource conversions, URI computation
//! and the assembly of a lease's status from observed replicas.

mod deployment;
pub mod docker;
mod error;
mod exec;
pub mod image;
pub mod kubernetes;
pub mod registry;
mod scope;
mod status;
#[cfg(test)]
mod tests;

use async_trait::async_trait;

pub use self::deployment::*;
pub use self::error::RuntimeError;
pub(crate) use self::error::invalid;
pub use self::exec::*;
pub use self::scope::*;
pub use self::status::*;

/// A container runtime that runs leases. Every method is safe to repeat.
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Short name of the backend ("docker", "kubernetes").
    fn backend(&self) -> &'static str;

    /// Brings the lease to the deployment: creates what is missing, never
    /// duplicates, and restarts nothing that runs. Safe to call after a crash.
    async fn deploy(&self, deployment: &LeaseDeployment) -> Result<(), RuntimeError>;

    /// What the runtime holds for the lease (no services when nothing).
    async fn status(&self, lease_id: u64) -> Result<LeaseRuntimeStatus, RuntimeError>;

    /// Log lines of the lease's replicas (of one service when given): the last
    /// `tail` lines of each replica (all when `None`), then new ones while
    /// `follow` holds.
    async fn logs(
        &self,
        lease_id: u64,
        service: Option<&str>,
        follow: bool,
        tail: Option<u32>,
    ) -> Result<LogStream, RuntimeError>;

    /// Events of the lease's workloads from now on, including image pull
    /// progress of deploys that run while the stream is open.
    async fn events(&self, lease_id: u64) -> Result<EventStream, RuntimeError>;

    /// Removes everything the lease owns. Succeeds when nothing is left.
    async fn teardown(&self, lease_id: u64) -> Result<(), RuntimeError>;

    /// Ids of the leases the runtime holds anything for, sorted.
    async fn list_leases(&self) -> Result<Vec<u64>, RuntimeError>;

    /// Re-applies what the runtime enforces outside the workloads themselves (Docker:
    /// the lease egress rules, in case someone deleted them). Called every reconcile pass.
    async fn enforce_policies(&self) -> Result<(), RuntimeError> {
        Ok(())
    }

    /// The nodes this runtime places workloads on, when it learns them itself (a
    /// cluster). `None`, the default, means the daemon's own host, which the daemon
    /// describes from its detected hardware.
    async fn cluster_nodes(
        &self,
    ) -> Result<Option<Vec<leasehold_scheduler::NodeSpec>>, RuntimeError> {
        Ok(None)
    }

    /// Runs a command in one running replica of the lease, attached: stdin, resizes and
    /// end of input go in, output and finally the exit code come out.
    async fn exec(
        &self,
        lease_id: u64,
        request: &ExecRequest,
    ) -> Result<ExecSession, RuntimeError> {
        let _ = (lease_id, request);
        Err(RuntimeError::Unsupported {
            what: "commands in a running replica".into(),
            reason: format!("the {} runtime has no exec", self.backend()),
        })
    }
}
