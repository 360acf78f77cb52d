// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";

/// @notice Deposits are pulled with a balance check so that escrow bookkeeping always equals the
/// tokens actually held. Fee-on-transfer tokens are rejected here; rebasing tokens are not
/// supported at all (their balance changes without a transfer and would break the accounting).
library TokenTransfers {
    using SafeERC20 for IERC20;

    /// @notice The token delivered a different amount than requested (fee-on-transfer or similar).
    error UnsupportedTokenTransfer(address token, uint256 expected, uint256 received);

    function pullExact(IERC20 token, address from, uint256 amount) internal {
        uint256 balanceBefore = token.balanceOf(address(this));
        token.safeTransferFrom(from, address(this), amount);
        uint256 received = token.balanceOf(address(this)) - balanceBefore;
        if (received != amount) revert UnsupportedTokenTransfer(address(token), amount, received);
    }
}

/// @notice Every transfer out of a contract goes through `_payOrCredit`: it tries the transfer
/// and, when the token reverts or returns false (a blocklisted recipient, a paused token), credits
/// the amount to `claimable[token][to]` instead. So closing a lease, cancelling an order and
/// leaving the registry never depend on a transfer succeeding; the recipient `claim`s later,
/// to itself or to another address it names.
abstract contract PullPayments {
    using SafeERC20 for IERC20;

    mapping(IERC20 token => mapping(address account => uint256)) public claimable;

    /// @notice A transfer failed; `amount` is now claimable by `account`.
    event PaymentCredited(address indexed token, address indexed account, uint256 amount);
    event Claimed(address indexed token, address indexed account, address to, uint256 amount);

    error NothingToClaim(address token, address account);
    error ClaimToZeroAddress();

    /// @notice Pays out everything credited to the caller in `token`, to `to` (which may differ
    /// from the caller, e.g. when the caller's own address is blocklisted by the token). Reverts
    /// when the transfer fails, leaving the credit in place.
    function claim(IERC20 token, address to) external {
        if (to == address(0)) revert ClaimToZeroAddress();
        uint256 amount = claimable[token][msg.sender];
        if (amount == 0) revert NothingToClaim(address(token), msg.sender);
        claimable[token][msg.sender] = 0;
        emit Claimed(address(token), msg.sender, to, amount);
        token.safeTransfer(to, amount);
    }

    function _payOrCredit(IERC20 token, address to, uint256 amount) internal {
        if (amount == 0) return;
        if (token.trySafeTransfer(to, amount)) return;
        claimable[token][to] += amount;
        emit PaymentCredited(address(token), to, amount);
    }
}
