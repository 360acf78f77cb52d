// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Fixture} from "./utils/Fixture.sol";
import {vm} from "./utils/Vm.sol";
import {ProviderRegistry} from "../src/ProviderRegistry.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {TokenTransfers} from "../src/TokenTransfers.sol";
import {Resources} from "../src/Types.sol";
import {GpuModels} from "../src/GpuModels.sol";
import {gpuBidFor} from "./utils/GpuBids.sol";
import {FeeOnTransferToken, ReentrantToken} from "./mocks/MockTokens.sol";

contract MarketplaceOrderTest is Fixture {
    function test_constructor_revertsOnZeroRegistry() public {
        vm.expectRevert(Marketplace.ZeroAddress.selector);
        new Marketplace(ProviderRegistry(address(0)));
    }

    function test_createOrder_escrowsDepositAndStoresOrder() public {
        Marketplace.OrderSpec memory spec = _gpuSpec(2, _list(A100, H100), _list(EU));
        spec.replicas = 3;
        uint256 before = token.balanceOf(tenant);
        vm.expectEmit(true, true, true, true, address(market));
        emit Marketplace.OrderCreated(1, tenant, address(token), spec, MANIFEST, PRICE, DEPOSIT, uint64(START) + WINDOW);
        uint256 orderId = _order(spec);

        assertEq(orderId, 1, "first id");
        assertEq(market.nextOrderId(), 2, "next id");
        assertEq(before - token.balanceOf(tenant), DEPOSIT, "deposit pulled");
        assertEq(token.balanceOf(address(market)), DEPOSIT, "escrowed");
        Marketplace.OrderView memory o = market.getOrder(orderId);
        assertEq(o.tenant, tenant, "tenant");
        assertEq(address(o.token), address(token), "token");
        assertEq(uint256(o.status), uint256(Marketplace.OrderStatus.Open), "open");
        assertEq(o.replicas, 3, "replicas");
        assertEq(o.gpuCount, 2, "gpus");
        assertEq(o.bidWindowEnd, START + WINDOW, "window");
        assertEq(o.resources.cpuMilli, 4000, "cpu");
        assertEq(o.resources.memoryMiB, 16384, "memory");
        assertEq(o.resources.storageMiB, 10240, "storage");
        assertEq(o.maxPricePerHour, PRICE, "price");
        assertEq(o.escrow, DEPOSIT, "escrow");
        assertEq(o.manifestHash, MANIFEST, "manifest");
        assertEq(o.groupName, GROUP, "group name");
        assertEq(o.requirementsHash, keccak256(abi.encode(_list(A100, H100), _list(EU))), "requirements");
        assertEq(market.requirementsHash(_none(), _none()), bytes32(0), "empty requirements hash");
    }

    /// Leased IPs are not stored (contract size): the bound is checked and `OrderCreated`
    /// publishes the count, which bidders read to decide whether their address pool can serve.
    function test_createOrder_leasedIps_boundedAndPublished() public {
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        spec.leasedIps = 17;
        vm.startPrank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeasedIpsOutOfRange.selector, 17, 16));
        market.createOrder(IERC20(address(token)), spec, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);
        vm.stopPrank();

        spec.leasedIps = 16;
        vm.expectEmit(true, true, true, true, address(market));
        emit Marketplace.OrderCreated(1, tenant, address(token), spec, MANIFEST, PRICE, DEPOSIT, uint64(START) + WINDOW);
        assertEq(_order(spec), 1, "sixteen leased IPs are accepted");
    }

    function test_createOrder_revertsOnBadParameters() public {
        Marketplace.OrderSpec memory ok = _cpuSpec(1000, 1024, 0);
        IERC20 t = IERC20(address(token));
        vm.startPrank(tenant);

        vm.expectRevert(Marketplace.ZeroAddress.selector);
        market.createOrder(IERC20(address(0)), ok, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        Marketplace.OrderSpec memory unnamed = _cpuSpec(1000, 1024, 0);
        unnamed.groupName = bytes32(0);
        vm.expectRevert(Marketplace.ZeroGroupName.selector);
        market.createOrder(t, unnamed, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        vm.expectRevert(Marketplace.ZeroResources.selector);
        market.createOrder(t, _cpuSpec(0, 1024, 0), MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);
        vm.expectRevert(Marketplace.ZeroResources.selector);
        market.createOrder(t, _cpuSpec(1000, 0, 0), MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        Marketplace.OrderSpec memory s = _gpuSpec(4097, _none(), _none());
        vm.expectRevert(abi.encodeWithSelector(Marketplace.GpuCountOutOfRange.selector, 4097, 4096));
        market.createOrder(t, s, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        s = _cpuSpec(1000, 1024, 0);
        s.replicas = 0;
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ReplicasOutOfRange.selector, 0, 1024));
        market.createOrder(t, s, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);
        s.replicas = 1025;
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ReplicasOutOfRange.selector, 1025, 1024));
        market.createOrder(t, s, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        s = _gpuSpec(1, new bytes32[](17), _none());
        vm.expectRevert(abi.encodeWithSelector(Marketplace.TooManyAllowedGpuModels.selector, 17, 16));
        market.createOrder(t, s, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        s = _gpuSpec(0, _list(A100), _none());
        vm.expectRevert(Marketplace.GpuModelsWithoutGpus.selector);
        market.createOrder(t, s, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        s = _gpuSpec(1, _none(), new bytes32[](17));
        vm.expectRevert(abi.encodeWithSelector(Marketplace.TooManyRequiredAttributes.selector, 17, 16));
        market.createOrder(t, s, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        uint256 maxPrice = market.MAX_PRICE_PER_HOUR();
        vm.expectRevert(abi.encodeWithSelector(Marketplace.PriceOutOfRange.selector, 0, maxPrice));
        market.createOrder(t, ok, MANIFEST, 0, DEPOSIT, WINDOW, DELIVERY);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.PriceOutOfRange.selector, maxPrice + 1, maxPrice));
        market.createOrder(t, ok, MANIFEST, maxPrice + 1, DEPOSIT, WINDOW, DELIVERY);

        uint256 maxEscrow = market.MAX_ESCROW();
        vm.expectRevert(abi.encodeWithSelector(Marketplace.DepositOutOfRange.selector, 0, maxEscrow));
        market.createOrder(t, ok, MANIFEST, PRICE, 0, WINDOW, DELIVERY);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.DepositOutOfRange.selector, maxEscrow + 1, maxEscrow));
        market.createOrder(t, ok, MANIFEST, PRICE, maxEscrow + 1, WINDOW, DELIVERY);

        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidWindowOutOfRange.selector, 0, 1, 7 days));
        market.createOrder(t, ok, MANIFEST, PRICE, DEPOSIT, 0, DELIVERY);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidWindowOutOfRange.selector, 7 days + 1, 1, 7 days));
        market.createOrder(t, ok, MANIFEST, PRICE, DEPOSIT, 7 days + 1, DELIVERY);
        vm.stopPrank();
        assertEq(market.nextOrderId(), 1, "nothing created");
    }

    /// @dev Each order keeps the group name it was posted with, so two equal-sized groups of one
    /// deployment stay distinguishable on chain.
    function testFuzz_createOrder_storesItsGroupName(bytes32 first, bytes32 second) public {
        vm.assume(first != bytes32(0) && second != bytes32(0));
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        spec.groupName = first;
        uint256 a = _order(spec);
        spec.groupName = second;
        uint256 b = _order(spec);
        assertEq(market.getOrder(a).groupName, first, "first order's group");
        assertEq(market.getOrder(b).groupName, second, "second order's group");
    }

    function test_createOrder_rejectsFeeOnTransferToken() public {
        FeeOnTransferToken fee = new FeeOnTransferToken();
        fee.mint(tenant, DEPOSIT);
        vm.startPrank(tenant);
        fee.approve(address(market), DEPOSIT);
        vm.expectRevert(
            abi.encodeWithSelector(
                TokenTransfers.UnsupportedTokenTransfer.selector, address(fee), DEPOSIT, DEPOSIT - DEPOSIT / 100
            )
        );
        market.createOrder(IERC20(address(fee)), _cpuSpec(1, 1, 0), MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);
        vm.stopPrank();
    }

    function test_cancelOrder_refundsEverything() public {
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 0);
        uint256 orderId = _order(spec);
        vm.prank(stranger);
        market.topUp(orderId, 5e6);
        uint256 before = token.balanceOf(tenant);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.OrderCancelled(orderId, tenant, DEPOSIT + 5e6);
        vm.prank(tenant);
        market.cancelOrder(orderId);
        assertEq(token.balanceOf(tenant) - before, DEPOSIT + 5e6, "full refund incl. top-up");
        assertEq(token.balanceOf(address(market)), 0, "escrow empty");
        Marketplace.OrderView memory o = market.getOrder(orderId);
        assertEq(uint256(o.status), uint256(Marketplace.OrderStatus.Cancelled), "cancelled");
        assertEq(o.escrow, 0, "no escrow");
    }

    function test_cancelOrder_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(Marketplace.OrderNotFound.selector, 9));
        market.cancelOrder(9);

        uint256 orderId = _order(_cpuSpec(1000, 1024, 0));
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.NotTenant.selector, stranger));
        market.cancelOrder(orderId);

        _registerDefault(p1);
        uint256 leaseId = _lease(p1, PRICE);
        vm.prank(tenant);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.OrderNotOpen.selector, leaseId, Marketplace.OrderStatus.Leased)
        );
        market.cancelOrder(leaseId);
    }

    function test_topUp_byAnyoneOnOrderAndLease() public {
        uint256 orderId = _order(_cpuSpec(1000, 1024, 0));
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.EscrowToppedUp(orderId, stranger, 7, DEPOSIT + 7);
        vm.prank(stranger);
        market.topUp(orderId, 7);
        assertEq(market.getOrder(orderId).escrow, DEPOSIT + 7, "order topped up");

        _registerDefault(p1);
        uint256 leaseId = _lease(p1, PRICE);
        vm.prank(tenant2);
        market.topUp(leaseId, 11);
        assertEq(market.getLease(leaseId).escrow, DEPOSIT + 11, "lease topped up");
        assertEq(token.balanceOf(address(market)), 2 * DEPOSIT + 18, "held");
    }

    function test_topUp_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(Marketplace.OrderNotFound.selector, 1));
        market.topUp(1, 1);

        uint256 orderId = _order(_cpuSpec(1000, 1024, 0));
        vm.expectRevert(Marketplace.ZeroAmount.selector);
        market.topUp(orderId, 0);

        uint256 maxEscrow = market.MAX_ESCROW();
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.EscrowCapExceeded.selector, DEPOSIT, maxEscrow - DEPOSIT + 1, maxEscrow)
        );
        market.topUp(orderId, maxEscrow - DEPOSIT + 1);

        vm.prank(tenant);
        market.cancelOrder(orderId);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.OrderNotOpen.selector, orderId, Marketplace.OrderStatus.Cancelled)
        );
        market.topUp(orderId, 1);
    }
}

