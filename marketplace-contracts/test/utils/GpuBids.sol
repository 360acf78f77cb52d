// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {GpuBid, GpuModelParts} from "../../src/GpuModels.sol";

bytes32 constant A100_KEY = keccak256("nvidia/a100/80Gi/sxm");
bytes32 constant H100_KEY = keccak256("nvidia/h100/80Gi/sxm");

/// @dev The parts of the two models the tests register; anything else (zero included) is empty.
function partsOf(bytes32 model) pure returns (GpuModelParts memory) {
    if (model == A100_KEY) return GpuModelParts("nvidia", "a100", "80Gi", "sxm");
    if (model == H100_KEY) return GpuModelParts("nvidia", "h100", "80Gi", "sxm");
    return GpuModelParts("", "", "", "");
}

/// @dev A bid for `model` pointing at the allowed entry that names it exactly (entry 0 when none
/// does, which the contract then rejects).
function gpuBidFor(bytes32 model, bytes32[] memory allowed) pure returns (GpuBid memory bid) {
    bid.model = partsOf(model);
    for (uint256 i = 0; i < allowed.length; ++i) {
        if (allowed[i] == model) bid.patternIndex = uint8(i);
    }
}
