//! Web3 Secret Storage keystores: the one place a keystore file becomes a signer, for the
//! provider daemon and `leasehold-deploy` alike.

use std::path::{Path, PathBuf};

use alloy::signers::local::{LocalSignerError, PrivateKeySigner};
use eth_keystore::KeystoreError as FileError;

/// Why a keystore did not decrypt. Messages name the file and never echo the password.
#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("keystore {}: file not found", path.display())]
    NotFound { path: PathBuf },
    #[error("keystore {}: is not a file", path.display())]
    NotAFile { path: PathBuf },
    #[error("keystore {}: cannot be read: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("keystore {}: is not a Web3 Secret Storage JSON file: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("keystore {}: wrong password (the MAC does not match)", path.display())]
    WrongPassword { path: PathBuf },
    #[error("keystore {}: cannot be decrypted: {reason}", path.display())]
    Undecryptable { path: PathBuf, reason: String },
}

/// Decrypts the keystore at `path` with `password`.
pub fn decrypt_keystore(path: &Path, password: &str) -> Result<PrivateKeySigner, KeystoreError> {
    let path_buf = || path.to_owned();
    // Checked first so a missing file is not reported as a decryption failure.
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => {}
        Ok(_) => return Err(KeystoreError::NotAFile { path: path_buf() }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeystoreError::NotFound { path: path_buf() });
        }
        Err(error) => {
            return Err(KeystoreError::Unreadable {
                path: path_buf(),
                reason: error.to_string(),
            });
        }
    }
    PrivateKeySigner::decrypt_keystore(path, password).map_err(|error| match error {
        LocalSignerError::EthKeystoreError(FileError::MacMismatch) => {
            KeystoreError::WrongPassword { path: path_buf() }
        }
        LocalSignerError::EthKeystoreError(FileError::SerdeJson(reason)) => {
            KeystoreError::Malformed {
                path: path_buf(),
                reason: reason.to_string(),
            }
        }
        LocalSignerError::EthKeystoreError(FileError::StdIo(reason)) => KeystoreError::Unreadable {
            path: path_buf(),
            reason: reason.to_string(),
        },
        other => KeystoreError::Undecryptable {
            path: path_buf(),
            reason: other.to_string(),
        },
    })
}
