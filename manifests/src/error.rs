//! Error types: every problem names the YAML path, the line and column, and what is allowed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One problem found in an SDL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestError {
    /// Dotted YAML path, e.g. `profiles.compute.web.resources.memory.size`
    /// (sequence items as `expose[0]`); empty for document-level problems.
    pub path: String,
    /// 1-based line of the offending node (0 when unknown).
    pub line: u64,
    /// 1-based column of the offending node (0 when unknown).
    pub column: u64,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<document>"
        } else {
            &self.path
        };
        write!(
            f,
            "{path} (line {}, column {}): {}",
            self.line, self.column, self.message
        )
    }
}

/// All problems found in an SDL file (never empty when returned as an error).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(transparent)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    /// The individual errors, in document order.
    pub fn errors(&self) -> &[ManifestError] {
        &self.0
    }
}

impl fmt::Display for ManifestErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error(s) in SDL", self.0.len())?;
        for error in &self.0 {
            write!(f, "\n  {error}")?;
        }
        Ok(())
    }
}

/// A group's resource totals do not fit in 64 bits (or the price total in 128 bits).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group `{group}`: total {resource} overflows")]
pub struct TotalsError {
    /// Group (placement) name.
    pub group: String,
    /// Which total overflowed (`cpu`, `memory`, `storage`, `gpu`, `replicas`, `price`).
    pub resource: &'static str,
}
