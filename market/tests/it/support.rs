//! Shared test infrastructure: a devnet with a market history, an empty database (SQLite
//! file or a PostgreSQL schema of its own), the real `leasehold-market` binary, HTTP calls.

use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use alloy::primitives::{B256, U256, keccak256};
use alloy::providers::Provider;
use leasehold_contracts::devnet::{Devnet, DevnetConfig, ONE_TOKEN};
use leasehold_contracts::{
    CloseReason, MarketplaceClient, NewOrder, OrderRequirements, OrderSpec, ProviderProfile,
    Resources,
};
use leasehold_market::store::ALL_TABLES;
use serde_json::Value;
use sqlx::{AnyConnection, Column, Connection, Row};

pub const TEST_TIMEOUT: Duration = Duration::from_secs(240);
pub const TENANT: usize = 1;
pub const PROVIDER_A: usize = 2;
pub const PROVIDER_B: usize = 3;
pub const TOKEN: u64 = ONE_TOKEN;
const DEFAULT_POSTGRES_URL: &str = "postgres://leasehold:leasehold@127.0.0.1:5432/leasehold_test";

pub async fn within<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time limit")
}

pub async fn devnet() -> Devnet {
    Devnet::start_with(DevnetConfig {
        funded_accounts: 5,
        ..DevnetConfig::default()
    })
    .await
    .unwrap_or_else(|error| panic!("devnet did not start: {error}"))
}

pub fn client(devnet: &Devnet, index: usize) -> MarketplaceClient {
    devnet
        .client(index)
        .unwrap_or_else(|error| panic!("client {index}: {error}"))
}

pub fn attribute(text: &str) -> B256 {
    keccak256(text.as_bytes())
}

pub fn order_resources() -> Resources {
    Resources {
        cpu_milli: 100,
        memory_mib: 128,
        storage_mib: 256,
    }
}

pub fn new_order(devnet: &Devnet, deposit: u64) -> NewOrder {
    NewOrder {
        token: devnet.deployment.token,
        spec: OrderSpec {
            group_name: leasehold_contracts::group_name_key("dcloud"),
            resources: order_resources(),
            gpu_count: 0,
            replicas: 1,
            leased_ips: 0,
            requirements: OrderRequirements {
                required_attributes: vec![attribute("region=eu-west")],
                ..OrderRequirements::default()
            },
        },
        manifest_hash: keccak256(b"{\"services\":{}}"),
        max_price_per_hour: U256::from(5 * TOKEN),
        deposit: U256::from(deposit),
        bid_window_secs: 60,
        delivery_window_secs: leasehold_contracts::DEFAULT_DELIVERY_WINDOW_SECS,
    }
}

pub async fn register_providers(devnet: &Devnet) {
    for (index, endpoint) in [
        (PROVIDER_A, "https://a.example:8443"),
        (PROVIDER_B, "https://b.example:8443"),
    ] {
        client(devnet, index)
            .register_provider(&ProviderProfile {
                endpoint: endpoint.to_owned(),
                gateway_cert_sha256: B256::repeat_byte(0xce),
                attributes: vec![attribute("region=eu-west")],
                capacity: Resources {
                    cpu_milli: 1_000_000,
                    memory_mib: 1_000_000,
                    storage_mib: 1_000_000,
                },
                gpus: Vec::new(),
            })
            .await
            .unwrap_or_else(|error| panic!("register provider {index}: {error}"));
        // Each open bid locks a bond out of the free stake: room for thousands.
        client(devnet, index)
            .add_stake(U256::from(10_000 * TOKEN))
            .await
            .unwrap_or_else(|error| panic!("add stake {index}: {error}"));
    }
}

/// A market history of `rounds` orders: bids from both providers, then (in turn) a cancelled
/// order with a withdrawn bid, or a lease that is confirmed, paid, topped up and sometimes
/// closed. Returns the lease ids.
pub async fn drive_history(devnet: &Devnet, rounds: u64) -> Vec<u64> {
    let tenant = client(devnet, TENANT);
    let providers = [client(devnet, PROVIDER_A), client(devnet, PROVIDER_B)];
    let mut leases = Vec::new();
    for round in 0..rounds {
        let order = tenant
            .create_order(&new_order(devnet, 100 * TOKEN))
            .await
            .expect("createOrder");
        let requirements = order.spec.requirements.clone();
        let mut bids = Vec::new();
        for (provider, price) in providers.iter().zip([3 * TOKEN, 2 * TOKEN]) {
            bids.push(
                provider
                    .place_bid(order.order_id, U256::from(price), None, &requirements)
                    .await
                    .expect("placeBid"),
            );
        }
        if round % 5 == 4 {
            providers[1]
                .withdraw_bid(order.order_id, bids[1])
                .await
                .expect("withdrawBid");
            tenant
                .cancel_order(order.order_id)
                .await
                .expect("cancelOrder");
            continue;
        }
        let winner = (round % 2) as usize;
        let lease = tenant
            .accept_bid(order.order_id, bids[winner])
            .await
            .expect("acceptBid");
        providers[winner]
            .confirm_lease(lease.lease_id)
            .await
            .expect("confirmLease");
        devnet.warp(600).await.expect("warp");
        providers[winner]
            .withdraw_payment(lease.lease_id)
            .await
            .expect("withdraw");
        tenant
            .top_up(lease.lease_id, U256::from(10 * TOKEN))
            .await
            .expect("topUp");
        if round % 3 == 0 {
            tenant
                .close_lease(lease.lease_id, CloseReason::TenantRequest)
                .await
                .expect("closeLease");
        }
        leases.push(lease.lease_id);
    }
    leases
}

