//! The keyed layer: the sessions, shared, and this value's rules.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use tower::Service;
use tower_layer::Layer;

use super::builder::KeyedAuthLayerBuilder;
use super::handle::KeyedHandle;
use super::key::{KeyFrom, RequestHead};
use super::service::{Keyed, KeyedAuthService};
use super::sessions::Sessions;
use crate::auth::{Origin, Rejection, Rules, Shared};
use crate::refresh::{BoxError, RefreshRequest};
use crate::replay::CloneBody;
use crate::token::TokenSet;

/// Makes [`KeyedAuthService`]s that share one set of sessions, one per key. See the
/// [module docs](super).
///
/// As with [`AuthLayer`](crate::AuthLayer), every clone, service and handle shares the
/// sessions and the settings fixed by [`KeyedAuthLayer::builder`]; the methods on the layer
/// configure only the value they are called on (refresh windows, rejection predicate, origins,
/// replay policy, where the key comes from).
pub struct KeyedAuthLayer<K, P = CloneBody> {
    pub(super) sessions: Arc<Sessions<K>>,
    pub(super) rules: Arc<Rules>,
    pub(super) replay: P,
    pub(super) key_from: KeyFrom<K>,
    pub(super) default_key: Option<K>,
}

impl<K> KeyedAuthLayer<K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    /// Starts building a layer whose session for each key gets its tokens from the refresher
    /// `refresher(&key)` returns. It is called once per session, when the session is made
    /// (first needed, or needed again after an eviction); the refresher need not be `Clone`.
    /// A refresher shared by every key is a clone: `move |_| refresher.clone()`.
    pub fn builder<F, R>(refresher: F) -> KeyedAuthLayerBuilder<K>
    where
        F: Fn(&K) -> R + Send + Sync + 'static,
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        KeyedAuthLayerBuilder::new(refresher)
    }
}

impl<K, P> KeyedAuthLayer<K, P> {
    fn with_rules(mut self, change: impl FnOnce(&mut Rules)) -> Self {
        let mut rules = (*self.rules).clone();
        change(&mut rules);
        self.rules = Arc::new(rules);
        self
    }

    /// The soft window; see [`AuthLayer::refresh_before`](crate::AuthLayer::refresh_before).
    pub fn refresh_before(self, window: Duration) -> Self {
        self.with_rules(|rules| rules.windows = rules.windows.with_soft(window))
    }

    /// The hard window; see [`AuthLayer::wait_before`](crate::AuthLayer::wait_before).
    pub fn wait_before(self, window: Duration) -> Self {
        self.with_rules(|rules| rules.windows = rules.windows.with_hard(window))
    }

    /// Which responses mean "this token was rejected"; see
    /// [`AuthLayer::reject_when`](crate::AuthLayer::reject_when).
    pub fn reject_when<F>(self, predicate: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        self.rejection(Rejection::custom(predicate))
    }

    /// Which responses mean "this token was rejected"; see
    /// [`AuthLayer::rejection`](crate::AuthLayer::rejection).
    pub fn rejection(self, rejection: Rejection) -> Self {
        self.with_rules(|rules| rules.rejection = rejection)
    }

    /// Sends the tokens only to `origin` (and the others allowed this way); see
    /// [`AuthLayer::allow_origin`](crate::AuthLayer::allow_origin).
    pub fn allow_origin(self, origin: Origin) -> Self {
        self.with_rules(|rules| rules.origins = rules.origins.with(origin))
    }

    /// Where requests with a relative URI go; see
    /// [`AuthLayer::origin_of_relative`](crate::AuthLayer::origin_of_relative).
    pub fn origin_of_relative(self, origin: Origin) -> Self {
        self.with_rules(|rules| rules.origins = rules.origins.with_relative(origin))
    }

    /// Replaces the [`ReplayPolicy`](crate::replay::ReplayPolicy) (default [`CloneBody`]).
    pub fn replay_policy<Q>(self, policy: Q) -> KeyedAuthLayer<K, Q> {
        KeyedAuthLayer {
            sessions: self.sessions,
            rules: self.rules,
            replay: policy,
            key_from: self.key_from,
            default_key: self.default_key,
        }
    }

    /// Finds each request's key with `key_from` instead of in its extensions: from a header
    /// the application's own proxy sets, a path segment, a claim the application decoded.
    /// `None` means the request has no key.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use tower::service_fn;
    /// # use tower_auth_refresh::{RefreshRequest, TokenSet};
    /// use tower_auth_refresh::keyed::{KeyedAuthLayer, RequestHead};
    ///
    /// let layer = KeyedAuthLayer::builder(|_: &String| {
    ///     service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("t")) })
    /// })
    /// .build()
    /// .key_from(|head: &RequestHead<'_>| {
    ///     let tenant = head.headers().get("x-tenant")?.to_str().ok()?;
    ///     Some(tenant.to_owned())
    /// });
    /// # let _ = layer;
    /// ```
    pub fn key_from<F>(mut self, key_from: F) -> Self
    where
        F: Fn(&RequestHead<'_>) -> Option<K> + Send + Sync + 'static,
    {
        self.key_from = KeyFrom::With(Arc::new(key_from));
        self
    }

    /// The session of requests that carry no key: without it, such a request fails with
    /// [`MissingSessionKey`](super::MissingSessionKey).
    pub fn default_key(mut self, key: K) -> Self {
        self.default_key = Some(key);
        self
    }

    /// A handle on the sessions, by key, with this value's windows.
    pub fn handle(&self) -> KeyedHandle<K> {
        KeyedHandle::new(Arc::clone(&self.sessions), self.rules.windows)
    }
}

impl<K, P: Clone> Clone for KeyedAuthLayer<K, P>
where
    K: Clone,
{
    fn clone(&self) -> Self {
        Self {
            sessions: Arc::clone(&self.sessions),
            rules: Arc::clone(&self.rules),
            replay: self.replay.clone(),
            key_from: self.key_from.clone(),
            default_key: self.default_key.clone(),
        }
    }
}

impl<S, K, P: Clone> Layer<S> for KeyedAuthLayer<K, P>
where
    K: Clone,
{
    type Service = KeyedAuthService<S, K, P>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedAuthService::new(
            inner,
            self.replay.clone(),
            Arc::new(Keyed {
                sessions: Arc::clone(&self.sessions),
                key_from: self.key_from.clone(),
                default_key: self.default_key.clone(),
            }),
            Shared::new((*self.rules).clone()),
        )
    }
}

impl<K, P: fmt::Debug> fmt::Debug for KeyedAuthLayer<K, P>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedAuthLayer")
            .field("sessions", &self.sessions)
            .field("windows", &self.rules.windows)
            .field("replay", &self.replay)
            .field("rejection", &self.rules.rejection)
            .field("origins", &self.rules.origins)
            .field("key_from", &self.key_from)
            .field("default_key", &self.default_key.is_some())
            .finish_non_exhaustive()
    }
}
