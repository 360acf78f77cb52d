//! Akash SDL (v2.0 and v2.1) for Leasehold: parse, validate, derive on-chain groups
//! and the off-chain manifest, and hash the manifest canonically.
//!
//! Pure: no IO, no async. Untrusted input is bounded (see [`limits`]).
//!
//! ```
//! let sdl = leasehold_manifests::parse(include_str!("../examples/hello.yaml")).unwrap();
//! let groups = sdl.groups();
//! assert_eq!(groups[0].units[0].resources.cpu_millis, 100);
//! let hash = sdl.manifest().hash();
//! assert_eq!(hash.len(), 32);
//! ```

mod check;
mod derive;
mod error;
mod gpu;
mod model;
mod sdl;
mod units;
mod warnings;
mod yaml;

pub use error::{ManifestError, ManifestErrors, ManifestWarning, TotalsError, WarningKind};
pub use gpu::{
    GpuAliasError, GpuKeyError, GpuModelKey, GpuModelPattern, GpuProductError, PATTERNS_PER_KEY,
    ResolvedModel, WILDCARD, candidate_models, known_models, marketed_gib, resolve_model,
};
pub use model::{
    Attribute, Credentials, DEFAULT_STORAGE_CLASS, Endpoint, EndpointKind, Expose, Gpu, Group,
    HttpOptions, Manifest, ManifestGroup, Price, Protocol, RAM_STORAGE_CLASS, REDACTED,
    Requirements, ResourceUnit, Resources, STORAGE_CLASS_ATTRIBUTE, STORAGE_PERSISTENT_ATTRIBUTE,
    Service, ServiceParams, SignedBy, Storage, StorageMount, Tee, Totals, storage_class_attributes,
};
pub use sdl::{ACCEPTED_DENOMS, Version};
pub use units::{
    AMOUNT_DECIMALS, Amount, AmountError, BYTE_SUFFIXES, QuantityError, parse_binary_bytes,
    parse_bytes, parse_cpu_millis,
};

/// Limits applied to untrusted input and to derived resources (Akash's network limits).
pub mod limits {
    pub use crate::sdl::{
        MAX_GROUP_UNITS, MAX_GROUPS, MAX_UNIT_COUNT, MAX_UNIT_CPU_MILLIS, MAX_UNIT_GPU,
        MAX_UNIT_MEMORY_BYTES, MAX_UNIT_STORAGE_BYTES, MIN_UNIT_CPU_MILLIS, MIN_UNIT_MEMORY_BYTES,
        MIN_UNIT_STORAGE_BYTES,
    };
    pub use crate::yaml::{MAX_ALIAS_REPLAYED_EVENTS, MAX_DEPTH, MAX_INPUT_BYTES, MAX_NODES};
}

/// A parsed and fully validated SDL with its derived groups and manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sdl {
    version: Version,
    groups: Vec<Group>,
    manifest: Manifest,
    reclamation_min_window_secs: Option<u64>,
    warnings: Vec<ManifestWarning>,
}

impl Sdl {
    /// SDL version of the file.
    pub fn version(&self) -> Version {
        self.version
    }

    /// One group per placement, sorted by name: each becomes one on-chain order.
    pub fn groups(&self) -> Vec<Group> {
        self.groups.clone()
    }

    /// The off-chain manifest (services per group).
    pub fn manifest(&self) -> Manifest {
        self.manifest.clone()
    }

    /// What the file asks for that Leasehold accepts but does not do as Akash would, in
    /// document order (empty for a file read with [`parse_strict`]).
    pub fn warnings(&self) -> &[ManifestWarning] {
        &self.warnings
    }

    /// `reclamation.min_window` in seconds, if the file sets one.
    pub fn reclamation_min_window_secs(&self) -> Option<u64> {
        self.reclamation_min_window_secs
    }
}

/// Parses and fully validates an SDL file, then derives its groups and manifest.
///
/// Accepts what Akash's parser accepts: keys it ignores are accepted with a warning
/// ([`Sdl::warnings`]). On failure returns every problem found, each with YAML path, line
/// and column.
pub fn parse(yaml: &str) -> Result<Sdl, ManifestErrors> {
    parse_with(yaml, false)
}

/// As [`parse`], but every warning is an error (`tenant validate --strict`).
pub fn parse_strict(yaml: &str) -> Result<Sdl, ManifestErrors> {
    parse_with(yaml, true)
}

fn parse_with(yaml: &str, strict: bool) -> Result<Sdl, ManifestErrors> {
    let tree = yaml::read(yaml).map_err(|error| ManifestErrors(vec![error]))?;
    let mut checker = check::Checker::default();
    let document = sdl::read_document(&tree, &mut checker);
    let derived = document
        .as_ref()
        .map(|document| derive::derive(document, &mut checker));
    let mut warnings = std::mem::take(&mut checker.warnings);
    warnings.extend(warnings::scan(&tree));
    warnings.sort_by_key(|warning| (warning.line, warning.column));
    warnings.dedup();
    if strict {
        checker
            .errors
            .extend(warnings.drain(..).map(ManifestError::from));
        checker
            .errors
            .sort_by_key(|error| (error.line == 0, error.line, error.column));
    }
    match (document, derived) {
        (Some(document), Some((groups, manifest))) if checker.errors.is_empty() => Ok(Sdl {
            version: document.version,
            groups,
            manifest,
            reclamation_min_window_secs: document.reclamation_min_window_secs,
            warnings,
        }),
        _ => {
            if checker.errors.is_empty() {
                checker.errors.push(ManifestError {
                    path: String::new(),
                    line: tree.line,
                    column: tree.column,
                    message: "the SDL could not be read".to_owned(),
                });
            }
            Err(ManifestErrors(checker.errors))
        }
    }
}
