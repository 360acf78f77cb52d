//! The API contract (`market/API.md`): every route, its shapes and types, pagination, and
//! errors naming the bad field.

use serde_json::Value;

use crate::support::*;

fn is_decimal(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
}

fn is_address(value: &Value) -> bool {
    value.as_str().is_some_and(|text| {
        text.len() == 42
            && text.starts_with("0x")
            && text[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn assert_error(code: u16, body: &Value, status: u16, field: &str) {
    assert_eq!(code, status, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented_on_sqlite() {
    within(every_route_answers_as_documented(Backend::Sqlite)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented_on_postgres() {
    within(every_route_answers_as_documented(Backend::Postgres)).await;
}

async fn every_route_answers_as_documented(backend: Backend) {
    {
        let devnet = devnet().await;
        register_providers(&devnet).await;
        let leases = drive_history(&devnet, 6).await;
        let head = head(&devnet).await;
        let db = TestDb::new(backend).await;
        let console = crate::console::console_dir();
        let console_dist = console.path().join("dist");
        let console_dist = console_dist.to_str().expect("UTF-8 temp path");
        // SQLite runs with a public RPC URL of its own, PostgreSQL with the default.
        let public_rpc = "http://rpc.example:8545";
        let mut args = vec!["--confirmations", "0", "--console-dir", console_dist];
        if backend == Backend::Sqlite {
            args.extend(["--public-rpc-url", public_rpc]);
        }
        let indexer = Indexer::start(&devnet, &db, &args);
        indexer.wait_indexed(head).await;

        let (code, status) = indexer.get("/api/v1/status").await;
        assert_eq!(code, 200);
        let expected_rpc = match backend {
            Backend::Sqlite => public_rpc.to_owned(),
            Backend::Postgres => devnet.endpoint(),
        };
        assert_eq!(status["rpc_url"], expected_rpc.as_str(), "{status}");
        assert_eq!(status["chain_id"], devnet.deployment.chain_id);
        assert_eq!(status["indexed_block"], head);
        assert!(status["head_block"].as_u64().is_some_and(|h| h >= head));
        assert_eq!(status["confirmations"], 0);
        assert!(is_address(&status["contracts"]["marketplace"]), "{status}");
        assert!(status["token"]["symbol"].is_string(), "{status}");
        assert_eq!(status["token"]["decimals"], 6);

        // providers
        let (code, providers) = indexer.get("/api/v1/providers").await;
        assert_eq!(code, 200);
        let items = providers["items"].as_array().expect("items");
        assert_eq!(items.len(), 2, "{providers}");
        assert_eq!(providers["next"], Value::Null);
        let provider = &items[0];
        assert!(is_address(&provider["address"]));
        assert_eq!(provider["status"], "active");
        assert!(is_decimal(&provider["stake"]), "{provider}");
        assert_eq!(
            provider["attributes"][0]["name"],
            Value::Null,
            "no names published yet"
        );
        assert!(
            provider["attributes"][0]["key"]
                .as_str()
                .is_some_and(|k| k.len() == 66)
        );
        assert!(provider["capacity"]["memory_bytes"].is_u64());
        let (_, page) = indexer.get("/api/v1/providers?limit=1").await;
        assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
        let next = page["next"]
            .as_str()
            .expect("a next cursor on a full page")
            .to_owned();
        let (_, rest) = indexer
            .get(&format!("/api/v1/providers?limit=1&before={next}"))
            .await;
        assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
        assert_ne!(rest["items"][0]["address"], page["items"][0]["address"]);
        let address = provider["address"].as_str().expect("address");
        let (code, one) = indexer.get(&format!("/api/v1/providers/{address}")).await;
        assert_eq!((code, &one), (200, provider));
        let (code, body) = indexer
            .get("/api/v1/providers/0x00000000000000000000000000000000000000aa")
            .await;
        assert_eq!(code, 404, "{body}");
        let (code, body) = indexer.get("/api/v1/providers/nonsense").await;
        assert_error(code, &body, 400, "address");

        // orders and bids
        let (code, orders) = indexer.get("/api/v1/orders?limit=2").await;
        assert_eq!(code, 200);
        let items = orders["items"].as_array().expect("items");
        assert_eq!(items.len(), 2);
        let first = items[0]["id"]
            .as_str()
            .expect("decimal id")
            .parse::<u64>()
            .expect("id");
        let second = items[1]["id"]
            .as_str()
            .expect("decimal id")
            .parse::<u64>()
            .expect("id");
        assert!(first > second, "newest first");
        assert!(is_decimal(&items[0]["escrow"]) && is_decimal(&items[0]["max_price_per_hour"]));
        assert_eq!(orders["next"], items[1]["id"]);
        let (_, cancelled) = indexer.get("/api/v1/orders?state=cancelled").await;
        let cancelled = cancelled["items"].as_array().expect("items").clone();
        assert_eq!(cancelled.len(), 1, "round 4 cancels its order");
        let (_, matched) = indexer.get("/api/v1/orders?state=matched&limit=500").await;
        assert_eq!(
            matched["items"].as_array().map(Vec::len),
            Some(leases.len())
        );
        let tenant = format!("{:#x}", client(&devnet, TENANT).sender());
        let (_, mine) = indexer
            .get(&format!("/api/v1/orders?tenant={tenant}"))
            .await;
        assert_eq!(mine["items"].as_array().map(Vec::len), Some(6));
        let lease_id = leases[0];
        let (code, order) = indexer.get(&format!("/api/v1/orders/{lease_id}")).await;
        assert_eq!(code, 200, "{order}");
        assert_eq!(order["state"], "matched");
        let bids = order["bids"]
            .as_array()
            .expect("bids on the single-order route");
        assert_eq!(bids.len(), 2);
        assert_eq!(
            bids[0]["state"], "won",
            "round 0's winner is provider A's bid 0: {order}"
        );
        assert_eq!(bids[1]["state"], "lost");
        assert!(is_decimal(&bids[0]["price_per_hour"]) && is_decimal(&bids[0]["bid_id"]));
        let (_, listed) = indexer
            .get(&format!("/api/v1/orders/{lease_id}/bids"))
            .await;
        assert_eq!(&listed["items"], &order["bids"]);
        let cancelled_id = cancelled[0]["id"].as_str().expect("id");
        let (_, withdrawn) = indexer
            .get(&format!("/api/v1/orders/{cancelled_id}/bids"))
            .await;
        assert_eq!(withdrawn["items"][1]["state"], "withdrawn", "{withdrawn}");
        let (code, body) = indexer.get("/api/v1/orders/999999").await;
        assert_eq!(code, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found");
        let (code, body) = indexer.get("/api/v1/orders/-1").await;
        assert_error(code, &body, 400, "id");
        let (code, body) = indexer.get("/api/v1/orders?state=bogus").await;
        assert_error(code, &body, 400, "state");
        let (code, body) = indexer.get("/api/v1/orders?limit=0").await;
        assert_error(code, &body, 400, "limit");
        let (code, body) = indexer.get("/api/v1/orders?limit=501").await;
        assert_error(code, &body, 400, "limit");
        let (code, body) = indexer.get("/api/v1/orders?tenant=0x12").await;
        assert_error(code, &body, 400, "tenant");
        let (code, body) = indexer.get("/api/v1/orders?before=abc").await;
        assert_error(code, &body, 400, "before");
        let (code, body) = indexer.get("/api/v1/orders?colour=red").await;
        assert_error(code, &body, 400, "colour");
        let (code, body) = indexer.get("/api/v1/orders?limit=%ff%fe").await;
        assert_eq!(code, 400, "{body}");

        // leases
        let (code, lease) = indexer.get(&format!("/api/v1/leases/{lease_id}")).await;
        assert_eq!(code, 200, "{lease}");
        assert_eq!(lease["state"], "closed", "round 0 closes its lease");
        assert_eq!(lease["confirmed"], true);
        assert!(lease["closed"]["reason"] == "tenant_request", "{lease}");
        assert!(is_decimal(&lease["closed"]["refund"]) && is_decimal(&lease["paid_total"]));
        assert_eq!(
            lease["payments"].as_array().map(Vec::len),
            Some(1),
            "{lease}"
        );
        assert!(is_decimal(&lease["payments"][0]["amount"]));
        assert_eq!(
            lease["top_ups"][0]["amount"],
            (10 * TOKEN).to_string(),
            "{lease}"
        );
        let active_id = leases[1];
        let (_, active) = indexer.get(&format!("/api/v1/leases/{active_id}")).await;
        assert_eq!(active["state"], "active");
        assert!(active["runs_out_at"].is_u64(), "{active}");
        assert_eq!(active["closed"], Value::Null);
        let (_, listed) = indexer.get("/api/v1/leases?state=active&limit=500").await;
        let listed = listed["items"].as_array().expect("items").clone();
        assert!(
            listed
                .iter()
                .all(|l| l["state"] == "active" && l.get("payments").is_none())
        );
        let provider_a = format!("{:#x}", client(&devnet, PROVIDER_A).sender());
        let (_, of_a) = indexer
            .get(&format!("/api/v1/leases?provider={provider_a}&limit=500"))
            .await;
        assert!(
            of_a["items"]
                .as_array()
                .expect("items")
                .iter()
                .all(|l| l["provider"] == provider_a.as_str())
        );
        let (code, body) = indexer.get("/api/v1/leases/424242").await;
        assert_eq!(code, 404, "{body}");
        let (code, body) = indexer.get("/api/v1/leases?state=open").await;
        assert_error(code, &body, 400, "state");

        // history
        let (code, prices) = indexer.get("/api/v1/prices").await;
        assert_eq!(code, 200);
        let prices = prices["items"].as_array().expect("items").clone();
        assert_eq!(prices.len(), leases.len());
        assert!(is_decimal(&prices[0]["price_per_hour"]) && prices[0]["at"].is_u64());
        let (_, none) = indexer.get("/api/v1/prices?gpu_model=nvidia/a100").await;
        assert_eq!(none["items"].as_array().map(Vec::len), Some(0));
        let (code, body) = indexer.get("/api/v1/prices?gpu_model=0x12").await;
        assert_error(code, &body, 400, "gpu_model");
        let (code, body) = indexer.get("/api/v1/prices?since=yesterday").await;
        assert_error(code, &body, 400, "since");
        let (code, capacity) = indexer
            .get(&format!("/api/v1/capacity/history?provider={provider_a}"))
            .await;
        assert_eq!(code, 200);
        let capacity = capacity["items"].as_array().expect("items").clone();
        assert!(
            capacity.len() > 1,
            "registration and each lease: {capacity:?}"
        );
        assert!(
            capacity
                .iter()
                .all(|c| c["provider"] == provider_a.as_str())
        );

        // events
        let (code, events) = indexer.get("/api/v1/events?limit=3").await;
        assert_eq!(code, 200);
        let items = events["items"].as_array().expect("items").clone();
        assert_eq!(items.len(), 3);
        assert!(items[0]["kind"].is_string() && items[0]["tx_hash"].is_string());
        let next = events["next"].as_str().expect("next").to_owned();
        let (_, after) = indexer
            .get(&format!("/api/v1/events?after={next}&limit=1"))
            .await;
        let following = &after["items"][0];
        let position = |e: &Value| (e["block"].as_u64(), e["log_index"].as_u64());
        assert!(position(following) > position(&items[2]));
        let (_, all) = indexer.get("/api/v1/events?limit=500").await;
        let kinds: Vec<&str> = all["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        for kind in [
            "ProviderRegistered",
            "OrderCreated",
            "BidPlaced",
            "BidWithdrawn",
            "OrderCancelled",
            "LeaseCreated",
            "LeaseConfirmed",
            "PaymentWithdrawn",
            "EscrowToppedUp",
            "LeaseClosed",
        ] {
            assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
        }
        let created = all["items"]
            .as_array()
            .expect("items")
            .iter()
            .find(|e| e["kind"] == "LeaseCreated")
            .expect("a lease")
            .clone();
        assert!(
            is_decimal(&created["data"]["lease_id"])
                && is_decimal(&created["data"]["price_per_hour"]),
            "{created}"
        );
        let (code, body) = indexer.get("/api/v1/events?after=12").await;
        assert_error(code, &body, 400, "after");

        // routes that do not exist
        let (code, body) = indexer.get("/api/v1/nothing").await;
        assert_eq!(code, 404, "{body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");

        // the console next to the API: its index at /, the API's routes first
        let server = indexer.base.trim_start_matches("http://");
        let index = crate::console::raw_request(server, "GET", "/").await;
        assert_eq!(index.status, 200, "{}", index.head);
        assert_eq!(
            index.header("content-type").as_deref(),
            Some("text/html; charset=utf-8")
        );
        let script = crate::console::raw_request(server, "GET", "/app.js").await;
        assert_eq!(
            script.header("content-type").as_deref(),
            Some("text/javascript; charset=utf-8")
        );
        let escape = crate::console::raw_request(server, "GET", "/%2e%2e/secret.txt").await;
        assert_eq!(escape.status, 400, "{}", escape.head);
        let api = crate::console::raw_request(server, "GET", "/api/v1/status").await;
        assert_eq!(api.json()["chain_id"], devnet.deployment.chain_id);

        // names: published on chain by the registry's naming event, joined onto every key
        {
            let key = format!("{:#x}", attribute("region=eu-west"));
            client(&devnet, PROVIDER_A)
                .publish_names(&["region=eu-west".to_owned()])
                .await
                .expect("publish a name");
            indexer
                .wait_indexed(crate::support::head(&devnet).await)
                .await;
            let (_, named) = indexer.get(&format!("/api/v1/providers/{address}")).await;
            assert_eq!(named["attributes"][0]["key"], key.as_str(), "{named}");
            assert_eq!(named["attributes"][0]["name"], "region=eu-west", "{named}");
            let (_, events) = indexer.get("/api/v1/events?limit=500").await;
            let published = events["items"]
                .as_array()
                .expect("items")
                .iter()
                .find(|e| e["kind"] == "KeyNamed")
                .expect("the naming event is served");
            assert_eq!(published["data"]["key"], key.as_str(), "{published}");
        }

        // the one-shot status subcommand, as JSON
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_leasehold-market"))
            .args(["status", "--database-url", &db.url, "--output", "json"])
            .output()
            .expect("leasehold-market status");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Value = serde_json::from_slice(&output.stdout).expect("status JSON");
        assert_eq!(
            report["indexed_block"],
            crate::support::head(&devnet).await,
            "{report}"
        );
        assert_eq!(report["tables"]["leases"], leases.len(), "{report}");
        assert!(
            report["tables"]["events"].as_u64().is_some_and(|n| n > 50),
            "{report}"
        );

        // SDL validation
        let http = reqwest::Client::new();
        let sdl = include_str!("../../../manifests/examples/hello.yaml");
        let response = http
            .post(format!("{}/api/v1/sdl/validate", indexer.base))
            .header("content-type", "application/yaml")
            .body(sdl)
            .send()
            .await
            .expect("validate");
        assert_eq!(response.status().as_u16(), 200);
        let report: Value =
            serde_json::from_str(&response.text().await.expect("body")).expect("json");
        assert_eq!(report["ok"], true, "{report}");
        assert!(
            report["manifest_hash"]
                .as_str()
                .is_some_and(|h| h.len() == 66),
            "{report}"
        );
        // each group's order is the contracts crate's encoding, the CLI's
        let parsed = leasehold_manifests::parse(sdl).expect("hello.yaml parses");
        let groups = parsed.groups();
        assert_eq!(
            report["groups"].as_array().map(Vec::len),
            Some(groups.len()),
            "{report}"
        );
        let manifest_json = report["manifest_json"].as_str().expect("manifest_json");
        let manifest_hash = alloy::primitives::keccak256(manifest_json.as_bytes());
        let manifest_hash = format!("{manifest_hash:#x}");
        assert_eq!(report["manifest_hash"], manifest_hash.as_str());
        assert_eq!(manifest_json, parsed.manifest().canonical_json());
        for (group, shown) in groups
            .iter()
            .zip(report["groups"].as_array().expect("groups"))
        {
            let order = leasehold_contracts::group_order(group).expect("hello encodes");
            let spec = &order.spec;
            let hex = |keys: &[alloy::primitives::B256]| -> Vec<String> {
                keys.iter().map(|key| format!("{key:#x}")).collect()
            };
            let expected = serde_json::json!({
                "group_name": format!("{:#x}", spec.group_name),
                "resources": {
                    "cpu_milli": spec.resources.cpu_milli.to_string(),
                    "memory_mib": spec.resources.memory_mib.to_string(),
                    "storage_mib": spec.resources.storage_mib.to_string(),
                },
                "gpu_count": spec.gpu_count,
                "replicas": spec.replicas,
                "leased_ips": spec.leased_ips,
                "allowed_gpu_models": hex(&spec.requirements.allowed_gpu_models),
                "required_attributes": hex(&spec.requirements.required_attributes),
                "signed_by_all_of": Vec::<String>::new(),
                "signed_by_any_of": Vec::<String>::new(),
                "max_price_per_hour": order.max_price_per_hour.to_string(),
                "denom": order.denom,
                "manifest_hash": manifest_hash,
            });
            assert_eq!(shown["order"], expected, "{report}");
            assert_eq!(shown["order"]["resources"]["cpu_milli"], "100", "{report}");
            assert_eq!(shown["order"]["max_price_per_hour"], "1000", "{report}");
        }
        let response = http
            .post(format!("{}/api/v1/sdl/validate", indexer.base))
            .body("version: \"2.0\"\nservices:\n  web:\n    image: nginx\n")
            .send()
            .await
            .expect("validate");
        let report: Value =
            serde_json::from_str(&response.text().await.expect("body")).expect("json");
        assert_eq!(report["ok"], false, "{report}");
        assert!(report["errors"][0]["field"].is_string(), "{report}");
    }
}
