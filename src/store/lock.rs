//! Proof of holding a store's refresh lock, and what its holder knows of it.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::task::AbortHandle;
use tokio::time::Instant;

/// Proof of holding a store's refresh lock, to give back to
/// [`TokenStore::unlock`](super::TokenStore::unlock).
///
/// A lock that expires (Redis's) is kept alive by a renewal task while the token is held; the
/// token knows until when the lock is surely held and whether it was lost, and the cache asks
/// [`is_held`](Self::is_held) right before it calls the token endpoint. Dropping the token
/// stops the renewal (the lock then expires by itself) and drops what it holds (a locked file,
/// which unlocks it).
pub struct LockToken {
    value: String,
    watch: LockWatch,
    renewal: Option<AbortHandle>,
    _guard: Option<Box<dyn Send + Sync>>,
}

/// What the task that keeps a lock alive tells its [`LockToken`]: until when the lock is held,
/// or that it is lost. Clones report to the same token.
#[derive(Clone)]
pub struct LockWatch(Arc<Health>);

struct Health {
    lost: AtomicBool,
    /// `None`: the lock does not expire while its holder lives (a file lock).
    held_until: Mutex<Option<Instant>>,
}

impl LockToken {
    /// A lock token with this value (a random string that only its holder knows), held until
    /// its holder says otherwise.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            watch: LockWatch(Arc::new(Health {
                lost: AtomicBool::new(false),
                held_until: Mutex::new(None),
            })),
            renewal: None,
            _guard: None,
        }
    }

    /// The same token for a lock that expires at `at` unless renewed (see
    /// [`LockWatch::renewed_until`]).
    pub fn expiring_at(self, at: Instant) -> Self {
        self.watch.renewed_until(at);
        self
    }

    /// The same token, keeping the lock alive with `renewal` until it is dropped.
    pub fn renewed_by(mut self, renewal: AbortHandle) -> Self {
        self.renewal = Some(renewal);
        self
    }

    /// The same token, holding `guard` (e.g. a locked file) until it is dropped.
    pub fn holding(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._guard = Some(Box::new(guard));
        self
    }

    /// A handle for the task that keeps the lock alive, to report to this token.
    pub fn watch(&self) -> LockWatch {
        self.watch.clone()
    }

    /// The value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Whether the lock is surely still held: not reported lost, and not past the last
    /// expiry its renewal reported.
    pub fn is_held(&self) -> bool {
        self.watch.is_held()
    }
}

impl LockWatch {
    /// The lock was renewed: it is held until `at`.
    pub fn renewed_until(&self, at: Instant) {
        *self
            .0
            .held_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    /// The lock is lost (another holder has it, or it expired).
    pub fn lost(&self) {
        self.0.lost.store(true, Ordering::Release);
    }

    /// When the lock expires unless renewed, if it does.
    pub fn held_until(&self) -> Option<Instant> {
        *self
            .0
            .held_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn is_held(&self) -> bool {
        !self.0.lost.load(Ordering::Acquire)
            && self.held_until().is_none_or(|until| Instant::now() < until)
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
        f.debug_struct("LockToken")
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for LockWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockWatch")
            .field("held", &self.is_held())
            .finish()
    }
}
