//! `profiles.compute`: CPU, memory, storage volumes and GPUs per replica.

use super::*;

pub(super) fn read_profiles(
    node: &Node,
    checker: &mut Checker,
) -> (
    BTreeMap<String, ComputeSpec>,
    BTreeMap<String, PlacementSpec>,
) {
    let Some(fields) = checker.fields(node, "profiles", &["compute", "placement"]) else {
        return Default::default();
    };
    let mut compute = BTreeMap::new();
    if let Some(node) = checker.required(&fields, "compute", "a mapping of compute profiles") {
        for entry in checker.entries(node, "profiles.compute") {
            if let Some(profile) = read_compute(&entry, checker) {
                compute.insert(entry.name.to_owned(), profile);
            }
        }
    }
    let mut placements = BTreeMap::new();
    if let Some(node) = checker.required(&fields, "placement", "a mapping of placement profiles") {
        for entry in checker.entries(node, "profiles.placement") {
            if let Some(placement) = read_placement(&entry, checker) {
                placements.insert(entry.name.to_owned(), placement);
            }
        }
    }
    (compute, placements)
}

pub(super) fn read_compute(entry: &Entry<'_>, checker: &mut Checker) -> Option<ComputeSpec> {
    let profile = checker.fields(entry.node, &entry.path, &["resources"])?;
    let resources_node = checker.required(&profile, "resources", "cpu, memory and storage")?;
    let resources = checker.fields(
        resources_node,
        &profile.path("resources"),
        &["cpu", "memory", "storage", "gpu"],
    )?;
    let cpu = checker
        .required(&resources, "cpu", "a mapping with `units`")
        .and_then(|node| read_cpu(node, &resources.path("cpu"), checker));
    let memory = checker
        .required(&resources, "memory", "a mapping with `size`")
        .and_then(|node| read_memory(node, &resources.path("memory"), checker));
    let storage = checker
        .required(
            &resources,
            "storage",
            "a volume or a list of volumes with `size`",
        )
        .and_then(|node| read_storage(node, &resources.path("storage"), checker));
    let gpu = match resources.get("gpu") {
        Some(node) => read_gpu(node, &resources.path("gpu"), checker),
        None => Some(Gpu::default()),
    };
    Some(ComputeSpec {
        cpu_millis: cpu?,
        memory_bytes: memory?,
        storage: storage?,
        gpu: gpu?,
    })
}

pub(super) fn check_range(
    checker: &mut Checker,
    loc: &Loc,
    value: u64,
    (min, max): (u64, u64),
    what: &str,
    show: fn(u64) -> String,
) -> Option<u64> {
    if (min..=max).contains(&value) {
        Some(value)
    } else {
        checker.error(
            loc,
            format!(
                "{what} {} is out of range; allowed: {} to {}",
                show(value),
                show(min),
                show(max)
            ),
        );
        None
    }
}

pub(super) fn show_millis(millis: u64) -> String {
    format!("{millis}m")
}

