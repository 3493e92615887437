//! A session kept in a store: the refresh flow through it, the application's writes to it, and
//! the task that saves a rotation the store could not take at once.
//!
//! The version this process last read or wrote is what "ours" means: a stored set of a newer
//! version was written by someone else (another process, an earlier run) and wins; one of an
//! older version means the store lost writes (restored from a snapshot, emptied), and this
//! process's memory is newer than the store.
//!
//! The process's store operations take turns ([`Session::flow`]), and the store's lock is kept
//! between them while a token set waits to be saved: this process goes on refreshing from that
//! set under the lock it already holds, while no other process can take the lock.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{LockToken, StoreError, StoreErrorKind, Stored, TokenStore};
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
    /// One store operation of this process at a time; holds the store's lock while a pending
    /// set waits to be saved (`Some`), so that the next operation reuses it.
    flow: tokio::sync::Mutex<Option<LockToken>>,
}

#[derive(Default)]
struct State {
    /// The version this process last read or wrote.
    known: u64,
    /// Which stored sessions the application's clear made void here.
    void: Void,
    /// The newest token set, which the store did not take yet: it replaces version
    /// `replaces` there, and until then it is what the next refresh starts from.
    pending: Option<Pending>,
    /// Whether a task is trying to save `pending`.
    saving: bool,
}

/// Stored sessions that the application cleared although the store did not take the delete.
#[derive(Clone, Copy, Default)]
enum Void {
    #[default]
    None,
    /// Stored versions up to this one.
    Through(u64),
    /// Every stored version, until this process writes one (the store could not even be read).
    All,
}

impl Void {
    fn covers(self, version: u64) -> bool {
        match self {
            Self::None => false,
            Self::Through(through) => version <= through,
            Self::All => true,
        }
    }
}

#[derive(Clone, PartialEq)]
struct Pending {
    tokens: TokenSet,
    replaces: u64,
}

/// A turn at the store: the flow's lock, with the store's lock in it.
struct Turn<'a> {
    session: &'a Session,
    flow: tokio::sync::MutexGuard<'a, Option<LockToken>>,
}

impl Session {
    pub(crate) fn new(store: impl TokenStore) -> Self {
        Self {
            store: Arc::new(store),
            state: Mutex::default(),
            flow: tokio::sync::Mutex::new(None),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This process's turn at the store, with the store's lock: the one kept for a pending set
    /// if it is still held, else a new one.
    async fn turn(&self) -> Result<Turn<'_>, StoreError> {
        let mut flow = self.flow.lock().await;
        if flow.as_ref().is_some_and(|lock| !lock.is_held()) {
            // Lost while kept: give it back (a no-op if another holder has it now).
            if let Some(lost) = flow.take() {
                let _ = self.store.unlock(lost).await;
            }
        }
        if flow.is_none() {
            *flow = self.store.lock().await?;
        }
        Ok(Turn {
            session: self,
            flow,
        })
    }

    /// Lock, read, use a newer stored set or refresh from the newest one, save, unlock.
    ///
    /// `current` is the cache's token set (newer than the store's if the store lost writes);
    /// `still_wanted` is asked before the token endpoint is called (the application may have
    /// set or cleared the tokens while this waited for the lock); `call` calls the refresher.
    pub(crate) async fn refresh<F, Fut>(
        self: &Arc<Self>,
        reason: RefreshReason,
        current: Option<TokenSet>,
        still_wanted: impl Fn() -> bool,
        call: F,
    ) -> Result<Got, BoxError>
    where
        F: FnOnce(RefreshRequest) -> Fut,
        Fut: Future<Output = Result<TokenSet, BoxError>>,
    {
        let turn = self.turn().await?;
        let outcome = self
            .refresh_in_turn(&turn, reason, current, still_wanted, call)
            .await;
        self.end(turn).await;
        outcome
    }

    async fn refresh_in_turn<F, Fut>(
        self: &Arc<Self>,
        turn: &Turn<'_>,
        reason: RefreshReason,
        current: Option<TokenSet>,
        still_wanted: impl Fn() -> bool,
        call: F,
    ) -> Result<Got, BoxError>
    where
        F: FnOnce(RefreshRequest) -> Fut,
        Fut: Future<Output = Result<TokenSet, BoxError>>,
    {
        let mut stored = self.store.load().await?;
        if self.has_pending_for(&stored) {
            // Ours first, if the store takes it now.
            if self.flush().await.is_ok() {
                stored = self.store.load().await?;
            }
        }
        let (base, replaces) = match self.start_from(reason, stored, current) {
            Start::Adopt(tokens) => return Ok(Got::Adopted(tokens)),
            Start::Refresh { base, replaces } => (base, replaces),
        };
        if !still_wanted() {
            return Err(StoreError::new(StoreErrorKind::Conflict, None).into());
        }
        // Another process may be refreshing with this very refresh token.
        if !turn.is_held() {
            return Err(StoreError::new(StoreErrorKind::LockLost, None).into());
        }
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
            if let Err(error) = self.flush().await {
                if error.kind() == StoreErrorKind::Conflict {
                    tracing::warn!(
                        "the stored token set changed during the refresh; keeping the newer stored one"
                    );
                } else {
                    tracing::warn!(%error, "could not save the new token set; trying again while holding the lock");
                }
            }
        }
        result.map(Got::Refreshed)
    }

