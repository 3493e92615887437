//! Token stores: keep the session across restarts, and share one login and one refresh chain
//! among many processes.
//!
//! A [`TokenStore`] holds the current [`TokenSet`]. [`StoredRefresher`] wraps any refresher
//! so that every refresh goes through the store:
//!
//! 1. take the store's refresh lock (a no-op for a single-process store), so only one process
//!    refreshes at a time;
//! 2. re-read the store: if another process (or an earlier run) saved a token this one has not
//!    seen and it is still valid, use it — no refresh;
//! 3. otherwise refresh with the freshest refresh token known (the stored one: another process
//!    may have rotated it), save the result with a compare-and-swap keyed by the token set it
//!    replaces, and release the lock.
//!
//! Stores: [`FileStore`] (one process; survives restarts), [`RedisStore`] (feature `redis`;
//! many processes). For other stores, implement [`TokenStore`], or watch every new token set
//! with [`AuthLayerBuilder::on_tokens`](crate::AuthLayerBuilder::on_tokens).
//!
//! # Example
//!
//! ```
//! # use std::convert::Infallible;
//! # use std::time::Duration;
//! use tower::service_fn;
//! use tower_auth_refresh::store::{FileStore, StoredRefresher};
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
//! let stored = StoredRefresher::new(refresher, FileStore::new(&path));
//! let layer = AuthLayer::new(stored);
//! layer.handle().token().await?;
//! assert!(path.exists());
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok(())
//! # }
//! ```

mod file;
#[cfg(feature = "redis")]
mod redis;
mod refresher;
mod serde;

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;

pub use self::file::FileStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
pub use self::refresher::StoredRefresher;
use crate::refresh::BoxError;
use crate::token::TokenSet;

/// A boxed future, as the store methods return (they run off the hot path).
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Proof of holding a store's refresh lock, to give back to [`TokenStore::unlock`].
///
/// A store may keep the lock alive while the token is held (Redis renews it); dropping the
/// token stops that, and the lock then expires by itself.
pub struct LockToken {
    value: String,
    renewal: Option<tokio::task::AbortHandle>,
}

impl LockToken {
    /// A lock token with this value (a random string that only its holder knows).
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            renewal: None,
        }
    }

    /// The same token, keeping the lock alive with `renewal` until it is dropped.
    pub fn renewed_by(mut self, renewal: tokio::task::AbortHandle) -> Self {
        self.renewal = Some(renewal);
        self
    }

    /// The value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl Drop for LockToken {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LockToken(..)")
    }
}

/// Where the current token set lives, for [`StoredRefresher`].
pub trait TokenStore: Send + Sync + 'static {
    /// The saved token set, if any. An unreadable or corrupt one is reported (logged) and
    /// treated as none: the refresher then logs in.
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>>;

    /// Saves `tokens` in place of `replaced`, the token set the refresh started from (`None`:
    /// there was none). A store shared by many processes makes this a compare-and-swap and
    /// answers [`StoreErrorKind::Conflict`] when the stored set is no longer `replaced`.
    fn save<'a>(
        &'a self,
        tokens: &'a TokenSet,
        replaced: Option<&'a TokenSet>,
    ) -> StoreFuture<'a, ()>;

    /// Takes the lock that makes one process at a time refresh, waiting for it (bounded).
    /// `Ok(None)`: this store has no lock (one process: the cache's single flight is enough).
    fn lock(&self) -> StoreFuture<'_, Option<LockToken>> {
        Box::pin(async { Ok(None) })
    }

    /// Gives the lock back (only if `token` still holds it).
    fn unlock(&self, token: LockToken) -> StoreFuture<'_, ()> {
        let _ = token;
        Box::pin(async { Ok(()) })
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
    /// The stored token set changed under a compare-and-swap.
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
            StoreErrorKind::Conflict => "the stored token set changed during the refresh",
        })
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}