pub(super) fn show_bytes(bytes: u64) -> String {
    const UNITS: &[(&str, u64)] = &[
        ("Ti", 1 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ];
    UNITS
        .iter()
        .find(|(_, unit)| bytes >= *unit && bytes.is_multiple_of(*unit))
        .map_or_else(
            || format!("{bytes} bytes"),
            |(suffix, unit)| format!("{}{suffix}", bytes / unit),
        )
}

pub(super) fn read_cpu(node: &Node, path: &str, checker: &mut Checker) -> Option<u64> {
    let fields = checker.fields(node, path, &["units", "attributes"])?;
    if let Some(attributes) = fields.get("attributes") {
        let attributes_path = fields.path("attributes");
        if let Some(arch) = checker.fields(attributes, &attributes_path, &["arch"])
            && let Some(node) = arch.get("arch")
        {
            checker.string(node, &arch.path("arch"));
        }
    }
    let units_node = checker.required(&fields, "units", "cores (0.5) or millicores (\"500m\")")?;
    let units_path = fields.path("units");
    let loc = Loc::of(units_node, &units_path);
    let text = checker.string(units_node, &units_path)?;
    match parse_cpu_millis(&text) {
        Ok(millis) => check_range(
            checker,
            &loc,
            millis,
            (MIN_UNIT_CPU_MILLIS, MAX_UNIT_CPU_MILLIS),
            "cpu units",
            show_millis,
        ),
        Err(error) => {
            checker.error(
                &loc,
                format!(
                    "cpu units `{text}` {error}; expected cores (e.g. 0.5, 2) or millicores \
                     (e.g. 500m) from {MIN_UNIT_CPU_MILLIS}m to {MAX_UNIT_CPU_MILLIS}m"
                ),
            );
            None
        }
    }
}

/// A size field: `size` text parsed to bytes and checked against `range`.
pub(super) fn read_size(
    node: &Node,
    path: &str,
    what: &str,
    range: (u64, u64),
    checker: &mut Checker,
) -> Option<u64> {
    read_quantity(node, path, what, range, SizeUnits::Any, checker)
}

/// Which byte suffixes a size field takes.
#[derive(Clone, Copy)]
pub(super) enum SizeUnits {
    /// Memory and storage: binary and decimal, as either Akash parser reads them.
    Any,
    /// GPU RAM: Akash's Go parser reads it as a `memoryQuantity` (binary suffixes only).
    Binary,
}

pub(super) fn read_quantity(
    node: &Node,
    path: &str,
    what: &str,
    range: (u64, u64),
    units: SizeUnits,
    checker: &mut Checker,
) -> Option<u64> {
    let loc = Loc::of(node, path);
    let text = checker.string(node, path)?;
    let (parsed, expected) = match units {
        SizeUnits::Any => (
            parse_bytes(&text),
            "(Ki, Mi, Gi, Ti, Pi, Ei as powers of 1024; k, M, G, T, P, E or kB, MB, GB... as \
             powers of 1000; any case), e.g. 512Mi",
        ),
        SizeUnits::Binary => (
            parse_binary_bytes(&text),
            "(Ki, Mi, Gi, Ti, Pi, Ei: powers of 1024, as Akash reads GPU RAM), e.g. 80Gi",
        ),
    };
    match parsed {
        Ok(bytes) => check_range(checker, &loc, bytes, range, what, show_bytes),
        Err(error) => {
            checker.error(
                &loc,
                format!(
                    "{what} `{text}` {error}; expected a number with an optional suffix {expected}"
                ),
            );
            None
        }
    }
}

pub(super) fn read_memory(node: &Node, path: &str, checker: &mut Checker) -> Option<u64> {
    let fields = checker.fields(node, path, &["size"])?;
    let size = checker.required(&fields, "size", "a size such as 512Mi")?;
    read_size(
        size,
        &fields.path("size"),
        "memory size",
        (MIN_UNIT_MEMORY_BYTES, MAX_UNIT_MEMORY_BYTES),
        checker,
    )
}

pub(super) fn read_storage(node: &Node, path: &str, checker: &mut Checker) -> Option<Vec<Storage>> {
    let volumes: Vec<(String, &Node, bool)> = match &node.value {
        Value::Seq(_) => checker
            .items(node, path)
            .into_iter()
            .map(|(item_path, item)| (item_path, item, true))
            .collect(),
        _ => vec![(path.to_owned(), node, false)],
    };
    let mut storage = Vec::new();
    let mut valid = true;
    for (volume_path, volume, in_list) in volumes {
        match read_volume(volume, &volume_path, in_list, checker) {
            Some(volume) => {
                if storage
                    .iter()
                    .any(|other: &Storage| other.name == volume.name)
                {
                    checker.error(
                        &Loc::of(node, &volume_path),
                        format!("duplicate storage volume name `{}`", volume.name),
                    );
                    valid = false;
                }
                storage.push(volume);
            }
            None => valid = false,
        }
    }
    // Akash's order: smaller first; then volumes without attributes; then by the
    // `persistent` value; then by name.
    storage.sort_by(|left, right| {
        left.bytes
            .cmp(&right.bytes)
            .then_with(|| (!left.attributes.is_empty()).cmp(&!right.attributes.is_empty()))
            .then_with(|| left.persistent.cmp(&right.persistent))
            .then_with(|| left.name.cmp(&right.name))
    });
    valid.then_some(storage)
}

pub(super) fn read_volume(
    node: &Node,
    path: &str,
    in_list: bool,
    checker: &mut Checker,
) -> Option<Storage> {
    let allowed: &[&str] = if in_list {
        &["name", "size", "attributes"]
    } else {
        &["size", "attributes", "name"]
    };
    let fields = checker.fields(node, path, allowed)?;
    let name = match fields.get("name").filter(|_| in_list) {
        Some(node) => checker.non_empty_string(node, &fields.path("name"), "volume name")?,
        None => "default".to_owned(),
    };
    let bytes = checker
        .required(&fields, "size", "a size such as 1Gi")
        .and_then(|size| {
            read_size(
                size,
                &fields.path("size"),
                "storage size",
                (MIN_UNIT_STORAGE_BYTES, MAX_UNIT_STORAGE_BYTES),
                checker,
            )
        });
    let mut volume = Storage {
        name,
        bytes: 0,
        class: None,
        persistent: false,
        attributes: Vec::new(),
    };
    if let Some(attributes) = fields.get("attributes") {
        read_volume_attributes(attributes, &fields.path("attributes"), &mut volume, checker)?;
    }
    volume.bytes = bytes?;
    Some(volume)
}

pub(super) fn read_volume_attributes(
    node: &Node,
    path: &str,
    volume: &mut Storage,
    checker: &mut Checker,
) -> Option<()> {
    let fields = checker.fields(node, path, &["class", "persistent"])?;
    let persistent = match fields.get("persistent") {
        Some(node) => checker.boolean(node, &fields.path("persistent"), true)?,
        None => false,
    };
    let class = match fields.get("class") {
        Some(node) => Some(checker.one_of(node, &fields.path("class"), STORAGE_CLASSES)?),
        None => None,
    };
    let class = match class {
        Some(class) if class == RAM_CLASS && persistent => {
            checker.error(
                &fields.loc,
                "storage class `ram` cannot be persistent; use persistent: false or another class",
            );
            return None;
        }
        Some(class) if class != RAM_CLASS && !persistent => {
            checker.error(
                &fields.loc,
                format!(
                    "storage class `{class}` needs persistent: true (ephemeral storage takes \
                     no class except ram)"
                ),
            );
            return None;
        }
        None if persistent => Some("default".to_owned()),
        other => other,
    };
    if let Some(class) = &class {
        volume.attributes.push(Attribute {
            key: "class".to_owned(),
            value: class.clone(),
        });
    }
    volume.attributes.push(Attribute {
        key: "persistent".to_owned(),
        value: persistent.to_string(),
    });
    volume.class = class;
    volume.persistent = persistent;
    Some(())
}

pub(super) fn read_gpu(node: &Node, path: &str, checker: &mut Checker) -> Option<Gpu> {
    let fields = checker.fields(node, path, &["units", "attributes"])?;
    let units = match fields.get("units") {
        Some(node) => checker.integer(node, &fields.path("units"), 0, MAX_UNIT_GPU)?,
        None => 0,
    };
    let models = match fields.get("attributes") {
        Some(node) => read_gpu_attributes(node, &fields.path("attributes"), checker)?,
        None => Vec::new(),
    };
    if units > 0 && fields.get("attributes").is_none() {
        checker.error(
            &fields.loc,
            "gpu units > 0 need attributes naming the vendor (vendor: {nvidia: [...]})",
        );
        return None;
    }
    if units == 0 && fields.get("attributes").is_some() {
        checker.error(
            &fields.loc,
            "gpu attributes are set but gpu units is 0; request at least 1 unit",
        );
        return None;
    }
    let mut attributes: Vec<Attribute> = models
        .iter()
        .map(|(_, akash_key)| Attribute {
            key: akash_key.clone(),
            value: "true".to_owned(),
        })
        .collect();
    attributes.sort();
    attributes.dedup();
    Some(Gpu {
        units: u32::try_from(units).ok()?,
        models: models.into_iter().map(|(key, _)| key).collect(),
        attributes,
    })
}

/// Each model as (canonical key, Akash attribute key). Akash keeps the model as written.
pub(super) fn read_gpu_attributes(
    node: &Node,
    path: &str,
    checker: &mut Checker,
) -> Option<Vec<(GpuModelPattern, String)>> {
    let fields = checker.fields(node, path, &["vendor"])?;
    let vendor_node = checker.required(&fields, "vendor", "a mapping with `nvidia`")?;
    let vendor_path = fields.path("vendor");
    let vendors = checker.entries(vendor_node, &vendor_path);
    if vendors.is_empty() {
        checker.error(
            &Loc::of(vendor_node, &vendor_path),
            "at least one GPU vendor is required; allowed: nvidia",
        );
        return None;
    }
    let mut models = Vec::new();
    let mut valid = true;
    for vendor in vendors {
        if vendor.name != "nvidia" {
            checker.error(
                &vendor.key_loc,
                format!("unsupported GPU vendor `{}`; allowed: nvidia", vendor.name),
            );
            valid = false;
            continue;
        }
        let entries = checker.items(vendor.node, &vendor.path);
        if entries.is_empty() {
            match GpuModelPattern::any_of_vendor(vendor.name) {
                Ok(any) => models.push((any, "vendor/nvidia/model/*".to_owned())),
                Err(error) => {
                    checker.error(&vendor.key_loc, error.to_string());
                    valid = false;
                }
            }
        }
        for (item_path, item) in entries {
            match read_gpu_model(item, &item_path, checker) {
                Some(model) => models.push(model),
                None => valid = false,
            }
        }
    }
    valid.then_some(models)
}

pub(super) fn read_gpu_model(
    node: &Node,
    path: &str,
    checker: &mut Checker,
) -> Option<(GpuModelPattern, String)> {
    let fields = checker.fields(node, path, &["model", "ram", "interface"])?;
    let model = match fields.get("model") {
        Some(node) => Some(checker.non_empty_string(node, &fields.path("model"), "GPU model")?),
        None => None,
    };
    let ram = match fields.get("ram") {
        Some(node) => Some(read_quantity(
            node,
            &fields.path("ram"),
            "GPU ram",
            (1 << 30, u64::MAX),
            SizeUnits::Binary,
            checker,
        )?),
        None => None,
    };
    let interface = match fields.get("interface") {
        Some(node) => Some(checker.one_of(node, &fields.path("interface"), &["pcie", "sxm"])?),
        None => None,
    };
    // Akash compares models case-insensitively and real files write aliases (`a100-80gb`):
    // both resolve to the canonical parts here, or to an error naming them.
    let written_model = model.clone();
    let (model, ram, interface) = match model.as_deref() {
        Some(written) => match crate::gpu::resolve_model(written, ram, interface.as_deref()) {
            Ok(resolved) => (Some(resolved.model), resolved.ram_bytes, resolved.interface),
            Err(error) => {
                let node = fields.get("model")?;
                checker.error(&Loc::of(node, &fields.path("model")), error.to_string());
                return None;
            }
        },
        None => (None, ram, interface),
    };
    let key =
        match GpuModelPattern::from_parts("nvidia", model.as_deref(), ram, interface.as_deref()) {
            Ok(key) => key,
            Err(error) => {
                let (field, node) = match fields.get("model") {
                    Some(node) => ("model", node),
                    None => ("ram", fields.get("ram")?),
                };
                checker.error(&Loc::of(node, &fields.path(field)), error.to_string());
                return None;
            }
        };
    let mut akash_key = format!(
        "vendor/nvidia/model/{}",
        written_model.as_deref().unwrap_or(crate::gpu::WILDCARD)
    );
    if ram.is_some() {
        akash_key.push_str("/ram/");
        akash_key.push_str(key.ram());
    }
    if let Some(interface) = &interface {
        akash_key.push_str("/interface/");
        akash_key.push_str(interface);
    }
    Some((key, akash_key))
}
