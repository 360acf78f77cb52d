// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Test} from "../utils/Test.sol";
import {vm} from "../utils/Vm.sol";
import {BlockingToken} from "../mocks/MockTokens.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {Marketplace} from "../../src/Marketplace.sol";
import {Resources} from "../../src/Types.sol";
import {MarketHandler} from "./MarketHandler.sol";

/// @notice Protocol invariants under random sequences of register / update / deregister /
/// withdrawStake / createOrder / cancelOrder / topUp / placeBid / withdrawBid / acceptBid /
/// settle / confirmLease / closeUndelivered / withdraw / closeLease / claim / warps past every
/// deadline, across twenty providers and three tenants, with a token that blocklists and pauses,
/// and two auditors that attest and revoke.
contract MarketInvariantTest is Test {
    /// @dev Orders and providers probed per liveness check (a rotating sample keeps the campaign fast).
    uint256 internal constant LIVENESS_SAMPLE = 4;

    BlockingToken internal token;
    ProviderRegistry internal registry;
    Marketplace internal market;
    MarketHandler internal handler;

    function setUp() public {
        token = new BlockingToken();
        registry = new ProviderRegistry(IERC20(address(token)), 50e6, 1 hours, 1000, 0.5e6);
        market = new Marketplace(registry);
        registry.initialize(address(market));

        address[] memory providers = new address[](20);
        address[] memory tenants = new address[](3);
        for (uint256 i = 0; i < providers.length; ++i) {
            providers[i] = address(uint160(0xA000 + i));
        }
        for (uint256 i = 0; i < tenants.length; ++i) {
            tenants[i] = address(uint160(0xB000 + i));
        }
        address stranger = address(0xC000);
        handler = new MarketHandler(token, registry, market, providers, tenants, stranger);

        address[] memory all = handler.everyone();
        for (uint256 i = 0; i < all.length; ++i) {
            token.mint(all[i], 20_000_000e6);
            vm.startPrank(all[i]);
            token.approve(address(market), type(uint256).max);
            token.approve(address(registry), type(uint256).max);
            vm.stopPrank();
        }

        bytes4[] memory selectors = new bytes4[](27);
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
        selectors[15] = MarketHandler.confirmLease.selector;
        selectors[16] = MarketHandler.closeUndelivered.selector;
        selectors[17] = MarketHandler.warpToDeadline.selector;
        selectors[18] = MarketHandler.blockAccount.selector;
        selectors[19] = MarketHandler.pauseToken.selector;
        selectors[20] = MarketHandler.claim.selector;
        selectors[21] = MarketHandler.sybilSweep.selector;
        selectors[22] = MarketHandler.addStake.selector;
        selectors[23] = MarketHandler.attest.selector;
        selectors[24] = MarketHandler.revoke.selector;
        selectors[25] = MarketHandler.honestBid.selector;
        selectors[26] = MarketHandler.releaseBonds.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    /// @notice One campaign (runs x depth from foundry.toml) checks every protocol invariant
    /// after each call, reading each order, lease and provider once per check.
    function invariant_protocol() public view {
        uint256 providerCount = handler.providerCount();
        // per provider: cpu, memory, storage, A100, H100 and lease count of its active leases
        uint256[6][] memory sums = new uint256[6][](providerCount);
        uint256 escrowTotal = _checkOrders(sums);
        (uint256 marketCredits, uint256 registryCredits) = _credits();
        assertEq(token.balanceOf(address(market)), escrowTotal + marketCredits, "market balance == escrow + credits");
        uint256 stakeTotal = _checkProviders(sums);
        assertEq(
            token.balanceOf(address(registry)), stakeTotal + registryCredits, "registry balance == stakes + credits"
        );
        _checkNoTokensLeak();
        assertEq(handler.violations(), 0, handler.lastViolation());
    }

    /// @notice Sybils lose money: a provider never gets back more than it staked, and a sybil
    /// whose bids were withdrawn, skipped or evicted as ineligible ends with strictly less than
    /// it put in; every bond taken from a stake was credited to a tenant, to the unit.
    function invariant_sybilsLoseMoney() public view {
        assertEq(handler.bondsForfeited(), handler.bondsCredited(), "forfeited bonds == tenants' bond credits");
        for (uint256 p = 0; p < handler.providerCount(); ++p) {
            address provider = handler.providers(p);
            uint256 kept = registry.getProvider(provider).stake + handler.stakeWithdrawn(provider);
            uint256 forfeited = handler.forfeitedBy(provider);
            assertLe(kept + forfeited, handler.stakedIn(provider), "stake kept + withdrawn + forfeited <= staked");
            if (forfeited != 0) assertGt(handler.stakedIn(provider), kept, "a forfeiting provider lost money");
        }
    }

    /// @notice Liveness, probed in a state snapshot that is thrown away (open orders all, active
    /// leases and providers on a rotating sample): an honest eligible bid inside the window can be matched, the tenant
    /// and the provider of an active lease can always close it, and a provider with no leases
    /// can always exit, the last two even while the token is paused (amounts are credited).
    function invariant_liveness() public {
        uint256 orders = handler.orderCount();
        uint256 start = uint256(keccak256(abi.encode(block.timestamp, orders, token.balanceOf(address(market)))));
        for (uint256 i = 0; i < orders; ++i) {
            uint256 id = handler.orderIds(i);
            Marketplace.OrderView memory o = market.getOrder(id);
            if (o.status == Marketplace.OrderStatus.Open && block.timestamp < o.bidWindowEnd) {
                _checkHonestBidsMatch(id, o);
            }
        }
        for (uint256 k = 0; k < orders && k < LIVENESS_SAMPLE; ++k) {
            uint256 id = handler.orderIds((start + k) % orders);
            Marketplace.OrderView memory o = market.getOrder(id);
            if (o.status == Marketplace.OrderStatus.Leased) {
                _checkCanClose(id, o.tenant, "tenant could not close its lease");
                _checkCanClose(id, market.getLease(id).provider, "provider could not close its lease");
            }
        }
        uint256 providerCount = handler.providerCount();
        for (uint256 k = 0; k < LIVENESS_SAMPLE; ++k) {
            _checkIdleProviderCanExit(handler.providers((start + k) % providerCount));
        }
    }

    /// @dev Every standing bid of the honest provider on order `id` that it could serve now
    /// (active, stake at the minimum, attributes, audit, free room) is accepted by the tenant.
    function _checkHonestBidsMatch(uint256 id, Marketplace.OrderView memory o) internal {
        address honest = handler.honest();
        Marketplace.BidView[] memory bids = market.getBids(id);
        for (uint256 i = 0; i < bids.length; ++i) {
            if (bids[i].provider != honest || bids[i].withdrawn || !_canServe(id, o, bids[i])) continue;
            uint256 snapshot = vm.snapshotState();
            vm.prank(o.tenant);
            try market.acceptBid(id, i) {}
            catch {
                assertTrue(false, "an honest eligible bid inside the window could not be matched");
            }
            vm.revertToState(snapshot);
        }
    }

    function _canServe(uint256 id, Marketplace.OrderView memory o, Marketplace.BidView memory bid)
        internal
        view
        returns (bool)
    {
        (ProviderRegistry.Eligibility eligible,) = registry.checkEligibility(
            bid.provider, handler.requiredAttributesOf(id), o.resources, bid.gpuModel, o.gpuCount
        );
        if (eligible != ProviderRegistry.Eligibility.Eligible || !handler.isAudited(id, bid.provider)) return false;
        (, Resources memory capacity, Resources memory allocated,,) = registry.resourceState(bid.provider);
        if (
            capacity.cpuMilli - allocated.cpuMilli < o.resources.cpuMilli
                || capacity.memoryMiB - allocated.memoryMiB < o.resources.memoryMiB
                || capacity.storageMiB - allocated.storageMiB < o.resources.storageMiB
        ) return false;
        if (o.gpuCount == 0) return true;
        (uint32 gpuCapacity, uint32 gpuAllocated) = registry.gpuState(bid.provider, bid.gpuModel);
        return gpuCapacity - gpuAllocated >= o.gpuCount;
    }

    /// @dev `closer` closes lease `id` while the token is paused.
    function _checkCanClose(uint256 id, address closer, string memory failure) internal {
        uint256 snapshot = vm.snapshotState();
        token.setPaused(true);
        vm.prank(closer);
        try market.closeLease(id, 0) {}
        catch {
            assertTrue(false, failure);
        }
        vm.revertToState(snapshot);
    }

    /// @dev A registered provider with no active lease deregisters, waits out the unbonding
    /// period and withdraws its whole stake while the token is paused: it is credited.
    function _checkIdleProviderCanExit(address provider) internal {
        ProviderRegistry.ProviderView memory info = registry.getProvider(provider);
        if (info.status == ProviderRegistry.ProviderStatus.None || info.activeLeases != 0) return;
        uint256 snapshot = vm.snapshotState();
        token.setPaused(true);
        if (info.status == ProviderRegistry.ProviderStatus.Active) {
            vm.prank(provider);
            registry.deregister();
            info = registry.getProvider(provider);
        }
        if (block.timestamp < info.unbondingEnds) vm.warp(info.unbondingEnds);
        // its bonds: once every order it bid on has ended, anyone resolves them
        for (uint256 i = 0; i < handler.orderCount(); ++i) {
            uint64 expiresAt = market.getOrder(handler.orderIds(i)).expiresAt;
            if (block.timestamp < expiresAt) vm.warp(expiresAt);
        }
        handler.releaseBondsOf(provider);
        info = registry.getProvider(provider);
        assertEq(info.lockedBonds, 0, "every bond resolved once its orders ended");
        uint256 before = handler.holdings(provider);
        vm.prank(provider);
        try registry.withdrawStake() {}
        catch {
            assertTrue(false, "a provider with no leases could not exit");
        }
        assertEq(handler.holdings(provider), before + info.stake, "an exiting provider gets its whole stake");
        vm.revertToState(snapshot);
    }

    /// @dev Per order: funds conserved (escrow + paid + refunded == deposits, paid only to the
    /// lease's provider, never above deposits), closed leases frozen; sums active leases per provider.
    function _checkOrders(uint256[6][] memory sums) internal view returns (uint256 escrowTotal) {
        bytes32 a100 = handler.A100();
        for (uint256 i = 0; i < handler.orderCount(); ++i) {
            uint256 id = handler.orderIds(i);
            Marketplace.OrderView memory o = market.getOrder(id);
            (uint256 deposited, uint256 paidOut, uint256 refunded, uint256 paidAtClose) = handler.ledger(id);
            escrowTotal += o.escrow;
            assertEq(o.escrow + paidOut + refunded, deposited, "escrow + paid + refunded == deposits");
            if (o.status == Marketplace.OrderStatus.Cancelled) assertEq(o.escrow, 0, "no escrow after cancel");
            if (o.status != Marketplace.OrderStatus.Leased && o.status != Marketplace.OrderStatus.Closed) {
                assertEq(paidOut, 0, "no provider paid without a lease");
                continue;
            }
            Marketplace.LeaseView memory lease = market.getLease(id);
            assertLe(lease.paid, deposited, "lease paid at most deposits + top-ups");
            assertEq(lease.paid, paidOut, "recorded payments == tokens the provider received");
            if (o.status == Marketplace.OrderStatus.Closed) {
                assertEq(o.escrow, 0, "no escrow after close");
                assertEq(lease.paid, paidAtClose, "paid frozen at close");
                assertFalse(lease.active, "closed lease inactive");
                continue;
            }
            uint256[6] memory sum = sums[handler.providerIndex(lease.provider)];
            sum[0] += o.resources.cpuMilli;
            sum[1] += o.resources.memoryMiB;
            sum[2] += o.resources.storageMiB;
            if (o.gpuCount != 0) sum[lease.gpuModel == a100 ? 3 : 4] += o.gpuCount;
            sum[5] += 1;
        }
    }

    /// @dev Allocation within capacity (resources and each GPU model) and equal to the sum of
    /// the provider's active leases.
    function _checkProviders(uint256[6][] memory sums) internal view returns (uint256 stakeTotal) {
        for (uint256 p = 0; p < sums.length; ++p) {
            address provider = handler.providers(p);
            (, Resources memory capacity, Resources memory allocated, uint32 activeLeases, uint256 stake) =
                registry.resourceState(provider);
            stakeTotal += stake;
            assertLe(allocated.cpuMilli, capacity.cpuMilli, "cpu within capacity");
            assertLe(allocated.memoryMiB, capacity.memoryMiB, "memory within capacity");
            assertLe(allocated.storageMiB, capacity.storageMiB, "storage within capacity");
            (uint32 a100Cap, uint32 a100Alloc) = registry.gpuState(provider, handler.A100());
            (uint32 h100Cap, uint32 h100Alloc) = registry.gpuState(provider, handler.H100());
            assertLe(a100Alloc, a100Cap, "A100 within capacity");
            assertLe(h100Alloc, h100Cap, "H100 within capacity");
            uint256[6] memory sum = sums[p];
            assertEq(allocated.cpuMilli, sum[0], "cpu allocated == active leases");
            assertEq(allocated.memoryMiB, sum[1], "memory allocated == active leases");
            assertEq(allocated.storageMiB, sum[2], "storage allocated == active leases");
            assertEq(a100Alloc, sum[3], "A100 allocated == active leases");
            assertEq(h100Alloc, sum[4], "H100 allocated == active leases");
            assertEq(activeLeases, sum[5], "lease count == active leases");
        }
    }

    /// @dev What each contract owes in claimable credits, over every actor.
    function _credits() internal view returns (uint256 marketCredits, uint256 registryCredits) {
        address[] memory all = handler.everyone();
        IERC20 asIerc20 = IERC20(address(token));
        for (uint256 i = 0; i < all.length; ++i) {
            marketCredits += market.claimable(asIerc20, all[i]);
            registryCredits += registry.claimable(asIerc20, all[i]);
        }
    }

    /// @notice Token supply is only ever in the actors' wallets, the escrow or the stakes.
    function _checkNoTokensLeak() internal view {
        address[] memory all = handler.everyone();
        uint256 total = token.balanceOf(address(market)) + token.balanceOf(address(registry));
        for (uint256 i = 0; i < all.length; ++i) {
            total += token.balanceOf(all[i]);
        }
        assertEq(total, token.totalSupply(), "supply accounted for");
    }

    /// @notice Four sybils bid on every order taking bids, shrink their capacity and (two of
    /// them) withdraw; the honest provider bids on half the orders, so `settle` passes over
    /// the sybils' bids on the others. Once the orders are matched or expired,
    /// anyone resolves the bonds: every sybil ends with strictly less stake than it put in, and
    /// the tenants' credits grew by exactly what the sybils lost.
    function test_sybilsThatBidEverywhereLoseMoney() public {
        uint256 providerCount = handler.providerCount();
        for (uint256 i = 0; i < 4; ++i) {
            handler.register(providerCount - 1 - i, type(uint256).max - i, 0, 0);
        }
        for (uint256 i = 0; i < 6; ++i) {
            handler.createOrder(i, 0, i % 2, (2 << 8) + 1, type(uint256).max, 100e6 + i); // no auditors or attributes
        }
        for (uint256 i = 0; i < 4; ++i) {
            handler.sybilSweep(i + ((i % 2) << 8)); // sybils 0 and 2 also withdraw their bids
        }
        for (uint256 i = 0; i < 6; i += 2) {
            handler.honestBid(i, i, false); // the odd orders only have the sybils' bids
        }
        uint256 creditsBefore = handler.bondsCredited();
        handler.warp(2 hours); // past every bid window: settle passes over the sybils' bids
        for (uint256 call = 0; call < 20 * handler.orderCount(); ++call) {
            handler.settle(call);
        }
        handler.warp(1 days); // past every matching period
        for (uint256 i = 0; i < handler.orderCount(); ++i) {
            handler.releaseBonds(i);
        }
        uint256 sybilLosses;
        for (uint256 i = 0; i < 4; ++i) {
            address sybil = handler.sybilAt(i);
            uint256 lost = handler.forfeitedBy(sybil);
            assertGt(lost, 0, "every sybil forfeited bonds");
            assertGt(handler.stakedIn(sybil), registry.getProvider(sybil).stake, "a sybil ends with less stake");
            sybilLosses += lost;
        }
        assertEq(handler.forfeitedBy(handler.honest()), 0, "the honest provider lost nothing");
        assertEq(handler.bondsCredited() - creditsBefore, sybilLosses, "tenants credited what the sybils lost");
        assertEq(handler.violations(), 0, handler.lastViolation());
        invariant_protocol();
        invariant_sybilsLoseMoney();
    }

    /// @notice The handler is able to reach every action, so the campaign explores deep states
    /// (leases matched both ways, paid, topped up, closed) rather than bouncing off guards.
    function test_handlerReachesEveryAction() public {
        for (uint256 step = 0; step < 1500; ++step) {
            uint256 seed = uint256(keccak256(abi.encode(step)));
            uint256 action = seed % 23;
            uint256 a = uint256(keccak256(abi.encode(seed, 1)));
            uint256 b = uint256(keccak256(abi.encode(seed, 2)));
            uint256 c = uint256(keccak256(abi.encode(seed, 3)));
            if (action == 0) handler.register(a, b, c, seed);
            if (action == 1) handler.update(a, b, c, seed);
            if (action == 2 && step % 5 == 0) handler.deregister(a);
            if (action == 3) handler.withdrawStake(a);
            if (action == 4) handler.createOrder(a, b, c, seed, a >> 3, b >> 3);
            if (action == 5 && step % 3 == 0) handler.cancelOrder(a);
            if (action == 6) handler.topUp(a, b, c);
            if (action == 7 || action == 13) handler.placeBid(a, b, c, seed % 2 == 0);
            if (action == 8 && step % 3 == 0) handler.withdrawBid(a, b);
            if (action == 9 || (action == 7 && step % 2 == 0)) handler.acceptBid(a, b);
            if (action == 10) handler.settle(a);
            if (action == 11) handler.withdraw(a);
            if (action == 12) handler.closeLease(a, b);
            if (action == 13) handler.warp(b % 4 hours);
            if (action == 14) handler.confirmLease(a);
            if (action == 15 && step % 2 == 0) handler.closeUndelivered(a);
            if (action == 15 && step % 4 == 1) handler.addStake(a);
            if (action == 16) handler.warpToDeadline(a, b);
            if (action == 17 && step % 4 == 0) handler.blockAccount(a);
            if (action == 18 && step % 4 == 0) handler.pauseToken(a);
            if (action == 19) handler.claim(a, b % 2 == 0);
            if (action == 20 && step % 3 == 0) handler.sybilSweep(a);
            if (action == 21) handler.attest(a, b, c);
            if (action == 22 && step % 2 == 0) handler.revoke(a, b, c);
            if (action == 4 || action == 22) handler.honestBid(b, c, seed % 2 == 0);
            if (action == 10 || action == 16) handler.releaseBonds(b);
        }
        string[24] memory actions = [
            "register",
            "update",
            "deregister",
            "withdrawStake",
            "createOrder",
            "cancelOrder",
            "topUp",
            "placeBid",
            "acceptBid",
            "settle",
            "withdraw",
            "closeLease",
            "confirmLease",
            "closeUndelivered",
            "blockAccount",
            "pauseToken",
            "sybilSweep",
            "addStake",
            "attest",
            "revoke",
            "honestBid",
            "releaseBonds",
            "autoAcceptOrder",
            "autoAccepted"
        ];

        for (uint256 i = 0; i < actions.length; ++i) {
            assertGt(handler.successes(actions[i]), 0, actions[i]);
        }
        invariant_protocol();
        invariant_sybilsLoseMoney();
        invariant_liveness();
    }
}
