//! The Redis store, with a real `redis-server` on 127.0.0.1 and real OS processes sharing it.
//!
//! The tests start their own `redis-server` on a free port. Without one on the PATH they are
//! skipped with a message, unless `REDIS_REQUIRED=1` (as `.ci/run` sets), which makes them fail.
//! The worker processes are this test binary again, running the ignored `redis_worker` test.
#![cfg(feature = "redis")]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::Layer;
use tower_auth_refresh::oauth2::OAuth2Refresher;
use tower_auth_refresh::store::{RedisStore, StoreError, StoreErrorKind, TokenStore};
use tower_auth_refresh::test_util::{Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, RefreshError};

#[path = "support/redis.rs"]
mod redis_support;
use redis_support::{free_port, now_millis, redis_server, wait};

/// What a worker process is told, through its environment.
struct Work<'a> {
    redis: &'a str,
    idp: &'a IdentityProvider,
    api: &'a Api,
    prefix: &'a str,
    start_at: u64,
    rounds: u64,
    round_ms: u64,
    concurrency: u64,
    lock_ms: u64,
}

fn spawn_worker(work: &Work<'_>) -> Child {
    let config = work.idp.config();
    Command::new(std::env::current_exe().unwrap())
        .args([
            "redis_worker",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("WORKER", "1")
        .env("WORKER_REDIS", work.redis)
        .env("WORKER_TOKEN_URL", work.idp.token_url())
        .env("WORKER_API_URL", work.api.url("/user/me"))
        .env("WORKER_CLIENT_ID", config.client_id())
        .env("WORKER_CLIENT_SECRET", config.client_secret())
        .env("WORKER_USERNAME", config.username())
        .env("WORKER_PASSWORD", config.password())
        .env("WORKER_PREFIX", work.prefix)
        .env("WORKER_START_AT", work.start_at.to_string())
        .env("WORKER_ROUNDS", work.rounds.to_string())
        .env("WORKER_ROUND_MS", work.round_ms.to_string())
        .env("WORKER_CONCURRENCY", work.concurrency.to_string())
        .env("WORKER_LOCK_MS", work.lock_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

fn env_u64(name: &str) -> u64 {
    env(name).parse().unwrap()
}

/// A worker process: rounds of concurrent requests through a layer whose refresher shares its
/// tokens through Redis. Fails (exits non-zero) if any request fails.
#[test]
#[ignore = "run by the multi-process tests as a worker"]
fn redis_worker() {
    if std::env::var("WORKER").is_err() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let refresher = OAuth2Refresher::builder(env("WORKER_TOKEN_URL"), env("WORKER_CLIENT_ID"))
            .client_secret(env("WORKER_CLIENT_SECRET"))
            .password(env("WORKER_USERNAME"), env("WORKER_PASSWORD"))
            .build_http()
            .unwrap();
        let store = RedisStore::new(&env("WORKER_REDIS"), &env("WORKER_PREFIX"))
            .unwrap()
            .lock_lifetime(Duration::from_millis(env_u64("WORKER_LOCK_MS")))
            .command_timeout(Duration::from_millis(500));
        let layer = AuthLayer::builder(refresher).store(store).build();
        let service =
            layer.layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
        let url = env("WORKER_API_URL");
        let (start_at, round_ms) = (env_u64("WORKER_START_AT"), env_u64("WORKER_ROUND_MS"));
        let failed = Arc::new(AtomicU64::new(0));
        for round in 0..env_u64("WORKER_ROUNDS") {
            let at = start_at + round * round_ms;
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_millis()))).await;
            let started = Instant::now();
            let tasks: Vec<_> = (0..env_u64("WORKER_CONCURRENCY"))
                .map(|_| {
                    let (service, url, failed) = (service.clone(), url.clone(), failed.clone());
                    tokio::spawn(async move {
                        let request = Request::get(url).body(Full::default()).unwrap();
                        match service.oneshot(request).await {
                            Ok(response) if response.status() == StatusCode::OK => {}
                            Ok(response) => {
                                eprintln!("HTTP {}", response.status());
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(error) => {
                                eprintln!("error: {error}");
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
            println!("round {round}: {} ms", started.elapsed().as_millis());
        }
        assert_eq!(failed.load(Ordering::Relaxed), 0, "failed requests");
    });
}

// 4 processes × 64 concurrent requests through 5 token expiries, against a provider that
// rotates refresh tokens and ends the session on reuse: one login, five refreshes in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_share_one_login_and_one_refresh_chain() {
    let Some(redis) = redis_server() else { return };
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .access_lifetime(Duration::from_secs(1))
            .reuse_detection(true),
    )
    .await
    .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let work = Work {
        redis: &redis.url,
        idp: &idp,
        api: &api,
        prefix: "test:fleet:",
        // Time for the processes to start; then a round every 1.3 s (tokens live 1 s).
        start_at: now_millis() + 1500,
        rounds: 6,
        round_ms: 1300,
        concurrency: 64,
        lock_ms: 10_000,
    };
    let workers: Vec<_> = (0..4).map(|_| spawn_worker(&work)).collect();
    let outcomes = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|worker| wait(worker, Duration::from_secs(60)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (ok, output) in &outcomes {
        assert!(ok, "a worker failed:\n{output}");
    }
    let stats = idp.stats();
    assert_eq!(stats.password_grants, 1, "{stats:?}");
    assert_eq!(stats.refresh_grants, 5, "{stats:?}");
    assert_eq!(stats.invalid_grants, 0, "{stats:?}");
    assert_eq!(api.stats().unauthorized, 0);
    assert_eq!(api.stats().ok, 4 * 64 * 6);
}

// The lock holder is killed (SIGKILL) in the middle of a refresh: the next process takes over
// once the lock expires, and its request waits no longer than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lock_holder_is_taken_over_after_the_lock_expires() {
    let Some(redis) = redis_server() else { return };
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    // The first token request never gets an answer.
    idp.push_fault(Fault::Hang);
    let work = Work {
        redis: &redis.url,
        idp: &idp,
        api: &api,
        prefix: "test:killed:",
        start_at: 0,
        rounds: 1,
        round_ms: 0,
        concurrency: 1,
        lock_ms: 2_000,
    };
    let mut holder = spawn_worker(&work);

    // Wait until it holds the lock, then kill it.
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let holder_lock: Option<String> = redis::cmd("GET")
            .arg("test:killed:lock")
            .query_async(&mut connection)
            .await
            .unwrap();
        if holder_lock.is_some() && idp.stats().faults_served == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the worker never took the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    holder.kill().unwrap();
    holder.wait().unwrap();

    let started = Instant::now();
    let survivor = spawn_worker(&work);
    let (ok, output) = tokio::task::spawn_blocking(move || wait(survivor, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(ok, "the survivor failed:\n{output}");
    // Lock lifetime (2 s) plus process start-up and one login.
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(idp.stats().password_grants, 1);
}

// Redis unreachable: a typed error, quickly, never a hang.
#[tokio::test]
async fn an_unreachable_redis_is_a_typed_error() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let closed = free_port();
    let store = RedisStore::new(&format!("redis://127.0.0.1:{closed}/"), "test:down:")
        .unwrap()
        .command_timeout(Duration::from_millis(500));
    let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(store)
        .build()
        .handle();
    let started = Instant::now();
    let error = handle.token().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    let store_error = error
        .refresher_error()
        .and_then(|error| error.downcast_ref::<StoreError>())
        .unwrap_or_else(|| panic!("a StoreError: {error:?}"));
    assert!(matches!(
        store_error.kind(),
        StoreErrorKind::Unavailable | StoreErrorKind::Timeout
    ));
    assert_eq!(idp.stats().requests, 0, "no login without the store");
    let _: &RefreshError = &error;
}

/// A refresher that records the refresh token it was given, takes `delay`, and hands out
/// `a{n}` / `r{n}`.
fn recording_refresher(
    used: Arc<std::sync::Mutex<Vec<String>>>,
    delay: Duration,
) -> impl tower::Service<
    tower_auth_refresh::RefreshRequest,
    Response = tower_auth_refresh::TokenSet,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<tower_auth_refresh::TokenSet, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |request: tower_auth_refresh::RefreshRequest| {
        let used = used.clone();
        async move {
            let n = {
                let mut used = used.lock().unwrap();
                used.push(
                    request
                        .refresh_token()
                        .map_or("none".into(), |t| t.secret().to_owned()),
                );
                used.len()
            };
            tokio::time::sleep(delay).await;
            Ok(tower_auth_refresh::TokenSet::new(format!("a{n}"))
                .with_refresh_token(format!("r{n}"))
                .with_expires_in(Duration::from_secs(900)))
        }
    })
}

// A refresh slower than the lock's lifetime: the holder keeps the lock alive, so the other
// process waits and then uses its token, never presenting the same refresh token again.
#[tokio::test]
async fn a_slow_refresh_keeps_its_lock() {
    let Some(redis) = redis_server() else { return };
    let store = || {
        RedisStore::new(&redis.url, "test:slow:")
            .unwrap()
            .lock_lifetime(Duration::from_millis(300))
    };
    let seed = tower_auth_refresh::TokenSet::new("a0")
        .with_refresh_token("r0")
        .with_expires_in(Duration::ZERO);
    store().save(&seed, 0).await.unwrap();
    let used = Arc::new(std::sync::Mutex::new(Vec::new()));
    let refresher = || recording_refresher(used.clone(), Duration::from_secs(1));
    let a = AuthLayer::builder(refresher())
        .store(store())
        .build()
        .handle();
    let b = AuthLayer::builder(refresher())
        .store(store())
        .build()
        .handle();
    let (ra, rb) = tokio::join!(a.token(), b.token());
    ra.unwrap();
    rb.unwrap();
    assert_eq!(*used.lock().unwrap(), ["r0"]);
}

// A stored value that is not a token set (another version's format) counts as none: the
// first save replaces it, and the fleet shares one chain again.
#[tokio::test]
async fn an_unreadable_stored_value_is_replaced() {
    let Some(redis) = redis_server() else { return };
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg("test:garbage:tokens")
        .arg(r#"{"v":2}"#)
        .query_async(&mut connection)
        .await
        .unwrap();
    let used = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = || RedisStore::new(&redis.url, "test:garbage:").unwrap();
    let handle = || {
        AuthLayer::builder(recording_refresher(used.clone(), Duration::ZERO))
            .store(store())
            .build()
            .handle()
    };
    let (a, b) = (handle(), handle());
    a.token().await.unwrap();
    b.token().await.unwrap();
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    // One login (by a) replaced the garbage, and b took it over; a refreshed with r1, and b's
    // forced refresh took a's new tokens from the store: no refresh token presented twice.
    assert_eq!(*used.lock().unwrap(), ["none", "r1"]);
}

/// Makes `redis` stall every write (scripts included) for `millis`, as `CLIENT PAUSE … WRITE`
/// does; reads go on.
async fn pause_writes(redis: &str, millis: u64) {
    let client = redis::Client::open(redis).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(millis)
        .arg("WRITE")
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// A layer's handle on `redis` under `prefix`, with short timeouts.
fn stored_handle(
    idp: &IdentityProvider,
    redis: &str,
    prefix: &str,
    lock: Duration,
) -> tower_auth_refresh::AuthHandle {
    let store = RedisStore::new(redis, prefix)
        .unwrap()
        .lock_lifetime(lock)
        .command_timeout(Duration::from_millis(300));
    AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(store)
        .build()
        .handle()
}

// Redis stalls writes between the provider's answer and the save: the save times out. The
// holder keeps the lock and saves as soon as Redis takes writes again; the other process never
// refreshes from the older stored set, so the provider sees no reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_that_stalls_is_made_before_anyone_refreshes_again() {
    let Some(redis) = redis_server() else { return };
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .response_delay(Duration::from_millis(400))
            .reuse_detection(true),
    )
    .await
    .unwrap();
    let lock = Duration::from_secs(10);
    let a = stored_handle(&idp, &redis.url, "test:write-stall:", lock);
    let b = stored_handle(&idp, &redis.url, "test:write-stall:", lock);
    a.token().await.unwrap();
    b.token().await.unwrap();
    assert_eq!(idp.stats().password_grants, 1);

    let refresh = tokio::spawn({
        let a = a.clone();
        async move { a.refresh().await }
    });
    // a holds the lock and waits for the provider; its save will meet the stall.
    tokio::time::sleep(Duration::from_millis(150)).await;
    pause_writes(&redis.url, 1_500).await;
    let a_state = refresh.await.unwrap().unwrap();
    // b refreshes while the stall lasts and after: it waits for a's lock, then takes a's
    // tokens from the store.
    let b_state = b.refresh().await.unwrap();
    assert_eq!(
        a.access_token().unwrap().secret(),
        b.access_token().unwrap().secret(),
        "b uses a's tokens"
    );
    let _ = (a_state, b_state);
    let stats = idp.stats();
    assert_eq!(
        (
            stats.refresh_grants,
            stats.reuse_detected,
            stats.invalid_grants
        ),
        (1, 0, 0),
        "{stats:?}"
    );
    // And the chain goes on from a's tokens.
    b.refresh().await.unwrap();
    assert_eq!(idp.stats().reuse_detected, 0);
}

// The token endpoint is slower than the lock lifetime and one renewal meets a Redis stall
// longer than the command timeout: renewal goes on until the lock's known expiry, so the lock
// is never lost and the other process never refreshes with the same refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_renewal_does_not_let_a_second_refresher_in() {
    let Some(redis) = redis_server() else { return };
    let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
        .await
        .unwrap();
    let lock = Duration::from_millis(1_500);
    let a = stored_handle(&idp, &redis.url, "test:renew-stall:", lock);
    let b = stored_handle(&idp, &redis.url, "test:renew-stall:", lock);
    a.token().await.unwrap();
    b.token().await.unwrap();

    // a's refresh takes 3 s at the provider: twice the lock's lifetime.
    idp.push_fault(tower_auth_refresh::test_util::Fault::Delay(
        Duration::from_secs(3),
    ));
    let refresh_a = tokio::spawn({
        let a = a.clone();
        async move { a.refresh().await }
    });
    tokio::time::sleep(Duration::from_millis(600)).await;
    // The renewal due at 1 s meets the stall; it gets through after 1.4 s, before the lock's
    // known expiry (2 s).
    pause_writes(&redis.url, 800).await;
    // b comes after the stall, while a's lock (last renewed at 0.5 s) would expire at 2 s had
    // its renewal given up.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let refresh_b = tokio::spawn({
        let b = b.clone();
        async move { b.refresh().await }
    });
    refresh_a.await.unwrap().unwrap();
    // b waited for the lock (and may have given up waiting); it never refreshed meanwhile.
    let _ = refresh_b.await.unwrap();
    b.refresh().await.unwrap();
    let stats = idp.stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grants, 0, "{stats:?}");
    // a's refresh, and b's last one (from a's tokens) unless b took a's tokens from the store.
    assert!((1..=2).contains(&stats.refresh_grants), "{stats:?}");
}

