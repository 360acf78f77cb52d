//! `services`: images, commands, environment, exposed ports and their HTTP options,
//! storage parameters, permissions and registry credentials.

use super::*;

pub(super) fn is_service_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.first().is_some_and(u8::is_ascii_lowercase)
        && bytes
            .last()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

pub(super) const SERVICE_FIELDS: &[&str] = &[
    "image",
    "command",
    "args",
    "env",
    "expose",
    "dependencies",
    "params",
    "credentials",
];

pub(super) fn read_services(
    node: &Node,
    version: Version,
    checker: &mut Checker,
) -> BTreeMap<String, ServiceSpec> {
    let entries = checker.entries(node, "services");
    if entries.is_empty() && checker.errors.is_empty() {
        checker.error(
            &Loc::of(node, "services"),
            "at least one service is required",
        );
    }
    let mut services = BTreeMap::new();
    for entry in entries {
        if !is_service_name(entry.name) {
            checker.error(
                &entry.key_loc,
                format!(
                    "service name `{}` is invalid; use lower-case letters, digits and '-', \
                     starting with a letter (at most 63 characters)",
                    entry.name
                ),
            );
        }
        if let Some(service) = read_service(&entry, version, checker) {
            services.insert(entry.name.to_owned(), service);
        }
    }
    let names: Vec<String> = services.keys().cloned().collect();
    for entry in checker.entries(node, "services") {
        check_dependencies(&entry, &names, checker);
    }
    services
}

pub(super) fn check_dependencies(entry: &Entry<'_>, services: &[String], checker: &mut Checker) {
    let Value::Map(fields) = &entry.node.value else {
        return;
    };
    let Some((_, dependencies)) = fields.iter().find(|(key, _)| key.name == "dependencies") else {
        return;
    };
    let path = join(&entry.path, "dependencies");
    for (item_path, item) in checker.items(dependencies, &path) {
        let Some(fields) = checker.fields(item, &item_path, &["service"]) else {
            continue;
        };
        let Some(service_node) = checker.required(&fields, "service", "a service name") else {
            continue;
        };
        let service_path = fields.path("service");
        if let Some(name) = checker.string(service_node, &service_path)
            && !services.contains(&name)
        {
            checker.error(
                &Loc::of(service_node, &service_path),
                format!(
                    "depends on unknown service `{name}`; declared services: {}",
                    services.join(", ")
                ),
            );
        }
    }
}

pub(super) fn read_service(
    entry: &Entry<'_>,
    version: Version,
    checker: &mut Checker,
) -> Option<ServiceSpec> {
    let fields = checker.fields(entry.node, &entry.path, SERVICE_FIELDS)?;
    let image = checker
        .required(&fields, "image", "a container image such as nginx:1.25")
        .and_then(|node| read_image(node, &fields.path("image"), checker));
    let list = |checker: &mut Checker, name: &str| {
        fields
            .get(name)
            .and_then(|node| checker.string_list(node, &fields.path(name)))
    };
    let command = list(checker, "command");
    let args = list(checker, "args");
    let env = list(checker, "env");
    let expose = fields
        .get("expose")
        .map(|node| {
            checker
                .items(node, &fields.path("expose"))
                .into_iter()
                .filter_map(|(path, item)| read_expose(item, &path, checker))
                .collect()
        })
        .unwrap_or_default();
    let mut storage_params = BTreeMap::new();
    let mut permissions = Vec::new();
    let mut tee = None;
    if let Some(params_node) = fields.get("params") {
        let params_path = fields.path("params");
        if let Some(params) = checker.fields(
            params_node,
            &params_path,
            &["storage", "permissions", "tee"],
        ) {
            if let Some(storage) = params.get("storage") {
                storage_params = read_storage_params(storage, &params.path("storage"), checker);
            }
            if let Some(node) = params.get("permissions") {
                permissions = read_permissions(node, &params.path("permissions"), checker);
            }
            if let Some(node) = params.get("tee") {
                let path = params.path("tee");
                tee = checker
                    .one_of(node, &path, &["cpu", "cpu-gpu"])
                    .map(|kind| {
                        (
                            Tee {
                                kind,
                                attestation: true,
                            },
                            Loc::of(node, &path),
                        )
                    });
            }
        }
    }
    let credentials = fields
        .get("credentials")
        .and_then(|node| read_credentials(node, &fields.path("credentials"), version, checker));
    Some(ServiceSpec {
        image: image?,
        command,
        args,
        env,
        expose,
        has_params: fields.get("params").is_some(),
        storage_params,
        permissions,
        tee,
        credentials,
        loc: fields.loc.clone(),
    })
}

