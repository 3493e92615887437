//! The hot path: a valid token, a trivial inner service that answers at once.
//!
//! Compares `AuthService` with no middleware and with tower-http's `AddAuthorization` (a
//! static bearer header), in one run, and the same from two threads sharing one cache.
//!
//! - `hot_path/*`, `contention/*` (criterion): time per request.
//! - `hot_path/ratios`, `contention/ratios` (tables): the services take turns, in rotating
//!   order, each sending a short chunk of requests per round; the medians of the per-round
//!   ratios, which the load of a shared machine disturbs far less than two measurements
//!   taken seconds apart. `BufferBody`'s API reads each body, as it must to record it; the
//!   table's `add_authorization_reading` is `AddAuthorization` over an API that reads the
//!   body the same way, and its last line per shape is `BufferBody`'s ratio to that.
//!
//! ```sh
//! cargo bench --bench hot_path                  # full run
//! cargo bench --bench hot_path -- --quick       # short run, tables included
//! BENCH_QUICK=1 cargo bench --bench hot_path    # short tables, full criterion runs
//! ```
//!
//! A criterion filter (`-- contention`) also selects the tables whose name contains it.

use std::convert::Infallible;
use std::future::Ready;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use http::{Request, Response};
use tower::{Layer, Service};
use tower_auth_refresh::replay::{BufferBody, NoReplay};
use tower_http::auth::AddAuthorizationLayer;

use hot::{Body, api, buffered_api, layer, reading_api, request, send};