contract MarketplaceBidTest is Fixture {
    Marketplace.OrderSpec internal gpuSpec;
    uint256 internal gpuOrder;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
        gpuSpec = _gpuSpec(2, _list(A100), _list(EU));
        gpuOrder = _order(gpuSpec);
    }

    function test_placeBid_recordsBid() public {
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidPlaced(gpuOrder, 0, p1, PRICE - 1, A100);
        uint256 bidId = _bid(p1, gpuOrder, gpuSpec, PRICE - 1, A100);
        assertEq(bidId, 0, "first bid");
        assertEq(_bid(p2, gpuOrder, gpuSpec, PRICE, A100), 1, "second bid");

        Marketplace.BidView memory b = market.getBid(gpuOrder, 0);
        assertEq(b.provider, p1, "provider");
        assertEq(b.pricePerHour, PRICE - 1, "price");
        assertEq(b.gpuModel, A100, "model");
        assertFalse(b.withdrawn, "live");
        assertEq(market.getBids(gpuOrder).length, 2, "two bids");
        assertEq(market.getOrder(gpuOrder).bidCount, 2, "count");
    }

    function test_placeBid_cpuOrderAndAnyGpuModel() public {
        Marketplace.OrderSpec memory cpu = _cpuSpec(1000, 1024, 0);
        uint256 cpuOrder = _order(cpu);
        _bid(p1, cpuOrder, cpu, 1, bytes32(0));
        assertEq(market.getBid(cpuOrder, 0).gpuModel, bytes32(0), "no gpu model");

        Marketplace.OrderSpec memory anyGpu = _gpuSpec(1, _none(), _none());
        uint256 anyOrder = _order(anyGpu);
        _bid(p1, anyOrder, anyGpu, 1, A100);
        assertEq(market.getBid(anyOrder, 0).gpuModel, A100, "any model accepted");
    }

    function test_placeBid_revertsOnOrderState() public {
        vm.expectRevert(abi.encodeWithSelector(Marketplace.OrderNotFound.selector, 99));
        _bid(p1, 99, gpuSpec, 1, A100);
        vm.prank(tenant);
        market.cancelOrder(gpuOrder);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.OrderNotOpen.selector, gpuOrder, Marketplace.OrderStatus.Cancelled)
        );
        _bid(p1, gpuOrder, gpuSpec, 1, A100);
    }

    function test_placeBid_revertsOnPrice() public {
        vm.expectRevert(abi.encodeWithSelector(Marketplace.PriceOutOfRange.selector, 0, market.MAX_PRICE_PER_HOUR()));
        _bid(p1, gpuOrder, gpuSpec, 0, A100);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.PriceAboveMax.selector, PRICE + 1, PRICE));
        _bid(p1, gpuOrder, gpuSpec, PRICE + 1, A100);
    }

    function test_placeBid_revertsOnWrongRequirements() public {
        bytes32 expected = keccak256(abi.encode(_list(A100), _list(EU)));
        bytes32 supplied = keccak256(abi.encode(_list(A100), _list(US)));
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.RequirementsMismatch.selector, expected, supplied));
        market.placeBid(gpuOrder, 1, gpuBidFor(A100, _list(A100)), _list(A100), _list(US));
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.RequirementsMismatch.selector, expected, bytes32(0)));
        market.placeBid(gpuOrder, 1, gpuBidFor(A100, _none()), _none(), _none());
    }

    function test_placeBid_oneBidPerProvider() public {
        _bid(p1, gpuOrder, gpuSpec, 1, A100);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.AlreadyBid.selector, gpuOrder, p1));
        _bid(p1, gpuOrder, gpuSpec, 2, A100);
        vm.prank(p1);
        market.withdrawBid(gpuOrder, 0);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.AlreadyBid.selector, gpuOrder, p1));
        _bid(p1, gpuOrder, gpuSpec, 2, A100);
    }

    function test_placeBid_atMostMaxBids() public {
        Marketplace.OrderSpec memory cpu = _cpuSpec(100, 100, 0);
        uint256 orderId = _order(cpu);
        for (uint256 i = 0; i < 16; ++i) {
            address provider = address(uint160(0x1000 + i));
            token.faucet(provider, MIN_STAKE);
            vm.prank(provider);
            token.approve(address(registry), MIN_STAKE);
            _register(provider, _none(), _res(1000, 1000, 0), _noGpus());
            _bid(provider, orderId, cpu, 1 + i, bytes32(0));
        }
        // full of eligible bids: only a strictly cheaper one than the dearest (16) gets in
        vm.expectRevert(abi.encodeWithSelector(Marketplace.TooManyBids.selector, orderId, 16));
        _bid(p1, orderId, cpu, 16, bytes32(0));
    }

    function test_placeBid_revertsOnGpuModel() public {
        Marketplace.OrderSpec memory cpu = _cpuSpec(1000, 1024, 0);
        uint256 cpuOrder = _order(cpu);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.GpuModelNotAllowed.selector, A100));
        _bid(p1, cpuOrder, cpu, 1, A100);

        vm.expectRevert(abi.encodeWithSelector(GpuModels.InvalidGpuModelPart.selector, 0));
        _bid(p1, gpuOrder, gpuSpec, 1, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(Marketplace.GpuModelNotAllowed.selector, H100));
        _bid(p1, gpuOrder, gpuSpec, 1, H100);
    }

    function test_placeBid_revertsOnIneligibleProvider() public {
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderNotActive.selector, p3));
        _bid(p3, gpuOrder, gpuSpec, 1, A100);

        _register(p3, _list(US), _res(8000, 32768, 102400), _gpus(A100, 4));
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksAttribute.selector, p3, EU));
        _bid(p3, gpuOrder, gpuSpec, 1, A100);

        vm.prank(p3);
        registry.update("e", GATEWAY_CERT, _list(EU), _res(8000, 32768, 102400), _gpus(A100, 1));
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksGpuModel.selector, p3, A100));
        _bid(p3, gpuOrder, gpuSpec, 1, A100);

        vm.prank(p3);
        registry.update("e", GATEWAY_CERT, _list(EU), _res(1000, 32768, 102400), _gpus(A100, 2));
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksCapacity.selector, p3));
        _bid(p3, gpuOrder, gpuSpec, 1, A100);

        vm.prank(p1);
        registry.deregister();
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderNotActive.selector, p1));
        _bid(p1, gpuOrder, gpuSpec, 1, A100);
    }

    function test_withdrawBid_marksWithdrawn() public {
        _bid(p1, gpuOrder, gpuSpec, 1, A100);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidWithdrawn(gpuOrder, 0, p1);
        vm.prank(p1);
        market.withdrawBid(gpuOrder, 0);
        assertTrue(market.getBid(gpuOrder, 0).withdrawn, "withdrawn");
    }

    function test_withdrawBid_reverts() public {
        _bid(p1, gpuOrder, gpuSpec, 1, A100);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidNotFound.selector, gpuOrder, 1));
        market.withdrawBid(gpuOrder, 1);
        vm.prank(p2);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.NotProvider.selector, p2));
        market.withdrawBid(gpuOrder, 0);
        vm.prank(p1);
        market.withdrawBid(gpuOrder, 0);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidAlreadyWithdrawn.selector, gpuOrder, 0));
        market.withdrawBid(gpuOrder, 0);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.OrderNotFound.selector, 77));
        market.withdrawBid(77, 0);
    }

    function test_getBid_revertsOnUnknownBid() public {
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidNotFound.selector, gpuOrder, 0));
        market.getBid(gpuOrder, 0);
    }
}

