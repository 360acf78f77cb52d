//! Settings: the config file (`$XDG_CONFIG_HOME/leasehold/config.toml`, or `--config`),
//! overridden by `LEASEHOLD_*` environment variables, overridden by command-line flags.

use std::path::{Path, PathBuf};

use leasehold_contracts::Gwei;
use serde::Deserialize;

use crate::error::{CliError, CliResult, ResultExt as _};

pub const DEFAULT_RPC_URL: &str = "http://127.0.0.1:8545";

/// The environment variables the CLI reads (also listed in `tenant --help`).
pub mod env {
    pub const RPC_URL: &str = "LEASEHOLD_RPC_URL";
    pub const WS_URL: &str = "LEASEHOLD_WS_URL";
    pub const DEPLOYMENT: &str = "LEASEHOLD_DEPLOYMENT";
    pub const KEYSTORE: &str = "LEASEHOLD_KEYSTORE";
    pub const PASSWORD: &str = "LEASEHOLD_PASSWORD";
    pub const PASSWORD_FILE: &str = "LEASEHOLD_PASSWORD_FILE";
    pub const PRIVATE_KEY: &str = "LEASEHOLD_PRIVATE_KEY";
    pub const CHAIN_ID: &str = "LEASEHOLD_CHAIN_ID";
    pub const MAX_FEE_PER_GAS_GWEI: &str = "LEASEHOLD_MAX_FEE_PER_GAS_GWEI";
}

/// The config file. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// JSON-RPC endpoint of the chain.
    pub rpc_url: Option<String>,
    /// WebSocket endpoint of the same node (`ws://`): `deploy` wakes on each new block
    /// (`eth_subscribe` newHeads) instead of polling. Anvil serves it on the HTTP port.
    pub ws_url: Option<String>,
    /// Deployment JSON with the contract addresses (chain_id, token, registry, marketplace,
    /// start_block).
    pub deployment: Option<PathBuf>,
    /// Web3 Secret Storage keystore file of the tenant's key.
    pub keystore: Option<PathBuf>,
    /// File whose first line is the keystore password.
    pub password_file: Option<PathBuf>,
    /// Expected chain id; a node reporting another one is refused.
    pub chain_id: Option<u64>,
    /// Where local deployment records and keystores live.
    pub data_dir: Option<PathBuf>,
    /// The most a transaction may pay per gas (base fee plus tip), in gwei.
    pub max_fee_per_gas_gwei: Option<Gwei>,
    /// The most it tips per gas, in gwei.
    pub max_priority_fee_gwei: Option<Gwei>,
}

/// Flags that override the file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub rpc_url: Option<String>,
    pub ws_url: Option<String>,
    pub deployment: Option<PathBuf>,
    pub keystore: Option<PathBuf>,
    pub max_fee_per_gas_gwei: Option<Gwei>,
}

/// Where the password of a keystore comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    Value(String),
    File(PathBuf),
    /// Ask on the terminal.
    Prompt,
}

/// The resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub config_path: PathBuf,
    pub rpc_url: String,
    /// `None`: poll.
    pub ws_url: Option<String>,
    pub deployment: Option<PathBuf>,
    pub keystore: PathBuf,
    pub password: PasswordSource,
    /// A raw key for devnets; wins over the keystore.
    pub private_key: Option<String>,
    pub chain_id: Option<u64>,
    pub data_dir: PathBuf,
    /// `None`: whatever the node suggests.
    pub max_fee_per_gas: Option<Gwei>,
    pub max_priority_fee: Option<Gwei>,
}

/// Reads the environment through a function so tests need not mutate the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn home(env: EnvLookup<'_>) -> CliResult<PathBuf> {
    env("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| CliError::usage("HOME is not set; pass --config or set XDG_CONFIG_HOME"))
}

fn xdg_dir(env: EnvLookup<'_>, variable: &str, fallback: &[&str]) -> CliResult<PathBuf> {
    if let Some(dir) = env(variable).filter(|dir| Path::new(dir).is_absolute()) {
        return Ok(PathBuf::from(dir));
    }
    Ok(fallback
        .iter()
        .fold(home(env)?, |path, part| path.join(part)))
}

/// `$XDG_CONFIG_HOME/leasehold/config.toml` (default `~/.config/leasehold/config.toml`).
pub fn default_config_path(env: EnvLookup<'_>) -> CliResult<PathBuf> {
    Ok(xdg_dir(env, "XDG_CONFIG_HOME", &[".config"])?
        .join("leasehold")
        .join("config.toml"))
}

