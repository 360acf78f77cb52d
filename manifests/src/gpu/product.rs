//! The one rule from a GPU product name as the driver reports it (`nvidia-smi`, NVML) or GPU
//! feature discovery labels a Kubernetes node with (the same name with `-` for spaces) to a
//! [`GpuModelKey`].

use super::{GIB, GpuKeyError, GpuModelKey};

/// Why a product name does not give a model key; the node or device is then not offered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GpuProductError {
    /// No model word in the name (`NVIDIA`, ``).
    #[error("GPU product `{0}` names no model")]
    NoModel(String),
    /// Neither the name (`80GB`) nor the reported memory gives the RAM size.
    #[error("GPU product `{0}` states no memory size and none was reported")]
    NoMemory(String),
    /// A MIG slice or a time-shared GPU, not one whole device.
    #[error("GPU product `{0}` is a {1}, not a whole GPU")]
    NotWholeGpu(String, &'static str),
    /// The words read from the name do not form a valid key.
    #[error("GPU product `{product}`: {source}")]
    Key {
        product: String,
        #[source]
        source: GpuKeyError,
    },
}

/// Marketing words that are not part of the model name.
const NAME_NOISE: [&str; 4] = ["nvidia", "geforce", "tesla", "quadro"];
/// Series prefixes that form one model word with the token after them (`rtx 4090` -> `rtx4090`).
const SERIES_PREFIXES: [&str; 3] = ["rtx", "gtx", "titan"];
/// Data-centre parts sold only as SXM modules unless their name says otherwise.
const SXM_ONLY_MODELS: [&str; 3] = ["h200", "b200", "b100"];

/// Memory sizes GPUs are sold with, in GiB.
const MARKETED_GIB: [u64; 24] = [
    2, 3, 4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 128, 141, 180, 192, 256, 288,
];

/// The marketed size for the memory a driver reports. Drivers report less than the label (ECC
/// and reserved memory: a 16 GB T4 shows 15360 MiB, a 48 GB L40S 46068 MiB), so this takes the
/// smallest marketed size at most 10% above the reported amount, else the nearest whole GiB.
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

/// The sizes [`marketed_gib`] rounds to (the tenant's candidate RAM sizes).
pub(super) fn marketed_sizes() -> &'static [u64] {
    &MARKETED_GIB
}

/// `80gb` -> 80
fn gigabytes(token: &str) -> Option<u64> {
    token.strip_suffix("gb")?.parse().ok()
}

impl GpuModelKey {
    /// The key of an NVIDIA product name: `NVIDIA A100-SXM4-80GB` (nvidia-smi) and
    /// `NVIDIA-A100-SXM4-80GB` (the node label) both give `nvidia/a100/80Gi/sxm`.
    ///
    /// The model is the first word that is not a marketing word, interface or size, joined
    /// with the next for series prefixes (`RTX 4090` is `rtx4090`). The RAM comes from the name
    /// when it states one (`80GB`), else from `memory_mib` (what the driver reports, or GPU
    /// feature discovery's `nvidia.com/gpu.memory`) rounded to the marketed size. The
    /// interface is `sxm` when the name says SXM or HBM (the H100 SXM5 module calls itself
    /// `H100 80GB HBM3`) or for SXM-only parts, else `pcie`.
    pub fn from_product(
        product: &str,
        memory_mib: Option<u64>,
    ) -> Result<GpuModelKey, GpuProductError> {
        let lowered = product.to_ascii_lowercase();
        let tokens: Vec<&str> = lowered
            .split([' ', '-', '_'])
            .filter(|token| !token.is_empty() && !NAME_NOISE.contains(token))
            .collect();
        if tokens.contains(&"mig") {
            return Err(GpuProductError::NotWholeGpu(
                product.to_owned(),
                "MIG slice",
            ));
        }
        if tokens.contains(&"shared") {
            return Err(GpuProductError::NotWholeGpu(
                product.to_owned(),
                "time-shared GPU",
            ));
        }
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
            return Err(GpuProductError::NoModel(product.to_owned()));
        }

        let ram_gib = match tokens.iter().find_map(|token| gigabytes(token)) {
            Some(named) => named,
            None => match memory_mib.filter(|mib| *mib > 0).map(marketed_gib) {
                Some(reported) if reported > 0 => reported,
                _ => return Err(GpuProductError::NoMemory(product.to_owned())),
            },
        };

        let says_sxm = tokens.iter().any(|token| token.starts_with("sxm"));
        let says_pcie = tokens
            .iter()
            .any(|token| *token == "pcie" || *token == "nvl");
        let hbm_module = tokens.iter().any(|token| token.starts_with("hbm")) && !says_pcie;
        let interface = if says_sxm
            || hbm_module
            || (!says_pcie && SXM_ONLY_MODELS.contains(&model.as_str()))
        {
            "sxm"
        } else {
            "pcie"
        };
        let ram_bytes = ram_gib
            .checked_mul(GIB)
            .ok_or_else(|| GpuProductError::NoMemory(product.to_owned()))?;
        GpuModelKey::from_parts("nvidia", &model, ram_bytes, interface).map_err(|source| {
            GpuProductError::Key {
                product: product.to_owned(),
                source,
            }
        })
    }
}