/// An image reference: not blank, and without whitespace or control characters, which
/// no registry accepts and which would otherwise travel raw into engine calls and logs.
pub(super) fn read_image(node: &Node, path: &str, checker: &mut Checker) -> Option<String> {
    let image = checker.non_empty_string(node, path, "image")?;
    if let Some(bad) = image.chars().find(|c| c.is_control() || c.is_whitespace()) {
        checker.error(
            &Loc::of(node, path),
            format!(
                "image {image:?} contains the character {bad:?}; an image reference has no \
                 whitespace or control characters"
            ),
        );
        return None;
    }
    Some(image)
}

pub(super) fn read_permissions(node: &Node, path: &str, checker: &mut Checker) -> Vec<String> {
    let Some(fields) = checker.fields(node, path, &["read"]) else {
        return Vec::new();
    };
    let Some(read) = fields.get("read") else {
        return Vec::new();
    };
    checker
        .items(read, &fields.path("read"))
        .into_iter()
        .filter_map(|(item_path, item)| {
            checker.one_of(item, &item_path, &["deployment", "logs", "events"])
        })
        .collect()
}

pub(super) fn read_storage_params(
    node: &Node,
    path: &str,
    checker: &mut Checker,
) -> BTreeMap<String, StorageParam> {
    let mut params = BTreeMap::new();
    let mut mounts: BTreeMap<String, String> = BTreeMap::new();
    for entry in checker.entries(node, path) {
        let Some(fields) = checker.fields(entry.node, &entry.path, &["mount", "readOnly"]) else {
            continue;
        };
        let mount_path = fields.path("mount");
        let mount = fields
            .get("mount")
            .and_then(|node| checker.string(node, &mount_path))
            .unwrap_or_default();
        if let Some(mount_node) = fields.get("mount") {
            if !mount.starts_with('/') {
                checker.error(
                    &Loc::of(mount_node, &mount_path),
                    format!("mount `{mount}` must be an absolute path (starting with /)"),
                );
            } else if let Some(other) = mounts.insert(mount.clone(), entry.name.to_owned()) {
                checker.error(
                    &Loc::of(mount_node, &mount_path),
                    format!("mount `{mount}` is already used by volume `{other}`"),
                );
            }
        }
        let read_only = fields
            .get("readOnly")
            .and_then(|node| checker.boolean(node, &fields.path("readOnly"), false))
            .unwrap_or(false);
        params.insert(
            entry.name.to_owned(),
            StorageParam {
                mount: StorageMount {
                    name: entry.name.to_owned(),
                    mount,
                    read_only,
                },
                loc: fields.loc.clone(),
            },
        );
    }
    params
}

pub(super) fn read_credentials(
    node: &Node,
    path: &str,
    version: Version,
    checker: &mut Checker,
) -> Option<Credentials> {
    let fields = checker.fields(node, path, &["host", "email", "username", "password"])?;
    let text = |checker: &mut Checker, name: &str, min_chars: usize, required: bool| {
        let field_path = fields.path(name);
        let node = if required {
            checker.required(&fields, name, &format!("at least {min_chars} character(s)"))
        } else {
            fields.get(name)
        }?;
        let value = checker.string(node, &field_path)?;
        let value = value.trim().to_owned();
        if value.chars().count() < min_chars {
            checker.error(
                &Loc::of(node, &field_path),
                format!("credentials {name} must have at least {min_chars} character(s)"),
            );
            return None;
        }
        Some(value)
    };
    let host = text(checker, "host", 1, true);
    let username = text(checker, "username", 1, true);
    let password = text(checker, "password", 6, true);
    let email = text(checker, "email", 5, false).unwrap_or_default();
    Some(Credentials {
        host: host?,
        // Akash's v2.0 builder does not carry the e-mail into the manifest.
        email: if version == Version::V2_0 {
            String::new()
        } else {
            email
        },
        username: username?,
        password: password?,
    })
}

pub(super) const EXPOSE_FIELDS: &[&str] = &["port", "as", "proto", "to", "accept", "http_options"];
pub(super) const HTTP_OPTION_FIELDS: &[&str] = &[
    "max_body_size",
    "read_timeout",
    "send_timeout",
    "next_tries",
    "next_timeout",
    "next_cases",
    "proxy_buffer_size",
];

