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

/// What kind of thing a [`ManifestWarning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    /// A key no SDL version defines; Akash's Go parser ignores it, and so does Leasehold.
    UnknownKey,
    /// A key Akash gives a meaning that Leasehold does not (yet) carry out.
    NotHonoured,
    /// How a price is read differs from Akash's reading.
    Pricing,
}

/// Something the SDL asks for that Leasehold accepts but reads differently from what the
/// author may expect. `parse_strict` turns every warning into an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestWarning {
    /// What the warning is about.
    pub kind: WarningKind,
    /// The key as written (`depends_on`, `signedBy`, `denom`...).
    pub key: String,
    /// Dotted YAML path of the key, as in [`ManifestError::path`].
    pub path: String,
    /// 1-based line of the key (0 when unknown).
    pub line: u64,
    /// 1-based column of the key (0 when unknown).
    pub column: u64,
    /// What Leasehold does instead.
    pub instead: String,
}

impl fmt::Display for ManifestWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            WarningKind::UnknownKey => "unknown key",
            WarningKind::NotHonoured => "not honoured",
            WarningKind::Pricing => "pricing",
        };
        write!(
            f,
            "{} (line {}, column {}): {what} `{}`: {}",
            self.path, self.line, self.column, self.key, self.instead
        )
    }
}

impl From<ManifestWarning> for ManifestError {
    /// The warning as an error, for strict validation.
    fn from(warning: ManifestWarning) -> ManifestError {
        let what = match warning.kind {
            WarningKind::UnknownKey => "unknown field",
            WarningKind::NotHonoured => "field not honoured by Leasehold",
            WarningKind::Pricing => "price read differently from Akash",
        };
        ManifestError {
            path: warning.path,
            line: warning.line,
            column: warning.column,
            message: format!(
                "{what} `{}` (refused in strict mode): {}",
                warning.key, warning.instead
            ),
        }
    }
}
