//! Refreshing under load, against baselines measured in the same run.
//!
//! - `stampede` (criterion): 10,000 requests, each in its own task on a 2-worker runtime,
//!   let go at the same instant, through a fresh layer per iteration whose refresher takes
//!   20 ms; the time from that instant to the last response. `valid_token` (no refresh) is
//!   compared with `no_middleware`; `no_token` and `expired_token` (all 10,000 wait for one
//!   refresh), `no_token_here` (`no_token` with the layer's background work on the requests'
//!   runtime) and `no_token_noreplay` (`no_token` with the `NoReplay` policy) with
//!   `ideal_wait`: 10,000 tasks that wait on one `watch` channel, filled with the token's
//!   header after 20 ms, then attach it and call the API. The least any single flight can
//!   cost: one wait, one header. `ideal_bare` is the same without the header (the baseline
//!   until 2026-12-01), and the table's last line gives the ratios against it too. Every
//!   iteration checks that each request succeeded and that the refresher was called exactly
//!   once (never for `valid_token`).
//! - `STAMPEDE_ONLY=<case>` runs one case 200 times (20 with `--quick`) and nothing else, for
//!   a profiler.
//! - `refresh_window` (criterion): one request on the hot path with a fresh token, and with a
//!   token in its soft window whose background refresh is in flight.
//! - `stampede/latency` (table): the same cases in interleaved rounds (each round runs
//!   every case once, in a rotating order): the per-round ratio to the baseline of the same
//!   round (median and quartiles), medians of the wall time, the added latency (against
//!   `valid_token` of the same round), the drain (from the end of the refresh to the last
//!   response), the first (from the end of the refresh to the first response: the wake-up,
//!   before the drain's work per request) and the per-request latencies.
//! - `refresh_window/stream` (table): a steady stream of requests from 4 tasks while the token
//!   is refreshed every cycle by a refresher that takes 50 ms: p50/p99/max latency of the
//!   requests that overlap a refresh against those that do not, with the soft window on
//!   (the default: the refresh runs in the background) and off (`refresh_before(ZERO)`:
//!   every request waits for the refresh).
//!
//! ```sh
//! cargo bench --bench refresh                  # full run
//! cargo bench --bench refresh -- --quick       # short run, tables included
//! BENCH_QUICK=1 cargo bench --bench refresh    # short tables, full criterion runs
//! ```
//!
//! A criterion filter (`-- stampede`) also selects the tables whose name contains it.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_auth_refresh::replay::NoReplay;
use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};

type Body = Full<Bytes>;

/// Requests in one stampede.
const STAMPEDE: usize = 10_000;
/// How long the stampede's refresher takes.
const STAMPEDE_REFRESH: Duration = Duration::from_millis(20);
/// How long the stream's refresher takes.
const STREAM_REFRESH: Duration = Duration::from_millis(50);
/// The lifetime of the stream's tokens: the soft window is capped at half of it (200 ms),
/// the hard window at a tenth (40 ms), so a 50 ms background refresh ends well before the
/// hard window, and a cycle lasts 250 ms.
const STREAM_LIFETIME: Duration = Duration::from_millis(400);
/// Requests built ahead of each timed batch of the per-request benches: small enough to stay
/// in cache (see `benches/hot_path.rs`).
const BATCH: u64 = 1_000;
/// Tasks sending the stream, each one request after the other.
const STREAM_TASKS: usize = 4;

