// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @notice A concrete GPU model by its four canonical parts, e.g. ("nvidia", "a100", "80Gi", "sxm").
/// `iface` is the interface (`interface` is a Solidity keyword).
struct GpuModelParts {
    string vendor;
    string model;
    string ram;
    string iface;
}

/// @notice What a bid on a GPU order names: the concrete model it offers, and which entry of the
/// order's allowed list that model satisfies (`patternIndex`) with which of its parts replaced by
/// `*` (`wildcards`: bit 0 vendor, bit 1 model, bit 2 RAM, bit 3 interface). Ignored fields stay
/// zero for orders that allow any model; CPU-only orders pass an all-empty value.
struct GpuBid {
    GpuModelParts model;
    uint8 patternIndex;
    uint8 wildcards;
}

/// @title GpuModels
/// @notice The GPU model rule, defined once (CONTRACTS.md, "GPU models and patterns"). A model key
/// is keccak256 of `vendor/model/ram/interface`; an order's allowed entry is the key of such a
/// string in which any parts may be `*`. A concrete model matches an entry exactly when replacing
/// some of its parts by `*` yields the entry's string: with four parts, one of 16 masks.
library GpuModels {
    uint8 internal constant ALL_WILDCARDS = 15;
    uint256 internal constant MAX_PART_LENGTH = 64;

    /// @notice A part is empty, longer than MAX_PART_LENGTH, contains `/` or is `*`.
    error InvalidGpuModelPart(uint256 index);

    /// @notice keccak256 of the concrete model string.
    function key(GpuModelParts calldata parts) internal pure returns (bytes32) {
        return patternKey(parts, 0);
    }

    /// @notice keccak256 of the model string with the parts selected by `wildcards` replaced by `*`.
    function patternKey(GpuModelParts calldata parts, uint8 wildcards) internal pure returns (bytes32) {
        return keccak256(
            abi.encodePacked(
                _part(parts.vendor, wildcards, 1),
                "/",
                _part(parts.model, wildcards, 2),
                "/",
                _part(parts.ram, wildcards, 4),
                "/",
                _part(parts.iface, wildcards, 8)
            )
        );
    }

    /// @notice Reverts unless every part is a concrete, `/`-free, non-empty string.
    function requireConcrete(GpuModelParts calldata parts) internal pure {
        _requireConcrete(parts.vendor, 0);
        _requireConcrete(parts.model, 1);
        _requireConcrete(parts.ram, 2);
        _requireConcrete(parts.iface, 3);
    }

    function isEmpty(GpuModelParts calldata parts) internal pure returns (bool) {
        return bytes(parts.vendor).length == 0 && bytes(parts.model).length == 0 && bytes(parts.ram).length == 0
            && bytes(parts.iface).length == 0;
    }

    function _part(string calldata text, uint8 wildcards, uint8 bit) private pure returns (string memory) {
        if (wildcards & bit != 0) return "*";
        return text;
    }

    function _requireConcrete(string calldata text, uint256 index) private pure {
        bytes calldata raw = bytes(text);
        uint256 length = raw.length;
        if (length == 0 || length > MAX_PART_LENGTH || (length == 1 && raw[0] == "*")) {
            revert InvalidGpuModelPart(index);
        }
        for (uint256 i = 0; i < length; ++i) {
            if (raw[i] == "/") revert InvalidGpuModelPart(index);
        }
    }
}
