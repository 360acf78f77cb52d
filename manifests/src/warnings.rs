//! Warnings: keys Leasehold accepts (because Akash's parser does) but does not act on as
//! Akash would. One table per reason, so a row goes away when the feature lands.

use crate::check::{index, join};
use crate::error::{ManifestWarning, WarningKind};
use crate::yaml::{Node, Value};

/// Keys from other formats seen in real SDL files, and what happens to them here.
const FOREIGN_KEYS: &[(&str, &str)] = &[
    (
        "depends_on",
        "ignored: services start independently and must retry until their dependencies answer \
         (as on Akash)",
    ),
    (
        "volumes",
        "ignored: no volume is mounted; declare storage under \
         profiles.compute.<profile>.resources.storage and mount it with params.storage",
    ),
    (
        "restart",
        "ignored: the provider restarts a crashed replica itself (a bounded number of times)",
    ),
    (
        "ports",
        "ignored: nothing is exposed by it; use expose with port/as/to",
    ),
    (
        "environment",
        "ignored: no variable is set by it; use env with NAME=value items",
    ),
    (
        "container_name",
        "ignored: containers are named by the provider after the lease and service",
    ),
];

/// What Leasehold does with an unknown key (Akash's Go parser ignores it too).
pub(crate) fn unknown_key_instead(key: &str) -> String {
    FOREIGN_KEYS
        .iter()
        .find(|(name, _)| *name == key)
        .map_or_else(
            || "ignored, as Akash's parser ignores it: it has no effect".to_owned(),
            |(_, instead)| (*instead).to_owned(),
        )
}

/// Keys whose Akash meaning Leasehold does not carry out yet, by path pattern (`*` any
/// mapping key, `[]` any sequence item; the last segment is the key warned about), and why.
/// None today: `accept`, `http_options` and leased IPs are carried out since issue #14.
/// The scan stays so that the next such key is never silent.
const NOT_HONOURED: &[(&[&str], &str)] = &[];

/// `pricing.<profile>.denom` values Leasehold reads differently from Akash.
const AKASH_DENOMS: &[&str] = &["uakt", "uact"];

const PRICING_INSTEAD: &str = "Akash reads the amount per block in this denom; Leasehold reads \
     it as base units of the deployment's payment token per replica per hour (override with \
     `tenant deploy --max-price`)";

/// Every not-honoured key and every Akash-denominated price in the tree.
pub(crate) fn scan(tree: &Node) -> Vec<ManifestWarning> {
    let mut warnings = Vec::new();
    for (pattern, instead) in NOT_HONOURED {
        for found in matching(tree, pattern) {
            warnings.push(found.warning(WarningKind::NotHonoured, instead));
        }
    }
    let denom_pattern: &[&str] = &["profiles", "placement", "*", "pricing", "*", "denom"];
    for found in matching(tree, denom_pattern) {
        let denom = found.node.value.scalar_text().unwrap_or_default();
        if AKASH_DENOMS.contains(&denom.as_str()) || denom.starts_with("ibc/") {
            warnings.push(found.warning(
                WarningKind::Pricing,
                &format!("`{denom}`: {PRICING_INSTEAD}"),
            ));
        }
    }
    warnings.sort_by_key(|warning| (warning.line, warning.column));
    warnings
}

/// A key found by [`matching`].
struct Found<'a> {
    key: &'a str,
    path: String,
    line: u64,
    column: u64,
    node: &'a Node,
}

impl Found<'_> {
    fn warning(&self, kind: WarningKind, instead: &str) -> ManifestWarning {
        ManifestWarning {
            kind,
            key: self.key.to_owned(),
            path: self.path.clone(),
            line: self.line,
            column: self.column,
            instead: instead.to_owned(),
        }
    }
}

fn matching<'a>(tree: &'a Node, pattern: &[&str]) -> Vec<Found<'a>> {
    let mut found = Vec::new();
    walk(tree, "", pattern, &mut found);
    found
}

fn walk<'a>(node: &'a Node, path: &str, pattern: &[&str], found: &mut Vec<Found<'a>>) {
    let Some((segment, rest)) = pattern.split_first() else {
        return;
    };
    match (&node.value, *segment) {
        (Value::Seq(items), "[]") => {
            for (position, item) in items.iter().enumerate() {
                walk(item, &index(path, position), rest, found);
            }
        }
        (Value::Map(entries), segment) => {
            for (key, value) in entries {
                if segment != "*" && key.name != segment {
                    continue;
                }
                let key_path = join(path, &key.name);
                if rest.is_empty() {
                    found.push(Found {
                        key: &key.name,
                        path: key_path,
                        line: key.line,
                        column: key.column,
                        node: value,
                    });
                } else {
                    walk(value, &key_path, rest, found);
                }
            }
        }
        _ => {}
    }
}
