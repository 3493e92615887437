use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::{LockToken, TokenStore};
use crate::refresh::{BoxError, RefreshRequest};
use crate::token::TokenSet;

/// Wraps a refresher so that every refresh goes through a [`TokenStore`]: lock, re-read, use
/// a newer stored token or refresh, save, unlock. See the [module docs](super).
///
/// Store errors (Redis unreachable, a lock not obtained in time) fail the refresh with the
/// [`StoreError`](super::StoreError) as the cause; they are transient, so the cache backs off.
pub struct StoredRefresher<R, T> {
    inner: R,
    store: Arc<T>,
    /// Tokens this process got but could not save, with the refresh token they replaced.
    unsaved: Arc<Mutex<Option<Unsaved>>>,
}

/// A refresh result the store did not take: written at the next refresh if the store still
/// holds what it replaced, so no process goes back to a spent refresh token.
struct Unsaved {
    tokens: TokenSet,
    replaced: Option<TokenSet>,
}

impl<R, T> StoredRefresher<R, T> {
    /// `inner`, with its tokens kept in `store`.
    pub fn new(inner: R, store: T) -> Self {
        Self {
            inner,
            store: Arc::new(store),
            unsaved: Arc::default(),
        }
    }
}

impl<R: Clone, T> Clone for StoredRefresher<R, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: Arc::clone(&self.store),
            unsaved: Arc::clone(&self.unsaved),
        }
    }
}

impl<R: fmt::Debug, T: fmt::Debug> fmt::Debug for StoredRefresher<R, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredRefresher")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .finish()
    }
}

/// Whether `stored` is a token this process has not seen and can still use.
fn take_over(stored: &TokenSet, ours: Option<&TokenSet>) -> bool {
    let unseen = ours.is_none_or(|ours| ours.access_token() != stored.access_token());
    // Even a token about to expire is taken: sending it beats a refresh that would rotate
    // the refresh token under another process's feet; the cache refreshes it in due course.
    let valid = stored.expires_at().is_none_or(|at| at > Instant::now());
    unseen && valid
}

impl<R, T> Service<RefreshRequest> for StoredRefresher<R, T>
where
    R: Service<RefreshRequest, Response = TokenSet> + Clone + Send + 'static,
    R::Error: Into<BoxError>,
    R::Future: Send,
    T: TokenStore,
{
    type Response = TokenSet;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TokenSet, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // The inner refresher is driven to readiness when it is needed, after the lock.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RefreshRequest) -> Self::Future {
        let (inner, store, unsaved) = (
            self.inner.clone(),
            Arc::clone(&self.store),
            Arc::clone(&self.unsaved),
        );
        Box::pin(async move {
            let mut held = Held {
                token: store.lock().await?,
                store: Arc::clone(&store),
            };
            let outcome = refresh_through(&*store, &unsaved, inner, request).await;
            if let Some(token) = held.token.take() {
                if let Err(error) = store.unlock(token).await {
                    tracing::warn!(%error, "could not release the token store's lock; it expires by itself");
                }
            }
            outcome
        })
    }
}

/// The store's lock while a refresh runs; released even if the refresh is dropped (timed out).
struct Held<T: TokenStore> {
    token: Option<LockToken>,
    store: Arc<T>,
}

impl<T: TokenStore> Drop for Held<T> {
    fn drop(&mut self) {
        if let (Some(token), Ok(runtime)) =
            (self.token.take(), tokio::runtime::Handle::try_current())
        {
            let store = Arc::clone(&self.store);
            runtime.spawn(async move {
                let _ = store.unlock(token).await;
            });
        }
    }
}

fn refresh_token(tokens: Option<&TokenSet>) -> Option<&str> {
    tokens
        .and_then(TokenSet::refresh_token)
        .map(|token| token.secret())
}

async fn refresh_through<R, T>(
    store: &T,
    unsaved: &Mutex<Option<Unsaved>>,
    inner: R,
    request: RefreshRequest,
) -> Result<TokenSet, BoxError>
where
    R: Service<RefreshRequest, Response = TokenSet>,
    R::Error: Into<BoxError>,
    T: TokenStore,
{
    let mut stored = store.load().await?;
    // Tokens of ours that the store missed, while it still holds what they replaced: they
    // are the newest; write them now and go on from them.
    let pending = lock(unsaved).take();
    if let Some(pending) = pending {
        if refresh_token(stored.as_ref()) == refresh_token(pending.replaced.as_ref()) {
            if let Err(error) = store.save(&pending.tokens, stored.as_ref()).await {
                tracing::warn!(%error, "still could not save the newest token set");
                *lock(unsaved) = Some(Unsaved {
                    tokens: pending.tokens.clone(),
                    replaced: pending.replaced,
                });
            }
            stored = Some(pending.tokens);
        }
    }
    if let Some(stored) = stored
        .as_ref()
        .filter(|stored| take_over(stored, request.current()))
    {
        tracing::debug!(reason = %request.reason(), "using the token set found in the store");
        return Ok(stored.clone());
    }
    // The stored refresh token is the newest: another process may have rotated ours.
    let base = stored.or_else(|| request.current().cloned());
    let tokens = inner
        .oneshot(RefreshRequest::new(request.reason(), base.clone()))
        .await
        .map_err(Into::into)?;
    if let Err(error) = store.save(&tokens, base.as_ref()).await {
        // The tokens are good for this process; remember them so that the store gets them
        // (and no process goes back to the spent refresh token) at the next refresh.
        tracing::warn!(%error, "could not save the new token set");
        *lock(unsaved) = Some(Unsaved {
            tokens: tokens.clone(),
            replaced: base,
        });
    }
    Ok(tokens)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
