//! Bid pricing for the hardware actually reserved, GPU model included. Prices are
//! token base units per hour (u128), computed with checked arithmetic and rounded up
//! in the provider's favour per resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, ReplicaPlacement};
use crate::inventory::GroupPlacement;
use crate::resources::{GpuModelKey, GpuModelPattern, MILLI_PER_GPU};

const GIB: u128 = 1 << 30;

/// Pricing errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    #[error("gpu price entry {position} `{entry}`: {reason}")]
    BadGpuPriceEntry {
        position: usize,
        entry: String,
        reason: String,
    },
    #[error("no gpu price for `{0}` and no `*` default")]
    NoGpuPrice(String),
    #[error("price overflows")]
    Overflow,
    #[error("utilisation multiplier: {0}")]
    BadMultiplier(String),
    #[error("external pricer: {0}")]
    External(String),
    #[error("external pricer timed out after {0} ms")]
    Timeout(u128),
    #[error("external pricer printed no price: {0}")]
    BadResponse(String),
}

fn checked(value: Option<u128>) -> Result<u128, PricingError> {
    value.ok_or(PricingError::Overflow)
}

/// `amount * rate / unit`, rounded up, checked.
fn prorate(amount: u128, rate: u128, unit: u128) -> Result<u128, PricingError> {
    let product = checked(amount.checked_mul(rate))?;
    Ok(product.div_ceil(unit))
}

/// Per-GPU-model hourly rates in Akash's `AKASH_BID_PRICE_GPU`-style syntax:
/// `a100=120,h100.80Gi=300,h100.80Gi.sxm=320,*=130`. A key is `model`,
/// `model.ram` or `model.ram.interface` (case-insensitive), read as the GPU model pattern
/// `*/model/*/*`, `*/model/ram/*` or `*/model/ram/interface` (the one rule of
/// `leasehold_manifests::GpuModelPattern`); the most specific key that matches wins, then `*`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GpuPriceTable {
    rates: BTreeMap<GpuModelPattern, u128>,
}

/// The patterns a model's rate is looked up under, most specific first: its model, RAM and
/// interface; its model and RAM; its model; any model (the vendor is never part of a key).
const RATE_MASKS: [u8; 4] = [0b0001, 0b1001, 0b1101, 0b1111];

impl GpuPriceTable {
    pub fn parse(text: &str) -> Result<Self, PricingError> {
        let mut rates = BTreeMap::new();
        for (position, entry) in text.split(',').enumerate() {
            let trimmed = entry.trim();
            if trimmed.is_empty() {
                continue;
            }
            let bad = |reason: &str| PricingError::BadGpuPriceEntry {
                position: position + 1,
                entry: trimmed.to_string(),
                reason: reason.to_string(),
            };
            let (key, value) = trimmed
                .split_once('=')
                .ok_or_else(|| bad("expected `model=price`"))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(bad("empty model"));
            }
            let parts: Vec<&str> = key.split('.').collect();
            if key != "*"
                && (parts.len() > 3 || parts.iter().any(|part| part.is_empty() || *part == "*"))
            {
                return Err(bad(
                    "model must be `model`, `model.ram` or `model.ram.interface`, or `*`",
                ));
            }
            let pattern: GpuModelPattern = format!("*/{}", parts.join("/"))
                .parse()
                .map_err(|error: leasehold_manifests::GpuKeyError| bad(&error.to_string()))?;
            let value = value.trim();
            let rate = value
                .parse::<u128>()
                .map_err(|_| bad("price must be a whole number of token base units per hour"))?;
            if rates.insert(pattern, rate).is_some() {
                return Err(bad("model listed twice"));
            }
        }
        Ok(Self { rates })
    }

    /// The hourly rate of one whole GPU of this model.
    pub fn rate(&self, model: &GpuModelKey) -> Result<u128, PricingError> {
        RATE_MASKS
            .iter()
            .find_map(|mask| self.rates.get(&model.masked(*mask)).copied())
            .ok_or_else(|| PricingError::NoGpuPrice(model.to_string()))
    }
}

/// Fractions of capacity in use, in per-mille, after the reservation being priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Utilisation {
    pub gpu_permille: u64,
    pub cpu_permille: u64,
    pub memory_permille: u64,
}

