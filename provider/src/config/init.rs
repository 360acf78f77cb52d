//! `provider init`'s starting config and the commented TOML file it writes.

use super::*;

impl Config {
    /// A starting config for `provider init`: local devnet chain, Docker,
    /// default prices with an entry per detected GPU model. The contract
    /// addresses are left as the zero address for the caller to fill in.
    pub fn default_for(hardware: &Hardware, data_dir: PathBuf) -> Self {
        let zero = format!("0x{}", "0".repeat(40));
        let mut models: Vec<&str> = hardware
            .gpus
            .iter()
            .map(|gpu| gpu.model_key.model())
            .collect();
        models.sort_unstable();
        models.dedup();
        let gpu_prices = models
            .iter()
            .map(|model| format!("{model}={DEFAULT_GPU_PRICE}"))
            .chain(std::iter::once(format!("*={DEFAULT_GPU_PRICE}")))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            data_dir,
            database_url: None,
            attributes: Vec::new(),
            chain: ChainConfig {
                rpc_url: "http://127.0.0.1:8545".into(),
                rpc_urls: Vec::new(),
                ws_url: None,
                chain_id: None,
                marketplace: zero.clone(),
                registry: zero.clone(),
                token: zero,
                max_fee_per_gas_gwei: None,
                max_priority_fee_gwei: None,
                tx_stuck_after_secs: None,
            },
            key: KeyConfig {
                keystore: None,
                password_env: None,
                private_key_env: Some("LEASEHOLD_PROVIDER_KEY".into()),
                private_key: None,
            },
            gateway: GatewayConfig::default(),
            runtime: RuntimeConfig::default(),
            pricing: PricingConfig {
                strategy: PricingStrategy::Linear,
                // Low enough that manifests/examples/hello.yaml (0.1 core, 64Mi, at
                // most 1000 an hour) gets a bid from a provider left at the defaults.
                cpu_core_per_hour: 8_000,
                memory_gib_per_hour: 2_000,
                storage_gib_per_hour: 100,
                gpu_prices,
            },
            bid: BidConfig::default(),
            metrics: MetricsConfig::default(),
            hardware: HardwareOverrides::default(),
            ip_pool: IpPoolConfig::default(),
            ingress: None,
            detected: Some(hardware.clone()),
        }
    }

    /// The config as a commented TOML file.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        let body = toml::to_string(self)?;
        let mut out = String::from(FILE_HEADER);
        for line in body.lines() {
            if let Some(comment) = SECTION_COMMENTS
                .iter()
                .find(|(header, _)| *header == line)
                .map(|(_, comment)| comment)
            {
                if !out.ends_with("\n\n") {
                    out.push('\n');
                }
                out.push_str(comment);
            }
            out.push_str(line);
            out.push('\n');
            if line == "[hardware]" {
                out.push_str(&self.detected_comment());
            }
        }
        if !body.lines().any(|line| line == "[hardware]") {
            out.push('\n');
            out.push_str(HARDWARE_COMMENT);
            out.push_str("[hardware]\n");
            out.push_str(&self.detected_comment());
        }
        if self.ingress.is_none() {
            out.push('\n');
            out.push_str(INGRESS_COMMENT);
        }
        Ok(out)
    }

    fn detected_comment(&self) -> String {
        let Some(hardware) = &self.detected else {
            return String::new();
        };
        let mut text = format!(
            "# Detected: cpu_millis = {}, memory_mib = {}, storage_mib = {} (free space of the data dir's filesystem)\n",
            hardware.cpu_millis, hardware.memory_mib, hardware.storage_mib
        );
        for gpu in &hardware.gpus {
            text.push_str(&format!(
                "# Detected GPU {}: {} -> {} ({} MiB)\n",
                gpu.index, gpu.name, gpu.model_key, gpu.vram_mib
            ));
        }
        text
    }
}