    /// A pending set that still replaces what the store holds; drops one that does not
    /// (someone saved since, after this process's lock was lost: theirs is the newest).
    fn has_pending_for(&self, stored: &Stored) -> bool {
        let mut state = self.state();
        if state
            .pending
            .as_ref()
            .is_some_and(|pending| pending.replaces != stored.version)
        {
            state.pending = None;
        }
        state.pending.is_some()
    }

    /// Where a refresh starts, after reading `stored`.
    fn start_from(
        &self,
        reason: RefreshReason,
        stored: Stored,
        current: Option<TokenSet>,
    ) -> Start {
        let mut state = self.state();
        if let Some(pending) = &state.pending {
            // The store still does not take it: the chain goes on from it, in this process.
            return Start::Refresh {
                base: Some(pending.tokens.clone()),
                replaces: pending.replaces,
            };
        }
        let tokens = stored.tokens.filter(|_| !state.void.covers(stored.version));
        if stored.version < state.known {
            // The store lost writes (emptied, or restored from an older snapshot): its refresh
            // token may be spent; this process's is newer.
            tracing::warn!(
                stored = stored.version,
                known = state.known,
                "the token store holds an older session than this process; refreshing from this process's tokens"
            );
            return Start::Refresh {
                base: current.filter(|_| !matches!(state.void, Void::All)),
                replaces: stored.version,
            };
        }
        if stored.version > state.known {
            state.known = stored.version;
            if let Some(tokens) = tokens.as_ref().filter(|tokens| is_valid(tokens)) {
                tracing::debug!(%reason, version = stored.version, "using the token set found in the store");
                return Start::Adopt(tokens.clone());
            }
        }
        Start::Refresh {
            base: tokens,
            replaces: stored.version,
        }
    }

