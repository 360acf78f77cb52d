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

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
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
    pub model_key: String,
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
        let mut gpu = gpu_from_name(index, &name, vram_mib);
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
        let mut gpu = gpu_from_name(index, name, vram_mib);
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

fn gpu_from_name(index: u32, name: &str, vram_mib: u64) -> GpuDevice {
    let identity = nvidia_identity(name, vram_mib);
    GpuDevice {
        index,
        name: name.to_string(),
        model_key: format!(
            "nvidia/{}/{}/{}",
            identity.model, identity.ram, identity.interface
        ),
        vram_mib,
        interface: identity.interface.to_string(),
        pci_bus_id: None,
        uuid: None,
    }
}

/// The parts of a canonical key that a driver-reported name yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuIdentity {
    pub model: String,
    /// e.g. `80Gi`
    pub ram: String,
    /// `sxm` or `pcie`
    pub interface: &'static str,
}

/// Marketing words that are not part of the model name.
const NAME_NOISE: [&str; 4] = ["nvidia", "geforce", "tesla", "quadro"];
/// Series prefixes that form one model word with the token after them (`rtx 4090` -> `rtx4090`).
const SERIES_PREFIXES: [&str; 3] = ["rtx", "gtx", "titan"];
/// Data-centre parts sold only as SXM modules unless their name says otherwise.
const SXM_ONLY_MODELS: [&str; 3] = ["h200", "b200", "b100"];

/// Maps a name like `NVIDIA A100-SXM4-80GB` to `a100`, `80Gi`, `sxm`.
/// The memory size comes from the name when it states one (`80GB`), else from
/// the reported memory rounded to whole GiB (the driver reports a bit less than
/// the marketed size, e.g. 81559 MiB for an 80 GB H100).
pub fn nvidia_identity(name: &str, vram_mib: u64) -> GpuIdentity {
    let lowered = name.to_ascii_lowercase();
    let tokens: Vec<&str> = lowered
        .split([' ', '-', '_'])
        .filter(|token| !token.is_empty() && !NAME_NOISE.contains(token))
        .collect();
    let is_interface = |token: &str| token.starts_with("sxm") || token == "pcie";
    let is_memory = |token: &str| gigabytes(token).is_some();

    let mut model = String::new();
    let mut words = tokens.iter().copied();
    while let Some(token) = words.next() {
        if is_interface(token) || is_memory(token) {
            continue;
        }
        model.push_str(token);
        if SERIES_PREFIXES.contains(&token)
            && let Some(next) = words.next()
        {
            model.push_str(next);
        }
        break;
    }
    if model.is_empty() {
        model.push_str("unknown");
    }

    let ram_gib = tokens
        .iter()
        .find_map(|token| gigabytes(token))
        .unwrap_or_else(|| marketed_gib(vram_mib));

    let says_sxm = tokens.iter().any(|token| token.starts_with("sxm"));
    let says_pcie = tokens
        .iter()
        .any(|token| *token == "pcie" || *token == "nvl");
    // The H100's SXM5 module reports itself as `H100 80GB HBM3`; the PCIe card says `PCIe`.
    let hbm_module = tokens.iter().any(|token| token.starts_with("hbm")) && !says_pcie;
    let interface =
        if says_sxm || hbm_module || (!says_pcie && SXM_ONLY_MODELS.contains(&model.as_str())) {
            "sxm"
        } else {
            "pcie"
        };
    GpuIdentity {
        model,
        ram: format!("{ram_gib}Gi"),
        interface,
    }
}

/// Memory sizes GPUs are sold with, in GiB.
const MARKETED_GIB: [u64; 24] = [
    2, 3, 4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 128, 141, 180, 192, 256, 288,
];

/// The marketed size for the memory a driver reports. Drivers report less than
/// the label (ECC and reserved memory: a 16 GB T4 shows 15360 MiB, a 48 GB L40S
/// 46068 MiB), so this takes the smallest marketed size at most 10% above the
/// reported amount, else the nearest whole GiB.
pub fn marketed_gib(vram_mib: u64) -> u64 {
    MARKETED_GIB
        .iter()
        .copied()
        .find(|&gib| {
            let marketed_mib = gib.saturating_mul(1024);
            marketed_mib
                .checked_sub(vram_mib)
                .is_some_and(|gap| gap.saturating_mul(10) <= marketed_mib)
        })
        .unwrap_or_else(|| vram_mib.saturating_add(512) / 1024)
}