/// The API: answers 200 to a request with an `Authorization` header, 401 otherwise (or 200
/// to any request, for the baselines without the layer).
fn api(
    require_token: bool,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = Ready<Result<Response<Body>, Infallible>>,
> + Clone
+ Send
+ 'static {
    service_fn(move |request: Request<Body>| {
        let mut response = Response::new(Body::default());
        if require_token && !request.headers().contains_key(AUTHORIZATION) {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        ready(Ok(response))
    })
}

fn request() -> Request<Body> {
    Request::get("http://127.0.0.1/user/me")
        .body(Body::default())
        .unwrap()
}

/// What a refresher saw: its calls, and when the last one ended.
#[derive(Default)]
struct Calls {
    count: AtomicUsize,
    ended: Mutex<Option<Instant>>,
}

/// A refresher that takes `time` and records its calls.
fn refresher(
    time: Duration,
    calls: Arc<Calls>,
) -> impl Service<
    RefreshRequest,
    Response = TokenSet,
    Error = Infallible,
    Future = impl Future<Output = Result<TokenSet, Infallible>> + Send,
> + Send
+ 'static {
    service_fn(move |_: RefreshRequest| {
        calls.count.fetch_add(1, Ordering::Relaxed);
        let calls = Arc::clone(&calls);
        async move {
            tokio::time::sleep(time).await;
            *calls.ended.lock().unwrap() = Some(Instant::now());
            Ok(TokenSet::new("token-1").with_expires_in(Duration::from_secs(900)))
        }
    })
}

fn multi_thread() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Stampede

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    /// Baseline of `ValidToken`: the API without middleware.
    NoMiddleware,
    /// The layer with a valid token: no refresh.
    ValidToken,
    /// Baseline of `NoToken` and `ExpiredToken`: the best any single flight can do. Each
    /// task waits on one `watch` channel that a task fills with the token's header after
    /// 20 ms, then attaches that header and calls the API, which requires it.
    IdealWait,
    /// `IdealWait` without the token: the tasks call an API that requires none. A second
    /// reference (the baseline before 2026-12-01 evening).
    IdealWaitBare,
    /// The layer without a token: one login for all.
    NoToken,
    /// The layer with an expired token: one refresh for all.
    ExpiredToken,
    /// `NoToken` with the layer's background work on the requests' runtime
    /// (`AuthLayerBuilder::runtime`) instead of the crate's own thread: what the wake-ups
    /// from another runtime cost.
    NoTokenSameRuntime,
    /// `NoToken` with the `NoReplay` policy: what the default policy's copy of each request
    /// (taken when it arrives, freed after its response) costs.
    NoTokenNoReplay,
}

impl Case {
    const ALL: [Case; 8] = [
        Case::NoMiddleware,
        Case::ValidToken,
        Case::IdealWait,
        Case::IdealWaitBare,
        Case::NoToken,
        Case::ExpiredToken,
        Case::NoTokenSameRuntime,
        Case::NoTokenNoReplay,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::NoMiddleware => "no_middleware",
            Case::ValidToken => "valid_token",
            Case::IdealWait => "ideal_wait",
            Case::IdealWaitBare => "ideal_bare",
            Case::NoToken => "no_token",
            Case::ExpiredToken => "expired_token",
            Case::NoTokenSameRuntime => "no_token_here",
            Case::NoTokenNoReplay => "no_token_noreplay",
        }
    }

    /// The case this one is compared with.
    fn baseline(self) -> Option<Case> {
        match self {
            Case::NoMiddleware | Case::IdealWait | Case::IdealWaitBare => None,
            Case::ValidToken => Some(Case::NoMiddleware),
            Case::NoToken
            | Case::ExpiredToken
            | Case::NoTokenSameRuntime
            | Case::NoTokenNoReplay => Some(Case::IdealWait),
        }
    }
}

struct Stampede {
    /// From the moment all requests are let go to the last response.
    wall: Duration,
    /// From the end of the refresh (or the opening of the gate) to the last response.
    drain: Option<Duration>,
    /// From the end of the refresh to the first response: how long the waiters take to be
    /// woken, before the drain's work per request.
    first: Option<Duration>,
    /// Each request's latency, from the moment all are let go.
    latencies: Histogram,
}

