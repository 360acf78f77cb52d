// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Fixture} from "./utils/Fixture.sol";
import {vm} from "./utils/Vm.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {ProviderRegistry} from "../src/ProviderRegistry.sol";
import {PullPayments} from "../src/TokenTransfers.sol";
import {BlockingToken} from "./mocks/MockTokens.sol";
import {GpuBid} from "../src/GpuModels.sol";

/// @notice Regression tests for the adversarial review of issue #11, one contract per finding.
/// Each test failed against the contracts before the fix.

/// Finding 1: a winner that never deploys was paid from the lease's start.
contract Finding1PaidForNothingTest is Fixture {
    uint256 internal leaseId;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        leaseId = _pendingLease(p1, PRICE); // 1000 base units per second once confirmed
    }

    function test_finding1_pendingLeaseAccruesNothingUntilConfirmed() public {
        vm.warp(START + DELIVERY - 1);
        (uint256 withdrawable,) = market.owed(leaseId);
        assertEq(withdrawable, 0, "nothing accrues before the confirmation");
        vm.prank(p1);
        assertEq(market.withdraw(leaseId), 0, "nothing to withdraw");

        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.LeaseConfirmed(leaseId, p1);
        vm.prank(p1);
        market.confirmLease(leaseId);
        Marketplace.LeaseView memory l = market.getLease(leaseId);
        assertTrue(l.confirmed, "confirmed");
        assertEq(l.startedAt, START + DELIVERY - 1, "accrual starts at the confirmation");
        assertEq(registry.getProvider(p1).deliveriesConfirmed, 1, "delivery counted");

        vm.warp(START + DELIVERY + 99);
        vm.prank(p1);
        assertEq(market.withdraw(leaseId), 100_000, "100 s since the confirmation");
    }

    function test_finding1_undeliveredLeaseRefundsTenantAndSlashesStake() public {
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.DeliveryWindowOpen.selector, leaseId, uint64(START + DELIVERY))
        );
        market.closeUndelivered(leaseId);

        vm.warp(START + DELIVERY);
        vm.prank(p1);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.DeliveryDeadlinePassed.selector, leaseId, uint64(START + DELIVERY))
        );
        market.confirmLease(leaseId);

        uint256 tenantBefore = token.balanceOf(tenant);
        uint256 providerBefore = token.balanceOf(p1);
        uint256 slash = MIN_STAKE * SLASH_BPS / 10_000;
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.LeaseClosed(leaseId, stranger, 3, 0, DEPOSIT);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.DeliveryFailed(leaseId, p1, slash);
        vm.prank(stranger);
        market.closeUndelivered(leaseId);

        assertEq(token.balanceOf(tenant) - tenantBefore, DEPOSIT + slash, "full refund plus the slashed stake");
        assertEq(token.balanceOf(p1), providerBefore, "provider paid nothing");
        ProviderRegistry.ProviderView memory info = registry.getProvider(p1);
        assertEq(info.stake, MIN_STAKE - slash, "stake slashed");
        assertEq(info.deliveriesFailed, 1, "failure counted");
        assertEq(info.activeLeases, 0, "capacity released");
        assertEq(token.balanceOf(address(registry)), MIN_STAKE - slash, "registry holds the rest of the stake");
        assertEq(token.balanceOf(address(market)), 0, "nothing left in escrow");
    }

    function test_finding1_providerClosingPendingLeaseCountsAsUndelivered() public {
        uint256 tenantBefore = token.balanceOf(tenant);
        vm.prank(p1);
        market.closeLease(leaseId, 2);
        uint256 slash = MIN_STAKE * SLASH_BPS / 10_000;
        assertEq(token.balanceOf(tenant) - tenantBefore, DEPOSIT + slash, "refund and slash");
        assertEq(registry.getProvider(p1).deliveriesFailed, 1, "failure counted");
    }

    function test_closeLease_pendingByTenantRefundsWithoutSlash() public {
        uint256 tenantBefore = token.balanceOf(tenant);
        vm.prank(tenant);
        market.closeLease(leaseId, 1);
        assertEq(token.balanceOf(tenant) - tenantBefore, DEPOSIT, "full refund");
        assertEq(registry.getProvider(p1).stake, MIN_STAKE, "no slash: the tenant withdrew");
        assertEq(registry.getProvider(p1).deliveriesFailed, 0, "not a failure");
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotActive.selector, leaseId));
        market.closeUndelivered(leaseId);
    }

    function test_confirmLease_reverts() public {
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.NotProvider.selector, tenant));
        market.confirmLease(leaseId);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotFound.selector, 99));
        market.confirmLease(99);
        vm.prank(p1);
        market.confirmLease(leaseId);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotPending.selector, leaseId));
        market.confirmLease(leaseId);
        vm.warp(START + DELIVERY);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotPending.selector, leaseId));
        market.closeUndelivered(leaseId);
    }

    function test_createOrder_deliveryWindowBounds() public {
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        IERC20 t = IERC20(address(token));
        vm.startPrank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.DeliveryWindowOutOfRange.selector, 59, 60, 3600));
        market.createOrder(t, spec, MANIFEST, PRICE, DEPOSIT, WINDOW, 59);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.DeliveryWindowOutOfRange.selector, 3601, 60, 3600));
        market.createOrder(t, spec, MANIFEST, PRICE, DEPOSIT, WINDOW, 3601);
        uint256 id = market.createOrder(t, spec, MANIFEST, PRICE, DEPOSIT, WINDOW, 3600);
        vm.stopPrank();
        assertEq(market.getOrder(id).deliveryWindow, 3600, "stored");
    }

    function test_registry_deliverySlashBounded() public {
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.DeliverySlashOutOfRange.selector, 5001, 5000));
        new ProviderRegistry(IERC20(address(token)), MIN_STAKE, UNBONDING, 5001, BID_BOND);
    }

    function test_registry_deliveryHooksOnlyMarketplace() public {
        vm.startPrank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotMarketplace.selector, stranger));
        registry.recordDelivery(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotMarketplace.selector, stranger));
        registry.slashForFailedDelivery(p1, stranger);
        vm.stopPrank();
    }
}

