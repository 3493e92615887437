//! The keyed layer against the loopback identity provider with 1,000 users: each user's own
//! password grant and refresh chain, rotation and reuse detection on, and an API that checks
//! that every request carries its own user's token. Counts are the servers' own.
#![cfg(feature = "keyed")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::Layer;
use tower_auth_refresh::keyed::KeyedAuthLayer;
use tower_auth_refresh::oauth2::HttpClient;
use tower_auth_refresh::store::KeyedFileStore;
use tower_auth_refresh::test_util::{Api, EXPECTED_USER, IdentityProvider, ProviderConfig};

type Body = Full<Bytes>;

const USERS: u32 = 1000;

/// The session key: the application's user id.
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

async fn servers(access_lifetime: Duration) -> (IdentityProvider, Api) {
    let mut config = ProviderConfig::default()
        .access_lifetime(access_lifetime)
        .reuse_detection(true);
    for user in 0..USERS {
        config = config.with_user(name(user), format!("password of {user}"));
    }
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    (idp, api)
}

/// A keyed layer whose refresher for each user logs in with that user's password; every
/// refresher shares one HTTP client.
fn keyed(idp: &IdentityProvider) -> tower_auth_refresh::keyed::KeyedAuthLayerBuilder<UserId> {
    let idp = idp.clone();
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    KeyedAuthLayer::builder(move |user: &UserId| {
        idp.refresher_builder()
            .password(name(user.0), format!("password of {}", user.0))
            .build(http.clone())
            .unwrap()
    })
}

fn request(api: &Api, user: u32) -> Request<Body> {
    let mut request = Request::get(api.url("/user/me"))
        .header(EXPECTED_USER, name(user))
        .body(Body::default())
        .unwrap();
    request.extensions_mut().insert(UserId(user));
    request
}

/// A fixed shuffle of `n` items (xorshift): every user twice, in a mixed order.
fn shuffled(n: u32, seed: u32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n).flat_map(|user| [user, user]).collect();
    let mut state = seed | 1;
    for i in (1..order.len()).rev() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        order.swap(i, state as usize % (i + 1));
    }
    order
}

/// Sends one round: every user twice, from 64 workers; returns the failures.
async fn round<S>(client: &S, api: &Api, seed: u32) -> u64
where
    S: tower::Service<
            Request<Body>,
            Response = http::Response<hyper::body::Incoming>,
            Error = tower_auth_refresh::BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let queue = Arc::new(std::sync::Mutex::new(shuffled(USERS, seed)));
    let failed = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (client, queue, failed, api) = (
                client.clone(),
                Arc::clone(&queue),
                Arc::clone(&failed),
                api.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let Some(user) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let outcome =
                        tower::ServiceExt::oneshot(client.clone(), request(&api, user)).await;
                    match outcome {
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
    failed.load(Ordering::Relaxed)
}

/// When each user's requests were sent, and when each of their token sets arrived.
#[derive(Default)]
struct Timeline {
    requests: std::sync::Mutex<BTreeMap<u32, Vec<Instant>>>,
    installs: std::sync::Mutex<BTreeMap<u32, Vec<Instant>>>,
}

const LIFETIME: Duration = Duration::from_secs(3);
/// The soft window of a 3 s token: half its lifetime.
const SOFT_AGE: Duration = Duration::from_millis(1500);
/// How far from the soft window's edge a request's age is too close to call.
const SLACK: Duration = Duration::from_millis(60);

impl Timeline {
    /// The refreshes the windows predict for `user`: one for each token that a request found
    /// at least as old as the soft window, as far as the request log can tell. Returns
    /// `(certain, too close to call)`.
    fn predicted(&self, user: u32) -> (u64, u64) {
        let requests = self.requests.lock().unwrap()[&user].clone();
        let installs = self.installs.lock().unwrap()[&user].clone();
        let (mut certain, mut close) = (0, 0);
        for (n, installed) in installs.iter().enumerate() {
            let until = installs.get(n + 1).copied();
            let ages = requests
                .iter()
                .filter(|at| **at >= *installed && until.is_none_or(|until| **at < until))
                .map(|at| at.duration_since(*installed));
            let oldest = ages.max().unwrap_or_default();
            if oldest >= SOFT_AGE + SLACK {
                certain += 1;
            } else if oldest + SLACK > SOFT_AGE {
                close += 1;
            }
        }
        (certain, close)
    }
}

// 1,000 users, 64 workers, four rounds 2 s apart with tokens of 3 s, rotation and reuse
// detection on: each user logs in once; a user's token is refreshed exactly when a request
// finds it in its soft window (half its lifetime), in the background; no request fails, none
// carries another user's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_users_each_keep_their_own_session_across_expiries() {
    let (idp, api) = servers(LIFETIME).await;
    let timeline = Arc::new(Timeline::default());
    let layer = keyed(&idp)
        .on_tokens({
            let timeline = Arc::clone(&timeline);
            move |user: &UserId, _| {
                let mut installs = timeline.installs.lock().unwrap();
                installs.entry(user.0).or_default().push(Instant::now());
            }
        })
        .build();
    let logged = Logged {
        inner: layer.layer(Client::builder(TokioExecutor::new()).build_http::<Body>()),
        timeline: Arc::clone(&timeline),
    };
    let started = Instant::now();
    let mut took = Vec::new();
    for n in 0..4u32 {
        let at = Duration::from_secs(2) * n;
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let begun = Instant::now();
        assert_eq!(
            round(&logged, &api, 7 + n).await,
            0,
            "failed requests in round {n}"
        );
        took.push(begun.elapsed());
    }
    // The last background refreshes land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let provider = idp.stats();
    assert_eq!(provider.reuse_detected, 0);
    assert_eq!(provider.invalid_grants, 0);
    let logins_wrong: Vec<_> = (0..USERS)
        .filter(|user| provider.logins_by_user.get(&name(*user)) != Some(&1))
        .collect();
    assert!(
        logins_wrong.is_empty(),
        "users without exactly one login: {logins_wrong:?}"
    );
    let (mut exact, mut close_calls) = (0, 0);
    for user in 0..USERS {
        let refreshed = provider
            .refreshes_by_user
            .get(&name(user))
            .copied()
            .unwrap_or(0);
        let (certain, close) = timeline.predicted(user);
        assert!(
            refreshed >= certain && refreshed <= certain + close,
            "user {user}: {refreshed} refreshes, the windows predict {certain} (and {close} too close to call)"
        );
        exact += u64::from(close == 0);
        close_calls += close;
    }
    eprintln!(
        "rounds took {took:?}; {} refreshes; predicted exactly for {exact} users, {close_calls} requests too close to call",
        provider.refresh_grants
    );
    assert!(
        provider.refresh_grants >= u64::from(USERS),
        "at least one expiry per user"
    );
    let stats = api.stats();
    assert_eq!(
        stats.wrong_user, 0,
        "a request carried another user's token"
    );
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(stats.ok, u64::from(USERS) * 2 * 4);
    assert!(stats.by_user.values().all(|count| *count == 8));
    assert_eq!(layer_sessions(&layer), u64::from(USERS));
}

