//! Parse + validate + derive of a generated 20-service SDL.
//!
//! Run: `CARGO_TARGET_DIR=/work/target/manifests cargo bench -p leasehold-manifests --bench parse`

use std::fmt::Write as _;

fn main() {
    divan::main();
}

fn twenty_services() -> String {
    let mut yaml = String::from("version: \"2.0\"\nservices:\n");
    for index in 0..20 {
        let _ = write!(
            yaml,
            "  svc{index}:\n    image: example/app:{index}\n    env:\n      - INDEX={index}\n    expose:\n      - port: {}\n        as: 80\n        to:\n          - global: true\n",
            8000 + index
        );
    }
    yaml.push_str("profiles:\n  compute:\n");
    for index in 0..20 {
        let _ = write!(
            yaml,
            "    p{index}:\n      resources:\n        cpu:\n          units: {}m\n        memory:\n          size: {}Mi\n        storage:\n          - size: 1Gi\n          - name: data\n            size: 10Gi\n            attributes:\n              persistent: false\n              class: ram\n",
            100 + index,
            128 + index
        );
    }
    yaml.push_str(
        "  placement:\n    dc:\n      attributes:\n        region: eu-west\n      pricing:\n",
    );
    for index in 0..20 {
        let _ = write!(
            yaml,
            "        p{index}:\n          denom: usdc\n          amount: {}\n",
            100 + index
        );
    }
    yaml.push_str("deployment:\n");
    for index in 0..20 {
        let _ = write!(
            yaml,
            "  svc{index}:\n    dc:\n      profile: p{index}\n      count: 2\n"
        );
    }
    yaml
}

#[divan::bench]
fn parse_validate_derive_20_services(bencher: divan::Bencher) {
    let yaml = twenty_services();
    bencher.bench(|| {
        let sdl = leasehold_manifests::parse(divan::black_box(&yaml)).expect("valid SDL");
        let groups = sdl.groups();
        let totals = groups[0].totals().expect("totals");
        (totals, sdl.manifest().hash())
    });
}
