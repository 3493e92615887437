//! Stores of many sessions, one per key of a keyed layer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{FileStore, TokenStore};

/// A store of many sessions, named by their keys: what a
/// [`KeyedAuthLayer`](crate::keyed::KeyedAuthLayer) keeps its sessions in, each in a
/// [`TokenStore`] of its own (with its own lock, so sessions refresh independently).
///
/// [`RedisStore`](super::RedisStore) is one (keys `<prefix><name>:tokens` and
/// `<prefix><name>:lock`, one connection for all), and so is [`KeyedFileStore`] (a file per
/// session in one folder).
pub trait KeyedStore: Send + Sync + 'static {
    /// The store of one session.
    type Store: TokenStore;

    /// The store of the session named `name` (its key's `Display`). Called when the session
    /// is made in memory; it must not block (no I/O: the store connects when first used).
    fn store_for(&self, name: &str) -> Self::Store;
}

#[cfg(feature = "redis")]
impl KeyedStore for super::RedisStore {
    type Store = super::RedisStore;

    fn store_for(&self, name: &str) -> Self::Store {
        self.named(name)
    }
}

/// Sessions in files of one folder, a [`FileStore`] each: the session named `alice` in
/// `<folder>/alice.json`, locked through `alice.json.lock`. The folder is made (readable by its
/// owner only, on Unix) with the first session saved.
///
/// Names are written into file names as they are where they are lower-case ASCII letters,
/// digits, `-` or `_` (and `.` not first), and percent-encoded otherwise (`alice@example.com`
/// is `alice%40example.com.json`, `Alice` is `%41lice.json`), so distinct names never share a
/// file, not even on a file system that ignores case (macOS, Windows), and no name leaves the
/// folder; names that Windows reserves for devices (`con`, `nul`, `com1`, …, also before a
/// dot) get their first letter encoded (`%63on.json`). A name too long for the file system
/// fails the session's store operations with
/// [`StoreErrorKind::Unavailable`](super::StoreErrorKind::Unavailable).
#[derive(Clone)]
pub struct KeyedFileStore {
    folder: Arc<Path>,
    lock_timeout: Duration,
}

impl KeyedFileStore {
    /// Sessions in files of `folder`.
    pub fn new(folder: impl Into<PathBuf>) -> Self {
        Self {
            folder: folder.into().into(),
            lock_timeout: Duration::from_secs(40),
        }
    }

    /// How long to wait for a session's refresh lock; see [`FileStore::lock_timeout`].
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// The file the session named `name` is kept in.
    pub fn path_of(&self, name: &str) -> PathBuf {
        let mut file = String::with_capacity(name.len() + 5);
        for (index, byte) in name.bytes().enumerate() {
            // Upper case is encoded: `Alice` and `alice` are one file where case is ignored.
            let kept = byte.is_ascii_lowercase()
                || byte.is_ascii_digit()
                || byte == b'-'
                || byte == b'_'
                || (byte == b'.' && index > 0);
            if kept {
                file.push(char::from(byte));
            } else {
                file.push_str(&format!("%{byte:02X}"));
            }
        }
        // Windows opens a device, not a file, for `con.json`, `nul.tar.json`, `com1.json`…
        // (the part before the first dot decides): encode the first letter of those.
        let device = file.split('.').next().is_some_and(|stem| {
            matches!(stem, "con" | "prn" | "aux" | "nul")
                || (stem.len() == 4
                    && (stem.starts_with("com") || stem.starts_with("lpt"))
                    && stem.as_bytes()[3].is_ascii_digit())
        });
        if device {
            let first = file.remove(0);
            file.insert_str(0, &format!("%{:02X}", u32::from(first)));
        }
        file.push_str(".json");
        self.folder.join(file)
    }
}

impl KeyedStore for KeyedFileStore {
    type Store = FileStore;

    fn store_for(&self, name: &str) -> FileStore {
        FileStore::new(self.path_of(name))
            .lock_timeout(self.lock_timeout)
            .making_folder()
    }
}

impl fmt::Debug for KeyedFileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedFileStore")
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_file_names_that_stay_in_the_folder_and_never_collide() {
        let store = KeyedFileStore::new("/sessions");
        let name = |key: &str| {
            store
                .path_of(key)
                .strip_prefix("/sessions")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(name("alice"), "alice.json");
        assert_eq!(name("alice@example.com"), "alice%40example.com.json");
        assert_eq!(name("../etc/passwd"), "%2E.%2Fetc%2Fpasswd.json");
        assert_eq!(name("a%40"), "a%2540.json");
        assert_eq!(name(""), ".json");
        assert_eq!(name("é"), "%C3%A9.json");
        assert_eq!(name("Alice"), "%41lice.json");
        // Distinct even where the file system ignores case.
        let folded: std::collections::HashSet<String> =
            ["Alice", "alice", "ALICE", "a%41", "%4a", "J"]
                .iter()
                .map(|key| name(key).to_lowercase())
                .collect();
        assert_eq!(folded.len(), 6, "{folded:?}");
        // Device names on Windows, with or without more after a dot; not their longer cousins.
        assert_eq!(name("con"), "%63on.json");
        assert_eq!(name("nul.tar"), "%6Eul.tar.json");
        assert_eq!(name("com1"), "%63om1.json");
        assert_eq!(name("lpt9"), "%6Cpt9.json");
        assert_eq!(name("console"), "console.json");
        assert_eq!(name("com10"), "com10.json");
        assert_eq!(name("CON"), "%43%4F%4E.json");
        assert_ne!(name("con"), name("%63on"));
        for key in ["../x", "/x", "x/../../y", ".."] {
            assert_eq!(store.path_of(key).parent(), Some(Path::new("/sessions")));
        }
    }
}