/// `80gb` -> 80
fn gigabytes(token: &str) -> Option<u64> {
    token.strip_suffix("gb")?.parse().ok()
}

/// Expands declared GPU groups into devices numbered from 0.
pub fn declared_devices(declared: &[DeclaredGpu]) -> Result<Vec<GpuDevice>, HardwareError> {
    let mut devices = Vec::new();
    let mut index: u32 = 0;
    for group in declared {
        let parts: Vec<&str> = group.model.split('/').collect();
        let invalid = |reason: &str| HardwareError::DeclaredGpu {
            model: group.model.clone(),
            reason: reason.to_string(),
        };
        let (vendor, model) = match parts.as_slice() {
            [vendor, model, ..] if !vendor.is_empty() && !model.is_empty() => (*vendor, *model),
            _ => return Err(invalid("expected vendor/model[/ram[/interface]]")),
        };
        let ram = parts
            .get(2)
            .map(|ram| ram.to_string())
            .unwrap_or_else(|| format!("{}Gi", marketed_gib(group.vram_mib)));
        let interface = group
            .interface
            .clone()
            .or_else(|| parts.get(3).map(|part| part.to_string()))
            .unwrap_or_else(|| "pcie".to_string());
        for _ in 0..group.count {
            devices.push(GpuDevice {
                index,
                name: group.model.clone(),
                model_key: format!("{vendor}/{model}/{ram}/{interface}"),
                vram_mib: group.vram_mib,
                interface: interface.clone(),
                pci_bus_id: None,
                uuid: None,
            });
            index = index
                .checked_add(1)
                .ok_or_else(|| invalid("too many declared GPUs"))?;
        }
    }
    Ok(devices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_canonical_keys() {
        let cases = [
            ("NVIDIA A100-SXM4-80GB", 81920, "a100", "80Gi", "sxm"),
            ("NVIDIA A100-PCIE-40GB", 40960, "a100", "40Gi", "pcie"),
            ("NVIDIA A100 80GB PCIe", 81920, "a100", "80Gi", "pcie"),
            ("NVIDIA H100 80GB HBM3", 81559, "h100", "80Gi", "sxm"),
            ("NVIDIA H100 PCIe", 81559, "h100", "80Gi", "pcie"),
            ("NVIDIA H100 NVL", 95830, "h100", "94Gi", "pcie"),
            ("NVIDIA GeForce RTX 4090", 24564, "rtx4090", "24Gi", "pcie"),
            ("NVIDIA RTX A6000", 49140, "rtxa6000", "48Gi", "pcie"),
            ("Tesla T4", 15360, "t4", "16Gi", "pcie"),
            ("NVIDIA L40S", 46068, "l40s", "48Gi", "pcie"),
            ("NVIDIA A10", 23028, "a10", "24Gi", "pcie"),
            ("NVIDIA H200", 143771, "h200", "141Gi", "sxm"),
            ("NVIDIA GeForce RTX 4080", 16376, "rtx4080", "16Gi", "pcie"),
        ];
        for (name, mib, model, ram, interface) in cases {
            let identity = nvidia_identity(name, mib);
            assert_eq!(
                (
                    identity.model.as_str(),
                    identity.ram.as_str(),
                    identity.interface
                ),
                (model, ram, interface),
                "{name}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_name_or_output_is_handled_without_panicking(name in ".{0,40}", mib in proptest::num::u64::ANY, csv in ".{0,200}") {
            let identity = nvidia_identity(&name, mib);
            proptest::prop_assert!(!identity.model.is_empty());
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
        let keys: Vec<(u32, &str)> = devices
            .iter()
            .map(|gpu| (gpu.index, gpu.model_key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (0, "nvidia/a100/80Gi/sxm"),
                (1, "nvidia/a100/80Gi/sxm"),
                (2, "nvidia/t4/16Gi/pcie")
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
