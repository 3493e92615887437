//! Real sockets: a hyper-util legacy `Client` sends `GET /auth/check` to the crate's loopback
//! API (a hyper server on 127.0.0.1, `test_util::Api`) and reads every body. Requests per second through `AuthLayer` against the baseline in the same run:
//! tower-http's `AddAuthorization` with a token obtained once (the API accepts no request
//! without a valid token). The client runs on a current-thread runtime on the main thread, the
//! servers on one on a thread of their own.
//!
//! - `sockets` (criterion): time per request (and requests per second) of each client, 16
//!   requests in flight.
//! - `sockets/throughput` (table), at 1 and at 64 requests in flight: the clients take turns,
//!   in rotating order, each sending a fixed number of requests per round; the median requests
//!   per second and the median (and quartiles) of the per-round ratios to the baseline, which
//!   cancel the drift of a shared 2-core machine. `add_authorization_2` is the baseline again
//!   (its own connection pool, last in the list): its ratio is the bench's own error, and the
//!   last column gives each client's ratio to it, a second baseline.
//!
//! ```sh
//! cargo bench --bench sockets                  # full run
//! cargo bench --bench sockets -- --quick       # short run, table included
//! BENCH_QUICK=1 cargo bench --bench sockets    # short table, full criterion runs
//! ```
//!
//! A criterion filter (`-- sockets/auth`) also selects the table if its name contains it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::replay::NoReplay;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_http::auth::AddAuthorizationLayer;

type Body = Full<Bytes>;

/// Requests in flight at once in the criterion runs; the table measures 1 and 64.
const CONCURRENCY: u64 = 16;

