//! Leasehold's scheduler core: the resource model, inventory accounting, GPU-aware
//! placement, pricing, bid ranking (with the on-chain default rule mirrored) and a
//! trace simulator. Pure: no IO, no clocks, no async runtime. The one exception is
//! the off-by-default `external-pricer` feature, which runs a pricing program.

pub mod cluster;
pub mod explain;
pub mod from_manifest;
pub mod policy;
pub mod resources;
pub mod sim;

pub use cluster::{Cluster, ClusterError, GpuDevice, GpuShare, NodeSpec, ReplicaPlacement, Score};
pub use explain::{FailureClass, PlacementFailure, Shortfall};
pub use policy::{
    BalanceWeights, BestFit, FirstFit, FragmentationAware, PlacementPolicy, PolicyKind,
    WorkloadProfile,
};
pub use resources::{
    GpuConstraint, GpuDemand, GpuModelKey, GpuModelPattern, GpuSpec, GroupRequest, GroupUnit,
    ReplicaRequest, ResourceError, Resources,
};
pub mod inventory;
pub mod pricing;
pub mod ranking;

pub use inventory::{GroupPlacement, Inventory, InventoryError, InventorySnapshot, Reservation};
