//! Token stores: a file store that survives restarts, and the token-change hook.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::Layer;
use tower_auth_refresh::store::{FileStore, StoredRefresher};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, TokenSet};

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
    let refresher = StoredRefresher::new(
        idp.refresher_builder().build_http().unwrap(),
        FileStore::new(path),
    );
    let service =
        AuthLayer::new(refresher).layer(Client::builder(TokioExecutor::new()).build_http());
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
    let leftovers: Vec<_> = std::fs::read_dir(&dir.0).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
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

    let log = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let log = log.clone();
        move || LogWriter(log.clone())
    };
    let subscriber = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(run_program(&idp, &api, &path).await, StatusCode::OK);
    assert_eq!(idp.stats().password_grants, 1);
    let log = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(log.contains("WARN") && log.contains("corrupt"), "{log}");
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// A file that cannot be written does not fail the request: the tokens are good, the store is
// only a cache of them.
#[tokio::test]
async fn an_unwritable_file_is_not_fatal() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let path = std::path::Path::new("/nonexistent-dir-for-tower-auth-refresh/session.json");
    assert_eq!(run_program(&idp, &api, path).await, StatusCode::OK);
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
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3], "app-refresh");
    // Each refresh rotated the refresh token: the hook always had the newest.
    assert!(seen[0] != seen[1] && seen[1] != seen[2]);
}

/// A store in memory whose next save can be made to fail.
#[derive(Default)]
struct FlakyStore {
    tokens: Mutex<Option<TokenSet>>,
    fail_next_save: std::sync::atomic::AtomicBool,
}

impl tower_auth_refresh::store::TokenStore for FlakyStore {
    fn load(&self) -> tower_auth_refresh::store::StoreFuture<'_, Option<TokenSet>> {
        let tokens = self.tokens.lock().unwrap().clone();
        Box::pin(async move { Ok(tokens) })
    }

    fn save<'a>(
        &'a self,
        tokens: &'a TokenSet,
        _replaced: Option<&'a TokenSet>,
    ) -> tower_auth_refresh::store::StoreFuture<'a, ()> {
        use tower_auth_refresh::store::{StoreError, StoreErrorKind};
        let fail = self
            .fail_next_save
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if !fail {
            *self.tokens.lock().unwrap() = Some(tokens.clone());
        }
        Box::pin(async move {
            if fail {
                Err(StoreError::new(StoreErrorKind::Unavailable, None))
            } else {
                Ok(())
            }
        })
    }
}

// A save that fails does not make the process go back to the older stored tokens and present
// a spent refresh token: the unsaved tokens are written at the next refresh.
#[tokio::test]
async fn a_failed_save_never_leads_to_a_spent_refresh_token() {
    let idp = IdentityProvider::start(ProviderConfig::default().reuse_detection(true))
        .await
        .unwrap();
    let store = Arc::new(FlakyStore::default());
    struct Shared(Arc<FlakyStore>);
    impl tower_auth_refresh::store::TokenStore for Shared {
        fn load(&self) -> tower_auth_refresh::store::StoreFuture<'_, Option<TokenSet>> {
            self.0.load()
        }
        fn save<'a>(
            &'a self,
            tokens: &'a TokenSet,
            replaced: Option<&'a TokenSet>,
        ) -> tower_auth_refresh::store::StoreFuture<'a, ()> {
            self.0.save(tokens, replaced)
        }
    }
    let refresher = StoredRefresher::new(
        idp.refresher_builder().build_http().unwrap(),
        Shared(store.clone()),
    );
    let handle = AuthLayer::new(refresher).handle();
    handle.token().await.unwrap();
    store
        .fail_next_save
        .store(true, std::sync::atomic::Ordering::SeqCst);
    handle.refresh().await.unwrap();
    handle.refresh().await.unwrap();
    handle.refresh().await.unwrap();
    let stats = idp.stats();
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grants, 0);
    assert_eq!(stats.refresh_grants, 3);
}
