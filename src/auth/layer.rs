use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tower::Service;
use tower_layer::Layer;

use super::builder::AuthLayerBuilder;
use super::origin::{Origin, Origins};
use super::rejection::Rejection;
use super::service::AuthService;
use crate::cache::{TokenCache, Windows};
use crate::handle::AuthHandle;
use crate::refresh::{BoxError, RefreshRequest};
use crate::replay::CloneBody;
use crate::token::TokenSet;

/// Makes [`AuthService`]s that share one token cache and one refresher.
///
/// # What is shared, and what is this value's
///
/// A layer holds a handle to one session: the token cache, its refresher and its settings
/// (timeouts, backoff, hooks, the runtime for background work), fixed by
/// [`AuthLayer::builder`]. Every clone of the layer, every service it makes and every
/// [`AuthHandle`] share that session: one token, one login, one refresh at a time.
///
/// The methods on `AuthLayer` itself configure only the value they are called on, as
/// tower-http's layers do: `layer.clone().refresh_before(x)` leaves `layer` alone, and the
/// services each value makes follow its settings (refresh windows, rejection predicate,
/// origins, replay policy) on the shared token.
///
/// See the [crate example](crate#example).
#[derive(Clone)]
pub struct AuthLayer<P = CloneBody> {
    pub(crate) cache: TokenCache,
    pub(crate) windows: Windows,
    pub(crate) replay: P,
    pub(crate) rejection: Rejection,
    pub(crate) origins: Origins,
}

impl AuthLayer {
    /// A layer whose token comes from `refresher`, with the default settings; see
    /// [`builder`](Self::builder) for the others.
    ///
    /// The refresher is any `Service<RefreshRequest, Response = TokenSet>`: a `service_fn`
    /// closure, the crate's [`OAuth2Refresher`](crate::oauth2::OAuth2Refresher), or a stack of
    /// your own. It is called at most once at a time, on the layer's background runtime; it
    /// does not need to be `Clone` or `Sync`.
    pub fn new<R>(refresher: R) -> Self
    where
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        Self::builder(refresher).build()
    }

    /// Starts building a layer with settings of its session: timeouts, backoff, hooks, the
    /// lifetime of tokens of unknown expiry, the runtime for background work.
    pub fn builder<R>(refresher: R) -> AuthLayerBuilder
    where
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        AuthLayerBuilder::new(refresher)
    }
}

impl<P> AuthLayer<P> {
    /// The soft window (default 60 s): once a token is this close to expiry, the first request
    /// starts one refresh in the background and every request keeps using the token until the
    /// new one arrives.
    ///
    /// Capped at half the token's lifetime: a 15-minute token is refreshed 60 s before it
    /// expires, a 2-second token 1 s before (so, with a refresh that is instant, about once a
    /// second).
    pub fn refresh_before(mut self, window: Duration) -> Self {
        self.windows = self.windows.with_soft(window);
        self
    }

    /// The hard window (default 5 s): once a token is this close to expiry, requests wait for
    /// the refresh rather than send a token that may expire on the way. Capped at a tenth of
    /// the token's lifetime and at the soft window.
    pub fn wait_before(mut self, window: Duration) -> Self {
        self.windows = self.windows.with_hard(window);
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
    pub fn reject_when<F>(self, predicate: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.rejection(Rejection::custom(predicate))
    }

    /// Which responses mean "this token was rejected", from the presets of [`Rejection`]:
    /// [`Rejection::status_401_or_bare_403`] for servers that answer a bad token with a bare
    /// 403 (django-oauth-toolkit), [`Rejection::grpc_unauthenticated`] for gRPC.
    pub fn rejection(mut self, rejection: Rejection) -> Self {
        self.rejection = rejection;
        self
    }

    /// Replaces the [`ReplayPolicy`](crate::replay::ReplayPolicy) that decides which requests
    /// can be retried (default [`CloneBody`]).
    pub fn replay_policy<Q>(self, policy: Q) -> AuthLayer<Q> {
        AuthLayer {
            cache: self.cache,
            windows: self.windows,
            replay: policy,
            rejection: self.rejection,
            origins: self.origins,
        }
    }

    /// Sends the token only to `origin` (and to the other origins allowed this way).
    ///
    /// By default the token goes to any `https` origin and, over plain `http`, only to this
    /// machine (`localhost`, `127.0.0.0/8`, `[::1]`). A request to any other origin goes out
    /// without the token, and its 401 is returned as it is, without a refresh. With a list, a
    /// request with a relative URI gets the token only once
    /// [`origin_of_relative`](Self::origin_of_relative) says where it goes.
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

    /// Requests with a relative URI (a path only) go to `origin`: for a layer inside an SDK
    /// that adds its fixed origin further in (tonic's `Channel`, kube's client). They get the
    /// token if `origin` is allowed.
    pub fn origin_of_relative(mut self, origin: Origin) -> Self {
        self.origins = self.origins.with_relative(origin);
        self
    }

    /// A handle on the token cache this layer's services share, with this layer's windows.
    pub fn handle(&self) -> AuthHandle {
        AuthHandle::new(self.cache.clone(), self.windows)
    }
}

impl<S, P: Clone> Layer<S> for AuthLayer<P> {
    type Service = AuthService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService::from_parts(
            inner,
            self.cache.clone(),
            self.windows,
            self.replay.clone(),
            self.rejection.clone(),
            self.origins.clone(),
        )
    }
}

impl<P: fmt::Debug> fmt::Debug for AuthLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("windows", &self.windows)
            .field("replay", &self.replay)
            .field("rejection", &self.rejection)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}
