// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Test} from "../utils/Test.sol";
import {vm} from "../utils/Vm.sol";
import {TestToken} from "../../src/TestToken.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {Marketplace} from "../../src/Marketplace.sol";
import {Resources} from "../../src/Types.sol";
import {MarketHandler} from "./MarketHandler.sol";

/// @notice Protocol invariants under random sequences of register / update / deregister /
/// withdrawStake / createOrder / cancelOrder / topUp / placeBid / withdrawBid / acceptBid /
/// settle / withdraw / closeLease / warp across four providers and three tenants.
contract MarketInvariantTest is Test {
    TestToken internal token;
    ProviderRegistry internal registry;
    Marketplace internal market;
    MarketHandler internal handler;

    function setUp() public {
        token = new TestToken();
        registry = new ProviderRegistry(IERC20(address(token)), 50e6, 1 hours);
        market = new Marketplace(registry);
        registry.initialize(address(market));

        address[] memory providers = new address[](4);
        address[] memory tenants = new address[](3);
        for (uint256 i = 0; i < providers.length; ++i) providers[i] = address(uint160(0xA000 + i));
        for (uint256 i = 0; i < tenants.length; ++i) tenants[i] = address(uint160(0xB000 + i));
        address stranger = address(0xC000);
        handler = new MarketHandler(token, registry, market, providers, tenants, stranger);

        address[] memory all = handler.everyone();
        for (uint256 i = 0; i < all.length; ++i) {
            for (uint256 k = 0; k < 20; ++k) token.faucet(all[i], token.FAUCET_CAP());
            vm.startPrank(all[i]);
            token.approve(address(market), type(uint256).max);
            token.approve(address(registry), type(uint256).max);
            vm.stopPrank();
        }

        bytes4[] memory selectors = new bytes4[](15);
        selectors[0] = MarketHandler.register.selector;
        selectors[1] = MarketHandler.update.selector;
        selectors[2] = MarketHandler.deregister.selector;
        selectors[3] = MarketHandler.withdrawStake.selector;
        selectors[4] = MarketHandler.createOrder.selector;
        selectors[5] = MarketHandler.cancelOrder.selector;
        selectors[6] = MarketHandler.topUp.selector;
        selectors[7] = MarketHandler.placeBid.selector;
        selectors[8] = MarketHandler.withdrawBid.selector;
        selectors[9] = MarketHandler.acceptBid.selector;
        selectors[10] = MarketHandler.settle.selector;
        selectors[11] = MarketHandler.withdraw.selector;
        selectors[12] = MarketHandler.closeLease.selector;
        selectors[13] = MarketHandler.warp.selector;
        selectors[14] = MarketHandler.placeBid.selector; // bids are the busiest path: weight them
        targetContract(address(handler));
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    /// @notice The marketplace holds exactly the sum of all escrow balances.
    function invariant_marketBalanceEqualsEscrow() public view {
        uint256 total;
        for (uint256 i = 0; i < handler.orderCount(); ++i) {
            total += market.getOrder(handler.orderIds(i)).escrow;
        }
        assertEq(token.balanceOf(address(market)), total, "market balance == sum of escrow");
    }

    /// @notice The registry holds exactly the sum of all stakes.
    function invariant_registryBalanceEqualsStakes() public view {
        uint256 total;
        for (uint256 i = 0; i < handler.providerCount(); ++i) {
            total += registry.getProvider(handler.providers(i)).stake;
        }
        assertEq(token.balanceOf(address(registry)), total, "registry balance == sum of stakes");
    }

    /// @notice Allocation never exceeds capacity and equals the sum of the provider's active leases.
    function invariant_allocationWithinCapacityAndExact() public view {
        for (uint256 p = 0; p < handler.providerCount(); ++p) {
            address provider = handler.providers(p);
            ProviderRegistry.ProviderView memory info = registry.getProvider(provider);
            assertLe(info.allocated.cpuMilli, info.capacity.cpuMilli, "cpu within capacity");
            assertLe(info.allocated.memoryMiB, info.capacity.memoryMiB, "memory within capacity");
            assertLe(info.allocated.storageMiB, info.capacity.storageMiB, "storage within capacity");
            (uint32 a100Cap, uint32 a100Alloc) = registry.gpuState(provider, handler.A100());
            (uint32 h100Cap, uint32 h100Alloc) = registry.gpuState(provider, handler.H100());
            assertLe(a100Alloc, a100Cap, "A100 within capacity");
            assertLe(h100Alloc, h100Cap, "H100 within capacity");

            uint256[6] memory sum; // cpu, memory, storage, A100, H100, leases
            for (uint256 i = 0; i < handler.orderCount(); ++i) {
                uint256 id = handler.orderIds(i);
                Marketplace.OrderView memory o = market.getOrder(id);
                if (o.status != Marketplace.OrderStatus.Leased) continue;
                Marketplace.LeaseView memory lease = market.getLease(id);
                if (lease.provider != provider) continue;
                sum[0] += o.resources.cpuMilli;
                sum[1] += o.resources.memoryMiB;
                sum[2] += o.resources.storageMiB;
                if (lease.gpuModel == handler.A100()) sum[3] += o.gpuCount;
                if (lease.gpuModel == handler.H100()) sum[4] += o.gpuCount;
                sum[5] += 1;
            }
            assertEq(info.allocated.cpuMilli, sum[0], "cpu allocated == active leases");
            assertEq(info.allocated.memoryMiB, sum[1], "memory allocated == active leases");
            assertEq(info.allocated.storageMiB, sum[2], "storage allocated == active leases");
            assertEq(a100Alloc, sum[3], "A100 allocated == active leases");
            assertEq(h100Alloc, sum[4], "H100 allocated == active leases");
            assertEq(info.activeLeases, sum[5], "lease count");
        }
    }

    /// @notice Every token that left escrow went to the order's tenant or its lease's provider,
    /// and no lease was paid more than its deposit plus top-ups.
    function invariant_fundsConservedPerOrder() public view {
        for (uint256 i = 0; i < handler.orderCount(); ++i) {
            uint256 id = handler.orderIds(i);
            Marketplace.OrderView memory o = market.getOrder(id);
            uint256 deposited = handler.deposited(id);
            assertEq(
                o.escrow + handler.paidOut(id) + handler.refunded(id), deposited, "escrow + paid + refunded == deposits"
            );
            if (o.status == Marketplace.OrderStatus.Leased || o.status == Marketplace.OrderStatus.Closed) {
                uint256 paid = market.getLease(id).paid;
                assertLe(paid, deposited, "lease paid at most deposits + top-ups");
                assertEq(paid, handler.paidOut(id), "recorded payments == tokens the provider received");
            } else {
                assertEq(handler.paidOut(id), 0, "no provider paid without a lease");
            }
        }
    }

    /// @notice A closed lease holds no escrow and its paid total never moves again.
    function invariant_closedLeasesAccrueNothing() public view {
        for (uint256 i = 0; i < handler.orderCount(); ++i) {
            uint256 id = handler.orderIds(i);
            Marketplace.OrderView memory o = market.getOrder(id);
            if (o.status != Marketplace.OrderStatus.Closed && o.status != Marketplace.OrderStatus.Cancelled) continue;
            assertEq(o.escrow, 0, "no escrow after close or cancel");
            if (o.status == Marketplace.OrderStatus.Closed) {
                assertEq(market.getLease(id).paid, handler.paidAtClose(id), "paid frozen at close");
                assertFalse(market.getLease(id).active, "inactive");
            }
        }
    }

    /// @notice Token supply is only ever in the actors' wallets, the escrow or the stakes.
    function invariant_noTokensLeak() public view {
        address[] memory all = handler.everyone();
        uint256 total = token.balanceOf(address(market)) + token.balanceOf(address(registry));
        for (uint256 i = 0; i < all.length; ++i) total += token.balanceOf(all[i]);
        assertEq(total, token.totalSupply(), "supply accounted for");
    }

    /// @notice Each action moved tokens only between the parties it names, by the amounts it reported.
    function invariant_handlerSawNoViolation() public view {
        assertEq(handler.violations(), 0, handler.lastViolation());
    }
}
