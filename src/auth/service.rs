use std::fmt;
use std::mem;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower::util::{Oneshot, Ready};
use tower::{Service, ServiceExt};

use super::future::{Replay, ResponseFuture};
use super::origin::Origins;
use super::proof::{Proof, authorize};
use super::rejection::Rejection;
use crate::cache::{CurrentView, Entry, Phase, TokenCache, Windows};
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
/// A retry goes through a clone of the inner service, polled ready first. The service value
/// takes one clone for its retries when it first sends a request that can be retried, and
/// its clones share it; [`get_mut`](Self::get_mut) gives the value a new one, taken at its
/// next such request. A request sent at once holds no clone of its own (one that waits for
/// a token holds the clone it will be sent through): over loopback, with 64 requests in
/// flight, a hyper-util `Client`'s clone per request cost about 1 % of the throughput. The
/// clones of tower's clients are interchangeable (hyper-util's `Client`, tonic's `Channel`,
/// `Buffer`, `ConcurrencyLimit`); for a service whose clones carry state of their own, a
/// retry sees the state of the clone taken at that first request, not the state the
/// service has reached since.
///
/// Clones share the token cache. See the [crate example](crate#example).
#[derive(Clone)]
pub struct AuthService<S, P = CloneBody> {
    inner: S,
    replay: P,
    /// This service's view of the current token: the hot path reads it.
    current: CurrentView,
    /// What every request may need: one reference count per request that needs it.
    one: Arc<One<S>>,
}

/// The rules of one layer value, which its services apply to the session's token.
#[derive(Clone)]
pub(crate) struct Rules {
    pub(crate) windows: Windows,
    pub(crate) rejection: Rejection,
    pub(crate) origins: Origins,
}

/// What a service value, its clones and their requests share: the rules of the layer value
/// that made it, and the clone of the inner service that its retries go through.
pub(crate) struct Shared<S> {
    pub(crate) rules: Rules,
    retry: OnceLock<Mutex<S>>,
}

impl<S> Shared<S> {
    pub(crate) fn new(rules: Rules) -> Self {
        Self {
            rules,
            retry: OnceLock::new(),
        }
    }

    /// Keeps a clone of `inner` for the retries, if none is kept yet: called before a
    /// request that can be retried is sent. Two threads sending their first requests at
    /// once may both clone; one clone is kept, and neither waits for the other's.
    #[inline]
    pub(crate) fn keep_for_retry(&self, inner: &S)
    where
        S: Clone,
    {
        if self.retry.get().is_none() {
            let _ = self.retry.set(Mutex::new(inner.clone()));
        }
    }

    /// The same rules, with no service kept for the retries: for a service value whose
    /// inner service was changed through `get_mut`.
    pub(crate) fn detached(&self) -> Self {
        Self::new(self.rules.clone())
    }
}

/// A single-session service's view of its session: the shared cache, and its own rules.
pub(crate) struct One<S> {
    pub(crate) cache: TokenCache,
    pub(crate) shared: Shared<S>,
}

/// What a request in flight needs of its session: the token cache, the rules it was sent
/// under, and where its retry's service comes from.
pub(crate) enum Session<S> {
    /// A layer's one session: one reference count per request.
    One(Arc<One<S>>),
    /// One key's session of a keyed layer, under its service value's rules.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    Keyed(TokenCache, Arc<Shared<S>>),
}

impl<S> Clone for Session<S> {
    fn clone(&self) -> Self {
        match self {
            Self::One(one) => Self::One(Arc::clone(one)),
            Self::Keyed(cache, shared) => Self::Keyed(cache.clone(), Arc::clone(shared)),
        }
    }
}

impl<S> Session<S> {
    #[inline]
    pub(crate) fn cache(&self) -> &TokenCache {
        match self {
            Self::One(one) => &one.cache,
            Self::Keyed(cache, _) => cache,
        }
    }

    #[inline]
    fn shared(&self) -> &Shared<S> {
        match self {
            Self::One(one) => &one.shared,
            Self::Keyed(_, shared) => shared,
        }
    }

    #[inline]
    pub(crate) fn rules(&self) -> &Rules {
        &self.shared().rules
    }

