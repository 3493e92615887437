//! Promises kept where they are hardest to keep, found by an adversarial review of the cache,
//! origin and store: each test states a promise of the README or the docs, and failed against
//! the code before the fix it came with (the "Finding N" notes say what broke).
//!
//! Real sockets against the loopback identity provider and API; a real `redis-server` (started
//! by the test on a free port, skipped when there is none) for the Redis findings.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, service_fn};
use tower_auth_refresh::store::{
    FileStore, LockToken, StoreError, StoreErrorKind, StoreFuture, Stored, TokenStore,
};
use tower_auth_refresh::test_util::{AfterGrant, Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, AuthService, BoxError, RefreshRequest, TokenEvent, TokenSet};

type Http = Client<HttpConnector, Full<Bytes>>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

async fn status(service: &AuthService<Http>, url: &str) -> Result<StatusCode, BoxError> {
    Ok(service.clone().oneshot(get(url)).await?.status())
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tar-review-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 1. The safe default for origins: "plain `http` only to this machine (`localhost`,
// `127.0.0.0/8`, `[::1]`): a token never crosses a network in the clear". A user-info part that
// looks like a loopback address followed by `:` fools `is_loopback_authority`: the octet reader
// stops at the first `:` (a port, it thinks), and never sees the `@` and the real host.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn userinfo_that_looks_like_loopback_never_gets_the_token_over_http() {
    let refresher = service_fn(|_: RefreshRequest| async {
        Ok::<_, Infallible>(
            TokenSet::new("the-access-token").with_expires_in(Duration::from_secs(900)),
        )
    });
    // A recording inner service: where each request would go, and what it carried.
    let wire = Arc::new(Mutex::new(Vec::<(String, Option<HeaderValue>)>::new()));
    let inner = {
        let wire = wire.clone();
        service_fn(move |request: Request<Full<Bytes>>| {
            let wire = wire.clone();
            async move {
                let host = request.uri().host().unwrap_or_default().to_owned();
                wire.lock()
                    .unwrap()
                    .push((host, request.headers().get(AUTHORIZATION).cloned()));
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            }
        })
    };
    let service = AuthLayer::new(refresher).layer(inner);
    for uri in [
        // The control: already refused by the check ("`127.0.0.1@elsewhere` is not this
        // machine").
        "http://127.0.0.1@evil.example/x",
        // The same with a password part, or an empty one.
        "http://127.0.0.1:x@evil.example/x",
        "http://127.0.0.1:80@10.1.2.3/x",
        "http://127.0.0.1:@203.0.113.7:8080/x",
    ] {
        let request: Request<Full<Bytes>> = get(uri);
        assert_ne!(
            request.uri().host(),
            Some("127.0.0.1"),
            "http parses the host of {uri} as what follows the @"
        );
        service.clone().oneshot(request).await.unwrap();
    }
    let wire = wire.lock().unwrap().clone();
    let leaked: Vec<_> = wire
        .iter()
        .filter(|(_, token)| token.is_some())
        .map(|(host, _)| host.clone())
        .collect();
    assert!(
        leaked.is_empty(),
        "the bearer token went out over plain http to {leaked:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 2. `AuthHandle::clear`: "if the store does not take the delete, the error says so,
// the tokens here are gone anyway, and this process never uses the stored session again". When
// the store's *lock* (or load) is what fails, `Session::clear` returns before it marks the stored
// version void, and the next request refreshes the cleared session from the store.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_clear_that_cannot_reach_the_store_still_ends_the_session_here() {
    use fs4::fs_std::FileExt;

    let dir = TempDir::new("clear-lock");
    let path = dir.0.join("session.json");
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(FileStore::new(&path).lock_timeout(Duration::from_millis(300)))
        .build();
    let handle = layer.handle();
    let service = layer.layer(http());
    let url = api.url("/user/me");
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);
    assert_eq!(idp.stats().password_grants, 1);

    // Another process on the machine holds the refresh lock for a moment.
    let other = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.0.join("session.json.lock"))
        .unwrap();
    assert!(FileExt::try_lock_exclusive(&other).unwrap());
    // The user logs out: the store did not take it, and says so; the tokens here are gone.
    let cleared = handle.clear().await;
    assert!(cleared.is_err(), "the store could not be locked");
    assert!(handle.state().is_none());
    drop(other);

    // The next request must log in anew: the cleared session is never used again.
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);
    let stats = idp.stats();
    assert_eq!(
        (stats.password_grants, stats.refresh_grants),
        (2, 0),
        "after clear() failed to lock the store, the process went on with the cleared session \
         (refreshed it from the stored refresh token instead of logging in): {stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 4. "401 for a token got because of a 401, *before any response accepted it* | no more
// refreshes for rejections until a backoff ends". The backoff outlives the acceptance: once the
// new token was accepted, a real revocation is still answered with the 401, untouched.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_accepted_token_that_is_revoked_is_refreshed_after_an_earlier_glitch() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let service = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .retry_backoff(Duration::from_secs(10), Duration::from_secs(60))
        .build()
        .layer(http());
    let url = api.url("/user/me");
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);

    // A glitch: the API refuses two requests whatever their token. One refresh, the retry is
    // refused too, the 401 goes back (as documented).
    api.push_unauthorized(2);
    assert_eq!(
        status(&service, &url).await.unwrap(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(idp.stats().refresh_grants, 1);
    // The glitch is over: the new token is accepted.
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);

    // Now the server really revokes the (accepted) token: one refresh, one retry, success.
    idp.revoke_access_tokens();
    let after_revocation = status(&service, &url).await.unwrap();
    assert_eq!(
        after_revocation,
        StatusCode::OK,
        "a revoked token that responses had accepted was not refreshed (refresh grants: {}); \
         the caller got the 401",
        idp.stats().refresh_grants
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 5. "The hot path never sends an expired token" / "A JWT whose `exp` disagrees with this
// clock gets `exp − iat` as its lifetime instead". Any JWT past its `exp` is taken for clock skew
// and given a fresh `exp − iat`, also when it is simply old: tokens restored with
// `set_tokens` (the documented way to feed a session saved by an `on_tokens` hook back in), or a
// session a store kept across a restart.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_expired_jwt_given_to_set_tokens_is_refreshed_not_sent() {
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .include_expires_in(false)
            .access_lifetime(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let api = Api::start(&idp).await.unwrap();
    // A session saved earlier (what an `on_tokens` hook wrote to the application's own store).
    let saved = idp
        .refresher_builder()
        .build_http()
        .unwrap()
        .login()
        .await
        .unwrap();
    assert!(saved.expires_at().is_none(), "expiry only in the JWT");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert!(!idp.is_valid_access_token(saved.access_token().secret()));

    // The program starts again and restores it.
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let handle = layer.handle();
    handle.set_tokens(saved).await.unwrap();
    let service = layer.layer(http());
    assert_eq!(
        status(&service, &api.url("/user/me")).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        api.stats().unauthorized,
        0,
        "the expired access token was sent (the API answered 401 to it)"
    );
}

#[tokio::test]
async fn a_restarted_program_refreshes_the_expired_jwt_its_store_kept() {
    let dir = TempDir::new("jwt-restart");
    let path = dir.0.join("session.json");
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .include_expires_in(false)
            .access_lifetime(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let run = || {
        AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
            .store(FileStore::new(&path))
            .build()
            .layer(http())
    };
    let url = api.url("/user/me");
    assert_eq!(status(&run(), &url).await.unwrap(), StatusCode::OK);
    // The program exits; it starts again after the access token expired.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(status(&run(), &url).await.unwrap(), StatusCode::OK);
    assert_eq!(
        api.stats().unauthorized,
        0,
        "the restarted program sent the stored, expired access token (the API answered 401)"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 6. DESIGN: "Never throw away a `refresh_token` the server sent, whatever else is wrong
// with the answer." A refresher of the application's own (a `service_fn`, as the docs invite)
// returns the server's answer with an access token a header cannot carry: the cache refuses it
// (`InvalidToken`) and drops the rotated refresh token that came with it, although the
// `AlreadyExpired` path next to it keeps it. The next refresh presents the spent one.
// ---------------------------------------------------------------------------------------------

/// A minimal hand-written refresher: form POST to the token endpoint, the JSON answer taken as
/// it is (what a user's own `service_fn` refresher does).
async fn hand_written_exchange(
    client: Http,
    token_url: String,
    form: String,
) -> Result<TokenSet, BoxError> {
    let request = Request::post(token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))?;
    let response = client.request(request).await?;
    let ok = response.status().is_success();
    let body = response.into_body().collect().await?.to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body)?;
    if !ok {
        return Err(format!("token endpoint refused: {}", json["error"]).into());
    }
    let mut tokens = TokenSet::new(json["access_token"].as_str().unwrap_or_default());
    if let Some(refresh) = json["refresh_token"].as_str() {
        tokens = tokens.with_refresh_token(refresh);
    }
    if let Some(seconds) = json["expires_in"].as_u64() {
        tokens = tokens.with_expires_in(Duration::from_secs(seconds));
    }
    Ok(tokens)
}

#[tokio::test]
async fn an_unusable_access_token_keeps_its_rotated_refresh_token() {
    let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
        .await
        .unwrap();
    let config = idp.config().clone();
    let token_url = idp.token_url();
    let client = http();
    let refresher = service_fn(move |request: RefreshRequest| {
        let (client, token_url) = (client.clone(), token_url.clone());
        let credentials = format!(
            "client_id={}&client_secret={}",
            config.client_id(),
            config.client_secret()
        );
        let form = match request.refresh_token() {
            Some(refresh) => format!(
                "grant_type=refresh_token&refresh_token={}&{credentials}",
                refresh.secret()
            ),
            None => format!(
                "grant_type=password&username={}&password={}&{credentials}",
                config.username(),
                config.password()
            ),
        };
        hand_written_exchange(client, token_url, form)
    });
    let handle = AuthLayer::builder(refresher)
        .retry_backoff(Duration::from_millis(10), Duration::from_millis(10))
        .build()
        .handle();
    handle.token().await.unwrap();
    // The provider rotates the refresh token, then answers with an access token that has a
    // control character in it (a proxy, an encoding bug): not a valid header value.
    idp.push_fault(Fault::AfterGrant(AfterGrant::Set(
        "access_token",
        serde_json::json!("eyJ.broken\u{1}.token"),
    )));
    let refused = handle.refresh().await.unwrap_err();
    assert_eq!(
        refused.kind(),
        tower_auth_refresh::RefreshErrorKind::InvalidToken
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The next refresh: it must present the refresh token that answer rotated in.
    let next = handle.refresh().await;
    let stats = idp.stats();
    assert_eq!(
        stats.reuse_detected, 0,
        "the next refresh presented the spent refresh token ({next:?}); the session was ended \
         by reuse detection: {stats:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 7. "If the save fails (Redis stalled, a disk error), the new tokens stay pending in the
// process that got them, *which refreshes from them*, and a task retries the save every 100 ms
// while keeping the lock". With a store that has a lock (FileStore, RedisStore, any real one),
// the process cannot refresh from them: its own save task holds the lock its next refresh waits
// for, and gives it up only once the save succeeds (never, while saves keep failing).
// ---------------------------------------------------------------------------------------------

/// A store in memory with a refresh lock (a semaphore), whose saves fail while `failing` is set.
struct LockedFlakyStore {
    stored: Mutex<Stored>,
    failing: AtomicBool,
    lock: Arc<tokio::sync::Semaphore>,
    lock_wait: Duration,
}

impl LockedFlakyStore {
    fn new(lock_wait: Duration) -> Self {
        Self {
            stored: Mutex::default(),
            failing: AtomicBool::new(false),
            lock: Arc::new(tokio::sync::Semaphore::new(1)),
            lock_wait,
        }
    }

    fn write(&self, tokens: Option<TokenSet>, replaces: u64) -> Result<u64, StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::new(StoreErrorKind::Unavailable, None));
        }
        let mut stored = self.stored.lock().unwrap();
        if stored.version != replaces {
            return Err(StoreError::new(StoreErrorKind::Conflict, None));
        }
        *stored = Stored {
            tokens,
            version: replaces + 1,
        };
        Ok(stored.version)
    }
}

impl TokenStore for LockedFlakyStore {
    fn load(&self) -> StoreFuture<'_, Stored> {
        let stored = self.stored.lock().unwrap().clone();
        Box::pin(async move { Ok(stored) })
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet, replaces: u64) -> StoreFuture<'a, u64> {
        Box::pin(async move { self.write(Some(tokens.clone()), replaces) })
    }

    fn delete(&self, replaces: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move { self.write(None, replaces) })
    }

    fn lock(&self) -> StoreFuture<'_, Option<LockToken>> {
        Box::pin(async move {
            match tokio::time::timeout(self.lock_wait, self.lock.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Ok(Some(LockToken::new("memory").holding(permit))),
                _ => Err(StoreError::new(StoreErrorKind::LockTimeout, None)),
            }
        })
    }
}

