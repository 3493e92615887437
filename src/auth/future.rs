use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::header::AUTHORIZATION;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tower::util::Oneshot;

use std::sync::Arc;

use super::service::Shared;
use crate::cache::Outcome;
use crate::refresh::BoxError;

/// Waiting for a token: boxed, as it only happens off the hot path (no token yet, a token in
/// its hard window, or after a rejection).
type Wait = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// The generation of a request whose `Authorization` header the caller set: never ours to
/// refresh or retry.
const NOT_OURS: u64 = 0;

/// What the policy kept for a retry, with the policy's function that makes the retry from it.
pub(super) struct Replay<K, B> {
    kept: K,
    replay: fn(K) -> Option<Request<B>>,
}

impl<K, B> Replay<K, B> {
    pub(super) fn new(kept: K, replay: fn(K) -> Option<Request<B>>) -> Self {
        Self { kept, replay }
    }

    fn into_request(self) -> Option<Request<B>> {
        (self.replay)(self.kept)
    }
}

pin_project! {
    /// The response future of [`AuthService`](crate::AuthService).
    ///
    /// `B` is the body type the inner service receives, `K` what the replay policy keeps for
    /// a retry ([`ReplayPolicy::Kept`](crate::replay::ReplayPolicy::Kept)).
    pub struct ResponseFuture<S, B, K = Request<B>>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        // What the policy kept, to send again if the first attempt is rejected.
        replay: Option<Replay<K, B>>,
        // A clone of the inner service for that second attempt.
        retry_service: Option<S>,
        // The generation of the token the request was sent with.
        generation: u64,
        // The service's view of the session; `None` for a request that is not ours.
        shared: Option<Arc<Shared>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // No token fit to send: waiting for one. The service is a clone not yet polled
        // ready, so the wait holds no capacity of the inner service (which the refresher
        // may share, e.g. through a `Buffer`).
        Waiting {
            wait: Wait,
            request: Option<Request<B>>,
            service: Option<S>,
        },
        // The token is attached: waiting for the service to be ready.
        Readying {
            request: Option<Request<B>>,
            service: Option<S>,
        },
        Sent {
            #[pin]
            future: S::Future,
        },
        // The server rejected the token: waiting for a newer one.
        Refreshing {
            wait: Wait,
            retry: Option<(Request<B>, S)>,
        },
        // The one retry; its response goes back whatever it is.
        Retrying {
            #[pin]
            future: Oneshot<S, Request<B>>,
            generation: u64,
        },
    }
}

impl<S, B, K> ResponseFuture<S, B, K>
where
    S: Service<Request<B>>,
{
    pub(super) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Sent { future },
            replay: None,
            retry_service: None,
            generation: NOT_OURS,
            shared: None,
        }
    }

    pub(super) fn sent(
        future: S::Future,
        generation: u64,
        retry: Option<(Replay<K, B>, S)>,
        shared: Arc<Shared>,
    ) -> Self {
        let (replay, retry_service) = retry.unzip();
        Self {
            state: State::Sent { future },
            replay,
            retry_service,
            generation,
            shared: Some(shared),
        }
    }

    pub(super) fn waiting(
        request: Request<B>,
        service: S,
        replay: Option<Replay<K, B>>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            state: State::Waiting {
                wait: Box::pin(shared.cache.clone().acquire(shared.windows)),
                request: Some(request),
                service: Some(service),
            },
            replay,
            retry_service: None,
            generation: NOT_OURS,
            shared: Some(shared),
        }
    }
}

impl<S, B, K, ResB> Future for ResponseFuture<S, B, K>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    wait,
                    request,
                    service,
                } => {
                    let entry = ready!(wait.as_mut().poll(cx))?;
                    let (mut request, service) = request
                        .take()
                        .zip(service.take())
                        .expect("ResponseFuture polled after completion");
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, entry.header.clone());
                    *this.generation = entry.generation;
                    if this.replay.is_some() {
                        *this.retry_service = Some(service.clone());
                    }
                    this.state.set(State::Readying {
                        request: Some(request),
                        service: Some(service),
                    });
                }
                StateProj::Readying { request, service } => {
                    let ready = service
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    ready!(ready.poll_ready(cx)).map_err(Into::into)?;
                    let (request, mut service) = request
                        .take()
                        .zip(service.take())
                        .expect("ResponseFuture polled after completion");
                    let future = service.call(request);
                    this.state.set(State::Sent { future });
                }
                StateProj::Sent { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let Some(shared) = this.shared.as_ref() else {
                        return Poll::Ready(Ok(response));
                    };
                    let generation = *this.generation;
                    if generation == NOT_OURS {
                        return Poll::Ready(Ok(response));
                    }
                    if !shared
                        .rejection
                        .matches(response.status(), response.headers())
                    {
                        shared.cache.accepted(generation);
                        return Poll::Ready(Ok(response));
                    }
                    if !answered_by_allowed_origin(&response, shared)
                        || !shared.cache.rejected(generation)
                    {
                        return Poll::Ready(Ok(response));
                    }
                    let status = response.status().as_u16();
                    let replay = this.replay.take().and_then(Replay::into_request);
                    match replay.zip(this.retry_service.take()) {
                        Some(retry) => {
                            tracing::debug!(
                                generation,
                                status,
                                "token rejected; retrying with a newer token"
                            );
                            let wait = Box::pin(
                                shared
                                    .cache
                                    .clone()
                                    .after_rejection(generation, shared.windows),
                            );
                            this.state.set(State::Refreshing {
                                wait,
                                retry: Some(retry),
                            });
                        }
                        None => {
                            tracing::debug!(
                                generation,
                                status,
                                "token rejected; the request cannot be replayed"
                            );
                            shared
                                .cache
                                .refresh_after_rejection(generation, &shared.windows);
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Refreshing { wait, retry } => {
                    let entry = ready!(wait.as_mut().poll(cx))?;
                    let (mut request, service) = retry
                        .take()
                        .expect("ResponseFuture polled after completion");
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, entry.header.clone());
                    let future = Oneshot::new(service, request);
                    this.state.set(State::Retrying {
                        future,
                        generation: entry.generation,
                    });
                }
                StateProj::Retrying { future, generation } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some(shared) = this.shared.as_ref() {
                        if shared
                            .rejection
                            .matches(response.status(), response.headers())
                        {
                            shared.cache.retry_rejected(*generation);
                        } else {
                            shared.cache.accepted(*generation);
                        }
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// Whether the response came from an origin the token may go to. A redirect followed inside
/// the stack (tower-http's `FollowRedirect` records the last URI as `RequestUri`) may end at
/// another origin, whose 401 says nothing about this layer's token.
fn answered_by_allowed_origin<T>(response: &Response<T>, shared: &Shared) -> bool {
    #[cfg(feature = "tower-http")]
    if let Some(uri) = response
        .extensions()
        .get::<tower_http::follow_redirect::RequestUri>()
    {
        return shared.origins.allow(&uri.0);
    }
    let _ = (response, shared);
    true
}

impl<S, B, K> fmt::Debug for ResponseFuture<S, B, K>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { .. } => "waiting for a token",
            State::Readying { .. } => "waiting for the service",
            State::Sent { .. } => "sent",
            State::Refreshing { .. } => "waiting for a newer token",
            State::Retrying { .. } => "retrying",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}
