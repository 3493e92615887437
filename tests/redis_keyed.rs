//! A fleet serving many users: 4 OS processes × 1,000 users, each process with a keyed layer
//! on one Redis (a keyed `RedisStore`), against the loopback identity provider with rotation and
//! reuse detection. One login per user in all, one refresh per user per expiry in all.
//!
//! The worker processes are this test binary again, running the ignored `keyed_worker` test.
//! Without `redis-server` on the PATH the test is skipped, unless `REDIS_REQUIRED=1`.
#![cfg(all(feature = "redis", feature = "keyed"))]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt};
use tower_auth_refresh::keyed::KeyedAuthLayer;
use tower_auth_refresh::oauth2::{HttpClient, OAuth2Refresher};
use tower_auth_refresh::store::RedisStore;
use tower_auth_refresh::test_util::{Api, EXPECTED_USER, IdentityProvider, ProviderConfig};

#[path = "support/redis.rs"]
mod redis_support;
use redis_support::{now_millis, redis_server, wait};

type Body = Full<Bytes>;

const USERS: u32 = 1000;
const PROCESSES: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct UserId(u32);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn name(user: u32) -> String {
    format!("user{user}")
}

fn password(user: u32) -> String {
    format!("password of {user}")
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_u64(name: &str) -> u64 {
    env(name).parse().unwrap()
}

/// Every user once, in an order of this process's own (xorshift from `seed`).
fn shuffled(seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..USERS).collect();
    let mut state = seed | 1;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        order.swap(i, (state % (i as u64 + 1)) as usize);
    }
    order
}

