use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower::Service;
use tower::util::Oneshot;

use super::proof::{Challenge, Proof, authorize};
use super::service::Session;
use crate::cache::Wait;
use crate::refresh::BoxError;

/// What the policy kept for a retry, with the policy's function that makes the retry from it.
pub(crate) struct Replay<K, B> {
    kept: K,
    replay: fn(K) -> Option<Request<B>>,
}

impl<K, B> Replay<K, B> {
    pub(crate) fn new(kept: K, replay: fn(K) -> Option<Request<B>>) -> Self {
        Self { kept, replay }
    }

    fn into_request(self) -> Option<Request<B>> {
        (self.replay)(self.kept)
    }
}

/// A request waiting for a token, with what it will be sent with.
pub(super) struct Pending<S, B, K> {
    request: Request<B>,
    service: S,
    kept: Option<Replay<K, B>>,
    session: Session<S>,
}

/// A request sent with this layer's token, and what its response may call for.
pub(super) struct Sent<S, B, K> {
    /// The generation of the token it was sent with.
    generation: u64,
    /// The session, and the clone of the inner service that a retry goes through.
    session: Session<S>,
    /// The copy kept for a retry.
    retry: Option<Replay<K, B>>,
    /// Its DPoP proof's key and URI, if it carried one.
    proof: Proof,
}

pin_project! {
    /// The response future of [`AuthService`](crate::AuthService).
    ///
    /// `B` is the body type the inner service receives, `K` what the replay policy keeps for
    /// a retry ([`ReplayPolicy::Kept`](crate::replay::ReplayPolicy::Kept)).
    ///
    /// A request that waits for a token waits inside the future, and is sent from there: a
    /// stampede's waiters allocate nothing of their own. A request that is retried, or whose
    /// service is not ready once the token is there, moves into a box. The future is not
    /// [`Unpin`]: to poll it by hand, pin it (`std::pin::pin!`, `Box::pin`).
    pub struct ResponseFuture<S, B, K = Request<B>>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, K>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, K>
    where
        S: Service<Request<B>>,
    {
        // Not ours (the caller's own `Authorization`, another origin): the inner future as it is.
        Passthrough {
            #[pin]
            future: S::Future,
        },
        // Sent with our token: the hot path.
        Sent {
            #[pin]
            future: S::Future,
            sent: Option<Sent<S, B, K>>,
        },
        // No token fit to send: waiting for one. Inline: once the token is there, the sent
        // state takes the place the waiting one leaves. The service is a clone not yet
        // polled ready, so the wait holds no capacity of the inner service (which the
        // refresher may share, e.g. through a `Buffer`).
        Waiting {
            #[pin]
            wait: Wait,
            pending: Option<Pending<S, B, K>>,
        },
        // Off the hot path: a service not ready at once, a retry, a request refused unsent.
        Cold {
            cold: Pin<Box<Cold<S, B, K>>>,
        },
    }
}

pin_project! {
    #[project = ColdProj]
    enum Cold<S, B, K>
    where
        S: Service<Request<B>>,
    {
        // The token is attached: waiting for the service to be ready.
        Readying {
            request: Option<Request<B>>,
            service: Option<S>,
            sent: Option<Sent<S, B, K>>,
        },
        Sent {
            #[pin]
            future: S::Future,
            sent: Option<Sent<S, B, K>>,
        },
        // The server rejected the token: waiting for a newer one.
        Refreshing {
            #[pin]
            wait: Wait,
            retry: Option<(Request<B>, S)>,
            session: Session<S>,
            // The retry answers a DPoP nonce challenge (same token), not a rejection.
            after_nonce: bool,
        },
        // Refused before anything was sent (a keyed layer's request without a key).
        Failed {
            error: Option<BoxError>,
        },
        // The one retry; its response goes back whatever it is.
        Retrying {
            #[pin]
            future: Oneshot<S, Request<B>>,
            generation: u64,
            session: Session<S>,
            proof: Proof,
            after_nonce: bool,
        },
    }
}

impl<S, B, K> ResponseFuture<S, B, K>
where
    S: Service<Request<B>>,
{
    pub(crate) fn passthrough(future: S::Future) -> Self {
        Self {
            state: State::Passthrough { future },
        }
    }

    pub(crate) fn sent(
        future: S::Future,
        generation: u64,
        retry: Option<Replay<K, B>>,
        session: Session<S>,
        proof: Proof,
    ) -> Self {
        Self {
            state: State::Sent {
                future,
                sent: Some(Sent {
                    generation,
                    session,
                    retry,
                    proof,
                }),
            },
        }
    }

    /// A future that fails with `error` at once, having sent nothing.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    pub(crate) fn failed(error: BoxError) -> Self {
        Self {
            state: State::Cold {
                cold: Box::pin(Cold::Failed { error: Some(error) }),
            },
        }
    }

    pub(crate) fn waiting(
        request: Request<B>,
        service: S,
        kept: Option<Replay<K, B>>,
        session: Session<S>,
    ) -> Self {
        Self {
            state: State::Waiting {
                wait: Wait::acquire(session.rules().windows),
                pending: Some(Pending {
                    request,
                    service,
                    kept,
                    session,
                }),
            },
        }
    }
}

