//! Property tests: no panics on any input; canonical JSON round-trips; the hash
//! ignores YAML layout and mapping order.

use std::time::{Duration, Instant};

use leasehold_manifests::{Manifest, parse, parse_strict};
use proptest::prelude::*;

/// Longest one parse of a small input may take (debug build, shared CI cores): far above
/// the milliseconds it takes, far below what a hang or a blow-up would.
const PARSE_BUDGET: Duration = Duration::from_secs(2);

/// Keys and scalars SDL files use, so generated documents reach deep into validation.
const SDL_WORDS: &[&str] = &[
    "version",
    "services",
    "profiles",
    "compute",
    "placement",
    "deployment",
    "endpoints",
    "image",
    "expose",
    "port",
    "as",
    "to",
    "global",
    "ip",
    "accept",
    "http_options",
    "env",
    "command",
    "args",
    "params",
    "storage",
    "mount",
    "resources",
    "cpu",
    "units",
    "memory",
    "size",
    "gpu",
    "attributes",
    "vendor",
    "nvidia",
    "model",
    "ram",
    "interface",
    "pricing",
    "denom",
    "amount",
    "signedBy",
    "anyOf",
    "count",
    "profile",
    "class",
    "persistent",
    "depends_on",
    "volumes",
    "restart",
    "credentials",
    "web",
    "db",
    "\"2.0\"",
    "\"2.1\"",
    "100m",
    "0.5",
    "512Mi",
    "1gb",
    "4GI",
    "1e3",
    "uakt",
    "usdc",
    "1000",
    "-1",
    "true",
    "null",
    "~",
    "&a",
    "*a",
    "!!str",
    "[]",
    "{}",
    "|",
    ">",
];

/// One generated line: indentation, optional `- `, a key, and maybe a value.
fn yaml_line() -> impl Strategy<Value = String> {
    (
        0usize..6,
        any::<bool>(),
        0..SDL_WORDS.len(),
        proptest::option::of(0..SDL_WORDS.len()),
    )
        .prop_map(|(indent, item, key, value)| {
            let dash = if item { "- " } else { "" };
            let value = value.map_or(String::new(), |value| format!(" {}", SDL_WORDS[value]));
            format!("{}{dash}{}:{value}", "  ".repeat(indent), SDL_WORDS[key])
        })
}

/// Parses leniently and strictly, each within [`PARSE_BUDGET`], without panicking.
fn parses_in_bounded_time(text: &str) -> Result<(), TestCaseError> {
    for strict in [false, true] {
        let started = Instant::now();
        let result = if strict {
            parse_strict(text)
        } else {
            parse(text)
        };
        let elapsed = started.elapsed();
        prop_assert!(
            elapsed < PARSE_BUDGET,
            "parse (strict: {strict}) took {elapsed:?} on:\n{text}"
        );
        if let Ok(sdl) = result {
            // Everything accepted derives groups whose totals are computed with checked
            // arithmetic: an overflow is an error value, never a panic.
            for group in sdl.groups() {
                let _ = group.totals();
            }
        }
    }
    Ok(())
}

const EXAMPLES: &[&str] = &[
    include_str!("../../examples/hello.yaml"),
    include_str!("../../examples/gpu-inference.yaml"),
    include_str!("../../examples/multi-service.yaml"),
];

