//! Large market histories for the benchmarks: a `Crowd` contract (`Crowd.sol`, compiled here
//! with the repo's solc) whose members are tenants and providers, driven with dozens of market
//! rounds per transaction. Recording 13,000 rounds through the client (a transaction and a block
//! per call) would take hours; this takes minutes, and the marketplace sees the same calls from
//! the same kind of distinct addresses. The history's shape is [`drive_history`]'s, spread over
//! several tenants and providers.

use std::time::Instant;

use alloy::network::TransactionBuilder;
use alloy::primitives::{Address, Bytes, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use alloy::sol_types::SolCall;
use leasehold_contracts::bindings::{Marketplace, ProviderRegistry, TestToken};
use leasehold_contracts::devnet::{Devnet, solc_standard_json};
use leasehold_contracts::{CloseReason, Resources, signing_provider};

use crate::support::*;

alloy::sol! {
    #[sol(rpc)]
    contract Crowd {
        struct Step { uint8 member; address target; bytes data; }
        function run(Step[] calldata steps) external;
        function members(uint256 index) external view returns (address);
    }
}

const SOURCE: &str = include_str!("Crowd.sol");

/// Crowd.sol's creation code, from the repo's solc (installed by `scripts/bootstrap`).
fn crowd_bytecode() -> Bytes {
    let input = serde_json::json!({
        "language": "Solidity",
        "sources": { "Crowd.sol": { "content": SOURCE } },
        "settings": {
            "optimizer": { "enabled": true, "runs": 200 },
            "evmVersion": "cancun",
            "outputSelection": { "*": { "*": ["evm.bytecode.object"] } }
        }
    });
    let compiled = solc_standard_json(&input.to_string()).unwrap_or_else(|error| panic!("{error}"));
    let code = compiled["contracts"]["Crowd.sol"]["Crowd"]["evm"]["bytecode"]["object"]
        .as_str()
        .unwrap_or_else(|| panic!("Crowd.sol did not compile: {}", compiled["errors"]));
    code.parse().expect("bytecode hex")
}

/// What a recording left on chain.
pub struct CrowdHistory {
    pub leases: Vec<u64>,
    pub tenants: Vec<Address>,
    pub providers: Vec<Address>,
    pub transactions: usize,
    /// The most gas one transaction used (anvil's block gas limit bounds the rounds per
    /// transaction).
    pub max_gas: u64,
}

struct Recorder<'a> {
    devnet: &'a Devnet,
    crowd: Crowd::CrowdInstance<DynProvider>,
    transactions: usize,
    max_gas: u64,
}

impl Recorder<'_> {
    async fn run(&mut self, steps: Vec<Crowd::Step>, what: &str) {
        let receipt = self
            .crowd
            .run(steps)
            .send()
            .await
            .unwrap_or_else(|error| panic!("Crowd.run ({what}): {error}"))
            .get_receipt()
            .await
            .unwrap_or_else(|error| panic!("Crowd.run ({what}) receipt: {error}"));
        assert!(receipt.status(), "Crowd.run ({what}) reverted");
        self.transactions += 1;
        self.max_gas = self.max_gas.max(receipt.gas_used);
    }
}

fn step(member: usize, target: Address, call: impl SolCall) -> Crowd::Step {
    Crowd::Step {
        member: u8::try_from(member).expect("at most 255 members"),
        target,
        data: call.abi_encode().into(),
    }
}