/// Finding 2: sixteen sybil bids filled every slot of an order and then shrank their capacity,
/// so honest providers got `TooManyBids` and `settle` found nobody.
contract Finding2BidSlotJammingTest is Fixture {
    Marketplace.OrderSpec internal spec;
    uint256 internal orderId;
    address[16] internal sybils;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
        spec = _cpuSpec(1000, 1024, 0);
        orderId = _order(spec);
        for (uint256 i = 0; i < 16; ++i) {
            sybils[i] = address(uint160(0x5000 + i));
            token.faucet(sybils[i], MIN_STAKE);
            vm.prank(sybils[i]);
            token.approve(address(registry), MIN_STAKE);
            _register(sybils[i], _none(), _res(8000, 8192, 0), _noGpus());
            _bid(sybils[i], orderId, spec, 100 + i, bytes32(0));
        }
    }

    function _shrinkAll() internal {
        for (uint256 i = 0; i < 16; ++i) {
            vm.prank(sybils[i]);
            registry.update("s", GATEWAY_CERT, _none(), _res(1, 1, 0), _noGpus());
        }
    }

    function test_finding2_anHonestBidEvictsASybilThatShrankItsCapacity() public {
        _shrinkAll();
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidEvicted(orderId, 0, sybils[0], 1);
        uint256 bidId = _bid(p1, orderId, spec, PRICE, bytes32(0));
        assertEq(bidId, 0, "took the ineligible bid's slot");
        assertEq(market.getBid(orderId, 0).provider, p1, "slot reused");
        // the honest bid is more expensive than every sybil's, yet it wins either way
        vm.warp(START + WINDOW);
        vm.prank(tenant);
        market.acceptBid(orderId, bidId);
        assertEq(market.getLease(orderId).provider, p1, "honest provider leased");
    }

    function test_finding2_settleReachesTheHonestBidInBoundedCalls() public {
        _shrinkAll();
        _bid(p1, orderId, spec, PRICE, bytes32(0));
        vm.warp(START + WINDOW + market.TENANT_GRACE());
        for (uint256 call = 0; call < 16; ++call) {
            vm.prank(stranger);
            market.settle(orderId);
            if (market.getOrder(orderId).status == Marketplace.OrderStatus.Leased) break;
        }
        assertEq(market.getLease(orderId).provider, p1, "settle ends at the honest bid");
    }

    function test_finding2_aStrictlyCheaperBidEvictsTheDearest() public {
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidEvicted(orderId, 15, sybils[15], 2);
        assertEq(_bid(p1, orderId, spec, 99, bytes32(0)), 15, "took the dearest slot");
        vm.expectRevert(abi.encodeWithSelector(Marketplace.TooManyBids.selector, orderId, 16));
        _bid(p2, orderId, spec, 114, bytes32(0)); // equal to the dearest left: not cheaper
    }

    /// Issue #11 follow-up: an evicted provider could never bid on the order again, so a provider
    /// outbid once (or evicted while briefly ineligible) was shut out of that order for good.
    function test_anEvictedProviderMayBidAgain() public {
        _bid(p1, orderId, spec, 99, bytes32(0)); // evicts sybils[15], the dearest
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidEvicted(orderId, 14, sybils[14], 2);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidPlaced(orderId, 14, sybils[15], 98, bytes32(0));
        vm.prank(sybils[15]);
        assertEq(
            market.placeBid(orderId, 98, _noGpu(), spec.allowedGpuModels, spec.requiredAttributes),
            14,
            "the evicted provider bids again, cheaper, and takes the dearest slot left"
        );
        vm.prank(sybils[15]);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.AlreadyBid.selector, orderId, sybils[15]));
        market.placeBid(orderId, 1, _noGpu(), spec.allowedGpuModels, spec.requiredAttributes);
    }

    function test_finding2_aWithdrawnBidsSlotIsTakenFirst() public {
        vm.prank(sybils[7]);
        market.withdrawBid(orderId, 7);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidEvicted(orderId, 7, sybils[7], 0);
        assertEq(_bid(p2, orderId, spec, PRICE, bytes32(0)), 7, "took the withdrawn slot");
    }

    function _noGpu() internal pure returns (GpuBid memory bid) {}
}

