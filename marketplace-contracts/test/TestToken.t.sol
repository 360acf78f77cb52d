// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Test} from "./utils/Test.sol";
import {vm} from "./utils/Vm.sol";
import {TestToken} from "../src/TestToken.sol";

contract TestTokenTest is Test {
    TestToken internal token;
    address internal alice = address(0xA11CE);

    function setUp() public {
        token = new TestToken();
    }

    function test_metadata() public view {
        assertEq(token.decimals(), 6, "six decimals like USDC");
        assertEq(token.symbol(), "tUSD", "symbol");
        assertEq(token.totalSupply(), 0, "no premint");
    }

    function test_faucet_mintsToAnyone() public {
        vm.expectEmit(true, true, false, true, address(token));
        emit TestToken.FaucetDrip(address(this), alice, 5e6);
        token.faucet(alice, 5e6);
        assertEq(token.balanceOf(alice), 5e6, "minted");
        uint256 cap = token.FAUCET_CAP();
        vm.prank(alice);
        token.faucet(alice, cap);
        assertEq(token.balanceOf(alice), 5e6 + cap, "cap is allowed");
    }

    function test_faucet_revertsOutOfRange() public {
        uint256 cap = token.FAUCET_CAP();
        vm.expectRevert(abi.encodeWithSelector(TestToken.FaucetAmountOutOfRange.selector, 0, cap));
        token.faucet(alice, 0);
        vm.expectRevert(abi.encodeWithSelector(TestToken.FaucetAmountOutOfRange.selector, cap + 1, cap));
        token.faucet(alice, cap + 1);
        vm.expectRevert(TestToken.FaucetToZeroAddress.selector);
        token.faucet(address(0), 1);
    }
}
