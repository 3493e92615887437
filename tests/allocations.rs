//! Allocations per request on the hot path (a valid token), counted by a counting global
//! allocator, against tower-http's `AddAuthorization` with a static header on the same request;
//! and of a request that waits for a token. Counts are exact and deterministic, so they are
//! asserted; timings live in `benches/`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, USER_AGENT};
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::Full;
use tower::{Layer, Service, service_fn};
use tower_auth_refresh::replay::{BufferBody, NoReplay, ReplayBody};
use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
use tower_http::auth::AddAuthorizationLayer;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|count| count.set(count.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

type Body = Full<Bytes>;

fn api() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone {
    service_fn(|_: Request<Body>| ready(Ok(Response::new(Body::default()))))
}

fn requests(with_headers: bool) -> Vec<Request<Body>> {
    (0..100)
        .map(|_| {
            let mut builder = Request::get("http://127.0.0.1/user/me");
            if with_headers {
                builder = builder
                    .header(ACCEPT, "application/json")
                    .header(USER_AGENT, "bench");
            }
            builder.body(Body::from("{}")).unwrap()
        })
        .collect()
}

/// Allocations per request, over 100 requests sent through `service` after a warm-up.
fn per_request<S>(mut service: S, with_headers: bool) -> f64
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut send = |service: &mut S, request| {
        assert!(service.poll_ready(&mut cx).is_ready());
        let mut future = std::pin::pin!(service.call(request));
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(response) => drop(response.unwrap()),
            Poll::Pending => panic!("the hot path must not wait"),
        }
    };
    for request in requests(with_headers) {
        send(&mut service, request);
    }
    let batch = requests(with_headers);
    let before = allocations();
    for request in batch {
        send(&mut service, request);
    }
    (allocations() - before) as f64 / 100.0
}

fn layer() -> (tokio::runtime::Runtime, AuthLayer) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("token")) });
    let layer = AuthLayer::new(refresher);
    runtime
        .block_on(
            layer
                .handle()
                .set_tokens(TokenSet::new("token").with_expires_in(Duration::from_secs(900))),
        )
        .unwrap();
    (runtime, layer)
}

/// An API that takes the body `BufferBody` wraps requests in.
fn buffered_api() -> impl Service<
    Request<ReplayBody<Body>>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>>,
> + Clone {
    service_fn(|request: Request<ReplayBody<Body>>| async move {
        // Sent, as a client would: the body streams, so that it can be replayed.
        let _ = request.into_body().collect().await;
        Ok(Response::new(Body::default()))
    })
}

#[test]
fn allocations_per_request_for_each_policy() {
    let (_runtime, layer) = layer();
    // (headers, AddAuthorization, NoReplay, CloneBody, BufferBody), measured: the exact counts,
    // so that a change shows.
    // `BufferBody`'s one more: the API's own, which collects the body it streams.
    for (with_headers, expected) in [(false, [2.0, 2.0, 2.0, 3.0]), (true, [0.0, 0.0, 0.0, 1.0])] {
        let baseline = per_request(
            AddAuthorizationLayer::bearer("token").layer(api()),
            with_headers,
        );
        let no_replay = per_request(
            layer.clone().replay_policy(NoReplay).layer(api()),
            with_headers,
        );
        // The snapshot a retry is made from: its text in a buffer an earlier request on this
        // thread gave back, so none is allocated once the first requests are done.
        let clone_body = per_request(layer.layer(api()), with_headers);
        let buffer_body = per_request(
            layer
                .clone()
                .replay_policy(BufferBody::default())
                .layer(buffered_api()),
            with_headers,
        );
        let measured = [baseline, no_replay, clone_body, buffer_body];
        println!(
            "headers: {with_headers}: AddAuthorization {baseline}, NoReplay {no_replay}, CloneBody {clone_body}, BufferBody {buffer_body}"
        );
        assert_eq!(measured, expected, "headers: {with_headers}");
        assert_eq!(no_replay, baseline, "the hot path itself allocates nothing");
    }
}

/// Allocations of requests that wait for a token, on this thread: while they wait (sent to the
/// layer and polled once, joining a refresh already running), and once the token is there.
/// Each future is polled where it stays, a place on the heap taken before counting.
fn waiting<S>(mut service: S, with_headers: bool, release: &tokio::sync::Semaphore) -> [f64; 2]
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    let mut send = |service: &mut S, request, mut place: Pin<&mut Option<S::Future>>| {
        assert!(service.poll_ready(&mut cx).is_ready());
        place.set(Some(service.call(request)));
        let future = place.as_pin_mut().unwrap();
        assert!(future.poll(&mut cx).is_pending());
    };
    // The first starts the refresh (its task, its flight); the others join it.
    let mut first = Box::pin(None);
    send(
        &mut service,
        requests(with_headers).remove(0),
        first.as_mut(),
    );
    let batch = requests(with_headers);
    let mut waiting: Vec<_> = batch.iter().map(|_| Box::pin(None)).collect();
    let before = allocations();
    for (request, place) in batch.into_iter().zip(&mut waiting) {
        send(&mut service, request, place.as_mut());
    }
    let while_waiting = allocations() - before;
    release.add_permits(1);
    let mut cx = Context::from_waker(Waker::noop());
    let mut first = first.as_mut().as_pin_mut().unwrap();
    while first.as_mut().poll(&mut cx).is_pending() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = allocations();
    for place in &mut waiting {
        match place.as_mut().as_pin_mut().unwrap().poll(&mut cx) {
            Poll::Ready(response) => drop(response.unwrap()),
            Poll::Pending => panic!("the token is there"),
        }
    }
    let sent = allocations() - before;
    [while_waiting as f64 / 100.0, sent as f64 / 100.0]
}

// A request that waits for a token allocates nothing of its own: it waits inside its future,
// the wait included, and then allocates what the hot path does for the header. `CloneBody`'s
// one is the copy's text, in a buffer of its own: the hundred copies are all alive at once,
// so none finds a buffer an earlier request gave back, as on the hot path.
#[test]
fn a_request_waiting_for_a_token_allocates_nothing_of_its_own() {
    for (with_headers, policy, expected) in [
        (false, "NoReplay", [0.0, 2.0]),
        // Once answered, the first 15 copies to go each leave a spare buffer for the thread's
        // next requests in place of their own (the first request left the 16th).
        (false, "CloneBody", [1.0, 2.15]),
        (true, "NoReplay", [0.0, 0.0]),
        (true, "CloneBody", [1.0, 0.15]),
    ] {
        let release = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let refresher = service_fn({
            let release = std::sync::Arc::clone(&release);
            move |_: RefreshRequest| {
                let release = std::sync::Arc::clone(&release);
                async move {
                    release.acquire().await.unwrap().forget();
                    Ok::<_, Infallible>(TokenSet::new("token"))
                }
            }
        });
        let layer = AuthLayer::new(refresher);
        // On a thread of its own: none of the spare buffers an earlier case left.
        let measured = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if policy == "NoReplay" {
                        let service = layer.replay_policy(NoReplay).layer(api());
                        waiting(service, with_headers, &release)
                    } else {
                        waiting(layer.layer(api()), with_headers, &release)
                    }
                })
                .join()
                .unwrap()
        });
        assert_eq!(measured, expected, "{policy}, headers: {with_headers}");
    }
}
