use std::fmt;
use std::time::Duration;

use tokio::runtime::Handle;
use tower::util::BoxService;
use tower::{Service, ServiceExt};

use super::layer::AuthLayer;
use super::origin::Origins;
use super::rejection::Rejection;
use crate::cache::{Background, Settings, TokenCache, TokenEvent, Windows};
use crate::refresh::{BoxError, RefreshRequest, RevokeRequest};
use crate::replay::CloneBody;
use crate::store::TokenStore;
use crate::store::session::Session;
use crate::token::TokenSet;

/// Builds an [`AuthLayer`] and the session it shares: start with [`AuthLayer::builder`].
///
/// These settings belong to the session (the token cache), which every clone of the built
/// layer, every service and every handle share; they are fixed by [`build`](Self::build).
///
/// ```
/// # use std::convert::Infallible;
/// # use tower::service_fn;
/// # use tower_auth_refresh::{RefreshRequest, TokenSet};
/// # let refresher = service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("t")) });
/// use std::time::Duration;
/// use tower_auth_refresh::AuthLayer;
///
/// let layer = AuthLayer::builder(refresher)
///     .refresh_timeout(Duration::from_secs(10))
///     .retry_backoff(Duration::from_millis(500), Duration::from_secs(30))
///     .on_tokens(|tokens| tracing::info!(?tokens, "new tokens"))
///     .build()
///     .refresh_before(Duration::from_secs(120));
/// # let _ = layer;
/// ```
pub struct AuthLayerBuilder {
    refresher: BoxService<RefreshRequest, TokenSet, BoxError>,
    settings: Settings,
    windows: Windows,
    runtime: Option<Handle>,
}

