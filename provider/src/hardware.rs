//! What this machine offers: CPU, memory, the data directory's disk, and GPUs.
//!
//! GPUs are found through NVML (libnvidia-ml, loaded at run time, so the daemon
//! builds and runs on machines without the NVIDIA driver), then through
//! `nvidia-smi`'s CSV output, and otherwise taken from the GPUs declared in the
//! config. Every detected GPU gets a canonical model key such as
//! `nvidia/a100/80Gi/sxm`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use leasehold_manifests::{GpuModelKey, GpuProductError, WILDCARD, marketed_gib};
use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const MILLI_PER_CORE: u64 = 1000;

/// The `nvidia-smi` query the CSV parser expects, in this column order.
pub const NVIDIA_SMI_QUERY: &str = "index,name,memory.total,pci.bus_id,uuid";

/// Why hardware detection failed.
#[derive(Debug, thiserror::Error)]
pub enum HardwareError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: {reason}")]
    Parse { path: PathBuf, reason: String },
    #[error("counting CPUs: {0}")]
    Cpu(#[source] io::Error),
    #[error("disk space of {path}: {source}")]
    Disk {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} overflows")]
    Overflow { what: &'static str },
    #[error("nvidia-smi output line {line}: {reason}")]
    NvidiaSmiOutput { line: usize, reason: String },
    #[error("running {program}: {reason}")]
    NvidiaSmiFailed { program: String, reason: String },
    #[error("declared gpu `{model}`: {reason}")]
    DeclaredGpu { model: String, reason: String },
}

/// Hardware the operator states in the config instead of (or on top of) detection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareOverrides {
    /// CPU to offer, in millicores (1000 = one core); default: every logical core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    /// Memory to offer, in MiB; default: MemTotal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Storage to offer, in MiB; default: the free space of the data dir's filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_mib: Option<u64>,
    /// GPUs to offer when neither NVML nor nvidia-smi finds any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<DeclaredGpu>,
}

/// A group of identical GPUs declared in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredGpu {
    /// `vendor/model[/ram[/interface]]`, e.g. `nvidia/a100/80Gi/sxm`.
    pub model: String,
    pub vram_mib: u64,
    /// `pcie` or `sxm`; default: the model key's fourth part, else `pcie`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    pub count: u32,
}

/// Where the GPU list came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuSource {
    Nvml,
    NvidiaSmi,
    Declared,
    None,
}

/// One GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// The driver's device index (what Docker's `--gpus device=N` takes).
    pub index: u32,
    /// The name the driver reports, e.g. `NVIDIA A100-SXM4-80GB`.
    pub name: String,
    /// Canonical `vendor/model/ram/interface`.
    pub model_key: GpuModelKey,
    pub vram_mib: u64,
    pub interface: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci_bus_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// Space on the filesystem holding a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// What an unprivileged user can still write.
    pub available_bytes: u64,
}

/// The machine as the daemon offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardware {
    pub cpu_millis: u64,
    pub memory_mib: u64,
    pub storage_mib: u64,
    pub disk: DiskSpace,
    pub gpus: Vec<GpuDevice>,
    pub gpu_source: GpuSource,
    /// Why a GPU probe was skipped or failed, for `provider init` to show.
    pub notes: Vec<String>,
}

impl Hardware {
    /// Detects everything, applying the overrides. `data_dir` need not exist yet:
    /// its nearest existing ancestor is measured.
    pub fn detect(data_dir: &Path, overrides: &HardwareOverrides) -> Result<Self, HardwareError> {
        let disk = disk_space(data_dir)?;
        let cpu_millis = match overrides.cpu_millis {
            Some(millis) => millis,
            None => detect_cpu_millis()?,
        };
        let memory_mib = match overrides.memory_mib {
            Some(mib) => mib,
            None => detect_memory_bytes()? / MIB,
        };
        let storage_mib = overrides.storage_mib.unwrap_or(disk.available_bytes / MIB);
        let mut probe = probe_gpus(Path::new("nvidia-smi"));
        if probe.devices.is_empty() && !overrides.gpus.is_empty() {
            probe.devices = declared_devices(&overrides.gpus)?;
            probe.source = GpuSource::Declared;
        } else if !overrides.gpus.is_empty() {
            probe
                .notes
                .push("GPUs were detected, so the GPUs declared in the config are ignored".into());
        }
        Ok(Self {
            cpu_millis,
            memory_mib,
            storage_mib,
            disk,
            gpus: probe.devices,
            gpu_source: probe.source,
            notes: probe.notes,
        })
    }
}

