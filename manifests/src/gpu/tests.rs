use super::*;

fn key(text: &str) -> GpuModelKey {
    text.parse().unwrap()
}

fn pattern(text: &str) -> GpuModelPattern {
    text.parse().unwrap()
}

#[test]
fn canonical_form_is_lower_case_with_gi_ram_and_round_trips() {
    let a100 = GpuModelKey::from_parts("NVIDIA", "A100", 80 << 30, "SXM").unwrap();
    assert_eq!(a100.to_string(), "nvidia/a100/80Gi/sxm");
    for written in [
        "nvidia/a100/80Gi/sxm",
        "Nvidia/A100/80GI/SXM",
        " nvidia/a100/81920Mi/sxm ",
        "nvidia/a100/80gi/sxm",
    ] {
        assert_eq!(key(written), a100, "{written}");
        assert_eq!(key(&key(written).to_string()), a100, "{written}");
    }
    assert_eq!(a100.ram_bytes(), 80 << 30);
    assert_eq!(
        a100.akash_attribute_key(),
        "vendor/nvidia/model/a100/ram/80Gi/interface/sxm"
    );
    assert_eq!(pattern("nvidia/a100").to_string(), "nvidia/a100/*/*");
    assert_eq!(pattern("nvidia").to_string(), "nvidia/*/*/*");
    assert_eq!(
        pattern(&pattern("NVIDIA/H100/*/PCIE").to_string()),
        pattern("nvidia/h100/*/pcie")
    );
    let any = GpuModelPattern::any_of_vendor("nvidia").unwrap();
    assert_eq!(any.akash_attribute_key(), "vendor/nvidia/model/*");
    assert_eq!(
        pattern("nvidia/h100/*/pcie").akash_attribute_key(),
        "vendor/nvidia/model/h100/interface/pcie"
    );
    assert_eq!(pattern("nvidia/a100/80Gi/sxm").as_key(), Some(a100));
    assert_eq!(pattern("nvidia/a100/*/sxm").as_key(), None);
}

#[test]
fn serde_uses_the_canonical_string() {
    let a100 = key("NVIDIA/A100/80Gi/SXM");
    assert_eq!(
        serde_json::to_string(&a100).unwrap(),
        "\"nvidia/a100/80Gi/sxm\""
    );
    let back: GpuModelKey = serde_json::from_str("\"nvidia/a100/80gi/sxm\"").unwrap();
    assert_eq!(back, a100);
    let wide: GpuModelPattern = serde_json::from_str("\"nvidia/a100\"").unwrap();
    assert_eq!(serde_json::to_string(&wide).unwrap(), "\"nvidia/a100/*/*\"");
    let error = serde_json::from_str::<GpuModelKey>("\"nvidia/a100\"").unwrap_err();
    assert!(error.to_string().contains("nvidia/a100"), "{error}");
}

#[test]
fn the_chain_key_is_keccak256_of_the_canonical_string() {
    // keccak256("nvidia/a100/80Gi/sxm"), as `cast keccak` prints it.
    let expected = Keccak256::digest(b"nvidia/a100/80Gi/sxm");
    assert_eq!(
        key("NVIDIA/A100/80GI/SXM").chain_key(),
        <[u8; 32]>::from(expected)
    );
    assert_eq!(
        pattern("nvidia/a100").chain_key(),
        <[u8; 32]>::from(Keccak256::digest(b"nvidia/a100/*/*"))
    );
}

/// Hostile or malformed input is an error naming the text, the part and the reason.
#[test]
fn bad_keys_and_patterns_are_errors_naming_the_part() {
    let cases: &[(&str, &str)] = &[
        ("", "vendor `` is empty"),
        ("a/b/c/d/e", "must be vendor/model/ram/interface"),
        ("nvidia//80Gi", "model `` is empty"),
        ("nvidia/a100/lots", "ram `lots`"),
        ("nvidia/a100/80GB/sxm", "ram `80GB`"),
        ("nvidia/a100/1536Mi/sxm", "ram `1536Mi`"),
        ("nvidia/a100/-1Gi/sxm", "ram `-1Gi`"),
        ("nvidia/a 100/*/*", "model `a 100` may only hold"),
        ("nvidia/a*/*/*", "model `a*` may only hold"),
        (
            "nvidia/a100/*/s\u{0}xm",
            "interface `s\u{0}xm` may only hold",
        ),
        ("nvidia/ä100", "model `ä100` may only hold"),
    ];
    for (text, reason) in cases {
        let error = text.parse::<GpuModelPattern>().unwrap_err().to_string();
        assert!(error.contains(reason), "{text:?}: {error}");
    }
    let long = format!("nvidia/{}", "a".repeat(65));
    assert!(
        long.parse::<GpuModelPattern>()
            .unwrap_err()
            .to_string()
            .contains("longer than 64")
    );
    let huge = "a/".repeat(100_000);
    assert!(matches!(
        huge.parse::<GpuModelPattern>(),
        Err(GpuKeyError::Shape(_))
    ));
    // A key is exactly four parts, none of them `*`.
    assert!(matches!(
        "nvidia/a100".parse::<GpuModelKey>(),
        Err(GpuKeyError::Shape(_))
    ));
    let wildcard = "nvidia/*/80Gi/sxm".parse::<GpuModelKey>().unwrap_err();
    assert_eq!(wildcard, GpuKeyError::Wildcard("nvidia/*/80Gi/sxm".into()));
    assert!(wildcard.to_string().contains("`*` is for patterns"));
    assert!(GpuModelKey::from_parts("nvidia", "a100", (80 << 30) + 1, "sxm").is_err());
    assert_eq!(key("alibaba/g1/0Gi/unknown").ram_bytes(), 0);
}