pub async fn head(devnet: &Devnet) -> u64 {
    devnet.rpc.get_block_number().await.expect("head")
}

// ------------------------------------------------------------------ databases

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An empty database for one test; its Postgres schema goes when it is dropped.
pub struct TestDb {
    pub url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn postgres_base_url() -> String {
    std::env::var("LEASEHOLD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_string())
}

async fn postgres_admin() -> sqlx::PgConnection {
    let url = postgres_base_url();
    sqlx::PgConnection::connect(&url)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "PostgreSQL at {url} is unreachable ({error}). Run `scripts/bootstrap postgres` \
             (or point LEASEHOLD_TEST_POSTGRES_URL at a server) and re-run the tests."
            )
        })
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let file = dir.path().join("market.db");
                Self {
                    url: format!("sqlite://{}?mode=rwc", file.display()),
                    schema: None,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                static NEXT: AtomicU32 = AtomicU32::new(0);
                let schema = format!(
                    "lh_market_{}_{}",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                );
                let mut admin = postgres_admin().await;
                for statement in [
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                    format!("CREATE SCHEMA {schema}"),
                ] {
                    sqlx::query(&statement)
                        .execute(&mut admin)
                        .await
                        .unwrap_or_else(|error| panic!("{statement}: {error}"));
                }
                let base = postgres_base_url();
                let separator = if base.contains('?') { '&' } else { '?' };
                Self {
                    url: format!("{base}{separator}options[search_path]={schema}"),
                    schema: Some(schema),
                    _dir: None,
                }
            }
        }
    }

    async fn connect(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url)
            .await
            .unwrap_or_else(|error| panic!("connecting to {}: {error}", self.url))
    }

    /// How many rows `table` holds.
    pub async fn count(&self, table: &str) -> i64 {
        let mut connection = self.connect().await;
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("counting {table}: {error}"))
    }

    /// Every indexed table's rows as text, sorted: two indexes are equal when their dumps are.
    pub async fn dump(&self) -> Vec<(String, Vec<Vec<String>>)> {
        let mut connection = self.connect().await;
        let mut dump = Vec::new();
        for table in ALL_TABLES {
            let rows = sqlx::query(&format!("SELECT * FROM {table}"))
                .fetch_all(&mut connection)
                .await
                .unwrap_or_else(|error| panic!("dumping {table}: {error}"));
            let mut lines: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    (0..row.columns().len())
                        .map(|index| {
                            let name = row.columns()[index].name().to_owned();
                            let value = match row.try_get::<Option<i64>, _>(index) {
                                Ok(value) => format!("{value:?}"),
                                Err(_) => {
                                    format!("{:?}", row.try_get::<Option<String>, _>(index).ok())
                                }
                            };
                            format!("{name}={value}")
                        })
                        .collect()
                })
                .collect();
            lines.sort();
            dump.push(((*table).to_owned(), lines));
        }
        dump
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&postgres_base_url())
                    .await
                    .map_err(|error| error.to_string())?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut admin)
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            })
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("dropping the test schema: {error}"),
            Err(_) => eprintln!("dropping the test schema panicked"),
        }
    }
}

// ------------------------------------------------------------------ the binary

/// A running `leasehold-market run`, killed (SIGKILL) when dropped.
pub struct Indexer {
    child: Child,
    pub base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("free port")
}

impl Indexer {
    /// Starts the binary against `devnet` and `db` with extra arguments.
    pub fn start(devnet: &Devnet, db: &TestDb, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let deployment: PathBuf = dir.path().join("deployment.json");
        devnet
            .write_deployment(&deployment)
            .expect("deployment file");
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("market.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_leasehold-market"))
            .args(["run", "--rpc-url", &devnet.endpoint(), "--deployment"])
            .arg(&deployment)
            .args(["--database-url", &db.url, "--listen", &listen])
            .args(["--poll-interval-ms", "100"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning leasehold-market");
        Self {
            child,
            base: format!("http://{listen}"),
            _dir: dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("market.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        get(&format!("{}{path}", self.base)).await
    }

    /// Waits until the API reports `block` indexed.
    pub async fn wait_indexed(&self, block: u64) {
        self.wait_indexed_within(block, Duration::from_secs(120))
            .await;
    }

    /// [`Self::wait_indexed`] with a time limit of `limit`; shows progress every 10 s.
    pub async fn wait_indexed_within(&self, block: u64, limit: Duration) {
        let started = Instant::now();
        let mut shown = Instant::now();
        loop {
            let mut indexed = None;
            if let Ok(response) = reqwest::get(format!("{}/api/v1/status", self.base)).await
                && let Ok(text) = response.text().await
                && let Ok(status) = serde_json::from_str::<Value>(&text)
            {
                indexed = status["indexed_block"].as_u64();
            }
            if indexed.is_some_and(|indexed| indexed >= block) {
                return;
            }
            if shown.elapsed() >= Duration::from_secs(10) {
                shown = Instant::now();
                eprintln!(
                    "indexed block {indexed:?} of {block} after {:.0?}",
                    started.elapsed()
                );
            }
            assert!(
                started.elapsed() < limit,
                "block {block} not indexed in time; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Indexer {
    fn drop(&mut self) {
        self.kill();
    }
}

pub async fn get(url: &str) -> (u16, Value) {
    let response = reqwest::get(url)
        .await
        .unwrap_or_else(|error| panic!("GET {url}: {error}"));
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value =
        serde_json::from_str(&text).unwrap_or_else(|error| panic!("GET {url}: {error}: {text}"));
    (status, value)
}
