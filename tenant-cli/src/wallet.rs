//! Keys: Web3 Secret Storage keystores (scrypt + AES-128-CTR, as geth and foundry write them),
//! or a raw private key from `LEASEHOLD_PRIVATE_KEY` on devnets.

use std::io::{BufRead as _, IsTerminal as _};
use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;

use crate::config::{PasswordSource, Settings, env};
use crate::error::{CliError, CliResult, ExitKind};

/// `<data dir>/keystores/default.json`.
pub fn default_keystore(data_dir: &Path) -> PathBuf {
    data_dir.join("keystores").join("default.json")
}

/// Reads the password: the value, the first line of the file, or a terminal prompt.
/// `confirm` asks twice on a terminal (for new keystores).
pub fn password(source: &PasswordSource, confirm: bool) -> CliResult<String> {
    match source {
        PasswordSource::Value(password) => Ok(password.clone()),
        PasswordSource::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                CliError::usage(format!(
                    "cannot read password file {}: {error}",
                    path.display()
                ))
            })?;
            Ok(text.lines().next().unwrap_or_default().to_owned())
        }
        PasswordSource::Prompt => {
            if !std::io::stdin().is_terminal() {
                return Err(CliError::usage(format!(
                    "a keystore password is needed: set {} or {}, or run in a terminal",
                    env::PASSWORD,
                    env::PASSWORD_FILE
                )));
            }
            let first = rpassword::prompt_password("Keystore password: ")
                .map_err(|e| CliError::usage(format!("cannot read the password: {e}")))?;
            if confirm {
                let again = rpassword::prompt_password("Repeat the password: ")
                    .map_err(|e| CliError::usage(format!("cannot read the password: {e}")))?;
                if again != first {
                    return Err(CliError::failed("the passwords differ"));
                }
            }
            Ok(first)
        }
    }
}

fn split_keystore_path(path: &Path) -> CliResult<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or_else(|| CliError::usage(format!("{} is not a file path", path.display())))?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir.to_owned(), name.to_owned()))
}

fn refuse_overwrite(path: &Path) -> CliResult<()> {
    if path.exists() {
        return Err(CliError::failed(format!(
            "{} already exists; choose another --keystore path (existing keys are never overwritten)",
            path.display()
        )));
    }
    Ok(())
}

fn create_dir(dir: &Path) -> CliResult<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::usage(format!("cannot create {}: {e}", dir.display())))
}

/// Creates a fresh key, encrypted with `password`, at `path`.
pub fn new_keystore(path: &Path, password: &str) -> CliResult<PrivateKeySigner> {
    refuse_overwrite(path)?;
    let (dir, name) = split_keystore_path(path)?;
    create_dir(&dir)?;
    let (signer, _uuid) =
        PrivateKeySigner::new_keystore(&dir, &mut rand08::thread_rng(), password, Some(&name))
            .map_err(|e| {
                CliError::failed(format!("cannot write keystore {}: {e}", path.display()))
            })?;
    Ok(signer)
}

/// Parses a hex private key (with or without 0x); the error never echoes the key.
pub fn parse_private_key(text: &str) -> CliResult<PrivateKeySigner> {
    text.trim()
        .parse::<PrivateKeySigner>()
        .map_err(|_| CliError::failed("the private key is not 32 bytes of hex"))
}

/// Encrypts an existing key at `path`.
pub fn import_keystore(path: &Path, key: &PrivateKeySigner, password: &str) -> CliResult<()> {
    refuse_overwrite(path)?;
    let (dir, name) = split_keystore_path(path)?;
    create_dir(&dir)?;
    PrivateKeySigner::encrypt_keystore(
        &dir,
        &mut rand08::thread_rng(),
        key.to_bytes(),
        password,
        Some(&name),
    )
    .map_err(|e| CliError::failed(format!("cannot write keystore {}: {e}", path.display())))?;
    Ok(())
}

/// A missing keystore is a usage error that says how to get a wallet, before any
/// password is asked for.
fn require_keystore(path: &Path) -> CliResult<()> {
    if path.exists() {
        return Ok(());
    }
    Err(CliError::usage(format!(
        "no wallet yet: there is no keystore at {}. Create one with `tenant wallet new`, \
         import a key with `tenant wallet import`, or set {} (or {} on a devnet)",
        path.display(),
        env::KEYSTORE,
        env::PRIVATE_KEY
    )))
}

/// Decrypts a keystore; a wrong password is a clear error (exit 1).
pub fn open_keystore(path: &Path, password: &str) -> CliResult<PrivateKeySigner> {
    require_keystore(path)?;
    PrivateKeySigner::decrypt_keystore(path, password).map_err(|error| {
        let text = error.to_string();
        if text.contains("Mac Mismatch") || text.contains("MacMismatch") {
            CliError::failed(format!("wrong password for keystore {}", path.display()))
        } else {
            CliError::failed(format!("cannot open keystore {}: {text}", path.display()))
        }
    })
}

/// The signer the settings name: `LEASEHOLD_PRIVATE_KEY`, else the keystore.
pub fn signer(settings: &Settings) -> CliResult<PrivateKeySigner> {
    if let Some(key) = &settings.private_key {
        return parse_private_key(key)
            .map_err(|e| e.context(format!("{} is invalid", env::PRIVATE_KEY)));
    }
    require_keystore(&settings.keystore)?;
    let password = password(&settings.password, false)?;
    open_keystore(&settings.keystore, &password)
}

/// Reads a private key for `wallet import`: from a file (`-` for stdin) or the environment.
pub fn read_private_key(file: Option<&Path>, settings: &Settings) -> CliResult<PrivateKeySigner> {
    let text = match file {
        Some(path) if path == Path::new("-") => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
            line
        }
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::usage(format!("cannot read key file {}: {e}", path.display()))
        })?,
        None => match &settings.private_key {
            Some(key) => key.clone(),
            None if std::io::stdin().is_terminal() => {
                rpassword::prompt_password("Private key: ")
                    .map_err(|e| CliError::usage(format!("cannot read the key: {e}")))?
            }
            None => {
                return Err(CliError::msg(
                    ExitKind::Usage,
                    format!(
                        "no key to import: pass --private-key-file FILE (`-` for stdin) or set {}",
                        env::PRIVATE_KEY
                    ),
                ));
            }
        },
    };
    parse_private_key(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_round_trip_and_wrong_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("k.json");
        let signer = new_keystore(&path, "pw").unwrap();
        assert_eq!(
            open_keystore(&path, "pw").unwrap().address(),
            signer.address()
        );
        let err = open_keystore(&path, "nope").unwrap_err();
        assert!(
            err.error.to_string().contains("wrong password"),
            "{:#}",
            err.error
        );
        assert!(new_keystore(&path, "pw").is_err(), "must not overwrite");
    }

    #[test]
    fn private_keys_parse_without_echo() {
        let key = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        assert!(parse_private_key(key).is_ok());
        let err = parse_private_key("0xdeadbeef").unwrap_err();
        assert!(!err.error.to_string().contains("deadbeef"));
    }
}
