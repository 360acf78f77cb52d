//! `tenant audit` (Akash's `signedBy` auditors) against real contracts, and how an SDL's
//! auditors reach `validate` and `preflight`.

use crate::support::{Devnet, OTHER_TENANT, PROVIDER_A, PROVIDER_B, code, json, stderr, within};

const AUDITOR: usize = OTHER_TENANT;

/// hello.yaml with a placement attribute and `signedBy` naming `auditor`.
fn audited_sdl(auditor: &str) -> String {
    include_str!("../../../manifests/examples/hello.yaml").replace(
        "    anywhere:\n      pricing:\n",
        &format!(
            "    anywhere:\n      attributes:\n        region: eu-west\n      signedBy:\n        allOf:\n          - {auditor}\n      pricing:\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_attests_lists_and_revokes_and_preflight_follows() {
    within(async {
        let devnet = Devnet::start().await;
        devnet.register(PROVIDER_A, "127.0.0.1:7001", &[]).await;
        devnet.register(PROVIDER_B, "127.0.0.1:7002", &[]).await;
        let a = devnet.address(PROVIDER_A).to_string();
        let auditor = devnet.address(AUDITOR).to_string();

        let attested = devnet
            .tenant(
                AUDITOR,
                &["audit", "attest", &a, "region=eu-west", "--output", "json"],
            )
            .await;
        assert_eq!(code(&attested), Some(0), "{}", stderr(&attested));
        assert_eq!(json(&attested)["attributes"][0], "region=eu-west");

        let listed = devnet
            .tenant_with(
                devnet.env(),
                &[
                    "audit",
                    "list",
                    "--provider",
                    &a,
                    "--attribute",
                    "region=eu-west",
                    "--output",
                    "json",
                ],
            )
            .await;
        assert_eq!(code(&listed), Some(0), "{}", stderr(&listed));
        let listed = json(&listed);
        let entries = listed["attestations"].as_array().expect("list").clone();
        assert_eq!(entries.len(), 1, "{listed}");
        assert_eq!(entries[0]["auditor"], devnet.address_json(AUDITOR).as_str());
        assert_eq!(entries[0]["attribute"], "region=eu-west");

        let providers = devnet.tenant_with(devnet.env(), &["providers"]).await;
        let text = String::from_utf8_lossy(&providers.stdout).into_owned();
        assert!(
            text.contains("AUDITORS") && text.contains(&auditor),
            "{text}"
        );

        // The SDL's auditor: A is attested and eligible, B is rejected for the audit.
        let file = devnet.home.path().join("audited.yaml");
        std::fs::write(&file, audited_sdl(&auditor)).expect("write sdl");
        let file = file.to_string_lossy().into_owned();
        let report = devnet
            .tenant_with(devnet.env(), &["preflight", &file, "--output", "json"])
            .await;
        assert_eq!(code(&report), Some(0), "{}", stderr(&report));
        let group = json(&report)["groups"][0].clone();
        assert_eq!(
            group["eligible"][0]["provider"],
            devnet.address_json(PROVIDER_A).as_str(),
            "{group}"
        );
        assert_eq!(
            group["ineligible"][0]["provider"],
            devnet.address_json(PROVIDER_B).as_str(),
            "{group}"
        );
        assert_eq!(group["ineligible"][0]["reason"]["kind"], "audit", "{group}");

        let revoked = devnet
            .tenant(AUDITOR, &["audit", "revoke", &a, "region=eu-west"])
            .await;
        assert_eq!(code(&revoked), Some(0), "{}", stderr(&revoked));
        let listed = devnet
            .tenant_with(devnet.env(), &["audit", "list", "--output", "json"])
            .await;
        assert_eq!(json(&listed)["attestations"], serde_json::json!([]));
        let report = devnet
            .tenant_with(devnet.env(), &["preflight", &file, "--output", "json"])
            .await;
        assert_eq!(
            json(&report)["groups"][0]["eligible"],
            serde_json::json!([])
        );

        // Revoking again is the contract's NotAttested; a malformed attribute is a usage error.
        let again = devnet
            .tenant(AUDITOR, &["audit", "revoke", &a, "region=eu-west"])
            .await;
        assert_eq!(code(&again), Some(1), "{}", stderr(&again));
        assert!(stderr(&again).contains("NotAttested"), "{}", stderr(&again));
        let bad = devnet
            .tenant(AUDITOR, &["audit", "attest", &a, "eu-west"])
            .await;
        assert_eq!(code(&bad), Some(2), "{}", stderr(&bad));
        assert!(stderr(&bad).contains("key=value"), "{}", stderr(&bad));
    })
    .await;
}

/// An Akash auditor account cannot attest here: the SDL is refused with the field, never
/// deployed as if it required no audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_akash_auditor_is_refused_naming_the_field() {
    let home = tempfile::tempdir().expect("temp dir");
    let file = home.path().join("akash.yaml");
    std::fs::write(
        &file,
        audited_sdl("akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63"),
    )
    .expect("write");
    let output =
        crate::support::run_tenant(home.path(), &[], &["validate", &file.to_string_lossy()]);
    assert_eq!(code(&output), Some(1), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.contains("profiles.placement.anywhere.signedBy.allOf[0]")
            && message.contains("akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63")
            && message.contains("0x address"),
        "{message}"
    );
}