impl AuthLayerBuilder {
    pub(super) fn new<R>(refresher: R) -> Self
    where
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        Self {
            refresher: BoxService::new(refresher.map_err(Into::into)),
            settings: Settings::default(),
            windows: Windows::default(),
            runtime: None,
        }
    }

    /// The built layer's soft window; see [`AuthLayer::refresh_before`].
    pub fn refresh_before(mut self, window: Duration) -> Self {
        self.windows = self.windows.with_soft(window);
        self
    }

    /// The built layer's hard window; see [`AuthLayer::wait_before`].
    pub fn wait_before(mut self, window: Duration) -> Self {
        self.windows = self.windows.with_hard(window);
        self
    }

    /// The lifetime assumed for a token whose expiry is known neither from the refresher nor
    /// from its JWT claims (default 300 s).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.settings.default_lifetime = lifetime;
        self
    }

    /// How long requests wait for one refresh (default 30 s). Past it, every waiter gets a
    /// [`RefreshErrorKind::Timeout`](crate::RefreshErrorKind::Timeout) error (a request whose
    /// token is still valid is sent with it instead): a hung token endpoint never hangs
    /// requests.
    ///
    /// The exchange itself is not cancelled: the server may have rotated the refresh token
    /// already, and its late answer carries the only valid one. It runs on until the
    /// [`exchange_timeout`](Self::exchange_timeout); a late success is installed. Meanwhile no
    /// other refresh starts, and requests that need a new token fail at once with the timeout.
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.settings.retry.timeout = timeout;
        self
    }

    /// How long one exchange with the refresher may run in all, answering after its waiters
    /// timed out (default 120 s, and never less than the refresh timeout). Past it, the
    /// exchange is dropped and counts as a failure; the next refresh starts after the backoff.
    pub fn exchange_timeout(mut self, timeout: Duration) -> Self {
        self.settings.retry.exchange_timeout = timeout;
        self
    }

    /// The backoff after transient refresh failures (default 1 s doubling up to 60 s, with
    /// jitter; at least the server's `Retry-After`). Until it ends, requests that need a new
    /// token fail at once with the last error, marked as remembered
    /// ([`RefreshError::is_cached`](crate::RefreshError::is_cached)), and a still-valid token
    /// keeps being served.
    ///
    /// Requests that have no token to fall back on (the first login, an expired or rejected
    /// token) do not see the first few transient failures: the refresh retries them at once,
    /// about 150 ms apart and doubling, up to four times within the refresh timeout.
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.settings.retry.backoff_min = min;
        self.settings.retry.backoff_max = max.max(min);
        self
    }

    /// Calls `hook` with every new token set: each refresh's result, each token set taken from
    /// the store, each [`AuthHandle::set_tokens`](crate::AuthHandle::set_tokens), and a
    /// refresh token kept from an answer that was otherwise unusable. For saving the session in
    /// a store of the application's own (the refresh token rotates on every refresh); for
    /// knowing why the tokens changed, and of clears, see [`on_event`](Self::on_event).
    ///
    /// Hooks add up: each call adds one. They run before the requests waiting for that token
    /// get it (so when a request or [`AuthHandle::token`](crate::AuthHandle::token) returns, the
    /// hooks of its token have run), one token at a time and in the order tokens were
    /// installed, outside the cache's token lock; keep them short, they delay those requests.
    pub fn on_tokens<F>(self, hook: F) -> Self
    where
        F: Fn(&TokenSet) + Send + Sync + 'static,
    {
        self.on_event(move |event: &TokenEvent<'_>| {
            if let Some(tokens) = event.tokens() {
                hook(tokens);
            }
        })
    }

    /// Calls `hook` with every change of the session's tokens, saying what happened: a
    /// refresh (and why), tokens taken from the store, set by the application, a refresh token
    /// kept, a clear. Hooks add up, and run as [`on_tokens`](Self::on_tokens)' do.
    pub fn on_event<F>(mut self, hook: F) -> Self
    where
        F: Fn(&TokenEvent<'_>) + Send + Sync + 'static,
    {
        self.settings.hooks.push(std::sync::Arc::new(hook));
        self
    }

    /// Keeps the session in `store` (see [`store`](crate::store)): every refresh goes through it
    /// (its lock, its newest token set), and so do [`AuthHandle::set_tokens`],
    /// [`AuthHandle::clear`] and [`AuthHandle::logout`]. A restarted program continues its
    /// session; processes that share the store share one login and one refresh chain.
    ///
    /// [`AuthHandle::set_tokens`]: crate::AuthHandle::set_tokens
    /// [`AuthHandle::clear`]: crate::AuthHandle::clear
    /// [`AuthHandle::logout`]: crate::AuthHandle::logout
    pub fn store(mut self, store: impl TokenStore) -> Self {
        self.settings.store = Some(std::sync::Arc::new(Session::new(store)));
        self
    }

    /// What [`AuthHandle::logout`](crate::AuthHandle::logout) calls to end the session at the
    /// identity provider: any `Service<RevokeRequest, Response = ()>`, e.g. the OAuth2
    /// refresher's revoker (RFC 7009).
    pub fn revoker<V>(mut self, revoker: V) -> Self
    where
        V: Service<RevokeRequest, Response = ()> + Send + 'static,
        V::Error: Into<BoxError>,
        V::Future: Send + 'static,
    {
        self.settings.revoker = Some(BoxService::new(revoker.map_err(Into::into)));
        self
    }

    /// Runs the layer's background work (refreshes, their timeouts and retries) on this
    /// runtime instead of the crate's own runtime thread, and reads time from tokio's clock, so
    /// a test that pauses the clock (`tokio::time::pause`) moves the token's windows with it.
    ///
    /// The runtime must outlive the layer and be driven: a refresh running there stops when
    /// the runtime shuts down. A layer built inside a runtime whose clock is paused uses that
    /// runtime without being told. By default the work runs on one runtime thread that the
    /// crate starts for the whole process, so a caller's runtime that shuts down, or a
    /// current-thread runtime that nobody drives, can neither cancel a refresh nor stall other
    /// callers.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// The layer, with its session.
    pub fn build(self) -> AuthLayer {
        let background = self
            .runtime
            .map_or_else(Background::default_here, Background::pinned);
        AuthLayer {
            cache: TokenCache::new(self.refresher, self.settings, background),
            windows: self.windows,
            replay: CloneBody,
            rejection: Rejection::default(),
            origins: Origins::default(),
        }
    }
}

impl fmt::Debug for AuthLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayerBuilder")
            .field("default_lifetime", &self.settings.default_lifetime)
            .field("retry", &self.settings.retry)
            .field("hooks", &self.settings.hooks.len())
            .field("store", &self.settings.store)
            .field("revoker", &self.settings.revoker.is_some())
            .field("windows", &self.windows)
            .field("runtime", &self.runtime.is_some())
            .finish_non_exhaustive()
    }
}
