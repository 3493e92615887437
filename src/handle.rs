//! The application's view of the token cache.

use std::fmt;

use tokio::time::Instant;

use crate::cache::{Entry, Outcome, TokenCache};
use tower::Service;

use crate::refresh::{BoxError, RefreshError, RefreshRequest};
use crate::token::TokenSet;

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
/// handle.clear();
/// assert!(handle.state().is_none());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AuthHandle {
    cache: TokenCache,
}

impl AuthHandle {
    pub(crate) fn new(cache: TokenCache) -> Self {
        Self { cache }
    }

    /// The current token's state, or `None` when there is no token.
    pub fn state(&self) -> Option<TokenState> {
        self.cache.current_full().as_deref().map(TokenState::of)
    }

    /// A token fit to be sent, logging in or refreshing first if needed: what a request does
    /// before it is sent.
    pub async fn token(&self) -> Result<TokenState, RefreshError> {
        state(self.cache.clone().acquire().await)
    }

    /// Refreshes now (or joins the refresh already running) and returns the new state.
    ///
    /// This tries even during a backoff or after a terminal failure: it is how an application
    /// says "try again now".
    pub async fn refresh(&self) -> Result<TokenState, RefreshError> {
        state(self.cache.clone().force().await)
    }

    /// Installs tokens obtained elsewhere (a saved session, another login flow), and ends any
    /// backoff or terminal failure.
    ///
    /// A refresh that is running when this is called does not replace them: its waiters get
    /// these tokens. Fails only if the access token cannot be sent in a header.
    pub fn set_tokens(&self, tokens: TokenSet) -> Result<TokenState, RefreshError> {
        state(self.cache.set(tokens))
    }

    /// Forgets the current token and any failure: the next request asks the refresher for
    /// one ([`RefreshReason::NoToken`](crate::RefreshReason::NoToken)). A refresh running now
    /// does not install its result.
    pub fn clear(&self) {
        self.cache.clear();
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

fn state(outcome: Outcome) -> Result<TokenState, RefreshError> {
    outcome.map(|entry| TokenState::of(&entry))
}

/// A snapshot of the current token, without the secrets.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            expires_at: entry.schedule.expires_at,
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

    /// When the refresh token expires, if known.
    pub fn refresh_expires_at(&self) -> Option<Instant> {
        self.refresh_expires_at
    }

    /// Whether there is a refresh token.
    pub fn has_refresh_token(&self) -> bool {
        self.has_refresh_token
    }
}