fn bench_one<S>(c: &mut Criterion, group: &str, name: &str, mut service: S, with_headers: bool)
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Error: std::fmt::Debug,
{
    c.benchmark_group(group).bench_function(name, |b| {
        b.iter_batched(
            || request(with_headers),
            |request| send(&mut service, request),
            BatchSize::NumIterations(BATCH),
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

/// Requests built ahead of each timed batch. With `BatchSize::SmallInput` a batch is a tenth of
/// a sample, up to several MB of requests: the long samples then measured cache misses and page
/// faults that the short ones did not.
const BATCH: u64 = 1_000;

/// Requests built ahead of each timed stretch of the threaded runs: enough to time, few enough
/// to stay in cache. (Building all of a sample's requests ahead made the two-thread runs a
/// measurement of memory bandwidth: several MB of requests per thread.)
const CHUNK: u64 = 1_000;

/// Time for `threads` threads to send `iters` requests each through clones of one service,
/// in chunks that the threads start together.
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
                    let (mut elapsed, mut left) = (Duration::ZERO, iters);
                    while left > 0 {
                        let chunk = left.min(CHUNK);
                        let requests: Vec<_> = (0..chunk).map(|_| request(true)).collect();
                        barrier.wait();
                        let started = Instant::now();
                        for request in requests {
                            send(&mut service, request);
                        }
                        elapsed += started.elapsed();
                        left -= chunk;
                    }
                    elapsed
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

fn add_authorization() -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone {
    AddAuthorizationLayer::bearer("token").layer(api())
}

/// Sends a stretch of requests through one service and times it: `(requests, with_headers)`.
type Chunk = Box<dyn FnMut(usize, bool) -> Duration>;

/// Times `requests` requests through `service`, built before the timed stretch, or inside it
/// (`in_loop`), as a user's code builds them.
fn chunk<S, B>(mut service: S, in_loop: bool) -> Chunk
where
    S: Service<Request<B>, Response = Response<Body>> + 'static,
    S::Error: std::fmt::Debug,
    B: From<Body> + 'static,
{
    Box::new(move |requests, with_headers| {
        let build = || request(with_headers).map(B::from);
        if in_loop {
            let started = Instant::now();
            for _ in 0..requests {
                send(&mut service, build());
            }
            started.elapsed()
        } else {
            let batch: Vec<_> = (0..requests).map(|_| build()).collect();
            let started = Instant::now();
            for request in batch {
                send(&mut service, request);
            }
            started.elapsed()
        }
    })
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ratio_tables(length: Length, args: &Args) {
    let (rounds, requests) = match length {
        Length::Test => (3, 100),
        Length::Quick => (100, 1_000),
        Length::Full => (500, 1_000),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = layer(&runtime);

    if args.wants("hot_path/ratios") {
        println!(
            "\nhot_path/ratios: medians of {rounds} rounds; per round each service sends {requests} requests, in rotating order; \"ahead\": requests built before the timed stretch, \"in loop\": built inside it, as users do"
        );
        println!(
            "{:<12} {:<8} {:<24} {:>10} {:>12} {:>12}",
            "request", "built", "service", "ns/req", "ratio (med)", "quartiles"
        );
        for with_headers in [false, true] {
            for in_loop in [false, true] {
                let mut services: Vec<(&str, Chunk)> = vec![
                    ("no_middleware", chunk(api(), in_loop)),
                    ("add_authorization", chunk(add_authorization(), in_loop)),
                    ("auth_service", chunk(layer.layer(api()), in_loop)),
                    (
                        "auth_service_no_replay",
                        chunk(layer.clone().replay_policy(NoReplay).layer(api()), in_loop),
                    ),
                    (
                        "auth_service_buffer",
                        chunk(
                            layer
                                .clone()
                                .replay_policy(BufferBody::default())
                                .layer(buffered_api()),
                            in_loop,
                        ),
                    ),
                    (
                        "add_authorization_reading",
                        chunk(
                            AddAuthorizationLayer::bearer("token").layer(reading_api()),
                            in_loop,
                        ),
                    ),
                ];
                // nanos[service][round]
                let mut nanos = vec![Vec::new(); services.len()];
                for round in 0..rounds {
                    for turn in 0..services.len() {
                        let index = (turn + round) % services.len();
                        let elapsed = (services[index].1)(requests, with_headers);
                        nanos[index].push(elapsed.as_nanos() as f64 / requests as f64);
                    }
                }
                // The median and quartiles of the per-round ratios of `index` to `baseline`.
                let ratio_to = |index: usize, baseline: usize| {
                    let mut ratios: Vec<f64> = nanos[index]
                        .iter()
                        .zip(&nanos[baseline])
                        .map(|(nanos, baseline)| nanos / baseline)
                        .collect();
                    let ratio = median(&mut ratios);
                    let (q1, q3) = (ratios[ratios.len() / 4], ratios[ratios.len() * 3 / 4]);
                    (ratio, format!("{q1:.2}–{q3:.2}"))
                };
                let shape = if with_headers {
                    "two_headers"
                } else {
                    "no_headers"
                };
                let built = if in_loop { "in loop" } else { "ahead" };
                for (index, (name, _)) in services.iter().enumerate() {
                    let (ratio, quartiles) = ratio_to(index, 1);
                    println!(
                        "{shape:<12} {built:<8} {name:<24} {:>10.1} {ratio:>12.2} {quartiles:>12}",
                        median(&mut nanos[index].clone()),
                    );
                }
                // `BufferBody`'s API reads the body (it must, to record it); so does this
                // baseline's: the ratio without the reading, which any client does.
                let (ratio, quartiles) = ratio_to(4, 5);
                println!(
                    "{shape:<12} {built:<8} {:<24} {:>10} {ratio:>12.2} {quartiles:>12}",
                    "buffer / add_reading", "",
                );
            }
        }
    }

    if args.wants("contention/ratios") {
        // Longer chunks: threads are started for every measurement.
        let requests = requests as u64 * 2;
        println!(
            "\ncontention/ratios: medians of {rounds} rounds; per round each service sends {requests} requests from 1 thread, then from each of 2 threads"
        );
        println!(
            "{:<24} {:>16} {:>17} {:>8} {:>15}",
            "service", "1 thread ns/req", "2 threads ns/req", "ratio", "quartiles"
        );
        let auth = layer.layer(api());
        let add_authorization = add_authorization();
        // Time for the given number of threads to send `requests` each.
        type Threaded<'a> = Box<dyn Fn(usize) -> Duration + 'a>;
        let services: [(&str, Threaded<'_>); 2] = [
            (
                "add_authorization",
                Box::new(|threads| threaded(&add_authorization, threads, requests)),
            ),
            (
                "auth_service",
                Box::new(|threads| threaded(&auth, threads, requests)),
            ),
        ];
        // (1 thread, 2 threads, ratio) per service, per round
        let mut times = vec![(Vec::new(), Vec::new(), Vec::new()); services.len()];
        for round in 0..rounds {
            for turn in 0..services.len() {
                let index = (turn + round) % services.len();
                let (t1, t2) = ((services[index].1)(1), (services[index].1)(2));
                let (one, two, ratios) = &mut times[index];
                one.push(t1.as_nanos() as f64 / requests as f64);
                two.push(t2.as_nanos() as f64 / requests as f64);
                ratios.push(t2.as_secs_f64() / t1.as_secs_f64());
            }
        }
        for ((name, _), (one, two, ratios)) in services.iter().zip(&mut times) {
            let ratio = median(ratios);
            // Sorted by `median`: the spread of the per-round ratios.
            let (q1, q3) = (ratios[ratios.len() / 4], ratios[ratios.len() * 3 / 4]);
            println!(
                "{:<24} {:>16.1} {:>17.1} {:>8.2} {:>15}",
                name,
                median(one),
                median(two),
                ratio,
                format!("{q1:.2}–{q3:.2}"),
            );
        }
    }
}

// The arguments: criterion's, read again for the tables it does not run.
#[path = "support/args.rs"]
mod args;
#[path = "support/hot.rs"]
mod hot;
use args::{Args, Length};

fn main() {
    let args = Args::parse();
    let mut criterion = Criterion::default().configure_from_args();
    hot_path(&mut criterion);
    contention(&mut criterion);
    criterion.final_summary();
    ratio_tables(args.length, &args);
}
