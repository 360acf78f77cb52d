// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {Vm, vm} from "./utils/Vm.sol";
import {ProviderRegistry} from "../src/ProviderRegistry.sol";

/// @notice `publishNames`: the strings behind attribute and GPU model keys, hashed on chain.
contract KeyNamesTest is Fixture {
    bytes32 internal constant KEY_NAMED_TOPIC = keccak256("KeyNamed(bytes32,string)");

    function test_publishNames_namesTheKeysProvidersRegister() public {
        vm.expectEmit(true, false, false, true, address(registry));
        emit ProviderRegistry.KeyNamed(EU, "region=eu-west");
        vm.expectEmit(true, false, false, true, address(registry));
        emit ProviderRegistry.KeyNamed(A100, "nvidia/a100/80Gi/sxm");
        vm.prank(stranger);
        registry.publishNames(_names("region=eu-west", "nvidia/a100/80Gi/sxm"));

        assertTrue(registry.named(EU), "attribute key named");
        assertTrue(registry.named(A100), "GPU model key named");
        assertFalse(registry.named(US), "an unpublished key is not named");
    }

    /// A name is always filed under its own hash: there is no way to name another key.
    function test_publishNames_cannotNameAnotherKey() public {
        vm.recordLogs();
        registry.publishNames(_names("region=us-east"));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "one event");
        assertEq(logs[0].topics[0], KEY_NAMED_TOPIC, "KeyNamed");
        assertEq(logs[0].topics[1], US, "filed under keccak256 of its own bytes");
        assertEq(abi.decode(logs[0].data, (string)), "region=us-east", "name");
        assertFalse(registry.named(EU), "no other key named");
    }

    function test_publishNames_emitsOncePerKey() public {
        registry.publishNames(_names("region=eu-west"));
        vm.recordLogs();
        registry.publishNames(_names("region=eu-west", "tier=community", "tier=community"));
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 1, "only the new name, once");
        assertEq(logs[0].topics[1], TIER, "tier named");
        assertTrue(registry.named(TIER), "recorded");
    }

    function test_publishNames_boundsTheCount() public {
        uint256 max = registry.MAX_NAMES();
        assertEq(max, registry.MAX_ATTRIBUTES() + registry.MAX_GPU_MODELS(), "one registration's worth");
        string[] memory names = new string[](max + 1);
        for (uint256 i = 0; i < names.length; ++i) {
            names[i] = string.concat("attr=", vm.toString(i));
        }
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.TooManyNames.selector, max + 1, max));
        registry.publishNames(names);

        assembly {
            mstore(names, max)
        }
        registry.publishNames(names);
        assertTrue(registry.named(keccak256(bytes(names[max - 1]))), "the maximum passes");
    }

    function test_publishNames_boundsTheLengthNamingTheIndex() public {
        uint256 max = registry.MAX_NAME_LENGTH();
        assertEq(max, 259, "four 64-byte GPU model parts and three slashes");
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NameLengthOutOfRange.selector, 1, 0, max));
        registry.publishNames(_names("region=eu-west", ""));

        string memory longest = string(_filled(max));
        string memory tooLong = string(_filled(max + 1));
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NameLengthOutOfRange.selector, 2, max + 1, max));
        registry.publishNames(_names("region=eu-west", longest, tooLong));
        assertFalse(registry.named(EU), "a failed call names nothing");

        registry.publishNames(_names(longest));
        assertTrue(registry.named(keccak256(bytes(longest))), "the longest name passes");
    }

    function _filled(uint256 length) private pure returns (bytes memory text) {
        text = new bytes(length);
        for (uint256 i = 0; i < length; ++i) {
            text[i] = "a";
        }
    }

    function _names(string memory a) private pure returns (string[] memory names) {
        names = new string[](1);
        names[0] = a;
    }

    function _names(string memory a, string memory b) private pure returns (string[] memory names) {
        names = new string[](2);
        names[0] = a;
        names[1] = b;
    }

    function _names(string memory a, string memory b, string memory c) private pure returns (string[] memory names) {
        names = new string[](3);
        names[0] = a;
        names[1] = b;
        names[2] = c;
    }
}