/// Sends `STAMPEDE` requests at once, each in its own task, through a fresh layer (or none);
/// panics unless every request succeeded and the refresher was called exactly once (never
/// with a valid token).
async fn stampede(case: Case) -> Stampede {
    let requests: Vec<_> = (0..STAMPEDE).map(|_| request()).collect();
    let (start, started) = watch::channel(false);
    let calls = Arc::new(Calls::default());
    if matches!(
        case,
        Case::NoMiddleware | Case::IdealWait | Case::IdealWaitBare
    ) {
        let token = case == Case::IdealWait;
        let gate = (case != Case::NoMiddleware).then(|| {
            let (open, gate) = watch::channel(None);
            let (calls, mut started) = (Arc::clone(&calls), started.clone());
            tokio::spawn(async move {
                started.wait_for(|started| *started).await.unwrap();
                tokio::time::sleep(STAMPEDE_REFRESH).await;
                *calls.ended.lock().unwrap() = Some(Instant::now());
                let header = HeaderValue::from_maybe_shared(Bytes::from("Bearer token-1"));
                open.send_replace(Some(header.unwrap()));
            });
            Gate { open: gate, token }
        });
        return send_all(api(token), requests, (start, started), gate, &calls).await;
    }
    let mut layer = AuthLayer::builder(refresher(STAMPEDE_REFRESH, Arc::clone(&calls)));
    if case == Case::NoTokenSameRuntime {
        layer = layer.runtime(tokio::runtime::Handle::current());
    }
    let layer = layer.build();
    let lifetime = match case {
        Case::ValidToken => Some(Duration::from_secs(900)),
        Case::ExpiredToken => Some(Duration::ZERO),
        _ => None,
    };
    if let Some(lifetime) = lifetime {
        layer
            .handle()
            .set_tokens(TokenSet::new("token-0").with_expires_in(lifetime))
            .await
            .unwrap();
    }
    let run = if case == Case::NoTokenNoReplay {
        let client = layer.replay_policy(NoReplay).layer(api(true));
        send_all(client, requests, (start, started), None, &calls).await
    } else {
        let client = layer.layer(api(true));
        send_all(client, requests, (start, started), None, &calls).await
    };
    let expected = usize::from(case != Case::ValidToken);
    assert_eq!(
        calls.count.load(Ordering::Relaxed),
        expected,
        "refresher calls"
    );
    run
}

/// The ideal single flight's `watch`: the token's header once the refresh is over, and
/// whether the tasks attach it.
#[derive(Clone)]
struct Gate {
    open: watch::Receiver<Option<HeaderValue>>,
    token: bool,
}

/// Spawns a task per request, each waiting for `start`; once all are spawned, opens `start`
/// and times from there to the last response: the requests arrive at once, and the cost of
/// spawning 10,000 tasks is left out.
async fn send_all<S>(
    client: S,
    requests: Vec<Request<Body>>,
    (start, started): (watch::Sender<bool>, watch::Receiver<bool>),
    gate: Option<Gate>,
    calls: &Calls,
) -> Stampede
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Debug + Send,
{
    let ready = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|mut request| {
            let (client, gate) = (client.clone(), gate.clone());
            let (mut started, ready) = (started.clone(), Arc::clone(&ready));
            tokio::spawn(async move {
                ready.fetch_add(1, Ordering::Release);
                started.wait_for(|started| *started).await.unwrap();
                if let Some(Gate { mut open, token }) = gate {
                    let header = open.wait_for(Option::is_some).await.unwrap();
                    if token {
                        let header = header.clone().unwrap();
                        request.headers_mut().insert(AUTHORIZATION, header);
                    }
                }
                let response = client.oneshot(request).await;
                (Instant::now(), response.map(|response| response.status()))
            })
        })
        .collect();
    while ready.load(Ordering::Acquire) < tasks.len() {
        tokio::task::yield_now().await;
    }
    let opened = Instant::now();
    start.send_replace(true);
    let mut latencies = Histogram::default();
    let (mut first, mut last) = (None::<Instant>, opened);
    for task in tasks {
        let (done, status) = task.await.unwrap();
        assert_eq!(status.unwrap(), StatusCode::OK);
        latencies.record(done - opened);
        last = last.max(done);
        first = Some(first.map_or(done, |first| first.min(done)));
    }
    let ended = *calls.ended.lock().unwrap();
    Stampede {
        wall: last - opened,
        drain: ended.map(|ended| last.saturating_duration_since(ended)),
        first: ended
            .zip(first)
            .map(|(ended, first)| first.saturating_duration_since(ended)),
        latencies,
    }
}