contract MarketplaceMatchTest is Fixture {
    Marketplace.OrderSpec internal spec;
    uint256 internal orderId;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
        _registerDefault(p3);
        spec = _gpuSpec(2, _list(A100), _list(EU));
        orderId = _order(spec);
    }

    function test_acceptBid_createsLeaseAndReserves() public {
        _bid(p1, orderId, spec, 500, A100);
        _bid(p2, orderId, spec, 400, A100);
        vm.expectEmit(true, true, true, true, address(market));
        emit Marketplace.LeaseCreated(orderId, tenant, p1, 0, 500, A100);
        vm.prank(tenant);
        market.acceptBid(orderId, 0); // not the cheapest: the tenant's choice, before the window ends

        Marketplace.LeaseView memory l = market.getLease(orderId);
        assertEq(l.tenant, tenant, "tenant");
        assertEq(l.provider, p1, "provider");
        assertEq(address(l.token), address(token), "token");
        assertEq(l.bidId, 0, "bid");
        assertTrue(l.active, "active");
        assertEq(l.startedAt, 0, "pending: nothing accrues before the provider confirms");
        assertFalse(l.confirmed, "pending");
        assertEq(l.deliveryDeadline, START + DELIVERY, "delivery deadline");
        assertEq(l.closedAt, 0, "not closed");
        assertEq(l.pricePerHour, 500, "price");
        assertEq(l.gpuModel, A100, "model");
        assertEq(l.paid, 0, "paid");
        assertEq(l.escrow, DEPOSIT, "escrow");
        assertEq(uint256(market.getOrder(orderId).status), uint256(Marketplace.OrderStatus.Leased), "leased");

        Resources memory alloc = _allocated(p1);
        assertEq(alloc.cpuMilli, 4000, "cpu reserved");
        assertEq(alloc.memoryMiB, 16384, "memory reserved");
        assertEq(alloc.storageMiB, 10240, "storage reserved");
        (, uint32 gpus) = registry.gpuState(p1, A100);
        assertEq(gpus, 2, "gpus reserved");
    }

    function test_acceptBid_reverts() public {
        _bid(p1, orderId, spec, 500, A100);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.NotTenant.selector, stranger));
        market.acceptBid(orderId, 0);
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidNotFound.selector, orderId, 1));
        market.acceptBid(orderId, 1);
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.OrderNotFound.selector, 42));
        market.acceptBid(42, 0);

        _bid(p2, orderId, spec, 500, A100);
        vm.prank(p2);
        market.withdrawBid(orderId, 1);
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidAlreadyWithdrawn.selector, orderId, 1));
        market.acceptBid(orderId, 1);

        vm.prank(tenant);
        market.acceptBid(orderId, 0);
        vm.prank(tenant);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.OrderNotOpen.selector, orderId, Marketplace.OrderStatus.Leased)
        );
        market.acceptBid(orderId, 0);
    }

    function test_acceptBid_revertsWhenProviderFull() public {
        _bid(p1, orderId, spec, 500, A100);
        // p1 wins another order that takes 3 of its 4 GPUs
        Marketplace.OrderSpec memory big = _gpuSpec(3, _list(A100), _none());
        uint256 other = _order(big);
        _bid(p1, other, big, 500, A100);
        vm.prank(tenant);
        market.acceptBid(other, 0);

        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderLacksCapacity.selector, p1));
        market.acceptBid(orderId, 0);
        (, uint32 gpus) = registry.gpuState(p1, A100);
        assertEq(gpus, 3, "never over-awarded");
    }

    function test_settle_lowestPriceWins() public {
        _bid(p1, orderId, spec, 500, A100);
        _bid(p2, orderId, spec, 300, A100);
        _bid(p3, orderId, spec, 400, A100);
        vm.warp(START + WINDOW + market.TENANT_GRACE());
        vm.prank(stranger);
        market.settle(orderId);
        assertEq(market.getLease(orderId).provider, p2, "cheapest");
        assertEq(market.getLease(orderId).bidId, 1, "bid id");
    }

    function test_settle_earliestBidWinsTie() public {
        _bid(p3, orderId, spec, 300, A100);
        _bid(p1, orderId, spec, 300, A100);
        _bid(p2, orderId, spec, 300, A100);
        vm.warp(START + WINDOW + market.TENANT_GRACE());
        market.settle(orderId);
        assertEq(market.getLease(orderId).provider, p3, "earliest of equal prices");
    }

    function test_settle_skipsProvidersWithoutRoomAndWithdrawnBids() public {
        _bid(p1, orderId, spec, 100, A100);
        _bid(p2, orderId, spec, 200, A100);
        _bid(p3, orderId, spec, 300, A100);
        // p1 fills up elsewhere, p2 withdraws: p3 must win
        Marketplace.OrderSpec memory big = _gpuSpec(4, _list(A100), _none());
        uint256 other = _order(big);
        _bid(p1, other, big, 1, A100);
        vm.prank(tenant);
        market.acceptBid(other, 0);
        vm.prank(p2);
        market.withdrawBid(orderId, 1);

        vm.warp(START + WINDOW + market.TENANT_GRACE());
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidSkipped(orderId, 0, p1);
        vm.expectEmit(true, true, true, true, address(market));
        emit Marketplace.LeaseCreated(orderId, tenant, p3, 2, 300, A100);
        market.settle(orderId);
        (, uint32 gpus) = registry.gpuState(p1, A100);
        assertEq(gpus, 4, "p1 not over-awarded");
    }

    function test_settle_skipsUnbondingProvider() public {
        _bid(p1, orderId, spec, 100, A100);
        _bid(p2, orderId, spec, 200, A100);
        vm.prank(p1);
        registry.deregister();
        vm.warp(START + WINDOW + market.TENANT_GRACE());
        market.settle(orderId);
        assertEq(market.getLease(orderId).provider, p2, "active provider wins");
    }

    function test_settle_reverts() public {
        uint256 empty = _order(spec);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.BidWindowOpen.selector, orderId, uint64(START) + WINDOW));
        market.settle(orderId);
        _bid(p1, orderId, spec, 100, A100);
        vm.warp(START + WINDOW + market.TENANT_GRACE());
        vm.expectRevert(abi.encodeWithSelector(Marketplace.NoEligibleBid.selector, empty));
        market.settle(empty);

        vm.prank(p1);
        registry.update("e", GATEWAY_CERT, _list(EU, TIER), _res(3000, 32768, 102400), _gpus(A100, 4));
        // p1 no longer has room: its bid is passed over for good, even by the call that then
        // finds nothing else (the skip is kept: the bid's bond is forfeit)
        market.settle(orderId);
        assertTrue(market.getBid(orderId, 0).withdrawn, "passed over");
        vm.prank(p1);
        registry.update("e", GATEWAY_CERT, _list(EU, TIER), _res(8000, 32768, 102400), _gpus(A100, 4));
        vm.expectRevert(abi.encodeWithSelector(Marketplace.NoEligibleBid.selector, orderId));
        market.settle(orderId);

        vm.prank(tenant);
        market.cancelOrder(orderId);
        vm.expectRevert(
            abi.encodeWithSelector(Marketplace.OrderNotOpen.selector, orderId, Marketplace.OrderStatus.Cancelled)
        );
        market.settle(orderId);
    }
}