impl Utilisation {
    /// The cluster's current utilisation.
    pub fn of(cluster: &Cluster) -> Self {
        let permille = |used: u64, capacity: u64| {
            if capacity == 0 {
                0
            } else {
                (u128::from(used) * 1000 / u128::from(capacity)) as u64
            }
        };
        let (gpu_capacity, gpu_used) = cluster.gpu_milli();
        let (capacity, free) = cluster.resource_totals();
        Self {
            gpu_permille: permille(gpu_used, gpu_capacity),
            cpu_permille: permille(
                capacity.cpu_millis.saturating_sub(free.cpu_millis),
                capacity.cpu_millis,
            ),
            memory_permille: permille(
                capacity.memory_bytes.saturating_sub(free.memory_bytes),
                capacity.memory_bytes,
            ),
        }
    }

    /// The busiest resource.
    pub fn max_permille(&self) -> u64 {
        self.gpu_permille
            .max(self.cpu_permille)
            .max(self.memory_permille)
            .min(1000)
    }
}

/// What a strategy prices: a placed group and the provider's utilisation.
#[derive(Debug, Clone, Copy)]
pub struct PriceInput<'a> {
    pub placement: &'a GroupPlacement,
    pub utilisation: Utilisation,
}

/// A pricing strategy.
pub trait PricingStrategy {
    /// The hourly price of the whole group, in token base units.
    fn price(&self, input: &PriceInput<'_>) -> Result<u128, PricingError>;
}

/// Linear per-resource hourly rates plus per-GPU-model rates.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinearRates {
    pub cpu_per_core: u128,
    pub memory_per_gib: u128,
    pub ephemeral_storage_per_gib: u128,
    /// Per storage class; classes not listed use `persistent_storage_default_per_gib`.
    pub persistent_storage_per_gib: BTreeMap<String, u128>,
    pub persistent_storage_default_per_gib: u128,
    pub gpu: GpuPriceTable,
}

impl LinearRates {
    fn replica(&self, replica: &ReplicaPlacement) -> Result<u128, PricingError> {
        let want = &replica.resources;
        let mut total = prorate(want.cpu_millis.into(), self.cpu_per_core, 1000)?;
        let mut add = |amount: u128| -> Result<(), PricingError> {
            total = checked(total.checked_add(amount))?;
            Ok(())
        };
        add(prorate(want.memory_bytes.into(), self.memory_per_gib, GIB)?)?;
        add(prorate(
            want.ephemeral_storage_bytes.into(),
            self.ephemeral_storage_per_gib,
            GIB,
        )?)?;
        for (class, bytes) in &want.persistent_storage {
            let rate = self
                .persistent_storage_per_gib
                .get(class)
                .copied()
                .unwrap_or(self.persistent_storage_default_per_gib);
            add(prorate((*bytes).into(), rate, GIB)?)?;
        }
        for share in &replica.gpus {
            let rate = self.gpu.rate(&share.model)?;
            add(prorate(share.milli.into(), rate, MILLI_PER_GPU.into())?)?;
        }
        Ok(total)
    }
}

impl PricingStrategy for LinearRates {
    fn price(&self, input: &PriceInput<'_>) -> Result<u128, PricingError> {
        input
            .placement
            .replicas
            .iter()
            .try_fold(0u128, |total, replica| {
                checked(total.checked_add(self.replica(replica)?))
            })
    }
}

/// Scales another strategy's price by a multiplier rising linearly with utilisation:
/// `idle_permille` when empty, `full_permille` when the busiest resource is full.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtilisationMultiplier<S> {
    inner: S,
    idle_permille: u64,
    full_permille: u64,
}

impl<S: PricingStrategy> UtilisationMultiplier<S> {
    pub fn new(inner: S, idle_permille: u64, full_permille: u64) -> Result<Self, PricingError> {
        if idle_permille == 0 || full_permille < idle_permille {
            return Err(PricingError::BadMultiplier(format!(
                "need 0 < idle ({idle_permille}) <= full ({full_permille}) per-mille"
            )));
        }
        Ok(Self {
            inner,
            idle_permille,
            full_permille,
        })
    }

    /// The multiplier in per-mille at this utilisation.
    pub fn multiplier_permille(&self, utilisation: &Utilisation) -> u64 {
        let span = self.full_permille - self.idle_permille;
        self.idle_permille + span * utilisation.max_permille() / 1000
    }
}

impl<S: PricingStrategy> PricingStrategy for UtilisationMultiplier<S> {
    fn price(&self, input: &PriceInput<'_>) -> Result<u128, PricingError> {
        let base = self.inner.price(input)?;
        prorate(
            base,
            self.multiplier_permille(&input.utilisation).into(),
            1000,
        )
    }
}

/// One GPU share in an external pricing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalGpu {
    pub device_index: u32,
    pub model: String,
    pub vendor: String,
    pub name: String,
    pub ram: String,
    pub interface: String,
    pub milli: u32,
}