/// Logical cores this process may use (cgroup and affinity limits included), in millicores.
pub fn detect_cpu_millis() -> Result<u64, HardwareError> {
    let cores = std::thread::available_parallelism().map_err(HardwareError::Cpu)?;
    u64::try_from(cores.get())
        .ok()
        .and_then(|cores| cores.checked_mul(MILLI_PER_CORE))
        .ok_or(HardwareError::Overflow { what: "cpu millis" })
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn detect_memory_bytes() -> Result<u64, HardwareError> {
    let path = Path::new("/proc/meminfo");
    let text = std::fs::read_to_string(path).map_err(|source| HardwareError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_meminfo_total(&text).map_err(|reason| HardwareError::Parse {
        path: path.to_path_buf(),
        reason,
    })
}

/// Reads `MemTotal:  16318480 kB` out of /proc/meminfo text, in bytes.
pub fn parse_meminfo_total(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .ok_or("no MemTotal line")?;
    let mut fields = line.split_whitespace();
    let amount: u64 = fields
        .next()
        .and_then(|amount| amount.parse().ok())
        .ok_or_else(|| format!("MemTotal `{}` is not a number", line.trim()))?;
    match fields.next() {
        Some("kB") => amount
            .checked_mul(1024)
            .ok_or_else(|| "MemTotal overflows".to_string()),
        other => Err(format!("MemTotal unit {other:?}, expected kB")),
    }
}

/// Total and available space of the filesystem holding `dir` (or its nearest existing ancestor).
pub fn disk_space(dir: &Path) -> Result<DiskSpace, HardwareError> {
    let existing = dir
        .ancestors()
        .find(|candidate| !candidate.as_os_str().is_empty() && candidate.exists())
        .unwrap_or(Path::new("."));
    let disk_error = |source: io::Error| HardwareError::Disk {
        path: existing.to_path_buf(),
        source,
    };
    let stats = rustix::fs::statvfs(existing).map_err(|errno| disk_error(errno.into()))?;
    let bytes = |blocks: u64| {
        blocks
            .checked_mul(stats.f_frsize)
            .ok_or(HardwareError::Overflow { what: "disk size" })
    };
    Ok(DiskSpace {
        total_bytes: bytes(stats.f_blocks)?,
        available_bytes: bytes(stats.f_bavail)?,
    })
}

/// The result of looking for GPUs through the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuProbe {
    pub source: GpuSource,
    pub devices: Vec<GpuDevice>,
    pub notes: Vec<String>,
}

/// Tries NVML, then the given `nvidia-smi` program. Never fails: what went
/// wrong ends up in `notes`, and no GPU is reported.
pub fn probe_gpus(nvidia_smi: &Path) -> GpuProbe {
    let mut notes = Vec::new();
    match nvml_devices() {
        Ok(devices) if !devices.is_empty() => {
            return GpuProbe {
                source: GpuSource::Nvml,
                devices,
                notes,
            };
        }
        Ok(_) => notes.push("NVML: no GPU".to_string()),
        Err(reason) => notes.push(format!("NVML unavailable: {reason}")),
    }
    match nvidia_smi_devices(nvidia_smi) {
        Ok(Some(devices)) if !devices.is_empty() => GpuProbe {
            source: GpuSource::NvidiaSmi,
            devices,
            notes,
        },
        Ok(Some(_)) => {
            notes.push("nvidia-smi: no GPU".to_string());
            no_gpus(notes)
        }
        Ok(None) => {
            notes.push(format!("{} is not installed", nvidia_smi.display()));
            no_gpus(notes)
        }
        Err(error) => {
            notes.push(error.to_string());
            no_gpus(notes)
        }
    }
}

fn no_gpus(notes: Vec<String>) -> GpuProbe {
    GpuProbe {
        source: GpuSource::None,
        devices: Vec::new(),
        notes,
    }
}

fn nvml_devices() -> Result<Vec<GpuDevice>, nvml_wrapper::error::NvmlError> {
    let nvml = nvml_wrapper::Nvml::init()?;
    let count = nvml.device_count()?;
    let mut devices = Vec::new();
    for index in 0..count {
        let device = nvml.device_by_index(index)?;
        let name = device.name()?;
        let vram_mib = device.memory_info()?.total / MIB;
        let mut gpu = match gpu_from_name(index, &name, vram_mib) {
            Ok(gpu) => gpu,
            Err(error) => {
                tracing::warn!(index, %error, "GPU not offered");
                continue;
            }
        };
        gpu.pci_bus_id = device.pci_info().ok().map(|pci| pci.bus_id);
        gpu.uuid = device.uuid().ok();
        devices.push(gpu);
    }
    Ok(devices)
}

/// Runs `nvidia-smi --query-gpu=... --format=csv,noheader,nounits`.
/// `Ok(None)` when the program does not exist.
pub fn nvidia_smi_devices(program: &Path) -> Result<Option<Vec<GpuDevice>>, HardwareError> {
    let output = Command::new(program)
        .arg(format!("--query-gpu={NVIDIA_SMI_QUERY}"))
        .arg("--format=csv,noheader,nounits")
        .output();
    let failed = |reason: String| HardwareError::NvidiaSmiFailed {
        program: program.display().to_string(),
        reason,
    };
    let output = match output {
        Ok(output) => output,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(failed(error.to_string())),
    };
    if !output.status.success() {
        // Without a driver nvidia-smi explains itself on stdout, not stderr.
        let message = [output.stderr.as_slice(), output.stdout.as_slice()]
            .iter()
            .map(|bytes| String::from_utf8_lossy(bytes).trim().to_string())
            .find(|text| !text.is_empty())
            .unwrap_or_default();
        return Err(failed(format!("{}: {message}", output.status)));
    }
    let text =
        String::from_utf8(output.stdout).map_err(|_| failed("output is not UTF-8".into()))?;
    parse_nvidia_smi_csv(&text).map(Some)
}

/// Parses the CSV of [`NVIDIA_SMI_QUERY`], with or without the header line and units
/// (`--format=csv` or `--format=csv,noheader,nounits`).
pub fn parse_nvidia_smi_csv(text: &str) -> Result<Vec<GpuDevice>, HardwareError> {
    let mut devices = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line_number = number.saturating_add(1);
        let line = line.trim();
        if line.is_empty() || (number == 0 && line.starts_with("index")) {
            continue;
        }
        let malformed = |reason: String| HardwareError::NvidiaSmiOutput {
            line: line_number,
            reason,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let [index, name, memory, bus_id, uuid] = fields.as_slice() else {
            return Err(malformed(format!(
                "expected 5 comma-separated fields ({NVIDIA_SMI_QUERY}), got {}",
                fields.len()
            )));
        };
        let index: u32 = index
            .parse()
            .map_err(|_| malformed(format!("index `{index}` is not a number")))?;
        if name.is_empty() {
            return Err(malformed("empty name".into()));
        }
        let memory_digits = memory.strip_suffix("MiB").unwrap_or(memory).trim();
        let vram_mib: u64 = memory_digits
            .parse()
            .map_err(|_| malformed(format!("memory.total `{memory}` is not a number of MiB")))?;
        let mut gpu =
            gpu_from_name(index, name, vram_mib).map_err(|error| malformed(error.to_string()))?;
        gpu.pci_bus_id = known(bus_id);
        gpu.uuid = known(uuid);
        devices.push(gpu);
    }
    Ok(devices)
}

/// nvidia-smi prints `[N/A]` or `[Not Supported]` for fields it cannot read.
fn known(field: &str) -> Option<String> {
    (!field.is_empty() && !field.starts_with('[')).then(|| field.to_string())
}

/// A device the driver reports, keyed by the one product-name rule
/// ([`GpuModelKey::from_product`]), which the Kubernetes inventory applies to node labels too.
fn gpu_from_name(index: u32, name: &str, vram_mib: u64) -> Result<GpuDevice, GpuProductError> {
    let model_key = GpuModelKey::from_product(name, Some(vram_mib))?;
    Ok(GpuDevice {
        index,
        name: name.to_string(),
        interface: model_key.interface().to_owned(),
        model_key,
        vram_mib,
        pci_bus_id: None,
        uuid: None,
    })
}

/// The key of a declared GPU group: its `model` read by the one pattern rule
/// (`vendor/model[/ram[/interface]]`, vendor and model required), the RAM defaulting to the
/// marketed size of `vram_mib` and the interface to `interface`, else `pcie`. The error is the
/// reason, for the caller to name the field.
pub fn declared_key(declared: &DeclaredGpu) -> Result<GpuModelKey, String> {
    let pattern = crate::config::check_gpu_model_key(&declared.model)?;
    let ram_gib = match pattern.ram() {
        WILDCARD => Some(marketed_gib(declared.vram_mib)),
        written => written
            .strip_suffix("Gi")
            .and_then(|gib| gib.parse::<u64>().ok()),
    };
    let ram_bytes = ram_gib
        .and_then(|gib| gib.checked_mul(GIB))
        .ok_or_else(|| format!("RAM `{}` is out of range", pattern.ram()))?;
    let interface = match (declared.interface.as_deref(), pattern.interface()) {
        (Some(interface), _) => interface,
        (None, WILDCARD) => "pcie",
        (None, interface) => interface,
    };
    GpuModelKey::from_parts(pattern.vendor(), pattern.model(), ram_bytes, interface)
        .map_err(|error| error.to_string())
}

/// Expands declared GPU groups into devices numbered from 0.
pub fn declared_devices(declared: &[DeclaredGpu]) -> Result<Vec<GpuDevice>, HardwareError> {
    let mut devices = Vec::new();
    let mut index: u32 = 0;
    for group in declared {
        let invalid = |reason: String| HardwareError::DeclaredGpu {
            model: group.model.clone(),
            reason,
        };
        let key = declared_key(group).map_err(invalid)?;
        for _ in 0..group.count {
            devices.push(GpuDevice {
                index,
                name: group.model.clone(),
                interface: key.interface().to_owned(),
                model_key: key.clone(),
                vram_mib: group.vram_mib,
                pci_bus_id: None,
                uuid: None,
            });
            index = index
                .checked_add(1)
                .ok_or_else(|| invalid("too many declared GPUs".to_owned()))?;
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nvidia-smi names go through the manifests' product rule (its table of real names is in
    /// `leasehold_manifests`' tests; the Kubernetes inventory's test runs the node-label forms).
    #[test]
    fn nvidia_smi_names_map_to_canonical_keys_and_unmappable_ones_are_errors() {
        let csv = "index, name, memory.total [MiB], pci.bus_id, uuid\n\
                   0, NVIDIA A100-SXM4-80GB, 81920 MiB, 00000000:07:00.0, GPU-1\n\
                   1, NVIDIA H100 80GB HBM3, 81559 MiB, [N/A], [N/A]\n\
                   2, NVIDIA GeForce RTX 4090, 24564 MiB, 00000000:09:00.0, GPU-3\n";
        let devices = parse_nvidia_smi_csv(csv).unwrap_or_else(|error| panic!("{error}"));
        let keys: Vec<String> = devices
            .iter()
            .map(|gpu| gpu.model_key.to_string())
            .collect();
        assert_eq!(
            keys,
            [
                "nvidia/a100/80Gi/sxm",
                "nvidia/h100/80Gi/sxm",
                "nvidia/rtx4090/24Gi/pcie"
            ]
        );
        assert_eq!(devices[1].interface, "sxm");
        assert_eq!(devices[0].uuid.as_deref(), Some("GPU-1"));
        let error = parse_nvidia_smi_csv("0, NVIDIA, 16384, [N/A], [N/A]\n")
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("line 1") && error.contains("names no model"),
            "{error}"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_output_is_handled_without_panicking(csv in ".{0,200}") {
            let _ = parse_nvidia_smi_csv(&csv);
        }
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemTotal:       16318480 kB\nMemFree:          512000 kB\n";
        assert_eq!(parse_meminfo_total(text), Ok(16_318_480 * 1024));
        assert!(parse_meminfo_total("MemFree: 1 kB\n").is_err());
        assert!(parse_meminfo_total("MemTotal: lots kB\n").is_err());
    }

    #[test]
    fn declared_groups_expand_to_numbered_devices() {
        let declared = [
            DeclaredGpu {
                model: "nvidia/a100/80Gi/sxm".into(),
                vram_mib: 81920,
                interface: None,
                count: 2,
            },
            DeclaredGpu {
                model: "nvidia/t4".into(),
                vram_mib: 15360,
                interface: None,
                count: 1,
            },
        ];
        let devices = declared_devices(&declared).unwrap_or_default();
        let keys: Vec<(u32, String)> = devices
            .iter()
            .map(|gpu| (gpu.index, gpu.model_key.to_string()))
            .collect();
        assert_eq!(
            keys,
            [
                (0, "nvidia/a100/80Gi/sxm".to_owned()),
                (1, "nvidia/a100/80Gi/sxm".to_owned()),
                (2, "nvidia/t4/16Gi/pcie".to_owned())
            ]
        );
        let bad = DeclaredGpu {
            model: "a100".into(),
            vram_mib: 1,
            interface: None,
            count: 1,
        };
        assert!(declared_devices(&[bad]).is_err());
    }

    #[test]
    fn this_machine_reports_cpu_memory_and_disk() {
        let hardware = Hardware::detect(
            Path::new("/nonexistent/leasehold/data"),
            &HardwareOverrides::default(),
        );
        let hardware = hardware.unwrap_or_else(|error| panic!("detect: {error}"));
        assert!(hardware.cpu_millis >= MILLI_PER_CORE);
        assert!(hardware.memory_mib > 0);
        assert!(hardware.disk.total_bytes >= hardware.disk.available_bytes);
        assert!(hardware.disk.total_bytes > 0);
    }
}