/// The layer's client, noting when each user's request leaves.
#[derive(Clone)]
struct Logged<S> {
    inner: S,
    timeline: Arc<Timeline>,
}

impl<S> tower::Service<Request<Body>> for Logged<S>
where
    S: tower::Service<Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let user = request.extensions().get::<UserId>().unwrap().0;
        let mut requests = self.timeline.requests.lock().unwrap();
        requests.entry(user).or_default().push(Instant::now());
        drop(requests);
        self.inner.call(request)
    }
}

fn layer_sessions(layer: &KeyedAuthLayer<UserId>) -> u64 {
    layer.handle().live_sessions()
}

// At most 100 sessions in memory for 1,000 users: memory stays bounded, and an evicted user's
// session is read back from the store, without a new login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_100_live_sessions_evicted_users_come_back_from_the_store() {
    let (idp, api) = servers(Duration::from_secs(900)).await;
    let dir = std::env::temp_dir().join(format!("tar-keyed-provider-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let layer = keyed(&idp)
        .store(KeyedFileStore::new(&dir))
        .max_sessions(100)
        .build();
    let handle = layer.handle();
    let client = layer.layer(Client::builder(TokioExecutor::new()).build_http::<Body>());
    let mut most = 0;
    for n in 0..2 {
        assert_eq!(
            round(&client, &api, 11 + n).await,
            0,
            "failed requests in round {n}"
        );
        most = most.max(handle.live_sessions());
    }
    assert!(
        most <= 100 + 64,
        "{most} sessions in memory: 100, and at most the 64 in use"
    );
    assert!(handle.live_sessions() <= 100);
    let provider = idp.stats();
    let once: BTreeMap<String, u64> = (0..USERS).map(|user| (name(user), 1)).collect();
    assert_eq!(provider.logins_by_user, once, "no login after an eviction");
    assert_eq!(provider.refresh_grants, 0);
    let stats = api.stats();
    assert_eq!((stats.wrong_user, stats.unauthorized), (0, 0));
    assert_eq!(stats.ok, u64::from(USERS) * 4);
    std::fs::remove_dir_all(&dir).unwrap();
}