// The application's word reaches every process through Redis: set_tokens in one process, and
// the other's next refresh starts from those tokens; clear in one, and the other logs in anew.
#[tokio::test]
async fn set_tokens_and_clear_reach_the_other_processes() {
    let Some(redis) = redis_server() else { return };
    let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
        .await
        .unwrap();
    let lock = Duration::from_secs(5);
    let a = stored_handle(&idp, &redis.url, "test:word:", lock);
    let b = stored_handle(&idp, &redis.url, "test:word:", lock);
    a.token().await.unwrap();
    b.token().await.unwrap();
    let elsewhere = idp
        .refresher_builder()
        .build_http()
        .unwrap()
        .login()
        .await
        .unwrap();
    a.set_tokens(elsewhere.clone()).await.unwrap();
    // b takes the application's tokens at its next refresh.
    b.refresh().await.unwrap();
    assert_eq!(
        b.access_token().unwrap().secret(),
        elsewhere.access_token().secret()
    );
    b.refresh().await.unwrap();
    a.clear().await.unwrap();
    let logins = idp.stats().password_grants;
    a.token().await.unwrap();
    assert_eq!(idp.stats().password_grants, logins + 1, "a logs in anew");
    assert_eq!(idp.stats().reuse_detected, 0);
}

// The fleet test, with the worst moments added: 4 processes × 64 concurrent requests through 5
// token expiries against a provider that rotates refresh tokens and ends the session on reuse;
// Redis stalls writes once while a refreshed token set is being saved, and once while the lock
// is being renewed. One login, five refreshes, no reuse, no failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_survives_a_write_stall_and_a_renewal_stall() {
    let Some(redis) = redis_server() else { return };
    // A refresh takes 1.2 s at the provider: the lock (3 s, renewed every second) is renewed
    // once during it, and the save comes 1.2 s after the lock was taken.
    // (The delay comes before the grant is processed, so tokens do not age on the way.)
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .access_lifetime(Duration::from_secs(2))
            .reuse_detection(true),
    )
    .await
    .unwrap();
    idp.set_fault(Some(Fault::Delay(Duration::from_millis(1200))));
    let api = Api::start(&idp).await.unwrap();
    let round_ms = 3500;
    let work = Work {
        redis: &redis.url,
        idp: &idp,
        api: &api,
        prefix: "test:stalled-fleet:",
        start_at: now_millis() + 1500,
        rounds: 6,
        round_ms,
        concurrency: 64,
        lock_ms: 3000,
    };
    let start_at = work.start_at;
    let workers: Vec<_> = (0..4).map(|_| spawn_worker(&work)).collect();
    let outcomes = tokio::task::spawn_blocking(move || {
        workers
            .into_iter()
            .map(|worker| wait(worker, Duration::from_secs(60)))
            .collect::<Vec<_>>()
    });
    // Round 2's refresh saves at about 1.2 s into the round: stall writes from 1.05 s for 1.5 s
    // (the workers' commands time out after 0.5 s).
    let at = |round: u64, ms: u64| start_at + round * round_ms + ms;
    tokio::time::sleep(Duration::from_millis(
        at(2, 1050).saturating_sub(now_millis()),
    ))
    .await;
    pause_writes(&redis.url, 1500).await;
    // Round 4's renewal is due 1 s into the round: stall writes from 0.9 s for 0.8 s.
    tokio::time::sleep(Duration::from_millis(
        at(4, 900).saturating_sub(now_millis()),
    ))
    .await;
    pause_writes(&redis.url, 800).await;
    for (ok, output) in &outcomes.await.unwrap() {
        assert!(ok, "a worker failed:\n{output}");
    }
    let stats = idp.stats();
    println!("provider: {stats:?}; API: {:?}", api.stats().ok);
    assert_eq!(stats.password_grants, 1, "{stats:?}");
    assert!((4..=6).contains(&stats.refresh_grants), "{stats:?}");
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grants, 0, "{stats:?}");
    assert_eq!(api.stats().unauthorized, 0);
    assert_eq!(api.stats().ok, 4 * 64 * 6);
}
