// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Fixture} from "./utils/Fixture.sol";
import {vm} from "./utils/Vm.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {ProviderRegistry} from "../src/ProviderRegistry.sol";
import {GpuCapacity, Resources} from "../src/Types.sol";

/// @notice An order's `AutoAccept` rule: the first covered bid becomes the lease in the bid's
/// own transaction, through the same match checks as `acceptBid`; everything else about the
/// bid (eligibility at bid time, bonds, one lease per order) is unchanged.
contract AutoAcceptTest is Fixture {
    Marketplace.OrderSpec internal spec;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
        spec = _gpuSpec(2, _list(A100), _list(EU));
    }

    function _status(uint256 orderId) internal view returns (Marketplace.OrderStatus) {
        return market.getOrder(orderId).status;
    }

    function test_autoAccept_qualifyingBidCreatesTheLease() public {
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.AutoAcceptSet(1, address(0), 500);
        uint256 orderId = _autoAcceptOrder(spec, address(0), 500);

        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidPlaced(orderId, 0, p1, 500, A100);
        vm.expectEmit(true, true, true, true, address(market));
        emit Marketplace.LeaseCreated(orderId, tenant, p1, 0, 500, A100);
        _bid(p1, orderId, spec, 500, A100);

        assertEq(uint256(_status(orderId)), uint256(Marketplace.OrderStatus.Leased), "leased by the bid");
        Marketplace.LeaseView memory lease = market.getLease(orderId);
        assertEq(lease.provider, p1, "provider");
        assertEq(lease.pricePerHour, 500, "the bid's price");
        assertEq(lease.gpuModel, A100, "model");
        assertEq(lease.deliveryDeadline, START + DELIVERY, "delivery window from the bid's block");
        assertEq(lease.escrow, DEPOSIT, "escrow");
        assertFalse(lease.confirmed, "pending until the provider confirms");
        Resources memory alloc = _allocated(p1);
        assertEq(alloc.cpuMilli, 4000, "cpu reserved");
        (, uint32 gpus) = registry.gpuState(p1, A100);
        assertEq(gpus, 2, "gpus reserved");
    }

    function test_autoAccept_bidAboveTheRulesPriceStaysAPlainBid() public {
        uint256 orderId = _autoAcceptOrder(spec, address(0), 400);
        _bid(p1, orderId, spec, 401, A100);
        assertEq(uint256(_status(orderId)), uint256(Marketplace.OrderStatus.Open), "plain bid");
        assertEq(_allocated(p1).cpuMilli, 0, "nothing reserved");
        _bid(p2, orderId, spec, 400, A100);
        assertEq(market.getLease(orderId).provider, p2, "the covered bid won");
        assertEq(market.getLease(orderId).bidId, 1, "its bid id");
    }

    function test_autoAccept_onlyTheNamedProvider() public {
        uint256 orderId = _autoAcceptOrder(spec, p2, PRICE);
        _bid(p1, orderId, spec, 100, A100);
        assertEq(uint256(_status(orderId)), uint256(Marketplace.OrderStatus.Open), "another provider: plain bid");
        _bid(p2, orderId, spec, 200, A100);
        assertEq(market.getLease(orderId).provider, p2, "the named provider's bid is the lease");
    }

    function test_autoAccept_providerFailingTheOrdersRequirementsCannotBid() public {
        // p3 has the GPUs but not the EU attribute: refused exactly as without the rule.
        _register(p3, _list(TIER), _res(8000, 32768, 102400), _gpus(A100, 4));
        uint256 orderId = _autoAcceptOrder(spec, address(0), PRICE);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksAttribute.selector, p3, EU));
        _bid(p3, orderId, spec, 100, A100);
        assertEq(uint256(_status(orderId)), uint256(Marketplace.OrderStatus.Open), "still open");
    }

    function test_autoAccept_bidFailingTheMatchChecksStaysAPlainBid() public {
        // p1's CPU is fully taken by a running lease: it may bid (total capacity suffices) but
        // `acceptBid` would refuse it, so the rule does not match it either.
        Marketplace.OrderSpec memory big = _cpuSpec(8000, 1024, 0);
        uint256 first = _order(big);
        _bid(p1, first, big, 100, bytes32(0));
        vm.prank(tenant);
        market.acceptBid(first, 0);

        uint256 orderId = _autoAcceptOrder(big, address(0), PRICE);
        _bid(p1, orderId, big, 100, bytes32(0));
        assertEq(uint256(_status(orderId)), uint256(Marketplace.OrderStatus.Open), "plain bid");
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksCapacity.selector, p1));
        market.acceptBid(orderId, 0);
        _bid(p2, orderId, big, 200, bytes32(0));
        assertEq(market.getLease(orderId).provider, p2, "the next covered bid with room wins");
    }

    function test_autoAccept_laterBidsAreRefusedAsAfterAcceptBid() public {
        uint256 orderId = _autoAcceptOrder(spec, address(0), PRICE);
        _bid(p1, orderId, spec, 500, A100);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.OrderNotOpen.selector, orderId, Marketplace.OrderStatus.Leased)
        );
        _bid(p2, orderId, spec, 400, A100);
        vm.prank(tenant);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.OrderNotOpen.selector, orderId, Marketplace.OrderStatus.Leased)
        );
        market.acceptBid(orderId, 0);
    }

    function test_autoAccept_bondsResolveAsAfterAcceptBid() public {
        uint256 orderId = _autoAcceptOrder(spec, address(0), 400);
        _bid(p1, orderId, spec, 500, A100); // above the rule: a plain, honest losing bid
        _bid(p2, orderId, spec, 400, A100); // the lease
        assertEq(registry.getProvider(p1).lockedBonds, BID_BOND, "loser's bond locked until release");
        assertEq(registry.getProvider(p2).lockedBonds, BID_BOND, "winner's bond locked until release");
        vm.expectEmit(true, true, false, true, address(registry));
        emit ProviderRegistry.BondReleased(orderId, 0, p1, BID_BOND);
        vm.expectEmit(true, true, false, true, address(registry));
        emit ProviderRegistry.BondReleased(orderId, 1, p2, BID_BOND);
        vm.prank(stranger);
        registry.releaseBonds(orderId, _bidIds(2));
        for (uint256 i = 0; i < 2; ++i) {
            ProviderRegistry.ProviderView memory info = registry.getProvider(i == 0 ? p1 : p2);
            assertEq(info.stake, MIN_STAKE, "stake whole");
            assertEq(info.lockedBonds, 0, "nothing locked");
        }
        assertEq(registry.claimable(IERC20(address(token)), tenant), 0, "tenant gets nothing");
    }

    function test_autoAccept_leaseClosesLikeAnyOther() public {
        uint256 orderId = _autoAcceptOrder(spec, address(0), PRICE);
        _bid(p1, orderId, spec, PRICE, A100);
        vm.prank(p1);
        market.confirmLease(orderId);
        vm.warp(START + 1 hours);
        uint256 before = token.balanceOf(p1);
        vm.prank(tenant);
        market.closeLease(orderId, 1);
        assertEq(token.balanceOf(p1) - before, PRICE, "an hour paid");
        assertEq(_allocated(p1).cpuMilli, 0, "released");
    }

    function test_createOrderWithPermit_revertsWhenTheRulesPriceExceedsTheOrders() public {
        Marketplace.Permit memory noPermit;
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.PriceAboveMax.selector, PRICE + 1, PRICE));
        market.createOrderWithPermit(
            IERC20(address(token)),
            spec,
            MANIFEST,
            PRICE,
            DEPOSIT,
            WINDOW,
            DELIVERY,
            noPermit,
            Marketplace.AutoAccept(address(0), uint88(PRICE + 1))
        );
    }

    function test_noRule_bidStaysAPlainBid() public {
        Marketplace.Permit memory noPermit;
        vm.prank(tenant);
        uint256 orderId = market.createOrderWithPermit(
            IERC20(address(token)), spec, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY, noPermit, _noAutoAccept()
        );
        _bid(p1, orderId, spec, 100, A100);
        assertEq(uint256(_status(orderId)), uint256(Marketplace.OrderStatus.Open), "the tenant matches");
    }
}