/// Finding 3: closing pushed both transfers in the call that releases capacity, so a token that
/// refused one of them (blocklisted address, paused token) locked the lease for good.
contract Finding3ClosingDependsOnTransfersTest is Fixture {
    BlockingToken internal blk;
    ProviderRegistry internal blkRegistry;
    Marketplace internal blkMarket;

    function setUp() public override {
        super.setUp();
        blk = new BlockingToken();
        blkRegistry = new ProviderRegistry(IERC20(address(blk)), MIN_STAKE, UNBONDING, SLASH_BPS, BID_BOND);
        blkMarket = new Marketplace(blkRegistry);
        blkRegistry.initialize(address(blkMarket));
        address[3] memory actors = [tenant, p1, stranger];
        for (uint256 i = 0; i < actors.length; ++i) {
            blk.mint(actors[i], 1_000_000e6);
            vm.startPrank(actors[i]);
            blk.approve(address(blkMarket), type(uint256).max);
            blk.approve(address(blkRegistry), type(uint256).max);
            vm.stopPrank();
        }
        vm.prank(p1);
        blkRegistry.register("https://p1.example", GATEWAY_CERT, _none(), _res(8000, 32768, 0), _noGpus());
    }

    function _blkOrder() internal returns (uint256 id) {
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        vm.prank(tenant);
        id = blkMarket.createOrder(IERC20(address(blk)), spec, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);
    }

    function _blkLease() internal returns (uint256 id) {
        id = _blkOrder();
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        vm.prank(p1);
        blkMarket.placeBid(id, PRICE, _emptyGpuBid(), spec.allowedGpuModels, spec.requiredAttributes);
        vm.prank(tenant);
        blkMarket.acceptBid(id, 0);
        vm.prank(p1);
        blkMarket.confirmLease(id);
    }

    function _emptyGpuBid() internal pure returns (GpuBid memory bid) {}

    function test_finding3_closeLeaseWithBlockedProviderCreditsThePayment() public {
        uint256 id = _blkLease();
        vm.warp(START + 100);
        blk.setBlocked(p1, true);
        uint256 tenantBefore = blk.balanceOf(tenant);
        vm.expectEmit(true, true, false, true, address(blkMarket));
        emit PullPayments.PaymentCredited(address(blk), p1, 100_000);
        vm.prank(tenant);
        blkMarket.closeLease(id, 1);
        assertEq(blk.balanceOf(tenant) - tenantBefore, DEPOSIT - 100_000, "tenant refunded at once");
        assertEq(blkMarket.claimable(IERC20(address(blk)), p1), 100_000, "provider's payment credited");
        assertEq(blkRegistry.getProvider(p1).activeLeases, 0, "capacity released");

        // still blocked: claiming to itself fails and keeps the credit; to another address works
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(BlockingToken.Blocked.selector, p1));
        blkMarket.claim(IERC20(address(blk)), p1);
        vm.prank(p1);
        blkMarket.claim(IERC20(address(blk)), address(0xCAFE));
        assertEq(blk.balanceOf(address(0xCAFE)), 100_000, "claimed elsewhere");
        assertEq(blkMarket.claimable(IERC20(address(blk)), p1), 0, "credit spent");
        assertEq(blk.balanceOf(address(blkMarket)), 0, "nothing left");
    }

    function test_finding3_closeLeaseWhileTokenPausedCreditsBothSides() public {
        uint256 id = _blkLease();
        vm.warp(START + 100);
        blk.setPaused(true);
        vm.prank(p1);
        blkMarket.closeLease(id, 2);
        assertEq(blkMarket.claimable(IERC20(address(blk)), p1), 100_000, "provider credited");
        assertEq(blkMarket.claimable(IERC20(address(blk)), tenant), DEPOSIT - 100_000, "tenant credited");
        blk.setPaused(false);
        vm.prank(tenant);
        blkMarket.claim(IERC20(address(blk)), tenant);
        vm.prank(p1);
        blkMarket.claim(IERC20(address(blk)), p1);
        assertEq(blk.balanceOf(address(blkMarket)), 0, "everything paid out");
    }

    function test_finding3_cancelOrderWithBlockedTenantCreditsTheRefund() public {
        uint256 id = _blkOrder();
        blk.setBlocked(tenant, true);
        vm.prank(tenant);
        blkMarket.cancelOrder(id);
        assertEq(blkMarket.claimable(IERC20(address(blk)), tenant), DEPOSIT, "refund credited");
    }

    function test_finding3_undeliveredWithBlockedTenantCreditsRefundAndSlash() public {
        uint256 id = _blkOrder();
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        vm.prank(p1);
        blkMarket.placeBid(id, PRICE, _emptyGpuBid(), spec.allowedGpuModels, spec.requiredAttributes);
        vm.prank(tenant);
        blkMarket.acceptBid(id, 0);
        blk.setBlocked(tenant, true);
        vm.warp(START + DELIVERY);
        vm.prank(stranger);
        blkMarket.closeUndelivered(id);
        uint256 slash = MIN_STAKE * SLASH_BPS / 10_000;
        assertEq(blkMarket.claimable(IERC20(address(blk)), tenant), DEPOSIT, "refund credited by the market");
        assertEq(blkRegistry.claimable(IERC20(address(blk)), tenant), slash, "slash credited by the registry");
    }

    function test_finding3_blockedProviderCanStillLeave() public {
        vm.prank(p1);
        blkRegistry.deregister();
        vm.warp(START + UNBONDING);
        blk.setBlocked(p1, true);
        vm.prank(p1);
        blkRegistry.withdrawStake();
        assertEq(blkRegistry.claimable(IERC20(address(blk)), p1), MIN_STAKE, "stake credited");
        assertEq(uint256(blkRegistry.getProvider(p1).status), uint256(ProviderRegistry.ProviderStatus.None), "left");
    }

    function test_claim_reverts() public {
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(PullPayments.NothingToClaim.selector, address(blk), p1));
        blkMarket.claim(IERC20(address(blk)), p1);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(PullPayments.ClaimToZeroAddress.selector));
        blkMarket.claim(IERC20(address(blk)), address(0));
    }
}

