//! Token stores: the session's one truth, kept across restarts and shared by many processes.
//!
//! Give a layer a store with [`AuthLayerBuilder::store`](crate::AuthLayerBuilder::store); then
//! the session lives there, and the cache in memory follows it:
//!
//! - **Every refresh goes through the store.** Take its refresh lock (so one process at a time
//!   refreshes), re-read it: a token set another process (or an earlier run, or the application)
//!   saved is used as it is while it is valid, and otherwise its refresh token is the one
//!   presented (it is the newest: another process may have rotated ours); the result is saved
//!   with a compare-and-swap on the stored set's version; then the lock is released.
//! - **The application's word goes through the store.** [`AuthHandle::set_tokens`] writes the
//!   new set (a compare-and-swap like every save) before the cache takes it;
//!   [`AuthHandle::clear`] replaces the stored session with a tombstone that holds no secret.
//!   A stored set older than the application's last word is never used again: versions only
//!   go forward.
//! - **A rotation that could not be saved is saved as soon as the store answers again**, by a
//!   task that keeps the refresh lock (renewed) meanwhile, so no other process refreshes with
//!   the refresh token this one just spent.
//! - **A lost lock stops the holder**: it checks the lock right before calling the token
//!   endpoint, and a save after a lost lock can only succeed if nobody saved since (the
//!   compare-and-swap), so it never overwrites a newer set.
//!
//! Stores: [`FileStore`] (one machine: a JSON file and a lock file beside it; processes on that
//! machine share it), [`RedisStore`] (feature `redis`: many machines). For other stores,
//! implement [`TokenStore`].
//!
//! [`AuthHandle::set_tokens`]: crate::AuthHandle::set_tokens
//! [`AuthHandle::clear`]: crate::AuthHandle::clear
//!
//! # Example
//!
//! ```
//! # use std::convert::Infallible;
//! # use std::time::Duration;
//! use tower::service_fn;
//! use tower_auth_refresh::store::FileStore;
//! use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_auth_refresh::RefreshError> {
//! # let dir = std::env::temp_dir().join(format!("tar-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! # let path = dir.join("session.json");
//! let refresher = service_fn(|_: RefreshRequest| async {
//!     Ok::<_, Infallible>(TokenSet::new("token").with_expires_in(Duration::from_secs(900)))
//! });
//! // A restarted program reads the saved session instead of logging in again.
//! let layer = AuthLayer::builder(refresher).store(FileStore::new(&path)).build();
//! layer.handle().token().await?;
//! assert!(path.exists());
//!
//! // Logging out locally: the stored session is gone too.
//! layer.handle().clear().await?;
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

mod file;
#[cfg(feature = "keyed")]
mod keyed;
mod lock;
#[cfg(feature = "redis")]
mod redis;
mod serde;
pub(crate) mod session;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use self::file::FileStore;
#[cfg(feature = "keyed")]
#[cfg_attr(docsrs, doc(cfg(feature = "keyed")))]
pub use self::keyed::{KeyedFileStore, KeyedStore};
pub use self::lock::{LockToken, LockWatch};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
use crate::refresh::BoxError;
use crate::token::TokenSet;

/// A boxed future, as the store methods return (they run off the hot path).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What a store holds: a token set (none after a [`TokenStore::delete`]) and its version.
///
/// Versions start at 1 with the first save and grow by one with each save or delete; 0 is a
/// store that was never written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// The token set, if there is a session.
    pub tokens: Option<TokenSet>,
    /// The version of what is stored.
    pub version: u64,
}

/// Where a session lives. See the [module docs](self) for how the cache uses it.
///
/// Every write is a compare-and-swap on the version: it must fail with
/// [`StoreErrorKind::Conflict`] when the stored version is not `replaces`, so that no writer
/// ever overwrites a newer set.
pub trait TokenStore: Send + Sync + 'static {
    /// What is stored. An unreadable or corrupt value is reported (logged) and treated as no
    /// session, with the version it had if that can be read, else 0.
    fn load(&self) -> StoreFuture<'_, Stored>;

    /// Saves `tokens` in place of version `replaces`; returns the new version (`replaces + 1`).
    fn save<'a>(&'a self, tokens: &'a TokenSet, replaces: u64) -> StoreFuture<'a, u64>;

    /// Deletes the session stored as version `replaces`, leaving a version without tokens (and
    /// without any secret); returns the new version.
    fn delete(&self, replaces: u64) -> StoreFuture<'_, u64>;

    /// Takes the lock that makes one process at a time refresh, waiting for it (bounded).
    /// `Ok(None)`: this store has no lock.
    fn lock(&self) -> StoreFuture<'_, Option<LockToken>> {
        Box::pin(async { Ok(None) })
    }

    /// Gives the lock back (only if `token` still holds it).
    fn unlock(&self, token: LockToken) -> StoreFuture<'_, ()> {
        drop(token);
        Box::pin(async { Ok(()) })
    }
}

impl<T: TokenStore> TokenStore for Arc<T> {
    fn load(&self) -> StoreFuture<'_, Stored> {
        (**self).load()
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet, replaces: u64) -> StoreFuture<'a, u64> {
        (**self).save(tokens, replaces)
    }

    fn delete(&self, replaces: u64) -> StoreFuture<'_, u64> {
        (**self).delete(replaces)
    }

    fn lock(&self) -> StoreFuture<'_, Option<LockToken>> {
        (**self).lock()
    }

    fn unlock(&self, token: LockToken) -> StoreFuture<'_, ()> {
        (**self).unlock(token)
    }
}

/// What went wrong with a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store cannot be reached or used (Redis down, a file that cannot be written).
    Unavailable,
    /// The store did not answer in time.
    Timeout,
    /// The lock was not obtained in time.
    LockTimeout,
    /// The lock was lost (it expired while the store could not renew it) before the token
    /// endpoint was called: another process may be refreshing.
    LockLost,
    /// The stored version changed under a compare-and-swap.
    Conflict,
}

/// An error of a [`TokenStore`].
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<BoxError>,
}

impl StoreError {
    /// An error of this kind, with its cause.
    pub fn new(kind: StoreErrorKind, source: Option<BoxError>) -> Self {
        Self { kind, source }
    }

    /// What went wrong.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            StoreErrorKind::Unavailable => "the token store is unavailable",
            StoreErrorKind::Timeout => "the token store did not answer in time",
            StoreErrorKind::LockTimeout => {
                "the token store's refresh lock was not obtained in time"
            }
            StoreErrorKind::LockLost => "the token store's refresh lock was lost",
            StoreErrorKind::Conflict => "the stored token set changed meanwhile",
        })?;
        // The cause (an I/O or Redis error) holds no secret.
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}