/// Runs `future` in a task on a worker of `runtime`, not on the thread that blocks on it:
/// tasks it spawns go to that worker's queue, and awaiting them needs no thread wake-up.
fn on_worker<F>(runtime: &Runtime, future: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    runtime.block_on(async { tokio::spawn(future).await.unwrap() })
}

fn stampede_bench(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("stampede");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for case in Case::ALL {
        group.bench_function(case.name(), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| on_worker(runtime, stampede(case)).wall)
                    .sum()
            })
        });
    }
    group.finish();
}

fn stampede_table(runtime: &Runtime, length: Length) {
    let (warm_up, rounds) = match length {
        Length::Test => (0, 1),
        Length::Quick => (1, 7),
        Length::Full => (3, 31),
    };
    println!(
        "\nstampede/latency: {STAMPEDE} concurrent requests, refresher {} ms (one call per round, checked); {rounds} interleaved rounds after {warm_up} unrecorded, each round runs every case once in a rotating order; ratios are per round against the baseline of the same round: median (quartiles)",
        STAMPEDE_REFRESH.as_millis()
    );
    let mut runs: Vec<Vec<Stampede>> = Case::ALL.iter().map(|_| Vec::new()).collect();
    let mut ratios: Vec<Vec<f64>> = Case::ALL.iter().map(|_| Vec::new()).collect();
    let mut bare_ratios: Vec<Vec<f64>> = Case::ALL.iter().map(|_| Vec::new()).collect();
    for round in 0..warm_up + rounds {
        let mut walls = [Duration::ZERO; Case::ALL.len()];
        let mut round_runs: Vec<Option<Stampede>> = Case::ALL.iter().map(|_| None).collect();
        for offset in 0..Case::ALL.len() {
            let index = (round + offset) % Case::ALL.len();
            let run = on_worker(runtime, stampede(Case::ALL[index]));
            walls[index] = run.wall;
            round_runs[index] = Some(run);
        }
        if round < warm_up {
            continue;
        }
        for (index, case) in Case::ALL.iter().enumerate() {
            if let Some(baseline) = case.baseline() {
                let base = walls[Case::ALL.iter().position(|c| *c == baseline).unwrap()];
                ratios[index].push(walls[index].as_secs_f64() / base.as_secs_f64());
                if baseline == Case::IdealWait {
                    let bare = walls[Case::ALL
                        .iter()
                        .position(|c| *c == Case::IdealWaitBare)
                        .unwrap()];
                    bare_ratios[index].push(walls[index].as_secs_f64() / bare.as_secs_f64());
                }
            }
            runs[index].push(round_runs[index].take().unwrap());
        }
    }
    println!(
        "{:<14} {:>9} {:>19} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "case", "wall", "ratio", "added", "drain", "first", "req p50", "req p99", "req max"
    );
    let valid_walls: Vec<Duration> = runs[1].iter().map(|run| run.wall).collect();
    for (index, case) in Case::ALL.iter().enumerate() {
        let runs = &runs[index];
        let wall = median(&mut runs.iter().map(|run| run.wall).collect::<Vec<_>>());
        let ratio = if ratios[index].is_empty() {
            String::new()
        } else {
            let (low, mid, high) = quartiles(&mut ratios[index]);
            format!("{mid:.3} ({low:.2}-{high:.2})")
        };
        let added = match case {
            Case::NoToken
            | Case::ExpiredToken
            | Case::NoTokenSameRuntime
            | Case::NoTokenNoReplay => {
                let mut added: Vec<Duration> = runs
                    .iter()
                    .zip(&valid_walls)
                    .map(|(run, valid)| run.wall.saturating_sub(*valid))
                    .collect();
                Nanos::of(median(&mut added)).to_string()
            }
            _ => String::new(),
        };
        let [drain, first] = [|run: &Stampede| run.drain, |run: &Stampede| run.first].map(|of| {
            let mut values: Vec<Duration> = runs.iter().filter_map(of).collect();
            if values.is_empty() {
                String::new()
            } else {
                Nanos::of(median(&mut values)).to_string()
            }
        });
        let mut latencies = Histogram::default();
        for run in runs {
            latencies.merge(&run.latencies);
        }
        println!(
            "{:<14} {:>9} {:>19} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            case.name(),
            Nanos::of(wall),
            ratio,
            added,
            drain,
            first,
            Nanos(latencies.percentile(0.50)),
            Nanos(latencies.percentile(0.99)),
            Nanos(latencies.max()),
        );
    }
    let against_bare: Vec<String> = Case::ALL
        .iter()
        .zip(&mut bare_ratios)
        .filter(|(_, ratios)| !ratios.is_empty())
        .map(|(case, ratios)| {
            let (low, mid, high) = quartiles(ratios);
            format!("{} {mid:.3} ({low:.2}-{high:.2})", case.name())
        })
        .collect();
    println!("against ideal_bare: {}", against_bare.join(", "));
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// The lower quartile, the median and the upper quartile.
fn quartiles(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: usize| values[(values.len() - 1) * q / 4];
    (at(1), at(2), at(3))
}

// ---------------------------------------------------------------------------------------
// Refresh window, per request

fn refresh_window_bench(c: &mut Criterion) {
    // A paused clock moves the token into its soft window at once; the runtime is then
    // not driven, so the background refresh that the first request starts stays in flight
    // for the whole measurement.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let lifetime = Duration::from_secs(3600);
    let layer = |calls: &Arc<Calls>| {
        let layer = AuthLayer::new(refresher(STREAM_REFRESH, Arc::clone(calls)));
        runtime
            .block_on(
                layer
                    .handle()
                    .set_tokens(TokenSet::new("token-0").with_expires_in(lifetime)),
            )
            .unwrap();
        layer
    };
    let soft_calls = Arc::new(Calls::default());
    let soft = layer(&soft_calls);
    // Into the soft window (the last 60 s), short of the hard one (the last 5 s).
    runtime.block_on(async { tokio::time::sleep(lifetime - Duration::from_secs(30)).await });
    // Installed after the clock moved: fresh.
    let fresh_calls = Arc::new(Calls::default());
    let fresh = layer(&fresh_calls);
    let layers = [(fresh, fresh_calls), (soft, soft_calls)];

    let mut group = c.benchmark_group("refresh_window");
    {
        let _entered = runtime.enter();
        for ((layer, _), name) in layers
            .iter()
            .zip(["fresh_token", "soft_window_refresh_in_flight"])
        {
            let mut service = layer.layer(api(true));
            group.bench_function(name, |b| {
                b.iter_batched(
                    request,
                    |request| send(&mut service, request),
                    BatchSize::NumIterations(BATCH),
                )
            });
        }
    }
    group.finish();

    // Let the refreshes start: one for the token in its soft window, whatever the number
    // of requests; none for the fresh one.
    runtime.block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
    let calls: Vec<_> = layers
        .iter()
        .map(|(_, calls)| calls.count.load(Ordering::Relaxed))
        .collect();
    assert!(
        calls == [0, 1] || calls == [0, 0],
        "refresher calls {calls:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Refresh window, a steady stream

/// Latencies of the requests that overlapped a refresh and of the others.
#[derive(Default)]
struct Split {
    during: Histogram,
    outside: Histogram,
}

struct Stream {
    split: Split,
    /// Refreshes started.
    refreshes: usize,
    /// Time spent refreshing, summed over the refreshes, up to the end of the run.
    refreshing: Duration,
    elapsed: Duration,
}

/// Requests from `STREAM_TASKS` tasks, one after the other each, for `length`, while the
/// token (lifetime `STREAM_LIFETIME`) is refreshed by a refresher that takes
/// `STREAM_REFRESH`.
async fn stream(soft_window: bool, length: Duration) -> Stream {
    // Odd while a refresh runs.
    let events = Arc::new(AtomicU64::new(0));
    // When each refresh started and ended.
    let refreshes = Arc::new(Mutex::new(Vec::<(Instant, Option<Instant>)>::new()));
    let refresher = service_fn({
        let (events, refreshes) = (Arc::clone(&events), Arc::clone(&refreshes));
        move |_: RefreshRequest| {
            let (events, refreshes) = (Arc::clone(&events), Arc::clone(&refreshes));
            async move {
                events.fetch_add(1, Ordering::AcqRel);
                refreshes.lock().unwrap().push((Instant::now(), None));
                tokio::time::sleep(STREAM_REFRESH).await;
                if let Some(last) = refreshes.lock().unwrap().last_mut() {
                    last.1 = Some(Instant::now());
                }
                events.fetch_add(1, Ordering::AcqRel);
                Ok::<_, Infallible>(TokenSet::new("token-n").with_expires_in(STREAM_LIFETIME))
            }
        }
    });
    let mut layer = AuthLayer::new(refresher);
    if !soft_window {
        // No soft window: the hard window is capped at the soft one, so requests use the
        // token until it expires, then wait for the refresh.
        layer = layer.refresh_before(Duration::ZERO);
    }
    layer
        .handle()
        .set_tokens(TokenSet::new("token-0").with_expires_in(STREAM_LIFETIME))
        .await
        .unwrap();
    let client = layer.layer(api(true));

    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..STREAM_TASKS)
        .map(|_| {
            let (mut client, events) = (client.clone(), Arc::clone(&events));
            tokio::spawn(async move {
                let mut split = Split::default();
                while Instant::now() < deadline {
                    let request = request();
                    let before = events.load(Ordering::Acquire);
                    let sent = Instant::now();
                    let response = client.ready().await.unwrap().call(request).await;
                    let latency = sent.elapsed();
                    let after = events.load(Ordering::Acquire);
                    assert_eq!(response.unwrap().status(), StatusCode::OK);
                    let histogram = if before % 2 == 1 || after != before {
                        &mut split.during
                    } else {
                        &mut split.outside
                    };
                    histogram.record(latency);
                    // The API answers at once: without a yield, a task would hold its
                    // worker, and the timers that move the token through its windows
                    // would not run.
                    tokio::task::yield_now().await;
                }
                split
            })
        })
        .collect();
    let mut split = Split::default();
    for task in tasks {
        let task = task.await.unwrap();
        split.during.merge(&task.during);
        split.outside.merge(&task.outside);
    }
    let stopped = Instant::now();
    let refreshes = refreshes.lock().unwrap();
    Stream {
        split,
        refreshes: refreshes.len(),
        refreshing: refreshes
            .iter()
            .map(|(start, end)| end.unwrap_or(stopped).min(stopped) - *start)
            .sum(),
        elapsed: stopped - started,
    }
}

fn stream_table(runtime: &Runtime, length: Length) {
    let seconds = match length {
        Length::Test => 0.3,
        Length::Quick => 1.5,
        Length::Full => 5.0,
    };
    println!(
        "\nrefresh_window/stream: {STREAM_TASKS} tasks sending requests one after the other for {seconds} s; tokens live {} ms, the refresher takes {} ms",
        STREAM_LIFETIME.as_millis(),
        STREAM_REFRESH.as_millis()
    );
    println!(
        "{:<16} {:<8} {:>9} {:>8} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "soft window", "requests", "count", "req/ms", "p50", "p99", "max", "refreshes", "p99 ratio"
    );
    for soft_window in [true, false] {
        let run = on_worker(
            runtime,
            stream(soft_window, Duration::from_secs_f64(seconds)),
        );
        let outside_time = run.elapsed.saturating_sub(run.refreshing);
        let ratio =
            run.split.during.percentile(0.99) as f64 / run.split.outside.percentile(0.99) as f64;
        for (name, histogram, time) in [
            ("outside", &run.split.outside, outside_time),
            ("during", &run.split.during, run.refreshing),
        ] {
            if histogram.count() == 0 {
                // A run too short to reach a refresh (`cargo test --benches`).
                continue;
            }
            let per_ms = histogram.count() as f64 / time.as_secs_f64() / 1000.0;
            println!(
                "{:<16} {:<8} {:>9} {:>8.0} {:>10} {:>10} {:>10} {:>9} {:>9}",
                if soft_window {
                    "on (default)"
                } else {
                    "off (ZERO)"
                },
                name,
                histogram.count(),
                per_ms,
                Nanos(histogram.percentile(0.50)),
                Nanos(histogram.percentile(0.99)),
                Nanos(histogram.max()),
                run.refreshes,
                if name == "during" {
                    format!("{ratio:.2}")
                } else {
                    String::new()
                },
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Latency histogram: exact below 128 ns, then 128 buckets per power of two (< 0.8 % error).

const SUB_BUCKETS: u64 = 128;

struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; Self::index(u64::MAX) + 1],
            count: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn index(nanos: u64) -> usize {
        if nanos < SUB_BUCKETS {
            return nanos as usize;
        }
        let exponent = u64::from(63 - nanos.leading_zeros());
        let sub = (nanos >> (exponent - 7)) & (SUB_BUCKETS - 1);
        ((exponent - 6) * SUB_BUCKETS + sub) as usize
    }

    /// The smallest value of bucket `index`.
    fn lower_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let (exponent, sub) = (index / SUB_BUCKETS + 6, index % SUB_BUCKETS);
        (SUB_BUCKETS + sub) << (exponent - 7)
    }

    fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(nanos)] += 1;
        self.count += 1;
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        for (count, other) in self.counts.iter_mut().zip(&other.counts) {
            *count += other;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    fn count(&self) -> u64 {
        self.count
    }

    fn max(&self) -> u64 {
        self.max
    }

    /// The latency under which a share `p` of the requests fell (0 when there were none).
    fn percentile(&self, p: f64) -> u64 {
        let rank = ((self.count as f64 * p).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::lower_bound(index).min(self.max);
            }
        }
        0
    }
}

/// Nanoseconds, printed with a unit.
struct Nanos(u64);

impl Nanos {
    fn of(duration: Duration) -> Self {
        Self(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0 as f64;
        let text = if nanos < 1e3 {
            format!("{nanos:.0} ns")
        } else if nanos < 1e6 {
            format!("{:.2} µs", nanos / 1e3)
        } else if nanos < 1e9 {
            format!("{:.2} ms", nanos / 1e6)
        } else {
            format!("{:.2} s", nanos / 1e9)
        };
        f.pad(&text)
    }
}

// The arguments: criterion's, read again for the tables it does not run.
#[path = "support/args.rs"]
mod args;
use args::{Args, Length};
// The send of one request whose future is ready at once, as the hot-path benches have it.
#[path = "support/hot.rs"]
#[allow(dead_code)]
mod hot;
use hot::send;

fn main() {
    let args = Args::parse();
    let runtime = multi_thread();
    // For a profiler: one case only, over and over (`STAMPEDE_ONLY=no_token`).
    if let Ok(only) = std::env::var("STAMPEDE_ONLY") {
        let case = Case::ALL.into_iter().find(|case| case.name() == only);
        let case = case.expect("STAMPEDE_ONLY names a case of stampede/latency");
        let rounds = if args.length == Length::Full { 200 } else { 20 };
        let wall: Duration = (0..rounds)
            .map(|_| on_worker(&runtime, stampede(case)).wall)
            .sum();
        println!("{only}: {rounds} stampedes, mean wall {:?}", wall / rounds);
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    stampede_bench(&mut criterion, &runtime);
    refresh_window_bench(&mut criterion);
    criterion.final_summary();

    if args.wants("stampede/latency") {
        stampede_table(&runtime, args.length);
    }
    if args.wants("refresh_window/stream") {
        stream_table(&runtime, args.length);
    }
}