/// The `[ingress]` section, commented out: an ingress needs a domain of the operator's.
pub(super) const INGRESS_COMMENT: &str = "\
# HTTP ingress (absent: services answer on their published ports only). Every service
# exposed `as: 80` gets <id>.<domain> plus its SDL `accept` hostnames; point a wildcard
# DNS record *.<domain> at this host. HTTPS is served with tls_cert/tls_key (PEM, a
# wildcard certificate for *.<domain>); plain HTTP stays on.
# [ingress]
# domain = \"ingress.example.org\"
# http_listen = \"0.0.0.0:80\"
# https_listen = \"0.0.0.0:443\"
# tls_cert = \"/etc/leasehold/ingress.crt\"
# tls_key = \"/etc/leasehold/ingress.key\"
";

/// A default price per GPU per hour (1.00 of a 6-decimal token).
pub(super) const DEFAULT_GPU_PRICE: u64 = 1_000_000;

pub(super) const FILE_HEADER: &str = "\
# Leasehold provider config (written by `provider init`).
# Prices are in the payment token's base units per hour.
# data_dir holds the database; database_url, when set, points elsewhere
# (sqlite://... or postgres://user:password@host/db).
# attributes are announced on chain, e.g. [\"region=eu-west\", \"tier=community\"].
";

pub(super) const HARDWARE_COMMENT: &str = "\
# Overrides of detected hardware, all optional: cpu_millis, memory_mib, storage_mib,
# and [[hardware.gpus]] entries (model = \"nvidia/a100/80Gi/sxm\", vram_mib, count,
# interface) used when neither NVML nor nvidia-smi finds a GPU. With the Kubernetes
# runtime the cluster's nodes are the capacity, and cpu_millis, memory_mib and
# storage_mib only cap what `register` and `update` publish.
";

pub(super) const SECTION_COMMENTS: [(&str, &str); 8] = [
    (
        "[chain]",
        "# The EVM node and the deployed contracts (0x + 40 hex digits).\n# chain_id = 31337 makes the daemon check it talks to the right chain.\n# ws_url = \"ws://127.0.0.1:8545\" (the node's WebSocket; anvil serves it on the HTTP port)\n# wakes the chain follower at each new block instead of once a second.\n# Fees (EIP-1559, in gwei, e.g. 0.05 on an L2): max_fee_per_gas_gwei caps what a transaction\n# may pay per gas, max_priority_fee_gwei the tip; tx_stuck_after_secs (default 60) is how\n# long a transaction may wait before it is replaced with fees raised by 12.5 %.\n",
    ),
    (
        "[key]",
        "# The signing key: keystore = \"path\" with password_env = \"VAR\", or\n# private_key_env = \"VAR\". Never put the key itself here.\n",
    ),
    (
        "[gateway]",
        "# The tenant-facing gateway: the socket it binds, and the URL registered on chain,\n# e.g. public_endpoint = \"https://provider.example.com:8443\".\n",
    ),
    (
        "[runtime]",
        "# Where workloads run: kind = \"docker\" or \"kubernetes\". Docker publishes ports on\n# docker.public_host (bound to docker.bind_address, default public_host when it is an IP);\n# lease containers reach only the internet and their own lease unless\n# docker.egress_policy = \"unrestricted\" (docker.blocked_ranges: default RFC 1918).\n# kubernetes.kubeconfig defaults to in-cluster, $KUBECONFIG, ~/.kube/config.\n",
    ),
    (
        "[pricing]",
        "# Linear prices per hour; gpu_prices uses Akash's syntax: a100=120,h100.80Gi=300,*=130.\n",
    ),
    (
        "[bid]",
        "# How long a reservation is held for an open bid, and how long to wait for a bid to confirm.\n",
    ),
    ("[hardware]", HARDWARE_COMMENT),
    (
        "[[hardware.gpus]]",
        "# A group of identical GPUs declared by hand.\n",
    ),
];
