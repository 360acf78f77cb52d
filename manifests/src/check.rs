//! Helpers to read the YAML tree while collecting every error with its path and location.

use crate::error::{ManifestError, ManifestWarning, WarningKind};
use crate::yaml::{Key, Node, Value};

/// Where something is: a YAML path and the line/column it starts at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Loc {
    pub path: String,
    pub line: u64,
    pub column: u64,
}

impl Loc {
    pub fn of(node: &Node, path: &str) -> Loc {
        Loc {
            path: path.to_owned(),
            line: node.line,
            column: node.column,
        }
    }

    fn of_key(key: &Key, path: &str) -> Loc {
        Loc {
            path: path.to_owned(),
            line: key.line,
            column: key.column,
        }
    }
}

/// `parent.child`, or `child` at the top.
pub(crate) fn join(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else {
        format!("{parent}.{child}")
    }
}

/// `parent[index]`.
pub(crate) fn index(parent: &str, position: usize) -> String {
    format!("{parent}[{position}]")
}

/// The fields of a mapping that has a fixed set of allowed keys.
pub(crate) struct Fields<'a> {
    pub loc: Loc,
    entries: &'a [(Key, Node)],
}

impl<'a> Fields<'a> {
    pub fn get(&self, name: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(key, _)| key.name == name)
            .map(|(_, node)| node)
    }

    /// Path of field `name`.
    pub fn path(&self, name: &str) -> String {
        join(&self.loc.path, name)
    }
}

/// An entry of a mapping keyed by user-chosen names (services, profiles...).
pub(crate) struct Entry<'a> {
    pub name: &'a str,
    pub node: &'a Node,
    /// Path of the entry (`parent.name`).
    pub path: String,
    /// Location of the key.
    pub key_loc: Loc,
}

/// Collects errors and warnings while reading the tree.
#[derive(Default)]
pub(crate) struct Checker {
    pub errors: Vec<ManifestError>,
    pub warnings: Vec<ManifestWarning>,
}

impl Checker {
    pub fn error(&mut self, loc: &Loc, message: impl Into<String>) {
        self.errors.push(ManifestError {
            path: loc.path.clone(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, node: &Node, path: &str, expected: &str) {
        self.error(
            &Loc::of(node, path),
            format!("expected {expected}, found {}", node.value.kind()),
        );
    }

    /// A mapping whose keys are among `allowed`. Unknown keys are warnings, not errors:
    /// Akash's Go parser ignores them, so files written for Akash carry them.
    /// `null` reads as an empty mapping.
    pub fn fields<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        allowed: &[&str],
    ) -> Option<Fields<'a>> {
        let entries: &'a [(Key, Node)] = match &node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => {
                self.wrong_type(node, path, "a mapping");
                return None;
            }
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                self.warnings.push(ManifestWarning {
                    kind: WarningKind::UnknownKey,
                    key: key.name.clone(),
                    path: join(path, &key.name),
                    line: key.line,
                    column: key.column,
                    instead: format!(
                        "{}; fields read here: {}",
                        crate::warnings::unknown_key_instead(&key.name),
                        allowed.join(", ")
                    ),
                });
            }
        }
        Some(Fields {
            loc: Loc::of(node, path),
            entries,
        })
    }

    /// A mapping keyed by names; `null` reads as empty.
    pub fn entries<'a>(&mut self, node: &'a Node, path: &str) -> Vec<Entry<'a>> {
        match &node.value {
            Value::Map(entries) => entries
                .iter()
                .map(|(key, value)| {
                    let entry_path = join(path, &key.name);
                    Entry {
                        name: &key.name,
                        node: value,
                        key_loc: Loc::of_key(key, &entry_path),
                        path: entry_path,
                    }
                })
                .collect(),
            Value::Null => Vec::new(),
            _ => {
                self.wrong_type(node, path, "a mapping");
                Vec::new()
            }
        }
    }

    /// Items of a sequence; `null` reads as empty.
    pub fn items<'a>(&mut self, node: &'a Node, path: &str) -> Vec<(String, &'a Node)> {
        match &node.value {
            Value::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(position, item)| (index(path, position), item))
                .collect(),
            Value::Null => Vec::new(),
            _ => {
                self.wrong_type(node, path, "a sequence");
                Vec::new()
            }
        }
    }

    /// Field `name`, reporting it when missing.
    pub fn required<'a>(
        &mut self,
        fields: &Fields<'a>,
        name: &str,
        what: &str,
    ) -> Option<&'a Node> {
        let found = fields.get(name);
        if found.is_none() {
            self.error(
                &Loc {
                    path: fields.path(name),
                    ..fields.loc.clone()
                },
                format!("required field `{name}` is missing; expected {what}"),
            );
        }
        found
    }

    /// A scalar read as text (numbers and booleans as written).
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let text = node.value.scalar_text();
        if text.is_none() {
            self.wrong_type(node, path, "a string");
        }
        text
    }

    /// A scalar string that must not be blank.
    pub fn non_empty_string(&mut self, node: &Node, path: &str, what: &str) -> Option<String> {
        let text = self.string(node, path)?;
        if text.trim().is_empty() {
            self.error(&Loc::of(node, path), format!("{what} must not be empty"));
            return None;
        }
        Some(text)
    }

    /// An integer in `min..=max`.
    pub fn integer(&mut self, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        let found = match &node.value {
            Value::Int(number) => *number,
            Value::Str(text) => match text.trim().parse::<i128>() {
                Ok(number) => number,
                Err(_) => {
                    self.error(
                        &Loc::of(node, path),
                        format!("must be an integer from {min} to {max}, found `{text}`"),
                    );
                    return None;
                }
            },
            _ => {
                self.wrong_type(node, path, &format!("an integer from {min} to {max}"));
                return None;
            }
        };
        match u64::try_from(found) {
            Ok(number) if (min..=max).contains(&number) => Some(number),
            _ => {
                self.error(
                    &Loc::of(node, path),
                    format!("{found} is out of range; allowed: {min} to {max}"),
                );
                None
            }
        }
    }

    /// A boolean; `strings` also accepts the text `true`/`false` (Akash storage attributes).
    pub fn boolean(&mut self, node: &Node, path: &str, strings: bool) -> Option<bool> {
        match &node.value {
            Value::Bool(flag) => Some(*flag),
            Value::Str(text) if strings && (text == "true" || text == "false") => {
                Some(text == "true")
            }
            _ => {
                self.wrong_type(node, path, "true or false");
                None
            }
        }
    }

    /// A list of strings; `null` reads as `None`.
    pub fn string_list(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        if node.value == Value::Null {
            return None;
        }
        let items = self.items(node, path);
        Some(
            items
                .into_iter()
                .filter_map(|(item_path, item)| self.string(item, &item_path))
                .collect(),
        )
    }

    /// A string that must be one of `allowed`.
    pub fn one_of(&mut self, node: &Node, path: &str, allowed: &[&str]) -> Option<String> {
        let text = self.string(node, path)?;
        if allowed.contains(&text.as_str()) {
            Some(text)
        } else {
            self.error(
                &Loc::of(node, path),
                format!("`{text}` is not allowed; allowed: {}", allowed.join(", ")),
            );
            None
        }
    }
}