/// `$XDG_DATA_HOME/leasehold` (default `~/.local/share/leasehold`).
pub fn default_data_dir(env: EnvLookup<'_>) -> CliResult<PathBuf> {
    Ok(xdg_dir(env, "XDG_DATA_HOME", &[".local", "share"])?.join("leasehold"))
}

/// Parses a config file's text; errors name the file.
pub fn parse_file(path: &Path, text: &str) -> CliResult<FileConfig> {
    toml::from_str(text)
        .map_err(|error| CliError::usage(format!("config file {}: {error}", path.display())))
}

impl Settings {
    /// Resolves settings from the process environment.
    pub fn load(overrides: &Overrides) -> CliResult<Self> {
        Self::resolve(overrides, &|name| std::env::var(name).ok())
    }

    /// file < environment < flags. An explicit `--config` must exist; the default may not.
    pub fn resolve(overrides: &Overrides, env: EnvLookup<'_>) -> CliResult<Self> {
        let config_path = match &overrides.config {
            Some(path) => path.clone(),
            None => default_config_path(env)?,
        };
        let file = match std::fs::read_to_string(&config_path) {
            Ok(text) => parse_file(&config_path, &text)?,
            Err(error)
                if error.kind() == std::io::ErrorKind::NotFound && overrides.config.is_none() =>
            {
                FileConfig::default()
            }
            Err(error) => {
                return Err(CliError::usage(format!(
                    "cannot read config file {}: {error}",
                    config_path.display()
                )));
            }
        };
        let var = |name: &str| env(name).filter(|value| !value.is_empty());
        // Relative paths in the file are relative to the file, as users expect.
        let base = config_path.parent().unwrap_or(Path::new(".")).to_owned();
        let from_file = |path: Option<PathBuf>| path.map(|path| base.join(path));

        let data_dir = match from_file(file.data_dir) {
            Some(dir) => dir,
            None => default_data_dir(env)?,
        };
        let chain_id = match var(env::CHAIN_ID) {
            Some(text) => Some(text.trim().parse::<u64>().or_usage().map_err(|e| {
                e.context(format!(
                    "{} must be a chain id, got {text:?}",
                    env::CHAIN_ID
                ))
            })?),
            None => file.chain_id,
        };
        let max_fee_per_gas =
            match var(env::MAX_FEE_PER_GAS_GWEI) {
                Some(text) => Some(text.parse::<Gwei>().or_usage().map_err(|e| {
                    e.context(format!("{} must be gwei", env::MAX_FEE_PER_GAS_GWEI))
                })?),
                None => file.max_fee_per_gas_gwei,
            };
        let password = if let Some(password) = env(env::PASSWORD) {
            PasswordSource::Value(password)
        } else if let Some(path) = var(env::PASSWORD_FILE) {
            PasswordSource::File(PathBuf::from(path))
        } else if let Some(path) = from_file(file.password_file) {
            PasswordSource::File(path)
        } else {
            PasswordSource::Prompt
        };
        let keystore = overrides
            .keystore
            .clone()
            .or_else(|| var(env::KEYSTORE).map(PathBuf::from))
            .or_else(|| from_file(file.keystore))
            .unwrap_or_else(|| crate::wallet::default_keystore(&data_dir));
        Ok(Self {
            config_path,
            rpc_url: overrides
                .rpc_url
                .clone()
                .or_else(|| var(env::RPC_URL))
                .or(file.rpc_url)
                .unwrap_or_else(|| DEFAULT_RPC_URL.to_owned()),
            ws_url: overrides
                .ws_url
                .clone()
                .or_else(|| var(env::WS_URL))
                .or(file.ws_url),
            deployment: overrides
                .deployment
                .clone()
                .or_else(|| var(env::DEPLOYMENT).map(PathBuf::from))
                .or_else(|| from_file(file.deployment)),
            keystore,
            password,
            private_key: var(env::PRIVATE_KEY),
            chain_id,
            data_dir,
            max_fee_per_gas: overrides.max_fee_per_gas_gwei.or(max_fee_per_gas),
            max_priority_fee: file.max_priority_fee_gwei,
        })
    }

    /// Local deployment records.
    pub fn deployments_dir(&self) -> PathBuf {
        self.data_dir.join("deployments")
    }

