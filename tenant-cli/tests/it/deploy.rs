//! `tenant deploy` against anvil with the test acting as the providers (bidding through the
//! contracts client), then the lease commands on the result.

use std::time::Duration;

use alloy::primitives::U256;
use leasehold_contracts::OrderPosted;

use crate::support::{
    Devnet, FUNDING, H100_SDL, OTHER_TENANT, PROVIDER_A, PROVIDER_B, TENANT, UNFUNDED, code,
    example, json, stderr, within,
};

/// Waits for order `order_id` to be posted, then each `(provider, price)` bids on it.
async fn bid_when_posted(devnet: &Devnet, order_id: u64, bids: &[(usize, u64)]) -> OrderPosted {
    let watcher = devnet.client(PROVIDER_A);
    let posted = loop {
        if let Ok(posted) = watcher.order_posted(order_id).await {
            break posted;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for (provider, price) in bids {
        devnet
            .client(*provider)
            .place_bid(
                order_id,
                U256::from(*price),
                None,
                &posted.spec.requirements,
            )
            .await
            .expect("place bid");
    }
    posted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_accepts_the_cheapest_bid_then_lease_commands_work() {
    within(async {
        let devnet = Devnet::start().await;
        // Nothing listens on these: the gateway part of `status` must report it (exit 3).
        devnet.register(PROVIDER_A, "127.0.0.1:1", &[]).await;
        devnet.register(PROVIDER_B, "127.0.0.1:2", &[]).await;
        let hello = example("hello.yaml");
        let nonce_before = devnet.nonce(TENANT).await;
        let deploying = devnet.tenant(
            TENANT,
            &[
                "deploy",
                &hello,
                // Far longer than the test: both eligible providers bid, so cheapest is
                // decided without waiting for the window.
                "--bid-window",
                "120",
                "--no-manifest",
                "--timeout",
                "60",
                "--deposit",
                "50000",
                "--output",
                "json",
            ],
        );
        let bidding = bid_when_posted(&devnet, 1, &[(PROVIDER_A, 900), (PROVIDER_B, 500)]);
        let (output, posted) = tokio::join!(deploying, bidding);
        assert_eq!(code(&output), Some(0), "{}", stderr(&output));
        assert_eq!(posted.deposit, U256::from(50_000));
        assert!(
            devnet.chain_now().await < posted.bid_window_end,
            "the lease was created before the bid window closed"
        );
        assert_eq!(
            devnet.nonce(TENANT).await - nonce_before,
            2,
            "createOrderWithPermit (approval and order in one transaction), then acceptBid"
        );
        let result = json(&output);
        let group = &result["groups"][0];
        let b = devnet.address_json(PROVIDER_B);
        assert_eq!(group["lease_id"], 1);
        assert_eq!(group["provider"], b.as_str());
        assert_eq!(group["price_per_hour"], "500");
        assert_eq!(group["endpoint"], "127.0.0.1:2");
        // Progress went to stderr as NDJSON events.
        let events = stderr(&output);
        assert!(
            events
                .lines()
                .any(|l| l.contains("\"event\":\"order_created\"")
                    && l.contains("\"funding\":\"permit\"")),
            "{events}"
        );
        assert!(
            events
                .lines()
                .filter(|l| l.contains("\"event\":\"bid\""))
                .count()
                >= 2,
            "{events}"
        );

        let record = devnet.home.path().join("data/leasehold/deployments/1.json");
        let saved: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&record).expect("record")).expect("json");
        assert_eq!(saved["groups"][0]["lease_id"], 1);
        assert_eq!(saved["groups"][0]["endpoint"], "127.0.0.1:2");

        let bids = devnet
            .tenant(TENANT, &["bids", "1", "--output", "json"])
            .await;
        assert_eq!(code(&bids), Some(0), "{}", stderr(&bids));
        let bids = json(&bids);
        assert_eq!(bids["status"], "leased");
        let rows = bids["bids"].as_array().expect("bids");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["provider"], b.as_str(), "cheapest first: {bids}");
        assert_eq!(rows[0]["won"], true);
        assert_eq!(rows[1]["won"], false);

        let leases = devnet.tenant(TENANT, &["leases", "--output", "json"]).await;
        assert_eq!(code(&leases), Some(0), "{}", stderr(&leases));
        let leases = json(&leases);
        assert_eq!(leases["leases"][0]["lease_id"], 1);
        assert_eq!(leases["leases"][0]["active"], true);
        assert_eq!(leases["leases"][0]["provider"], b.as_str());

        // Chain part printed; the unreachable gateway gives exit 3.
        let status = devnet
            .tenant(TENANT, &["status", "1", "--output", "json"])
            .await;
        assert_eq!(code(&status), Some(3), "{}", stderr(&status));
        let status = json(&status);
        assert_eq!(status["lease"]["active"], true);
        assert_eq!(status["group"], "anywhere");
        assert!(status["gateway_error"].as_str().is_some(), "{status}");

        let topped = devnet
            .tenant(TENANT, &["topup", "1", "1000", "--output", "json"])
            .await;
        assert_eq!(code(&topped), Some(0), "{}", stderr(&topped));
        let escrow: u64 = json(&topped)["escrow"]
            .as_str()
            .and_then(|e| e.parse().ok())
            .expect("escrow");
        assert!(escrow > 50_000 && escrow <= 51_000, "{escrow}");

        // Someone else's close reverts on chain; the CLI names the custom error, its
        // arguments and what to do, in text and in JSON (regression, issue #10).
        let refused = devnet
            .tenant(OTHER_TENANT, &["close", "1", "--output", "json"])
            .await;
        assert_eq!(code(&refused), Some(1), "{}", stderr(&refused));
        let message = stderr(&refused);
        assert!(
            message.contains("closeLease reverted: LeaseSolvent(leaseId: 1)")
                && message.contains("only its tenant or provider may close it"),
            "{message}"
        );
        let revert = &json(&refused)["error"]["details"]["revert"];
        assert_eq!(revert["error"], "LeaseSolvent", "{revert}");
        assert_eq!(revert["args"]["leaseId"], "1", "{revert}");

        let closed = devnet
            .tenant(TENANT, &["close", "1", "--output", "json"])
            .await;
        assert_eq!(code(&closed), Some(0), "{}", stderr(&closed));
        let closed = json(&closed);
        assert_eq!(closed["action"], "closed_lease");
        let refunded: u64 = closed["refunded_to_tenant"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("refund");
        assert!(refunded > 0);

        let after = devnet
            .tenant(TENANT, &["status", "1", "--output", "json"])
            .await;
        assert_eq!(code(&after), Some(0), "{}", stderr(&after));
        assert_eq!(json(&after)["lease"]["active"], false);
        let again = devnet.tenant(TENANT, &["close", "1"]).await;
        assert_eq!(code(&again), Some(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_with_settle_lets_the_contract_pick() {
    within(async {
        let devnet = Devnet::start().await;
        devnet.register(PROVIDER_A, "127.0.0.1:1", &[]).await;
        devnet.register(PROVIDER_B, "127.0.0.1:2", &[]).await;
        let hello = example("hello.yaml");
        let deploying = devnet.tenant(
            TENANT,
            &[
                "deploy",
                &hello,
                "--bid-window",
                "3",
                "--no-manifest",
                "--select",
                "settle",
                "--timeout",
                "60",
            ],
        );
        let bidding = bid_when_posted(&devnet, 1, &[(PROVIDER_B, 800), (PROVIDER_A, 700)]);
        let (output, _) = tokio::join!(deploying, bidding);
        assert_eq!(code(&output), Some(0), "{}", stderr(&output));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        // Text shows checksummed addresses.
        let a = devnet.address(PROVIDER_A).to_string();
        assert!(text.contains(&a) && text.contains("700"), "{text}");
        let lease = devnet.client(TENANT).lease(1).await.expect("lease");
        assert_eq!(lease.provider, devnet.address(PROVIDER_A));
        // Text mode progress is on stderr, the table on stdout.
        assert!(
            stderr(&output).contains("order 1 for group `anywhere`"),
            "{}",
            stderr(&output)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bids_is_exit_4_with_the_preflight_and_a_refund() {
    within(async {
        let devnet = Devnet::start().await;
        devnet
            .register(PROVIDER_A, "127.0.0.1:1", &[("nvidia/a100/80Gi/sxm", 4)])
            .await;
        let file = devnet.home.path().join("h100.yaml");
        std::fs::write(&file, H100_SDL).expect("write sdl");
        let output = devnet
            .tenant(
                TENANT,
                &[
                    "deploy",
                    &file.to_string_lossy(),
                    "--bid-window",
                    "1",
                    "--timeout",
                    "3",
                    "--output",
                    "json",
                ],
            )
            .await;
        assert_eq!(code(&output), Some(4), "{}", stderr(&output));
        let error = json(&output);
        let message = error["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains("no usable bid on order 1"), "{message}");
        assert!(message.contains("preflight"), "{message}");
        assert!(message.contains("nvidia/h100/80Gi/sxm"), "{message}");
        assert!(message.contains("refunded"), "{message}");
        assert_eq!(
            error["error"]["details"]["preflight"]["groups"][0]["ineligible"][0]["reason"]["kind"],
            "gpu_model"
        );
        // The cancelled order gave the whole deposit back.
        let balance = devnet
            .client(TENANT)
            .token_balance(devnet.deployment.token, devnet.address(TENANT))
            .await
            .expect("balance");
        assert_eq!(balance, U256::from(FUNDING));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insufficient_funds_fail_before_anything_is_sent() {
    within(async {
        let devnet = Devnet::start().await;
        let hello = example("hello.yaml");
        let output = devnet
            .tenant(UNFUNDED, &["deploy", &hello, "--deposit", "24000"])
            .await;
        assert_eq!(code(&output), Some(1), "{}", stderr(&output));
        let message = stderr(&output);
        assert!(message.contains("insufficient funds"), "{message}");
        assert!(
            message.contains("holds 0") && message.contains("need 24000"),
            "{message}"
        );
        assert!(
            devnet.client(TENANT).order(1).await.is_err(),
            "no order may exist"
        );

        // An invalid manifest is exit 1 before any chain access.
        let bad = devnet.home.path().join("bad.yaml");
        std::fs::write(&bad, "version: \"2.0\"\n").expect("write");
        let output = devnet
            .tenant(TENANT, &["deploy", &bad.to_string_lossy()])
            .await;
        assert_eq!(code(&output), Some(1), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("not a valid SDL"),
            "{}",
            stderr(&output)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_delivers_the_signed_manifest_and_waits_until_it_runs() {
    within(async {
        let devnet = Devnet::start().await;
        let gateway = crate::gateway::start(devnet.client(PROVIDER_A));
        devnet
            .register_with_cert(
                PROVIDER_A,
                &format!("https://{}", gateway.addr),
                gateway.cert_sha256,
                &[],
            )
            .await;
        let hello = example("hello.yaml");
        let deploying = devnet.tenant(
            TENANT,
            &[
                "deploy",
                &hello,
                "--bid-window",
                "4",
                "--timeout",
                "60",
                "--output",
                "json",
            ],
        );
        let bidding = bid_when_posted(&devnet, 1, &[(PROVIDER_A, 600)]);
        let (output, posted) = tokio::join!(deploying, bidding);
        assert_eq!(code(&output), Some(0), "{}", stderr(&output));
        let result = json(&output);
        assert_eq!(
            result["groups"][0]["uris"][0],
            crate::gateway::URI,
            "{result}"
        );
        assert_eq!(result["groups"][0]["status"]["state"], "Running");

        // The gateway got the canonical manifest, whose hash the order carries.
        let received = gateway.received.lock().expect("lock").clone();
        assert_eq!(received.len(), 1);
        let (lease_id, manifest) = &received[0];
        assert_eq!(*lease_id, 1);
        assert_eq!(alloy::primitives::keccak256(manifest), posted.manifest_hash);
        let sdl = leasehold_manifests::parse(&std::fs::read_to_string(&hello).expect("read"))
            .expect("valid");
        assert_eq!(
            manifest.as_slice(),
            sdl.manifest().canonical_json().as_bytes()
        );

        let status = devnet
            .tenant(TENANT, &["status", "1", "--output", "json"])
            .await;
        assert_eq!(code(&status), Some(0), "{}", stderr(&status));
        let status = json(&status);
        assert_eq!(status["workload"]["state"], "Running");
        assert_eq!(
            status["workload"]["services"][0]["uris"][0],
            crate::gateway::URI
        );
        let text = devnet.tenant(TENANT, &["status", "1"]).await;
        assert!(String::from_utf8_lossy(&text.stdout).contains(crate::gateway::URI));

        let logs = devnet
            .tenant(TENANT, &["logs", "1", "--output", "json"])
            .await;
        assert_eq!(code(&logs), Some(0), "{}", stderr(&logs));
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&logs.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("NDJSON line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["line"], "GET / 200");
        assert_eq!(lines[0]["service"], "web");

        // Someone who is not the tenant is refused by the gateway (signed calls).
        let stranger = devnet.tenant(PROVIDER_B, &["status", "1"]).await;
        assert_eq!(code(&stranger), Some(1), "{}", stderr(&stranger));
        let text = String::from_utf8_lossy(&stranger.stdout).into_owned();
        assert!(text.contains("not the lease's tenant"), "{text}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_a_gateway_whose_certificate_is_not_the_registered_one() {
    within(async {
        let devnet = Devnet::start().await;
        let gateway = crate::gateway::start(devnet.client(PROVIDER_A));
        let registered = alloy::primitives::B256::repeat_byte(0x5a);
        devnet
            .register_with_cert(
                PROVIDER_A,
                &format!("https://{}", gateway.addr),
                registered,
                &[],
            )
            .await;
        let hello = example("hello.yaml");
        let deploying = devnet.tenant(
            TENANT,
            &["deploy", &hello, "--bid-window", "4", "--timeout", "60"],
        );
        let bidding = bid_when_posted(&devnet, 1, &[(PROVIDER_A, 600)]);
        let (output, _) = tokio::join!(deploying, bidding);
        assert_eq!(code(&output), Some(1), "{}", stderr(&output));
        let error = stderr(&output);
        let provider = devnet.address(PROVIDER_A).to_string();
        for expected in [
            provider.as_str(),
            &registered.to_string(),
            &gateway.cert_sha256.to_string(),
        ] {
            assert!(error.contains(expected), "`{expected}` missing: {error}");
        }
        // Refused at the handshake: the manifest never left the tenant.
        assert!(gateway.received.lock().expect("lock").is_empty());

        let status = devnet.tenant(TENANT, &["status", "1"]).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&status.stdout),
            stderr(&status)
        );
        assert!(text.contains(&gateway.cert_sha256.to_string()), "{text}");
    })
    .await;
}

/// A past lease of `provider` for OTHER_TENANT, ended by `reason` (closed by the provider for
/// `WorkloadFailed`, by the tenant otherwise).
async fn past_lease(devnet: &Devnet, provider: usize, reason: leasehold_contracts::CloseReason) {
    use leasehold_contracts::{NewOrder, OrderSpec, Resources};
    let tenant = devnet.client(crate::support::OTHER_TENANT);
    let posted = tenant
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
                requirements: Default::default(),
            },
            manifest_hash: alloy::primitives::B256::repeat_byte(2),
            max_price_per_hour: U256::from(10_000),
            deposit: U256::from(100_000),
            bid_window_secs: 3600,
            delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
        })
        .await
        .expect("order");
    let bid = devnet
        .client(provider)
        .place_bid(
            posted.order_id,
            U256::from(100),
            None,
            &posted.spec.requirements,
        )
        .await
        .expect("bid");
    tenant
        .accept_bid(posted.order_id, bid)
        .await
        .expect("accept");
    let closer = if reason == leasehold_contracts::CloseReason::WorkloadFailed {
        devnet.client(provider)
    } else {
        tenant
    };
    closer
        .close_lease(posted.order_id, reason)
        .await
        .expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn score_selection_weighs_the_track_record_against_price() {
    use leasehold_contracts::CloseReason;
    within(async {
        let devnet = Devnet::start().await;
        devnet.register(PROVIDER_A, "127.0.0.1:1", &[]).await;
        devnet.register(PROVIDER_B, "127.0.0.1:2", &[]).await;
        past_lease(&devnet, PROVIDER_A, CloseReason::WorkloadFailed).await;
        past_lease(&devnet, PROVIDER_B, CloseReason::TenantRequest).await;
        // A's failure slashed its stake below the minimum: it tops up before it may bid again.
        let a = devnet.client(PROVIDER_A);
        let minimum = a.minimum_stake().await.expect("minimum stake");
        let stake = a.provider_info(a.sender()).await.expect("provider").stake;
        a.add_stake(minimum - stake).await.expect("top up");

        let hello = example("hello.yaml");
        let deploying = devnet.tenant(
            TENANT,
            &[
                "deploy",
                &hello,
                "--bid-window",
                "3",
                "--no-manifest",
                "--select",
                "score",
                "--timeout",
                "60",
                "--output",
                "json",
            ],
        );
        // A is cheaper, but failed its last lease; B completed its.
        let bidding = bid_when_posted(&devnet, 3, &[(PROVIDER_A, 550), (PROVIDER_B, 600)]);
        let (output, _) = tokio::join!(deploying, bidding);
        assert_eq!(code(&output), Some(0), "{}", stderr(&output));
        let result = json(&output);
        assert_eq!(
            result["groups"][0]["provider"],
            devnet.address_json(PROVIDER_B),
            "{result}"
        );

        // `bids` ranks by the on-chain rule (A first) and shows the track records.
        let bids = devnet
            .tenant(TENANT, &["bids", "3", "--output", "json"])
            .await;
        assert_eq!(code(&bids), Some(0), "{}", stderr(&bids));
        let bids = json(&bids);
        assert_eq!(bids["bids"][0]["provider"], devnet.address_json(PROVIDER_A));
        assert_eq!(bids["bids"][0]["track_record"]["leases_failed"], 1);
        assert_eq!(bids["bids"][1]["track_record"]["leases_completed"], 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_selection_accepts_the_typed_bid() {
    within(async {
        let devnet = Devnet::start().await;
        devnet.register(PROVIDER_A, "127.0.0.1:1", &[]).await;
        devnet.register(PROVIDER_B, "127.0.0.1:2", &[]).await;
        let hello = example("hello.yaml");
        // Bid 0 (A, 300) is the cheapest and the default; the tenant types 1 (B).
        let deploying = devnet.tenant_typing(
            devnet.env_as(TENANT),
            &[
                "deploy",
                &hello,
                "--bid-window",
                "3",
                "--no-manifest",
                "--select",
                "interactive",
                "--timeout",
                "60",
            ],
            "1\n",
        );
        let bidding = bid_when_posted(&devnet, 1, &[(PROVIDER_A, 300), (PROVIDER_B, 400)]);
        let (output, _) = tokio::join!(deploying, bidding);
        assert_eq!(code(&output), Some(0), "{}", stderr(&output));
        assert!(
            stderr(&output).contains("accept which bid? [0]"),
            "{}",
            stderr(&output)
        );
        let lease = devnet.client(TENANT).lease(1).await.expect("lease");
        assert_eq!(lease.provider, devnet.address(PROVIDER_B));

        // Interactive selection and JSON output do not mix.
        let refused = devnet
            .tenant(
                TENANT,
                &[
                    "deploy",
                    &hello,
                    "--select",
                    "interactive",
                    "--output",
                    "json",
                ],
            )
            .await;
        assert_eq!(code(&refused), Some(2), "{}", stderr(&refused));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_prints_warnings_and_how_prices_are_read_and_max_price_overrides() {
    within(async {
        let devnet = Devnet::start().await;
        let file = devnet.home.path().join("akash.yaml");
        let yaml = std::fs::read_to_string(example("hello.yaml"))
            .expect("example")
            .replace(
                "    image: leasehold/busybox:test\n",
                "    image: leasehold/busybox:test\n    restart: always\n",
            )
            .replace("denom: usdc", "denom: uakt");
        std::fs::write(&file, yaml).expect("write sdl");
        let output = devnet
            .tenant(
                TENANT,
                &[
                    "deploy",
                    &file.to_string_lossy(),
                    "--max-price",
                    "anywhere=777",
                    "--deposit",
                    "10000",
                    "--bid-window",
                    "1",
                    "--timeout",
                    "3",
                    "--output",
                    "json",
                ],
            )
            .await;
        // No provider is registered: no bid, exit 4, but the order went out first.
        assert_eq!(code(&output), Some(4), "{}", stderr(&output));
        let events: Vec<serde_json::Value> = stderr(&output)
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect();
        let warning = events
            .iter()
            .find(|event| event["event"] == "warning" && event["data"]["key"] == "restart")
            .unwrap_or_else(|| panic!("no warning about restart: {events:#?}"));
        assert_eq!(warning["data"]["kind"], "unknown_key");
        assert_eq!(warning["data"]["line"], 6);
        assert!(
            events
                .iter()
                .any(|event| event["event"] == "warning" && event["data"]["kind"] == "pricing")
        );
        let pricing = events
            .iter()
            .find(|event| event["event"] == "pricing")
            .unwrap_or_else(|| panic!("no pricing event: {events:#?}"));
        assert_eq!(pricing["data"]["max_price_per_hour"], "777");
        assert_eq!(pricing["data"]["overridden"], true);
        let order = devnet.client(TENANT).order(1).await.expect("order 1");
        assert_eq!(order.max_price_per_hour, U256::from(777u64));
    })
    .await;
}