    /// Writes the pending token set, if any, in place of the version it replaces.
    async fn flush(&self) -> Result<(), StoreError> {
        let Some(pending) = self.state().pending.clone() else {
            return Ok(());
        };
        match self.store.save(&pending.tokens, pending.replaces).await {
            Ok(version) => {
                let mut state = self.state();
                state.known = version;
                state.void = Void::None;
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

    /// Ends a turn: gives the store's lock back, unless a set is pending, which a task then
    /// saves as soon as the store takes it, keeping the lock (renewed by the store) meanwhile.
    async fn end(self: &Arc<Self>, mut turn: Turn<'_>) {
        let pending = self.state().pending.is_some();
        if !pending {
            if let Some(lock) = turn.flow.take() {
                if let Err(error) = self.store.unlock(lock).await {
                    tracing::warn!(%error, "could not release the token store's lock; it expires by itself");
                }
            }
            return;
        }
        drop(turn);
        let start = {
            let mut state = self.state();
            !std::mem::replace(&mut state.saving, true)
        };
        if start {
            let session = Arc::clone(self);
            tokio::spawn(async move { session.keep_saving().await });
        }
    }

    async fn keep_saving(self: Arc<Self>) {
        loop {
            tokio::time::sleep(SAVE_RETRY).await;
            let mut flow = self.flow.lock().await;
            // Once the lock is lost, one more try: the compare-and-swap still refuses to
            // replace a newer set, and an older one is worth replacing.
            let last_try = flow.as_ref().is_some_and(|lock| !lock.is_held());
            let done = match self.flush().await {
                Ok(()) => {
                    tracing::info!("saved the new token set after all");
                    true
                }
                Err(error) if error.kind() == StoreErrorKind::Conflict => true,
                Err(error) if last_try => {
                    tracing::error!(%error, "the token store's lock was lost before the new token set could be saved; this process refreshes from it while the store still holds what it replaces");
                    true
                }
                Err(_) => false,
            };
            if done || self.state().pending.is_none() {
                if let Some(lock) = flow.take() {
                    let _ = self.store.unlock(lock).await;
                }
                self.state().saving = false;
                return;
            }
        }
    }

    /// The application's tokens: written in place of whatever is stored, under the lock.
    pub(crate) async fn set(self: &Arc<Self>, tokens: &TokenSet) -> Result<(), StoreError> {
        let turn = self.turn().await?;
        let outcome = async {
            let stored = self.store.load().await?;
            let version = self.store.save(tokens, stored.version).await?;
            let mut state = self.state();
            state.known = version;
            state.pending = None;
            state.void = Void::None;
            Ok(())
        }
        .await;
        self.end(turn).await;
        outcome
    }

    /// The application ends the session: the stored one goes too. If the store does not take
    /// it (or cannot even be read), the stored session is void for this process all the same.
    pub(crate) async fn clear(self: &Arc<Self>) -> Result<(), StoreError> {
        {
            let mut state = self.state();
            state.void = Void::All;
            state.pending = None;
        }
        let turn = self.turn().await?;
        let outcome = async {
            let stored = self.store.load().await?;
            self.state().void = Void::Through(stored.version);
            let version = self.store.delete(stored.version).await?;
            let mut state = self.state();
            state.known = version;
            state.void = Void::None;
            Ok(())
        }
        .await;
        self.end(turn).await;
        outcome
    }
}

/// Where a refresh starts.
enum Start {
    /// Use this stored set as it is.
    Adopt(TokenSet),
    /// Refresh from `base`, and save in place of version `replaces`.
    Refresh {
        base: Option<TokenSet>,
        replaces: u64,
    },
}

impl Turn<'_> {
    fn is_held(&self) -> bool {
        self.flow.as_ref().is_none_or(LockToken::is_held)
    }
}

impl Drop for Turn<'_> {
    /// A turn cut short (its refresh was abandoned): the lock goes back unless a pending set
    /// needs it; the flow's lock is released with the guard.
    fn drop(&mut self) {
        let Some(lock) = self
            .flow
            .take_if(|_| self.session.state().pending.is_none())
        else {
            return;
        };
        let store = Arc::clone(&self.session.store);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = store.unlock(lock).await;
                });
            }
            // No runtime to release it on: it expires by itself (a file lock is released when
            // the token drops its file).
            Err(_) => drop(lock),
        }
    }
}

fn is_valid(tokens: &TokenSet) -> bool {
    // Even a token close to expiry is taken: sending it beats a refresh that would rotate the
    // refresh token under another process's feet; the cache refreshes it in due course.
    tokens
        .expires_at()
        .or_else(|| tokens.jwt_expiry())
        .is_none_or(|at| at > Instant::now())
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("known_version", &self.state().known)
            .finish_non_exhaustive()
    }
}