/// A worker: two rounds, each sending one request for every user (64 at a time), through a
/// keyed layer whose sessions live in Redis. The first starts at a wall-clock time common to
/// the fleet; the second once every worker has ended its first (a file each in a shared
/// folder) and a gap has passed, so every token the first round got is at least that old.
/// Fails if any request fails.
#[test]
#[ignore = "run by the keyed fleet test as a worker"]
fn keyed_worker() {
    if std::env::var("WORKER").is_err() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let (token_url, client_id, secret) = (
            env("WORKER_TOKEN_URL"),
            env("WORKER_CLIENT_ID"),
            env("WORKER_CLIENT_SECRET"),
        );
        let store = RedisStore::new(&env("WORKER_REDIS"), "test:keyed-fleet:")
            .unwrap()
            .lock_lifetime(Duration::from_secs(10));
        let layer = KeyedAuthLayer::builder(move |user: &UserId| {
            OAuth2Refresher::builder(&token_url, &client_id)
                .client_secret(secret.clone())
                .password(name(user.0), password(user.0))
                .build(http.clone())
                .unwrap()
        })
        .store(store)
        .build();
        let service = layer.layer(Client::builder(TokioExecutor::new()).build_http::<Body>());
        let url = env("WORKER_API_URL");
        let (start_at, gap, seed) = (
            env_u64("WORKER_START_AT"),
            Duration::from_millis(env_u64("WORKER_GAP_MS")),
            env_u64("WORKER_SEED"),
        );
        let (barrier, processes) = (env("WORKER_BARRIER"), env_u64("WORKER_PROCESSES"));
        let failed = Arc::new(AtomicU64::new(0));
        for round in 0..2 {
            if round == 0 {
                tokio::time::sleep(Duration::from_millis(start_at.saturating_sub(now_millis())))
                    .await;
            } else {
                std::fs::write(format!("{barrier}/{seed}"), b"").unwrap();
                while std::fs::read_dir(&barrier).unwrap().count() < processes as usize {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(gap).await;
            }
            let started = Instant::now();
            let queue = Arc::new(std::sync::Mutex::new(shuffled(seed * 31 + round)));
            let workers: Vec<_> = (0..64)
                .map(|_| {
                    let (service, url, failed, queue) =
                        (service.clone(), url.clone(), failed.clone(), queue.clone());
                    tokio::spawn(async move {
                        loop {
                            let Some(user) = queue.lock().unwrap().pop() else {
                                return;
                            };
                            let mut request = Request::get(&url)
                                .header(EXPECTED_USER, name(user))
                                .body(Body::default())
                                .unwrap();
                            request.extensions_mut().insert(UserId(user));
                            match service.clone().oneshot(request).await {
                                Ok(response) if response.status() == StatusCode::OK => {}
                                Ok(response) => {
                                    eprintln!("user {user}: HTTP {}", response.status());
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                                Err(error) => {
                                    eprintln!("user {user}: {error}");
                                    failed.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    })
                })
                .collect();
            for worker in workers {
                worker.await.unwrap();
            }
            println!("round {round}: {} ms", started.elapsed().as_millis());
        }
        assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    });
}

fn spawn_worker(
    idp: &IdentityProvider,
    api: &Api,
    redis: &str,
    (start_at, barrier): (u64, &std::path::Path),
    seed: u32,
) -> Child {
    let config = idp.config();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "keyed_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WORKER", "1")
        .env("WORKER_REDIS", redis)
        .env("WORKER_TOKEN_URL", idp.token_url())
        .env("WORKER_API_URL", api.url("/user/me"))
        .env("WORKER_CLIENT_ID", config.client_id())
        .env("WORKER_CLIENT_SECRET", config.client_secret())
        .env("WORKER_START_AT", start_at.to_string())
        .env("WORKER_BARRIER", barrier)
        .env("WORKER_PROCESSES", PROCESSES.to_string())
        .env("WORKER_GAP_MS", "6000")
        .env("WORKER_SEED", seed.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

// 4 processes, each sending a request for each of 1,000 users, twice: the second round 6 s
// after every process ended its first, with tokens of 10 s, so it finds every token in its
// soft window (5 s old or more) however long the first round took. (Rounds at fixed times,
// 6 s apart, once found two users without exactly one refresh on a loaded machine: their
// tokens were got late in a slow first round.) One login per user in the whole fleet; one
// refresh per user; the other processes take the refreshed set from Redis. No reuse, no
// failed request, no request with another user's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_serve_a_thousand_users_with_one_login_each() {
    let Some(redis) = redis_server() else { return };
    let mut config = ProviderConfig::default()
        .access_lifetime(Duration::from_secs(10))
        .reuse_detection(true);
    for user in 0..USERS {
        config = config.with_user(name(user), password(user));
    }
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    let start_at = now_millis() + 2000;
    let barrier = std::env::temp_dir().join(format!(
        "tower-auth-refresh-keyed-fleet-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&barrier);
    std::fs::create_dir_all(&barrier).unwrap();
    let workers: Vec<_> = (0..PROCESSES)
        .map(|seed| spawn_worker(&idp, &api, &redis.url, (start_at, &barrier), seed + 1))
        .collect();
    let outcomes = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|worker| wait(worker, Duration::from_secs(90)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let _ = std::fs::remove_dir_all(&barrier);
    for (ok, output) in &outcomes {
        assert!(ok, "a worker failed:\n{output}");
    }
    let rounds: Vec<&str> = outcomes
        .iter()
        .flat_map(|(_, output)| output.lines().filter(|line| line.starts_with("round ")))
        .collect();
    eprintln!("{rounds:?}");
    let provider = idp.stats();
    let once: BTreeMap<String, u64> = (0..USERS).map(|user| (name(user), 1)).collect();
    let not_once: Vec<_> = once
        .keys()
        .filter(|user| provider.logins_by_user.get(*user) != Some(&1))
        .collect();
    assert!(
        not_once.is_empty(),
        "users without exactly one login in the fleet: {not_once:?}"
    );
    let not_refreshed_once: Vec<_> = once
        .keys()
        .filter(|user| provider.refreshes_by_user.get(*user) != Some(&1))
        .collect();
    assert!(
        not_refreshed_once.is_empty(),
        "users without exactly one refresh in the fleet: {not_refreshed_once:?}"
    );
    assert_eq!(provider.reuse_detected, 0);
    assert_eq!(provider.invalid_grants, 0);
    let stats = api.stats();
    assert_eq!(stats.wrong_user, 0);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(stats.ok, u64::from(USERS * PROCESSES * 2));
    eprintln!(
        "fleet: {} logins, {} refreshes for {USERS} users, {} requests",
        provider.password_grants, provider.refresh_grants, stats.ok
    );
}
