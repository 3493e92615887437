//! A bounded soak: many requests at high concurrency through short-lived tokens, while the
//! server revokes tokens and the token endpoint fails at random (503, 429, garbage, delays).
//!
//! ```sh
//! cargo run --release --example soak                   # 200,000 requests, concurrency 256
//! SOAK_REQUESTS=20000 cargo run --example soak         # what CI runs
//! ```
//!
//! Checks, and exits non-zero if one fails:
//! - every request ends, in success or a typed error, within the refresh timeout plus a margin;
//! - a body that cannot be replayed (over the buffer cap) is never sent twice, and no request
//!   is sent more than twice;
//! - the token endpoint is asked no more than once per token lifetime window, per revocation
//!   and per injected fault (the bound is printed).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, service_fn};
use tower_auth_refresh::replay::{BufferBody, ReplayBody};
use tower_auth_refresh::test_util::{Api, ChunkedBody, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, RefreshError};

const LIFETIME: Duration = Duration::from_secs(2);
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);
const BUFFER_CAP: usize = 1024;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn random(bound: u64) -> u64 {
    RandomState::new().hash_one(0u8) % bound.max(1)
}

#[derive(Default)]
struct Counts {
    succeeded: AtomicU64,
    typed_errors: AtomicU64,
    unauthorized: AtomicU64,
    hung: AtomicU64,
    other: AtomicU64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let total = setting("SOAK_REQUESTS", 200_000);
    let concurrency = setting("SOAK_CONCURRENCY", 256);

    let idp = IdentityProvider::start(ProviderConfig::default().access_lifetime(LIFETIME))
        .await
        .expect("start the identity provider");
    let api = Api::start(&idp).await.expect("start the API");
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().expect("a refresher"))
        .refresh_timeout(REFRESH_TIMEOUT)
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(400))
        .build();

    // The client counts how often each request (by its `x-request-id`) goes out.
    let sent: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let http = Client::builder(TokioExecutor::new()).build_http::<ReplayBody<ChunkedBody>>();
    let counting = {
        let sent = sent.clone();
        service_fn(move |request: Request<ReplayBody<ChunkedBody>>| {
            let id = request.headers()["x-request-id"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            *sent.lock().unwrap().entry(id).or_default() += 1;
            http.request(request)
        })
    };
    let client = layer
        .replay_policy(BufferBody::new(BUFFER_CAP))
        .layer(counting);

    // Chaos: every 100 ms, at random, revoke the access tokens or make the token endpoint fail.
    let started = Instant::now();
    let revocations = Arc::new(AtomicU64::new(0));
    let chaos = {
        let (idp, revocations) = (idp.clone(), revocations.clone());
        tokio::spawn(async move {
            let mut pushed = 0;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let roll = random(20);
                if roll == 0 {
                    idp.revoke_access_tokens();
                    revocations.fetch_add(1, Ordering::Relaxed);
                } else if roll <= 4 && idp.stats().faults_served >= pushed {
                    // One fault at a time: the last one has been served.
                    pushed += 1;
                    idp.push_fault(match roll {
                        1 => Fault::service_unavailable_html(),
                        2 => Fault::too_many_requests(0),
                        3 => Fault::json(StatusCode::OK, "{\"access_token\":"),
                        _ => Fault::Delay(Duration::from_millis(300)),
                    });
                }
            }
        })
    };

    let counts = Arc::new(Counts::default());
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, counts, next, url) = (
                client.clone(),
                counts.clone(),
                next.clone(),
                api.url("/echo"),
            );
            tokio::spawn(async move {
                loop {
                    let id = next.fetch_add(1, Ordering::Relaxed);
                    if id >= total {
                        break;
                    }
                    // One request in ten has a body over the buffer cap.
                    let size = if id % 10 == 0 { BUFFER_CAP + 1 } else { 64 };
                    let body = ChunkedBody::new([
                        Bytes::from(vec![b'x'; size / 2]),
                        Bytes::from(vec![b'y'; size - size / 2]),
                    ]);
                    let request = Request::post(&url)
                        .header("x-request-id", id.to_string())
                        .body(body)
                        .expect("a request");
                    let deadline = REFRESH_TIMEOUT * 2 + Duration::from_secs(5);
                    match tokio::time::timeout(deadline, client.clone().oneshot(request)).await {
                        Err(_) => counts.hung.fetch_add(1, Ordering::Relaxed),
                        Ok(Ok(response)) => {
                            let status = response.status();
                            let _ = response.into_body().collect().await;
                            match status {
                                StatusCode::OK => counts.succeeded.fetch_add(1, Ordering::Relaxed),
                                StatusCode::UNAUTHORIZED => {
                                    counts.unauthorized.fetch_add(1, Ordering::Relaxed)
                                }
                                _ => counts.other.fetch_add(1, Ordering::Relaxed),
                            }
                        }
                        Ok(Err(error)) if error.is::<RefreshError>() => {
                            counts.typed_errors.fetch_add(1, Ordering::Relaxed)
                        }
                        Ok(Err(_)) => counts.other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("a worker");
    }
    chaos.abort();
    let elapsed = started.elapsed();

    let sent = sent.lock().unwrap();
    let sent_twice_over_cap = sent
        .iter()
        .filter(|(id, times)| *id % 10 == 0 && **times > 1)
        .count();
    let sent_thrice = sent.values().filter(|times| **times > 2).count();
    let retried = sent.values().filter(|times| **times == 2).count();
    let stats = idp.stats();
    let revocations = revocations.load(Ordering::Relaxed);
    let windows = (elapsed.as_secs_f64() / (LIFETIME.as_secs_f64() / 2.0)).ceil() as u64;
    let token_requests = stats.requests;
    let bound = 1 + windows + revocations + stats.faults_served;

    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let rows = [
        ("requests", total.to_string()),
        ("succeeded", load(&counts.succeeded).to_string()),
        (
            "401 returned (over the cap)",
            load(&counts.unauthorized).to_string(),
        ),
        (
            "typed refresh errors",
            load(&counts.typed_errors).to_string(),
        ),
        ("other outcomes", load(&counts.other).to_string()),
        ("hung", load(&counts.hung).to_string()),
        ("retried (sent twice)", retried.to_string()),
        (
            "over-cap bodies sent twice",
            sent_twice_over_cap.to_string(),
        ),
        ("sent three times or more", sent_thrice.to_string()),
        ("revocations", revocations.to_string()),
        ("faults served", stats.faults_served.to_string()),
        ("logins", stats.password_grants.to_string()),
        ("refreshes", stats.refresh_grants.to_string()),
        ("token endpoint requests", token_requests.to_string()),
        (
            "bound: 1 + windows + revocations + faults",
            bound.to_string(),
        ),
        ("elapsed", format!("{:.1} s", elapsed.as_secs_f64())),
    ];
    for (name, value) in rows {
        println!("{name:<44}{value:>10}");
    }

    let ended = load(&counts.succeeded)
        + load(&counts.unauthorized)
        + load(&counts.typed_errors)
        + load(&counts.other);
    let ok = load(&counts.hung) == 0
        && load(&counts.other) == 0
        && ended == total
        && sent_twice_over_cap == 0
        && sent_thrice == 0
        && token_requests <= bound;
    if ok {
        println!("soak passed");
        ExitCode::SUCCESS
    } else {
        println!("soak FAILED");
        ExitCode::FAILURE
    }
}
