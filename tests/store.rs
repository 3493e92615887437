//! Token stores: the session's one truth. A file store that survives restarts and is shared by
//! processes on one machine, the application's word reaching the store, and the hooks.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::Layer;
use tower_auth_refresh::store::{FileStore, StoreErrorKind, Stored, TokenStore};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};

#[path = "support/captured_log.rs"]
mod captured_log;
use captured_log::Captured;
use tower_auth_refresh::{AuthLayer, RefreshErrorKind, TokenEvent, TokenSet};

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("tower-auth-refresh-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One "run of the program": a layer whose refresher keeps its tokens in `path`, and one
/// request through it.
async fn run_program(idp: &IdentityProvider, api: &Api, path: &std::path::Path) -> StatusCode {
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(FileStore::new(path))
        .build();
    let service = layer.layer(Client::builder(TokioExecutor::new()).build_http());
    let request = Request::get(api.url("/user/me"))
        .body(Full::<Bytes>::default())
        .unwrap();
    service.oneshot(request).await.unwrap().status()
}

// A program logs in, exits, and restarts within the token lifetime: no second login.
#[tokio::test]
async fn a_restarted_program_continues_its_session() {
    let dir = TempDir::new("restart");
    let path = dir.0.join("session.json");
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();

    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(idp.stats().password_grants, 1, "one login for three runs");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "only the owner may read the tokens");
    }
    let mut left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["session.json", "session.json.lock"],
        "no temporary file is left behind"
    );
}

// After the stored access token expired, the stored refresh token is used: a refresh, not a
// login.
#[tokio::test]
async fn a_restart_after_expiry_refreshes_with_the_stored_refresh_token() {
    let dir = TempDir::new("expired");
    let path = dir.0.join("session.json");
    let idp =
        IdentityProvider::start(ProviderConfig::default().access_lifetime(Duration::from_secs(1)))
            .await
            .unwrap();
    let api = Api::start(&idp).await.unwrap();
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    // The stored access token has expired.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
}

// A corrupt file: a warning, one fresh login, and the file is repaired.
#[tokio::test]
async fn a_corrupt_file_means_one_fresh_login_and_a_warning() {
    let dir = TempDir::new("corrupt");
    let path = dir.0.join("session.json");
    std::fs::write(&path, b"{\"access_token\": not json").unwrap();

    let (log, _guard) = Captured::trace();

    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(idp.stats().password_grants, 1);
    let log = log.text();
    assert!(log.contains("WARN") && log.contains("corrupt"), "{log}");
}

// A folder that cannot be written: a typed error naming the store, never a panic, and no
// login that the store could not keep (the store is the session's truth).
#[tokio::test]
async fn an_unwritable_folder_is_a_typed_error() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let path = std::path::Path::new("/nonexistent-dir-for-tower-auth-refresh/session.json");
    let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(FileStore::new(path))
        .build()
        .handle();
    let error = handle.token().await.unwrap_err();
    let store = error
        .refresher_error()
        .and_then(|e| e.downcast_ref::<tower_auth_refresh::store::StoreError>())
        .expect("a StoreError");
    assert_eq!(store.kind(), StoreErrorKind::Unavailable);
    assert_eq!(idp.stats().requests, 0);
}

// The hook sees every new token set: the login, each refresh, and tokens set by the app.
#[tokio::test]
async fn on_tokens_sees_every_new_token_set() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .on_tokens({
            let seen = seen.clone();
            move |tokens: &TokenSet| {
                seen.lock()
                    .unwrap()
                    .push(tokens.refresh_token().unwrap().secret().to_owned());
            }
        })
        .build();
    let handle = layer.handle();
    handle.token().await.unwrap();
    handle.refresh().await.unwrap();
    handle.refresh().await.unwrap();
    handle
        .set_tokens(TokenSet::new("from-the-app").with_refresh_token("app-refresh"))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3], "app-refresh");
    // Each refresh rotated the refresh token: the hook always had the newest.
    assert!(seen[0] != seen[1] && seen[1] != seen[2]);
}

/// A store in memory whose next saves can be made to fail, as a store that stalls would.
#[derive(Default)]
struct FlakyStore {
    stored: Mutex<Stored>,
    failing_saves: std::sync::atomic::AtomicUsize,
}

impl TokenStore for FlakyStore {
    fn load(&self) -> tower_auth_refresh::store::StoreFuture<'_, Stored> {
        let stored = self.stored.lock().unwrap().clone();
        Box::pin(async move { Ok(stored) })
    }

    fn save<'a>(
        &'a self,
        tokens: &'a TokenSet,
        replaces: u64,
    ) -> tower_auth_refresh::store::StoreFuture<'a, u64> {
        Box::pin(async move { self.write(Some(tokens.clone()), replaces) })
    }

    fn delete(&self, replaces: u64) -> tower_auth_refresh::store::StoreFuture<'_, u64> {
        Box::pin(async move { self.write(None, replaces) })
    }
}