/// What a response to a request sent with our token calls for.
// Made once per response and moved at once into the cold state's box.
#[allow(clippy::large_enum_variant)]
enum Next<S, B, K, ResB>
where
    S: Service<Request<B>>,
{
    /// It goes back to the caller.
    Done(Response<ResB>),
    /// The token was rejected and the request can be sent again: wait for a newer token.
    Retry(Cold<S, B, K>),
}

/// Decides on `response`: accepted, or rejected (then no refresh allowed, a retry, or a refresh
/// in the background for a request that cannot be replayed).
fn on_response<S, B, K, ResB>(response: Response<ResB>, sent: Sent<S, B, K>) -> Next<S, B, K, ResB>
where
    S: Service<Request<B>> + Clone,
{
    let Sent {
        generation,
        session,
        retry,
        proof,
    } = sent;
    let from = proved_from(&proof, &response, &session);
    match proof.answer(
        response.status(),
        response.headers(),
        retry.is_some(),
        from.as_ref(),
    ) {
        Challenge::None => {}
        Challenge::Returned => return Next::Done(response),
        Challenge::Nonce => {
            let Some(retry) = retry.and_then(|kept| retry_of(kept, &session)) else {
                return Next::Done(response);
            };
            // The same token (or a newer one, if it changed meanwhile), with a new proof.
            let wait = Wait::acquire(session.rules().windows);
            return Next::Retry(Cold::Refreshing {
                wait,
                retry: Some(retry),
                session,
                after_nonce: true,
            });
        }
    }
    if !session
        .rules()
        .rejection
        .matches(response.status(), response.headers())
    {
        session.cache().accepted(generation);
        return Next::Done(response);
    }
    if !answered_by_allowed_origin(&response, &session) || !session.cache().rejected(generation) {
        return Next::Done(response);
    }
    let status = response.status().as_u16();
    match retry.and_then(|kept| retry_of(kept, &session)) {
        Some(retry) => {
            tracing::debug!(
                generation,
                status,
                "token rejected; retrying with a newer token"
            );
            let wait = Wait::after_rejection(generation, session.rules().windows);
            Next::Retry(Cold::Refreshing {
                wait,
                retry: Some(retry),
                session,
                after_nonce: false,
            })
        }
        None => {
            tracing::debug!(
                generation,
                status,
                "token rejected; the request cannot be replayed"
            );
            session
                .cache()
                .refresh_after_rejection(generation, &session.rules().windows);
            Next::Done(response)
        }
    }
}

impl<S, B, K, ResB> Future for ResponseFuture<S, B, K>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.as_mut().project();
        match this.state.as_mut().project() {
            StateProj::Passthrough { future } => future.poll(cx).map_err(Into::into),
            StateProj::Sent { future, sent } => {
                let response = ready!(future.poll(cx)).map_err(Into::into)?;
                // The common case decided in place: a response that does not reject the token.
                // The copy kept for a retry goes now, not when the future is dropped.
                if let Some(accepted) = sent.take_if(|sent| {
                    !sent.proof.is_some()
                        && !sent
                            .session
                            .rules()
                            .rejection
                            .matches(response.status(), response.headers())
                }) {
                    accepted.session.cache().accepted(accepted.generation);
                    return Poll::Ready(Ok(response));
                }
                let sent = sent.take().expect("ResponseFuture polled after completion");
                match on_response(response, sent) {
                    Next::Done(response) => Poll::Ready(Ok(response)),
                    Next::Retry(refreshing) => {
                        let mut cold = Box::pin(refreshing);
                        let polled = cold.as_mut().poll(cx);
                        this.state.set(State::Cold { cold });
                        polled
                    }
                }
            }
            StateProj::Waiting { wait, pending } => {
                let session = &pending
                    .as_ref()
                    .expect("ResponseFuture polled after completion")
                    .session;
                let entry = ready!(wait.poll_entry(cx, session.cache()))?;
                let Pending {
                    mut request,
                    mut service,
                    kept,
                    session,
                } = pending
                    .take()
                    .expect("ResponseFuture polled after completion");
                let proof = authorize(&mut request, entry, &session.rules().origins)?;
                let sent = Some(Sent {
                    generation: entry.generation,
                    session,
                    retry: kept,
                    proof,
                });
                // Sent at once if the service is ready (it usually is), on the hot path.
                match service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let future = service.call(request);
                        this.state.set(State::Sent { future, sent });
                        self.poll(cx)
                    }
                    Poll::Ready(Err(error)) => Poll::Ready(Err(error.into())),
                    Poll::Pending => {
                        this.state.set(State::Cold {
                            cold: Box::pin(Cold::Readying {
                                request: Some(request),
                                service: Some(service),
                                sent,
                            }),
                        });
                        Poll::Pending
                    }
                }
            }
            StateProj::Cold { cold } => cold.as_mut().poll(cx),
        }
    }
}