/// Finding 4: bids were accepted after the window, and a forgotten order was matched at any time.
contract Finding4TimeRulesTest is Fixture {
    Marketplace.OrderSpec internal spec;
    uint256 internal orderId;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
        spec = _cpuSpec(1000, 1024, 0);
        orderId = _order(spec);
    }

    function test_finding4_noBidAfterTheWindow() public {
        vm.warp(START + WINDOW);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidWindowClosed.selector, orderId, uint64(START + WINDOW)));
        market.placeBid(orderId, PRICE, _noGpu(), spec.allowedGpuModels, spec.requiredAttributes);
    }

    function test_finding4_strangersWaitForTheTenantGrace() public {
        _bid(p1, orderId, spec, PRICE, bytes32(0));
        vm.warp(START + WINDOW);
        uint64 graceEnd = uint64(START + WINDOW) + market.TENANT_GRACE();
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.TenantGracePeriod.selector, orderId, graceEnd));
        market.settle(orderId);
        vm.warp(graceEnd);
        vm.prank(stranger);
        market.settle(orderId);
        assertEq(market.getLease(orderId).provider, p1, "matched after the grace");
    }

    function test_finding4_tenantSettlesRightAfterTheWindow() public {
        _bid(p1, orderId, spec, PRICE, bytes32(0));
        vm.warp(START + WINDOW);
        vm.prank(tenant);
        market.settle(orderId);
        assertEq(market.getLease(orderId).provider, p1, "the tenant needs no grace");
    }

    function test_finding4_expiredOrderCanOnlyBeCancelled() public {
        _bid(p1, orderId, spec, PRICE, bytes32(0));
        uint64 expiresAt = uint64(START + WINDOW) + market.MATCH_PERIOD();
        assertEq(market.getOrder(orderId).expiresAt, expiresAt, "expiry in the view");
        vm.warp(expiresAt);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.OrderExpired.selector, orderId, expiresAt));
        market.settle(orderId);
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.OrderExpired.selector, orderId, expiresAt));
        market.acceptBid(orderId, 0);
        uint256 before = token.balanceOf(tenant);
        vm.prank(tenant);
        market.cancelOrder(orderId);
        assertEq(token.balanceOf(tenant) - before, DEPOSIT, "refunded");
    }

    function _noGpu() internal pure returns (GpuBid memory bid) {}
}