/// The match rule against the contract's vector file (the Foundry tests run the same file
/// through `placeBid`): match, the 16 masked patterns and the mask all agree with it.
#[test]
fn the_shared_vectors_hold_for_match_masks_and_patterns_matched() {
    let vectors: serde_json::Value = serde_json::from_str(include_str!(
        "../../../marketplace-contracts/test/vectors/gpu_patterns.json"
    ))
    .unwrap();
    let cases = vectors["cases"].as_array().unwrap();
    assert!(cases.len() > 60);
    for case in cases {
        let wanted = pattern(case["pattern"].as_str().unwrap());
        let parts: Vec<&str> = case["model"]
            .as_array()
            .unwrap()
            .iter()
            .map(|part| part.as_str().unwrap())
            .collect();
        let model = key(&parts.join("/"));
        let expected = case["matches"].as_bool().unwrap();
        assert_eq!(wanted.matches(&model), expected, "{wanted} vs {model}");
        assert_eq!(
            model.patterns_matched().contains(&wanted),
            expected,
            "{wanted} vs {model}"
        );
        let mask = wanted.mask_for(&model);
        assert_eq!(mask.is_some(), expected, "{wanted} vs {model}");
        if let Some(mask) = mask {
            assert_eq!(model.masked(mask), wanted);
        }
    }
}

/// Maps keyed by models list them in the order their canonical strings sort.
#[test]
fn keys_sort_as_their_canonical_strings() {
    let texts = [
        "nvidia/a10/24Gi/pcie",
        "nvidia/a10-x/24Gi/pcie",
        "nvidia/a100/80Gi/sxm",
        "nvidia/a100/8Gi/sxm",
        "amd/mi300x/192Gi/oam",
        "nvidia/a10.5/24Gi/pcie",
    ];
    let mut by_key: Vec<GpuModelKey> = texts.iter().map(|text| key(text)).collect();
    by_key.sort();
    let mut by_string: Vec<String> = texts.iter().map(|text| key(text).to_string()).collect();
    by_string.sort();
    let by_key: Vec<String> = by_key.iter().map(ToString::to_string).collect();
    assert_eq!(by_key, by_string);
}

#[test]
fn a_vague_offer_does_not_satisfy_a_precise_request() {
    let offered = key("nvidia/a100/80Gi/sxm");
    assert!(pattern("nvidia/*/80Gi/*").matches(&offered));
    assert!(!pattern("nvidia/a100/80Gi/pcie").matches(&offered));
    assert_eq!(offered.patterns_matched().len(), 16);
    assert_eq!(
        offered.patterns_matched()[0],
        GpuModelPattern::from(offered.clone())
    );
}

#[test]
fn akash_style_aliases_resolve_to_canonical_parts() {
    let resolved = |model, ram, interface| {
        let r = resolve_model(model, ram, interface).unwrap();
        GpuModelPattern::from_parts(
            "nvidia",
            Some(&r.model),
            r.ram_bytes,
            r.interface.as_deref(),
        )
        .unwrap()
        .to_string()
    };
    assert_eq!(resolved("A100", None, None), "nvidia/a100/*/*");
    assert_eq!(resolved("a100-80gb", None, None), "nvidia/a100/80Gi/*");
    assert_eq!(
        resolved("A100-SXM4-80GB", None, None),
        "nvidia/a100/80Gi/sxm"
    );
    assert_eq!(resolved("h100-pcie", None, None), "nvidia/h100/*/pcie");
    assert_eq!(
        resolved("a100-80gb", Some(80 << 30), None),
        "nvidia/a100/80Gi/*"
    );
    assert_eq!(resolved("rtx4090", None, None), "nvidia/rtx4090/*/*");
    assert_eq!(resolved("rtx-4090", None, None), "nvidia/rtx-4090/*/*");
    let err = resolve_model("a100-80gb", Some(40 << 30), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GPU model `a100-80gb` names RAM `80Gi` but the SDL says `40Gi`; \
         write `model: a100` with `ram: 80Gi`"
    );
    assert!(resolve_model("h100-sxm", None, Some("pcie")).is_err());
}