/// A tiny YAML value model used to re-emit a document with other key orders and layout.
#[derive(Debug, Clone)]
enum Yaml {
    Scalar(String),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

fn to_model(value: &serde_json::Value) -> Yaml {
    match value {
        serde_json::Value::Object(map) => Yaml::Map(
            map.iter()
                .map(|(key, value)| (key.clone(), to_model(value)))
                .collect(),
        ),
        serde_json::Value::Array(items) => Yaml::Seq(items.iter().map(to_model).collect()),
        scalar => Yaml::Scalar(scalar.to_string()),
    }
}

/// Emits flow-style YAML (JSON scalars are valid YAML scalars), rotating every mapping by `shift`.
fn emit(value: &Yaml, shift: usize, spaced: bool) -> String {
    let gap = if spaced { " \n  " } else { "" };
    match value {
        Yaml::Scalar(text) => text.clone(),
        Yaml::Seq(items) => {
            let parts: Vec<String> = items.iter().map(|item| emit(item, shift, spaced)).collect();
            format!("[{gap}{}{gap}]", parts.join(&format!(",{gap}")))
        }
        Yaml::Map(entries) => {
            let mut entries = entries.clone();
            if !entries.is_empty() {
                let len = entries.len();
                entries.rotate_left(shift % len);
            }
            let parts: Vec<String> = entries
                .iter()
                .map(|(key, value)| format!("{key:?}: {}", emit(value, shift, spaced)))
                .collect();
            format!("{{{gap}{}{gap}}}", parts.join(&format!(",{gap}")))
        }
    }
}

/// The example as a JSON value, read through our own parser's YAML layer via serde_json.
fn example_model(index: usize) -> Yaml {
    let yaml = EXAMPLES[index % EXAMPLES.len()];
    let value: serde_json::Value = serde_saphyr_free_reader(yaml);
    to_model(&value)
}

/// Converts the block YAML of an example to JSON using a minimal approach: the
/// examples only use block mappings, block sequences and plain/quoted scalars.
fn serde_saphyr_free_reader(yaml: &str) -> serde_json::Value {
    fn parse_block(
        lines: &[(usize, String)],
        start: usize,
        indent: usize,
    ) -> (serde_json::Value, usize) {
        let mut index = start;
        if lines[index].1.starts_with("- ") {
            let mut items = Vec::new();
            while index < lines.len()
                && lines[index].0 == indent
                && lines[index].1.starts_with("- ")
            {
                let rest = lines[index].1[2..].to_owned();
                if rest.contains(": ") || rest.ends_with(':') {
                    let mut sub = vec![(indent + 2, rest)];
                    let mut next = index + 1;
                    while next < lines.len() && lines[next].0 > indent {
                        sub.push(lines[next].clone());
                        next += 1;
                    }
                    let (value, _) = parse_block(&sub, 0, indent + 2);
                    items.push(value);
                    index = next;
                } else {
                    items.push(scalar(&rest));
                    index += 1;
                }
            }
            return (serde_json::Value::Array(items), index);
        }
        let mut map = serde_json::Map::new();
        while index < lines.len() && lines[index].0 == indent {
            let line = lines[index].1.clone();
            let (key, rest) = line.split_once(':').expect("mapping line");
            let rest = rest.trim();
            if rest.is_empty() {
                let (value, next) = parse_block(lines, index + 1, lines[index + 1].0);
                map.insert(key.to_owned(), value);
                index = next;
            } else {
                map.insert(key.to_owned(), scalar(rest));
                index += 1;
            }
        }
        (serde_json::Value::Object(map), index)
    }
    fn scalar(text: &str) -> serde_json::Value {
        if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            return serde_json::Value::String(inner.to_owned());
        }
        if let Ok(number) = text.parse::<u64>() {
            return serde_json::Value::from(number);
        }
        if let Ok(number) = text.parse::<f64>() {
            return serde_json::Value::from(number);
        }
        match text {
            "true" => serde_json::Value::Bool(true),
            "false" => serde_json::Value::Bool(false),
            _ => serde_json::Value::String(text.to_owned()),
        }
    }
    let lines: Vec<(usize, String)> = yaml
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
        .map(|line| (line.len() - line.trim_start().len(), line.trim().to_owned()))
        .collect();
    parse_block(&lines, 0, 0).0
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        parses_in_bounded_time(&text)?;
    }

    #[test]
    fn sdl_shaped_documents_never_panic_and_finish_in_bounded_time(
        lines in proptest::collection::vec(yaml_line(), 0..60)
    ) {
        parses_in_bounded_time(&lines.join("\n"))?;
    }

    #[test]
    fn arbitrary_yaml_like_text_never_panics(
        text in "([a-z]{1,6}: ?(\"?[-0-9a-zA-Z.]{0,6}\"?|\\[|\\]|\\{|\\}|&a|\\*a|-)?\n {0,4}){0,30}"
    ) {
        let _ = parse(&text);
    }

    #[test]
    fn mutated_examples_never_panic(index in 0usize..3, cut in 0usize..2000, insert in "[-:\\[\\]{}&*!|> a-z0-9\n]{0,8}") {
        let example = EXAMPLES[index];
        let mut cut = cut.min(example.len());
        while !example.is_char_boundary(cut) {
            cut -= 1;
        }
        let text = format!("{}{insert}{}", &example[..cut], &example[cut..]);
        parses_in_bounded_time(&text)?;
    }

    #[test]
    fn canonical_json_round_trips(index in 0usize..3) {
        let manifest = parse(EXAMPLES[index]).unwrap().manifest();
        let json = manifest.canonical_json();
        let back: Manifest = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, &manifest);
        prop_assert_eq!(back.canonical_json(), json);
    }

    #[test]
    fn hash_ignores_key_order_and_layout(index in 0usize..3, shift in 0usize..7, spaced in any::<bool>()) {
        let original = parse(EXAMPLES[index]).unwrap();
        let reordered = emit(&example_model(index), shift, spaced);
        let reparsed = parse(&reordered).unwrap_or_else(|errors| panic!("{errors}\n{reordered}"));
        prop_assert_eq!(reparsed.manifest().hash(), original.manifest().hash());
        prop_assert_eq!(reparsed.groups(), original.groups());
    }
}

#[test]
fn hash_changes_with_content() {
    let original = parse(EXAMPLES[0]).unwrap().manifest().hash();
    let changed = parse(&EXAMPLES[0].replace("leasehold/busybox:test", "leasehold/busybox:other"))
        .unwrap()
        .manifest()
        .hash();
    assert_ne!(original, changed);
}

#[test]
fn canonical_json_is_compact_and_sorted() {
    let json = parse(EXAMPLES[0]).unwrap().manifest().canonical_json();
    assert!(json.starts_with("{\"groups\":[{\"name\":\"anywhere\",\"services\":[{\"args\":null,\"command\":[\"httpd\""), "{json}");
    assert!(!json.contains(": ") && !json.contains('\n'));
}
