//! One end-to-end world: a devnet with 1-second blocks, provider daemons run as the real
//! `provider` binary, and the real `tenant` binary acting as dev accounts. Dropping it stops
//! the daemons, removes the leases' containers and networks, then stops anvil, in that
//! order, also when the test failed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use leasehold_contracts::devnet::{Devnet, DevnetConfig};

use crate::process::{Guard, Run, run_bounded};
use crate::{binaries, docker, eventually, free_port, listening};

pub const TENANT: usize = 1;
pub const PROVIDER_A: usize = 2;
pub const PROVIDER_B: usize = 3;
pub const OTHER_TENANT: usize = 4;

/// One test token (6 decimals).
pub const TOKEN: u64 = leasehold_contracts::devnet::ONE_TOKEN;

/// The environment variable holding a provider's key (the key itself never goes in files).
const PROVIDER_KEY_ENV: &str = "LEASEHOLD_PROVIDER_KEY";

/// `tenant deploy` flags for a quick single-provider deploy: a 5-second bid window (bids
/// must land inside it, a block or two after the order), the cheapest bid, 10 tokens of escrow.
pub const QUICK_DEPLOY: &[&str] = &[
    "--bid-window",
    "5",
    "--select",
    "cheapest",
    "--deposit",
    "10000000",
];

/// manifests/examples/hello.yaml.
pub fn hello() -> PathBuf {
    crate::repo_root().join("manifests/examples/hello.yaml")
}

/// Flows that run workloads take turns: the provider's Docker runtime names containers and
/// networks by lease id alone, and every devnet starts counting leases at 1.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How one provider daemon is configured.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    pub account: usize,
    /// Token base units per CPU core and hour (memory and storage are free).
    pub cpu_core_per_hour: u64,
    /// Declared GPUs: (model key, count).
    pub gpus: Vec<(String, u32)>,
    /// Akash-style per-GPU prices, e.g. `a100=1000000,*=2000000`.
    pub gpu_prices: String,
    /// Seconds between the withdrawer's passes (which close insolvent leases).
    pub withdraw_interval_secs: u64,
    /// The hardware it declares (and registers): cpu millis, memory MiB, storage MiB.
    pub capacity: (u64, u64, u64),
    /// The attributes it registers (`key=value`).
    pub attributes: Vec<String>,
    /// `--confirmations`: blocks the follower stays below the head.
    pub confirmations: u64,
}

impl ProviderSpec {
    pub fn new(account: usize, cpu_core_per_hour: u64) -> Self {
        Self {
            account,
            cpu_core_per_hour,
            gpus: Vec::new(),
            gpu_prices: format!("*={TOKEN}"),
            withdraw_interval_secs: 300,
            capacity: (4_000, 8_192, 20_480),
            attributes: vec!["region=local".to_owned()],
            confirmations: 0,
        }
    }
}

/// A running `provider run` and where to find it.
pub struct ProviderNode {
    pub spec: ProviderSpec,
    pub address: String,
    pub gateway: String,
    /// `<home>/provider.toml`; its `data_dir` is relative (`data`, next to it).
    pub config: PathBuf,
    pub home: PathBuf,
    /// The current run's log.
    pub log: PathBuf,
    guard: Option<Guard>,
    starts: usize,
}

