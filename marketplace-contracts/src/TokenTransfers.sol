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
