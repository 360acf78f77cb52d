// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {vm} from "./utils/Vm.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {GpuBid, GpuModelParts, GpuModels} from "../src/GpuModels.sol";
import {GpuCapacity} from "../src/Types.sol";

/// @dev Exposes the library's internal functions with calldata arguments.
contract GpuModelsHarness {
    function key(GpuModelParts calldata parts) external pure returns (bytes32) {
        return GpuModels.key(parts);
    }

    function patternKey(GpuModelParts calldata parts, uint8 wildcards) external pure returns (bytes32) {
        return GpuModels.patternKey(parts, wildcards);
    }

    function requireConcrete(GpuModelParts calldata parts) external pure {
        GpuModels.requireConcrete(parts);
    }
}

/// @notice The GPU pattern rule on chain: the shared vectors (test/vectors/gpu_patterns.json, also
/// run by the Rust tests) through `placeBid`, every wildcard combination, fuzzing, and gas.
contract GpuPatternTest is Fixture {
    GpuModelsHarness internal lib;

    string[3] internal vendors = ["nvidia", "amd", "intel"];
    string[4] internal models = ["a100", "h100", "rtx4090", "mi300x"];
    string[3] internal rams = ["40Gi", "80Gi", "24Gi"];
    string[3] internal ifaces = ["sxm", "pcie", "oam"];

    function setUp() public override {
        super.setUp();
        lib = new GpuModelsHarness();
    }

    function _join(string[4] memory p) internal pure returns (string memory) {
        return string.concat(p[0], "/", p[1], "/", p[2], "/", p[3]);
    }

    function _parts(string[4] memory p) internal pure returns (GpuModelParts memory) {
        return GpuModelParts(p[0], p[1], p[2], p[3]);
    }

    /// @dev The wildcard mask (if any) under which `offered` becomes `patternKey`: what a bidder
    /// searches for, with the 16 masks of the rule.
    function _findMask(GpuModelParts memory offered, bytes32 patternKey) internal view returns (bool, uint8) {
        for (uint8 mask = 0; mask <= GpuModels.ALL_WILDCARDS; ++mask) {
            if (lib.patternKey(offered, mask) == patternKey) return (true, mask);
        }
        return (false, 0);
    }

    function _provider(uint256 n, bytes32 modelKey) internal returns (address provider) {
        provider = address(uint160(0x4000 + n));
        token.faucet(provider, MIN_STAKE);
        vm.prank(provider);
        token.approve(address(registry), MIN_STAKE);
        GpuCapacity[] memory gpus = new GpuCapacity[](1);
        gpus[0] = GpuCapacity(modelKey, 2);
        _register(provider, _none(), _res(8000, 32768, 102400), gpus);
    }

    /// @dev Every case of the shared vector file, through a real order and `placeBid`.
    function test_sharedVectors_throughPlaceBid() public {
        string memory json = vm.readFile("test/vectors/gpu_patterns.json");
        uint256 matched;
        uint256 i;
        for (; vm.keyExistsJson(json, string.concat(".cases[", vm.toString(i), "]")); ++i) {
            string memory at = string.concat(".cases[", vm.toString(i), "]");
            string memory pattern = vm.parseJsonString(json, string.concat(at, ".pattern"));
            string[] memory m = vm.parseJsonStringArray(json, string.concat(at, ".model"));
            bool expected = vm.parseJsonBool(json, string.concat(at, ".matches"));
            GpuModelParts memory offered = GpuModelParts(m[0], m[1], m[2], m[3]);
            bytes32 concrete = lib.key(offered);
            assertEq(concrete, keccak256(bytes(string.concat(m[0], "/", m[1], "/", m[2], "/", m[3]))), "key");

            address provider = _provider(i, concrete);
            Marketplace.OrderSpec memory spec = _gpuSpec(1, _list(keccak256(bytes(pattern))), _none());
            uint256 orderId = _order(spec);
            (bool found, uint8 mask) = _findMask(offered, spec.allowedGpuModels[0]);
            assertEq(found, expected, pattern);
            GpuBid memory bid = GpuBid(offered, 0, mask);
            vm.prank(provider);
            if (expected) {
                market.placeBid(orderId, PRICE, bid, spec.allowedGpuModels, spec.requiredAttributes);
                assertEq(market.getBid(orderId, 0).gpuModel, concrete, "bid names the concrete model");
                ++matched;
            } else {
                vm.expectRevert(abi.encodeWithSelector(Marketplace.GpuModelNotAllowed.selector, concrete));
                market.placeBid(orderId, PRICE, bid, spec.allowedGpuModels, spec.requiredAttributes);
            }
        }
        assertGt(i, 60, "the vector file has its cases");
        assertGt(matched, 20, "some cases match");
    }

    /// @dev Each of the 16 wildcard combinations of the provider's own model is accepted.
    function test_everyWildcardCombinationOfTheOfferedModelIsAccepted() public {
        GpuModelParts memory a100 = GpuModelParts("nvidia", "a100", "80Gi", "sxm");
        for (uint8 mask = 0; mask <= 15; ++mask) {
            bytes32 entry = lib.patternKey(a100, mask);
            Marketplace.OrderSpec memory spec = _gpuSpec(1, _list(H100, entry), _none());
            uint256 orderId = _order(spec);
            address provider = _provider(100 + mask, A100);
            vm.prank(provider);
            market.placeBid(orderId, PRICE, GpuBid(a100, 1, mask), spec.allowedGpuModels, _none());
        }
        assertEq(lib.patternKey(a100, 15), keccak256("*/*/*/*"), "all wildcards");
        assertEq(lib.patternKey(a100, 2 | 4 | 8), keccak256("nvidia/*/*/*"), "vendor only");
        assertEq(lib.patternKey(a100, 4 | 8), keccak256("nvidia/a100/*/*"), "model");
        assertEq(lib.patternKey(a100, 8), keccak256("nvidia/a100/80Gi/*"), "ram");
    }

    /// @dev A bid must point at the entry it matches with the mask that makes it match, and may
    /// only name a model the provider registered.
    function test_placeBid_rejectsWrongPointersAndUnregisteredModels() public {
        _registerDefault(p1); // 4 A100s
        GpuModelParts memory a100 = GpuModelParts("nvidia", "a100", "80Gi", "sxm");
        GpuModelParts memory h100 = GpuModelParts("nvidia", "h100", "80Gi", "sxm");
        Marketplace.OrderSpec memory spec = _gpuSpec(1, _list(keccak256("nvidia/*/*/*")), _none());
        uint256 orderId = _order(spec);
        bytes32[] memory allowed = spec.allowedGpuModels;

        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.GpuModelNotAllowed.selector, A100));
        market.placeBid(orderId, PRICE, GpuBid(a100, 1, 14), allowed, _none()); // index out of range
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.GpuModelNotAllowed.selector, A100));
        market.placeBid(orderId, PRICE, GpuBid(a100, 0, 12), allowed, _none()); // wrong mask
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.GpuModelNotAllowed.selector, A100));
        market.placeBid(orderId, PRICE, GpuBid(a100, 0, 16 | 14), allowed, _none()); // mask > 15
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksGpuModel.selector, p1, H100));
        market.placeBid(orderId, PRICE, GpuBid(h100, 0, 14), allowed, _none()); // matches, not registered
        vm.prank(p1);
        market.placeBid(orderId, PRICE, GpuBid(a100, 0, 14), allowed, _none());
        assertEq(market.getBid(orderId, 0).gpuModel, A100, "concrete model recorded");
    }

    /// @dev Parts must be concrete: no `*`, no `/` (which could shift parts), not empty.
    function test_partsMustBeConcrete() public {
        vm.expectRevert(abi.encodeWithSelector(GpuModels.InvalidGpuModelPart.selector, 1));
        lib.requireConcrete(GpuModelParts("nvidia", "*", "80Gi", "sxm"));
        vm.expectRevert(abi.encodeWithSelector(GpuModels.InvalidGpuModelPart.selector, 0));
        lib.requireConcrete(GpuModelParts("nvidia/a100", "80Gi", "sxm", "x"));
        vm.expectRevert(abi.encodeWithSelector(GpuModels.InvalidGpuModelPart.selector, 3));
        lib.requireConcrete(GpuModelParts("nvidia", "a100", "80Gi", ""));
        vm.expectRevert(abi.encodeWithSelector(GpuModels.InvalidGpuModelPart.selector, 2));
        lib.requireConcrete(
            GpuModelParts(
                "nvidia", "a100", "0123456789012345678901234567890123456789012345678901234567890123456789", "x"
            )
        );
        lib.requireConcrete(GpuModelParts("nvidia", "a100", "80Gi", "sxm"));
    }

    /// @dev The rule, fuzzed: an offered model matches a pattern (derived from any model with any
    /// mask) exactly when every non-wildcard part of the pattern equals the offered part; so a
    /// pattern never matches another vendor or model it names.
    function testFuzz_patternMatchesExactlyWhenEveryNamedPartAgrees(
        uint256 offeredSeed,
        uint256 patternSeed,
        uint8 mask
    ) public view {
        mask = mask & 15;
        string[4] memory o = _pick(offeredSeed);
        string[4] memory q = _pick(patternSeed);
        string[4] memory p = q;
        bool expected = true;
        for (uint256 k = 0; k < 4; ++k) {
            if (mask & (1 << k) != 0) {
                p[k] = "*";
            } else if (keccak256(bytes(q[k])) != keccak256(bytes(o[k]))) {
                expected = false;
            }
        }
        (bool found, uint8 via) = _findMask(_parts(o), keccak256(bytes(_join(p))));
        assertEq(found, expected, _join(p));
        if (found) assertEq(via, mask, "the mask is the pattern's own");
    }

    function _pick(uint256 seed) internal view returns (string[4] memory p) {
        p[0] = vendors[seed % 3];
        p[1] = models[(seed >> 8) % 4];
        p[2] = rams[(seed >> 16) % 3];
        p[3] = ifaces[(seed >> 24) % 3];
    }
}
