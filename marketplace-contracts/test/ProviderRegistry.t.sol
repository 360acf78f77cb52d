// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Fixture} from "./utils/Fixture.sol";
import {vm} from "./utils/Vm.sol";
import {ProviderRegistry} from "../src/ProviderRegistry.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {TokenTransfers} from "../src/TokenTransfers.sol";
import {Resources, GpuCapacity} from "../src/Types.sol";
import {FeeOnTransferToken} from "./mocks/MockTokens.sol";

contract ProviderRegistryTest is Fixture {
    bytes32 internal constant ROTATED_CERT = keccak256("rotated gateway certificate");

    // ------------------------------------------------------------ construction

    function test_constructor_setsParameters() public view {
        assertEq(address(registry.stakeToken()), address(token), "stake token");
        assertEq(registry.minimumStake(), MIN_STAKE, "minimum stake");
        assertEq(registry.unbondingPeriod(), UNBONDING, "unbonding");
        assertEq(registry.marketplace(), address(market), "marketplace");
        assertEq(registry.deployer(), address(this), "deployer");
    }

    function test_constructor_revertsOnZeroToken() public {
        vm.expectRevert(ProviderRegistry.ZeroAddress.selector);
        new ProviderRegistry(IERC20(address(0)), MIN_STAKE, UNBONDING, SLASH_BPS, BID_BOND);
    }

    function test_constructor_revertsOnZeroStake() public {
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.MinimumStakeOutOfRange.selector, 0));
        new ProviderRegistry(IERC20(address(token)), 0, UNBONDING, SLASH_BPS, 0);
    }

    function test_constructor_revertsOnHugeStake() public {
        uint256 huge = uint256(type(uint128).max) + 1;
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.MinimumStakeOutOfRange.selector, huge));
        new ProviderRegistry(IERC20(address(token)), huge, UNBONDING, SLASH_BPS, 0);
    }

    function test_constructor_revertsOnLongUnbonding() public {
        uint64 tooLong = 365 days + 1;
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.UnbondingPeriodTooLong.selector, tooLong, 365 days));
        new ProviderRegistry(IERC20(address(token)), MIN_STAKE, tooLong, SLASH_BPS, BID_BOND);
    }

    function test_initialize_onlyOnceByDeployer() public {
        ProviderRegistry fresh = new ProviderRegistry(IERC20(address(token)), MIN_STAKE, UNBONDING, SLASH_BPS, BID_BOND);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotDeployer.selector, stranger));
        fresh.initialize(address(market));

        vm.expectRevert(ProviderRegistry.ZeroAddress.selector);
        fresh.initialize(address(0));

        vm.expectEmit(true, false, false, true, address(fresh));
        emit ProviderRegistry.MarketplaceBound(address(market));
        fresh.initialize(address(market));
        assertEq(fresh.marketplace(), address(market), "bound");

        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.MarketplaceAlreadyBound.selector, address(market)));
        fresh.initialize(address(this));
    }

    // ------------------------------------------------------------ register

    function test_register_storesProfileAndPullsStake() public {
        uint256 before = token.balanceOf(p1);
        vm.expectEmit(true, false, false, true, address(registry));
        emit ProviderRegistry.ProviderRegistered(
            p1,
            "https://provider.example:8443",
            GATEWAY_CERT,
            _list(EU, TIER),
            _res(8000, 32768, 102400),
            _gpus(A100, 4),
            MIN_STAKE
        );
        _registerDefault(p1);

        assertEq(before - token.balanceOf(p1), MIN_STAKE, "stake pulled");
        assertEq(token.balanceOf(address(registry)), MIN_STAKE, "stake held");
        ProviderRegistry.ProviderView memory info = registry.getProvider(p1);
        assertEq(uint256(info.status), uint256(ProviderRegistry.ProviderStatus.Active), "status");
        assertEq(info.stake, MIN_STAKE, "stake");
        assertEq(info.endpoint, "https://provider.example:8443", "endpoint");
        assertEq(info.gatewayCertSha256, GATEWAY_CERT, "gateway certificate");
        assertEq(info.attributes.length, 2, "attributes");
        assertEq(info.capacity.cpuMilli, 8000, "cpu");
        assertEq(info.capacity.memoryMiB, 32768, "memory");
        assertEq(info.capacity.storageMiB, 102400, "storage");
        assertEq(info.gpus.length, 1, "gpu models");
        assertEq(info.gpus[0].modelKey, A100, "gpu model");
        assertEq(info.gpus[0].capacity, 4, "gpu count");
        assertTrue(registry.isActive(p1), "active");
        assertTrue(registry.hasAttribute(p1, EU), "eu");
        assertFalse(registry.hasAttribute(p1, US), "us");
        (uint32 cap, uint32 alloc) = registry.gpuState(p1, A100);
        assertEq(cap, 4, "gpu capacity");
        assertEq(alloc, 0, "gpu allocated");
        (
            ProviderRegistry.ProviderStatus status,
            Resources memory capacity,
            Resources memory allocated,
            uint32 leases,
            uint256 stake
        ) = registry.resourceState(p1);
        assertEq(uint256(status), uint256(ProviderRegistry.ProviderStatus.Active), "state: status");
        assertEq(capacity.memoryMiB, 32768, "state: capacity");
        assertEq(allocated.cpuMilli + leases, 0, "state: nothing allocated");
        assertEq(stake, MIN_STAKE, "state: stake");
        assertEq(registry.providerCount(), 1, "listed");
        assertEq(registry.providerAt(0), p1, "list entry");
    }

    function test_register_revertsWhenAlreadyRegistered() public {
        _registerDefault(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.AlreadyRegistered.selector, p1));
        _registerDefault(p1);
    }

    function test_register_revertsOnEndpointLength() public {
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.EndpointLengthOutOfRange.selector, 0, 256));
        registry.register("", GATEWAY_CERT, _none(), _res(1, 1, 1), _noGpus());

        bytes memory long = new bytes(257);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.EndpointLengthOutOfRange.selector, 257, 256));
        registry.register(string(long), GATEWAY_CERT, _none(), _res(1, 1, 1), _noGpus());
    }

    function test_register_revertsOnTooManyAttributes() public {
        bytes32[] memory attrs = new bytes32[](33);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.TooManyAttributes.selector, 33, 32));
        registry.register("e", GATEWAY_CERT, attrs, _res(1, 1, 1), _noGpus());
    }

    function test_register_revertsOnTooManyGpuModels() public {
        GpuCapacity[] memory gpus = new GpuCapacity[](17);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.TooManyGpuModels.selector, 17, 16));
        registry.register("e", GATEWAY_CERT, _none(), _res(1, 1, 1), gpus);
    }

    function test_register_revertsOnZeroAttribute() public {
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroAttribute.selector, 1));
        registry.register("e", GATEWAY_CERT, _list(EU, bytes32(0)), _res(1, 1, 1), _noGpus());
    }

    function test_register_revertsOnBadGpuEntries() public {
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroGpuModelKey.selector, 0));
        registry.register("e", GATEWAY_CERT, _none(), _res(1, 1, 1), _gpus(bytes32(0), 1));

        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroGpuCount.selector, A100));
        registry.register("e", GATEWAY_CERT, _none(), _res(1, 1, 1), _gpus(A100, 0));

        GpuCapacity[] memory twice = new GpuCapacity[](2);
        twice[0] = GpuCapacity(A100, 1);
        twice[1] = GpuCapacity(A100, 2);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.DuplicateGpuModel.selector, A100));
        registry.register("e", GATEWAY_CERT, _none(), _res(1, 1, 1), twice);
    }

    function test_register_revertsOnZeroCapacity() public {
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroCapacity.selector, "cpuMilli"));
        registry.register("e", GATEWAY_CERT, _none(), _res(0, 1, 1), _noGpus());
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroCapacity.selector, "memoryMiB"));
        registry.register("e", GATEWAY_CERT, _none(), _res(1, 0, 1), _noGpus());
    }

    function test_register_revertsWithoutAllowance() public {
        vm.prank(p1);
        token.approve(address(registry), 0);
        vm.prank(p1);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(registry), 0, MIN_STAKE)
        );
        registry.register("e", GATEWAY_CERT, _none(), _res(1, 1, 1), _noGpus());
    }

    function test_register_rejectsFeeOnTransferStakeToken() public {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        ProviderRegistry feeRegistry =
            new ProviderRegistry(IERC20(address(fee)), MIN_STAKE, UNBONDING, SLASH_BPS, BID_BOND);
        fee.mint(p1, MIN_STAKE);
        vm.startPrank(p1);
        fee.approve(address(feeRegistry), MIN_STAKE);
        vm.expectRevert(
            abi.encodeWithSelector(
                TokenTransfers.UnsupportedTokenTransfer.selector, address(fee), MIN_STAKE, MIN_STAKE - MIN_STAKE / 100
            )
        );
        feeRegistry.register("e", GATEWAY_CERT, _none(), _res(1, 1, 1), _noGpus());
        vm.stopPrank();
    }

    // ------------------------------------------------------------ update

    function test_update_replacesProfile() public {
        _registerDefault(p1);
        vm.expectEmit(true, false, false, true, address(registry));
        emit ProviderRegistry.ProviderUpdated(
            p1, "https://new", ROTATED_CERT, _list(US), _res(16000, 65536, 0), _gpus(H100, 2)
        );
        vm.prank(p1);
        registry.update("https://new", ROTATED_CERT, _list(US), _res(16000, 65536, 0), _gpus(H100, 2));

        assertFalse(registry.hasAttribute(p1, EU), "old attribute dropped");
        assertTrue(registry.hasAttribute(p1, US), "new attribute held");
        (uint32 a100,) = registry.gpuState(p1, A100);
        (uint32 h100,) = registry.gpuState(p1, H100);
        assertEq(a100, 0, "old model dropped");
        assertEq(h100, 2, "new model offered");
        ProviderRegistry.ProviderView memory info = registry.getProvider(p1);
        assertEq(info.endpoint, "https://new", "endpoint");
        assertEq(info.gatewayCertSha256, ROTATED_CERT, "rotated gateway certificate");
        assertEq(info.capacity.cpuMilli, 16000, "cpu");
        assertEq(info.gpus.length, 1, "one model");
        assertEq(registry.providerCount(), 1, "not listed twice");
    }

    function test_registerAndUpdate_refuseAZeroGatewayCertificate() public {
        vm.prank(p1);
        vm.expectRevert(ProviderRegistry.ZeroGatewayCertificate.selector);
        registry.register("e", bytes32(0), _none(), _res(1, 1, 1), _noGpus());

        _registerDefault(p1);
        vm.prank(p1);
        vm.expectRevert(ProviderRegistry.ZeroGatewayCertificate.selector);
        registry.update("e", bytes32(0), _none(), _res(1, 1, 1), _noGpus());
        assertEq(registry.getProvider(p1).gatewayCertSha256, GATEWAY_CERT, "pin unchanged");
    }

    function test_update_revertsWhenNotActive() public {
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotActive.selector, p1));
        registry.update("e", GATEWAY_CERT, _none(), _res(1, 1, 1), _noGpus());
    }

    function test_update_revertsBelowAllocated() public {
        _registerDefault(p1);
        vm.prank(address(market));
        registry.reserve(p1, _res(2000, 4096, 8192), A100, 3);

        vm.startPrank(p1);
        vm.expectRevert(
            abi.encodeWithSelector(ProviderRegistry.CapacityBelowAllocated.selector, "cpuMilli", 1999, 2000)
        );
        registry.update("e", GATEWAY_CERT, _none(), _res(1999, 4096, 8192), _gpus(A100, 3));
        vm.expectRevert(
            abi.encodeWithSelector(ProviderRegistry.CapacityBelowAllocated.selector, "memoryMiB", 4095, 4096)
        );
        registry.update("e", GATEWAY_CERT, _none(), _res(2000, 4095, 8192), _gpus(A100, 3));
        vm.expectRevert(
            abi.encodeWithSelector(ProviderRegistry.CapacityBelowAllocated.selector, "storageMiB", 8191, 8192)
        );
        registry.update("e", GATEWAY_CERT, _none(), _res(2000, 4096, 8191), _gpus(A100, 3));
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.GpuCapacityBelowAllocated.selector, A100, 2, 3));
        registry.update("e", GATEWAY_CERT, _none(), _res(2000, 4096, 8192), _gpus(A100, 2));
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.GpuCapacityBelowAllocated.selector, A100, 0, 3));
        registry.update("e", GATEWAY_CERT, _none(), _res(2000, 4096, 8192), _gpus(H100, 8));
        // exactly the allocation still fits
        registry.update("e", GATEWAY_CERT, _none(), _res(2000, 4096, 8192), _gpus(A100, 3));
        vm.stopPrank();
    }

    // ------------------------------------------------------------ deregister / withdrawStake

    function test_deregister_startsUnbonding() public {
        _registerDefault(p1);
        vm.expectEmit(true, false, false, true, address(registry));
        emit ProviderRegistry.ProviderDeregistered(p1, uint64(START) + UNBONDING);
        vm.prank(p1);
        registry.deregister();
        ProviderRegistry.ProviderView memory info = registry.getProvider(p1);
        assertEq(uint256(info.status), uint256(ProviderRegistry.ProviderStatus.Unbonding), "unbonding");
        assertEq(info.unbondingEnds, START + UNBONDING, "ends");
        assertFalse(registry.isActive(p1), "inactive");
    }

    function test_deregister_revertsWhenNotActive() public {
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotActive.selector, p1));
        registry.deregister();
        _registerDefault(p1);
        vm.prank(p1);
        registry.deregister();
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotActive.selector, p1));
        registry.deregister();
    }

    function test_deregister_revertsWithActiveLeases() public {
        _registerDefault(p1);
        _lease(p1, PRICE);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.HasActiveLeases.selector, p1, 1));
        registry.deregister();
    }

    function test_withdrawStake_afterUnbonding() public {
        _registerDefault(p1);
        vm.prank(p1);
        registry.deregister();

        vm.warp(START + UNBONDING - 1);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.StillUnbonding.selector, p1, uint64(START + UNBONDING)));
        registry.withdrawStake();

        vm.warp(START + UNBONDING);
        uint256 before = token.balanceOf(p1);
        vm.expectEmit(true, false, false, true, address(registry));
        emit ProviderRegistry.StakeWithdrawn(p1, MIN_STAKE);
        vm.prank(p1);
        registry.withdrawStake();
        assertEq(token.balanceOf(p1) - before, MIN_STAKE, "stake returned");
        assertEq(token.balanceOf(address(registry)), 0, "registry empty");
        assertEq(uint256(registry.getProvider(p1).status), 0, "status none");
        assertFalse(registry.hasAttribute(p1, EU), "no attributes when unregistered");

        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotUnbonding.selector, p1));
        registry.withdrawStake();
    }

    function test_withdrawStake_revertsWhenActive() public {
        _registerDefault(p1);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotUnbonding.selector, p1));
        registry.withdrawStake();
    }

    function test_reregister_afterWithdrawReplacesEverything() public {
        _registerDefault(p1);
        vm.prank(p1);
        registry.deregister();
        vm.warp(START + UNBONDING);
        vm.prank(p1);
        registry.withdrawStake();

        _register(p1, _list(US), _res(1000, 1000, 1000), _gpus(H100, 1));
        assertTrue(registry.hasAttribute(p1, US), "new attribute");
        assertFalse(registry.hasAttribute(p1, EU), "old attribute gone");
        (uint32 a100,) = registry.gpuState(p1, A100);
        assertEq(a100, 0, "old gpu gone");
        assertEq(registry.providerCount(), 1, "listed once");
        assertEq(token.balanceOf(address(registry)), MIN_STAKE, "stake again");
    }

    // ------------------------------------------------------------ marketplace hooks

    function test_hooks_onlyMarketplace() public {
        _registerDefault(p1);
        Resources memory one = _res(1, 1, 1);
        vm.startPrank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotMarketplace.selector, stranger));
        registry.reserve(p1, one, bytes32(0), 0);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotMarketplace.selector, stranger));
        registry.tryReserve(p1, one, bytes32(0), 0, 0);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotMarketplace.selector, stranger));
        registry.release(p1, one, bytes32(0), 0);
        vm.stopPrank();
    }

    function test_reserveAndRelease_trackAllocation() public {
        _registerDefault(p1);
        vm.startPrank(address(market));
        registry.reserve(p1, _res(8000, 32768, 102400), A100, 4);
        Resources memory alloc = _allocated(p1);
        assertEq(alloc.cpuMilli, 8000, "cpu full");
        assertEq(registry.getProvider(p1).activeLeases, 1, "lease counted");
        (, uint32 gpus) = registry.gpuState(p1, A100);
        assertEq(gpus, 4, "gpus full");

        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.InsufficientCapacity.selector, p1));
        registry.reserve(p1, _res(1, 0, 0), bytes32(0), 0);
        vm.stopPrank();
        _assertReserve(
            _res(0, 0, 1), bytes32(0), 0, 0, ProviderRegistry.Eligibility.InsufficientCapacity, "storage full"
        );
        _assertReserve(
            _res(0, 1, 0), bytes32(0), 0, 0, ProviderRegistry.Eligibility.InsufficientCapacity, "memory full"
        );

        vm.prank(address(market));
        registry.release(p1, _res(8000, 32768, 102400), A100, 4);
        alloc = _allocated(p1);
        assertEq(alloc.cpuMilli + alloc.memoryMiB + alloc.storageMiB, 0, "released");
        assertEq(registry.getProvider(p1).activeLeases, 0, "lease uncounted");

        _assertReserve(
            _res(1, 1, 1), A100, 5, 0, ProviderRegistry.Eligibility.InsufficientCapacity, "gpu over capacity"
        );
        _assertReserve(
            _res(1, 1, 1), H100, 1, 0, ProviderRegistry.Eligibility.GpuModelNotOffered, "gpu model not offered"
        );
        uint32 epoch = registry.attributeEpoch(p1);
        _assertReserve(
            _res(1, 1, 1),
            A100,
            4,
            epoch + 1,
            ProviderRegistry.Eligibility.MissingAttribute,
            "attributes changed since the bid"
        );
        _assertReserve(_res(1, 1, 1), A100, 4, epoch, ProviderRegistry.Eligibility.Eligible, "fits");
    }

    function test_tryReserve_falseWhenNotActive() public {
        _registerDefault(p1);
        vm.prank(p1);
        registry.deregister();
        _assertReserve(_res(1, 1, 1), bytes32(0), 0, 0, ProviderRegistry.Eligibility.NotActive, "unbonding provider");
    }

    /// @dev As the marketplace, reserves for p1 and checks the outcome.
    function _assertReserve(
        Resources memory amount,
        bytes32 model,
        uint32 count,
        uint32 epoch,
        ProviderRegistry.Eligibility expected,
        string memory what
    ) internal {
        vm.prank(address(market));
        assertEq(uint256(registry.tryReserve(p1, amount, model, count, epoch)), uint256(expected), what);
    }

    function test_release_neverWraps() public {
        _registerDefault(p1);
        vm.prank(address(market));
        vm.expectRevert(); // arithmetic underflow panic
        registry.release(p1, _res(1, 0, 0), bytes32(0), 0);
    }

    // ------------------------------------------------------------ eligibility

    function test_checkEligibility_reportsFirstProblem() public {
        _registerDefault(p1);
        Resources memory small = _res(1000, 1024, 1024);
        _expectEligibility(p1, _list(EU), small, A100, 2, ProviderRegistry.Eligibility.Eligible, bytes32(0));
        _expectEligibility(p1, _list(EU, US), small, A100, 2, ProviderRegistry.Eligibility.MissingAttribute, US);
        _expectEligibility(p1, _none(), small, H100, 1, ProviderRegistry.Eligibility.GpuModelNotOffered, H100);
        _expectEligibility(p1, _none(), small, A100, 5, ProviderRegistry.Eligibility.GpuModelNotOffered, A100);
        _expectEligibility(
            p1, _none(), _res(8001, 1, 1), bytes32(0), 0, ProviderRegistry.Eligibility.InsufficientCapacity, bytes32(0)
        );
        _expectEligibility(p2, _none(), small, bytes32(0), 0, ProviderRegistry.Eligibility.NotActive, bytes32(0));
    }

    function _expectEligibility(
        address provider,
        bytes32[] memory attrs,
        Resources memory amount,
        bytes32 model,
        uint32 count,
        ProviderRegistry.Eligibility want,
        bytes32 wantDetail
    ) private view {
        (ProviderRegistry.Eligibility got, bytes32 detail) =
            registry.checkEligibility(provider, attrs, amount, model, count);
        assertEq(uint256(got), uint256(want), "eligibility");
        assertEq(detail, wantDetail, "detail");
    }
}