pub(super) fn read_expose(node: &Node, path: &str, checker: &mut Checker) -> Option<ExposeSpec> {
    let fields = checker.fields(node, path, EXPOSE_FIELDS)?;
    let port = checker
        .required(&fields, "port", "a port number from 1 to 65535")
        .and_then(|node| checker.integer(node, &fields.path("port"), 1, 65_535));
    let external_port = match fields.get("as") {
        Some(node) => checker.integer(node, &fields.path("as"), 1, 65_535),
        None => Some(0),
    };
    let proto = match fields.get("proto") {
        Some(node) => checker
            .one_of(node, &fields.path("proto"), &["TCP", "UDP", "tcp", "udp"])
            .map(|proto| {
                if proto.eq_ignore_ascii_case("udp") {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                }
            }),
        None => Some(Protocol::Tcp),
    };
    let hosts = fields
        .get("accept")
        .and_then(|node| checker.string_list(node, &fields.path("accept")))
        .unwrap_or_default();
    for host in &hosts {
        if host.is_empty() || host.contains(char::is_whitespace) || host.contains('/') {
            checker.error(
                &fields.loc,
                format!("accept host `{host}` is not a valid host name"),
            );
        }
    }
    let http_options = read_http_options(fields.get("http_options"), &fields, checker);
    let to = fields
        .get("to")
        .map(|node| {
            checker
                .items(node, &fields.path("to"))
                .into_iter()
                .filter_map(|(to_path, item)| read_expose_to(item, &to_path, checker))
                .collect()
        })
        .unwrap_or_default();
    Some(ExposeSpec {
        port: u16::try_from(port?).ok()?,
        external_port: u16::try_from(external_port?).ok()?,
        proto: proto?,
        hosts,
        http_options: http_options?,
        to,
    })
}

pub(super) fn read_expose_to(node: &Node, path: &str, checker: &mut Checker) -> Option<ExposeTo> {
    let fields = checker.fields(node, path, &["service", "global", "ip"])?;
    let service = fields
        .get("service")
        .and_then(|node| checker.string(node, &fields.path("service")))
        .unwrap_or_default();
    let global = fields
        .get("global")
        .and_then(|node| checker.boolean(node, &fields.path("global"), false))
        .unwrap_or(false);
    let ip = fields
        .get("ip")
        .and_then(|node| checker.string(node, &fields.path("ip")))
        .unwrap_or_default();
    if fields.get("ip").is_some() && ip.is_empty() {
        checker.error(&fields.loc, "ip must name an endpoint (non-empty)");
    }
    if !ip.is_empty() && !global {
        checker.error(
            &Loc {
                path: fields.path("global"),
                ..fields.loc.clone()
            },
            format!("ip `{ip}` is set, so the exposure must be `global: true`"),
        );
    }
    Some(ExposeTo {
        service,
        global,
        ip,
        loc: fields.loc.clone(),
    })
}

pub(super) fn read_http_options(
    node: Option<&Node>,
    expose: &Fields<'_>,
    checker: &mut Checker,
) -> Option<HttpOptions> {
    let mut options = HttpOptions {
        max_body_size: 1_048_576,
        read_timeout: 60_000,
        send_timeout: 60_000,
        next_tries: 3,
        next_timeout: 0,
        next_cases: vec!["error".to_owned(), "timeout".to_owned()],
    };
    let Some(node) = node else {
        return Some(options);
    };
    let fields = checker.fields(node, &expose.path("http_options"), HTTP_OPTION_FIELDS)?;
    let mut valid = true;
    let mut number = |checker: &mut Checker, name: &str, max: u64, target: &mut u32| {
        if let Some(node) = fields.get(name) {
            match checker
                .integer(node, &fields.path(name), 0, max)
                .and_then(|value| u32::try_from(value).ok())
            {
                // Zero means "use the default", as in Akash.
                Some(0) => {}
                Some(value) => *target = value,
                None => valid = false,
            }
        }
    };
    number(
        checker,
        "max_body_size",
        MAX_BODY_SIZE,
        &mut options.max_body_size,
    );
    number(
        checker,
        "read_timeout",
        MAX_TIMEOUT_MS,
        &mut options.read_timeout,
    );
    number(
        checker,
        "send_timeout",
        MAX_TIMEOUT_MS,
        &mut options.send_timeout,
    );
    number(
        checker,
        "next_tries",
        u64::from(u32::MAX),
        &mut options.next_tries,
    );
    let mut proxy_buffer_size = 0;
    number(
        checker,
        "proxy_buffer_size",
        MAX_PROXY_BUFFER_SIZE,
        &mut proxy_buffer_size,
    );
    if let Some(node) = fields.get("next_timeout") {
        match checker
            .integer(node, &fields.path("next_timeout"), 0, u64::from(u32::MAX))
            .and_then(|value| u32::try_from(value).ok())
        {
            Some(value) => options.next_timeout = value,
            None => valid = false,
        }
    }
    if let Some(node) = fields.get("next_cases") {
        let path = fields.path("next_cases");
        let cases: Vec<String> = checker
            .items(node, &path)
            .into_iter()
            .filter_map(|(item_path, item)| checker.one_of(item, &item_path, NEXT_CASES))
            .collect();
        if cases.len() > 1 && cases.iter().any(|case| case == "off") {
            checker.error(
                &Loc::of(node, &path),
                "next_cases: if `off` is given, no other case may be given",
            );
            valid = false;
        }
        if !cases.is_empty() {
            options.next_cases = cases;
        }
    }
    valid.then_some(options)
}