impl FlakyStore {
    fn write(
        &self,
        tokens: Option<TokenSet>,
        replaces: u64,
    ) -> Result<u64, tower_auth_refresh::store::StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        use tower_auth_refresh::store::StoreError;
        let failing = self.failing_saves.load(SeqCst);
        if failing > 0 {
            self.failing_saves.store(failing - 1, SeqCst);
            return Err(StoreError::new(StoreErrorKind::Timeout, None));
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

// Saves that fail (a store that stalls) do not make the process go back to the older stored
// tokens and present a spent refresh token: the new tokens are saved as soon as the store takes
// them, before anyone refreshes again.
#[tokio::test]
async fn a_failed_save_never_leads_to_a_spent_refresh_token() {
    let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
        .await
        .unwrap();
    let store = Arc::new(FlakyStore::default());
    let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(Arc::clone(&store))
        .build()
        .handle();
    handle.token().await.unwrap();
    store
        .failing_saves
        .store(3, std::sync::atomic::Ordering::SeqCst);
    handle.refresh().await.unwrap();
    handle.refresh().await.unwrap();
    handle.refresh().await.unwrap();
    let stats = idp.stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grants, 0);
    assert_eq!(stats.refresh_grants, 3);
    let stored = store.stored.lock().unwrap().clone();
    assert_eq!(
        stored.tokens.unwrap().access_token(),
        handle_access_token(&handle).access_token(),
        "the store has the newest tokens"
    );
}

fn handle_access_token(handle: &tower_auth_refresh::AuthHandle) -> TokenSet {
    TokenSet::new(handle.access_token().unwrap().secret())
}

/// The `sid` (session) claim of a JWT access token.
fn session_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["sid"].as_str().unwrap().to_owned()
}

/// An HTTP client that records the session of every token it sends.
fn recording_client(
    sent: Arc<Mutex<Vec<String>>>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = hyper_util::client::legacy::Error,
    Future = impl Future<
        Output = Result<http::Response<hyper::body::Incoming>, hyper_util::client::legacy::Error>,
    > + Send,
> + Clone
+ Send
+ 'static {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        if let Some(token) = request.headers().get(http::header::AUTHORIZATION) {
            let token = token.to_str().unwrap().trim_start_matches("Bearer ");
            sent.lock().unwrap().push(session_of(token));
        }
        client.request(request)
    })
}

// The application's word reaches the store: after `set_tokens(bob)`, a refresh of any kind
// refreshes bob's session, and requests go out as bob, never as the stored alice.
#[tokio::test]
async fn set_tokens_writes_through_and_the_api_sees_the_new_session() {
    let dir = TempDir::new("set");
    let path = dir.0.join("session.json");
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(FileStore::new(&path))
        .build();
    let handle = layer.handle();
    let service = layer.layer(recording_client(sent.clone()));
    let get = || {
        Request::get(api.url("/user/me"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    assert_eq!(service.clone().oneshot(get()).await.unwrap().status(), 200);
    let alice = sent.lock().unwrap()[0].clone();

    // A session got elsewhere (an interactive login).
    let bob_tokens = idp
        .refresher_builder()
        .build_http()
        .unwrap()
        .login()
        .await
        .unwrap();
    let bob = session_of(bob_tokens.access_token().secret());
    assert_ne!(alice, bob);
    handle.set_tokens(bob_tokens).await.unwrap();

    for refresh in [true, false] {
        if refresh {
            handle.refresh().await.unwrap();
        } else {
            idp.revoke_access_tokens();
        }
        assert_eq!(service.clone().oneshot(get()).await.unwrap().status(), 200);
    }
    let sent = sent.lock().unwrap().clone();
    assert!(
        sent[1..].iter().all(|sid| *sid == bob),
        "{sent:?}, bob = {bob}"
    );
    // And a restarted program continues as bob.
    let stored = FileStore::new(&path).load().await.unwrap();
    let stored = stored.tokens.unwrap();
    assert_eq!(session_of(stored.access_token().secret()), bob);
}

// `clear()` ends the stored session too: a restarted program logs in anew, and the file keeps
// no secret.
#[tokio::test]
async fn clear_then_restart_is_one_new_login() {
    let dir = TempDir::new("clear");
    let path = dir.0.join("session.json");
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(FileStore::new(&path))
        .build();
    layer.handle().token().await.unwrap();
    assert_eq!(
        idp.stats().password_grants,
        1,
        "the stored session was used"
    );
    layer.handle().clear().await.unwrap();
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(!file.contains("token"), "no secret left: {file}");

    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(idp.stats().password_grants, 2, "one new login");
}

// A store that does not take the application's tokens: nothing changes, and the error says why.
#[tokio::test]
async fn set_tokens_that_the_store_refuses_change_nothing() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let store = Arc::new(FlakyStore::default());
    let handle = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .store(Arc::clone(&store))
        .build()
        .handle();
    let before = handle.token().await.unwrap();
    store
        .failing_saves
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let error = handle
        .set_tokens(TokenSet::new("other").with_refresh_token("other-r"))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), RefreshErrorKind::Store);
    assert_eq!(handle.state().unwrap(), before);
}

