use std::fmt;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, RandomState};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fs4::fs_std::FileExt;
use zeroize::Zeroizing;

use super::{LockToken, StoreError, StoreErrorKind, StoreFuture, Stored, TokenStore, serde};
use crate::token::TokenSet;

/// Keeps the session in a JSON file, so that a restarted program continues its session without
/// logging in again, and every process on the machine that uses the same file shares one login
/// and one refresh chain.
///
/// - Writes are atomic (a temporary file in the same folder, then a rename, then a sync of the
///   folder) and the file is readable by its owner only (mode `0600` on Unix).
/// - The refresh lock is an advisory lock (`flock` on Unix, `LockFileEx` on Windows) on a
///   sibling file, `<file>.lock`, held across read → refresh → write: two processes, or two
///   layers in one program, never refresh with the same refresh token. A process that dies
///   releases it at once. Waiting for it is bounded (default 40 s, then
///   [`StoreErrorKind::LockTimeout`]).
/// - A missing file is no session; a corrupt or unreadable one is logged as a warning and
///   treated as no session (a fresh login), never a panic.
/// - The JSON read and written is wiped from memory when dropped.
#[derive(Clone)]
pub struct FileStore {
    path: Arc<Path>,
    lock_path: Arc<Path>,
    lock_timeout: Duration,
    /// Whether a missing folder is made (a keyed store's); else it is an error.
    make_folder: bool,
}

/// How often a waiter tries the lock.
const LOCK_POLL: Duration = Duration::from_millis(20);

impl FileStore {
    /// A store in the file at `path` (created on the first save), locked through `<path>.lock`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path: PathBuf = path.into();
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        Self {
            path: path.into(),
            lock_path: PathBuf::from(lock_path).into(),
            lock_timeout: Duration::from_secs(40),
            make_folder: false,
        }
    }

    /// Makes the file's folder when it is missing, instead of failing.
    #[cfg(feature = "keyed")]
    pub(crate) fn making_folder(mut self) -> Self {
        self.make_folder = true;
        self
    }

    /// How long to wait for the refresh lock (default 40 s: longer than a refresh takes).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
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
            .finish_non_exhaustive()
    }
}

fn unavailable(error: impl Into<crate::refresh::BoxError>) -> StoreError {
    StoreError::new(StoreErrorKind::Unavailable, Some(error.into()))
}

/// Why a token file gave no session.
enum Unusable {
    Unreadable(io::Error),
    Corrupt,
}

fn read(path: &Path) -> Result<Stored, Unusable> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            serde::decode(&bytes).ok_or(Unusable::Corrupt)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Stored::default()),
        Err(error) => Err(Unusable::Unreadable(error)),
    }
}

/// The version stored now, for a compare-and-swap: a corrupt file counts as version 0.
fn current_version(path: &Path) -> io::Result<u64> {
    match read(path) {
        Ok(stored) => Ok(stored.version),
        Err(Unusable::Corrupt) => Ok(0),
        Err(Unusable::Unreadable(error)) => Err(error),
    }
}

/// Writes `tokens` as the version after `replaces`, if that is what is stored.
fn swap(
    path: &Path,
    tokens: Option<&TokenSet>,
    replaces: u64,
    make_folder: bool,
) -> Result<u64, StoreError> {
    let stored = current_version(path).map_err(unavailable)?;
    if stored != replaces {
        return Err(StoreError::new(StoreErrorKind::Conflict, None));
    }
    let version = replaces.saturating_add(1);
    write(path, &serde::encode(tokens, version), make_folder).map_err(unavailable)?;
    Ok(version)
}

fn write(path: &Path, json: &[u8], make_folder: bool) -> io::Result<()> {
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
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = open_in_dir(&options, &temporary, make_folder)?;
    let outcome = (|| {
        file.write_all(json)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        // Make the rename itself durable: after a crash, the old file (with a refresh token
        // that may be spent) must not come back.
        #[cfg(unix)]
        if let Some(dir) = dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if outcome.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    outcome
}

/// Opens `path`; if its folder is missing and `make_folder`, makes it first (a keyed store's
/// folder, made with its first session), readable by its owner only on Unix.
fn open_in_dir(options: &OpenOptions, path: &Path, make_folder: bool) -> io::Result<File> {
    match (options.open(path), path.parent()) {
        (Err(error), Some(dir)) if make_folder && error.kind() == io::ErrorKind::NotFound => {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir)?;
            options.open(path)
        }
        (opened, _) => opened,
    }
}

fn open_lock_file(path: &Path, make_folder: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    open_in_dir(&options, path, make_folder)
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(unavailable)?
}

impl TokenStore for FileStore {
    fn load(&self) -> StoreFuture<'_, Stored> {
        let path = Arc::clone(&self.path);
        Box::pin(async move {
            let read = {
                let path = Arc::clone(&path);
                tokio::task::spawn_blocking(move || read(&path))
            };
            let outcome = read.await.map_err(unavailable)?;
            // Logged here, not on the blocking thread, so the caller's subscriber sees it.
            Ok(match outcome {
                Ok(stored) => stored,
                Err(Unusable::Corrupt) => {
                    tracing::warn!(path = %path.display(), "the token file is corrupt; logging in again");
                    Stored::default()
                }
                Err(Unusable::Unreadable(error)) => {
                    tracing::warn!(path = %path.display(), %error, "the token file cannot be read; logging in again");
                    Stored::default()
                }
            })
        })
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet, replaces: u64) -> StoreFuture<'a, u64> {
        let (path, tokens) = (Arc::clone(&self.path), tokens.clone());
        let make_folder = self.make_folder;
        Box::pin(blocking(move || {
            swap(&path, Some(&tokens), replaces, make_folder)
        }))
    }

    fn delete(&self, replaces: u64) -> StoreFuture<'_, u64> {
        let (path, make_folder) = (Arc::clone(&self.path), self.make_folder);
        Box::pin(blocking(move || swap(&path, None, replaces, make_folder)))
    }

    fn lock(&self) -> StoreFuture<'_, Option<LockToken>> {
        let (lock_path, timeout) = (Arc::clone(&self.lock_path), self.lock_timeout);
        let make_folder = self.make_folder;
        Box::pin(async move {
            let file = {
                let lock_path = Arc::clone(&lock_path);
                blocking(move || open_lock_file(&lock_path, make_folder).map_err(unavailable))
                    .await?
            };
            let give_up = crate::token::instant_after(tokio::time::Instant::now(), timeout);
            loop {
                // Non-blocking: an advisory-lock attempt is one system call.
                match FileExt::try_lock_exclusive(&file) {
                    Ok(true) => return Ok(Some(LockToken::new("file").holding(file))),
                    Ok(false) => {}
                    Err(error) => return Err(unavailable(error)),
                }
                if tokio::time::Instant::now() >= give_up {
                    return Err(StoreError::new(StoreErrorKind::LockTimeout, None));
                }
                tokio::time::sleep(LOCK_POLL).await;
            }
        })
    }
}
