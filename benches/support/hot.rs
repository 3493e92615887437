//! What the hot-path benches share: a trivial API, the requests, one request sent through a
//! service whose future is ready at once, and a layer holding a valid token. Shared through
//! `#[path]` by `hot_path` and `instructions`, and in part by `keyed` and `refresh`.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Service, service_fn};
use tower_auth_refresh::replay::ReplayBody;
use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};

pub(crate) type Body = Full<Bytes>;

pub(crate) fn api() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ 'static {
    service_fn(|_: Request<Body>| ready(Ok(Response::new(Body::default()))))
}

pub(crate) fn request(with_headers: bool) -> Request<Body> {
    let mut builder = Request::get("http://127.0.0.1/user/me");
    if with_headers {
        builder = builder
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "bench");
    }
    builder.body(Body::from("{}")).unwrap()
}

/// Sends one request through a service whose future is ready at once.
pub(crate) fn send<S, B>(service: &mut S, request: Request<B>)
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = std::pin::pin!(service.call(request));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(response) => drop(black_box(response.unwrap())),
        Poll::Pending => panic!("the hot path must not wait"),
    }
}

/// The API for `BufferBody`'s requests: it streams the body, as a client sends it, so that it
/// can be replayed; the future is ready at once.
pub(crate) fn buffered_api() -> impl Service<
    Request<ReplayBody<Body>>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ 'static {
    service_fn(|request: Request<ReplayBody<Body>>| {
        read(request.into_body());
        ready(Ok(Response::new(Body::default())))
    })
}

/// `api` that streams the body as `buffered_api` does: the baseline that reads the body too.
#[allow(dead_code)]
pub(crate) fn reading_api() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ 'static {
    service_fn(|request: Request<Body>| {
        read(request.into_body());
        ready(Ok(Response::new(Body::default())))
    })
}

/// Polls `body` to its end, frames dropped.
fn read<B: http_body::Body>(body: B) {
    let mut body = std::pin::pin!(body);
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {}
}

/// A layer holding a valid token.
pub(crate) fn layer(runtime: &tokio::runtime::Runtime) -> AuthLayer {
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("token")) });
    let layer = AuthLayer::new(refresher);
    runtime
        .block_on(
            layer
                .handle()
                .set_tokens(TokenSet::new("token").with_expires_in(Duration::from_secs(3600))),
        )
        .unwrap();
    layer
}