/// Driver names (nvidia-smi, NVML) and GPU feature discovery's node labels (the same name
/// with `-` for spaces) go through the one product rule and give the same key.
#[test]
fn product_names_from_the_driver_and_the_node_label_give_one_key() {
    let cases: &[(&str, u64, &str)] = &[
        ("NVIDIA A100-SXM4-80GB", 81920, "nvidia/a100/80Gi/sxm"),
        ("NVIDIA A100-PCIE-40GB", 40960, "nvidia/a100/40Gi/pcie"),
        ("NVIDIA A100 80GB PCIe", 81920, "nvidia/a100/80Gi/pcie"),
        ("NVIDIA H100 80GB HBM3", 81559, "nvidia/h100/80Gi/sxm"),
        ("NVIDIA H100 PCIe", 81559, "nvidia/h100/80Gi/pcie"),
        ("NVIDIA H100 NVL", 95830, "nvidia/h100/94Gi/pcie"),
        ("NVIDIA GeForce RTX 4090", 24564, "nvidia/rtx4090/24Gi/pcie"),
        ("NVIDIA RTX A6000", 49140, "nvidia/rtxa6000/48Gi/pcie"),
        ("Tesla T4", 15360, "nvidia/t4/16Gi/pcie"),
        ("NVIDIA L40S", 46068, "nvidia/l40s/48Gi/pcie"),
        ("NVIDIA L4", 23034, "nvidia/l4/24Gi/pcie"),
        ("NVIDIA A10", 23028, "nvidia/a10/24Gi/pcie"),
        ("NVIDIA H200", 143771, "nvidia/h200/141Gi/sxm"),
        ("NVIDIA GeForce RTX 4080", 16376, "nvidia/rtx4080/16Gi/pcie"),
        ("Tesla V100-SXM2-32GB", 32768, "nvidia/v100/32Gi/sxm"),
    ];
    for (name, mib, expected) in cases {
        let from_driver = GpuModelKey::from_product(name, Some(*mib)).unwrap();
        let label = name.replace(' ', "-");
        let from_label = GpuModelKey::from_product(&label, Some(*mib)).unwrap();
        assert_eq!(from_driver.to_string(), *expected, "{name}");
        assert_eq!(from_label, from_driver, "{label}");
    }
    // A name that states its size needs no reported memory.
    assert_eq!(
        GpuModelKey::from_product("NVIDIA-A100-SXM4-80GB", None).unwrap(),
        key("nvidia/a100/80Gi/sxm")
    );
}

#[test]
fn products_the_rule_cannot_map_are_errors() {
    let no_model = GpuModelKey::from_product("NVIDIA", Some(16384)).unwrap_err();
    assert!(matches!(no_model, GpuProductError::NoModel(_)));
    let no_memory = GpuModelKey::from_product("NVIDIA-L4", None).unwrap_err();
    assert!(
        no_memory.to_string().contains("no memory size"),
        "{no_memory}"
    );
    assert!(GpuModelKey::from_product("NVIDIA-L4", Some(0)).is_err());
    let mig = GpuModelKey::from_product("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", None).unwrap_err();
    assert!(mig.to_string().contains("MIG slice"), "{mig}");
    let shared = GpuModelKey::from_product("NVIDIA-A100-SXM4-40GB-SHARED", None).unwrap_err();
    assert!(shared.to_string().contains("time-shared"), "{shared}");
    let odd = GpuModelKey::from_product("NVIDIA Ä100", Some(16384)).unwrap_err();
    assert!(matches!(odd, GpuProductError::Key { .. }), "{odd}");
}

proptest::proptest! {
    #[test]
    fn any_text_parses_or_fails_without_panicking(text in ".{0,80}", mib in proptest::option::of(proptest::num::u64::ANY)) {
        if let Ok(parsed) = text.parse::<GpuModelPattern>() {
            proptest::prop_assert_eq!(parsed.to_string().parse::<GpuModelPattern>().ok(), Some(parsed));
        }
        if let Ok(parsed) = text.parse::<GpuModelKey>() {
            proptest::prop_assert_eq!(parsed.to_string().parse::<GpuModelKey>().ok(), Some(parsed));
        }
        if let Ok(from_product) = GpuModelKey::from_product(&text, mib) {
            proptest::prop_assert!(from_product.to_string().parse::<GpuModelKey>().is_ok());
        }
    }
}

#[test]
fn known_models_are_all_valid_keys_and_candidates_include_mentioned_models() {
    let table_size: usize = names::KNOWN_MODELS
        .iter()
        .map(|(_, _, rams)| rams.len() * names::KNOWN_INTERFACES.len())
        .sum();
    assert_eq!(known_models().len(), table_size);
    let candidates =
        candidate_models(&[pattern("nvidia/rtx5080/*/*"), pattern("*/b300/288Gi/oam")]);
    for known in known_models() {
        assert!(candidates.contains(&known), "{known}");
    }
    assert!(candidates.contains(&key("nvidia/rtx5080/16Gi/pcie")));
    assert!(candidates.contains(&key("amd/b300/288Gi/oam")));
    assert!(candidates.contains(&key("nvidia/rtx4090/48Gi/pcie")));
}