impl<S, B, K, ResB> Future for Cold<S, B, K>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project() {
                ColdProj::Readying {
                    request,
                    service,
                    sent,
                } => {
                    let ready = service
                        .as_mut()
                        .expect("ResponseFuture polled after completion");
                    ready!(ready.poll_ready(cx)).map_err(Into::into)?;
                    let (request, mut service) = request
                        .take()
                        .zip(service.take())
                        .expect("ResponseFuture polled after completion");
                    let future = service.call(request);
                    let sent = sent.take();
                    self.set(Cold::Sent { future, sent });
                }
                ColdProj::Sent { future, sent } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let sent = sent.take().expect("ResponseFuture polled after completion");
                    match on_response(response, sent) {
                        Next::Done(response) => return Poll::Ready(Ok(response)),
                        Next::Retry(refreshing) => self.set(refreshing),
                    }
                }
                ColdProj::Refreshing {
                    wait,
                    retry,
                    session,
                    after_nonce,
                } => {
                    let entry = ready!(wait.poll_entry(cx, session.cache()))?;
                    let (mut request, service) = retry
                        .take()
                        .expect("ResponseFuture polled after completion");
                    // A new proof: the retry's is never the copied one.
                    let proof = authorize(&mut request, entry, &session.rules().origins)?;
                    let session = session.clone();
                    let (after_nonce, generation) = (*after_nonce, entry.generation);
                    self.set(Cold::Retrying {
                        future: Oneshot::new(service, request),
                        generation,
                        session,
                        proof,
                        after_nonce,
                    });
                }
                ColdProj::Failed { error } => {
                    let error = error
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Err(error));
                }
                ColdProj::Retrying {
                    future,
                    generation,
                    session,
                    proof,
                    after_nonce,
                } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    // One retry per request: a second challenge goes back as it came.
                    let from = proved_from(proof, &response, session);
                    if !matches!(
                        proof.answer(response.status(), response.headers(), false, from.as_ref()),
                        Challenge::None
                    ) {
                        return Poll::Ready(Ok(response));
                    }
                    let rules = session.rules();
                    if rules
                        .rejection
                        .matches(response.status(), response.headers())
                    {
                        if !*after_nonce {
                            session.cache().retry_rejected(*generation);
                        } else if answered_by_allowed_origin(&response, session)
                            && session.cache().rejected(*generation)
                        {
                            // The one retry went to a nonce challenge: the token's rejection
                            // goes back, and the next request finds a refresh under way.
                            session
                                .cache()
                                .refresh_after_rejection(*generation, &rules.windows);
                        }
                    } else {
                        session.cache().accepted(*generation);
                    }
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}

/// The request a retry sends, rebuilt from the copy kept, and the service it goes through.
fn retry_of<S: Clone, B, K>(kept: Replay<K, B>, session: &Session<S>) -> Option<(Request<B>, S)> {
    Some((kept.into_request()?, session.retry_service()?))
}

/// Whether the response came from an origin the token may go to. A redirect followed inside
/// the stack (tower-http's `FollowRedirect` records the last URI as `RequestUri`) may end at
/// another origin, whose 401 says nothing about this layer's token.
fn answered_by_allowed_origin<T, S>(response: &Response<T>, session: &Session<S>) -> bool {
    redirected_to(response).is_none_or(|uri| session.rules().origins.allow(uri))
}

/// Where the response to a proved request came from, as an absolute URI, if a redirect
/// followed inside the stack says so; nothing for a Bearer request (it does not matter there).
fn proved_from<T, S>(
    proof: &Proof,
    response: &Response<T>,
    session: &Session<S>,
) -> Option<http::Uri> {
    if !proof.is_some() {
        return None;
    }
    // `FollowRedirect` records the URI as the request gave it: relative, for a request that
    // relies on `origin_of_relative`.
    session
        .rules()
        .origins
        .absolute_or_none(redirected_to(response)?)
}

/// The URI a redirect followed inside the stack ended at, if one says so (tower-http's
/// `FollowRedirect` records it as `RequestUri`).
#[inline]
fn redirected_to<T>(response: &Response<T>) -> Option<&http::Uri> {
    #[cfg(feature = "tower-http")]
    return response
        .extensions()
        .get::<tower_http::follow_redirect::RequestUri>()
        .map(|uri| &uri.0);
    #[cfg(not(feature = "tower-http"))]
    {
        let _ = response;
        None
    }
}

impl<S, B, K> fmt::Debug for ResponseFuture<S, B, K>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Passthrough { .. } => "sent (not ours)",
            State::Sent { .. } => "sent",
            State::Waiting { .. } => "waiting for a token",
            State::Cold { cold } => match &**cold {
                Cold::Readying { .. } => "waiting for the service",
                Cold::Sent { .. } => "sent",
                Cold::Refreshing { .. } => "waiting for a newer token",
                Cold::Retrying { .. } => "retrying",
                Cold::Failed { .. } => "failed",
            },
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