/// Finding 5: required attributes (and GPU models) were checked only when bidding.
contract Finding5StaleEligibilityTest is Fixture {
    Marketplace.OrderSpec internal spec;
    uint256 internal orderId;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
        spec = _gpuSpec(1, _list(A100), _list(EU));
        orderId = _order(spec);
        _bid(p1, orderId, spec, 100, A100);
        _bid(p2, orderId, spec, 200, A100);
    }

    function test_finding5_settleSkipsAProviderThatDroppedARequiredAttribute() public {
        vm.prank(p1);
        registry.update("e", GATEWAY_CERT, _list(TIER), _res(8000, 32768, 102400), _gpus(A100, 4));
        vm.warp(START + WINDOW);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidSkipped(orderId, 0, p1);
        vm.prank(tenant);
        market.settle(orderId);
        assertEq(market.getLease(orderId).provider, p2, "the still-eligible bid wins");
    }

    function test_finding5_acceptBidRefusesAProviderThatDroppedARequiredAttribute() public {
        vm.prank(p1);
        registry.update("e", GATEWAY_CERT, _list(TIER), _res(8000, 32768, 102400), _gpus(A100, 4));
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksAttribute.selector, p1, bytes32(0)));
        market.acceptBid(orderId, 0);
    }

    function test_finding5_acceptBidRefusesAProviderThatDroppedTheGpuModel() public {
        vm.prank(p1);
        registry.update("e", GATEWAY_CERT, _list(EU, TIER), _res(8000, 32768, 102400), _gpus(H100, 4));
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksGpuModel.selector, p1, A100));
        market.acceptBid(orderId, 0);
    }

    function test_unchangedAttributesKeepTheBid() public {
        uint32 epoch = registry.attributeEpoch(p1);
        vm.prank(p1);
        registry.update("e2", GATEWAY_CERT, _list(EU, TIER), _res(6000, 32768, 102400), _gpus(A100, 4));
        assertEq(registry.attributeEpoch(p1), epoch, "same set, same epoch");
        vm.prank(tenant);
        market.acceptBid(orderId, 0);
        assertEq(market.getLease(orderId).provider, p1, "capacity-only update keeps the bid");
    }
}

