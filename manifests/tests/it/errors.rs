//! Error reporting: every problem, with path, line and column; bounded input.

use leasehold_manifests::{ManifestError, limits, parse};

const HELLO: &str = include_str!("../../examples/hello.yaml");

fn errors_of(yaml: &str) -> Vec<ManifestError> {
    match parse(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(errors) => errors.0,
    }
}

fn at<'a>(errors: &'a [ManifestError], path: &str) -> &'a ManifestError {
    errors
        .iter()
        .find(|error| error.path == path)
        .unwrap_or_else(|| panic!("no error at {path}: {errors:#?}"))
}

#[test]
fn all_errors_are_reported_with_path_line_and_column() {
    let yaml = HELLO
        .replace("units: 100m", "units: 500000m")
        .replace("size: 64Mi", "size: 3Ti")
        .replace("denom: usdc", "denom: doge");
    let errors = errors_of(&yaml);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let cpu = at(&errors, "profiles.compute.web.resources.cpu.units");
    assert_eq!((cpu.line, cpu.column), (23, 18));
    assert!(
        cpu.message.contains("500000m") && cpu.message.contains("384000m"),
        "{}",
        cpu.message
    );
    let memory = at(&errors, "profiles.compute.web.resources.memory.size");
    assert_eq!((memory.line, memory.column), (25, 17));
    assert!(memory.message.contains("2Ti"), "{}", memory.message);
    let denom = at(&errors, "profiles.placement.anywhere.pricing.web.denom");
    assert!(denom.message.contains("usdc"), "{}", denom.message);
}

#[test]
fn unknown_references_name_what_exists() {
    let yaml = HELLO.replace("profile: web", "profile: webb");
    let errors = errors_of(&yaml);
    let error = at(&errors, "deployment.web.anywhere.profile");
    assert!(
        error.message.contains("webb") && error.message.contains("declared: web"),
        "{}",
        error.message
    );
}

#[test]
fn yaml_syntax_errors_have_a_location() {
    let errors = errors_of("version: \"2.0\"\nservices: [unclosed\n");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].line > 0, "{:?}", errors[0]);
    assert!(
        errors[0].message.starts_with("invalid YAML"),
        "{:?}",
        errors[0]
    );
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let yaml = format!("{HELLO}#{}\n", "x".repeat(limits::MAX_INPUT_BYTES));
    let errors = errors_of(&yaml);
    assert!(errors[0].message.contains("bytes"), "{:?}", errors[0]);
}

#[test]
fn deep_nesting_is_refused() {
    let depth = limits::MAX_DEPTH * 4;
    let yaml = format!("version: {}{}", "[".repeat(depth), "]".repeat(depth));
    let errors = errors_of(&yaml);
    assert!(
        errors[0].message.starts_with("invalid YAML"),
        "{:?}",
        errors[0]
    );
}

#[test]
fn alias_bombs_are_refused() {
    let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let previous = format!("*a{}", level - 1);
        let items = [previous.as_str(); 10].join(", ");
        yaml.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    let errors = errors_of(&yaml);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].message.starts_with("invalid YAML"),
        "{:?}",
        errors[0]
    );
}

#[test]
fn v2_1_services_sharing_a_profile_share_a_unit() {
    let yaml = HELLO.replace("version: \"2.0\"", "version: \"2.1\"").replace(
        "deployment:\n  web:\n    anywhere:\n      profile: web\n      count: 1\n",
        "deployment:\n  web:\n    anywhere:\n      profile: web\n      count: 1\n  web2:\n    anywhere:\n      profile: web\n      count: 2\n",
    ).replace("services:\n  web:\n", "services:\n  web2:\n    image: leasehold/busybox:test\n  web:\n");
    let sdl = parse(&yaml).unwrap_or_else(|errors| panic!("{errors}"));
    let groups = sdl.groups();
    assert_eq!(groups[0].units.len(), 1);
    assert_eq!(groups[0].units[0].count, 3);
    let v2_0 = parse(&yaml.replace("version: \"2.1\"", "version: \"2.0\"")).unwrap();
    assert_eq!(v2_0.groups()[0].units.len(), 2);
    let totals = v2_0.groups()[0].totals().unwrap();
    assert_eq!(totals.cpu_millis, 300);
    assert_eq!(totals.replicas, 3);
    assert_eq!(totals.price.amount.to_string(), "3000");
}

