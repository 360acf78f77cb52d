//! Files Akash accepts are accepted here with the same meaning (issue #16).

use leasehold_manifests::{ManifestWarning, WarningKind, parse, parse_strict};

const HELLO: &str = include_str!("../../examples/hello.yaml");

#[test]
fn sizes_spelled_the_akash_console_way_derive_akash_byte_values() {
    for (memory, storage, memory_bytes, storage_bytes) in [
        ("4gi", "16GB", 4u64 << 30, 16_000_000_000u64),
        ("512mi", "15Gb", 512 << 20, 15_000_000_000),
        ("512Mb", "8gb", 512_000_000, 8_000_000_000),
        ("0.3Gi", "1.234Gi", 322_122_548, 1_324_997_411),
    ] {
        let yaml = HELLO
            .replace("size: 64Mi", &format!("size: {memory}"))
            .replace("size: 128Mi", &format!("size: {storage}"));
        let sdl = parse(&yaml).unwrap_or_else(|errors| panic!("{memory}/{storage}: {errors}"));
        let resources = &sdl.groups()[0].units[0].resources;
        assert_eq!(resources.memory_bytes, memory_bytes, "memory {memory}");
        assert_eq!(
            resources.storage[0].bytes, storage_bytes,
            "storage {storage}"
        );
    }
}

#[test]
fn a_size_unit_akash_parsers_disagree_on_is_refused_at_its_field() {
    let yaml = HELLO.replace("size: 64Mi", "size: 1GiB");
    let errors = parse(&yaml).expect_err("1GiB must be refused").0;
    let error = errors
        .iter()
        .find(|error| error.path == "profiles.compute.web.resources.memory.size")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!((error.line, error.column), (25, 17));
    assert!(error.message.contains("GiB"), "{}", error.message);
}

/// hello.yaml with the docker-compose keys real Akash files carry, and an unknown top-level key.
fn with_compose_keys() -> String {
    HELLO
        .replace(
            "    image: leasehold/busybox:test\n",
            "    image: leasehold/busybox:test\n    depends_on:\n      - db\n    restart: always\n    volumes:\n      - data:/data\n",
        )
        .replace("profiles:\n", "x-notes: made with compose\nprofiles:\n")
}

fn warning<'a>(warnings: &'a [ManifestWarning], key: &str) -> &'a ManifestWarning {
    warnings
        .iter()
        .find(|warning| warning.key == key)
        .unwrap_or_else(|| panic!("no warning about `{key}`: {warnings:#?}"))
}

#[test]
fn keys_akash_ignores_are_accepted_with_a_warning_naming_key_line_and_what_happens() {
    let yaml = with_compose_keys();
    let sdl = parse(&yaml).unwrap_or_else(|errors| panic!("{errors}"));
    let warnings = sdl.warnings();
    assert_eq!(warnings.len(), 4, "{warnings:#?}");
    let depends_on = warning(warnings, "depends_on");
    assert_eq!(depends_on.kind, WarningKind::UnknownKey);
    assert_eq!(depends_on.path, "services.web.depends_on");
    assert_eq!((depends_on.line, depends_on.column), (6, 5));
    assert!(
        depends_on.instead.contains("start independently"),
        "{}",
        depends_on.instead
    );
    assert_eq!(warning(warnings, "restart").line, 8);
    assert!(
        warning(warnings, "volumes")
            .instead
            .contains("params.storage")
    );
    let top = warning(warnings, "x-notes");
    assert_eq!(
        (top.path.as_str(), top.line, top.column),
        ("x-notes", 23, 1)
    );
    assert_eq!(sdl.groups(), parse(HELLO).unwrap().groups(), "same groups");
    assert_eq!(
        sdl.manifest().hash(),
        parse(HELLO).unwrap().manifest().hash()
    );
}

#[test]
fn strict_parsing_turns_every_warning_into_an_error() {
    let errors = parse_strict(&with_compose_keys())
        .expect_err("strict must refuse unknown keys")
        .0;
    assert_eq!(errors.len(), 4, "{errors:#?}");
    let depends_on = errors
        .iter()
        .find(|error| error.path == "services.web.depends_on")
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert_eq!((depends_on.line, depends_on.column), (6, 5));
    assert!(
        depends_on.message.contains("strict"),
        "{}",
        depends_on.message
    );
    assert!(parse_strict(HELLO).is_ok(), "a clean file passes strict");
    assert!(parse(HELLO).unwrap().warnings().is_empty());
}

/// Leased IPs are carried out too (issue #14): the order asks for the address and the
/// provider binds the port on it, so no warning and strict parsing accepts the file.
#[test]
fn leased_ip_endpoints_are_honoured_not_warned_about() {
    let yaml = HELLO
        .replace(
            "        to:\n          - global: true\n",
            "        to:\n          - global: true\n            ip: myip\n",
        )
        .replace(
            "deployment:\n",
            "endpoints:\n  myip:\n    kind: ip\ndeployment:\n",
        );
    let sdl = parse_strict(&yaml).unwrap_or_else(|errors| panic!("{errors}\n{yaml}"));
    assert!(sdl.warnings().is_empty(), "{:#?}", sdl.warnings());
    assert_eq!(sdl.groups()[0].leased_ip_count(), 1);
}

