// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title TestToken
/// @notice Devnet stablecoin with 6 decimals. Anyone can mint through the faucet, at most
/// FAUCET_CAP base units per call, so a typo cannot mint an absurd supply in one go.
/// EIP-2612 `permit` (domain: the token's name, version "1"), so a tenant approves and
/// posts an order in one transaction (`Marketplace.createOrderWithPermit`).
contract TestToken is ERC20, ERC20Permit {
    /// @notice Most base units one faucet call may mint (1,000,000 tokens).
    uint256 public constant FAUCET_CAP = 1_000_000e6;

    event FaucetDrip(address indexed caller, address indexed to, uint256 amount);

    error FaucetAmountOutOfRange(uint256 amount, uint256 cap);
    error FaucetToZeroAddress();

    constructor() ERC20("Leasehold Test USD", "tUSD") ERC20Permit("Leasehold Test USD") {}

    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` (1..FAUCET_CAP base units) to `to`.
    function faucet(address to, uint256 amount) external {
        if (amount == 0 || amount > FAUCET_CAP) revert FaucetAmountOutOfRange(amount, FAUCET_CAP);
        if (to == address(0)) revert FaucetToZeroAddress();
        _mint(to, amount);
        emit FaucetDrip(msg.sender, to, amount);
    }
}
