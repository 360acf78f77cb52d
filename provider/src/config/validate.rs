//! Semantic checks: every problem found, each naming its field.

use leasehold_manifests::{GpuKeyError, GpuModelPattern, WILDCARD};

use super::*;

impl Config {
    /// Every semantic problem; empty when the config is usable.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        let mut problem = |field: &str, reason: String| {
            problems.push(ConfigProblem {
                field: field.to_string(),
                reason,
            })
        };

        if self.data_dir.as_os_str().is_empty() {
            problem("data_dir", "must not be empty".into());
        }
        if let Some(url) = &self.database_url
            && let Err(reason) = check_url(url, &["sqlite", "postgres", "postgresql"])
        {
            problem("database_url", reason);
        }
        for (index, attribute) in self.attributes.iter().enumerate() {
            if let Err(reason) = check_attribute(attribute) {
                problem(&format!("attributes[{index}]"), reason);
            }
        }
        if let Err(pool_problems) = self.ip_pool.parsed() {
            for pool_problem in pool_problems {
                problem(&pool_problem.field, pool_problem.reason);
            }
        }
        for (class, storage) in &self.runtime.docker.storage_classes {
            let field = format!("runtime.docker.storage_classes.{class}");
            if !crate::runtime::is_dns_label(class)
                || class == leasehold_manifests::RAM_STORAGE_CLASS
            {
                problem(
                    &field,
                    "a class name is a DNS label (e.g. beta2), and `ram` is memory, not a volume"
                        .into(),
                );
            }
            if let Err(reason) = storage.backend() {
                problem(&field, reason);
            }
        }

        // The chain client speaks JSON-RPC over HTTP only; a WebSocket goes in `ws_url`.
        if let Err(reason) = check_url(&self.chain.rpc_url, &["http", "https"]) {
            let hint = if self.chain.rpc_url.starts_with("ws") {
                " (put a WebSocket URL in chain.ws_url)"
            } else {
                ""
            };
            problem("chain.rpc_url", format!("{reason}{hint}"));
        }
        for (index, url) in self.chain.rpc_urls.iter().enumerate() {
            if let Err(reason) = check_url(url, &["http", "https"]) {
                problem(&format!("chain.rpc_urls[{index}]"), reason);
            }
        }
        if let Some(ws_url) = &self.chain.ws_url
            && let Err(reason) = check_url(ws_url, &["ws"])
        {
            problem("chain.ws_url", reason);
        }
        if self.chain.chain_id == Some(0) {
            problem("chain.chain_id", "must not be 0".into());
        }
        if self.chain.tx_stuck_after_secs == Some(0) {
            problem("chain.tx_stuck_after_secs", "must be at least 1".into());
        }
        if let (Some(tip), Some(max_fee)) = (
            self.chain.max_priority_fee_gwei,
            self.chain.max_fee_per_gas_gwei,
        ) && tip > max_fee
        {
            problem(
                "chain.max_priority_fee_gwei",
                format!("{tip} gwei is above chain.max_fee_per_gas_gwei ({max_fee} gwei)"),
            );
        }
        for (field, address) in [
            ("chain.marketplace", &self.chain.marketplace),
            ("chain.registry", &self.chain.registry),
            ("chain.token", &self.chain.token),
        ] {
            if let Err(reason) = check_address(address) {
                problem(field, reason);
            }
        }

        let mut key_problems = Vec::new();
        self.key.source(&mut key_problems);
        for key_problem in key_problems {
            problem(&key_problem.field, key_problem.reason);
        }

        if let Err(error) = self.gateway.listen.parse::<SocketAddr>() {
            problem(
                "gateway.listen",
                format!("`{}` is not host:port ({error})", self.gateway.listen),
            );
        }
        if let Some(endpoint) = &self.gateway.public_endpoint
            && let Err(error) = leasehold_proto::tls::gateway_authority(endpoint)
        {
            // The tenants' own rule: TLS only, `https://host:port` or `host:port`.
            problem("gateway.public_endpoint", error.to_string());
        }

        if let Err(reason) = check_url(
            &self.runtime.docker.socket,
            &["unix", "tcp", "http", "npipe"],
        ) {
            problem("runtime.docker.socket", reason);
        }
        if self.runtime.docker.public_host.trim().is_empty() {
            problem("runtime.docker.public_host", "must not be empty".into());
        }
        for (index, range) in self
            .runtime
            .docker
            .blocked_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            if let Err(reason) = crate::runtime::docker::network::Ipv4Cidr::parse(range) {
                problem(&format!("runtime.docker.blocked_ranges[{index}]"), reason);
            }
        }
        if let Some(pool) = &self.runtime.docker.lease_subnet_pool
            && let Err(reason) = crate::runtime::docker::network::SubnetPool::parse(pool)
        {
            problem("runtime.docker.lease_subnet_pool", reason);
        }
        for (field, reason) in self.ingress.iter().flat_map(|ingress| ingress.problems()) {
            problem(&format!("ingress.{field}"), reason);
        }
        if let Err(reason) = self.metrics.socket() {
            problem("metrics.listen", reason);
        }
        if let Some(kubeconfig) = &self.runtime.kubernetes.kubeconfig
            && kubeconfig.as_os_str().is_empty()
        {
            problem("runtime.kubernetes.kubeconfig", "must not be empty".into());
        }

        if self.bid.reservation_timeout_secs == 0 {
            problem("bid.reservation_timeout_secs", "must be at least 1".into());
        }
        if self.bid.bid_timeout_secs == 0 {
            problem("bid.bid_timeout_secs", "must be at least 1".into());
        }
        if self.bid.reservation_timeout_secs < self.bid.bid_timeout_secs {
            problem(
                "bid.reservation_timeout_secs",
                format!(
                    "{} is shorter than bid.bid_timeout_secs ({}): a bid could win after its reservation expired",
                    self.bid.reservation_timeout_secs, self.bid.bid_timeout_secs
                ),
            );
        }

        if self.hardware.cpu_millis == Some(0) {
            problem("hardware.cpu_millis", "must be at least 1".into());
        }
        if self.hardware.memory_mib == Some(0) {
            problem("hardware.memory_mib", "must be at least 1".into());
        }
        for (index, gpu) in self.hardware.gpus.iter().enumerate() {
            let field = |name: &str| format!("hardware.gpus[{index}].{name}");
            if let Err(reason) = crate::hardware::declared_key(gpu) {
                problem(&field("model"), reason);
            }
            if gpu.count == 0 {
                problem(&field("count"), "must be at least 1".into());
            }
            if gpu.vram_mib == 0 {
                problem(&field("vram_mib"), "must be at least 1".into());
            }
            if let Some(interface) = &gpu.interface
                && interface != "pcie"
                && interface != "sxm"
            {
                problem(
                    &field("interface"),
                    format!("`{interface}` is neither `pcie` nor `sxm`"),
                );
            }
        }
        problems
    }
}

