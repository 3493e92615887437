use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tower::Service;
use tower_layer::Layer;

use super::origin::{Origin, Origins};
use super::service::AuthService;
use crate::cache::TokenCache;
use crate::handle::AuthHandle;
use crate::refresh::{BoxError, RefreshRequest};
use crate::replay::CloneBody;
use crate::token::TokenSet;

/// Makes [`AuthService`]s that share one token cache and one refresher.
///
/// See the [crate example](crate#example).
#[derive(Clone)]
pub struct AuthLayer<P = CloneBody> {
    pub(crate) cache: TokenCache,
    pub(crate) replay: P,
    pub(crate) rejection: Rejection,
    pub(crate) origins: Origins,
}

impl AuthLayer {
    /// A layer whose token comes from `refresher`, any
    /// `Service<RefreshRequest, Response = TokenSet>`: a `service_fn` closure, the crate's
    /// [`OAuth2Refresher`](crate::oauth2::OAuth2Refresher), or a stack of your own.
    ///
    /// The refresher is called at most once at a time, from a spawned task; it does not need
    /// to be `Clone` or `Sync`.
    pub fn new<R>(refresher: R) -> Self
    where
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        Self {
            cache: TokenCache::new(refresher),
            replay: CloneBody,
            rejection: Rejection::default(),
            origins: Origins::default(),
        }
    }
}

impl<P> AuthLayer<P> {
    /// The soft window (default 60 s): once a token is this close to expiry, the first request
    /// starts one refresh in the background and every request keeps using the token until the
    /// new one arrives. Capped at half the token's lifetime.
    pub fn refresh_before(self, window: Duration) -> Self {
        self.cache.configure(|config| config.windows.soft = window);
        self
    }

    /// The hard window (default 5 s): once a token is this close to expiry, requests wait for
    /// the refresh rather than send a token that may expire on the way. Capped at a tenth of
    /// the token's lifetime and at the soft window.
    pub fn wait_before(self, window: Duration) -> Self {
        self.cache.configure(|config| config.windows.hard = window);
        self
    }

    /// The lifetime assumed for a token whose expiry is known neither from the refresher nor
    /// from its JWT `exp` claim (default 300 s).
    pub fn default_lifetime(self, lifetime: Duration) -> Self {
        self.cache
            .configure(|config| config.windows.default_lifetime = lifetime);
        self
    }

    /// How long one refresh may take (default 30 s). Past it, every waiter gets a
    /// [`RefreshErrorKind::Timeout`](crate::RefreshErrorKind::Timeout) error and the refresh
    /// is retried after a backoff: a hung token endpoint never hangs requests.
    pub fn refresh_timeout(self, timeout: Duration) -> Self {
        self.cache
            .configure(|config| config.retry.timeout = timeout);
        self
    }

    /// The backoff after transient refresh failures (default 1 s doubling up to 60 s, with
    /// jitter; at least the server's `Retry-After`). Until it ends, requests that need a new
    /// token fail at once with the last error, and a still-valid token keeps being served.
    pub fn retry_backoff(self, min: Duration, max: Duration) -> Self {
        self.cache.configure(|config| {
            config.retry.backoff_min = min;
            config.retry.backoff_max = max.max(min);
        });
        self
    }

    /// Which responses mean "this token was rejected" (default: status 401). A rejected
    /// response triggers one refresh and one retry.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use tower::service_fn;
    /// # use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
    /// # let refresher = service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("t")) });
    /// use http::{header::WWW_AUTHENTICATE, StatusCode};
    ///
    /// // Only a 401 that names the token as the problem (RFC 6750).
    /// let layer = AuthLayer::new(refresher).reject_when(|status, headers| {
    ///     status == StatusCode::UNAUTHORIZED
    ///         && headers
    ///             .get(WWW_AUTHENTICATE)
    ///             .and_then(|value| value.to_str().ok())
    ///             .is_some_and(|value| value.contains("invalid_token"))
    /// });
    /// ```
    pub fn reject_when<F>(mut self, predicate: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.rejection = Rejection(Some(Arc::new(predicate)));
        self
    }

    /// Replaces the [`ReplayPolicy`](crate::replay::ReplayPolicy) that decides which requests
    /// can be retried (default [`CloneBody`]).
    pub fn replay_policy<Q>(self, policy: Q) -> AuthLayer<Q> {
        AuthLayer {
            cache: self.cache,
            replay: policy,
            rejection: self.rejection,
            origins: self.origins,
        }
    }

    /// Sends the token only to `origin` (and to the other origins allowed this way). By
    /// default the token goes to every origin the inner service is asked to reach.
    ///
    /// A request to any other origin, or with a relative URI, goes out without the token, and
    /// its 401 is returned as it is, without a refresh.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use tower::service_fn;
    /// # use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
    /// # let refresher = service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("t")) });
    /// use tower_auth_refresh::Origin;
    ///
    /// let layer = AuthLayer::new(refresher).allow_origin(Origin::from_static("https://api.mangadex.org"));
    /// ```
    pub fn allow_origin(mut self, origin: Origin) -> Self {
        self.origins = self.origins.with(origin);
        self
    }

    /// Calls `hook` with every new token set: each refresh's result and each
    /// [`AuthHandle::set_tokens`](crate::AuthHandle::set_tokens). For saving the session in
    /// a store of the application's own (the refresh token rotates on every refresh).
    ///
    /// The hook runs on the refresh task, outside the cache's locks; keep it short (hand slow
    /// work to a channel or a spawned task).
    pub fn on_tokens<F>(self, hook: F) -> Self
    where
        F: Fn(&TokenSet) + Send + Sync + 'static,
    {
        self.cache.on_tokens(Arc::new(hook));
        self
    }

    /// A handle on the token cache this layer's services share.
    pub fn handle(&self) -> AuthHandle {
        AuthHandle::new(self.cache.clone())
    }
}

impl<S, P: Clone> Layer<S> for AuthLayer<P> {
    type Service = AuthService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService::from_parts(
            inner,
            self.cache.clone(),
            self.replay.clone(),
            self.rejection.clone(),
            self.origins.clone(),
        )
    }
}

impl<P: fmt::Debug> fmt::Debug for AuthLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("config", &self.cache.config())
            .field("replay", &self.replay)
            .field("rejection", &self.rejection)
            .field("origins", &self.origins)
            .finish()
    }
}

type Predicate = dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync;

/// The rejection predicate; `None` is the default, status 401, checked without a call.
#[derive(Clone, Default)]
pub(crate) struct Rejection(Option<Arc<Predicate>>);

impl Rejection {
    #[inline]
    pub(crate) fn matches(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        match &self.0 {
            None => status == StatusCode::UNAUTHORIZED,
            Some(predicate) => predicate(status, headers),
        }
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            None => "status 401",
            Some(_) => "custom predicate",
        })
    }
}