/// One replica in an external pricing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalReplica {
    pub node_id: String,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub persistent_storage: BTreeMap<String, u64>,
    pub gpus: Vec<ExternalGpu>,
}

/// The JSON written to an external pricer's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalPriceRequest {
    pub group: String,
    pub replicas: Vec<ExternalReplica>,
    pub utilisation: Utilisation,
}

impl ExternalPriceRequest {
    pub fn new(input: &PriceInput<'_>) -> Self {
        Self {
            group: input.placement.group.clone(),
            replicas: input
                .placement
                .replicas
                .iter()
                .map(|replica| ExternalReplica {
                    node_id: replica.node_id.clone(),
                    cpu_millis: replica.resources.cpu_millis,
                    memory_bytes: replica.resources.memory_bytes,
                    ephemeral_storage_bytes: replica.resources.ephemeral_storage_bytes,
                    persistent_storage: replica.resources.persistent_storage.clone(),
                    gpus: replica
                        .gpus
                        .iter()
                        .map(|share| ExternalGpu {
                            device_index: share.device_index,
                            model: share.model.to_string(),
                            vendor: share.model.vendor().to_string(),
                            name: share.model.model().to_string(),
                            ram: share.model.ram().to_string(),
                            interface: share.model.interface().to_string(),
                            milli: share.milli,
                        })
                        .collect(),
                })
                .collect(),
            utilisation: input.utilisation,
        }
    }
}

/// The price an external pricer prints: a bare integer, or `{"price": N}` with N a
/// number or a decimal string (for values beyond 2^53).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExternalPriceResponse {
    pub price: u128,
}

impl ExternalPriceResponse {
    pub fn parse(stdout: &str) -> Result<Self, PricingError> {
        let text = stdout.trim();
        if let Ok(price) = text.parse::<u128>() {
            return Ok(Self { price });
        }
        let snippet = || text.chars().take(80).collect::<String>();
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|_| PricingError::BadResponse(format!("`{}`", snippet())))?;
        let price = match value.get("price") {
            Some(serde_json::Value::Number(number)) => number.as_u64().map(u128::from),
            Some(serde_json::Value::String(text)) => text.trim().parse::<u128>().ok(),
            _ => None,
        };
        price.map(|price| Self { price }).ok_or_else(|| {
            PricingError::BadResponse(format!(
                "`{}`: need a non-negative integer price",
                snippet()
            ))
        })
    }
}

/// Runs a pricing program: request JSON in, stdout out. The library defines the
/// contract; a process-based implementation is behind the `external-pricer` feature.
pub trait PriceProgram {
    fn run(&self, request_json: &str) -> Result<String, PricingError>;
}

/// Prices through an external program.
#[derive(Debug, Clone)]
pub struct ExternalPricing<P> {
    program: P,
}

impl<P: PriceProgram> ExternalPricing<P> {
    pub fn new(program: P) -> Self {
        Self { program }
    }
}

impl<P: PriceProgram> PricingStrategy for ExternalPricing<P> {
    fn price(&self, input: &PriceInput<'_>) -> Result<u128, PricingError> {
        let request = serde_json::to_string(&ExternalPriceRequest::new(input))
            .map_err(|error| PricingError::External(error.to_string()))?;
        let stdout = self.program.run(&request)?;
        Ok(ExternalPriceResponse::parse(&stdout)?.price)
    }
}

#[cfg(feature = "external-pricer")]
pub use process::ProcessProgram;

/// The one piece of IO in this crate: running the pricing program.
#[cfg(feature = "external-pricer")]
mod process {
    use std::io::{Read, Write};
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Duration;

    use super::{PriceProgram, PricingError};

    /// Runs `command args...` with the request on stdin; kills it past `timeout`.
    #[derive(Debug, Clone)]
    pub struct ProcessProgram {
        pub command: PathBuf,
        pub args: Vec<String>,
        pub timeout: Duration,
    }

