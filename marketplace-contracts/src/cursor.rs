//! Persisted follower cursor: the next block the follower still has to process, and the
//! hashes of blocks it finished, by which it recognises a reorg (see [`crate::Follower`]).

use std::fs;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use alloy::primitives::B256;
use serde::{Deserialize, Serialize};

/// Failure to read or write a cursor.
#[derive(Debug, thiserror::Error)]
pub enum CursorError {
    #[error("cursor file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cursor file {path} is not valid cursor JSON: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cursor store lock poisoned")]
    Poisoned,
    /// A cursor kept elsewhere (e.g. the provider's database) could not be read or written.
    #[error("cursor store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A block the follower finished reading, as it was on the chain it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    pub number: u64,
    pub hash: B256,
}

/// A follower's position: `next_block` is the first block whose logs have not yet been
/// delivered completely; `checkpoints` are finished blocks (ascending by number, at most
/// [`crate::FollowerConfig::max_checkpoints`]) whose hashes the follower compares with the
/// chain's to find a reorg and its fork point. Saved as one value, so the position and the
/// hashes it was read against never disagree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorState {
    pub next_block: u64,
    /// Absent in cursors saved before reorg detection: such a cursor is trusted as it is.
    #[serde(default)]
    pub checkpoints: Vec<BlockRef>,
}

impl CursorState {
    /// A position without checkpoints (a new follower, or an imported legacy cursor).
    pub fn at(next_block: u64) -> Self {
        Self {
            next_block,
            checkpoints: Vec::new(),
        }
    }
}

/// Where the follower keeps its position.
pub trait CursorStore {
    fn load(&self) -> impl Future<Output = Result<Option<CursorState>, CursorError>> + Send;
    fn save(&self, state: &CursorState) -> impl Future<Output = Result<(), CursorError>> + Send;
}

/// A cursor kept in a small JSON file, replaced atomically (temp file + fsync + rename) so a crash
/// leaves either the old or the new position, never a torn file.
#[derive(Debug, Clone)]
pub struct FileCursorStore {
    path: PathBuf,
}

impl FileCursorStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: std::io::Error) -> CursorError {
        CursorError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn temp_path(&self) -> PathBuf {
        let mut name = self
            .path
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "cursor".into());
        name.push(".tmp");
        self.path.with_file_name(name)
    }
}

impl CursorStore for FileCursorStore {
    async fn load(&self) -> Result<Option<CursorState>, CursorError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.io_error(err)),
        };
        let cursor: CursorState =
            serde_json::from_str(&text).map_err(|source| CursorError::Corrupt {
                path: self.path.clone(),
                source,
            })?;
        Ok(Some(cursor))
    }

    async fn save(&self, state: &CursorState) -> Result<(), CursorError> {
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|e| self.io_error(e))?;
        }
        let temp = self.temp_path();
        let body = serde_json::to_vec(state).map_err(|source| CursorError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let mut file = fs::File::create(&temp).map_err(|e| self.io_error(e))?;
        file.write_all(&body).map_err(|e| self.io_error(e))?;
        file.sync_all().map_err(|e| self.io_error(e))?;
        drop(file);
        fs::rename(&temp, &self.path).map_err(|e| self.io_error(e))
    }
}

/// A cursor that lives only as long as the process: for tools that always start from a fixed block.
#[derive(Debug, Default)]
pub struct MemoryCursorStore {
    state: Mutex<Option<CursorState>>,
}

impl CursorStore for MemoryCursorStore {
    async fn load(&self) -> Result<Option<CursorState>, CursorError> {
        self.state
            .lock()
            .map(|g| g.clone())
            .map_err(|_| CursorError::Poisoned)
    }

    async fn save(&self, state: &CursorState) -> Result<(), CursorError> {
        *self.state.lock().map_err(|_| CursorError::Poisoned)? = Some(state.clone());
        Ok(())
    }
}

impl<T: CursorStore + Sync> CursorStore for &T {
    async fn load(&self) -> Result<Option<CursorState>, CursorError> {
        (**self).load().await
    }

    async fn save(&self, state: &CursorState) -> Result<(), CursorError> {
        (**self).save(state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_cursor_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCursorStore::new(dir.path().join("sub/cursor.json"));
        assert_eq!(store.load().await.unwrap(), None);
        store.save(&CursorState::at(42)).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(CursorState::at(42)));
        let with_hashes = CursorState {
            next_block: 43,
            checkpoints: vec![BlockRef {
                number: 42,
                hash: B256::repeat_byte(7),
            }],
        };
        store.save(&with_hashes).await.unwrap();
        assert_eq!(store.load().await.unwrap(), Some(with_hashes));
        assert!(
            !store.temp_path().exists(),
            "temp file must be renamed away"
        );
    }

    #[tokio::test]
    async fn a_cursor_file_from_before_checkpoints_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        fs::write(&path, r#"{"next_block":17}"#).unwrap();
        let loaded = FileCursorStore::new(&path).load().await.unwrap();
        assert_eq!(loaded, Some(CursorState::at(17)));
    }

    #[tokio::test]
    async fn corrupt_cursor_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cursor.json");
        fs::write(&path, "{not json").unwrap();
        let err = FileCursorStore::new(&path).load().await.unwrap_err();
        assert!(matches!(err, CursorError::Corrupt { .. }));
        assert!(err.to_string().contains("cursor.json"), "{err}");
    }

    #[tokio::test]
    async fn memory_cursor_keeps_last_value() {
        let store = MemoryCursorStore::default();
        assert_eq!(store.load().await.unwrap(), None);
        store.save(&CursorState::at(7)).await.unwrap();
        let by_ref = &store;
        assert_eq!(by_ref.load().await.unwrap(), Some(CursorState::at(7)));
    }
}
