// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Crowd (benchmark helper, never deployed outside a devnet)
/// @notice Many market participants acting in one transaction, so a benchmark can record a
/// history of tens of thousands of orders, bids and leases in a few hundred transactions
/// instead of one transaction (and one block) per call. Each member is its own address: the
/// marketplace sees distinct tenants and providers exactly as it would see accounts. The
/// calldata of every step is built by the caller from the contracts' own bindings; a step that
/// reverts reverts the whole run with the callee's revert data.
contract Crowd {
    struct Step {
        uint8 member;
        address target;
        bytes data;
    }

    address public immutable owner;
    CrowdMember[] public members;

    error NotOwner(address caller);
    error NoSuchMember(uint8 member, uint256 count);

    constructor(uint8 count) {
        owner = msg.sender;
        for (uint8 i = 0; i < count; ++i) {
            members.push(new CrowdMember());
        }
    }

    function run(Step[] calldata steps) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        uint256 count = members.length;
        for (uint256 i = 0; i < steps.length; ++i) {
            Step calldata step = steps[i];
            if (step.member >= count) revert NoSuchMember(step.member, count);
            members[step.member].exec(step.target, step.data);
        }
    }
}

/// @notice One participant of a `Crowd`: calls what its crowd tells it to, as itself.
contract CrowdMember {
    address private immutable crowd;

    error NotCrowd(address caller);

    constructor() {
        crowd = msg.sender;
    }

    function exec(address target, bytes calldata data) external {
        if (msg.sender != crowd) revert NotCrowd(msg.sender);
        (bool ok, bytes memory returned) = target.call(data);
        if (!ok) {
            assembly {
                revert(add(returned, 32), mload(returned))
            }
        }
    }
}
