//! The README's main command, `scripts/demo`, run as a newcomer runs it: `--validate-only`
//! (no chain, no Docker) here; the whole marketplace in `flows`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the repository")
        .to_path_buf()
}

#[test]
fn demo_validates_every_example_and_prints_its_manifest_hash() {
    let root = repo_root();
    let output = Command::new(root.join("scripts/demo"))
        .arg("--validate-only")
        .current_dir(&root)
        .output()
        .expect("scripts/demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "scripts/demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let examples: Vec<PathBuf> = std::fs::read_dir(root.join("manifests/examples"))
        .expect("examples folder")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    assert!(examples.len() >= 3, "expected the three examples");
    for example in examples {
        let yaml = std::fs::read_to_string(&example).expect("example readable");
        let sdl = leasehold_manifests::parse(&yaml).expect("example is valid");
        let hash = sdl.manifest().hash_hex();
        assert!(
            stdout.contains(&hash),
            "demo output lacks {}'s hash {hash}:\n{stdout}",
            example.display()
        );
        for group in sdl.groups() {
            assert!(
                stdout.contains(&group.name),
                "demo output lacks group {} of {}",
                group.name,
                example.display()
            );
        }
    }
}
