//! Issue 17's network flow: anvil with 2-second blocks and EIP-1559 fees (anvil's default
//! base fee), a provider following two confirmations behind the head, and a reorg mined
//! mid-flow, deeper than the confirmations, that moves the tenant's `acceptBid` to a later
//! block and drops everything the provider sent after it (its delivery confirmation and
//! any withdrawal). The lease ends up exactly once on the provider (the same container
//! throughout) and is paid exactly once: what the canonical chain's `PaymentWithdrawn` and
//! `LeaseClosed` events paid adds up to the lease's `paid`, which is the provider's token
//! balance change.

use std::time::Duration;

use alloy::primitives::U256;
use alloy::providers::Provider;
use alloy::providers::ext::AnvilApi;
use alloy::rpc::types::Filter;
use alloy::rpc::types::anvil::{ReorgOptions, TransactionData};
use alloy::sol_types::SolEvent;
use leasehold_contracts::bindings::Marketplace;
use leasehold_e2e::docker::lease_containers;
use leasehold_e2e::eventually;
use leasehold_e2e::scenario::{PROVIDER_A, ProviderSpec, Scenario, TENANT, TOKEN, hello};

use crate::flows::{deploy_ok, manifest, wait_for_teardown};

const MINUTE: Duration = Duration::from_secs(60);

fn marketplace_logs<E: SolEvent>(scenario: &Scenario, lease: u64) -> Vec<alloy::rpc::types::Log> {
    let devnet = scenario.devnet();
    let filter = Filter::new()
        .address(devnet.deployment.marketplace)
        .event_signature(E::SIGNATURE_HASH)
        .topic1(U256::from(lease))
        .from_block(0);
    scenario
        .runtime
        .block_on(devnet.rpc.get_logs(&filter))
        .unwrap_or_else(|error| panic!("eth_getLogs: {error}"))
}

#[test]
fn a_reorg_mid_flow_leaves_the_lease_running_once_and_paid_once() {
    let mut scenario = Scenario::start(2);
    let base_fee = scenario
        .runtime
        .block_on(async { scenario.devnet().rpc.get_block_by_number(0.into()).await })
        .ok()
        .flatten()
        .and_then(|block| block.header.base_fee_per_gas);
    assert!(
        base_fee.is_some_and(|fee| fee > 0),
        "EIP-1559 fees: {base_fee:?}"
    );
    // 0.1 core at 36 tokens per core-hour: 1,000 base units a second, so withdrawals
    // every two seconds have something to take.
    let mut spec = ProviderSpec::new(PROVIDER_A, 36 * TOKEN);
    spec.withdraw_interval_secs = 2;
    spec.confirmations = 2;
    scenario.add_provider(spec);
    let balance_before = scenario.token_balance(PROVIDER_A);
    let hello_text = std::fs::read_to_string(hello()).unwrap_or_else(|e| panic!("{e}"));
    let pricey = hello_text.replace("amount: 1000\n", "amount: 3600000\n");
    assert_ne!(pricey, hello_text, "hello.yaml's price line moved");
    let pricey = manifest(&scenario, "hello-pricey.yaml", &pricey);
    let (_, lease) = deploy_ok(
        &scenario,
        &pricey,
        &["--bid-window", "20", "--deposit", "100000000"],
    );
    let containers = lease_containers(lease);
    assert_eq!(containers.len(), 1, "{containers:?}");
    eventually("the delivery confirmation", MINUTE, || {
        scenario.lease_on_chain(lease).confirmed.then_some(())
    });
    // A block or two of accrual, maybe a withdrawal, then the reorg.
    std::thread::sleep(Duration::from_secs(3));

    let created = marketplace_logs::<Marketplace::LeaseCreated>(&scenario, lease);
    assert_eq!(created.len(), 1);
    let created_at = created[0].block_number.expect("block");
    let accept_tx = created[0].transaction_hash.expect("tx");
    let rpc = &scenario.devnet().rpc;
    let raw = scenario
        .runtime
        .block_on(rpc.get_raw_transaction_by_hash(accept_tx))
        .unwrap_or_else(|error| panic!("eth_getRawTransactionByHash: {error}"))
        .expect("the acceptBid transaction");
    let head = scenario
        .runtime
        .block_on(rpc.get_block_number())
        .unwrap_or_else(|error| panic!("{error}"));
    let depth = head - created_at + 1;
    assert!(depth > 2, "deeper than the confirmations: {depth}");
    scenario
        .runtime
        .block_on(rpc.anvil_reorg(ReorgOptions {
            depth,
            tx_block_pairs: vec![(TransactionData::Raw(raw), 1)],
        }))
        .unwrap_or_else(|error| panic!("anvil_reorg: {error}"));
    let moved = marketplace_logs::<Marketplace::LeaseCreated>(&scenario, lease);
    assert_eq!(moved.len(), 1);
    assert_eq!(
        moved[0].block_number,
        Some(created_at + 1),
        "the lease moved a block"
    );
    assert!(
        !scenario.lease_on_chain(lease).confirmed,
        "the confirmation was in the abandoned blocks"
    );

    // The provider notices, confirms again, and keeps the one deployment.
    let deadline = std::time::Instant::now() + MINUTE;
    while !scenario.lease_on_chain(lease).confirmed {
        assert!(
            std::time::Instant::now() < deadline,
            "the delivery was not confirmed again:\n{}",
            scenario.provider_logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eventually("a withdrawal on the new chain", MINUTE, || {
        (!marketplace_logs::<Marketplace::PaymentWithdrawn>(&scenario, lease).is_empty())
            .then_some(())
    });
    assert_eq!(
        lease_containers(lease),
        containers,
        "one deployment, never redone"
    );
    let metrics_log = scenario.provider_logs();
    assert!(
        metrics_log.contains("chain reorganised"),
        "the provider logged the reorg:\n{metrics_log}"
    );

    let close = scenario.tenant(TENANT, &["close", &lease.to_string()], MINUTE);
    close.expect_code(0, "tenant close");
    wait_for_teardown(lease);

    let info = scenario.lease_on_chain(lease);
    assert!(!info.active);
    let withdrawn: U256 = marketplace_logs::<Marketplace::PaymentWithdrawn>(&scenario, lease)
        .iter()
        .map(|log| {
            log.log_decode::<Marketplace::PaymentWithdrawn>()
                .expect("PaymentWithdrawn")
                .inner
                .data
                .amount
        })
        .sum();
    let closed = marketplace_logs::<Marketplace::LeaseClosed>(&scenario, lease);
    assert_eq!(closed.len(), 1, "closed once");
    let at_close = closed[0]
        .log_decode::<Marketplace::LeaseClosed>()
        .expect("LeaseClosed")
        .inner
        .data
        .paidToProvider;
    // A withdrawal re-mined right after the re-mined confirmation may pay nothing: what
    // counts is that withdrawals and the close add up to `paid`, once.
    assert!(
        info.paid > U256::ZERO,
        "the lease paid its provider: {info:?}"
    );
    assert_eq!(withdrawn + at_close, info.paid, "paid once: {info:?}");
    assert_eq!(
        scenario.token_balance(PROVIDER_A) - balance_before,
        info.paid,
        "the provider received exactly what the lease paid"
    );
}
