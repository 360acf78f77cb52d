// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {bound} from "../utils/Test.sol";
import {vm} from "../utils/Vm.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {BlockingToken} from "../mocks/MockTokens.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {Marketplace} from "../../src/Marketplace.sol";
import {Resources, GpuCapacity} from "../../src/Types.sol";
import {gpuBidFor} from "../utils/GpuBids.sol";

/// @notice Drives random sequences of every market action across many providers and tenants,
/// with a token that can blocklist actors and pause, and time jumps past bid windows, grace
/// periods, delivery deadlines and order expiry. It picks mostly-valid arguments from seeds,
/// measures every token movement (wallet plus what is credited as claimable) and records
/// anything unexpected in `violations` (handler reverts are discarded by forge, so a failed
/// expectation must be remembered rather than thrown). Liveness is checked where it must
/// hold: a tenant or provider can always close, a tenant can always cancel, a provider with
/// no leases can always leave, a provider can confirm before its deadline and anyone can
/// close an undelivered lease after it, whatever the token does. Two auditors attest and
/// revoke providers' attributes; some orders require their attestations (`signedBy`).
/// `providers[0]` is the honest provider: it never changes its attributes or leaves, and its
/// attestations are never revoked, so the liveness invariants can expect its eligible bids to match.
contract MarketHandler {
    bytes32 public constant A100 = keccak256("nvidia/a100/80Gi/sxm");
    bytes32 public constant H100 = keccak256("nvidia/h100/80Gi/sxm");
    bytes32 public constant EU = keccak256("region=eu-west");
    bytes32 public constant TIER = keccak256("tier=community");
    bytes32 public constant GATEWAY_CERT = keccak256("handler gateway certificate");
    uint256 public constant MAX_ORDERS = 40;
    uint64 public constant DELIVERY = 600;
    address public constant AUDITOR_A = address(0xD000);
    address public constant AUDITOR_B = address(0xD001);

    BlockingToken public immutable token;
    ProviderRegistry public immutable registry;
    Marketplace public immutable market;

    address[] public providers;
    address[] public tenants;
    address public immutable stranger;

    uint256[] public orderIds;
    mapping(uint256 orderId => bytes32[]) internal _allowedModels;
    mapping(uint256 orderId => bytes32[]) internal _requiredAttributes;
    /// @notice Deposit plus every top-up.
    mapping(uint256 orderId => uint256) public deposited;
    /// @notice Tokens the lease's provider actually received.
    mapping(uint256 orderId => uint256) public paidOut;
    /// @notice Tokens the tenant actually received back.
    mapping(uint256 orderId => uint256) public refunded;
    mapping(uint256 orderId => uint256) public paidAtClose;

    /// @notice Per provider: tokens it staked (register, addStake) and took back (withdrawStake),
    /// and the part of its stake it lost as forfeited bid bonds.
    mapping(address provider => uint256) public stakedIn;
    mapping(address provider => uint256) public stakeWithdrawn;
    mapping(address provider => uint256) public forfeitedBy;
    /// @notice Bonds taken from stakes, and what the tenants were credited for them, in total.
    uint256 public bondsForfeited;
    uint256 public bondsCredited;

    uint256 public violations;
    string public lastViolation;
    mapping(string action => uint256) public successes;

    constructor(
        BlockingToken token_,
        ProviderRegistry registry_,
        Marketplace market_,
        address[] memory providers_,
        address[] memory tenants_,
        address stranger_
    ) {
        token = token_;
        registry = registry_;
        market = market_;
        providers = providers_;
        tenants = tenants_;
        stranger = stranger_;
    }

    // ------------------------------------------------------------ provider actions

    function register(uint256 providerSeed, uint256 capacitySeed, uint256 gpuSeed, uint256 attributeSeed) external {
        address provider = _provider(providerSeed);
        if (registry.getProvider(provider).status != ProviderRegistry.ProviderStatus.None) return;
        if (!_tokenMoves(provider)) return;
        Resources memory capacity = Resources(
            uint64(bound(capacitySeed, 1000, 16_000)),
            uint64(bound(capacitySeed >> 64, 1024, 65_536)),
            uint64(bound(capacitySeed >> 128, 0, 1_000_000))
        );
        uint256[] memory before = _balances();
        vm.prank(provider);
        registry.register(
            "https://p.example", GATEWAY_CERT, _attributeSet(attributeSeed), capacity, _gpuSet(gpuSeed, 0, 0)
        );
        _expectMoved(before, provider, -int256(registry.minimumStake()), address(0), 0, "register");
        stakedIn[provider] += registry.minimumStake();
        ++successes["register"];
    }

    function update(uint256 providerSeed, uint256 capacitySeed, uint256 gpuSeed, uint256 attributeSeed) external {
        address provider = _provider(providerSeed);
        if (provider == honest()) return;
        ProviderRegistry.ProviderView memory info = registry.getProvider(provider);
        if (info.status != ProviderRegistry.ProviderStatus.Active) return;
        // never below what is allocated, so the update is valid
        Resources memory capacity = Resources(
            info.allocated.cpuMilli + uint64(bound(capacitySeed, 1, 8000)),
            info.allocated.memoryMiB + uint64(bound(capacitySeed >> 64, 1, 32_768)),
            info.allocated.storageMiB + uint64(bound(capacitySeed >> 128, 0, 500_000))
        );
        (, uint32 a100) = registry.gpuState(provider, A100);
        (, uint32 h100) = registry.gpuState(provider, H100);
        vm.prank(provider);
        registry.update(
            "https://p.example/v2", GATEWAY_CERT, _attributeSet(attributeSeed), capacity, _gpuSet(gpuSeed, a100, h100)
        );
        ++successes["update"];
    }

    function deregister(uint256 providerSeed) external {
        address provider = _provider(providerSeed);
        if (provider == honest()) return;
        ProviderRegistry.ProviderView memory info = registry.getProvider(provider);
        if (info.status != ProviderRegistry.ProviderStatus.Active || info.activeLeases != 0) return;
        vm.prank(provider);
        registry.deregister();
        ++successes["deregister"];
    }

    /// @dev The provider first resolves the bonds of its bids on ended orders (as its daemon
    /// does); bids on orders still open keep their bonds locked, and then it may not leave yet.
    function withdrawStake(uint256 providerSeed) external {
        address provider = _provider(providerSeed);
        ProviderRegistry.ProviderView memory info = registry.getProvider(provider);
        if (info.status != ProviderRegistry.ProviderStatus.Unbonding || block.timestamp < info.unbondingEnds) return;
        releaseBondsOf(provider);
        info = registry.getProvider(provider);
        if (info.lockedBonds != 0) return;
        uint256[] memory before = _balances();
        vm.prank(provider);
        try registry.withdrawStake() {
            _expectMoved(before, provider, int256(info.stake), address(0), 0, "withdrawStake");
            stakeWithdrawn[provider] += info.stake;
            ++successes["withdrawStake"];
        } catch {
            _violation("a provider with no leases could not leave");
        }
    }

    /// @dev A provider slashed below the minimum (the first from the seed) tops its stake back up,
    /// as it must before it may bid again.
    function addStake(uint256 providerSeed) external {
        uint256 minimum = registry.minimumStake();
        address provider;
        ProviderRegistry.ProviderView memory info;
        bool found;
        for (uint256 k = 0; k < providers.length && !found; ++k) {
            provider = _provider(providerSeed % providers.length + k);
            info = registry.getProvider(provider);
            found = info.status != ProviderRegistry.ProviderStatus.None && info.stake < minimum;
        }
        if (!found || !_tokenMoves(provider)) return;
        uint256 amount = minimum - info.stake;
        uint256[] memory before = _balances();
        vm.prank(provider);
        registry.addStake(amount);
        _expectMoved(before, provider, -int256(amount), address(0), 0, "addStake");
        stakedIn[provider] += amount;
        ++successes["addStake"];
    }

    // ------------------------------------------------------------ auditor actions

    /// @dev An auditor attests every attribute of the seeded set it does not attest yet.
    function attest(uint256 providerSeed, uint256 auditorSeed, uint256 attributeSeed) external {
        address provider = _provider(providerSeed);
        address auditor = auditorSeed % 2 == 0 ? AUDITOR_A : AUDITOR_B;
        bytes32[] memory attributes = _attestations(auditor, provider, _attributeSet(attributeSeed % 2 + 1), false);
        if (attributes.length == 0) return;
        vm.prank(auditor);
        registry.attest(provider, attributes);
        ++successes["attest"];
    }

    /// @dev An auditor revokes what it attests of the seeded set (never for the honest provider).
    function revoke(uint256 providerSeed, uint256 auditorSeed, uint256 attributeSeed) external {
        address provider = _provider(providerSeed);
        if (provider == honest()) return;
        address auditor = auditorSeed % 2 == 0 ? AUDITOR_A : AUDITOR_B;
        bytes32[] memory attributes = _attestations(auditor, provider, _attributeSet(attributeSeed % 2 + 1), true);
        if (attributes.length == 0) return;
        vm.prank(auditor);
        registry.revoke(provider, attributes);
        ++successes["revoke"];
    }

    // ------------------------------------------------------------ tenant actions

    function createOrder(
        uint256 tenantSeed,
        uint256 resourceSeed,
        uint256 gpuSeed,
        uint256 attributeSeed,
        uint256 priceSeed,
        uint256 depositSeed
    ) external {
        if (orderIds.length >= MAX_ORDERS) return;
        address tenant = tenants[tenantSeed % tenants.length];
        if (!_tokenMoves(tenant)) return;
        Marketplace.OrderSpec memory spec = _spec(resourceSeed, gpuSeed, attributeSeed);
        // a quarter of the orders need auditor A's attestations, a quarter A's or B's
        uint256 audit = (attributeSeed >> 8) % 4;
        if (audit == 0) spec.signedByAllOf = _oneAddress(AUDITOR_A);
        if (audit == 1) spec.signedByAnyOf = _twoAddresses(AUDITOR_A, AUDITOR_B);
        uint256 maxPrice = bound(priceSeed, 1, 1e9);
        // at most a day at the maximum price, so insolvent leases are common
        uint256 deposit = bound(depositSeed, 1, maxPrice * 24);
        uint64 window = uint64(bound(priceSeed >> 128, 1, 1 hours));
        uint256[] memory before = _balances();
        uint256 id = _postOrder(tenant, spec, maxPrice, deposit, window, depositSeed >> 128);
        _expectMoved(before, tenant, -int256(deposit), address(0), 0, "createOrder");
        orderIds.push(id);
        _allowedModels[id] = spec.allowedGpuModels;
        _requiredAttributes[id] = spec.requiredAttributes;
        deposited[id] = deposit;
        ++successes["createOrder"];
    }

    /// @dev A quarter of the orders carry an auto-accept rule (any provider, at most half the
    /// maximum price plus one), so some bids become leases in `placeBid`.
    function _postOrder(
        address tenant,
        Marketplace.OrderSpec memory spec,
        uint256 maxPrice,
        uint256 deposit,
        uint64 window,
        uint256 ruleSeed
    ) private returns (uint256) {
        bytes32 manifestHash = keccak256(abi.encode(orderIds.length));
        vm.prank(tenant);
        if (ruleSeed % 4 != 0) {
            return market.createOrder(token, spec, manifestHash, maxPrice, deposit, window, DELIVERY);
        }
        ++successes["autoAcceptOrder"];
        return _createWithRule(spec, manifestHash, maxPrice, deposit, window);
    }

    /// @dev Pranked by the caller.
    function _createWithRule(
        Marketplace.OrderSpec memory spec,
        bytes32 manifestHash,
        uint256 maxPrice,
        uint256 deposit,
        uint64 window
    ) private returns (uint256) {
        _rule = Marketplace.AutoAccept(address(0), uint88(maxPrice / 2 + 1));
        return market.createOrderWithPermit(
            token, spec, manifestHash, maxPrice, deposit, window, DELIVERY, _noPermit(), _rule
        );
    }

    /// @dev After a successful bid: the order is leased only if the bid was auto-accepted.
    function _countAutoAccepted(uint256 id) private {
        if (market.getOrder(id).status == Marketplace.OrderStatus.Leased) ++successes["autoAccepted"];
    }

    /// @dev The rule of the order being created (storage: the call's arguments fill the stack).
    Marketplace.AutoAccept private _rule;

    function _noPermit() private pure returns (Marketplace.Permit memory noPermit) {}

    function cancelOrder(uint256 orderSeed) external {
        (bool found, uint256 id, Marketplace.OrderView memory o) = _order(orderSeed, Marketplace.OrderStatus.Open);
        if (!found) return;
        uint256[] memory before = _balances();
        vm.prank(o.tenant);
        try market.cancelOrder(id) {
            _expectMoved(before, o.tenant, int256(o.escrow), address(0), 0, "cancelOrder");
            refunded[id] += o.escrow;
            ++successes["cancelOrder"];
        } catch {
            _violation("a tenant could not cancel its open order");
        }
    }

    function topUp(uint256 orderSeed, uint256 amountSeed, uint256 funderSeed) external {
        if (orderIds.length == 0) return;
        uint256 id = orderIds[orderSeed % orderIds.length];
        Marketplace.OrderStatus status = market.getOrder(id).status;
        if (status != Marketplace.OrderStatus.Open && status != Marketplace.OrderStatus.Leased) return;
        address funder = funderSeed % 4 == 3 ? stranger : tenants[funderSeed % tenants.length];
        if (!_tokenMoves(funder)) return;
        uint256 amount = bound(amountSeed, 1, 1e9);
        uint256[] memory before = _balances();
        vm.prank(funder);
        market.topUp(id, amount);
        _expectMoved(before, funder, -int256(amount), address(0), 0, "topUp");
        deposited[id] += amount;
        ++successes["topUp"];
    }

    // ------------------------------------------------------------ bidding and matching

    function placeBid(uint256 providerSeed, uint256 orderSeed, uint256 priceSeed, bool preferH100) external {
        (bool found, uint256 id, Marketplace.OrderView memory o) = _biddableOrder(orderSeed);
        if (!found) return;
        uint256[] memory before = _stakesAndBondCredits();
        bytes32 model = o.gpuCount == 0 ? bytes32(0) : (preferH100 ? H100 : A100);
        // like a real provider, only one that could serve the order bids (starting at the seed)
        address provider = _provider(providerSeed);
        for (uint256 k = 0; k < providers.length; ++k) {
            provider = _provider(providerSeed % providers.length + k);
            (ProviderRegistry.Eligibility eligible,) =
                registry.checkEligibility(provider, _requiredAttributes[id], o.resources, model, o.gpuCount);
            if (eligible == ProviderRegistry.Eligibility.Eligible && isAudited(id, provider)) break;
        }
        uint256 price = bound(priceSeed, 1, o.maxPricePerHour);
        vm.prank(provider);
        bytes32[] memory allowed = _allowedModels[id];
        try market.placeBid(id, price, gpuBidFor(model, allowed), allowed, _requiredAttributes[id]) {
            ++successes["placeBid"];
            _countAutoAccepted(id);
            _recordForfeits(before);
        } catch (bytes memory reason) {
            // liveness: an eligible bid on a full order gets in unless every bid stands, is
            // eligible and is no dearer
            if (bytes4(reason) == Marketplace.TooManyBids.selector && _evictable(id, o, price)) {
                _violation("an eligible cheaper bid was kept out of a full order");
            }
        }
    }

    /// @dev The honest provider (registered with room for any order if it is not) bids on an
    /// order taking bids that it can serve; auditor A vouches for it where the order needs it.
    function honestBid(uint256 orderSeed, uint256 priceSeed, bool preferH100) external {
        (bool found, uint256 id, Marketplace.OrderView memory o) = _biddableOrder(orderSeed);
        if (!found) return;
        address provider = honest();
        ProviderRegistry.ProviderStatus status = registry.getProvider(provider).status;
        if (status == ProviderRegistry.ProviderStatus.None) {
            if (!_tokenMoves(provider)) return;
            vm.prank(provider);
            registry.register(
                "https://honest.example",
                GATEWAY_CERT,
                _attributeSet(2),
                Resources(64_000, 262_144, 4_000_000),
                _gpuSet(0, 12, 12)
            );
            stakedIn[provider] += registry.minimumStake();
        }
        uint256[] memory before = _stakesAndBondCredits();
        bytes32 model = o.gpuCount == 0 ? bytes32(0) : (preferH100 ? H100 : A100);
        bytes32[] memory missing = _attestations(AUDITOR_A, provider, _attributeSet(2), false);
        if (!isAudited(id, provider) && missing.length != 0) {
            vm.prank(AUDITOR_A);
            registry.attest(provider, missing);
        }
        bytes32[] memory allowed = _allowedModels[id];
        vm.prank(provider);
        try market.placeBid(
            id, bound(priceSeed, 1, o.maxPricePerHour), gpuBidFor(model, allowed), allowed, _requiredAttributes[id]
        ) {
            ++successes["honestBid"];
            _countAutoAccepted(id);
            _recordForfeits(before);
        } catch {}
    }

    /// @dev A sybil (one of the last four providers): bids on every order still taking bids at its maximum price, then shrinks
    /// its capacity to what its leases hold (plus one), making all those bids unmatchable; on
    /// some sweeps it also withdraws every bid it has standing.
    function sybilSweep(uint256 providerSeed) external {
        // the last four providers act as sybils; the others stay honest
        address sybil = sybilAt(providerSeed);
        ProviderRegistry.ProviderView memory info = registry.getProvider(sybil);
        if (info.status != ProviderRegistry.ProviderStatus.Active) return;
        uint256[] memory before = _stakesAndBondCredits();
        for (uint256 k = 0; k < orderIds.length; ++k) {
            uint256 id = orderIds[k];
            Marketplace.OrderView memory o = market.getOrder(id);
            if (o.status != Marketplace.OrderStatus.Open || block.timestamp >= o.bidWindowEnd) continue;
            bytes32 model = o.gpuCount == 0 ? bytes32(0) : A100;
            bytes32[] memory allowed = _allowedModels[id];
            vm.prank(sybil);
            try market.placeBid(id, o.maxPricePerHour, gpuBidFor(model, allowed), allowed, _requiredAttributes[id]) {}
                catch {}
        }
        (, uint32 a100) = registry.gpuState(sybil, A100);
        (, uint32 h100) = registry.gpuState(sybil, H100);
        Resources memory tiny =
            Resources(info.allocated.cpuMilli + 1, info.allocated.memoryMiB + 1, info.allocated.storageMiB);
        vm.prank(sybil);
        registry.update("https://sybil.example", GATEWAY_CERT, _attributeSet(0), tiny, _gpuSet(0, a100, h100));
        if ((providerSeed >> 8) % 2 == 0) _withdrawBidsOf(sybil);
        _recordForfeits(before);
        ++successes["sybilSweep"];
    }

    /// @notice The sybil `seed` picks: one of the last four providers.
    function sybilAt(uint256 seed) public view returns (address) {
        return providers[providers.length - 1 - seed % 4];
    }

    function _withdrawBidsOf(address provider) private {
        for (uint256 k = 0; k < orderIds.length; ++k) {
            uint256 id = orderIds[k];
            Marketplace.OrderView memory o = market.getOrder(id);
            if (o.status != Marketplace.OrderStatus.Open) continue;
            for (uint256 b = 0; b < o.bidCount; ++b) {
                Marketplace.BidView memory bid = market.getBid(id, b);
                if (bid.provider != provider || bid.withdrawn) continue;
                vm.prank(provider);
                market.withdrawBid(id, b);
            }
        }
    }

    /// @dev Anyone resolves the bonds of an order's bids: reverts while the order is open and
    /// unexpired; after that every bond is released or forfeited to the tenant, once.
    function releaseBonds(uint256 orderSeed) external {
        if (orderIds.length == 0) return;
        uint256 id = orderIds[orderSeed % orderIds.length];
        Marketplace.OrderView memory o = market.getOrder(id);
        bool ended = o.status != Marketplace.OrderStatus.Open || block.timestamp >= o.expiresAt;
        uint256[] memory ids = new uint256[](o.bidCount);
        for (uint256 b = 0; b < ids.length; ++b) {
            ids[b] = b;
        }
        uint256[] memory before = _stakesAndBondCredits();
        vm.prank(stranger);
        try registry.releaseBonds(id, ids) {
            if (!ended) _violation("bonds released while the order was still open");
            _recordForfeits(before);
            for (uint256 b = 0; b < ids.length; ++b) {
                if (registry.bondLocked(id, b)) _violation("a bond stayed locked after its order ended");
            }
            ++successes["releaseBonds"];
        } catch {
            if (ended) _violation("the bonds of an ended order could not be released");
        }
    }

    /// @notice Resolves every bond `provider` holds on orders that have ended (a provider's
    /// daemon does this before it leaves).
    function releaseBondsOf(address provider) public {
        uint256[] memory before = _stakesAndBondCredits();
        for (uint256 k = 0; k < orderIds.length; ++k) {
            uint256 id = orderIds[k];
            Marketplace.OrderView memory o = market.getOrder(id);
            if (o.status == Marketplace.OrderStatus.Open && block.timestamp < o.expiresAt) continue;
            for (uint256 b = 0; b < o.bidCount; ++b) {
                if (!registry.bondLocked(id, b) || market.getBid(id, b).provider != provider) continue;
                uint256[] memory one = new uint256[](1);
                one[0] = b;
                registry.releaseBonds(id, one);
            }
        }
        _recordForfeits(before);
    }

    /// @dev Every provider's stake, then every tenant's registry credit.
    function _stakesAndBondCredits() private view returns (uint256[] memory values) {
        values = new uint256[](providers.length + tenants.length);
        for (uint256 i = 0; i < providers.length; ++i) {
            values[i] = registry.getProvider(providers[i]).stake;
        }
        for (uint256 i = 0; i < tenants.length; ++i) {
            values[providers.length + i] = registry.claimable(IERC20(address(token)), tenants[i]);
        }
    }

    /// @dev Around an action that can only change stakes by bond forfeits: what the stakes lost
    /// is what the tenants were credited.
    function _recordForfeits(uint256[] memory before) private {
        uint256[] memory now_ = _stakesAndBondCredits();
        uint256 taken;
        uint256 credited;
        for (uint256 i = 0; i < providers.length; ++i) {
            if (now_[i] > before[i]) _violation("a stake grew without a top-up");
            uint256 lost = before[i] - now_[i];
            forfeitedBy[providers[i]] += lost;
            taken += lost;
        }
        for (uint256 i = providers.length; i < now_.length; ++i) {
            credited += now_[i] - before[i];
        }
        if (taken != credited) _violation("a forfeited bond did not reach the tenant");
        bondsForfeited += taken;
        bondsCredited += credited;
    }

    function withdrawBid(uint256 orderSeed, uint256 bidSeed) external {
        (bool found, uint256 id, Marketplace.OrderView memory o) = _order(orderSeed, Marketplace.OrderStatus.Open);
        if (!found || o.bidCount == 0) return;
        uint256 bidId = bidSeed % o.bidCount;
        Marketplace.BidView memory bid = market.getBid(id, bidId);
        if (bid.withdrawn) return;
        vm.prank(bid.provider);
        market.withdrawBid(id, bidId);
        ++successes["withdrawBid"];
    }

    function acceptBid(uint256 orderSeed, uint256 bidSeed) external {
        (bool found, uint256 id, Marketplace.OrderView memory o) = _openOrderWithBids(orderSeed);
        if (!found) return;
        // like the tenant CLI, prefer a standing bid whose provider is still eligible
        uint256 bidId = bidSeed % o.bidCount;
        for (uint256 k = 0; k < o.bidCount; ++k) {
            uint256 candidate = (bidSeed % o.bidCount + k) % o.bidCount;
            Marketplace.BidView memory bid = market.getBid(id, candidate);
            (ProviderRegistry.Eligibility eligible,) =
                registry.checkEligibility(bid.provider, _requiredAttributes[id], o.resources, bid.gpuModel, o.gpuCount);
            if (!bid.withdrawn && eligible == ProviderRegistry.Eligibility.Eligible) {
                bidId = candidate;
                break;
            }
        }
        vm.prank(o.tenant);
        // reverts when the provider has no room or stopped: allowed, the invariants check the rest
        try market.acceptBid(id, bidId) {
            ++successes["acceptBid"];
        } catch {}
    }

    /// @dev Half the time the tenant right after the window, else a stranger after the grace.
    function settle(uint256 orderSeed) external {
        (bool found, uint256 id, Marketplace.OrderView memory o) = _unexpiredOrderWithBids(orderSeed);
        if (!found) return;
        bool byTenant = orderSeed % 2 == 0;
        uint256 from = byTenant ? o.bidWindowEnd : o.bidWindowEnd + market.TENANT_GRACE();
        if (block.timestamp < from) vm.warp(from);
        vm.prank(byTenant ? o.tenant : stranger);
        try market.settle(id) {
            ++successes["settle"];
        } catch {}
    }

    // ------------------------------------------------------------ leases

    function confirmLease(uint256 orderSeed) external {
        (bool found, uint256 id, Marketplace.LeaseView memory lease) = _pendingLease(orderSeed);
        if (!found) return;
        vm.prank(lease.provider);
        try market.confirmLease(id) {
            ++successes["confirmLease"];
        } catch {
            if (block.timestamp < lease.deliveryDeadline) _violation("a provider could not confirm in time");
        }
    }

    /// @dev Jumps past the delivery deadline of a pending lease, then a stranger closes it.
    function closeUndelivered(uint256 orderSeed) external {
        (bool found, uint256 id, Marketplace.LeaseView memory lease) = _pendingLease(orderSeed);
        if (!found) return;
        if (block.timestamp < lease.deliveryDeadline) vm.warp(lease.deliveryDeadline);
        uint256 stake = registry.getProvider(lease.provider).stake;
        uint256 slash = stake * registry.deliverySlashBps() / 10_000;
        uint256[] memory before = _balances();
        vm.prank(stranger);
        try market.closeUndelivered(id) {
            _expectMoved(before, lease.tenant, int256(lease.escrow + slash), address(0), 0, "closeUndelivered");
            refunded[id] += lease.escrow;
            paidAtClose[id] = 0;
            ++successes["closeUndelivered"];
        } catch {
            _violation("an undelivered lease could not be closed after its deadline");
        }
    }

    function withdraw(uint256 orderSeed) external {
        (bool found, uint256 id,) = _order(orderSeed, Marketplace.OrderStatus.Leased);
        if (!found) return;
        address provider = market.getLease(id).provider;
        uint256[] memory before = _balances();
        vm.prank(provider);
        uint256 amount = market.withdraw(id);
        _expectMoved(before, provider, int256(amount), address(0), 0, "withdraw");
        paidOut[id] += amount;
        ++successes["withdraw"];
    }

    function closeLease(uint256 orderSeed, uint256 closerSeed) external {
        (bool found, uint256 id, Marketplace.OrderView memory o) = _order(orderSeed, Marketplace.OrderStatus.Leased);
        if (!found) return;
        Marketplace.LeaseView memory lease = market.getLease(id);
        address closer = closerSeed % 3 == 0 ? o.tenant : (closerSeed % 3 == 1 ? lease.provider : stranger);
        bool insolvent = market.isInsolvent(id);
        // a provider walking away from a lease it never confirmed is slashed like an undelivered one
        uint256 slash = !lease.confirmed && closer == lease.provider
            ? registry.getProvider(lease.provider).stake * registry.deliverySlashBps() / 10_000
            : 0;
        uint256[] memory before = _balances();
        vm.prank(closer);
        try market.closeLease(id, uint8(closerSeed % 6)) {
            if (closer == stranger && !insolvent) _violation("stranger closed a solvent lease");
            uint256 paid = market.getLease(id).paid - lease.paid;
            uint256 refund = o.escrow - paid;
            _expectMoved(before, lease.provider, int256(paid), o.tenant, int256(refund + slash), "closeLease");
            paidOut[id] += paid;
            refunded[id] += refund;
            paidAtClose[id] = market.getLease(id).paid;
            ++successes["closeLease"];
        } catch {
            if (closer != stranger || insolvent) _violation("a party could not close its lease");
        }
    }

    function warp(uint256 secondsSeed) external {
        vm.warp(block.timestamp + bound(secondsSeed, 1, 2 days));
    }

    /// @dev Jumps to just before or just past one of an order's deadlines: bid window end,
    /// tenant grace end, expiry, or its lease's delivery deadline.
    function warpToDeadline(uint256 orderSeed, uint256 which) external {
        if (orderIds.length == 0) return;
        uint256 id = orderIds[orderSeed % orderIds.length];
        Marketplace.OrderView memory o = market.getOrder(id);
        uint256 target = o.bidWindowEnd;
        if (which % 4 == 1) target += market.TENANT_GRACE();
        if (which % 4 == 2) target = o.expiresAt;
        if (which % 4 == 3 && o.status == Marketplace.OrderStatus.Leased) {
            target = market.getLease(id).deliveryDeadline;
        }
        if ((which >> 8) % 2 == 0 && target > 0) target -= 1;
        if (target > block.timestamp) vm.warp(target);
    }

    /// @dev The token turns against an actor (blocklist) or everyone (pause), and back.
    /// Blocking is the rarer outcome, so most actors can trade most of the time.
    function blockAccount(uint256 actorSeed) external {
        address[] memory all = everyone();
        token.setBlocked(all[actorSeed % all.length], (actorSeed >> 128) % 3 == 0);
        ++successes["blockAccount"];
    }

    function pauseToken(uint256 seed) external {
        token.setPaused(seed % 4 == 0);
        ++successes["pauseToken"];
    }

    /// @dev Whatever was credited is claimable once the token lets it through.
    function claim(uint256 actorSeed, bool fromRegistry) external {
        address[] memory all = everyone();
        address actor = all[actorSeed % all.length];
        IERC20 asIerc20 = IERC20(address(token));
        uint256 amount = fromRegistry ? registry.claimable(asIerc20, actor) : market.claimable(asIerc20, actor);
        if (amount == 0) return;
        vm.prank(actor);
        if (fromRegistry) {
            try registry.claim(asIerc20, actor) {
                ++successes["claim"];
            } catch {
                if (_tokenMoves(actor)) _violation("a credit could not be claimed");
            }
        } else {
            try market.claim(asIerc20, actor) {
                ++successes["claim"];
            } catch {
                if (_tokenMoves(actor)) _violation("a credit could not be claimed");
            }
        }
    }

    // ------------------------------------------------------------ views for the invariants

    /// @notice The ghost ledger of one order, in one call for the invariant checks.
    function ledger(uint256 orderId)
        external
        view
        returns (uint256 deposits, uint256 toProvider, uint256 toTenant, uint256 paidWhenClosed)
    {
        return (deposited[orderId], paidOut[orderId], refunded[orderId], paidAtClose[orderId]);
    }

    /// @notice The attributes order `orderId` requires.
    function requiredAttributesOf(uint256 orderId) external view returns (bytes32[] memory) {
        return _requiredAttributes[orderId];
    }

    /// @notice Whether the auditors of order `orderId` (if any) attest `provider`'s required attributes.
    function isAudited(uint256 orderId, address provider) public view returns (bool audited) {
        (address[] memory allOf, address[] memory anyOf) = market.orderAuditors(orderId);
        if (allOf.length + anyOf.length == 0) return true;
        (audited,,) = registry.checkAudit(provider, _requiredAttributes[orderId], allOf, anyOf);
    }

    /// @notice The provider that never changes its attributes, leaves or loses an attestation.
    function honest() public view returns (address) {
        return providers[0];
    }

    function providerIndex(address provider) external view returns (uint256) {
        for (uint256 i = 0; i < providers.length; ++i) {
            if (providers[i] == provider) return i;
        }
        revert("unknown provider");
    }

    function orderCount() external view returns (uint256) {
        return orderIds.length;
    }

    function providerCount() external view returns (uint256) {
        return providers.length;
    }

    /// @notice Wallet plus everything credited to `account` by either contract.
    function holdings(address account) public view returns (uint256) {
        IERC20 asIerc20 = IERC20(address(token));
        return token.balanceOf(account) + market.claimable(asIerc20, account) + registry.claimable(asIerc20, account);
    }

    function everyone() public view returns (address[] memory all) {
        all = new address[](providers.length + tenants.length + 1);
        uint256 n;
        for (uint256 i = 0; i < providers.length; ++i) {
            all[n++] = providers[i];
        }
        for (uint256 i = 0; i < tenants.length; ++i) {
            all[n++] = tenants[i];
        }
        all[n] = stranger;
    }

    // ------------------------------------------------------------ internals

    /// @dev Whether a bid at `price` may take a slot of the full order `id`: a withdrawn bid, a
    /// bid whose provider is no longer eligible, or a dearer bid.
    function _evictable(uint256 id, Marketplace.OrderView memory o, uint256 price) private view returns (bool) {
        Marketplace.BidView[] memory bids = market.getBids(id);
        for (uint256 i = 0; i < bids.length; ++i) {
            if (bids[i].withdrawn || bids[i].pricePerHour > price) return true;
            (ProviderRegistry.Eligibility eligible,) = registry.checkEligibility(
                bids[i].provider, _requiredAttributes[id], o.resources, bids[i].gpuModel, o.gpuCount
            );
            if (eligible != ProviderRegistry.Eligibility.Eligible) return true;
        }
        return false;
    }

    /// @dev Whether the token currently lets `account` send or receive.
    function _tokenMoves(address account) private view returns (bool) {
        return !token.paused() && !token.blocked(account);
    }

    function _pendingLease(uint256 seed)
        private
        view
        returns (bool found, uint256 id, Marketplace.LeaseView memory lease)
    {
        uint256 count = orderIds.length;
        for (uint256 k = 0; k < count; ++k) {
            id = orderIds[(seed % count + k) % count];
            if (market.getOrder(id).status != Marketplace.OrderStatus.Leased) continue;
            lease = market.getLease(id);
            if (!lease.confirmed) return (true, id, lease);
        }
        return (false, 0, lease);
    }

    function _provider(uint256 seed) private view returns (address) {
        return providers[seed % providers.length];
    }

    /// @dev Picks an order with the wanted status, starting at a seeded position.
    function _order(uint256 seed, Marketplace.OrderStatus wanted)
        private
        view
        returns (bool found, uint256 id, Marketplace.OrderView memory o)
    {
        uint256 count = orderIds.length;
        for (uint256 k = 0; k < count; ++k) {
            id = orderIds[(seed % count + k) % count];
            o = market.getOrder(id);
            if (o.status == wanted) return (true, id, o);
        }
        return (false, 0, o);
    }

    /// @dev An open order with at least one bid, starting at a seeded position.
    function _openOrderWithBids(uint256 seed)
        private
        view
        returns (bool found, uint256 id, Marketplace.OrderView memory o)
    {
        uint256 count = orderIds.length;
        for (uint256 k = 0; k < count; ++k) {
            id = orderIds[(seed % count + k) % count];
            o = market.getOrder(id);
            if (o.status == Marketplace.OrderStatus.Open && o.bidCount != 0) return (true, id, o);
        }
        return (false, 0, o);
    }

    /// @dev An open order with bids that has not expired (expired ones can only be cancelled),
    /// starting at a seeded position.
    function _unexpiredOrderWithBids(uint256 seed)
        private
        view
        returns (bool found, uint256 id, Marketplace.OrderView memory o)
    {
        uint256 count = orderIds.length;
        for (uint256 k = 0; k < count; ++k) {
            id = orderIds[(seed % count + k) % count];
            o = market.getOrder(id);
            if (o.status == Marketplace.OrderStatus.Open && o.bidCount != 0 && block.timestamp < o.expiresAt) {
                return (true, id, o);
            }
        }
        return (false, 0, o);
    }

    /// @dev An open order whose bid window is still open, starting at a seeded position.
    function _biddableOrder(uint256 seed)
        private
        view
        returns (bool found, uint256 id, Marketplace.OrderView memory o)
    {
        uint256 count = orderIds.length;
        for (uint256 k = 0; k < count; ++k) {
            id = orderIds[(seed % count + k) % count];
            o = market.getOrder(id);
            if (o.status == Marketplace.OrderStatus.Open && block.timestamp < o.bidWindowEnd) return (true, id, o);
        }
        return (false, 0, o);
    }

    function _spec(uint256 resourceSeed, uint256 gpuSeed, uint256 attributeSeed)
        private
        pure
        returns (Marketplace.OrderSpec memory spec)
    {
        spec.groupName = keccak256(abi.encode("group", attributeSeed));
        spec.resources = Resources(
            uint64(bound(resourceSeed, 100, 6000)),
            uint64(bound(resourceSeed >> 64, 128, 24_576)),
            uint64(bound(resourceSeed >> 128, 0, 400_000))
        );
        spec.gpuCount = uint32(gpuSeed % 3);
        spec.replicas = uint16(bound(gpuSeed >> 8, 1, 4));
        if (spec.gpuCount != 0) {
            uint256 choice = (gpuSeed >> 16) % 3;
            if (choice == 1) spec.allowedGpuModels = _one(A100);
            if (choice == 2) spec.allowedGpuModels = _two(A100, H100);
        }
        spec.requiredAttributes = _attributeSet(attributeSeed);
    }

    function _attributeSet(uint256 seed) private pure returns (bytes32[] memory) {
        uint256 choice = seed % 3;
        if (choice == 0) return new bytes32[](0);
        if (choice == 1) return _one(EU);
        return _two(EU, TIER);
    }

    /// @dev A GPU list that always keeps at least the allocated count of each model.
    function _gpuSet(uint256 seed, uint32 a100Allocated, uint32 h100Allocated)
        private
        pure
        returns (GpuCapacity[] memory gpus)
    {
        bool withA100 = a100Allocated != 0 || seed % 2 == 0;
        bool withH100 = h100Allocated != 0 || (seed >> 1) % 2 == 0;
        gpus = new GpuCapacity[]((withA100 ? 1 : 0) + (withH100 ? 1 : 0));
        uint256 n;
        if (withA100) gpus[n++] = GpuCapacity(A100, a100Allocated + uint32(bound(seed >> 8, 1, 4)));
        if (withH100) gpus[n] = GpuCapacity(H100, h100Allocated + uint32(bound(seed >> 16, 1, 4)));
    }

    /// @dev The attributes of `set` that `auditor` attests for `provider` (`attested`) or not.
    function _attestations(address auditor, address provider, bytes32[] memory set, bool attested)
        private
        view
        returns (bytes32[] memory picked)
    {
        picked = new bytes32[](set.length);
        uint256 n;
        for (uint256 i = 0; i < set.length; ++i) {
            if (registry.isAttested(auditor, provider, set[i]) == attested) picked[n++] = set[i];
        }
        assembly ("memory-safe") {
            mstore(picked, n)
        }
    }

    function _oneAddress(address a) private pure returns (address[] memory l) {
        l = new address[](1);
        l[0] = a;
    }

    function _twoAddresses(address a, address b) private pure returns (address[] memory l) {
        l = new address[](2);
        l[0] = a;
        l[1] = b;
    }

    function _one(bytes32 a) private pure returns (bytes32[] memory l) {
        l = new bytes32[](1);
        l[0] = a;
    }

    function _two(bytes32 a, bytes32 b) private pure returns (bytes32[] memory l) {
        l = new bytes32[](2);
        l[0] = a;
        l[1] = b;
    }

    function _balances() private view returns (uint256[] memory balances) {
        address[] memory all = everyone();
        balances = new uint256[](all.length);
        for (uint256 i = 0; i < all.length; ++i) {
            balances[i] = holdings(all[i]);
        }
    }

    /// @dev Every actor's balance is unchanged except `a` by `deltaA` and `b` by `deltaB`:
    /// funds reach only the parties an action names.
    function _expectMoved(
        uint256[] memory before,
        address a,
        int256 deltaA,
        address b,
        int256 deltaB,
        string memory action
    ) private {
        address[] memory all = everyone();
        for (uint256 i = 0; i < all.length; ++i) {
            int256 expected = int256(before[i]);
            if (all[i] == a) expected += deltaA;
            if (all[i] == b) expected += deltaB;
            if (int256(holdings(all[i])) != expected) _violation(action);
        }
    }

    function _violation(string memory what) private {
        ++violations;
        lastViolation = what;
    }
}
