//! Files Akash accepts are accepted here with the same meaning (issue #16).

use leasehold_manifests::parse;

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