    /// A clone of the inner service for a retry (not yet ready); `None` if none was kept,
    /// which [`Shared::keep_for_retry`] before the send rules out.
    pub(crate) fn retry_service(&self) -> Option<S>
    where
        S: Clone,
    {
        let kept = self.shared().retry.get()?;
        Some(kept.lock().unwrap_or_else(PoisonError::into_inner).clone())
    }
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
            one: Arc::new(One {
                cache,
                shared: Shared::new(Rules {
                    windows,
                    rejection,
                    origins,
                }),
            }),
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
        self.one = Arc::new(One {
            cache: self.one.cache.clone(),
            shared: self.one.shared.detached(),
        });
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let one = &*self.one;
        if !ours(&request, &one.shared.rules.origins) {
            return ResponseFuture::passthrough(
                self.inner.call(self.replay.prepare(request, None)),
            );
        }
        let kept = self.replay.keep(&request);
        if kept.is_some() {
            one.shared.keep_for_retry(&self.inner);
        }
        match attach(
            &mut request,
            self.current.load().as_deref(),
            &one.cache,
            &one.shared.rules,
        ) {
            // The hot path, written out here, with the request prepared as the inner call's
            // argument: it is copied once on the way, as through `AddAuthorization` (through
            // `send`, or prepared into a variable first, once or twice more).
            Ok(Some((generation, proof))) => ResponseFuture::sent(
                self.inner.call(self.replay.prepare(request, kept.as_ref())),
                generation,
                kept.map(|kept| Replay::new(kept, P::replay)),
                Session::One(Arc::clone(&self.one)),
                proof,
            ),
            attached => send(
                &mut self.inner,
                self.replay.prepare(request, kept.as_ref()),
                kept.map(|kept| Replay::new(kept, P::replay)),
                attached,
                Session::One(Arc::clone(&self.one)),
            ),
        }
    }
}

/// Whether the layer handles `request`: it has no `Authorization` of its own and goes to an
/// origin that may get the token.
#[inline]
pub(crate) fn ours<B>(request: &Request<B>, origins: &Origins) -> bool {
    !has_authorization(request.headers()) && origins.allow(request.uri())
}

/// Whether `headers` has an `Authorization`. A few names are compared in turn, cheaper than
/// the map's hashed lookup (about 80 instructions fewer with two headers).
#[inline]
fn has_authorization(headers: &http::HeaderMap) -> bool {
    if headers.keys_len() <= 8 {
        headers.keys().any(|name| name == AUTHORIZATION)
    } else {
        headers.contains_key(AUTHORIZATION)
    }
}

/// What [`attach`] did.
pub(crate) type Attached = Result<Option<(u64, Proof)>, BoxError>;

/// Attaches the current token to `request` if it is fit to be sent, and returns its
/// generation and proof; a token in its soft window starts a background refresh. `Ok(None)`:
/// no token fit to be sent (wait for one); an error: a DPoP proof could not be made.
#[inline(always)]
pub(crate) fn attach<B>(
    request: &mut Request<B>,
    current: Option<&Entry>,
    cache: &TokenCache,
    rules: &Rules,
) -> Attached {
    let Some(entry) = current else {
        return Ok(None);
    };
    let now = cache.now();
    let phase = entry.phase(now, &rules.windows);
    if phase > Phase::Soft {
        return Ok(None);
    }
    if phase == Phase::Soft {
        cache.refresh_in_background(entry, now, &rules.windows);
    }
    let proof = authorize(request, entry, &rules.origins)?;
    Ok(Some((entry.generation, proof)))
}

/// Sends `request`, if [`attach`] gave it a token, or makes it wait for one. A `replay` needs
/// the session to have kept a service for the retry ([`Shared::keep_for_retry`]).
#[inline(always)]
pub(crate) fn send<S, B, K>(
    inner: &mut S,
    request: Request<B>,
    replay: Option<Replay<K, B>>,
    attached: Attached,
    session: Session<S>,
) -> ResponseFuture<S, B, K>
where
    S: Service<Request<B>> + Clone,
{
    match attached {
        Ok(Some((generation, proof))) => {
            ResponseFuture::sent(inner.call(request), generation, replay, session, proof)
        }
        Ok(None) => {
            // Release what `poll_ready` reserved (a `Buffer` slot, a permit): the wait may
            // be long, and the refresher may need that capacity. The future polls a clone
            // ready once the token is there.
            let unready = inner.clone();
            drop(mem::replace(inner, unready.clone()));
            ResponseFuture::waiting(request, unready, replay, session)
        }
        Err(error) => ResponseFuture::failed(error),
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for AuthService<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .field("replay", &self.replay)
            .field("rejection", &self.one.shared.rules.rejection)
            .field("origins", &self.one.shared.rules.origins)
            .finish_non_exhaustive()
    }
}