impl ProviderNode {
    /// The daemon's log so far (for failure messages).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn exited(&mut self) -> bool {
        self.guard.as_mut().is_none_or(Guard::exited)
    }

    /// Rewrites the config's `data_dir` (the daemon reads it at its next start).
    pub fn set_data_dir(&self, data_dir: &str) {
        let text = std::fs::read_to_string(&self.config)
            .unwrap_or_else(|error| panic!("reading {}: {error}", self.config.display()));
        let text = text
            .lines()
            .map(|line| {
                if line.starts_with("data_dir = ") {
                    format!("data_dir = \"{data_dir}\"")
                } else {
                    line.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&self.config, text)
            .unwrap_or_else(|error| panic!("writing {}: {error}", self.config.display()));
    }
}

/// How `provider run` is started.
#[derive(Debug, Clone)]
pub struct DaemonStart {
    /// `--keep-unknown-workloads` (several daemons or flows share the engine).
    pub keep_unknown_workloads: bool,
    pub manifest_timeout_secs: u64,
    /// The daemon's working directory; `None` inherits the test's.
    pub working_dir: Option<PathBuf>,
}

impl Default for DaemonStart {
    fn default() -> Self {
        Self {
            keep_unknown_workloads: true,
            manifest_timeout_secs: 120,
            working_dir: None,
        }
    }
}

pub struct Scenario {
    pub runtime: tokio::runtime::Runtime,
    pub devnet: Option<Devnet>,
    pub dir: tempfile::TempDir,
    pub deployment_path: PathBuf,
    pub providers: Vec<ProviderNode>,
    /// Leases whose containers and networks are removed on drop.
    leases: Mutex<Vec<u64>>,
    /// This flow's turn on the Docker engine ([`serial`]), released after the cleanup.
    _turn: MutexGuard<'static, ()>,
}

impl Scenario {
    /// A devnet with `block_time`-second blocks and accounts 0-5 funded, once it is this
    /// flow's turn.
    pub fn start(block_time: u64) -> Self {
        let turn = serial();
        assert!(
            docker::available(),
            "no Docker engine answers: run scripts/bootstrap"
        );
        // Build (or find) the binaries before the chain clock starts.
        binaries();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("tokio runtime: {error}"));
        let devnet = runtime
            .block_on(Devnet::start_with(DevnetConfig {
                block_time: Some(block_time),
                ..DevnetConfig::default()
            }))
            .unwrap_or_else(|error| panic!("devnet did not start: {error}"));
        let dir = tempfile::Builder::new()
            .prefix("leasehold-e2e-")
            .tempdir()
            .unwrap_or_else(|error| panic!("temp dir: {error}"));
        let deployment_path = dir.path().join("deployment.json");
        devnet
            .write_deployment(&deployment_path)
            .unwrap_or_else(|error| panic!("{error}"));
        Self {
            runtime,
            devnet: Some(devnet),
            dir,
            deployment_path,
            providers: Vec::new(),
            leases: Mutex::new(Vec::new()),
            _turn: turn,
        }
    }

    /// [`Scenario::start`] with 1-second blocks and one provider (dev account
    /// [`PROVIDER_A`]) asking `cpu_core_per_hour`.
    pub fn with_provider(cpu_core_per_hour: u64) -> Self {
        let mut scenario = Self::start(1);
        scenario.add_provider(ProviderSpec::new(PROVIDER_A, cpu_core_per_hour));
        scenario
    }

    pub fn devnet(&self) -> &Devnet {
        self.devnet
            .as_ref()
            .unwrap_or_else(|| panic!("the devnet was stopped"))
    }

    pub fn rpc_url(&self) -> String {
        self.devnet().endpoint()
    }

    /// The node's WebSocket: daemons and the tenant wake on new heads through it.
    pub fn ws_url(&self) -> String {
        self.devnet().ws_endpoint()
    }

    pub fn address(&self, account: usize) -> String {
        self.devnet()
            .address(account)
            .map(|address| address.to_string().to_lowercase())
            .unwrap_or_else(|error| panic!("{error}"))
    }

    fn key(&self, account: usize) -> String {
        self.devnet()
            .private_key_hex(account)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// Writes the provider's config, registers it with `provider register` and starts
    /// `provider run`, waiting (at most 60 s) until its gateway accepts connections.
    pub fn add_provider(&mut self, spec: ProviderSpec) -> usize {
        let name = format!("provider-{}", spec.account);
        let home = self.dir.path().join(&name);
        let data = home.join("data");
        std::fs::create_dir_all(&data)
            .unwrap_or_else(|error| panic!("creating {}: {error}", data.display()));
        let port = free_port();
        let gateway = format!("127.0.0.1:{port}");
        let config = home.join("provider.toml");
        std::fs::write(
            &config,
            self.provider_toml(&spec, Path::new("data"), &gateway),
        )
        .unwrap_or_else(|error| panic!("writing {}: {error}", config.display()));

        let register = run_bounded(
            self.provider_command(&spec, &config, &["register", "--output", "json"]),
            Duration::from_secs(60),
        );
        register.expect_code(0, "provider register");
        let address = register.json()["provider"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert_eq!(address, self.address(spec.account), "registered address");

        let mut node = ProviderNode {
            spec,
            address,
            gateway,
            config,
            home,
            log: PathBuf::new(),
            guard: None,
            starts: 0,
        };
        self.spawn_daemon(&mut node, &DaemonStart::default());
        self.providers.push(node);
        self.providers.len() - 1
    }

    /// Stops provider `index` (SIGTERM) and starts it again as `how` says, waiting for its
    /// gateway. Its log continues in a new file.
    pub fn restart_provider(&mut self, index: usize, how: &DaemonStart) {
        let mut node = self.providers.remove(index);
        if let Some(mut guard) = node.guard.take() {
            guard.stop();
        }
        self.spawn_daemon(&mut node, how);
        self.providers.insert(index, node);
    }

    /// Starts `provider run` for `node` and waits (at most 60 s) for its gateway.
    fn spawn_daemon(&self, node: &mut ProviderNode, how: &DaemonStart) {
        let start_block = self.devnet().deployment.start_block.to_string();
        let withdraw = node.spec.withdraw_interval_secs.to_string();
        let manifest_timeout = how.manifest_timeout_secs.to_string();
        let confirmations = node.spec.confirmations.to_string();
        let mut args = vec![
            "run",
            "--start-block",
            &start_block,
            "--confirmations",
            &confirmations,
            "--withdraw-interval",
            &withdraw,
            "--manifest-timeout",
            &manifest_timeout,
        ];
        if how.keep_unknown_workloads {
            // Other flows' and other daemons' containers share this engine.
            args.push("--keep-unknown-workloads");
        }
        let mut command = self.provider_command(&node.spec, &node.config, &args);
        if let Some(dir) = &how.working_dir {
            command.current_dir(dir);
        }
        node.starts += 1;
        let name = format!("provider-{}-run-{}", node.spec.account, node.starts);
        let (guard, log) = Guard::spawn_logged(command, &name, &node.home);
        node.guard = Some(guard);
        node.log = log;
        let gateway = node.gateway.clone();
        eventually(
            &format!("{name}'s gateway on {gateway}"),
            Duration::from_secs(60),
            || {
                assert!(!node.exited(), "{name} exited early:\n{}", node.log_text());
                listening(&gateway).then_some(())
            },
        );
    }

    fn provider_toml(&self, spec: &ProviderSpec, data: &Path, gateway: &str) -> String {
        let d = self.devnet().deployment;
        let mut text = format!(
            r#"data_dir = "{data}"
attributes = {attributes:?}

[chain]
rpc_url = "{rpc}"
ws_url = "{ws}"
chain_id = {chain_id}
marketplace = "{marketplace}"
registry = "{registry}"
token = "{token}"

[key]
private_key_env = "{PROVIDER_KEY_ENV}"

[gateway]
listen = "{gateway}"
public_endpoint = "https://{gateway}"

[runtime]
kind = "docker"

[pricing]
cpu_core_per_hour = {cpu}
memory_gib_per_hour = 0
storage_gib_per_hour = 0
gpu_prices = "{gpu_prices}"

[hardware]
cpu_millis = {cpu_millis}
memory_mib = {memory_mib}
storage_mib = {storage_mib}
"#,
            data = data.display(),
            rpc = self.rpc_url(),
            ws = self.ws_url(),
            chain_id = d.chain_id,
            marketplace = d.marketplace,
            registry = d.registry,
            token = d.token,
            cpu = spec.cpu_core_per_hour,
            gpu_prices = spec.gpu_prices,
            attributes = spec.attributes,
            cpu_millis = spec.capacity.0,
            memory_mib = spec.capacity.1,
            storage_mib = spec.capacity.2,
        );
        for (model, count) in &spec.gpus {
            text.push_str(&format!(
                "\n[[hardware.gpus]]\nmodel = \"{model}\"\nvram_mib = 81920\ncount = {count}\n"
            ));
        }
        text
    }

    /// `provider <args>` with provider `index`'s config and key, bounded to a minute.
    pub fn provider_cli(&self, index: usize, args: &[&str]) -> Run {
        let node = &self.providers[index];
        run_bounded(
            self.provider_command(&node.spec, &node.config, args),
            Duration::from_secs(60),
        )
    }

    fn provider_command(&self, spec: &ProviderSpec, config: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(&binaries().provider);
        command
            .arg("--config")
            .arg(config)
            .args(args)
            .env(PROVIDER_KEY_ENV, self.key(spec.account))
            .env("LEASEHOLD_LOG", "info");
        command
    }

    /// `tenant <args>` as dev account `account`, with its own HOME, bounded by `limit`.
    pub fn tenant_command(&self, account: usize, args: &[&str]) -> Command {
        let home = self.dir.path().join(format!("tenant-{account}"));
        let mut command = Command::new(&binaries().tenant);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env("LEASEHOLD_RPC_URL", self.rpc_url())
            .env("LEASEHOLD_WS_URL", self.ws_url())
            .env("LEASEHOLD_DEPLOYMENT", &self.deployment_path)
            .env("LEASEHOLD_PRIVATE_KEY", self.key(account));
        command
    }

    pub fn tenant(&self, account: usize, args: &[&str], limit: Duration) -> Run {
        run_bounded(self.tenant_command(account, args), limit)
    }

    /// `tenant deploy <manifest> --output json` plus `extra`; the leases it reports are
    /// registered for cleanup.
    pub fn deploy(&self, account: usize, manifest: &Path, extra: &[&str]) -> Run {
        let manifest = manifest.to_string_lossy().into_owned();
        let mut args = vec!["deploy", manifest.as_str(), "--output", "json"];
        args.extend_from_slice(extra);
        let run = self.tenant(account, &args, Duration::from_secs(150));
        if let Ok(document) = serde_json::from_str::<serde_json::Value>(&run.stdout) {
            for lease in lease_ids(&document) {
                self.track_lease(lease);
            }
        }
        // A failed deploy may still have created a lease: find it in the progress events.
        for line in run.stderr.lines() {
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(lease) = event.pointer("/data/lease_id").and_then(|v| v.as_u64())
            {
                self.track_lease(lease);
            }
        }
        run
    }

    /// Removes `lease`'s containers and networks when the scenario ends.
    pub fn track_lease(&self, lease: u64) {
        let mut leases = self
            .leases
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !leases.contains(&lease) {
            leases.push(lease);
        }
    }

    /// The lease as the chain sees it.
    pub fn lease_on_chain(&self, lease: u64) -> leasehold_contracts::LeaseInfo {
        let client = self
            .devnet()
            .client(OTHER_TENANT)
            .unwrap_or_else(|error| panic!("{error}"));
        self.runtime
            .block_on(client.lease(lease))
            .unwrap_or_else(|error| panic!("reading lease {lease}: {error}"))
    }

    /// Block numbers of the Marketplace's `event` logs (by topic0) about order or lease `id`.
    pub fn event_blocks(&self, event: alloy::primitives::B256, id: u64) -> Vec<u64> {
        let devnet = self.devnet();
        let client = devnet
            .client(OTHER_TENANT)
            .unwrap_or_else(|error| panic!("{error}"));
        let filter = alloy::rpc::types::Filter::new()
            .address(devnet.deployment.marketplace)
            .event_signature(event)
            .topic1(alloy::primitives::B256::from(
                alloy::primitives::U256::from(id),
            ));
        self.runtime
            .block_on(client.logs_since_start("eth_getLogs", filter))
            .unwrap_or_else(|error| panic!("reading logs: {error}"))
            .iter()
            .filter_map(|log| log.block_number)
            .collect()
    }

    /// The provider registered by dev account `account`, as the chain sees it.
    pub fn provider_on_chain(&self, account: usize) -> leasehold_contracts::ProviderInfo {
        let devnet = self.devnet();
        let client = devnet
            .client(OTHER_TENANT)
            .unwrap_or_else(|error| panic!("{error}"));
        let address = devnet
            .address(account)
            .unwrap_or_else(|error| panic!("{error}"));
        self.runtime
            .block_on(client.provider_info(address))
            .unwrap_or_else(|error| panic!("reading provider {address}: {error}"))
    }

    /// Moves chain time forward by `seconds` (and mines a block).
    pub fn warp(&self, seconds: u64) {
        self.runtime
            .block_on(self.devnet().warp(seconds))
            .unwrap_or_else(|error| panic!("warp: {error}"));
    }

    /// `account`'s test-token balance in base units.
    pub fn token_balance(&self, account: usize) -> alloy::primitives::U256 {
        let devnet = self.devnet();
        let client = devnet
            .client(account)
            .unwrap_or_else(|error| panic!("{error}"));
        let owner = devnet
            .address(account)
            .unwrap_or_else(|error| panic!("{error}"));
        self.runtime
            .block_on(client.token_balance(devnet.deployment.token, owner))
            .unwrap_or_else(|error| panic!("balanceOf: {error}"))
    }

    /// `leasehold-market run` against this chain on a free port, serving the console built
    /// in `console_dir` when given; waits (at most a minute) until its API answers. Returns
    /// the process and the server's base URL.
    pub fn start_market(&self, console_dir: Option<&Path>) -> (Guard, String) {
        let dir = self.dir.path().join("market");
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|error| panic!("creating {}: {error}", dir.display()));
        let listen = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(crate::market_binary());
        command
            .args(["run", "--rpc-url", &self.rpc_url(), "--deployment"])
            .arg(&self.deployment_path)
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}?mode=rwc",
                dir.join("market.db").display()
            ))
            .args([
                "--listen",
                &listen,
                "--confirmations",
                "0",
                "--poll-interval-ms",
                "200",
            ])
            .current_dir(&dir);
        if let Some(console_dir) = console_dir {
            command.arg("--console-dir").arg(console_dir);
        }
        let (mut guard, log) = Guard::spawn_logged(command, "market", &dir);
        let base = format!("http://{listen}");
        eventually("the market API", Duration::from_secs(60), || {
            assert!(
                !guard.exited(),
                "leasehold-market exited:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            crate::http_get(&format!("{base}/api/v1/status"))
                .filter(|response| response.status == 200)
        });
        (guard, base)
    }

    /// What the `leasehold-market` of [`Scenario::start_market`] has logged so far.
    pub fn market_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("market").join("market.log"))
            .unwrap_or_default()
    }

    /// Every provider log, for failure messages.
    pub fn provider_logs(&self) -> String {
        self.providers
            .iter()
            .map(|node| format!("--- {}:\n{}", node.log.display(), node.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The lease ids of a `tenant deploy --output json` document.
pub fn lease_ids(document: &serde_json::Value) -> Vec<u64> {
    document["groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .filter_map(|group| group["lease_id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// The first URI of the first group of a `tenant deploy --output json` document.
pub fn first_uri(document: &serde_json::Value) -> String {
    document
        .pointer("/groups/0/uris/0")
        .and_then(|uri| uri.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no URI in {document}"))
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for node in &mut self.providers {
            if let Some(guard) = node.guard.as_mut() {
                guard.stop();
            }
        }
        let leases = self
            .leases
            .lock()
            .map(|leases| leases.clone())
            .unwrap_or_default();
        docker::remove_leases(&leases);
        // Anvil is killed when its instance drops, inside the runtime that owns its client.
        let devnet = self.devnet.take();
        self.runtime.block_on(async move { drop(devnet) });
    }
}
