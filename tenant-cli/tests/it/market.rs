//! `tenant providers`, `preflight` and the wrong-network check against real contracts.

use alloy::primitives::{B256, U256};
use leasehold_contracts::{NewOrder, OrderRequirements, OrderSpec, Resources};

use crate::support::{
    Devnet, H100_SDL, OTHER_TENANT, PROVIDER_A, PROVIDER_B, TENANT, code, json, stderr, within,
};

/// B's only bid so far: 50,000/h for one replica, far above the SDL's 1000/h.
async fn give_b_a_price_history(devnet: &Devnet) {
    let posted = devnet
        .client(OTHER_TENANT)
        .create_order(&NewOrder {
            token: devnet.deployment.token,
            spec: OrderSpec {
                group_name: leasehold_contracts::group_name_key("history"),
                resources: Resources {
                    cpu_milli: 100,
                    memory_mib: 64,
                    storage_mib: 64,
                },
                gpu_count: 0,
                replicas: 1,
                leased_ips: 0,
                requirements: OrderRequirements::default(),
            },
            manifest_hash: B256::repeat_byte(1),
            max_price_per_hour: U256::from(100_000),
            deposit: U256::from(1_000_000),
            bid_window_secs: 3600,
            delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
        })
        .await
        .expect("create order");
    devnet
        .client(PROVIDER_B)
        .place_bid(
            posted.order_id,
            U256::from(50_000),
            None,
            &posted.spec.requirements,
        )
        .await
        .expect("place bid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_and_preflight_explain_who_cannot_serve_and_why() {
    within(async {
        let devnet = Devnet::start().await;
        devnet
            .register(PROVIDER_A, "127.0.0.1:7001", &[("nvidia/a100/80Gi/sxm", 4)])
            .await;
        devnet
            .register(PROVIDER_B, "127.0.0.1:7002", &[("nvidia/h100/80Gi/sxm", 2)])
            .await;
        give_b_a_price_history(&devnet).await;

        let listed = devnet
            .tenant_with(devnet.env(), &["providers", "--output", "json"])
            .await;
        assert_eq!(code(&listed), Some(0), "{}", stderr(&listed));
        let providers = json(&listed)["providers"]
            .as_array()
            .expect("providers")
            .clone();
        assert_eq!(providers.len(), 2);
        let a = devnet.address_json(PROVIDER_A);
        let a_json = providers
            .iter()
            .find(|p| p["address"] == a.as_str())
            .expect("A listed");
        assert_eq!(a_json["endpoint"], "127.0.0.1:7001");
        assert_eq!(a_json["capacity"]["cpu_milli"], 64_000);
        assert_eq!(a_json["gpus"][0]["capacity"], 4);
        let text = devnet.tenant_with(devnet.env(), &["providers"]).await;
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(
            text.contains("127.0.0.1:7002") && text.contains("0/64000"),
            "{text}"
        );

        let file = devnet.home.path().join("h100.yaml");
        std::fs::write(&file, H100_SDL).expect("write sdl");
        let file = file.to_string_lossy().into_owned();
        let report = devnet
            .tenant_with(devnet.env(), &["preflight", &file, "--output", "json"])
            .await;
        assert_eq!(code(&report), Some(0), "{}", stderr(&report));
        let report = json(&report);
        let group = &report["groups"][0];
        assert_eq!(group["group"], "eu");
        assert_eq!(group["max_price_per_hour"], "1000");
        assert_eq!(
            group["eligible"].as_array().map(Vec::len),
            Some(0),
            "{group}"
        );
        let why = |index: usize| {
            let address = devnet.address_json(index);
            group["ineligible"]
                .as_array()
                .and_then(|list| list.iter().find(|r| r["provider"] == address.as_str()))
                .map(|r| r["reason"].clone())
                .unwrap_or_else(|| panic!("{address} not in {group}"))
        };
        let a_reason = why(PROVIDER_A);
        assert_eq!(a_reason["kind"], "gpu_model", "{a_reason}");
        assert!(
            a_reason["message"]
                .as_str()
                .unwrap_or_default()
                .contains("nvidia/h100/80Gi/sxm"),
            "{a_reason}"
        );
        let b_reason = why(PROVIDER_B);
        assert_eq!(b_reason["kind"], "price", "{b_reason}");
        assert!(
            b_reason["message"]
                .as_str()
                .unwrap_or_default()
                .contains("50000"),
            "{b_reason}"
        );

        // Text mode says the same in words.
        let text = devnet
            .tenant_with(devnet.env(), &["preflight", &file])
            .await;
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(text.contains("0 of 2 provider(s) can serve it"), "{text}");
        assert!(text.contains("too expensive"), "{text}");

        // B's bid on the open history order: `bids` says settle would pick it.
        let bids = devnet
            .tenant_with(devnet.env(), &["bids", "1", "--output", "json"])
            .await;
        assert_eq!(code(&bids), Some(0), "{}", stderr(&bids));
        let bids = json(&bids);
        assert_eq!(bids["status"], "open");
        assert_eq!(bids["bids"][0]["provider"], devnet.address_json(PROVIDER_B));
        assert_eq!(bids["bids"][0]["settle_would_pick"], true);
        assert_eq!(bids["bids"][0]["won"], false);
        let text = devnet.tenant_with(devnet.env(), &["bids", "1"]).await;
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(
            text.contains("order 1 (open)") && text.contains("settle would pick this"),
            "{text}"
        );

        // A CPU-only SDL in the region fits both.
        let hello = crate::support::example("hello.yaml");
        let report = devnet
            .tenant_with(devnet.env(), &["preflight", &hello, "--output", "json"])
            .await;
        assert_eq!(code(&report), Some(0), "{}", stderr(&report));
        let eligible = json(&report)["groups"][0]["eligible"]
            .as_array()
            .map(Vec::len);
        // B's history (50000/h per replica) is above hello's 1000/h; A has no history.
        assert_eq!(eligible, Some(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_network_is_exit_3_naming_both_chain_ids() {
    within(async {
        let devnet = Devnet::start().await;
        let mut other = devnet.deployment;
        other.chain_id = 11_155_111;
        let path = devnet.home.path().join("sepolia.json");
        other.save(&path).expect("save");
        let mut env = devnet.env_as(TENANT);
        env.retain(|(name, _)| *name != "LEASEHOLD_DEPLOYMENT");
        env.push(("LEASEHOLD_DEPLOYMENT", path.to_string_lossy().into_owned()));
        let output = devnet
            .tenant_with(env, &["wallet", "balance", "--output", "json"])
            .await;
        assert_eq!(code(&output), Some(3), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains("31337") && message.contains("11155111"),
            "{message}"
        );
        let error = json(&output);
        assert_eq!(error["error"]["details"]["rpc_chain_id"], 31337);
        assert_eq!(error["error"]["details"]["expected_chain_id"], 11_155_111);

        // The configured chain id disagrees with the deployment: refused before any call.
        let mut env = devnet.env_as(TENANT);
        env.push(("LEASEHOLD_CHAIN_ID", "5".to_owned()));
        let output = devnet.tenant_with(env, &["providers"]).await;
        assert_eq!(code(&output), Some(3), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(
            message.contains("chain id 5") && message.contains("31337"),
            "{message}"
        );

        // An unreachable node is a network error too.
        let mut env = devnet.env_as(TENANT);
        env.retain(|(name, _)| *name != "LEASEHOLD_RPC_URL");
        env.push(("LEASEHOLD_RPC_URL", "http://127.0.0.1:1".to_owned()));
        let output = devnet.tenant_with(env, &["providers"]).await;
        assert_eq!(code(&output), Some(3), "{}", stderr(&output));
    })
    .await;
}

/// `tenant bids` predicts what the contract's `settle` does: a bid whose provider stopped
/// (deregistered) is passed over, not picked. `tenant status` shows a withdrawn bid's bond as
/// pending for the tenant, and `tenant wallet claim --release-bonds` collects it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bids_predict_settle_and_claim_collects_a_withdrawn_bids_bond() {
    within(async {
        let devnet = Devnet::start().await;
        devnet.register(PROVIDER_A, "127.0.0.1:7001", &[]).await;
        devnet.register(PROVIDER_B, "127.0.0.1:7002", &[]).await;
        let tenant = devnet.client(TENANT);
        let posted = tenant
            .create_order(&NewOrder {
                token: devnet.deployment.token,
                spec: OrderSpec {
                    group_name: leasehold_contracts::group_name_key("bonds"),
                    resources: Resources {
                        cpu_milli: 100,
                        memory_mib: 64,
                        storage_mib: 64,
                    },
                    gpu_count: 0,
                    replicas: 1,
                    leased_ips: 0,
                    requirements: OrderRequirements::default(),
                },
                manifest_hash: B256::repeat_byte(2),
                max_price_per_hour: U256::from(100_000),
                deposit: U256::from(1_000_000),
                bid_window_secs: 3600,
                delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
            })
            .await
            .expect("create order");
        let order = posted.order_id.to_string();
        let b = devnet.client(PROVIDER_B);
        let b_bid = b
            .place_bid(
                posted.order_id,
                U256::from(10),
                None,
                &posted.spec.requirements,
            )
            .await
            .expect("B bids");
        devnet
            .client(PROVIDER_A)
            .place_bid(
                posted.order_id,
                U256::from(20),
                None,
                &posted.spec.requirements,
            )
            .await
            .expect("A bids");
        b.deregister_provider().await.expect("B stops");

        let bids = devnet
            .tenant_with(devnet.env_as(TENANT), &["bids", &order, "--output", "json"])
            .await;
        assert_eq!(code(&bids), Some(0), "{}", stderr(&bids));
        let bids = json(&bids);
        let row = |provider: usize| {
            bids["bids"]
                .as_array()
                .and_then(|rows| {
                    rows.iter()
                        .find(|row| row["provider"] == devnet.address_json(provider).as_str())
                })
                .cloned()
                .unwrap_or_else(|| panic!("{bids}"))
        };
        assert_eq!(row(PROVIDER_B)["settle_would_pick"], false, "{bids}");
        assert_eq!(row(PROVIDER_B)["settle_passes_over"], true, "{bids}");
        assert_eq!(row(PROVIDER_B)["ineligible_because"]["kind"], "inactive");
        assert_eq!(row(PROVIDER_A)["settle_would_pick"], true, "{bids}");
        assert_eq!(
            bids["settle_calls"], 1,
            "one skip and the match fit in one call"
        );

        b.withdraw_bid(posted.order_id, b_bid)
            .await
            .expect("B withdraws");
        let bond = tenant.bid_bond().await.expect("bond");
        let status = devnet
            .tenant_with(
                devnet.env_as(TENANT),
                &["status", &order, "--output", "json"],
            )
            .await;
        assert_eq!(code(&status), Some(0), "{}", stderr(&status));
        let status = json(&status);
        assert_eq!(
            status["bonds"]["forfeits_pending"],
            serde_json::json!([b_bid])
        );
        assert_eq!(status["bonds"]["pending_amount"], bond.to_string());

        tenant.cancel_order(posted.order_id).await.expect("cancel");
        let claim = devnet
            .tenant_with(
                devnet.env_as(TENANT),
                &[
                    "wallet",
                    "claim",
                    "--release-bonds",
                    &order,
                    "--output",
                    "json",
                ],
            )
            .await;
        assert_eq!(code(&claim), Some(0), "{}", stderr(&claim));
        let claim = json(&claim);
        assert_eq!(claim["bonds_forfeited_to_you"], bond.to_string(), "{claim}");
        assert_eq!(claim["claimed_from_registry"], bond.to_string(), "{claim}");
        let info = tenant
            .provider_info(devnet.address(PROVIDER_A))
            .await
            .expect("A");
        assert_eq!(
            info.locked_bonds,
            U256::ZERO,
            "A's losing bid got its bond back"
        );
    })
    .await;
}

/// An endpoint like a public one: the first URL dead, the second rate-limiting and refusing
/// `eth_getLogs` over more than 200 blocks, over a chain of more than a thousand blocks.
/// `tenant bids` (the order's event, the bid history for reputations) still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bids_work_through_failover_rate_limits_and_a_log_range_limit() {
    use alloy::providers::ext::AnvilApi as _;
    use leasehold_contracts::devnet::RpcProxy;
    use std::sync::atomic::Ordering;

    within(async {
        let devnet = Devnet::start().await;
        devnet.register(PROVIDER_B, "127.0.0.1:7002", &[]).await;
        let posted = devnet
            .client(TENANT)
            .create_order(&NewOrder {
                token: devnet.deployment.token,
                spec: OrderSpec {
                    group_name: leasehold_contracts::group_name_key("public"),
                    resources: Resources {
                        cpu_milli: 100,
                        memory_mib: 64,
                        storage_mib: 64,
                    },
                    gpu_count: 0,
                    replicas: 1,
                    leased_ips: 0,
                    requirements: OrderRequirements::default(),
                },
                manifest_hash: B256::repeat_byte(3),
                max_price_per_hour: U256::from(100_000),
                deposit: U256::from(1_000_000),
                bid_window_secs: 7200,
                delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
            })
            .await
            .expect("create order");
        devnet
            .client(PROVIDER_B)
            .place_bid(
                posted.order_id,
                U256::from(10),
                None,
                &posted.spec.requirements,
            )
            .await
            .expect("B bids");
        // ~15 ms a block on a loaded machine: enough for several refused ranges.
        devnet
            .chain
            .rpc
            .anvil_mine(Some(1_200), None)
            .await
            .unwrap();

        let proxy = RpcProxy::start(&devnet.chain.endpoint()).await.unwrap();
        proxy.limit_log_range(200);
        proxy.rate_limit_next(2);
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let mut env = devnet.env_as(TENANT);
        env.retain(|(name, _)| *name != "LEASEHOLD_RPC_URL");
        env.push(("LEASEHOLD_RPC_URL", format!("{dead},{}", proxy.url())));
        let order = posted.order_id.to_string();
        let bids = devnet
            .tenant_with(env, &["bids", &order, "--output", "json"])
            .await;
        assert_eq!(code(&bids), Some(0), "{}", stderr(&bids));
        let bids = json(&bids);
        assert_eq!(bids["bids"][0]["provider"], devnet.address_json(PROVIDER_B));
        let counters = proxy.counters();
        assert_eq!(counters.rate_limited.load(Ordering::SeqCst), 2);
        assert!(
            counters.ranges_refused.load(Ordering::SeqCst) > 0,
            "the limit was hit"
        );
        assert!(counters.widest_range.load(Ordering::SeqCst) <= 200);
    })
    .await;
}

/// A fee cap below what the network needs stops a command before it sends anything, and
/// the error names the flag, the cap and the fee needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_cap_below_the_network_fee_fails_clearly_and_sends_nothing() {
    use alloy::providers::Provider as _;
    within(async {
        let devnet = Devnet::start().await;
        let posted = devnet
            .client(TENANT)
            .create_order(&NewOrder {
                token: devnet.deployment.token,
                spec: OrderSpec {
                    group_name: leasehold_contracts::group_name_key("capped"),
                    resources: Resources {
                        cpu_milli: 100,
                        memory_mib: 64,
                        storage_mib: 64,
                    },
                    gpu_count: 0,
                    replicas: 1,
                    leased_ips: 0,
                    requirements: OrderRequirements::default(),
                },
                manifest_hash: B256::repeat_byte(2),
                max_price_per_hour: U256::from(100_000),
                deposit: U256::from(1_000_000),
                bid_window_secs: 3600,
                delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
            })
            .await
            .expect("create order");
        // Fees spike to 50 gwei.
        let rpc = &devnet.chain.rpc;
        let () = rpc
            .raw_request(
                "anvil_setNextBlockBaseFeePerGas".into(),
                (U256::from(50_000_000_000u64),),
            )
            .await
            .expect("base fee");
        let _: String = rpc.raw_request("evm_mine".into(), ()).await.expect("mine");
        let before = devnet.nonce(TENANT).await;
        let order = posted.order_id.to_string();

        let capped = devnet
            .tenant(
                TENANT,
                &["topup", &order, "1000", "--max-fee-per-gas-gwei", "1.5"],
            )
            .await;
        assert_eq!(code(&capped), Some(1), "{}", stderr(&capped));
        let message = stderr(&capped);
        assert!(message.contains("--max-fee-per-gas-gwei"), "{message}");
        assert!(message.contains("= 1.5 gwei"), "{message}");
        assert!(message.contains("needs a max fee of"), "{message}");
        assert_eq!(devnet.nonce(TENANT).await, before, "nothing was sent");

        let uncapped = devnet
            .tenant(TENANT, &["topup", &order, "1000", "--output", "json"])
            .await;
        assert_eq!(code(&uncapped), Some(0), "{}", stderr(&uncapped));
        assert!(devnet.nonce(TENANT).await > before);
    })
    .await;
}
