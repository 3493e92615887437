//! A session kept in a store: the refresh flow through it, the application's writes to it, and
//! the task that saves a rotation the store could not take at once.
//!
//! The version this process last read or wrote is what "ours" means: a stored set of another
//! version was written by someone else (another process, an earlier run) after it, and wins.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{LockToken, StoreError, StoreErrorKind, TokenStore};
use crate::refresh::{BoxError, RefreshReason, RefreshRequest};
use crate::token::{RefreshToken, TokenSet};

/// A save that failed is tried again this often while the lock is held.
const SAVE_RETRY: Duration = Duration::from_millis(100);

/// What a refresh through the store gave.
pub(crate) enum Got {
    /// The refresher's answer, saved (or being saved).
    Refreshed(TokenSet),
    /// A token set another process (or an earlier run) saved, used as it is.
    Adopted(TokenSet),
}

/// A session in a store, shared by a cache and its handles.
pub(crate) struct Session {
    store: Arc<dyn TokenStore>,
    state: Mutex<State>,
    /// Held while a save is written: saves write the newest pending set, one at a time.
    writes: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The version this process last read or wrote.
    known: u64,
    /// Stored versions up to this one are void: the application cleared the session but the
    /// store did not take the delete (the next save replaces them).
    void_through: u64,
    /// The newest token set, which the store did not take yet: it replaces version
    /// `replaces` there, and until then it is what the next refresh starts from.
    pending: Option<Pending>,
    /// Whether a task is trying to save `pending`.
    saving: bool,
}

#[derive(Clone, PartialEq)]
struct Pending {
    tokens: TokenSet,
    replaces: u64,
}

