//! The keyed layer's builder: the settings every key's session shares.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tower::util::BoxService;
use tower::{Service, ServiceExt};

use super::key::KeyFrom;
use super::layer::KeyedAuthLayer;
use super::sessions::{KeyedHook, Make, Recipe, Sessions};
use crate::auth::{Origins, Rejection, Rules};
use crate::cache::{Background, Refresher, Retry, Revoker, TokenEvent, Windows};
use crate::refresh::{BoxError, RefreshRequest, RevokeRequest};
use crate::replay::CloneBody;
use crate::store::KeyedStore;
use crate::store::session::Session;
use crate::token::TokenSet;

/// Builds a [`KeyedAuthLayer`]: start with [`KeyedAuthLayer::builder`].
///
/// The settings are those of [`AuthLayerBuilder`](crate::AuthLayerBuilder), applied to every
/// key's session, plus the bounds on how many sessions stay in memory.
pub struct KeyedAuthLayerBuilder<K> {
    refresher: Make<K, Refresher>,
    revoker: Option<Make<K, Revoker>>,
    store: Option<Make<K, Session>>,
    hooks: Vec<KeyedHook<K>>,
    default_lifetime: Duration,
    retry: Retry,
    windows: Windows,
    runtime: Option<Handle>,
    max_sessions: Option<u64>,
    idle_timeout: Option<Duration>,
}

