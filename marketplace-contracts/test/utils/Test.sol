// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {vm} from "./Vm.sol";

/// @dev Maps any `x` into [min, max] for fuzzing (forge-std's approach: values already inside
/// stay unchanged, others wrap by modulo).
function bound(uint256 x, uint256 min, uint256 max) pure returns (uint256) {
    require(min <= max, "bound: min > max");
    if (x >= min && x <= max) return x;
    uint256 size = max - min + 1;
    if (size == 0) return x; // the full uint256 range
    return min + (x % size);
}

/// @notice Minimal test base: assertions that, only when they fail, go through the cheatcode
/// assertions (so forge reports left/right values; skipping the cheatcode call on success keeps
/// long invariant campaigns fast) and the
/// target/exclude hooks forge calls to configure invariant runs. `vm` and `bound` are
/// file-level so handlers can use them without inheriting a test.
abstract contract Test {
    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetContracts;
    FuzzSelector[] private _targetSelectors;
    address[] private _excludedSenders;

    function IS_TEST() external pure returns (bool) {
        return true;
    }

    // ------------------------------------------------------------ invariant configuration

    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetSelectors;
    }

    function excludeSenders() public view returns (address[] memory) {
        return _excludedSenders;
    }

    function targetContract(address target) internal {
        _targetContracts.push(target);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetSelectors.push(selector);
    }

    function excludeSender(address sender) internal {
        _excludedSenders.push(sender);
    }

    // ------------------------------------------------------------ assertions

    function assertTrue(bool condition, string memory what) internal pure {
        if (!condition) vm.assertTrue(condition, what);
    }

    function assertFalse(bool condition, string memory what) internal pure {
        if (condition) vm.assertFalse(condition, what);
    }

    function assertEq(uint256 left, uint256 right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(address left, address right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(bytes32 left, bytes32 right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(bool left, bool right, string memory what) internal pure {
        if (left != right) vm.assertEq(left, right, what);
    }

    function assertEq(string memory left, string memory right, string memory what) internal pure {
        if (keccak256(bytes(left)) != keccak256(bytes(right))) vm.assertEq(left, right, what);
    }

    function assertLe(uint256 left, uint256 right, string memory what) internal pure {
        if (left > right) vm.assertLe(left, right, what);
    }

    function assertGe(uint256 left, uint256 right, string memory what) internal pure {
        if (left < right) vm.assertGe(left, right, what);
    }

    function assertGt(uint256 left, uint256 right, string memory what) internal pure {
        if (left <= right) vm.assertGt(left, right, what);
    }
}
