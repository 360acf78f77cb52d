// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Fixture} from "./utils/Fixture.sol";
import {vm} from "./utils/Vm.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {ProviderRegistry} from "../src/ProviderRegistry.sol";
import {GpuBid} from "../src/GpuModels.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @notice Auditor attestations (Akash's `signedBy`): the registry's attest/revoke and the
/// Marketplace's enforcement at bid time and at match time (acceptBid, settle, eviction).
contract AuditorsTest is Fixture {
    address internal auditor = address(0xA0D1);
    address internal auditor2 = address(0xA0D2);

    function setUp() public override {
        super.setUp();
        _registerDefault(p1);
        _registerDefault(p2);
    }

    function _attest(address who, address provider, bytes32[] memory attributes) internal {
        vm.prank(who);
        registry.attest(provider, attributes);
    }

    function _revoke(address who, address provider, bytes32[] memory attributes) internal {
        vm.prank(who);
        registry.revoke(provider, attributes);
    }

    function _addresses(address a) internal pure returns (address[] memory l) {
        l = new address[](1);
        l[0] = a;
    }

    function _addresses(address a, address b) internal pure returns (address[] memory l) {
        l = new address[](2);
        l[0] = a;
        l[1] = b;
    }

    /// @dev A CPU order requiring EU, audited by `allOf` and `anyOf`.
    function _auditedSpec(address[] memory allOf, address[] memory anyOf)
        internal
        pure
        returns (Marketplace.OrderSpec memory spec)
    {
        spec = _cpuSpec(1000, 1024, 1024);
        spec.requiredAttributes = _list(EU);
        spec.signedByAllOf = allOf;
        spec.signedByAnyOf = anyOf;
    }

    // ------------------------------------------------------------ registry

    function test_attest_recordsAndEmits() public {
        vm.expectEmit(true, true, true, true, address(registry));
        emit ProviderRegistry.AttributeAttested(auditor, p1, EU);
        _attest(auditor, p1, _list(EU, TIER));
        assertTrue(registry.isAttested(auditor, p1, EU), "EU attested");
        assertTrue(registry.isAttested(auditor, p1, TIER), "tier attested");
        assertFalse(registry.isAttested(auditor2, p1, EU), "per auditor");
        (uint32 attested, uint32 revocations) = registry.auditRecord(auditor, p1);
        assertEq(attested, 2, "two attested");
        assertEq(revocations, 0, "none revoked");

        vm.expectEmit(true, true, true, true, address(registry));
        emit ProviderRegistry.AttestationRevoked(auditor, p1, EU);
        _revoke(auditor, p1, _list(EU));
        assertFalse(registry.isAttested(auditor, p1, EU), "EU revoked");
        (attested, revocations) = registry.auditRecord(auditor, p1);
        assertEq(attested, 1, "one left");
        assertEq(revocations, 1, "one revoked");
    }

    function test_attest_reverts() public {
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroAddress.selector));
        registry.attest(address(0), _list(EU));
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NoAttributes.selector));
        registry.attest(p1, _none());
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroAttribute.selector, 1));
        registry.attest(p1, _list(EU, bytes32(0)));
        bytes32[] memory tooMany = new bytes32[](33);
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.TooManyAttributes.selector, 33, 32));
        registry.attest(p1, tooMany);
        _attest(auditor, p1, _list(EU));
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.AlreadyAttested.selector, auditor, p1, EU));
        registry.attest(p1, _list(TIER, EU));
    }

    function test_revoke_reverts() public {
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotAttested.selector, auditor, p1, EU));
        registry.revoke(p1, _list(EU));
        _attest(auditor, p1, _list(EU));
        vm.prank(auditor2);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NotAttested.selector, auditor2, p1, EU));
        registry.revoke(p1, _list(EU));
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.NoAttributes.selector));
        registry.revoke(p1, _none());
        vm.prank(auditor);
        vm.expectRevert(abi.encodeWithSelector(ProviderRegistry.ZeroAddress.selector));
        registry.revoke(address(0), _list(EU));
    }

    /// Akash's rule: every allOf auditor attests every attribute; one anyOf auditor suffices.
    function test_checkAudit_followsAkashSignedBy() public {
        address[] memory none = new address[](0);
        _attest(auditor, p1, _list(EU));
        (bool audited, address missing,) = registry.checkAudit(p1, _list(EU), _addresses(auditor), none);
        assertTrue(audited, "allOf satisfied");
        (audited, missing,) = registry.checkAudit(p1, _list(EU, TIER), _addresses(auditor), none);
        assertFalse(audited, "tier not attested");
        assertEq(missing, auditor, "names the auditor");
        (audited, missing,) = registry.checkAudit(p1, _list(EU), _addresses(auditor, auditor2), none);
        assertFalse(audited, "every allOf auditor must attest");
        assertEq(missing, auditor2, "names the second auditor");
        (audited,,) = registry.checkAudit(p1, _list(EU), none, _addresses(auditor2, auditor));
        assertTrue(audited, "one anyOf auditor is enough");
        (audited, missing,) = registry.checkAudit(p1, _list(EU), _addresses(auditor), _addresses(auditor2));
        assertFalse(audited, "allOf and anyOf both apply");
        assertEq(missing, address(0), "anyOf failure names no one");
        (audited,,) = registry.checkAudit(p1, _none(), _addresses(auditor), none);
        assertTrue(audited, "no attributes: the auditor attests something");
        (audited,,) = registry.checkAudit(p2, _none(), _addresses(auditor), none);
        assertFalse(audited, "no attributes and nothing attested");
    }

    // ------------------------------------------------------------ orders

    function test_createOrder_storesAuditors() public {
        uint256 orderId = _order(_auditedSpec(_addresses(auditor), _addresses(auditor2)));
        (address[] memory allOf, address[] memory anyOf) = market.orderAuditors(orderId);
        assertEq(allOf.length, 1, "one allOf");
        assertEq(allOf[0], auditor, "allOf");
        assertEq(anyOf[0], auditor2, "anyOf");
        uint256 plain = _order(_cpuSpec(1000, 1024, 0));
        (allOf, anyOf) = market.orderAuditors(plain);
        assertEq(allOf.length + anyOf.length, 0, "no auditors");
    }

    function test_createOrder_auditorReverts() public {
        address[] memory five = new address[](5);
        for (uint256 i = 0; i < five.length; ++i) {
            five[i] = address(uint160(0xA000 + i));
        }
        Marketplace.OrderSpec memory spec = _auditedSpec(five, new address[](0));
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.TooManyAuditors.selector, 5, 4));
        market.createOrder(IERC20(address(token)), spec, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        spec = _auditedSpec(_addresses(auditor), _addresses(address(0)));
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.InvalidAuditor.selector, address(0)));
        market.createOrder(IERC20(address(token)), spec, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);

        spec = _auditedSpec(_addresses(auditor), _addresses(auditor));
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.InvalidAuditor.selector, auditor));
        market.createOrder(IERC20(address(token)), spec, MANIFEST, PRICE, DEPOSIT, WINDOW, DELIVERY);
    }

    // ------------------------------------------------------------ bid time

    function test_placeBid_requiresAttestation() public {
        Marketplace.OrderSpec memory spec = _auditedSpec(_addresses(auditor), new address[](0));
        uint256 orderId = _order(spec);
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderNotAudited.selector, p1, auditor));
        market.placeBid(orderId, PRICE, _noGpuBid(), spec.allowedGpuModels, spec.requiredAttributes);

        _attest(auditor, p1, _list(EU));
        uint256 bidId = _bid(p1, orderId, spec, PRICE, bytes32(0));
        assertEq(bidId, 0, "attested provider bids");
    }

    function test_placeBid_anyOfFailureNamesNoAuditor() public {
        Marketplace.OrderSpec memory spec = _auditedSpec(new address[](0), _addresses(auditor, auditor2));
        uint256 orderId = _order(spec);
        _attest(auditor2, p1, _list(TIER));
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderNotAudited.selector, p1, address(0)));
        market.placeBid(orderId, PRICE, _noGpuBid(), spec.allowedGpuModels, spec.requiredAttributes);
        _attest(auditor2, p1, _list(EU));
        _bid(p1, orderId, spec, PRICE, bytes32(0));
    }

    // ------------------------------------------------------------ match time

    function test_acceptBid_revertsAfterRevocation() public {
        Marketplace.OrderSpec memory spec = _auditedSpec(_addresses(auditor), new address[](0));
        uint256 orderId = _order(spec);
        _attest(auditor, p1, _list(EU));
        uint256 bidId = _bid(p1, orderId, spec, PRICE, bytes32(0));
        _revoke(auditor, p1, _list(EU));
        vm.prank(tenant);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.ProviderNotAudited.selector, p1, address(0)));
        market.acceptBid(orderId, bidId);
        assertEq(_allocated(p1).cpuMilli, 0, "nothing reserved");
    }

    /// A re-attestation after a revocation does not revive the old bid (the epoch moved on).
    function test_settle_skipsRevokedBidAndMatchesAudited() public {
        Marketplace.OrderSpec memory spec = _auditedSpec(_addresses(auditor), new address[](0));
        uint256 orderId = _order(spec);
        _attest(auditor, p1, _list(EU));
        _attest(auditor, p2, _list(EU));
        _bid(p1, orderId, spec, PRICE / 2, bytes32(0)); // cheaper
        uint256 honest = _bid(p2, orderId, spec, PRICE, bytes32(0));
        _revoke(auditor, p1, _list(EU));
        _attest(auditor, p1, _list(EU));

        vm.warp(START + WINDOW);
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidSkipped(orderId, 0, p1);
        vm.prank(tenant);
        market.settle(orderId); // on audited orders a call passes over at most one bid
        assertEq(uint8(market.getOrder(orderId).status), uint8(Marketplace.OrderStatus.Open), "not yet");
        assertTrue(market.getBid(orderId, 0).withdrawn, "the revoked bid is passed over for good");
        vm.prank(tenant);
        market.settle(orderId);
        Marketplace.LeaseView memory lease = market.getLease(orderId);
        assertEq(lease.provider, p2, "the audited provider wins");
        assertEq(lease.bidId, honest, "its bid");
    }

    /// Another auditor's revocation, or a new attestation, leaves the bid standing.
    function test_settle_unrelatedAuditChangesKeepTheBid() public {
        Marketplace.OrderSpec memory spec = _auditedSpec(_addresses(auditor), new address[](0));
        uint256 orderId = _order(spec);
        _attest(auditor, p1, _list(EU));
        _attest(auditor2, p1, _list(EU));
        _bid(p1, orderId, spec, PRICE, bytes32(0));
        _revoke(auditor2, p1, _list(EU));
        _attest(auditor, p1, _list(TIER));
        vm.warp(START + WINDOW);
        vm.prank(tenant);
        market.settle(orderId);
        assertEq(market.getLease(orderId).provider, p1, "bid still wins");
    }

    /// On a full order, a bid whose audit was revoked is evicted by a new audited bid.
    function test_placeBid_evictsRevokedBidOnFullOrder() public {
        Marketplace.OrderSpec memory spec = _auditedSpec(_addresses(auditor), new address[](0));
        uint256 orderId = _order(spec);
        for (uint256 i = 0; i < market.MAX_BIDS(); ++i) {
            address provider = address(uint160(0xC000 + i));
            token.faucet(provider, MIN_STAKE);
            vm.prank(provider);
            token.approve(address(registry), MIN_STAKE);
            _registerDefault(provider);
            _attest(auditor, provider, _list(EU));
            _bid(provider, orderId, spec, PRICE, bytes32(0));
        }
        _attest(auditor, p1, _list(EU));
        vm.prank(p1);
        vm.expectRevert(abi.encodeWithSelector(Marketplace.TooManyBids.selector, orderId, 16));
        market.placeBid(orderId, PRICE, _noGpuBid(), spec.allowedGpuModels, spec.requiredAttributes);

        _revoke(auditor, address(uint160(0xC000 + 5)), _list(EU));
        vm.expectEmit(true, true, false, true, address(market));
        emit Marketplace.BidEvicted(orderId, 5, address(uint160(0xC000 + 5)), 1);
        uint256 bidId = _bid(p1, orderId, spec, PRICE, bytes32(0));
        assertEq(bidId, 5, "takes the revoked bid's slot");
    }

    function _noGpuBid() internal pure returns (GpuBid memory bid) {
        return bid;
    }
}