#[test]
fn gpu_models_become_canonical_keys() {
    let sdl = parse(include_str!("../../examples/gpu-inference.yaml")).unwrap();
    let gpu = &sdl.groups()[0].units[0].resources.gpu;
    assert_eq!(gpu.units, 1);
    let keys: Vec<String> = gpu.models.iter().map(ToString::to_string).collect();
    assert_eq!(keys, ["nvidia/a100/80Gi/sxm", "nvidia/h100/80Gi/sxm"]);
    assert_eq!(
        gpu.attributes[0].key,
        "vendor/nvidia/model/a100/ram/80Gi/interface/sxm"
    );
    let offered = "nvidia/h100/80Gi/sxm".parse().unwrap();
    assert!(gpu.models.iter().any(|model| model.matches(&offered)));
}

#[test]
fn memory_below_the_runtimes_floor_is_refused_before_any_order() {
    // Docker refuses a limit under 6 MiB; an SDL asking for less could be paid for and
    // never run, so validation refuses it with the floor named.
    let errors = errors_of(&HELLO.replace("size: 64Mi", "size: 5Mi"));
    let memory = at(&errors, "profiles.compute.web.resources.memory.size");
    assert!(memory.message.contains("6Mi"), "{}", memory.message);
    assert_eq!(limits::MIN_UNIT_MEMORY_BYTES, 6 * 1024 * 1024);
    assert!(parse(&HELLO.replace("size: 64Mi", "size: 6Mi")).is_ok());
}

#[test]
fn control_characters_and_whitespace_in_an_image_are_refused_escaped() {
    for bad in [
        "busybox\\0:test",
        "busy\\tbox",
        "busybox\\u001b[31m",
        "busy box",
    ] {
        let yaml = HELLO.replace(
            "image: leasehold/busybox:test",
            &format!("image: \"{bad}\""),
        );
        let errors = errors_of(&yaml);
        let image = at(&errors, "services.web.image");
        assert!(
            image
                .message
                .contains("no whitespace or control characters"),
            "{}",
            image.message
        );
        assert!(
            !image.message.chars().any(char::is_control),
            "the message carries the raw character: {:?}",
            image.message
        );
    }
}

/// Issue #18: real files write models in any case and Akash-style aliases; they become the
/// canonical pattern, or an error at the model's path naming the canonical choice.
#[test]
fn gpu_model_case_and_aliases_resolve_or_name_the_canonical_choice() {
    let with_gpu = |gpu: &str| {
        include_str!("../../examples/stable-diffusion.yaml").replace("- model: rtx4090", gpu)
    };
    let sdl = parse(&with_gpu("- model: A100-80GB")).unwrap();
    let keys: Vec<String> = sdl.groups()[0].units[0]
        .resources
        .gpu
        .models
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(keys, ["nvidia/a100/80Gi/*"]);

    let sdl = parse(&with_gpu("- model: RTX4090")).unwrap();
    let model = &sdl.groups()[0].units[0].resources.gpu.models[0];
    assert_eq!(model.to_string(), "nvidia/rtx4090/*/*");

    let errors = errors_of(&with_gpu("- model: a100-80gb\n                  ram: 40Gi"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0].to_string();
    assert!(
        message.contains("write `model: a100` with `ram: 80Gi`") && message.contains("model"),
        "{message}"
    );
}

/// A model name that cannot be one part of a GPU model key (`/`, `*`, spaces) would hash to an
/// order nobody can bid on: it is an error at the model's path naming the reason.
#[test]
fn gpu_model_names_that_are_not_one_key_part_are_refused_at_their_path() {
    for bad in ["a100/80Gi", "a*", "a 100", "rtx\\u00e44090"] {
        let yaml = include_str!("../../examples/stable-diffusion.yaml")
            .replace("- model: rtx4090", &format!("- model: \"{bad}\""));
        let errors = errors_of(&yaml);
        assert_eq!(errors.len(), 1, "{bad}: {errors:?}");
        assert!(errors[0].path.ends_with(".model"), "{bad}: {errors:?}");
        assert!(
            errors[0].message.contains("model `") && errors[0].message.contains("may only hold")
                || errors[0]
                    .message
                    .contains("must be vendor/model/ram/interface"),
            "{bad}: {}",
            errors[0].message
        );
    }
}