impl KeyConfig {
    pub(super) fn source(&self, problems: &mut Vec<ConfigProblem>) -> Option<KeySource> {
        let mut problem = |field: &str, reason: &str| {
            problems.push(ConfigProblem {
                field: field.to_string(),
                reason: reason.to_string(),
            })
        };
        if self.private_key.is_some() {
            problem(
                "key.private_key",
                "never put the key itself in the file; name an environment variable with private_key_env",
            );
        }
        for (field, value) in [
            ("key.password_env", &self.password_env),
            ("key.private_key_env", &self.private_key_env),
        ] {
            if let Some(name) = value
                && !is_env_var_name(name)
            {
                problem(
                    field,
                    "must be an environment variable name (letters, digits, _)",
                );
            }
        }
        match (&self.keystore, &self.private_key_env) {
            (Some(_), Some(_)) => {
                problem("key", "set either keystore or private_key_env, not both");
                None
            }
            (None, None) => {
                problem("key", "set keystore (with password_env) or private_key_env");
                None
            }
            (Some(path), None) => {
                if path.as_os_str().is_empty() {
                    problem("key.keystore", "must not be empty");
                }
                Some(KeySource::Keystore {
                    path: path.clone(),
                    password_env: self
                        .password_env
                        .clone()
                        .unwrap_or_else(|| DEFAULT_PASSWORD_ENV.to_string()),
                })
            }
            (None, Some(variable)) => {
                if self.password_env.is_some() {
                    problem("key.password_env", "only applies to a keystore");
                }
                Some(KeySource::PrivateKeyEnv {
                    variable: variable.clone(),
                })
            }
        }
    }
}

