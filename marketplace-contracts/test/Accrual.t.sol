// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Fixture} from "./utils/Fixture.sol";
import {bound} from "./utils/Test.sol";
import {vm} from "./utils/Vm.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {MintableToken} from "./mocks/MockTokens.sol";

/// @notice Fuzzed payment maths: rounding in the tenant's favour, cumulative withdrawals that
/// never lose or duplicate a remainder, conservation on close, and no overflow at the bounds.
contract AccrualFuzzTest is Fixture {
    uint256 internal constant HUNDRED_YEARS = 100 * 365 days;

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        token.faucet(tenant, 1_000_000e6); // headroom for large deposits
    }

    function _leaseAt(uint256 price, uint256 deposit) internal returns (uint256 id) {
        Marketplace.OrderSpec memory spec = _cpuSpec(100, 100, 0);
        id = _orderFrom(tenant, spec, price, deposit);
        _bid(p1, id, spec, price, bytes32(0));
        vm.prank(tenant);
        market.acceptBid(id, 0);
        vm.prank(p1);
        market.confirmLease(id);
    }

    function testFuzz_accruedFor_roundsDownByLessThanOneUnit(uint256 price, uint256 elapsed) public view {
        price = bound(price, 0, market.MAX_PRICE_PER_HOUR());
        elapsed = bound(elapsed, 0, HUNDRED_YEARS);
        uint256 accrued = market.accruedFor(price, elapsed);
        uint256 exact = price * elapsed; // in units of 1/3600 base unit
        assertLe(accrued * 3600, exact, "never more than the exact amount");
        assertGt((accrued + 1) * 3600, exact, "short by less than one base unit");
    }

    function testFuzz_accruedFor_isMonotonic(uint256 price, uint256 a, uint256 b) public view {
        price = bound(price, 0, market.MAX_PRICE_PER_HOUR());
        a = bound(a, 0, HUNDRED_YEARS);
        b = bound(b, a, HUNDRED_YEARS);
        assertLe(market.accruedFor(price, a), market.accruedFor(price, b), "monotonic in time");
    }

    /// @dev Many small withdrawals pay exactly what one withdrawal at the end would have.
    function testFuzz_withdrawals_sumToFloorOfTotal(uint256 price, uint256 stepSeed, uint8 steps) public {
        price = bound(price, 1, 1e12);
        uint256 id = _leaseAt(price, 1_000_000e6);
        uint256 count = bound(steps, 1, 30);
        uint256 elapsed;
        uint256 total;
        for (uint256 i = 0; i < count; ++i) {
            elapsed += bound(uint256(keccak256(abi.encode(stepSeed, i))), 1, 2 hours);
            vm.warp(START + elapsed);
            vm.prank(p1);
            total += market.withdraw(id);
        }
        uint256 expected = (elapsed * price) / 3600;
        if (expected > 1_000_000e6) expected = 1_000_000e6;
        assertEq(total, expected, "cumulative floor, capped by escrow");
        assertEq(market.getLease(id).paid, total, "recorded");
    }

    /// @dev Whatever happens, the provider and tenant together get exactly what was deposited.
    function testFuzz_close_conservesFunds(
        uint256 price,
        uint256 deposit,
        uint256 topUp,
        uint256 t1,
        uint256 t2,
        bool providerCloses
    ) public {
        price = bound(price, 1, market.MAX_PRICE_PER_HOUR());
        deposit = bound(deposit, 1, 500_000e6);
        topUp = bound(topUp, 0, 500_000e6);
        t1 = bound(t1, 0, 400 days);
        t2 = bound(t2, t1, HUNDRED_YEARS);
        uint256 id = _leaseAt(price, deposit);
        uint256 providerBefore = token.balanceOf(p1);
        uint256 tenantBefore = token.balanceOf(tenant);

        vm.warp(START + t1);
        vm.prank(p1);
        uint256 first = market.withdraw(id);
        if (topUp != 0) {
            vm.prank(tenant);
            market.topUp(id, topUp);
        }
        vm.warp(START + t2);
        vm.prank(providerCloses ? p1 : tenant);
        market.closeLease(id, 0);

        uint256 toProvider = token.balanceOf(p1) - providerBefore;
        uint256 toTenant = token.balanceOf(tenant) + topUp - tenantBefore;
        assertEq(toProvider + toTenant, deposit + topUp, "conservation");
        assertLe(toProvider, market.accruedFor(price, t2), "provider never paid ahead");
        assertLe(first, market.accruedFor(price, t1), "first withdrawal not ahead");
        assertEq(market.getLease(id).paid, toProvider, "paid recorded");
        assertEq(token.balanceOf(address(market)), 0, "nothing stuck");
    }

    /// @dev Parameter bounds: the largest price and escrow over a century neither overflow
    /// nor pay beyond the escrow.
    function testFuzz_extremes_doNotOverflow(uint256 elapsed) public {
        elapsed = bound(elapsed, 1, HUNDRED_YEARS);
        uint256 maxPrice = market.MAX_PRICE_PER_HOUR();
        uint256 maxEscrow = market.MAX_ESCROW();
        // MAX_ESCROW is beyond the faucet's reach; use a token without a mint cap.
        MintableToken big = new MintableToken();
        big.mint(tenant, maxEscrow);
        vm.prank(tenant);
        big.approve(address(market), maxEscrow);
        Marketplace.OrderSpec memory spec = _cpuSpec(100, 100, 0);
        vm.prank(tenant);
        uint256 id = market.createOrder(IERC20(address(big)), spec, MANIFEST, maxPrice, maxEscrow, WINDOW, DELIVERY);
        _bid(p1, id, spec, maxPrice, bytes32(0));
        vm.prank(tenant);
        market.acceptBid(id, 0);
        vm.prank(p1);
        market.confirmLease(id);

        vm.warp(START + elapsed);
        uint256 accrued = market.accruedFor(maxPrice, elapsed);
        vm.prank(p1);
        uint256 paid = market.withdraw(id);
        assertEq(paid, accrued < maxEscrow ? accrued : maxEscrow, "capped at escrow");
        vm.prank(tenant);
        market.closeLease(id, 0);
        assertEq(big.balanceOf(address(market)), 0, "all settled");
        assertEq(big.balanceOf(p1) + big.balanceOf(tenant), maxEscrow, "conserved");
    }

    /// @dev createOrder accepts exactly the parameters inside the documented bounds.
    function testFuzz_createOrder_boundsAreEnforced(
        uint64 cpu,
        uint64 mem,
        uint32 gpus,
        uint16 replicas,
        uint256 price,
        uint256 deposit,
        uint64 window
    ) public {
        // straddle each bound so valid and invalid inputs are both common
        cpu = uint64(bound(cpu, 0, 2 * uint256(market.MAX_RESOURCE_PER_ORDER())));
        mem = uint64(bound(mem, 0, 2 * uint256(market.MAX_RESOURCE_PER_ORDER())));
        gpus = uint32(bound(gpus, 0, 2 * uint256(market.MAX_GPU_COUNT())));
        replicas = uint16(bound(replicas, 0, 2 * uint256(market.MAX_REPLICAS())));
        window = uint64(bound(window, 0, 2 * uint256(market.MAX_BID_WINDOW())));
        Marketplace.OrderSpec memory spec = _cpuSpec(cpu, mem, 0);
        spec.gpuCount = gpus;
        spec.replicas = replicas;
        price = bound(price, 0, 2 * market.MAX_PRICE_PER_HOUR());
        deposit = bound(deposit, 0, 2_000_000e6);
        bool valid = cpu != 0 && mem != 0 && cpu <= market.MAX_RESOURCE_PER_ORDER()
            && mem <= market.MAX_RESOURCE_PER_ORDER() && gpus <= market.MAX_GPU_COUNT() && replicas != 0
            && replicas <= market.MAX_REPLICAS() && price != 0 && price <= market.MAX_PRICE_PER_HOUR() && deposit != 0
            && deposit <= token.balanceOf(tenant) && window >= market.MIN_BID_WINDOW()
            && window <= market.MAX_BID_WINDOW();
        if (!valid) vm.expectRevert();
        vm.prank(tenant);
        market.createOrder(IERC20(address(token)), spec, MANIFEST, price, deposit, window, DELIVERY);
        if (valid) assertEq(market.getOrder(1).escrow, deposit, "escrowed");
    }
}