    impl PriceProgram for ProcessProgram {
        fn run(&self, request_json: &str) -> Result<String, PricingError> {
            let spawn_error = |error: std::io::Error| {
                PricingError::External(format!("{}: {error}", self.command.display()))
            };
            let mut child = Command::new(&self.command)
                .args(&self.args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(spawn_error)?;
            let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
                (child.stdin.take(), child.stdout.take(), child.stderr.take())
            else {
                let _ = child.kill();
                let _ = child.wait();
                return Err(PricingError::External("pipes unavailable".into()));
            };
            let request = request_json.to_string();
            // Writing and reading on their own threads: a program that ignores stdin or
            // floods stdout can block neither us nor the time limit.
            std::thread::spawn(move || {
                let _ = stdin.write_all(request.as_bytes());
            });
            let (sender, receiver) = mpsc::channel();
            std::thread::spawn(move || {
                let mut out = String::new();
                let mut err = String::new();
                let read = stdout.read_to_string(&mut out).map(|_| ());
                let _ = stderr.read_to_string(&mut err);
                let _ = sender.send((read, out, err));
            });
            match receiver.recv_timeout(self.timeout) {
                Ok((read, out, err)) => {
                    let status = child.wait().map_err(spawn_error)?;
                    read.map_err(spawn_error)?;
                    if !status.success() {
                        let detail: String = err.trim().chars().take(200).collect();
                        return Err(PricingError::External(format!(
                            "exited with {status}: {detail}"
                        )));
                    }
                    Ok(out)
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    Err(PricingError::Timeout(self.timeout.as_millis()))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::GpuShare;
    use crate::resources::Resources;

    fn key(text: &str) -> GpuModelKey {
        text.parse::<GpuModelKey>().unwrap()
    }

    fn group(gpus: Vec<GpuShare>) -> GroupPlacement {
        GroupPlacement {
            group: "web".into(),
            replicas: vec![ReplicaPlacement {
                node_id: "n1".into(),
                resources: Resources {
                    cpu_millis: 1500,
                    memory_bytes: 3 << 30,
                    ..Resources::default()
                },
                gpus,
            }],
        }
    }

    #[test]
    fn akash_gpu_syntax_prefers_the_most_specific_key() {
        let table =
            GpuPriceTable::parse("a100=120, h100.80Gi=300,h100.80gi.sxm=320,*=130").unwrap();
        assert_eq!(table.rate(&key("nvidia/a100/40gi/pcie")).unwrap(), 120);
        assert_eq!(table.rate(&key("nvidia/h100/80gi/sxm")).unwrap(), 320);
        assert_eq!(table.rate(&key("nvidia/h100/80gi/pcie")).unwrap(), 300);
        assert_eq!(table.rate(&key("nvidia/h100/94gi/pcie")).unwrap(), 130);
        let no_default = GpuPriceTable::parse("a100=1").unwrap();
        assert_eq!(
            no_default.rate(&key("nvidia/t4/16gi/pcie")),
            Err(PricingError::NoGpuPrice("nvidia/t4/16Gi/pcie".into()))
        );
    }

    #[test]
    fn akash_gpu_syntax_errors_name_the_entry() {
        for (text, position, entry) in [
            ("a100=120,h100", 2, "h100"),
            ("a100=12.5", 1, "a100=12.5"),
            ("a100=1,t4=-3", 2, "t4=-3"),
            ("=4", 1, "=4"),
            ("a100=1,A100=2", 2, "A100=2"),
            ("a.b.c.d=1", 1, "a.b.c.d=1"),
            // A RAM that is not whole GiB would never match a model: refused, not ignored.
            ("a100=1,h100.80GB=3", 2, "h100.80GB=3"),
            ("a 100=1", 1, "a 100=1"),
        ] {
            match GpuPriceTable::parse(text) {
                Err(PricingError::BadGpuPriceEntry {
                    position: p,
                    entry: e,
                    ..
                }) => {
                    assert_eq!((p, e.as_str()), (position, entry), "{text}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        let message = GpuPriceTable::parse("a100=x").unwrap_err().to_string();
        assert!(message.contains("a100=x"), "{message}");
    }

    #[test]
    fn linear_price_counts_the_reserved_gpu_model_and_rounds_up() {
        let rates = LinearRates {
            cpu_per_core: 10,
            memory_per_gib: 3,
            gpu: GpuPriceTable::parse("a100=1000,*=100").unwrap(),
            ..LinearRates::default()
        };
        let share = |model: &str, milli| GpuShare {
            device_index: 0,
            model: key(model),
            milli,
        };
        let input = |placement| PriceInput {
            placement,
            utilisation: Utilisation::default(),
        };
        // 1.5 cores * 10 = 15, 3 GiB * 3 = 9, half an a100 = 500.
        let a100 = group(vec![share("nvidia/a100/80gi/sxm", 500)]);
        assert_eq!(rates.price(&input(&a100)).unwrap(), 15 + 9 + 500);
        let t4 = group(vec![share("nvidia/t4/16gi/pcie", 333)]);
        assert_eq!(rates.price(&input(&t4)).unwrap(), 15 + 9 + 34);
        let huge = LinearRates {
            cpu_per_core: u128::MAX,
            ..LinearRates::default()
        };
        assert_eq!(huge.price(&input(&a100)), Err(PricingError::Overflow));
    }

    #[test]
    fn utilisation_multiplier_rises_as_the_provider_fills() {
        let rates = LinearRates {
            cpu_per_core: 100,
            ..LinearRates::default()
        };
        let scaled = UtilisationMultiplier::new(rates, 1000, 2000).unwrap();
        let placement = group(Vec::new());
        let at = |gpu_permille| PriceInput {
            placement: &placement,
            utilisation: Utilisation {
                gpu_permille,
                ..Utilisation::default()
            },
        };
        assert_eq!(scaled.price(&at(0)).unwrap(), 150);
        assert_eq!(scaled.price(&at(500)).unwrap(), 225);
        assert_eq!(scaled.price(&at(1000)).unwrap(), 300);
        assert!(UtilisationMultiplier::new(LinearRates::default(), 2000, 1000).is_err());
    }

    #[test]
    fn external_responses() {
        assert_eq!(ExternalPriceResponse::parse(" 42\n").unwrap().price, 42);
        assert_eq!(
            ExternalPriceResponse::parse(r#"{"price": 7}"#)
                .unwrap()
                .price,
            7
        );
        assert_eq!(
            ExternalPriceResponse::parse(r#"{"price": "340282366920938463463374607431768211455"}"#)
                .unwrap()
                .price,
            u128::MAX
        );
        for garbage in ["", "lots", "-1", r#"{"price": -2}"#, r#"{"cost": 1}"#] {
            assert!(ExternalPriceResponse::parse(garbage).is_err(), "{garbage}");
        }
    }

    struct Echo(String);
    impl PriceProgram for Echo {
        fn run(&self, request_json: &str) -> Result<String, PricingError> {
            let request: ExternalPriceRequest = serde_json::from_str(request_json).unwrap();
            assert_eq!(request.replicas[0].gpus[0].name, "a100");
            Ok(self.0.clone())
        }
    }

    #[test]
    fn external_strategy_sends_the_reserved_gpu() {
        let placement = group(vec![GpuShare {
            device_index: 3,
            model: key("nvidia/a100/80gi/sxm"),
            milli: 1000,
        }]);
        let input = PriceInput {
            placement: &placement,
            utilisation: Utilisation::default(),
        };
        assert_eq!(
            ExternalPricing::new(Echo("99".into()))
                .price(&input)
                .unwrap(),
            99
        );
        assert!(matches!(
            ExternalPricing::new(Echo("nope".into())).price(&input),
            Err(PricingError::BadResponse(_))
        ));
    }

    #[cfg(feature = "external-pricer")]
    mod process_program {
        use std::time::{Duration, Instant};

        use super::*;

        fn script(dir: &tempfile::TempDir, name: &str, body: &str) -> ProcessProgram {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            ProcessProgram {
                command: "sh".into(),
                args: vec![path.display().to_string()],
                timeout: Duration::from_millis(1500),
            }
        }

        fn price(program: ProcessProgram) -> Result<u128, PricingError> {
            let placement = group(Vec::new());
            ExternalPricing::new(program).price(&PriceInput {
                placement: &placement,
                utilisation: Utilisation::default(),
            })
        }

        #[test]
        fn echoing_script_prices() {
            let dir = tempfile::tempdir().unwrap();
            // Reads the request and answers with its cpu in cores * 7.
            let program = script(
                &dir,
                "echo.sh",
                r#"input=$(cat); case "$input" in *'"cpu_millis":1500'*) echo '{"price": 1050}';; *) echo 0;; esac"#,
            );
            assert_eq!(price(program).unwrap(), 1050);
        }

        #[test]
        fn sleeping_script_times_out() {
            let dir = tempfile::tempdir().unwrap();
            let program = script(&dir, "sleep.sh", "exec sleep 5");
            let started = Instant::now();
            assert_eq!(price(program), Err(PricingError::Timeout(1500)));
            assert!(started.elapsed() < Duration::from_secs(4));
        }

        #[test]
        fn garbage_and_failures_are_errors() {
            let dir = tempfile::tempdir().unwrap();
            let garbage = script(&dir, "garbage.sh", "cat >/dev/null; echo 'price: cheap!'");
            assert!(matches!(price(garbage), Err(PricingError::BadResponse(_))));
            let failing = script(&dir, "fail.sh", "echo boom >&2; exit 3");
            let error = price(failing).unwrap_err().to_string();
            assert!(error.contains("boom"), "{error}");
        }
    }
}
