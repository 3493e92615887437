//! The application's view of the token cache.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;

use crate::cache::{Entry, Outcome, TokenCache, Windows};
use crate::refresh::{BoxError, RefreshError, RefreshRequest};
use crate::token::{AccessToken, TokenSet};

/// A handle on the token cache shared by an [`AuthLayer`](crate::AuthLayer) and every service
/// it made: read the token's state, log in eagerly, force a refresh, set or clear tokens.
///
/// Get one with [`AuthLayer::handle`](crate::AuthLayer::handle); clones share the cache.
///
/// # Example
///
/// ```
/// # use std::convert::Infallible;
/// # use std::time::Duration;
/// # use tower::service_fn;
/// # use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_auth_refresh::RefreshError> {
/// # let refresher = service_fn(|_: RefreshRequest| async {
/// #     Ok::<_, Infallible>(TokenSet::new("token").with_expires_in(Duration::from_secs(900)))
/// # });
/// let layer = AuthLayer::new(refresher);
/// let handle = layer.handle();
/// assert!(handle.state().is_none());
///
/// // Log in now rather than on the first request, to fail fast on bad credentials.
/// let state = handle.token().await?;
/// assert_eq!(state.generation(), 1);
///
/// let state = handle.refresh().await?;
/// assert_eq!(state.generation(), 2);
///
/// handle.clear().await?;
/// assert!(handle.state().is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuthHandle {
    cache: TokenCache,
    windows: Windows,
}

impl AuthHandle {
    pub(crate) fn new(cache: TokenCache, windows: Windows) -> Self {
        Self { cache, windows }
    }

    /// The current token's state, or `None` when there is no token.
    pub fn state(&self) -> Option<TokenState> {
        self.cache.current_full().as_deref().map(TokenState::of)
    }

    /// The current access token, as it would be sent now, for code that needs the string
    /// itself (a synchronous gRPC interceptor, a request-signing step): `None` when there is
    /// no token, or it has expired. Never waits and never refreshes; use
    /// [`token`](Self::token) first for that. Its `Debug` shows no secret.
    pub fn access_token(&self) -> Option<AccessToken> {
        let entry = self.cache.current_full()?;
        (!entry.is_expired(self.cache.now())).then(|| entry.tokens.access_token().clone())
    }

    /// A token fit to be sent, logging in or refreshing first if needed: what a request does
    /// before it is sent.
    pub async fn token(&self) -> Result<TokenState, RefreshError> {
        self.state_of(self.cache.acquire(self.windows).await)
    }

    /// Refreshes now (or joins the refresh already running) and returns the new state.
    ///
    /// This tries even during a backoff or after a terminal failure: it is how an application
    /// says "try again now".
    pub async fn refresh(&self) -> Result<TokenState, RefreshError> {
        self.state_of(self.cache.force(self.windows).await)
    }

    fn state_of(&self, outcome: Outcome) -> Result<TokenState, RefreshError> {
        outcome.map(|entry| TokenState::of(&entry))
    }

    /// Installs tokens obtained elsewhere (an interactive login, another flow), and ends any
    /// backoff or terminal failure. With a store, they are written there first (under its lock,
    /// in place of whatever it holds); if the store does not take them, nothing changes and the
    /// error says why ([`RefreshErrorKind::Store`](crate::RefreshErrorKind::Store)).
    ///
    /// A refresh that is running when this is called does not replace them: its waiters get
    /// these tokens. Fails also if the access token cannot be sent in a header. The work runs
    /// on the layer's background runtime: dropping this future does not cut a store write short.
    pub async fn set_tokens(&self, tokens: TokenSet) -> Result<TokenState, RefreshError> {
        self.state_of(self.cache.set(tokens).await)
    }

    /// Forgets the current token and any failure: the next request asks the refresher for
    /// one ([`RefreshReason::NoToken`](crate::RefreshReason::NoToken)). A refresh running now
    /// does not install its result. With a store, the stored session is deleted too (a
    /// restarted program logs in again); if the store does not take the delete, the error says
    /// so, the tokens here are gone anyway, and this process never uses the stored session
    /// again. Nothing is revoked at the identity provider: see [`logout`](Self::logout).
    pub async fn clear(&self) -> Result<(), RefreshError> {
        self.cache.clear().await
    }

    /// Ends the session: revokes it at the identity provider (with the revoker given to
    /// [`AuthLayerBuilder::revoker`](crate::AuthLayerBuilder::revoker), if any), then
    /// [`clear`](Self::clear)s it here and in the store. Safe to call with no session. A failed
    /// revocation is returned ([`RefreshErrorKind::Revoke`](crate::RefreshErrorKind::Revoke)),
    /// but the session is cleared all the same.
    pub async fn logout(&self) -> Result<(), RefreshError> {
        self.cache.logout().await
    }

    /// Replaces the refresher, e.g. with one holding new credentials after the old ones were
    /// rejected. Ends a terminal failure; the next refresh uses the new refresher.
    pub async fn set_refresher<R>(&self, refresher: R)
    where
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        self.cache.set_refresher(refresher).await;
    }
}

impl fmt::Debug for AuthHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthHandle")
            .field("state", &self.state())
            .finish()
    }
}

/// A snapshot of the current token, without the secrets.
///
/// Its `Debug` shows how long each token has left (`expires_in: 899.99s`).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenState {
    generation: u64,
    expires_at: Instant,
    refresh_expires_at: Option<Instant>,
    has_refresh_token: bool,
}

impl TokenState {
    fn of(entry: &Entry) -> Self {
        Self {
            generation: entry.generation,
            expires_at: entry.expires_at_instant,
            refresh_expires_at: entry.tokens.refresh_expires_at(),
            has_refresh_token: entry.tokens.refresh_token().is_some(),
        }
    }

    /// Counts the tokens installed in this cache: 1 for the first, +1 for each new one.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// When the access token expires.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// How long until the access token expires; zero once it has.
    pub fn expires_in(&self) -> Duration {
        self.expires_at.saturating_duration_since(Instant::now())
    }

    /// When the refresh token expires, if known.
    pub fn refresh_expires_at(&self) -> Option<Instant> {
        self.refresh_expires_at
    }

    /// How long until the refresh token expires, if known; zero once it has.
    pub fn refresh_expires_in(&self) -> Option<Duration> {
        self.refresh_expires_at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether there is a refresh token.
    pub fn has_refresh_token(&self) -> bool {
        self.has_refresh_token
    }
}

impl fmt::Debug for TokenState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenState")
            .field("generation", &self.generation)
            .field("expires_in", &self.expires_in())
            .field("refresh_expires_in", &self.refresh_expires_in())
            .field("has_refresh_token", &self.has_refresh_token)
            .finish()
    }
}
