//! The one error type of every runtime backend.

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("invalid deployment: {field}: {reason}")]
    InvalidDeployment { field: String, reason: String },
    /// The image is shown escaped: it comes from a tenant.
    #[error("image {} cannot be pulled: {reason}", image.escape_debug())]
    ImagePull { image: String, reason: String },
    #[error("cannot reach the container engine: {reason}")]
    Unavailable { reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{name} exists but is not part of lease {lease_id}; refusing to touch it")]
    Conflict { name: String, lease_id: u64 },
    #[error("container engine failed to {action}: {reason}")]
    Engine { action: String, reason: String },
    /// The provider's engine lacks something the lease needs for good (no NVIDIA
    /// runtime): retrying cannot help, so like a workload fault it ends the lease, which
    /// refunds the tenant.
    #[error("this provider cannot run {what}: {reason}")]
    Unsupported { what: String, reason: String },
    #[error(
        "cannot enforce the lease egress policy: {reason}. Fix that, or set \
         [runtime.docker] egress_policy = \"unrestricted\" to run leases without it"
    )]
    EgressPolicy { reason: String },
}

impl RuntimeError {
    /// Whether the workload itself is at fault (its definition, its image, what the engine
    /// refuses to create), as opposed to the provider's engine being unreachable or in a
    /// state of its own; a permanent lack ([`RuntimeError::Unsupported`]) counts with the
    /// former. Only those count toward closing a lease whose deployment keeps failing: an
    /// engine outage must never close leases.
    pub fn is_workload_fault(&self) -> bool {
        matches!(
            self,
            RuntimeError::InvalidDeployment { .. }
                | RuntimeError::ImagePull { .. }
                | RuntimeError::Engine { .. }
                | RuntimeError::Unsupported { .. }
        )
    }
}

pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidDeployment {
        field: field.into(),
        reason: reason.into(),
    }
}
