// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";
import {Fixture} from "./utils/Fixture.sol";
import {vm} from "./utils/Vm.sol";
import {Marketplace} from "../src/Marketplace.sol";
import {MintableToken} from "./mocks/MockTokens.sol";

/// @notice `createOrderWithPermit`: approval by EIP-2612 signature and order in one call.
contract PermitTest is Fixture {
    uint256 internal constant KEY = 0xA11CE;
    uint256 internal constant OTHER_KEY = 0xB0B;
    address internal signer;

    bytes32 internal constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");

    function setUp() public override {
        super.setUp();
        signer = vm.addr(KEY);
        token.faucet(signer, 1_000_000e6);
    }

    function _permit(uint256 key, address owner, uint256 value, uint256 deadline)
        internal
        view
        returns (Marketplace.Permit memory permit)
    {
        bytes32 structHash =
            keccak256(abi.encode(PERMIT_TYPEHASH, owner, address(market), value, token.nonces(owner), deadline));
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash));
        (permit.v, permit.r, permit.s) = vm.sign(key, digest);
        permit.deadline = deadline;
    }

    function _orderWithPermit(Marketplace.Permit memory permit) internal returns (uint256) {
        vm.prank(signer);
        return market.createOrderWithPermit(
            IERC20(address(token)),
            _cpuSpec(1000, 1024, 0),
            MANIFEST,
            PRICE,
            DEPOSIT,
            WINDOW,
            DELIVERY,
            permit,
            _noAutoAccept()
        );
    }

    function test_validPermitApprovesAndOrdersInOneCall() public {
        assertEq(token.allowance(signer, address(market)), 0, "no allowance before");
        uint256 balance = token.balanceOf(signer);
        uint256 orderId = _orderWithPermit(_permit(KEY, signer, DEPOSIT, block.timestamp + 60));
        assertEq(orderId, 1, "first order");
        assertEq(market.getOrder(orderId).tenant, signer, "tenant is the signer");
        assertEq(token.balanceOf(signer), balance - DEPOSIT, "deposit pulled");
        assertEq(token.allowance(signer, address(market)), 0, "the permit covered exactly the deposit");
        assertEq(token.nonces(signer), 1, "permit nonce used");
    }

    function test_expiredPermitWithoutAllowanceReverts() public {
        Marketplace.Permit memory permit = _permit(KEY, signer, DEPOSIT, block.timestamp + 60);
        vm.warp(block.timestamp + 61);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, DEPOSIT)
        );
        _orderWithPermit(permit);
        assertEq(token.nonces(signer), 0, "no nonce used");
    }

    function test_permitSignedByAnotherKeyReverts() public {
        // Signed by OTHER_KEY for `signer`'s tokens: the token refuses the permit.
        Marketplace.Permit memory permit = _permit(OTHER_KEY, signer, DEPOSIT, block.timestamp + 60);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, DEPOSIT)
        );
        _orderWithPermit(permit);
    }

    function test_frontRunPermitStillCreatesTheOrder() public {
        Marketplace.Permit memory permit = _permit(KEY, signer, DEPOSIT, block.timestamp + 60);
        // Someone copies the signature from the mempool and submits the permit first.
        vm.prank(stranger);
        token.permit(signer, address(market), DEPOSIT, permit.deadline, permit.v, permit.r, permit.s);
        assertEq(token.allowance(signer, address(market)), DEPOSIT, "front-runner set the allowance");
        uint256 orderId = _orderWithPermit(permit);
        assertEq(market.getOrder(orderId).tenant, signer, "the order stands on the allowance");
        assertEq(token.allowance(signer, address(market)), 0, "allowance spent");
    }

    function test_failedPermitFallsBackToAnExistingAllowance() public {
        vm.prank(signer);
        token.approve(address(market), DEPOSIT);
        Marketplace.Permit memory permit = _permit(OTHER_KEY, signer, DEPOSIT, block.timestamp + 60);
        uint256 orderId = _orderWithPermit(permit);
        assertEq(market.getOrder(orderId).tenant, signer, "ordered on the approval");
        assertEq(token.nonces(signer), 0, "the bad permit used no nonce");
    }

    function test_tokenWithoutPermitOrdersOnAnApproval() public {
        // A plain ERC-20 has no `permit`: the failed call is ignored and the approval decides.
        MintableToken plain = new MintableToken();
        plain.mint(signer, DEPOSIT);
        Marketplace.Permit memory permit = _permit(KEY, signer, DEPOSIT, block.timestamp + 60);
        vm.prank(signer);
        vm.expectRevert(
            abi.encodeWithSelector(IERC20Errors.ERC20InsufficientAllowance.selector, address(market), 0, DEPOSIT)
        );
        market.createOrderWithPermit(
            IERC20(address(plain)),
            _cpuSpec(1000, 1024, 0),
            MANIFEST,
            PRICE,
            DEPOSIT,
            WINDOW,
            DELIVERY,
            permit,
            _noAutoAccept()
        );
        vm.prank(signer);
        plain.approve(address(market), DEPOSIT);
        vm.prank(signer);
        uint256 orderId = market.createOrderWithPermit(
            IERC20(address(plain)),
            _cpuSpec(1000, 1024, 0),
            MANIFEST,
            PRICE,
            DEPOSIT,
            WINDOW,
            DELIVERY,
            permit,
            _noAutoAccept()
        );
        assertEq(plain.balanceOf(address(market)), DEPOSIT, "deposit in escrow");
        assertEq(market.getOrder(orderId).tenant, signer, "ordered on the approval");
    }
}