/// `accept` and `http_options` are carried out by the provider's ingress (issue #14), so
/// they are no longer warnings.
#[test]
fn accept_and_http_options_are_honoured_not_warned_about() {
    let yaml = HELLO.replace(
        "        to:\n          - global: true\n",
        "        accept:\n          - www.example.com\n        http_options:\n          max_body_size: 1024\n        to:\n          - global: true\n",
    );
    let sdl = parse_strict(&yaml).unwrap_or_else(|errors| panic!("{errors}\n{yaml}"));
    assert!(sdl.warnings().is_empty(), "{:#?}", sdl.warnings());
    let expose = &sdl.manifest().groups[0].services[0].expose[0];
    assert_eq!(expose.hosts, ["www.example.com"]);
    assert_eq!(expose.http_options.max_body_size, 1024);
}

/// `signedBy` is carried out (on-chain auditor attestations), so it is no longer a warning;
/// an Akash (bech32) auditor is refused when the group becomes an order, naming the field.
#[test]
fn signed_by_is_honoured_not_warned_about() {
    let yaml = HELLO.replace(
        "    anywhere:\n      pricing:\n",
        "    anywhere:\n      signedBy:\n        anyOf:\n          - akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63\n      pricing:\n",
    );
    let sdl = parse_strict(&yaml).unwrap_or_else(|errors| panic!("{errors}\n{yaml}"));
    assert!(sdl.warnings().is_empty(), "{:#?}", sdl.warnings());
    assert_eq!(
        sdl.groups()[0].requirements.signed_by.any_of,
        vec!["akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63".to_owned()]
    );
}

#[test]
fn an_akash_denom_warns_how_the_amount_is_read() {
    let sdl = parse(&HELLO.replace("denom: usdc", "denom: uakt")).unwrap();
    let denom = warning(sdl.warnings(), "denom");
    assert_eq!(denom.kind, WarningKind::Pricing);
    assert_eq!(denom.path, "profiles.placement.anywhere.pricing.web.denom");
    assert!(
        denom.instead.contains("per block") && denom.instead.contains("per replica per hour"),
        "{}",
        denom.instead
    );
}

/// A storage class is honoured now: a persistent volume's class is required of the
/// provider in the order (`Group::required_attributes`) and runs on the provider's
/// volume of that class, and `ram` is shared memory, so nothing warns about it.
#[test]
fn a_storage_class_is_honoured_without_a_warning() {
    let multi = include_str!("../../examples/multi-service.yaml");
    let sdl = parse(multi).unwrap();
    assert!(
        sdl.warnings().iter().all(|warning| warning.key != "class"),
        "{:#?}",
        sdl.warnings()
    );
    let required: Vec<String> = sdl
        .groups()
        .iter()
        .flat_map(|group| group.required_attributes())
        .collect();
    assert!(
        required.contains(&"capabilities/storage/1/class=beta2".to_owned()),
        "{required:?}"
    );
}

#[test]
fn versions_are_read_as_akash_reads_them_tolerantly() {
    use leasehold_manifests::Version;
    for (written, version) in [
        ("\"2.0\"", Version::V2_0),
        ("2.0", Version::V2_0),
        ("2", Version::V2_0),
        ("\"2.0.0\"", Version::V2_0),
        ("v2.1", Version::V2_1),
        ("\"2.1.0\"", Version::V2_1),
    ] {
        let yaml = HELLO.replace("version: \"2.0\"", &format!("version: {written}"));
        let sdl = parse(&yaml).unwrap_or_else(|errors| panic!("{written}: {errors}"));
        assert_eq!(sdl.version(), version, "{written}");
    }
    for refused in ["\"3.0\"", "\"2.0.1\"", "two", "\"2.x\""] {
        let yaml = HELLO.replace("version: \"2.0\"", &format!("version: {refused}"));
        let errors = parse(&yaml).expect_err(refused).0;
        assert!(
            errors.iter().any(|e| e.path == "version"),
            "{refused}: {errors:#?}"
        );
    }
}

#[test]
fn gpu_ram_takes_binary_units_only_as_akash_reads_it() {
    let gpu = include_str!("../../examples/gpu-inference.yaml");
    let lower = parse(&gpu.replacen("ram: 80Gi", "ram: 80gi", 1)).unwrap();
    assert_eq!(lower.groups(), parse(gpu).unwrap().groups());
    let errors = parse(&gpu.replacen("ram: 80Gi", "ram: 80GB", 1))
        .expect_err("80GB is not 80Gi")
        .0;
    let error = errors
        .iter()
        .find(|error| error.path.ends_with(".ram"))
        .unwrap_or_else(|| panic!("{errors:#?}"));
    assert!(
        error.message.contains("80GB") && error.message.contains("Gi"),
        "{}",
        error.message
    );
}
