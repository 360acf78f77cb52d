//! `deployment` (service -> placement -> profile and count) and `endpoints`.

use super::*;

pub(super) fn read_deployments(
    node: &Node,
    checker: &mut Checker,
) -> BTreeMap<String, BTreeMap<String, DeploymentSpec>> {
    let mut deployments = BTreeMap::new();
    let services = checker.entries(node, "deployment");
    if services.is_empty() {
        checker.error(
            &Loc::of(node, "deployment"),
            "at least one service must be deployed",
        );
    }
    for service in services {
        let mut placements = BTreeMap::new();
        for placement in checker.entries(service.node, &service.path) {
            let Some(fields) =
                checker.fields(placement.node, &placement.path, &["profile", "count"])
            else {
                continue;
            };
            let profile = checker
                .required(&fields, "profile", "a compute profile name")
                .and_then(|node| {
                    checker.non_empty_string(node, &fields.path("profile"), "profile")
                });
            let count = checker
                .required(&fields, "count", "a replica count")
                .and_then(|node| checker.integer(node, &fields.path("count"), 1, MAX_UNIT_COUNT))
                .and_then(|count| u32::try_from(count).ok());
            if let (Some(profile), Some(count)) = (profile, count) {
                placements.insert(
                    placement.name.to_owned(),
                    DeploymentSpec {
                        profile,
                        count,
                        loc: fields.loc.clone(),
                    },
                );
            }
        }
        deployments.insert(service.name.to_owned(), placements);
    }
    deployments
}

pub(super) fn is_endpoint_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let leading = bytes.iter().take_while(|b| b.is_ascii_lowercase()).count();
    leading >= 1
        && bytes.len() >= 2
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

pub(super) fn read_endpoints(node: &Node, checker: &mut Checker) -> BTreeMap<String, Loc> {
    let mut endpoints = BTreeMap::new();
    for entry in checker.entries(node, "endpoints") {
        if !is_endpoint_name(entry.name) {
            checker.error(
                &entry.key_loc,
                format!(
                    "endpoint name `{}` is invalid; use lower-case letters first, then \
                     lower-case letters, digits, '-' or '_' (at least 2 characters)",
                    entry.name
                ),
            );
        }
        if let Some(fields) = checker.fields(entry.node, &entry.path, &["kind"]) {
            checker
                .required(&fields, "kind", "`ip`")
                .and_then(|kind| checker.one_of(kind, &fields.path("kind"), &["ip"]));
        }
        endpoints.insert(entry.name.to_owned(), entry.key_loc.clone());
    }
    endpoints
}
