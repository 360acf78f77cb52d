//! A fresh anvil with the real contracts per test, and a runner for the built `tenant`
//! binary with an isolated HOME, XDG dirs and `LEASEHOLD_*` environment.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use alloy::primitives::{Address, B256, U256, keccak256};
use alloy::providers::Provider as _;
use alloy::signers::local::PrivateKeySigner;
use leasehold_contracts::devnet::DevnetConfig;
use leasehold_contracts::{Deployment, GpuCapacity, MarketplaceClient, ProviderProfile, Resources};

/// Upper bound for any single test: nothing may hang.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(150);

pub const TENANT: usize = 1;
pub const PROVIDER_A: usize = 2;
pub const PROVIDER_B: usize = 3;
pub const OTHER_TENANT: usize = 4;
/// Has ETH but no tokens.
pub const UNFUNDED: usize = 6;

/// 100,000 tokens of 6 decimals.
pub const FUNDING: u64 = 100_000_000_000;

pub async fn within<T>(body: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, body)
        .await
        .expect("test exceeded its time limit")
}

pub fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/examples")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn key(text: &str) -> B256 {
    keccak256(text.as_bytes())
}

/// Runs `tenant` with only the given environment (plus PATH) and HOME inside `home`.
pub fn run_tenant(home: &Path, env: &[(&str, String)], args: &[&str]) -> Output {
    run_tenant_with_stdin(home, env, args, "")
}

/// [`run_tenant`] with `input` on stdin.
pub fn run_tenant_with_stdin(
    home: &Path,
    env: &[(&str, String)],
    args: &[&str],
    input: &str,
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tenant"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"));
    for (name, value) in env {
        command.env(name, value);
    }
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run tenant");
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write as _;
        // The child may exit without reading; that is its business.
        let _ = stdin.write_all(input.as_bytes());
    }
    child.wait_with_output().expect("wait for tenant")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            stdout(output),
            stderr(output)
        )
    })
}

pub fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

/// The shared devnet (`leasehold_contracts::devnet`) plus an isolated HOME holding its
/// deployment file.
pub struct Devnet {
    pub chain: leasehold_contracts::devnet::Devnet,
    pub deployment: Deployment,
    pub home: tempfile::TempDir,
    pub deployment_path: PathBuf,
}

impl Devnet {
    /// Anvil with the contracts deployed; accounts 0-5 hold [`FUNDING`] tokens.
    pub async fn start() -> Self {
        let config = DevnetConfig {
            funded_accounts: UNFUNDED,
            funding: U256::from(FUNDING),
            ..DevnetConfig::default()
        };
        let chain = leasehold_contracts::devnet::Devnet::start_with(config)
            .await
            .unwrap_or_else(|error| panic!("devnet did not start: {error}"));
        let home = tempfile::tempdir().expect("temp dir");
        let deployment_path = home.path().join("deployment.json");
        chain
            .write_deployment(&deployment_path)
            .expect("save deployment");
        Self {
            deployment: chain.deployment,
            chain,
            home,
            deployment_path,
        }
    }

    pub fn signer(&self, index: usize) -> PrivateKeySigner {
        self.chain
            .signer(index)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    pub fn address(&self, index: usize) -> Address {
        self.signer(index).address()
    }

    /// The address as JSON output writes it (lower-case hex).
    pub fn address_json(&self, index: usize) -> String {
        self.address(index).to_string().to_lowercase()
    }

    pub fn private_key(&self, index: usize) -> String {
        self.chain
            .private_key_hex(index)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    pub fn client(&self, index: usize) -> MarketplaceClient {
        self.chain
            .client(index)
            .unwrap_or_else(|error| panic!("client {index}: {error}"))
    }

    /// Transactions account `index` has sent (its next nonce).
    pub async fn nonce(&self, index: usize) -> u64 {
        self.chain
            .rpc
            .get_transaction_count(self.address(index))
            .await
            .expect("eth_getTransactionCount")
    }

    /// The latest block's timestamp.
    pub async fn chain_now(&self) -> u64 {
        self.chain
            .rpc
            .get_block_by_number(alloy::rpc::types::BlockNumberOrTag::Latest)
            .await
            .expect("eth_getBlockByNumber")
            .expect("latest block")
            .header
            .timestamp
    }

    /// RPC URL and deployment file; add the key yourself.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LEASEHOLD_RPC_URL", self.chain.endpoint()),
            (
                "LEASEHOLD_DEPLOYMENT",
                self.deployment_path.to_string_lossy().into_owned(),
            ),
        ]
    }