/// Sends `n` requests to `url` from `concurrency` tasks and reads every body; returns the
/// time from the first request to the last body.
async fn send_many<S>(service: S, url: Uri, n: u64, concurrency: u64) -> Duration
where
    S: Service<Request<Body>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Debug,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency.min(n))
        .map(|_| {
            let (mut service, url, next) = (service.clone(), url.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let request = Request::get(url.clone()).body(Body::default()).unwrap();
                    let response = service.ready().await.unwrap().call(request).await;
                    let response = response.unwrap();
                    assert_eq!(response.status(), StatusCode::OK);
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

/// Sends a batch of requests through one client and times it: `(requests, concurrency)`.
type Run = Box<dyn Fn(u64, u64) -> Pin<Box<dyn Future<Output = Duration> + Send>>>;

fn runner<S>(service: S, url: Uri) -> Run
where
    S: Service<Request<Body>, Response = Response<Incoming>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: fmt::Debug,
{
    Box::new(move |n, concurrency| {
        Box::pin(send_many(service.clone(), url.clone(), n, concurrency))
    })
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The identity provider and the API, served by a runtime on a thread of their own, so that
/// the client's thread and the servers' thread each have one of the machine's two cores:
/// with both on one multi-thread runtime, throughput jumped between two levels from one
/// round to the next, depending on how the tasks happened to be spread over the workers.
struct Servers {
    idp: Option<IdentityProvider>,
    api: Option<Api>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Servers {
    fn start() -> Self {
        let (started, servers) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let idp = IdentityProvider::start(ProviderConfig::default())
                    .await
                    .unwrap();
                let api = Api::start(&idp).await.unwrap();
                started.send((idp, api)).unwrap();
                let _ = stopped.await;
            });
        });
        let (idp, api) = servers.recv().unwrap();
        Self {
            idp: Some(idp),
            api: Some(api),
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn idp(&self) -> &IdentityProvider {
        self.idp.as_ref().unwrap()
    }

    fn api(&self) -> &Api {
        self.api.as_ref().unwrap()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        drop((self.idp.take(), self.api.take()));
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Setup {
    servers: Servers,
    /// The baseline first.
    clients: Vec<(&'static str, Run)>,
}

/// The clients, on `runtime` (the client's thread), each with a connection pool of its own.
fn setup(runtime: &Runtime) -> Setup {
    let servers = Servers::start();
    runtime.block_on(async {
        let (idp, api) = (servers.idp(), servers.api());
        let url: Uri = api.url("/auth/check").parse().unwrap();

        // The baseline: a token obtained once, attached as a static header.
        let token = idp
            .refresher_builder()
            .build_http()
            .unwrap()
            .login()
            .await
            .unwrap();
        let add_authorization =
            AddAuthorizationLayer::bearer(token.access_token().secret()).layer(client());
        // The same baseline again, with a pool of its own: how far from 1 the bench puts a
        // client that costs exactly what the baseline costs.
        let control = AddAuthorizationLayer::bearer(token.access_token().secret()).layer(client());

        let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
        let auth_layer = layer.layer(client());
        let no_replay = layer.replay_policy(NoReplay).layer(client());

        let clients = vec![
            ("add_authorization", runner(add_authorization, url.clone())),
            ("auth_layer", runner(auth_layer, url.clone())),
            ("auth_layer_no_replay", runner(no_replay, url.clone())),
            ("add_authorization_2", runner(control, url)),
        ];
        // Open the connections (and log the layer in) before anything is measured.
        for (_, run) in &clients {
            run(256, 64).await;
        }
        Setup { servers, clients }
    })
}

fn sockets_bench(c: &mut Criterion, runtime: &Runtime, setup: &Setup) {
    let mut group = c.benchmark_group("sockets");
    group.throughput(Throughput::Elements(1));
    for (name, run) in &setup.clients {
        group.bench_function(*name, |b| {
            b.iter_custom(|n| runtime.block_on(run(n, CONCURRENCY)))
        });
    }
    group.finish();
}

fn throughput_table(runtime: &Runtime, setup: &Setup, length: Length) {
    let (rounds, requests) = match length {
        Length::Test => (1, 200),
        Length::Quick => (10, 1_000),
        // Many short rounds: with 40 rounds of 3,000 the baseline against itself spread over
        // 0.971–1.009 from run to run; with 300 of 1,000, 0.995–1.003 (2026-12-03).
        Length::Full => (300, 1_000),
    };
    let clients = &setup.clients;
    for concurrency in [1, 64] {
        // rates[client][round], in requests per second.
        let mut rates = vec![Vec::new(); clients.len()];
        // Round 0 warms up and is not counted.
        for round in 0..=rounds {
            for turn in 0..clients.len() {
                let index = (turn + round) % clients.len();
                let elapsed = runtime.block_on((clients[index].1)(requests, concurrency));
                if round > 0 {
                    rates[index].push(requests as f64 / elapsed.as_secs_f64());
                }
            }
        }
        println!(
            "\nsockets/throughput: {rounds} rounds of {requests} requests per client, {concurrency} in flight, GET /auth/check over 127.0.0.1; client and servers on a thread each"
        );
        println!(
            "{:<22} {:>12} {:>12} {:>12} {:>14} {:>12} {:>12}",
            "client",
            "req/s (med)",
            "req/s (min)",
            "req/s (max)",
            "ratio (med)",
            "quartiles",
            "to the _2"
        );
        // The median and quartiles of the per-round ratios of `index` to `baseline`.
        let ratio_to = |index: usize, baseline: usize| {
            let mut ratios: Vec<f64> = rates[index]
                .iter()
                .zip(&rates[baseline])
                .map(|(rate, baseline)| rate / baseline)
                .collect();
            let ratio = median(&mut ratios);
            (
                ratio,
                ratios[ratios.len() / 4],
                ratios[ratios.len() * 3 / 4],
            )
        };
        let control = clients.len() - 1;
        for (index, (name, _)) in clients.iter().enumerate() {
            let (ratio, q1, q3) = ratio_to(index, 0);
            // The same ratio against the baseline's second client, the control.
            let (to_control, _, _) = ratio_to(index, control);
            let mut own = rates[index].clone();
            println!(
                "{:<22} {:>12.0} {:>12.0} {:>12.0} {:>14.3} {:>12} {:>12.3}",
                name,
                median(&mut own),
                own[0],
                own[own.len() - 1],
                ratio,
                format!("{q1:.3}–{q3:.3}"),
                to_control,
            );
        }
    }
    let (api, idp) = (setup.servers.api().stats(), setup.servers.idp().stats());
    println!(
        "API: {} requests, {} ok, {} unauthorized; identity provider: {} logins, {} refreshes",
        api.requests, api.ok, api.unauthorized, idp.password_grants, idp.refresh_grants
    );
    assert_eq!(api.unauthorized, 0, "no request was refused");
    assert_eq!(idp.password_grants, 2, "one login each: baseline and layer");
}

/// Sorts `values` and returns their median.
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    }
}

// The arguments: criterion's, read again for the tables it does not run.
#[path = "support/args.rs"]
mod args;
use args::{Args, Length};

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let setup = setup(&runtime);
    let mut criterion = Criterion::default().configure_from_args();
    sockets_bench(&mut criterion, &runtime, &setup);
    criterion.final_summary();

    if args.wants("sockets/throughput") {
        throughput_table(&runtime, &setup, args.length);
    }
}
