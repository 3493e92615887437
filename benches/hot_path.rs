//! The hot path: a valid token, a trivial inner service that answers at once.
//!
//! Compares `AuthService` with no middleware and with tower-http's `AddAuthorization` (a
//! static bearer header), in one run, and the same from two threads sharing one cache.
//!
//! `cargo bench --bench hot_path` (add `-- --quick` for a short run).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::header::{ACCEPT, USER_AGENT};
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, service_fn};
use tower_auth_refresh::replay::NoReplay;
use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
use tower_http::auth::AddAuthorizationLayer;

type Body = Full<Bytes>;

fn api() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ 'static {
    service_fn(|_: Request<Body>| ready(Ok(Response::new(Body::default()))))
}

fn request(with_headers: bool) -> Request<Body> {
    let mut builder = Request::get("http://127.0.0.1/user/me");
    if with_headers {
        builder = builder
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "bench");
    }
    builder.body(Body::from("{}")).unwrap()
}

/// Sends one request through a service whose future is ready at once.
fn send<S>(service: &mut S, request: Request<Body>)
where
    S: Service<Request<Body>, Response = Response<Body>>,
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

/// A layer holding a valid token, with its timer armed on `runtime`.
fn layer(runtime: &tokio::runtime::Runtime) -> AuthLayer {
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("token")) });
    let layer = AuthLayer::new(refresher);
    let _entered = runtime.enter();
    layer
        .handle()
        .set_tokens(TokenSet::new("token").with_expires_in(Duration::from_secs(3600)))
        .unwrap();
    layer
}

fn bench_one<S>(c: &mut Criterion, group: &str, name: &str, mut service: S, with_headers: bool)
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    c.benchmark_group(group).bench_function(name, |b| {
        b.iter_batched(
            || request(with_headers),
            |request| send(&mut service, request),
            BatchSize::SmallInput,
        )
    });
}

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = layer(&runtime);
    for (group, with_headers) in [
        ("hot_path/no_headers", false),
        ("hot_path/two_headers", true),
    ] {
        bench_one(c, group, "no_middleware", api(), with_headers);
        let add_authorization = AddAuthorizationLayer::bearer("token").layer(api());
        bench_one(
            c,
            group,
            "add_authorization",
            add_authorization,
            with_headers,
        );
        bench_one(c, group, "auth_service", layer.layer(api()), with_headers);
        let no_replay = layer.clone().replay_policy(NoReplay).layer(api());
        bench_one(c, group, "auth_service_no_replay", no_replay, with_headers);
    }
}

/// Time for `threads` threads to send `iters` requests each through clones of one service.
fn threaded<S>(service: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send,
    S::Error: std::fmt::Debug,
{
    let barrier = std::sync::Barrier::new(threads);
    let times: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let mut service = service.clone();
                let barrier = &barrier;
                scope.spawn(move || {
                    let requests: Vec<_> = (0..iters).map(|_| request(true)).collect();
                    barrier.wait();
                    let started = Instant::now();
                    for request in requests {
                        send(&mut service, request);
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Per-thread time: the slowest thread.
    times.into_iter().max().unwrap_or_default()
}

fn contention(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = layer(&runtime);
    let auth = layer.layer(api());
    let add_authorization = AddAuthorizationLayer::bearer("token").layer(api());
    let mut group = c.benchmark_group("contention");
    for threads in [1, 2] {
        group.bench_function(format!("auth_service/{threads}_threads"), |b| {
            b.iter_custom(|iters| threaded(&auth, threads, iters))
        });
        group.bench_function(format!("add_authorization/{threads}_threads"), |b| {
            b.iter_custom(|iters| threaded(&add_authorization, threads, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path, contention);
criterion_main!(benches);