impl<K> KeyedAuthLayerBuilder<K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    pub(super) fn new<F, R>(refresher: F) -> Self
    where
        F: Fn(&K) -> R + Send + Sync + 'static,
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        Self {
            refresher: Arc::new(move |key: &K| BoxService::new(refresher(key).map_err(Into::into))),
            revoker: None,
            store: None,
            hooks: Vec::new(),
            default_lifetime: Duration::from_secs(300),
            retry: Retry::default(),
            windows: Windows::default(),
            runtime: None,
            max_sessions: None,
            idle_timeout: None,
        }
    }

    /// The built layer's soft window; see [`AuthLayer::refresh_before`](crate::AuthLayer::refresh_before).
    pub fn refresh_before(mut self, window: Duration) -> Self {
        self.windows = self.windows.with_soft(window);
        self
    }

    /// The built layer's hard window; see [`AuthLayer::wait_before`](crate::AuthLayer::wait_before).
    pub fn wait_before(mut self, window: Duration) -> Self {
        self.windows = self.windows.with_hard(window);
        self
    }

    /// See [`AuthLayerBuilder::default_lifetime`](crate::AuthLayerBuilder::default_lifetime).
    pub fn default_lifetime(mut self, lifetime: Duration) -> Self {
        self.default_lifetime = lifetime;
        self
    }

    /// How long requests wait for one refresh of their session (default 30 s); see
    /// [`AuthLayerBuilder::refresh_timeout`](crate::AuthLayerBuilder::refresh_timeout).
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.retry.timeout = timeout;
        self
    }

    /// See [`AuthLayerBuilder::exchange_timeout`](crate::AuthLayerBuilder::exchange_timeout).
    pub fn exchange_timeout(mut self, timeout: Duration) -> Self {
        self.retry.exchange_timeout = timeout;
        self
    }

    /// The backoff after a session's transient refresh failures; each session has its own.
    /// See [`AuthLayerBuilder::retry_backoff`](crate::AuthLayerBuilder::retry_backoff).
    pub fn retry_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.retry.backoff_min = min;
        self.retry.backoff_max = max.max(min);
        self
    }

    /// Calls `hook` with the key and every new token set of its session, as
    /// [`AuthLayerBuilder::on_tokens`](crate::AuthLayerBuilder::on_tokens) does for one session.
    pub fn on_tokens<F>(self, hook: F) -> Self
    where
        F: Fn(&K, &TokenSet) + Send + Sync + 'static,
    {
        self.on_event(move |key: &K, event: &TokenEvent<'_>| {
            if let Some(tokens) = event.tokens() {
                hook(key, tokens);
            }
        })
    }

    /// Calls `hook` with the key and every change of its session's tokens, as
    /// [`AuthLayerBuilder::on_event`](crate::AuthLayerBuilder::on_event) does for one session.
    pub fn on_event<F>(mut self, hook: F) -> Self
    where
        F: Fn(&K, &TokenEvent<'_>) + Send + Sync + 'static,
    {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Keeps every key's session in `store`, under a name made from the key's `Display`
    /// (a keyed [`RedisStore`](crate::store::RedisStore) keeps key `alice` under
    /// `<prefix>alice:tokens`, with the lock `<prefix>alice:lock`; a
    /// [`KeyedFileStore`](crate::store::KeyedFileStore) in a file of its folder). Each
    /// session goes through its store as [`AuthLayerBuilder::store`](crate::AuthLayerBuilder::store)
    /// describes; a session evicted from memory is read back from the store when it is next
    /// used.
    pub fn store<T>(mut self, store: T) -> Self
    where
        T: KeyedStore,
        K: fmt::Display,
    {
        self.store = Some(Arc::new(move |key: &K| {
            Session::new(store.store_for(&key.to_string()))
        }));
        self
    }

    /// What [`KeyedHandle::logout`](super::KeyedHandle::logout) calls to end a key's session at
    /// the identity provider: a function of the key that makes its revoker (e.g. a clone of the
    /// OAuth2 refresher's [`revoker`](crate::oauth2::OAuth2Refresher::revoker)).
    pub fn revoker<F, V>(mut self, revoker: F) -> Self
    where
        F: Fn(&K) -> V + Send + Sync + 'static,
        V: Service<RevokeRequest, Response = ()> + Send + 'static,
        V::Error: Into<BoxError>,
        V::Future: Send + 'static,
    {
        self.revoker = Some(Arc::new(move |key: &K| {
            BoxService::new(revoker(key).map_err(Into::into))
        }));
        self
    }

    /// See [`AuthLayerBuilder::runtime`](crate::AuthLayerBuilder::runtime).
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Keeps at most `max` sessions in memory (default: no bound), evicting the least recently
    /// used first (approximately: the cache's CLOCK-PRO policy, which also keeps sessions used
    /// often over sessions used once). With a [`store`](Self::store), an evicted session is read
    /// back from it on its next use; without one it is gone (see the [module docs](super)).
    ///
    /// A session in use (a request in flight, a refresh, a handle's call) is never evicted, so
    /// the count passes `max` only while more than `max` sessions are in use at once.
    pub fn max_sessions(mut self, max: u64) -> Self {
        self.max_sessions = Some(max);
        self
    }

    /// Drops a session from memory once no request or handle used it for `idle` (default:
    /// never), as [`max_sessions`](Self::max_sessions) does. Sessions are swept a few times per
    /// `idle` (every quarter of it, at least every 10 ms), on the layer's background runtime,
    /// and a use is marked to an eighth of `idle`: a session goes between `idle` and about
    /// 1.4 × `idle` after its last use, never before.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// The layer, with no session yet: each is made when a request or the handle first needs
    /// it.
    pub fn build(self) -> KeyedAuthLayer<K> {
        let bounded = self.max_sessions.is_some() || self.idle_timeout.is_some();
        if bounded && self.store.is_none() {
            tracing::warn!(
                "a keyed layer bounds its sessions in memory without a store: an evicted \
                 session's tokens are dropped, and its next request logs in again"
            );
        }
        let background = self
            .runtime
            .map_or_else(Background::default_here, Background::pinned);
        let recipe = Recipe {
            refresher: self.refresher,
            revoker: self.revoker,
            store: self.store,
            hooks: self.hooks,
            default_lifetime: self.default_lifetime,
            retry: self.retry,
            background,
        };
        KeyedAuthLayer {
            sessions: Sessions::new(recipe, self.max_sessions, self.idle_timeout),
            rules: Arc::new(Rules {
                windows: self.windows,
                rejection: Rejection::default(),
                origins: Origins::default(),
            }),
            replay: CloneBody,
            key_from: KeyFrom::Extension,
            default_key: None,
        }
    }
}

impl<K> fmt::Debug for KeyedAuthLayerBuilder<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedAuthLayerBuilder")
            .field("default_lifetime", &self.default_lifetime)
            .field("retry", &self.retry)
            .field("hooks", &self.hooks.len())
            .field("store", &self.store.is_some())
            .field("revoker", &self.revoker.is_some())
            .field("windows", &self.windows)
            .field("runtime", &self.runtime.is_some())
            .field("max_sessions", &self.max_sessions)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}