pub(super) fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `0x` followed by 40 hex digits, not the zero address.
pub fn check_address(address: &str) -> Result<(), String> {
    let digits = address
        .strip_prefix("0x")
        .ok_or_else(|| format!("`{address}` must start with 0x"))?;
    if digits.len() != 40 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("`{address}` must be 0x followed by 40 hex digits"));
    }
    if digits.chars().all(|c| c == '0') {
        return Err("is the zero address; set the deployed contract's address".into());
    }
    Ok(())
}

/// `scheme://authority[/path][?query]` with one of the allowed schemes; `unix:`
/// and `sqlite:` URLs carry a path instead of a host.
pub fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` is not a URL (expected scheme://...)"))?;
    if !schemes.contains(&scheme) {
        return Err(format!(
            "`{url}`: scheme `{scheme}` is not one of {}",
            schemes.join(", ")
        ));
    }
    if url.chars().any(char::is_whitespace) {
        return Err(format!("`{url}` contains whitespace"));
    }
    let without_query = rest.split(['?', '#']).next().unwrap_or_default();
    if matches!(scheme, "unix" | "sqlite" | "npipe") {
        return if without_query.is_empty() {
            Err(format!("`{url}` has no path"))
        } else {
            Ok(())
        };
    }
    let authority = without_query.split('/').next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: unclosed [ in host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
    {
        return Err(format!(
            "`{url}`: host `{host}` has characters a host name cannot"
        ));
    }
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{url}`: port `{port}` is not 0..=65535"));
    }
    Ok(())
}

/// `key=value` with a non-empty key of lower-case letters, digits, `-`, `_`, `.`, `/`.
pub fn check_attribute(attribute: &str) -> Result<(), String> {
    let (key, value) = attribute
        .split_once('=')
        .ok_or_else(|| format!("`{attribute}` is not key=value"))?;
    if key.is_empty()
        || !key.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '/')
        })
    {
        return Err(format!(
            "`{attribute}`: key must be non-empty lower-case letters, digits, - _ . /"
        ));
    }
    if value.is_empty() {
        return Err(format!("`{attribute}`: value is empty"));
    }
    Ok(())
}

/// A declared GPU's `vendor/model[/ram[/interface]]`, read by the one GPU model pattern rule
/// (`leasehold_manifests::GpuModelPattern`), with vendor and model named and the interface, when
/// given, `pcie` or `sxm`. The error is the reason, for the caller to name the field.
pub fn check_gpu_model_key(key: &str) -> Result<GpuModelPattern, String> {
    let pattern: GpuModelPattern = key
        .parse()
        .map_err(|error: GpuKeyError| error.to_string())?;
    if pattern.vendor() == WILDCARD || pattern.model() == WILDCARD {
        return Err(format!(
            "`{key}` must name a vendor and a model: vendor/model[/ram[/interface]], e.g. nvidia/a100/80Gi/sxm"
        ));
    }
    if !matches!(pattern.interface(), WILDCARD | "pcie" | "sxm") {
        return Err(format!(
            "`{key}`: interface `{}` must be pcie or sxm",
            pattern.interface()
        ));
    }
    Ok(pattern)
}