contract MarketplaceLeaseTest is Fixture {
    uint256 internal leaseId;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        leaseId = _lease(p1, PRICE); // 1000 base units per second
    }

    function test_withdraw_paysAccrued() public {
        vm.warp(START + 100);
        uint256 before = token.balanceOf(p1);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.PaymentWithdrawn(leaseId, p1, 100_000, 100_000);
        vm.prank(p1);
        assertEq(market.withdraw(leaseId), 100_000, "returned");
        assertEq(token.balanceOf(p1) - before, 100_000, "paid");
        assertEq(market.getLease(leaseId).paid, 100_000, "recorded");
        assertEq(market.getLease(leaseId).escrow, DEPOSIT - 100_000, "escrow reduced");

        vm.prank(p1);
        assertEq(market.withdraw(leaseId), 0, "nothing new in the same second");
    }

    function test_owed_whileSolvent() public {
        vm.warp(START + 10);
        (uint256 withdrawable, uint256 shortfall) = market.owed(leaseId);
        assertEq(withdrawable, 10_000, "ten seconds accrued");
        assertEq(shortfall, 0, "covered");
        assertFalse(market.isInsolvent(leaseId), "solvent");
        Marketplace.BidView[] memory bids = market.getBids(leaseId);
        assertEq(bids.length, 1, "one bid");
        assertEq(bids[0].provider, p1, "bidder");
    }

    function test_withdraw_roundsDownCumulatively() public {
        uint256 price = 7; // 7 per hour: 1 base unit every ~514 s
        Marketplace.OrderSpec memory spec = _cpuSpec(10, 10, 0);
        uint256 id = _order(spec);
        _bid(p1, id, spec, price, bytes32(0));
        vm.prank(tenant);
        market.acceptBid(id, 0);
        vm.prank(p1);
        market.confirmLease(id);
        uint256 total;
        for (uint256 t = 1; t <= 20; ++t) {
            vm.warp(START + t * 300);
            vm.prank(p1);
            total += market.withdraw(id);
        }
        assertEq(total, (6000 * price) / 3600, "floor of the cumulative accrual");
    }

    function test_withdraw_cappedAtEscrow() public {
        vm.warp(START + 20 days);
        (uint256 withdrawable, uint256 shortfall) = market.owed(leaseId);
        assertEq(withdrawable, DEPOSIT, "capped");
        assertEq(shortfall, 20 days * 1000 - DEPOSIT, "shortfall");
        assertTrue(market.isInsolvent(leaseId), "insolvent");
        vm.prank(p1);
        assertEq(market.withdraw(leaseId), DEPOSIT, "whole escrow");
        assertEq(token.balanceOf(address(market)), 0, "empty");
        // a later top-up pays the arrears, still capped by the escrow
        vm.prank(tenant);
        market.topUp(leaseId, 5e6);
        vm.prank(p1);
        assertEq(market.withdraw(leaseId), 5e6, "top-up paid out");
    }

    function test_withdraw_reverts() public {
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.NotProvider.selector, stranger));
        market.withdraw(leaseId);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotFound.selector, 99));
        market.withdraw(99);
        vm.prank(tenant);
        market.closeLease(leaseId, 1);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotActive.selector, leaseId));
        market.withdraw(leaseId);
    }

    function test_closeLease_byTenantSettlesRefundsAndReleases() public {
        vm.warp(START + 3600);
        uint256 providerBefore = token.balanceOf(p1);
        uint256 tenantBefore = token.balanceOf(tenant);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.LeaseClosed(leaseId, tenant, 1, PRICE, DEPOSIT - PRICE);
        vm.prank(tenant);
        market.closeLease(leaseId, 1);

        assertEq(token.balanceOf(p1) - providerBefore, PRICE, "one hour paid");
        assertEq(token.balanceOf(tenant) - tenantBefore, DEPOSIT - PRICE, "rest refunded");
        assertEq(token.balanceOf(address(market)), 0, "nothing left");
        Marketplace.LeaseView memory l = market.getLease(leaseId);
        assertFalse(l.active, "closed");
        assertEq(l.closedAt, START + 3600, "closed at");
        assertEq(uint256(market.getOrder(leaseId).status), uint256(Marketplace.OrderStatus.Closed), "order closed");
        Resources memory alloc = _allocated(p1);
        assertEq(alloc.cpuMilli + alloc.memoryMiB + alloc.storageMiB, 0, "released");
        assertEq(registry.getProvider(p1).activeLeases, 0, "no active leases");

        // nothing accrues after closing
        vm.warp(START + 7200);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotActive.selector, leaseId));
        market.owed(leaseId);
        vm.prank(p1);
        registry.deregister();
    }

    function test_closeLease_byProviderWithGpus() public {
        Marketplace.OrderSpec memory spec = _gpuSpec(3, _list(A100), _none());
        uint256 id = _order(spec);
        _bid(p1, id, spec, 100, A100);
        vm.prank(tenant);
        market.acceptBid(id, 0);
        vm.prank(p1);
        market.confirmLease(id);
        (, uint32 gpus) = registry.gpuState(p1, A100);
        assertEq(gpus, 3, "reserved");
        vm.prank(p1);
        market.closeLease(id, 3);
        (, gpus) = registry.gpuState(p1, A100);
        assertEq(gpus, 0, "gpus released");
    }

    function test_closeLease_byAnyoneOnlyWhenInsolvent() public {
        vm.warp(START + 100);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseSolvent.selector, leaseId));
        market.closeLease(leaseId, 4);

        vm.warp(START + DEPOSIT / 1000); // escrow exactly used up
        assertTrue(market.isInsolvent(leaseId), "insolvent");
        uint256 tenantBefore = token.balanceOf(tenant);
        vm.prank(stranger);
        market.closeLease(leaseId, 4);
        assertEq(market.getLease(leaseId).paid, DEPOSIT, "provider got the escrow");
        assertEq(token.balanceOf(tenant), tenantBefore, "nothing left to refund");
        assertEq(token.balanceOf(stranger), 1_000_000e6, "closer gets nothing");
    }

    function test_closeLease_reverts() public {
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotFound.selector, 5));
        market.closeLease(5, 0);
        vm.prank(tenant);
        market.closeLease(leaseId, 0);
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotActive.selector, leaseId));
        market.closeLease(leaseId, 0);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotFound.selector, 5));
        market.getLease(5);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotActive.selector, leaseId));
        market.isInsolvent(leaseId);
    }

    function test_accruedFor_examples() public view {
        assertEq(market.accruedFor(3600, 1), 1, "one per second");
        assertEq(market.accruedFor(3599, 1), 0, "rounds down");
        assertEq(market.accruedFor(1e6, 3600), 1e6, "one hour");
        assertEq(market.accruedFor(1e6, 5399), 1_499_722, "floor");
    }
}

