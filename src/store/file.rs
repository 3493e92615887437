use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{StoreError, StoreErrorKind, StoreFuture, TokenStore, serde};
use crate::token::TokenSet;

/// Keeps the token set in a JSON file, so that a restarted program continues its session
/// without logging in again.
///
/// Writes are atomic (a temporary file in the same folder, then a rename) and the file is
/// readable by its owner only (mode `0600` on Unix). A missing file is no session; a corrupt
/// or unreadable one is logged as a warning and treated as no session (a fresh login), never a
/// panic. For one process: it has no lock (see [`RedisStore`](super) for many).
#[derive(Clone)]
pub struct FileStore {
    path: Arc<Path>,
}

impl FileStore {
    /// A store in the file at `path` (created on the first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into().into(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

fn unavailable(error: io::Error) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, Some(error.into()))
}

/// Why a token file gave no token set.
enum Unusable {
    Unreadable(io::Error),
    Corrupt,
}

fn read(path: &Path) -> Result<Option<TokenSet>, Unusable> {
    match std::fs::read(path) {
        Ok(bytes) => serde::decode(&bytes).map(Some).ok_or(Unusable::Corrupt),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(Unusable::Unreadable(error)),
    }
}

fn write(path: &Path, json: &str) -> io::Result<()> {
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty());
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the token path has no file name",
        )
    })?;
    // A name no one can guess, created new: a planted file or link is never written through,
    // and two stores on one path do not collide.
    let mut temporary = name.to_owned();
    let random = RandomState::new().hash_one(std::process::id());
    temporary.push(format!(".{random:016x}.tmp"));
    let temporary = dir.map_or_else(|| PathBuf::from(&temporary), |dir| dir.join(&temporary));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    let outcome = (|| {
        file.write_all(json.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // Make the rename itself durable: after a crash, the old file (with a refresh token
        // that may be spent) must not come back.
        #[cfg(unix)]
        if let Some(dir) = dir {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if outcome.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    outcome
}

impl TokenStore for FileStore {
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>> {
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            let read = {
                let path = Arc::clone(&path);
                tokio::task::spawn_blocking(move || read(&path))
            };
            let outcome = read.await.map_err(|error| {
                StoreError::new(StoreErrorKind::Unavailable, Some(error.into()))
            })?;
            // Logged here, not on the blocking thread, so the caller's subscriber sees it.
            Ok(match outcome {
                Ok(tokens) => tokens,
                Err(Unusable::Corrupt) => {
                    tracing::warn!(path = %path.display(), "the token file is corrupt; logging in again");
                    None
                }
                Err(Unusable::Unreadable(error)) => {
                    tracing::warn!(path = %path.display(), %error, "the token file cannot be read; logging in again");
                    None
                }
            })
        })
    }

    fn save<'a>(
        &'a self,
        tokens: &'a TokenSet,
        _replaced: Option<&'a TokenSet>,
    ) -> StoreFuture<'a, ()> {
        let path = Arc::clone(&self.path);
        let json = zeroize::Zeroizing::new(serde::encode(tokens));
        Box::pin(async move {
            tokio::task::spawn_blocking(move || write(&path, &json))
                .await
                .map_err(|error| StoreError::new(StoreErrorKind::Unavailable, Some(error.into())))?
                .map_err(unavailable)
        })
    }
}