#[tokio::test]
async fn a_process_whose_save_failed_refreshes_from_its_pending_tokens() {
    let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
        .await
        .unwrap();
    let store = Arc::new(LockedFlakyStore::new(Duration::from_millis(500)));
    let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(Arc::clone(&store))
        .build()
        .handle();
    handle.token().await.unwrap();
    assert_eq!(store.stored.lock().unwrap().version, 1);

    // The store stops taking saves (a disk error, a Redis user without write access to the
    // key...). The refresh succeeds; its save stays pending.
    store.failing.store(true, Ordering::SeqCst);
    assert_eq!(handle.refresh().await.unwrap().generation(), 2);

    // The process refreshes again (its token expires, a 401, the application asks): from the
    // pending tokens, as the README says.
    let again = handle.refresh().await;
    let stats = idp.stats();
    store.failing.store(false, Ordering::SeqCst);
    assert!(
        again.is_ok(),
        "the process could not refresh from its pending tokens: {:?} (refresh grants: {})",
        again.map(|state| state.generation()),
        stats.refresh_grants
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 8. "Refreshes, their timeouts and their retries run on one runtime thread the crate
// starts for the whole process". A refresher that blocks its thread (a CLI credential helper run
// with `std::process::Command`, a synchronous SDK call) blocks that one thread: its own refresh
// timeout cannot fire ("a hung token endpoint never hangs requests"), and every *other* layer in
// the process, with its own healthy refresher, stalls with it.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_refresher_stalls_neither_other_layers_nor_its_timeout() {
    let blocking = service_fn(|_: RefreshRequest| async {
        // e.g. `Command::new("credential-helper").output()` inside the refresher.
        std::thread::sleep(Duration::from_secs(3));
        Ok::<_, Infallible>(TokenSet::new("slow").with_expires_in(Duration::from_secs(900)))
    });
    let slow = AuthLayer::builder(blocking)
        .refresh_timeout(Duration::from_millis(200))
        .build()
        .handle();
    let healthy = AuthLayer::new(service_fn(|_: RefreshRequest| async {
        Ok::<_, Infallible>(TokenSet::new("fast").with_expires_in(Duration::from_secs(900)))
    }))
    .handle();

    let started = Instant::now();
    let slow_login = tokio::spawn(async move {
        let outcome = slow.token().await;
        (outcome.map(|_| ()), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Another session, another refresher, nothing to do with the first.
    let other = tokio::time::timeout(Duration::from_secs(1), healthy.token()).await;
    let (slow_outcome, slow_waited) = slow_login.await.unwrap();
    assert!(
        other.is_ok(),
        "an unrelated layer's login waited more than 1 s for another layer's refresher"
    );
    assert!(
        slow_waited < Duration::from_secs(1),
        "the refresh timeout (200 ms) released the waiter only after {slow_waited:?} \
         ({slow_outcome:?})"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 9. Hooks "run before the requests waiting for that token get it (so when a request or
// `AuthHandle::token` returns, the hooks of its token have run)". `set_tokens` during a refresh:
// the refresh's waiters are handed the application's tokens (the flight settles as superseded
// and publishes the current token) while the `Set` hook for those tokens is still running.
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_superseded_refresh_get_the_token_after_its_hook_ran() {
    let refresher = service_fn(|request: RefreshRequest| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let name = match request.current() {
            None => "login",
            Some(_) => "refreshed",
        };
        Ok::<_, Infallible>(TokenSet::new(name).with_expires_in(Duration::from_secs(900)))
    });
    let set_hook_done = Arc::new(AtomicBool::new(false));
    let layer = AuthLayer::builder(refresher)
        .on_event({
            let done = set_hook_done.clone();
            move |event: &TokenEvent<'_>| {
                if matches!(event, TokenEvent::Set { .. }) {
                    // Saving the application's tokens somewhere: it takes a while.
                    std::thread::sleep(Duration::from_millis(800));
                    done.store(true, Ordering::SeqCst);
                }
            }
        })
        .build();
    let handle = layer.handle();
    handle.token().await.unwrap();

    // A refresh starts; its caller waits.
    let waiter = tokio::spawn({
        let (handle, done) = (handle.clone(), set_hook_done.clone());
        async move {
            let state = handle.refresh().await;
            (state, done.load(Ordering::SeqCst))
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The application sets tokens meanwhile (its hook is slow).
    let setter = std::thread::spawn({
        let handle = handle.clone();
        move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(handle.set_tokens(
                    TokenSet::new("from-the-app").with_expires_in(Duration::from_secs(900)),
                ))
        }
    });
    let (state, hook_had_run) = waiter.await.unwrap();
    tokio::task::spawn_blocking(move || setter.join().unwrap())
        .await
        .unwrap()
        .unwrap();
    let state = state.unwrap();
    assert_eq!(handle.access_token().unwrap().secret(), "from-the-app");
    assert!(
        hook_had_run,
        "the waiter got the application's token (generation {}) before the hook for it had \
         run",
        state.generation()
    );
}

// ---------------------------------------------------------------------------------------------
// Redis findings.
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "redis")]
mod redis_findings {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use tower_auth_refresh::oauth2::OAuth2Refresher;
    use tower_auth_refresh::store::RedisStore;

    struct RedisServer {
        child: Child,
        url: String,
        dir: Option<std::path::PathBuf>,
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn have_redis() -> bool {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            eprintln!("skipped: no redis-server on the PATH");
        }
        found
    }

    /// A `redis-server` on `port`, persisting to `dir` (RDB, only on an explicit `SAVE`) if given.
    fn start_redis(port: u16, dir: Option<&std::path::Path>) -> RedisServer {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(dir) = dir {
            command
                .arg("--dir")
                .arg(dir)
                .args(["--dbfilename", "dump.rdb"]);
        }
        let child = command.stdout(Stdio::null()).spawn().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}/"),
            dir: dir.map(ToOwned::to_owned),
        }
    }

    async fn command(url: &str, args: &[&str]) {
        let client = redis::Client::open(url).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        let _: redis::Value = cmd.query_async(&mut connection).await.unwrap();
    }

    // -----------------------------------------------------------------------------------------
    // Finding 3a. A Redis restart that loses the data ("Redis restart (data lost)"): the store
    // comes back empty at version 0, below the version this process knows. The process drops
    // the live refresh token it holds in memory and asks the refresher for a login instead; a
    // session that came from `set_tokens` (an interactive login: no password grant) is lost.
    // DESIGN: "Never throw away a refresh_token the server sent".
    // -----------------------------------------------------------------------------------------

    #[tokio::test]
    async fn a_redis_that_lost_its_data_keeps_the_live_refresh_token() {
        if !have_redis() {
            return;
        }
        let redis = start_redis(free_port(), None);
        let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
            .await
            .unwrap();
        // Tokens from an interactive login elsewhere; this refresher can only refresh.
        let tokens = idp
            .refresher_builder()
            .build_http()
            .unwrap()
            .login()
            .await
            .unwrap();
        let config = idp.config();
        let refresh_only = OAuth2Refresher::builder(idp.token_url(), config.client_id())
            .client_secret(config.client_secret())
            .build_http()
            .unwrap();
        let store = RedisStore::new(&redis.url, "review:lost:")
            .unwrap()
            .command_timeout(Duration::from_millis(500));
        let handle = AuthLayer::builder(refresh_only)
            .store(store)
            .build()
            .handle();
        handle.set_tokens(tokens).await.unwrap();
        assert_eq!(handle.refresh().await.unwrap().generation(), 2);

        // Redis restarts without its data (no persistence, a new node, FLUSHALL).
        command(&redis.url, &["FLUSHALL"]).await;

        // This process still holds the newest refresh token, valid at the provider.
        let refreshed = handle.refresh().await;
        assert!(
            refreshed.is_ok(),
            "after Redis lost its data, the process threw its live refresh token away and asked \
             for a login it cannot do: {refreshed:?}"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Finding 3b. A Redis restart that comes back from an older snapshot (RDB, or a failover to
    // a replica that lagged): the store's version goes back. README: "Versions only go forward,
    // so a set older than the application's last word is never used again". The process takes
    // the older stored set for "another process saved since", adopts it, and then presents its
    // spent refresh token: reuse detected, session ended.
    // -----------------------------------------------------------------------------------------

    #[tokio::test]
    async fn a_redis_restored_from_an_older_snapshot_never_reuses_a_spent_refresh_token() {
        if !have_redis() {
            return;
        }
        let dir = TempDir::new("redis-snapshot");
        let port = free_port();
        let mut redis = start_redis(port, Some(&dir.0));
        let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
            .await
            .unwrap();
        let store = RedisStore::new(&redis.url, "review:snapshot:")
            .unwrap()
            .command_timeout(Duration::from_millis(500));
        let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
            .store(store)
            .build()
            .handle();
        handle.token().await.unwrap();
        // A snapshot is taken now (version 1)...
        command(&redis.url, &["SAVE"]).await;
        // ... the session goes on: two rotations, versions 2 and 3.
        handle.refresh().await.unwrap();
        handle.refresh().await.unwrap();
        assert_eq!(idp.stats().refresh_grants, 2);

        // Redis dies and restarts from its last snapshot.
        let _ = redis.child.kill();
        let _ = redis.child.wait();
        let url = redis.url.clone();
        let restarted = start_redis(port, redis.dir.as_deref());
        std::mem::forget(std::mem::replace(&mut redis, restarted));
        assert_eq!(redis.url, url);

        // The application goes on refreshing (the first attempt may meet the dead connection).
        for _ in 0..4 {
            let _ = handle.refresh().await;
        }
        let stats = idp.stats();
        assert_eq!(
            stats.reuse_detected, 0,
            "after Redis came back from an older snapshot, the process presented a spent \
             refresh token: {stats:?}"
        );
    }

    // -----------------------------------------------------------------------------------------
    // Finding 10. "Every Redis command is bounded (...): Redis down is a typed StoreError, never
    // a hang", and no setting from zero to `Duration::MAX` hangs anything. The application's
    // own calls (`clear`, `logout`, `set_tokens`) are bounded by nothing but the lock wait,
    // which a stalled Redis stretches to the lock lifetime plus a second: a day with
    // `lock_lifetime(Duration::MAX)` (the lifetime it documents as allowed, "at most a day").
    // -----------------------------------------------------------------------------------------

    #[tokio::test]
    async fn logout_against_a_frozen_redis_returns_within_the_refresh_timeout() {
        if !have_redis() {
            return;
        }
        let redis = start_redis(free_port(), None);
        let idp = IdentityProvider::start(ProviderConfig::default())
            .await
            .unwrap();
        // The settings of the crate's own Redis tests, with the longest lock lifetime.
        let store = RedisStore::new(&redis.url, "review:frozen:")
            .unwrap()
            .command_timeout(Duration::from_millis(300))
            .lock_lifetime(Duration::MAX);
        let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
            .store(store)
            .refresh_timeout(Duration::from_secs(3))
            .build()
            .handle();
        handle.token().await.unwrap();
        // The Redis host freezes (its process stopped; the kernel still accepts connections).
        Command::new("kill")
            .args(["-STOP", &redis.child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        let logout = tokio::time::timeout(Duration::from_secs(15), handle.logout()).await;
        let waited = started.elapsed();
        Command::new("kill")
            .args(["-CONT", &redis.child.id().to_string()])
            .status()
            .unwrap();
        let logout = logout.unwrap_or_else(|_| {
            panic!(
                "logout() had not returned after {waited:?} against a stalled Redis (300 ms \
                 command timeout, 3 s refresh timeout)"
            )
        });
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(
            logout.unwrap_err().kind(),
            tower_auth_refresh::RefreshErrorKind::Store
        );
        assert!(handle.state().is_none(), "cleared here all the same");
    }

    // -----------------------------------------------------------------------------------------
    // Finding 11. "A stalled Redis (paused, busy) may answer soon: keep waiting, as for a lock
    // held by another process" (store/redis.rs); README: "a Redis that stalls (a command timing
    // out) is waited for the same way", "Every Redis command is bounded (default 2 s)". With the
    // default command timeout, redis-rs's own response timeout (500 ms, on by default in redis
    // 1.x) fires first and comes back as an I/O error, which the store reports as
    // `Unavailable`: a stall of more than half a second fails the lock wait (and with it the
    // refresh, `set_tokens`, `clear`) at once, and `command_timeout` above 500 ms has no effect.
    // -----------------------------------------------------------------------------------------

    #[tokio::test]
    async fn a_redis_stall_shorter_than_the_command_timeout_is_waited_for() {
        if !have_redis() {
            return;
        }
        let redis = start_redis(free_port(), None);
        let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
            .await
            .unwrap();
        // Default settings: 2 s command timeout, 40 s lock.
        let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
            .store(RedisStore::new(&redis.url, "review:stall:").unwrap())
            .build()
            .handle();
        handle.token().await.unwrap();

        // Redis stalls writes for 1.2 s (a failover's CLIENT PAUSE, a slow fork) just as a
        // refresh takes the lock.
        command(&redis.url, &["CLIENT", "PAUSE", "1200", "WRITE"]).await;
        let started = Instant::now();
        let refreshed = handle.refresh().await;
        let waited = started.elapsed();
        assert!(
            refreshed.is_ok(),
            "the refresh gave up on a 1.2 s stall after {waited:?} (command timeout 2 s, lock \
             wait 41 s): {refreshed:?}"
        );
    }
}
