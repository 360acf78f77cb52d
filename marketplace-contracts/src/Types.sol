// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice Compute resources in the units the manifests crate derives from Akash SDL:
/// CPU in millicores, memory and ephemeral storage in MiB.
struct Resources {
    uint64 cpuMilli;
    uint64 memoryMiB;
    uint64 storageMiB;
}

/// @notice How many GPUs of one model a provider offers. `modelKey` is
/// keccak256 of the canonical lower-case model string, e.g. keccak256("nvidia/a100/80Gi/sxm").
struct GpuCapacity {
    bytes32 modelKey;
    uint32 count;
}