// Two layers in one program on one session file: one refresh chain, never a refresh token
// presented twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_layers_on_one_file_share_one_refresh_chain() {
    let dir = TempDir::new("two-layers");
    let path = dir.0.join("session.json");
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .response_delay(Duration::from_millis(50))
            .reuse_detection(true),
    )
    .await
    .unwrap();
    let handle = || {
        AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
            .store(FileStore::new(&path))
            .build()
            .handle()
    };
    let (a, b) = (handle(), handle());
    a.token().await.unwrap();
    for _ in 0..5 {
        let (ra, rb) = tokio::join!(a.refresh(), b.refresh());
        ra.unwrap();
        rb.unwrap();
    }
    let stats = idp.stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.password_grants, 1, "{stats:?}");
    // Each pair: one refreshed, the other found its tokens in the store (or refreshed after it).
    assert!((5..=10).contains(&stats.refresh_grants), "{stats:?}");
}

// Two OS processes on one session file, refreshing at once, again and again: one login and
// one refresh chain between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_file_never_reuse_a_refresh_token() {
    let dir = TempDir::new("two-processes");
    let path = dir.0.join("session.json");
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .response_delay(Duration::from_millis(30))
            .reuse_detection(true),
    )
    .await
    .unwrap();
    let config = idp.config();
    let spawn = || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["file_worker", "--exact", "--ignored", "--nocapture"])
            .env("WORKER", "1")
            .env("WORKER_TOKEN_URL", idp.token_url())
            .env("WORKER_CLIENT_ID", config.client_id())
            .env("WORKER_CLIENT_SECRET", config.client_secret())
            .env("WORKER_USERNAME", config.username())
            .env("WORKER_PASSWORD", config.password())
            .env("WORKER_FILE", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let workers = [spawn(), spawn()];
    let outputs = tokio::task::spawn_blocking(move || {
        workers.map(|worker| worker.wait_with_output().unwrap())
    })
    .await
    .unwrap();
    for output in &outputs {
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stats = idp.stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grants, 0, "{stats:?}");
    assert_eq!(stats.password_grants, 1, "{stats:?}");
    assert!(stats.refresh_grants >= 10, "{stats:?}");
}

/// A worker process of the test above: forced refreshes through a `FileStore`.
#[test]
#[ignore = "run by two_processes_on_one_file_never_reuse_a_refresh_token as a worker"]
fn file_worker() {
    if std::env::var("WORKER").is_err() {
        return;
    }
    let env = |name: &str| std::env::var(name).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let refresher = tower_auth_refresh::oauth2::OAuth2Refresher::builder(
            env("WORKER_TOKEN_URL"),
            env("WORKER_CLIENT_ID"),
        )
        .client_secret(env("WORKER_CLIENT_SECRET"))
        .password(env("WORKER_USERNAME"), env("WORKER_PASSWORD"))
        .build_http()
        .unwrap();
        let handle = AuthLayer::builder(refresher)
            .store(FileStore::new(env("WORKER_FILE")))
            .build()
            .handle();
        for _ in 0..10 {
            handle.refresh().await.unwrap();
        }
    });
}

// Hooks are told why the tokens changed.
#[tokio::test]
async fn hooks_are_told_why_the_tokens_changed() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .on_event({
            let seen = seen.clone();
            move |event: &TokenEvent<'_>| {
                let what = match event {
                    TokenEvent::Refreshed { reason, .. } => format!("refreshed ({reason})"),
                    TokenEvent::Adopted { .. } => "adopted".into(),
                    TokenEvent::Set { .. } => "set".into(),
                    TokenEvent::RefreshTokenKept { .. } => "kept".into(),
                    TokenEvent::Cleared => "cleared".into(),
                    _ => "other".into(),
                };
                seen.lock().unwrap().push(what);
            }
        })
        .build();
    let handle = layer.handle();
    handle.token().await.unwrap();
    handle.refresh().await.unwrap();
    handle.set_tokens(TokenSet::new("t")).await.unwrap();
    handle.clear().await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "refreshed (no token)",
            "refreshed (forced)",
            "set",
            "cleared"
        ]
    );
}
