//! Any bytes, read as text, through lenient and strict parsing: no panic, and the work per
//! input stays bounded by the parser's own input budgets (size, depth, aliases).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(sdl) = leasehold_manifests::parse(&text) {
        for group in sdl.groups() {
            let _ = group.totals();
        }
        let _ = sdl.manifest().hash();
    }
    let _ = leasehold_manifests::parse_strict(&text);
});