/// Records `rounds` market rounds, `rounds_per_tx` of them per transaction, among `tenants`
/// tenants and `providers` providers (all crowd members). Round `r` is [`drive_history`]'s: an
/// order by tenant `r % tenants`, bids by two neighbouring providers, then either a withdrawn
/// bid and a cancelled order (one round in five) or a lease that is confirmed, paid after ten
/// minutes, topped up and (one in three) closed; the ended order's bonds are released.
pub async fn record_crowd_history(
    devnet: &Devnet,
    rounds: u64,
    rounds_per_tx: u64,
    tenants: usize,
    providers: usize,
) -> CrowdHistory {
    assert!(providers >= 2 && tenants >= 1 && tenants + providers <= 255);
    let sender = signing_provider(
        &devnet.endpoint(),
        devnet.signer(TENANT).expect("tenant key"),
    )
    .expect("provider");
    let members = u8::try_from(tenants + providers).expect("member count");
    let mut creation = crowd_bytecode().to_vec();
    creation.extend(U256::from(members).to_be_bytes::<32>());
    let receipt = sender
        .send_transaction(TransactionRequest::default().with_deploy_code(creation))
        .await
        .expect("deploying Crowd")
        .get_receipt()
        .await
        .expect("Crowd receipt");
    let address = receipt.contract_address.expect("Crowd address");
    let crowd = Crowd::new(address, sender.clone());
    let mut addresses = Vec::new();
    for index in 0..members {
        addresses.push(
            crowd
                .members(U256::from(index))
                .call()
                .await
                .expect("member"),
        );
    }
    let deployment = &devnet.deployment;
    let (market, registry, token) = (
        deployment.marketplace,
        deployment.registry,
        deployment.token,
    );
    let mut recorder = Recorder {
        devnet,
        crowd,
        transactions: 0,
        max_gas: 0,
    };

    // Setup: every member draws test tokens; tenants approve the marketplace, providers register
    // and stake enough for the bonds of their open bids.
    let mut setup = Vec::new();
    for (index, member) in addresses.iter().enumerate() {
        setup.push(step(
            index,
            token,
            TestToken::faucetCall {
                to: *member,
                amount: U256::from(1_000_000 * TOKEN),
            },
        ));
        let spender = if index < tenants { market } else { registry };
        setup.push(step(
            index,
            token,
            TestToken::approveCall {
                spender,
                value: U256::MAX,
            },
        ));
        if index >= tenants {
            setup.push(step(
                index,
                registry,
                ProviderRegistry::registerCall {
                    endpoint: format!("https://provider-{index}.example:8443"),
                    gatewayCertSha256: alloy::primitives::B256::repeat_byte(0xce),
                    attributes: vec![attribute("region=eu-west")],
                    capacity: Resources {
                        cpu_milli: 1_000_000_000,
                        memory_mib: 1_000_000_000,
                        storage_mib: 1_000_000_000,
                    }
                    .into(),
                    gpus: Vec::new(),
                },
            ));
            setup.push(step(
                index,
                registry,
                ProviderRegistry::addStakeCall {
                    amount: U256::from(10_000 * TOKEN),
                },
            ));
        }
    }
    recorder.run(setup, "setup").await;

    let order = new_order(devnet, 100 * TOKEN);
    let first_order: u64 = Marketplace::new(market, devnet.rpc.clone())
        .nextOrderId()
        .call()
        .await
        .expect("nextOrderId")
        .try_into()
        .expect("order id");
    let started = Instant::now();
    let mut leases = Vec::new();
    let mut round = 0;
    while round < rounds {
        let batch = round..(round + rounds_per_tx).min(rounds);
        let mut matching = Vec::new();
        let mut settling = Vec::new();
        for r in batch.clone() {
            let order_id = first_order + r;
            let id = U256::from(order_id);
            let tenant = (r as usize) % tenants;
            let bidders = [
                tenants + (r as usize) % providers,
                tenants + (r as usize + 1) % providers,
            ];
            matching.push(step(
                tenant,
                market,
                Marketplace::createOrderCall {
                    token,
                    spec: order.spec.clone().into(),
                    manifestHash: order.manifest_hash,
                    maxPricePerHour: order.max_price_per_hour,
                    deposit: order.deposit,
                    bidWindow: order.bid_window_secs,
                    deliveryWindow: order.delivery_window_secs,
                },
            ));
            for (bidder, price) in bidders.iter().zip([3 * TOKEN, 2 * TOKEN]) {
                matching.push(step(
                    *bidder,
                    market,
                    Marketplace::placeBidCall {
                        orderId: id,
                        pricePerHour: U256::from(price),
                        gpu: None.into(),
                        allowedGpuModels: Vec::new(),
                        requiredAttributes: order.spec.requirements.required_attributes.clone(),
                    },
                ));
            }
            let release = step(
                tenant,
                registry,
                ProviderRegistry::releaseBondsCall {
                    orderId: id,
                    bidIds: vec![U256::ZERO, U256::from(1)],
                },
            );
            if r % 5 == 4 {
                matching.push(step(
                    bidders[1],
                    market,
                    Marketplace::withdrawBidCall {
                        orderId: id,
                        bidId: U256::from(1),
                    },
                ));
                matching.push(step(
                    tenant,
                    market,
                    Marketplace::cancelOrderCall { orderId: id },
                ));
                settling.push(release);
                continue;
            }
            let winner = (r % 2) as usize;
            matching.push(step(
                tenant,
                market,
                Marketplace::acceptBidCall {
                    orderId: id,
                    bidId: U256::from(winner),
                },
            ));
            matching.push(step(
                bidders[winner],
                market,
                Marketplace::confirmLeaseCall { leaseId: id },
            ));
            settling.push(step(
                bidders[winner],
                market,
                Marketplace::withdrawCall { leaseId: id },
            ));
            settling.push(step(
                tenant,
                market,
                Marketplace::topUpCall {
                    orderId: id,
                    amount: U256::from(10 * TOKEN),
                },
            ));
            if r % 3 == 0 {
                settling.push(step(
                    tenant,
                    market,
                    Marketplace::closeLeaseCall {
                        leaseId: id,
                        reason: CloseReason::TenantRequest.code(),
                    },
                ));
            }
            settling.push(release);
            leases.push(order_id);
        }
        recorder.run(matching, "orders, bids and leases").await;
        recorder.devnet.warp(600).await.expect("warp");
        recorder.run(settling, "payments, top-ups and closes").await;
        round = batch.end;
        if round % (rounds_per_tx * 20) == 0 || round == rounds {
            eprintln!(
                "recorded {round}/{rounds} rounds ({} leases, {} transactions) in {:.1?}",
                leases.len(),
                recorder.transactions,
                started.elapsed()
            );
        }
    }
    CrowdHistory {
        leases,
        tenants: addresses[..tenants].to_vec(),
        providers: addresses[tenants..].to_vec(),
        transactions: recorder.transactions,
        max_gas: recorder.max_gas,
    }
}
