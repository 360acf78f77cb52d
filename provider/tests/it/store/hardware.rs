//! GPU discovery from recorded `nvidia-smi` outputs, and from a real
//! `nvidia-smi` process stand-in (a script that prints a recording).

use std::path::{Path, PathBuf};

use leasehold_provider::hardware::{
    GpuSource, HardwareError, nvidia_smi_devices, parse_nvidia_smi_csv, probe_gpus,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/nvidia-smi")
        .join(name)
}

fn read_fixture(name: &str) -> String {
    let path = fixture(name);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn keys(name: &str) -> Vec<String> {
    parse_nvidia_smi_csv(&read_fixture(name))
        .unwrap_or_else(|error| panic!("{name}: {error}"))
        .into_iter()
        .map(|gpu| gpu.model_key.to_string())
        .collect()
}

#[test]
fn a100_sxm4_machine() {
    let devices = parse_nvidia_smi_csv(&read_fixture("a100-sxm4-80gb-x8.csv"))
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(devices.len(), 8);
    assert!(
        devices
            .iter()
            .all(|gpu| gpu.model_key.to_string() == "nvidia/a100/80Gi/sxm")
    );
    assert_eq!(
        devices.iter().map(|gpu| gpu.index).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    let last = devices.last().unwrap_or_else(|| panic!("no device"));
    assert_eq!(last.pci_bus_id.as_deref(), Some("00000000:BD:00.0"));
    assert_eq!(last.vram_mib, 81920);
    assert!(
        last.uuid
            .as_deref()
            .is_some_and(|uuid| uuid.starts_with("GPU-"))
    );
}

#[test]
fn h100_sxm_machine_with_header_and_units() {
    let keys = keys("h100-sxm5-80gb-hbm3-x8-header.csv");
    assert_eq!(keys, vec!["nvidia/h100/80Gi/sxm".to_string(); 8]);
}

#[test]
fn h100_pcie_and_rtx4090_machines() {
    assert_eq!(
        keys("h100-pcie-x2.csv"),
        vec!["nvidia/h100/80Gi/pcie".to_string(); 2]
    );
    assert_eq!(keys("rtx4090-x1.csv"), ["nvidia/rtx4090/24Gi/pcie"]);
}

#[test]
fn malformed_output_names_the_line_and_reason() {
    let columns = parse_nvidia_smi_csv(&read_fixture("malformed-columns.csv"));
    let message = columns
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("line 1") && message.contains("expected 5"),
        "{message}"
    );
    let memory = parse_nvidia_smi_csv(&read_fixture("malformed-memory.csv"));
    let message = memory
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("line 2") && message.contains("[N/A]"),
        "{message}"
    );
}

/// Writes an executable stand-in for nvidia-smi that checks its arguments and prints `output`.
fn fake_nvidia_smi(dir: &Path, output: &Path, exit_code: u8) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("nvidia-smi");
    let body = format!(
        "#!/bin/sh\n[ \"$1\" = \"--query-gpu=index,name,memory.total,pci.bus_id,uuid\" ] || exit 64\n\
         [ \"$2\" = \"--format=csv,noheader,nounits\" ] || exit 65\ncat '{}'\nexit {exit_code}\n",
        output.display()
    );
    std::fs::write(&script, body).unwrap_or_else(|error| panic!("{error}"));
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|error| panic!("{error}"));
    script
}

#[test]
fn nvidia_smi_process_output_is_parsed() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let program = fake_nvidia_smi(dir.path(), &fixture("rtx4090-x1.csv"), 0);
    let devices = nvidia_smi_devices(&program).unwrap_or_else(|error| panic!("{error}"));
    let keys: Vec<String> = devices
        .unwrap_or_default()
        .into_iter()
        .map(|gpu| gpu.model_key.to_string())
        .collect();
    assert_eq!(keys, ["nvidia/rtx4090/24Gi/pcie"]);
    // This machine has no NVIDIA driver, so NVML falls back and nvidia-smi answers.
    let probe = probe_gpus(&program);
    assert_eq!(probe.source, GpuSource::NvidiaSmi);
    assert_eq!(probe.devices.len(), 1);
    assert!(
        probe
            .notes
            .iter()
            .any(|note| note.starts_with("NVML unavailable")),
        "{:?}",
        probe.notes
    );
}

#[test]
fn nvidia_smi_without_a_driver_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("{error}"));
    let program = fake_nvidia_smi(dir.path(), &fixture("no-driver.txt"), 9);
    let error = nvidia_smi_devices(&program);
    assert!(
        matches!(error, Err(HardwareError::NvidiaSmiFailed { .. })),
        "{error:?}"
    );
    let message = error
        .err()
        .map(|error| error.to_string())
        .unwrap_or_default();
    assert!(
        message.contains("couldn't communicate with the NVIDIA driver"),
        "{message}"
    );
    let probe = probe_gpus(&program);
    assert_eq!(probe.source, GpuSource::None);
    assert!(probe.devices.is_empty());
}

#[test]
fn absent_nvidia_smi_is_not_an_error() {
    let missing = Path::new("/nonexistent/bin/nvidia-smi");
    assert!(matches!(nvidia_smi_devices(missing), Ok(None)));
    let probe = probe_gpus(missing);
    assert_eq!(probe.source, GpuSource::None);
    assert!(
        probe
            .notes
            .iter()
            .any(|note| note.contains("is not installed")),
        "{:?}",
        probe.notes
    );
}
