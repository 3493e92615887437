use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Service, ServiceExt};

use super::TokenStore;
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
}

impl<R, T> StoredRefresher<R, T> {
    /// `inner`, with its tokens kept in `store`.
    pub fn new(inner: R, store: T) -> Self {
        Self {
            inner,
            store: Arc::new(store),
        }
    }
}

impl<R: Clone, T> Clone for StoredRefresher<R, T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            store: Arc::clone(&self.store),
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
        let (inner, store) = (self.inner.clone(), Arc::clone(&self.store));
        Box::pin(async move {
            let lock = store.lock().await?;
            let outcome = refresh_through(&*store, inner, request).await;
            if let Some(lock) = lock {
                if let Err(error) = store.unlock(lock).await {
                    tracing::warn!(%error, "could not release the token store's lock; it expires by itself");
                }
            }
            outcome
        })
    }
}

async fn refresh_through<R, T>(
    store: &T,
    inner: R,
    request: RefreshRequest,
) -> Result<TokenSet, BoxError>
where
    R: Service<RefreshRequest, Response = TokenSet>,
    R::Error: Into<BoxError>,
    T: TokenStore,
{
    let stored = store.load().await?;
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
        // The tokens are good for this process; the store keeps another process's.
        tracing::warn!(%error, "could not save the new token set");
    }
    Ok(tokens)
}