    pub fn deployment_path(&self) -> CliResult<&Path> {
        self.deployment.as_deref().ok_or_else(|| {
            CliError::usage(format!(
                "no contract deployment configured: set {} to the deployment JSON, pass \
                 --deployment, or set `deployment` in {}",
                env::DEPLOYMENT,
                self.config_path.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn xdg_paths_and_defaults() {
        let env = lookup(&[("HOME", "/home/t")]);
        let settings = Settings::resolve(&Overrides::default(), &env).unwrap();
        assert_eq!(
            settings.config_path,
            Path::new("/home/t/.config/leasehold/config.toml")
        );
        assert_eq!(
            settings.data_dir,
            Path::new("/home/t/.local/share/leasehold")
        );
        assert_eq!(settings.rpc_url, DEFAULT_RPC_URL);
        assert_eq!(settings.password, PasswordSource::Prompt);

        let env = lookup(&[("HOME", "/home/t"), ("XDG_CONFIG_HOME", "/xdg")]);
        assert_eq!(
            default_config_path(&env).unwrap(),
            Path::new("/xdg/leasehold/config.toml")
        );
    }

    #[test]
    fn file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "rpc_url = \"http://file:8545\"\ndeployment = \"dep.json\"\nchain_id = 5\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        };
        let env = lookup(&[("HOME", "/h")]);
        let settings = Settings::resolve(&overrides, &env).unwrap();
        assert_eq!(settings.rpc_url, "http://file:8545");
        assert_eq!(settings.deployment, Some(dir.path().join("dep.json")));
        assert_eq!(settings.chain_id, Some(5));

        let env = lookup(&[
            ("HOME", "/h"),
            (env::RPC_URL, "http://env:8545"),
            (env::CHAIN_ID, "7"),
            (env::PASSWORD, "pw"),
        ]);
        let settings = Settings::resolve(&overrides, &env).unwrap();
        assert_eq!(settings.rpc_url, "http://env:8545");
        assert_eq!(settings.chain_id, Some(7));
        assert_eq!(settings.password, PasswordSource::Value("pw".into()));

        let flags = Overrides {
            rpc_url: Some("http://flag:8545".into()),
            ..overrides
        };
        assert_eq!(
            Settings::resolve(&flags, &env).unwrap().rpc_url,
            "http://flag:8545"
        );
    }

    #[test]
    fn the_fee_cap_comes_from_file_env_or_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "max_fee_per_gas_gwei = 0.5\nmax_priority_fee_gwei = 0.01\n",
        )
        .unwrap();
        let overrides = Overrides {
            config: Some(path.clone()),
            ..Overrides::default()
        };
        let gwei = |text: &str| Some(text.parse::<Gwei>().unwrap());
        let settings = Settings::resolve(&overrides, &lookup(&[("HOME", "/h")])).unwrap();
        assert_eq!(settings.max_fee_per_gas, gwei("0.5"));
        assert_eq!(settings.max_priority_fee, gwei("0.01"));
        let env = lookup(&[("HOME", "/h"), (env::MAX_FEE_PER_GAS_GWEI, "2")]);
        assert_eq!(
            Settings::resolve(&overrides, &env).unwrap().max_fee_per_gas,
            gwei("2")
        );
        let flags = Overrides {
            max_fee_per_gas_gwei: gwei("3"),
            ..overrides.clone()
        };
        assert_eq!(
            Settings::resolve(&flags, &env).unwrap().max_fee_per_gas,
            gwei("3")
        );
        let bad = lookup(&[("HOME", "/h"), (env::MAX_FEE_PER_GAS_GWEI, "cheap")]);
        let error = Settings::resolve(&overrides, &bad).unwrap_err();
        let error = format!("{:#}", error.error);
        assert!(error.contains(env::MAX_FEE_PER_GAS_GWEI), "{error}");
    }

    #[test]
    fn bad_files_are_usage_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "rpc_urll = 1\n").unwrap();
        let overrides = Overrides {
            config: Some(path),
            ..Overrides::default()
        };
        let err = Settings::resolve(&overrides, &lookup(&[("HOME", "/h")])).unwrap_err();
        assert_eq!(err.kind, crate::error::ExitKind::Usage);
        assert!(
            err.error.to_string().contains("config.toml"),
            "{:#}",
            err.error
        );
        assert!(
            err.error.to_string().contains("rpc_urll"),
            "{:#}",
            err.error
        );

        let missing = Overrides {
            config: Some(dir.path().join("absent.toml")),
            ..Overrides::default()
        };
        let err = Settings::resolve(&missing, &lookup(&[("HOME", "/h")])).unwrap_err();
        assert_eq!(err.kind, crate::error::ExitKind::Usage);

        let env = lookup(&[("HOME", "/h"), (env::CHAIN_ID, "mainnet")]);
        let err = Settings::resolve(&Overrides::default(), &env).unwrap_err();
        assert!(format!("{:#}", err.error).contains("LEASEHOLD_CHAIN_ID"));
    }
}
