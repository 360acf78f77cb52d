//! `tenant wallet`: keystores with passwords, balances and the devnet faucet.

use alloy::signers::local::PrivateKeySigner;

use crate::support::{
    Devnet, FUNDING, OTHER_TENANT, TENANT, UNFUNDED, code, json, run_tenant, stderr, within,
};

#[test]
fn new_import_address_round_trip_with_a_password() {
    let home = tempfile::tempdir().expect("temp dir");
    let keystore = home.path().join("keys").join("tenant.json");
    let keystore_arg = keystore.to_string_lossy().into_owned();
    let env = vec![("LEASEHOLD_PASSWORD", "correct horse".to_owned())];

    let created = run_tenant(
        home.path(),
        &env,
        &[
            "wallet",
            "new",
            "--keystore",
            &keystore_arg,
            "--output",
            "json",
        ],
    );
    assert_eq!(code(&created), Some(0), "{}", stderr(&created));
    let address = json(&created)["address"]
        .as_str()
        .expect("address")
        .to_owned();

    // The file is a standard keystore that alloy decrypts to the same key.
    let signer = PrivateKeySigner::decrypt_keystore(&keystore, "correct horse").expect("decrypt");
    assert_eq!(signer.address().to_string().to_lowercase(), address);

    let shown = run_tenant(
        home.path(),
        &env,
        &[
            "wallet",
            "address",
            "--keystore",
            &keystore_arg,
            "--output",
            "json",
        ],
    );
    assert_eq!(code(&shown), Some(0), "{}", stderr(&shown));
    assert_eq!(json(&shown)["address"], address.as_str());

    let wrong = run_tenant(
        home.path(),
        &[("LEASEHOLD_PASSWORD", "battery staple".to_owned())],
        &["wallet", "address", "--keystore", &keystore_arg],
    );
    assert_eq!(code(&wrong), Some(1));
    assert!(
        stderr(&wrong).contains("wrong password"),
        "{}",
        stderr(&wrong)
    );

    // Never overwrite an existing key.
    let again = run_tenant(
        home.path(),
        &env,
        &["wallet", "new", "--keystore", &keystore_arg],
    );
    assert_eq!(code(&again), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    // Import a known key from a file, through the default keystore location (XDG data dir).
    let key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    let key_file = home.path().join("key.txt");
    std::fs::write(&key_file, format!("{key}\n")).expect("write key");
    let pw_file = home.path().join("pw.txt");
    std::fs::write(&pw_file, "from a file\n").expect("write password");
    let file_env = vec![(
        "LEASEHOLD_PASSWORD_FILE",
        pw_file.to_string_lossy().into_owned(),
    )];
    let imported = run_tenant(
        home.path(),
        &file_env,
        &[
            "wallet",
            "import",
            "--private-key-file",
            &key_file.to_string_lossy(),
            "--output",
            "json",
        ],
    );
    assert_eq!(code(&imported), Some(0), "{}", stderr(&imported));
    let expected: PrivateKeySigner = key.parse().expect("key");
    assert_eq!(
        json(&imported)["address"],
        expected.address().to_string().to_lowercase()
    );
    let default_keystore = home.path().join("data/leasehold/keystores/default.json");
    assert!(default_keystore.exists());
    let shown = run_tenant(home.path(), &file_env, &["wallet", "address"]);
    assert_eq!(code(&shown), Some(0), "{}", stderr(&shown));
    assert!(String::from_utf8_lossy(&shown.stdout).contains(&expected.address().to_string()));

    // No password and no terminal: a usage error that says how to provide one.
    let no_password = run_tenant(home.path(), &[], &["wallet", "address"]);
    assert_eq!(code(&no_password), Some(2));
    assert!(
        stderr(&no_password).contains("LEASEHOLD_PASSWORD"),
        "{}",
        stderr(&no_password)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faucet_and_balance() {
    within(async {
        let devnet = Devnet::start().await;
        let before = devnet
            .tenant(UNFUNDED, &["wallet", "balance", "--output", "json"])
            .await;
        assert_eq!(code(&before), Some(0), "{}", stderr(&before));
        let before = json(&before);
        assert_eq!(before["token_balance"], "0");
        assert_ne!(before["eth_wei"], "0");

        let minted = devnet
            .tenant(
                UNFUNDED,
                &["wallet", "faucet", "2500000", "--output", "json"],
            )
            .await;
        assert_eq!(code(&minted), Some(0), "{}", stderr(&minted));
        assert_eq!(json(&minted)["token_balance"], "2500000");

        // Someone else's balance needs no key; text mode shows token units.
        let other = devnet.address(TENANT).to_string();
        let theirs = devnet
            .tenant_with(devnet.env(), &["wallet", "balance", &other])
            .await;
        assert_eq!(code(&theirs), Some(0), "{}", stderr(&theirs));
        let text = String::from_utf8_lossy(&theirs.stdout).into_owned();
        assert!(text.contains(&format!("{FUNDING} base units")), "{text}");
        assert!(text.contains("100000 ("), "{text}");

        // Minting to another address.
        let to = devnet.address(OTHER_TENANT).to_string();
        let minted = devnet
            .tenant(
                UNFUNDED,
                &["wallet", "faucet", "7", "--to", &to, "--output", "json"],
            )
            .await;
        assert_eq!(code(&minted), Some(0), "{}", stderr(&minted));
        assert_eq!(json(&minted)["token_balance"], (FUNDING + 7).to_string());
    })
    .await;
}

#[test]
fn a_new_user_without_a_wallet_is_told_to_create_one_not_asked_for_a_password() {
    let home = tempfile::tempdir().expect("temp dir");
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/examples/hello.yaml"
    );
    // No password is set either: the missing keystore must be reported before any
    // password is asked for (or found missing) and before the chain is touched.
    let env = vec![("LEASEHOLD_RPC_URL", "http://127.0.0.1:9".to_owned())];
    let deploy = run_tenant(home.path(), &env, &["deploy", manifest]);
    assert_eq!(code(&deploy), Some(2), "{}", stderr(&deploy));
    let message = stderr(&deploy);
    assert!(message.contains("no wallet yet"), "{message}");
    assert!(message.contains("tenant wallet new"), "{message}");
    assert!(!message.contains("password"), "{message}");
}
