//! The keyed service: finds the request's session, then does what `AuthService` does.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::Service;

use super::key::{KeyFrom, MissingSessionKey, RequestHead};
use super::sessions::Sessions;
use crate::auth::Replay;
use crate::auth::{ResponseFuture, Session, Shared, attach, ours, send};
use crate::cache::TokenCache;
use crate::refresh::BoxError;
use crate::replay::{CloneBody, ReplayPolicy};

/// Attaches the access token of the request's own session (its key's) to every request,
/// refreshes that session when needed, and retries a request the server rejected, as
/// [`AuthService`](crate::AuthService) does for one session. Made by
/// [`KeyedAuthLayer`](super::KeyedAuthLayer).
///
/// A request that would get a token but names no session fails with [`MissingSessionKey`],
/// and is not sent.
///
/// Retries go through a clone of the inner service that the service value keeps for all its
/// keys, taken at its first request that can be retried and renewed by
/// [`get_mut`](Self::get_mut), as [`AuthService`](crate::AuthService) describes.
pub struct KeyedAuthService<S, K, P = CloneBody> {
    inner: S,
    replay: P,
    keyed: Arc<Keyed<K>>,
    /// Its layer value's rules, and the service its retries go through (shared by its
    /// clones until `get_mut`).
    shared: Arc<Shared<S>>,
}

/// What a keyed service needs of its layer value (shared by its clones).
pub(super) struct Keyed<K> {
    pub(super) sessions: Arc<Sessions<K>>,
    pub(super) key_from: KeyFrom<K>,
    pub(super) default_key: Option<K>,
}

impl<K> Keyed<K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    /// The session `request` names, if it names one.
    #[inline]
    fn session<B>(&self, request: &Request<B>) -> Option<TokenCache> {
        match &self.key_from {
            KeyFrom::Extension => request
                .extensions()
                .get::<K>()
                .or(self.default_key.as_ref())
                .map(|key| self.sessions.get(key)),
            KeyFrom::With(key_from) => key_from(&RequestHead::of(request))
                .or_else(|| self.default_key.clone())
                .map(|key| self.sessions.get(&key)),
        }
    }
}

impl<S, K, P> KeyedAuthService<S, K, P> {
    pub(super) fn new(inner: S, replay: P, keyed: Arc<Keyed<K>>, shared: Shared<S>) -> Self {
        Self {
            inner,
            replay,
            keyed,
            shared: Arc::new(shared),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably. This service value's retries go through the service as
    /// changed (a clone of it, taken at the next request that can be retried); its clones,
    /// and the requests already sent, keep theirs.
    pub fn get_mut(&mut self) -> &mut S {
        self.shared = Arc::new(self.shared.detached());
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, P: Clone> Clone for KeyedAuthService<S, K, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            replay: self.replay.clone(),
            keyed: Arc::clone(&self.keyed),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, K, P, B, ResB> Service<Request<B>> for KeyedAuthService<S, K, P>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
    P: ReplayPolicy<B>,
    S: Service<Request<P::Body>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, P::Body, P::Kept>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let keyed = &*self.keyed;
        let rules = &self.shared.rules;
        if !ours(&request, &rules.origins) {
            return ResponseFuture::passthrough(
                self.inner.call(self.replay.prepare(request, None)),
            );
        }
        let Some(cache) = keyed.session(&request) else {
            return ResponseFuture::failed(MissingSessionKey::of::<K>().into());
        };
        let kept = self.replay.keep(&request);
        if kept.is_some() {
            self.shared.keep_for_retry(&self.inner);
        }
        let attached = attach(&mut request, cache.current().as_deref(), &cache, rules);
        send(
            &mut self.inner,
            self.replay.prepare(request, kept.as_ref()),
            kept.map(|kept| Replay::new(kept, P::replay)),
            attached,
            Session::Keyed(cache, Arc::clone(&self.shared)),
        )
    }
}

impl<S: fmt::Debug, K, P: fmt::Debug> fmt::Debug for KeyedAuthService<S, K, P>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedAuthService")
            .field("inner", &self.inner)
            .field("replay", &self.replay)
            .field("sessions", &self.keyed.sessions)
            .field("key_from", &self.keyed.key_from)
            .finish_non_exhaustive()
    }
}