/// Issue #11 follow-up: a slash could take a stake below `minimumStake` and the provider went on
/// bidding and winning as if fully staked. Now it may neither bid nor win until it tops up.
contract StakeBelowMinimumTest is Fixture {
    uint256 internal slashedLease;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
        slashedLease = _pendingLease(p1, PRICE);
        vm.warp(START + DELIVERY);
        market.closeUndelivered(slashedLease);
        assertEq(registry.getProvider(p1).stake, MIN_STAKE * 9 / 10, "slashed below the minimum");
    }

    function test_aProviderBelowMinimumStakeCannotBidUntilToppedUp() public {
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        uint256 orderId = _order(spec);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderStakeBelowMinimum.selector, p1));
        market.placeBid(orderId, PRICE, _noGpu(), spec.allowedGpuModels, spec.requiredAttributes);

        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroAmount.selector));
        registry.addStake(0);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotActive.selector, stranger));
        registry.addStake(1);
        vm.prank(p1);
        registry.addStake(MIN_STAKE / 10 - 1);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderStakeBelowMinimum.selector, p1));
        market.placeBid(orderId, PRICE, _noGpu(), spec.allowedGpuModels, spec.requiredAttributes);

        vm.expectEmit(true, false, false, true, address(registry));
        emit ProviderRegistry.StakeAdded(p1, 1, MIN_STAKE);
        vm.prank(p1);
        registry.addStake(1);
        _bid(p1, orderId, spec, PRICE, bytes32(0));
        assertEq(token.balanceOf(address(registry)), 2 * MIN_STAKE, "registry holds both full stakes");
    }

    function test_aProviderSlashedAfterBiddingCannotWin() public {
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        uint256 orderId = _order(spec);
        _bid(p2, orderId, spec, PRICE / 2, bytes32(0));
        uint256 dearer = _bid(p3Registered(), orderId, spec, PRICE, bytes32(0));
        // p2 fails a delivery elsewhere after bidding
        uint256 other = _pendingLease(p2, PRICE);
        vm.warp(block.timestamp + DELIVERY);
        market.closeUndelivered(other);
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderStakeBelowMinimum.selector, p2));
        market.acceptBid(orderId, 0);
        vm.prank(tenant);
        market.settle(orderId);
        assertEq(market.getLease(orderId).bidId, dearer, "settle passes over the under-staked bid");
    }

    function p3Registered() internal returns (address) {
        _registerDefault(p3);
        return p3;
    }

    function _noGpu() internal pure returns (GpuBid memory bid) {}
}