contract MarketplaceReentrancyTest is Fixture {
    function test_tokenCallbackCannotReenter() public {
        ReentrantToken evil = new ReentrantToken();
        evil.mint(tenant, 10 * DEPOSIT);
        vm.prank(tenant);
        evil.approve(address(market), type(uint256).max);
        Marketplace.OrderSpec memory spec = _cpuSpec(1, 1, 0);
        vm.prank(tenant);
        uint256 id = market.createOrder(IERC20(address(evil)), spec, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        // during the refund transfer, try to cancel again (a double refund if it were allowed)
        evil.arm(address(market), abi.encodeCall(Marketplace.cancelOrder, (id)));
        vm.prank(tenant);
        market.cancelOrder(id);
        assertFalse(evil.reentered(), "reentry refused");
        assertEq(
            bytes4(evil.reentryError()), ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector, "guard error"
        );
        assertEq(evil.balanceOf(address(market)), 0, "refunded once");
        assertEq(evil.balanceOf(tenant), 10 * DEPOSIT, "tenant whole");
    }
}

contract MarketplaceManifestUpdateTest is Fixture {
    bytes32 internal constant UPDATED = keccak256("manifest v2");

    function test_updateManifest_recordsRevisionAndHash() public {
        _registerDefault(p1);
        uint256 leaseId = _lease(p1, PRICE);
        assertEq(market.getLease(leaseId).revision, 1, "the order's manifest");
        assertEq(market.getLease(leaseId).manifestHash, MANIFEST, "the order's hash");

        vm.expectEmit(true, false, false, true, address(market));
        emit Marketplace.ManifestUpdated(leaseId, 2, UPDATED);
        vm.prank(tenant);
        market.updateManifest(leaseId, UPDATED);
        Marketplace.LeaseView memory info = market.getLease(leaseId);
        assertEq(info.revision, 2, "revision");
        assertEq(info.manifestHash, UPDATED, "latest hash");
        assertEq(market.getOrder(leaseId).manifestHash, UPDATED, "the order names the latest");
        assertTrue(info.active, "still active");
        assertEq(info.escrow, DEPOSIT, "escrow untouched");

        vm.prank(tenant);
        market.updateManifest(leaseId, MANIFEST);
        assertEq(market.getLease(leaseId).revision, 3, "every update counts");
    }

    function test_updateManifest_worksWhilePending() public {
        _registerDefault(p1);
        uint256 leaseId = _pendingLease(p1, PRICE);
        vm.prank(tenant);
        market.updateManifest(leaseId, UPDATED);
        assertEq(market.getLease(leaseId).revision, 2, "pending leases update too");
        assertFalse(market.getLease(leaseId).confirmed, "still pending");
    }

    function test_updateManifest_onlyTenantOfAnActiveLease() public {
        _registerDefault(p1);
        uint256 leaseId = _lease(p1, PRICE);
        for (uint256 i = 0; i < 3; ++i) {
            address caller = [p1, stranger, tenant2][i];
            vm.expectRevert(abi.encodeWithSelector(Marketplace.NotTenant.selector, caller));
            vm.prank(caller);
            market.updateManifest(leaseId, UPDATED);
        }
        vm.expectRevert(Marketplace.ZeroManifestHash.selector);
        vm.prank(tenant);
        market.updateManifest(leaseId, bytes32(0));

        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotFound.selector, leaseId + 1));
        vm.prank(tenant);
        market.updateManifest(leaseId + 1, UPDATED);

        vm.prank(tenant);
        market.closeLease(leaseId, 0);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.LeaseNotActive.selector, leaseId));
        vm.prank(tenant);
        market.updateManifest(leaseId, UPDATED);
        assertEq(market.getLease(leaseId).revision, 1, "nothing recorded");
    }
}