    /// [`Devnet::env`] acting as account `index` through LEASEHOLD_PRIVATE_KEY.
    pub fn env_as(&self, index: usize) -> Vec<(&'static str, String)> {
        let mut env = self.env();
        env.push(("LEASEHOLD_PRIVATE_KEY", self.private_key(index)));
        env
    }

    /// Registers account `index` as a provider in region=eu-west, with a gateway
    /// certificate fingerprint that no gateway presents.
    pub async fn register(&self, index: usize, endpoint: &str, gpus: &[(&str, u32)]) {
        self.register_with_cert(index, endpoint, B256::repeat_byte(0xce), gpus)
            .await;
    }

    /// [`Self::register`] pinning the gateway certificate `cert_sha256`.
    pub async fn register_with_cert(
        &self,
        index: usize,
        endpoint: &str,
        cert_sha256: B256,
        gpus: &[(&str, u32)],
    ) {
        let profile = ProviderProfile {
            endpoint: endpoint.to_owned(),
            gateway_cert_sha256: cert_sha256,
            attributes: vec![key("region=eu-west")],
            capacity: Resources {
                cpu_milli: 64_000,
                memory_mib: 262_144,
                storage_mib: 2_000_000,
            },
            gpus: gpus
                .iter()
                .map(|(model, count)| GpuCapacity {
                    model_key: key(model),
                    count: *count,
                })
                .collect(),
        };
        self.client(index)
            .register_provider(&profile)
            .await
            .expect("register provider");
    }
}

/// Runs a blocking closure (a `tenant` process) without stalling the async test.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

impl Devnet {
    /// Runs `tenant` as account `index` on a blocking thread.
    pub fn tenant(&self, index: usize, args: &[&str]) -> impl Future<Output = Output> + 'static {
        self.tenant_with(self.env_as(index), args)
    }

    /// Runs `tenant` with exactly `env` (plus PATH and the isolated HOME).
    pub fn tenant_with(
        &self,
        env: Vec<(&'static str, String)>,
        args: &[&str],
    ) -> impl Future<Output = Output> + 'static {
        self.tenant_typing(env, args, "")
    }

    /// [`Devnet::tenant_with`], typing `input` on stdin.
    pub fn tenant_typing(
        &self,
        env: Vec<(&'static str, String)>,
        args: &[&str],
        input: &str,
    ) -> impl Future<Output = Output> + 'static {
        let home = self.home.path().to_owned();
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let input = input.to_owned();
        blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_tenant_with_stdin(&home, &env, &args, &input)
        })
    }
}

/// One replica needing an H100 in region=eu-west, at most 1000/h.
pub const H100_SDL: &str = r#"
version: "2.0"
services:
  infer:
    image: leasehold/busybox:test
    expose:
      - port: 80
        to:
          - global: true
profiles:
  compute:
    gpu:
      resources:
        cpu:
          units: 2
        memory:
          size: 4Gi
        storage:
          size: 10Gi
        gpu:
          units: 1
          attributes:
            vendor:
              nvidia:
                - model: h100
                  ram: 80Gi
                  interface: sxm
  placement:
    eu:
      attributes:
        region: eu-west
      pricing:
        gpu:
          denom: usdc
          amount: 1000
deployment:
  infer:
    eu:
      profile: gpu
      count: 1
"#;