impl Session {
    pub(crate) fn new(store: impl TokenStore) -> Self {
        Self {
            store: Arc::new(store),
            state: Mutex::default(),
            writes: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lock, read, use a newer stored set or refresh from the newest one, save, unlock.
    ///
    /// `still_wanted` is asked before the token endpoint is called (the application may have
    /// set or cleared the tokens while this waited for the lock); `call` calls the refresher.
    pub(crate) async fn refresh<F, Fut>(
        self: &Arc<Self>,
        reason: RefreshReason,
        still_wanted: impl Fn() -> bool,
        call: F,
    ) -> Result<Got, BoxError>
    where
        F: FnOnce(RefreshRequest) -> Fut,
        Fut: Future<Output = Result<TokenSet, BoxError>>,
    {
        let mut lock = Held::new(Arc::clone(&self.store), self.store.lock().await?);
        let mut stored = self.store.load().await?;
        let had_pending = {
            let mut state = self.state();
            if state
                .pending
                .as_ref()
                .is_some_and(|pending| pending.replaces != stored.version)
            {
                // Someone saved since (this process's lock was lost): theirs is the newest.
                state.pending = None;
            }
            state.pending.is_some()
        };
        if had_pending {
            // Ours first, if the store takes it now.
            if self.flush().await.is_ok() {
                stored = self.store.load().await?;
            }
        }
        let pending = self.state().pending.clone();
        let (base, replaces) = match pending {
            // The store still does not take it: the chain goes on from it, in this process.
            Some(pending) => (Some(pending.tokens), pending.replaces),
            None => {
                let mut state = self.state();
                let tokens = stored
                    .tokens
                    .clone()
                    .filter(|_| stored.version > state.void_through);
                if stored.version != state.known {
                    state.known = stored.version;
                    if let Some(tokens) = tokens.as_ref().filter(|tokens| is_valid(tokens)) {
                        tracing::debug!(%reason, version = stored.version, "using the token set found in the store");
                        return Ok(Got::Adopted(tokens.clone()));
                    }
                }
                (tokens, stored.version)
            }
        };
        if !still_wanted() {
            return Err(StoreError::new(StoreErrorKind::Conflict, None).into());
        }
        // Another process may be refreshing with this very refresh token.
        if !lock.is_held() {
            return Err(StoreError::new(StoreErrorKind::LockLost, None).into());
        }
        // The stored (or pending) refresh token is the newest: another process may have
        // rotated the one in memory.
        let result = call(RefreshRequest::new(reason, base.clone())).await;
        let newest = match &result {
            Ok(tokens) => Some(tokens.clone()),
            // A refresh token issued in an answer that failed otherwise: the one presented may
            // be spent, so the store must have this one.
            Err(error) => base.zip(crate::cache::issued_refresh_token(error)).map(
                |(mut tokens, refresh_token): (TokenSet, RefreshToken)| {
                    tokens.set_refresh_token(Some(refresh_token));
                    tokens
                },
            ),
        };
        if let Some(tokens) = newest {
            self.state().pending = Some(Pending { tokens, replaces });
            match self.flush().await {
                Ok(()) => {}
                Err(error) if error.kind() == StoreErrorKind::Conflict => {
                    tracing::warn!(
                        "the stored token set changed during the refresh; keeping the newer stored one"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, "could not save the new token set; trying again while holding the lock");
                    self.keep_saving(lock.take());
                }
            }
        }
        lock.release().await;
        result.map(Got::Refreshed)
    }

    /// Writes the pending token set, if any, in place of the version it replaces.
    async fn flush(&self) -> Result<(), StoreError> {
        let _writing = self.writes.lock().await;
        let Some(pending) = self.state().pending.clone() else {
            return Ok(());
        };
        match self.store.save(&pending.tokens, pending.replaces).await {
            Ok(version) => {
                let mut state = self.state();
                state.known = version;
                match state.pending.as_mut() {
                    Some(newer) if *newer != pending => {
                        // Refreshed from `pending` while it was written: it now replaces this.
                        newer.replaces = version;
                    }
                    _ => state.pending = None,
                }
                Ok(())
            }
            Err(error) => {
                if error.kind() == StoreErrorKind::Conflict {
                    self.state().pending = None;
                }
                Err(error)
            }
        }
    }

    /// Starts the task that saves the pending set as soon as the store takes it, keeping the
    /// lock (renewed by the store) meanwhile: no other process refreshes from the older set.
    fn keep_saving(self: &Arc<Self>, lock: Held) {
        {
            let mut state = self.state();
            if state.saving {
                // The running one saves the newest pending set; this lock can go.
                drop(state);
                tokio::spawn(lock.release());
                return;
            }
            state.saving = true;
        }
        let session = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SAVE_RETRY).await;
                // Once the lock is lost, one more try: the compare-and-swap still refuses to
                // replace a newer set, and an older one is worth replacing.
                let last_try = !lock.is_held();
                match session.flush().await {
                    Ok(()) => {
                        tracing::info!("saved the new token set after all");
                        break;
                    }
                    Err(error) if error.kind() == StoreErrorKind::Conflict => break,
                    Err(error) if last_try => {
                        tracing::error!(%error, "the token store's lock was lost before the new token set could be saved; this process refreshes from it while the store still holds what it replaces");
                        break;
                    }
                    Err(_) => {}
                }
            }
            session.state().saving = false;
            lock.release().await;
        });
    }

    /// The application's tokens: written in place of whatever is stored, under the lock.
    pub(crate) async fn set(&self, tokens: &TokenSet) -> Result<(), StoreError> {
        let lock = Held::new(Arc::clone(&self.store), self.store.lock().await?);
        let outcome = async {
            let _writing = self.writes.lock().await;
            let stored = self.store.load().await?;
            let version = self.store.save(tokens, stored.version).await?;
            let mut state = self.state();
            state.known = version;
            state.pending = None;
            Ok(())
        }
        .await;
        lock.release().await;
        outcome
    }

    /// The application ends the session: the stored one goes too. If the store does not take
    /// it, the stored session is void for this process all the same.
    pub(crate) async fn clear(&self) -> Result<(), StoreError> {
        let lock = Held::new(Arc::clone(&self.store), self.store.lock().await?);
        let outcome = async {
            let _writing = self.writes.lock().await;
            let stored = self.store.load().await?;
            {
                let mut state = self.state();
                state.void_through = stored.version;
                state.pending = None;
            }
            let version = self.store.delete(stored.version).await?;
            self.state().known = version;
            Ok(())
        }
        .await;
        lock.release().await;
        outcome
    }
}

fn is_valid(tokens: &TokenSet) -> bool {
    // Even a token close to expiry is taken: sending it beats a refresh that would rotate the
    // refresh token under another process's feet; the cache refreshes it in due course.
    tokens.expires_at().is_none_or(|at| at > Instant::now())
}

/// The store's lock while it is needed; released even if the refresh is dropped.
struct Held {
    store: Arc<dyn TokenStore>,
    token: Option<LockToken>,
}

impl Held {
    fn new(store: Arc<dyn TokenStore>, token: Option<LockToken>) -> Self {
        Self { store, token }
    }

    fn is_held(&self) -> bool {
        self.token.as_ref().is_none_or(LockToken::is_held)
    }

    /// Moves the lock out (to the task that keeps saving).
    fn take(&mut self) -> Held {
        Held {
            store: Arc::clone(&self.store),
            token: self.token.take(),
        }
    }

    async fn release(mut self) {
        if let Some(token) = self.token.take() {
            if let Err(error) = self.store.unlock(token).await {
                tracing::warn!(%error, "could not release the token store's lock; it expires by itself");
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(token) = self.token.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let store = Arc::clone(&self.store);
                runtime.spawn(async move {
                    let _ = store.unlock(token).await;
                });
            }
            // No runtime to release it on: it expires by itself (a file lock is released
            // when the token drops its file).
            Err(_) => drop(token),
        }
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("known_version", &self.state().known)
            .finish_non_exhaustive()
    }
}
