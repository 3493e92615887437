use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::util::{Oneshot, Ready};
use tower::{Service, ServiceExt};

use super::future::{Replay, ResponseFuture};
use super::origin::Origins;
use super::rejection::Rejection;
use crate::cache::{CurrentView, Phase, TokenCache, Windows};
use crate::refresh::BoxError;
use crate::replay::{CloneBody, ReplayPolicy};

/// Attaches the access token to every request, refreshes it when needed, and retries a
/// request the server rejected. Made by [`AuthLayer`](crate::AuthLayer).
///
/// - A request that already has an `Authorization` header, or that goes to an origin the layer
///   does not allow, is sent as it is, never retried.
/// - A rejected request (401 by default) whose token is still the current one starts one
///   refresh; if a newer token exists already, it is used at once. The request is retried
///   once with the new token if the [`ReplayPolicy`] can copy it; the second response is
///   returned whatever it is. With the default policy the body must be a
///   [`ReplayableBody`](crate::replay::ReplayableBody) (see [`replay`](crate::replay)).
///
/// Errors are [`BoxError`]s: the inner service's error passes through unchanged (downcast it
/// to its own type), and a failed refresh is a [`RefreshError`](crate::RefreshError).
///
/// Clones share the token cache. See the [crate example](crate#example).
#[derive(Clone)]
pub struct AuthService<S, P = CloneBody> {
    inner: S,
    replay: P,
    /// This service's view of the current token: the hot path reads it.
    current: CurrentView,
    /// What every request may need: one reference count per request that needs it.
    shared: Arc<Shared>,
}

/// A service's view of the session: the shared cache, and this layer value's settings.
pub(super) struct Shared {
    pub(super) cache: TokenCache,
    pub(super) windows: Windows,
    pub(super) rejection: Rejection,
    pub(super) origins: Origins,
}

impl<S, P> AuthService<S, P> {
    pub(super) fn from_parts(
        inner: S,
        cache: TokenCache,
        windows: Windows,
        replay: P,
        rejection: Rejection,
        origins: Origins,
    ) -> Self {
        Self {
            inner,
            replay,
            current: cache.view(),
            shared: Arc::new(Shared {
                cache,
                windows,
                rejection,
                origins,
            }),
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// [`ServiceExt::oneshot`]: waits for the service to be ready, then sends `request`.
    ///
    /// The same as the trait's method; it exists so that a request body the replay policy
    /// cannot copy is reported with [`ReplayableBody`](crate::replay::ReplayableBody)'s hint
    /// (use `BufferBody`), where the trait's method gets only "the method `oneshot` exists …
    /// but its trait bounds were not satisfied". The same for [`ready`](Self::ready).
    ///
    /// A `use tower::ServiceExt` only for `oneshot` or `ready` on this service is then unused.
    pub fn oneshot<B>(self, request: Request<B>) -> Oneshot<Self, Request<B>>
    where
        Self: Service<Request<B>>,
    {
        ServiceExt::oneshot(self, request)
    }

    /// [`ServiceExt::ready`]: waits for the service to be ready. See [`oneshot`](Self::oneshot)
    /// for why it is here.
    pub fn ready<B>(&mut self) -> Ready<'_, Self, Request<B>>
    where
        Self: Service<Request<B>>,
    {
        ServiceExt::ready(self)
    }
}

impl<S, P, B, ResB> Service<Request<B>> for AuthService<S, P>
where
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

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let ours =
            !request.headers().contains_key(AUTHORIZATION) && shared.origins.allow(request.uri());
        let mut kept = None;
        let mut request = self.replay.prepare(request, ours, &mut kept);
        if !ours {
            return ResponseFuture::passthrough(self.inner.call(request));
        }
        let replay = kept.map(|kept| Replay::new(kept, P::replay));
        let now = shared.cache.now();
        let current = self.current.load();
        let usable = current
            .as_deref()
            .map(|entry| (entry, entry.phase(now, &shared.windows)))
            .filter(|(_, phase)| *phase <= Phase::Soft);
        match usable {
            Some((entry, phase)) => {
                if phase == Phase::Soft {
                    shared
                        .cache
                        .refresh_in_background(entry, now, &shared.windows);
                }
                request
                    .headers_mut()
                    .insert(AUTHORIZATION, entry.header.clone());
                let generation = entry.generation;
                let retry = replay.map(|replay| (replay, self.inner.clone()));
                ResponseFuture::sent(
                    self.inner.call(request),
                    generation,
                    retry,
                    Arc::clone(&self.shared),
                )
            }
            None => {
                // Release what `poll_ready` reserved (a `Buffer` slot, a permit): the wait may
                // be long, and the refresher may need that capacity. The future polls a clone
                // ready once the token is there.
                let unready = self.inner.clone();
                drop(mem::replace(&mut self.inner, unready.clone()));
                ResponseFuture::waiting(request, unready, replay, Arc::clone(&self.shared))
            }
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for AuthService<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("replay", &self.replay)
            .field("rejection", &self.shared.rejection)
            .field("origins", &self.shared.origins)
            .finish_non_exhaustive()
    }
}
