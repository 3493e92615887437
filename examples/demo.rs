//! The main job, with no network and no credentials: a Keycloak-like identity provider and a
//! protected API start on 127.0.0.1, and many concurrent workers call the API through one
//! `AuthLayer` while tokens expire every few seconds and the server revokes the session once.
//!
//! ```sh
//! cargo run --example demo                 # 10 s, 32 workers
//! DEMO_SECONDS=30 DEMO_WORKERS=128 cargo run --example demo
//! ```
//!
//! Prints what happened and exits non-zero if any request failed.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceBuilder;
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};

const TOKEN_LIFETIME: Duration = Duration::from_secs(3);

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let seconds = setting("DEMO_SECONDS", 10);
    let workers = setting("DEMO_WORKERS", 32);

    // The identity provider rotates refresh tokens and, like a strict Keycloak realm, ends
    // the session if one is ever used twice.
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .access_lifetime(TOKEN_LIFETIME)
            .reuse_detection(true),
    )
    .await
    .expect("start the identity provider");
    let api = Api::start(&idp).await.expect("start the API");

    let refresher = idp
        .refresher_builder()
        .build_http()
        .expect("a loopback token URL");
    let layer = AuthLayer::new(refresher);
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    println!(
        "{workers} workers for {seconds} s against {}; tokens live {} s; the session is revoked halfway",
        api.origin(),
        TOKEN_LIFETIME.as_secs()
    );
    let tally = Arc::new(Tally::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..workers)
        .map(|worker| {
            let (client, tally, url) = (client.clone(), tally.clone(), api.url("/user/me"));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let request = Request::get(&url).body(Full::default()).expect("a request");
                    let started = Instant::now();
                    let outcome = client.clone().oneshot(request).await;
                    tally.requests.fetch_add(1, Ordering::Relaxed);
                    match outcome {
                        Ok(response) if response.status().is_success() => {
                            // Read the body, as a real client would.
                            let _ = response.into_body().collect().await;
                            latencies.push(started.elapsed());
                            tally.succeeded.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(response) => {
                            eprintln!("worker {worker}: HTTP {}", response.status());
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            eprintln!("worker {worker}: {error}");
                            tally.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                latencies
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(seconds) / 2).await;
    idp.revoke_sessions();

    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a worker"));
    }
    latencies.sort();
    let percentile = |p: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[index]
    };

    let (idp_stats, api_stats) = (idp.stats(), api.stats());
    let failed = tally.failed.load(Ordering::Relaxed);
    let rows = [
        (
            "requests",
            tally.requests.load(Ordering::Relaxed).to_string(),
        ),
        (
            "succeeded",
            tally.succeeded.load(Ordering::Relaxed).to_string(),
        ),
        ("failed", failed.to_string()),
        ("logins", idp_stats.password_grants.to_string()),
        ("refreshes", idp_stats.refresh_grants.to_string()),
        (
            "refused refresh tokens",
            idp_stats.invalid_grants.to_string(),
        ),
        ("401 retries", api_stats.unauthorized.to_string()),
        (
            "p50 latency",
            format!("{:.2} ms", percentile(0.50).as_secs_f64() * 1e3),
        ),
        (
            "p99 latency",
            format!("{:.2} ms", percentile(0.99).as_secs_f64() * 1e3),
        ),
    ];
    println!();
    for (name, value) in rows {
        println!("{name:<24}{value:>12}");
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
