// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {Test, bound} from "./Test.sol";
import {vm} from "./Vm.sol";
import {TestToken} from "../../src/TestToken.sol";
import {ProviderRegistry} from "../../src/ProviderRegistry.sol";
import {Marketplace} from "../../src/Marketplace.sol";
import {Resources, GpuCapacity} from "../../src/Types.sol";
import {GpuBid} from "../../src/GpuModels.sol";
import {A100_KEY, H100_KEY, gpuBidFor} from "./GpuBids.sol";

/// @notice Deploys the three contracts in the documented order and offers helpers for the
/// common steps (register, order, bid) so each test states only what it is about.
abstract contract Fixture is Test {
    TestToken internal token;
    ProviderRegistry internal registry;
    Marketplace internal market;

    uint256 internal constant MIN_STAKE = 100e6;
    uint64 internal constant UNBONDING = 7 days;
    uint256 internal constant PRICE = 3600e3; // 1000 base units per second
    uint256 internal constant DEPOSIT = 1000e6;
    uint64 internal constant WINDOW = 60;
    uint64 internal constant DELIVERY = 600;
    uint16 internal constant SLASH_BPS = 1000;
    uint256 internal constant BID_BOND = MIN_STAKE / 100;
    uint256 internal constant START = 1_700_000_000;

    bytes32 internal constant A100 = A100_KEY;
    bytes32 internal constant H100 = H100_KEY;
    bytes32 internal constant EU = keccak256("region=eu-west");
    bytes32 internal constant US = keccak256("region=us-east");
    bytes32 internal constant TIER = keccak256("tier=community");
    bytes32 internal constant MANIFEST = keccak256("manifest");
    bytes32 internal constant GROUP = keccak256("dcloud");
    /// @dev Stands for the SHA-256 of a gateway's DER certificate (keccak256: a constant, where
    /// sha256 would be a precompile call that consumes a pending `vm.prank`).
    bytes32 internal constant GATEWAY_CERT = keccak256("fixture gateway certificate");

    address internal tenant = address(0x7E1A);
    address internal tenant2 = address(0x7E1B);
    address internal p1 = address(0xB1);
    address internal p2 = address(0xB2);
    address internal p3 = address(0xB3);
    address internal stranger = address(0x5757);

    function setUp() public virtual {
        vm.warp(START);
        token = new TestToken();
        registry = new ProviderRegistry(IERC20(address(token)), MIN_STAKE, UNBONDING, SLASH_BPS, BID_BOND);
        market = new Marketplace(registry);
        registry.initialize(address(market));
        address[6] memory actors = [tenant, tenant2, p1, p2, p3, stranger];
        for (uint256 i = 0; i < actors.length; ++i) {
            token.faucet(actors[i], 1_000_000e6);
            vm.startPrank(actors[i]);
            token.approve(address(market), type(uint256).max);
            token.approve(address(registry), type(uint256).max);
            vm.stopPrank();
        }
    }

    // ------------------------------------------------------------ builders

    function _list(bytes32 a) internal pure returns (bytes32[] memory l) {
        l = new bytes32[](1);
        l[0] = a;
    }

    function _list(bytes32 a, bytes32 b) internal pure returns (bytes32[] memory l) {
        l = new bytes32[](2);
        l[0] = a;
        l[1] = b;
    }

    /// @dev Bid ids 0..count-1, as `registry.releaseBonds` takes them.
    function _bidIds(uint256 count) internal pure returns (uint256[] memory ids) {
        ids = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            ids[i] = i;
        }
    }

    function _none() internal pure returns (bytes32[] memory) {
        return new bytes32[](0);
    }

    function _res(uint64 cpu, uint64 mem, uint64 disk) internal pure returns (Resources memory) {
        return Resources(cpu, mem, disk);
    }

    function _gpus(bytes32 model, uint32 count) internal pure returns (GpuCapacity[] memory g) {
        g = new GpuCapacity[](1);
        g[0] = GpuCapacity(model, count);
    }

    function _noGpus() internal pure returns (GpuCapacity[] memory) {
        return new GpuCapacity[](0);
    }

    function _cpuSpec(uint64 cpu, uint64 mem, uint64 disk) internal pure returns (Marketplace.OrderSpec memory s) {
        s.groupName = GROUP;
        s.resources = Resources(cpu, mem, disk);
        s.replicas = 1;
    }

    function _gpuSpec(uint32 gpuCount, bytes32[] memory models, bytes32[] memory attrs)
        internal
        pure
        returns (Marketplace.OrderSpec memory s)
    {
        s.groupName = GROUP;
        s.resources = Resources(4000, 16384, 10240);
        s.gpuCount = gpuCount;
        s.replicas = 1;
        s.allowedGpuModels = models;
        s.requiredAttributes = attrs;
    }

    // ------------------------------------------------------------ actions

    /// @dev A provider with 8 cores, 32 GiB, 100 GiB, 4 A100s and the EU + tier attributes.
    function _registerDefault(address provider) internal {
        _register(provider, _list(EU, TIER), _res(8000, 32768, 102400), _gpus(A100, 4));
    }

    function _register(address provider, bytes32[] memory attrs, Resources memory capacity, GpuCapacity[] memory gpus)
        internal
    {
        vm.prank(provider);
        registry.register("https://provider.example:8443", GATEWAY_CERT, attrs, capacity, gpus);
    }

    function _order(Marketplace.OrderSpec memory spec) internal returns (uint256) {
        return _orderFrom(tenant, spec, PRICE, DEPOSIT);
    }

    function _orderFrom(address who, Marketplace.OrderSpec memory spec, uint256 maxPrice, uint256 deposit)
        internal
        returns (uint256)
    {
        vm.prank(who);
        return market.createOrder(IERC20(address(token)), spec, MANIFEST, maxPrice, deposit, WINDOW, DELIVERY);
    }

    /// @dev The acceptance rule of an order the tenant matches itself.
    function _noAutoAccept() internal pure returns (Marketplace.AutoAccept memory) {
        return Marketplace.AutoAccept(address(0), 0);
    }

    /// @dev An order of `tenant` (allowance already given: the permit is a dummy) whose first
    /// bid from `provider` (zero: anyone) at or below `maxPrice` becomes its lease.
    function _autoAcceptOrder(Marketplace.OrderSpec memory spec, address provider, uint256 maxPrice)
        internal
        returns (uint256)
    {
        Marketplace.Permit memory noPermit;
        vm.prank(tenant);
        return market.createOrderWithPermit(
            IERC20(address(token)),
            spec,
            MANIFEST,
            PRICE,
            DEPOSIT,
            WINDOW,
            DELIVERY,
            noPermit,
            Marketplace.AutoAccept(provider, uint88(maxPrice))
        );
    }

    function _bid(address provider, uint256 orderId, Marketplace.OrderSpec memory spec, uint256 price, bytes32 model)
        internal
        returns (uint256)
    {
        vm.prank(provider);
        return market.placeBid(
            orderId, price, gpuBidFor(model, spec.allowedGpuModels), spec.allowedGpuModels, spec.requiredAttributes
        );
    }

    /// @dev Order (small CPU spec) + one bid from `provider` + tenant acceptance + the
    /// provider's delivery confirmation: payment accrues from now.
    function _lease(address provider, uint256 price) internal returns (uint256 leaseId) {
        leaseId = _pendingLease(provider, price);
        vm.prank(provider);
        market.confirmLease(leaseId);
    }

    /// @dev Like `_lease`, without the confirmation: the lease waits for delivery.
    function _pendingLease(address provider, uint256 price) internal returns (uint256 leaseId) {
        Marketplace.OrderSpec memory spec = _cpuSpec(1000, 1024, 1024);
        leaseId = _order(spec);
        uint256 bidId = _bid(provider, leaseId, spec, price, bytes32(0));
        vm.prank(tenant);
        market.acceptBid(leaseId, bidId);
    }

    function _allocated(address provider) internal view returns (Resources memory) {
        return registry.getProvider(provider).allocated;
    }
}
