//! The crate against node `oidc-provider` (a certified OpenID Provider we did not write), over
//! real sockets on 127.0.0.1. Every count asserted here is the server's own.
//!
//! Needs Node.js and `npm ci --prefix interop`. Without them each test prints "skipped: …" and
//! passes, unless `INTEROP_REQUIRED=1` (as `.ci/run` sets), which makes them fail. See
//! `interop/README.md`, also for running the external-server test against a real Keycloak.

mod any_idp;
#[cfg(feature = "dpop")]
mod dpop;
mod external;
mod server;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::Layer;
use tower_auth_refresh::oauth2::{ErrorKind, HttpClient, OAuth2Refresher};
use tower_auth_refresh::{AuthHandle, AuthLayer, AuthService, RefreshError};

use self::server::{ClientKind, Interop, Lifetimes, NARROW_SCOPE, Stats};

/// Every scenario ends within this, or fails.
const SCENARIO_LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(scenario: F) -> F::Output {
    tokio::time::timeout(SCENARIO_LIMIT, scenario)
        .await
        .expect("the scenario took longer than 30 s")
}

/// Runs `body` against a fresh server with these lifetimes, within [`SCENARIO_LIMIT`]; does
/// nothing (the skip is reported) where the suite cannot run.
async fn scenario(lifetimes: Lifetimes, body: impl AsyncFnOnce(&Interop)) {
    let Some(server) = Interop::start(lifetimes) else {
        return;
    };
    bounded(body(&server)).await;
}

/// A layered hyper-util client for one client registration.
struct Session {
    handle: AuthHandle,
    service: AuthService<HttpClient>,
}

fn session(layer: AuthLayer) -> Session {
    let handle = layer.handle();
    let service = layer.layer(Client::builder(TokioExecutor::new()).build_http());
    Session { handle, service }
}

fn login_session(server: &Interop, kind: ClientKind) -> Session {
    session(AuthLayer::new(server.refresher(kind).build_http().unwrap()))
}

/// GET through the layer; `Ok` only for a 200.
async fn get(service: &AuthService<HttpClient>, url: &str) -> Result<(), String> {
    let request = Request::get(url).body(Full::<Bytes>::default()).unwrap();
    match service.clone().oneshot(request).await {
        Ok(response) if response.status() == StatusCode::OK => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(error) => Err(format!("error: {error}")),
    }
}

#[derive(Debug, Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
}

/// `workers` concurrent loops of GETs, each pausing `pause` between requests, for `length`.
/// Returns the outcomes and the first failure messages.
async fn run_workers(
    service: &AuthService<HttpClient>,
    url: &str,
    workers: usize,
    length: Duration,
    pause: Duration,
) -> (Arc<Load>, Vec<String>) {
    let load = Arc::new(Load::default());
    let until = Instant::now() + length;
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (service, url, load) = (service.clone(), url.to_owned(), load.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while Instant::now() < until {
                    match get(&service, &url).await {
                        Ok(()) => load.ok.fetch_add(1, Ordering::Relaxed),
                        Err(error) => {
                            failures.push(error);
                            load.failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    tokio::time::sleep(pause).await;
                }
                failures
            })
        })
        .collect();
    let mut failures = Vec::new();
    for task in tasks {
        failures.extend(task.await.unwrap().into_iter().take(3));
    }
    (load, failures)
}

/// A logged-in session under `workers` loops of GETs for 3 s, with `event` run at 1 s.
async fn logged_in_under_load<T>(
    server: &Interop,
    workers: usize,
    event: impl Future<Output = T>,
) -> (Arc<Load>, Vec<String>, T) {
    let session = login_session(server, ClientKind::Post);
    session.handle.token().await.unwrap();
    let url = server.api("/me");
    let load = run_workers(
        &session.service,
        &url,
        workers,
        Duration::from_secs(3),
        Duration::from_millis(20),
    );
    let event = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        event.await
    };
    let ((load, failures), outcome) = tokio::join!(load, event);
    (load, failures, outcome)
}

fn oauth2_error(error: &RefreshError) -> &tower_auth_refresh::oauth2::Error {
    error
        .refresher_error()
        .and_then(|error| error.downcast_ref())
        .expect("an OAuth2 error")
}

/// The server's counters and its log, for failure messages.
fn show(server: &Interop, stats: &Stats) -> String {
    format!("{stats:#?}\nserver log:\n{}", server.log())
}

// 1. Cold stampede: 200 concurrent requests and no token yet → one password grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_stampede_costs_one_login() {
    scenario(Lifetimes::default(), async |server| {
        let session = login_session(server, ClientKind::Post);
        let url = server.api("/me");
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (service, url) = (session.service.clone(), url.clone());
                tokio::spawn(async move { get(&service, &url).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let stats = server.stats().await;
        assert_eq!(stats.token_requests, 1, "{}", show(server, &stats));
        assert_eq!(stats.token("password", "ok"), 1);
        assert_eq!((stats.api_ok, stats.api_unauthorized), (200, 0));
    })
    .await;
}

// 2. 64 workers through several lifetimes of a 3 s token with rotation on every refresh: one
// login, one refresh per soft window (half the lifetime), no refresh token reused, no failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_refreshes_as_the_windows_predict() {
    let lifetime = Duration::from_secs(3);
    scenario(Lifetimes {
        access: lifetime.as_secs(),
        ..Lifetimes::default()
    }, async |server| {
        let session = login_session(server, ClientKind::Post);
        let started = Instant::now();
        let (load, failures) = run_workers(
            &session.service,
            &server.api("/me"),
            64,
            Duration::from_secs(10),
            Duration::from_millis(40),
        )
        .await;
        let elapsed = started.elapsed();
        let stats = server.stats().await;
        assert_eq!(load.failed.load(Ordering::Relaxed), 0, "{failures:?}");
        assert_eq!(stats.token("password", "ok"), 1, "{}", show(server, &stats));
        // The soft window of a 3 s token is its second half: one refresh each 1.5 s of load.
        let predicted = (elapsed.as_secs_f64() / (lifetime.as_secs_f64() / 2.0)) as u64;
        let refreshes = stats.token("refresh_token", "ok");
        assert!(
            (predicted.saturating_sub(2)..=predicted).contains(&refreshes),
            "{refreshes} refreshes in {elapsed:?}, predicted {predicted}: {}",
            show(server, &stats)
        );
        assert_eq!(stats.token_all("refresh_token"), refreshes, "no refused refresh");
        assert_eq!((stats.reuse_detected, stats.grants_revoked), (0, 0));
        eprintln!(
            "rotation: {} requests in {elapsed:?}, {} logins, {refreshes} refreshes (predicted {predicted}), \
             {} API 401s, {} reuse",
            load.ok.load(Ordering::Relaxed),
            stats.token("password", "ok"),
            stats.api_unauthorized,
            stats.reuse_detected
        );
    })
    .await;
}

// 3. Every access token revoked mid-run: the 401s cost one refresh, and nobody fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_revoked_mid_run_cost_one_refresh() {
    scenario(Lifetimes::default(), async |server| {
        let (load, failures, revoked) =
            logged_in_under_load(server, 64, server.revoke_access_tokens()).await;
        let stats = server.stats().await;
        assert_eq!(revoked, 1, "one access token to revoke");
        assert_eq!(load.failed.load(Ordering::Relaxed), 0, "{failures:?}");
        assert!(stats.api_unauthorized >= 1, "the revocation was noticed");
        assert_eq!(stats.token("password", "ok"), 1, "{}", show(server, &stats));
        assert_eq!(stats.token("refresh_token", "ok"), 1);
        assert_eq!(stats.token_requests, 2);
        eprintln!(
            "access token revoked: {} requests, {} API 401s retried, {} token requests",
            load.ok.load(Ordering::Relaxed),
            stats.api_unauthorized,
            stats.token_requests
        );
    })
    .await;
}

// 4a. The session ended at the server (refresh and access tokens revoked): the refused refresh
// leads to one new login, and nobody fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_costs_one_login() {
    scenario(Lifetimes::default(), async |server| {
        let end_session = async {
            (
                server.revoke_refresh_tokens().await,
                server.revoke_access_tokens().await,
            )
        };
        let (load, failures, revoked) = logged_in_under_load(server, 16, end_session).await;
        let stats = server.stats().await;
        assert_eq!(revoked, (1, 1));
        assert_eq!(load.failed.load(Ordering::Relaxed), 0, "{failures:?}");
        assert_eq!(stats.token("password", "ok"), 2, "{}", show(server, &stats));
        assert_eq!(stats.token("refresh_token", "invalid_grant"), 1);
        assert_eq!(stats.token_requests, 3);
        let refused = &stats.token_errors[0];
        assert_eq!(refused.detail.as_deref(), Some("refresh token not found"));
    })
    .await;
}

// 4b. The refresh token expired: the background refresh in the access token's soft window is
// refused, one new login follows, and nobody fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_refresh_token_costs_one_login() {
    scenario(
        Lifetimes {
            access: 4,
            ..Lifetimes::default()
        },
        async |server| {
            let session = login_session(server, ClientKind::Post);
            session.handle.token().await.unwrap();
            assert_eq!(server.expire_refresh_tokens().await, 1);
            // The soft window opens at 2 s; the next one (after the new login) at about 4 s.
            let (load, failures) = run_workers(
                &session.service,
                &server.api("/me"),
                16,
                Duration::from_millis(3500),
                Duration::from_millis(20),
            )
            .await;
            let stats = server.stats().await;
            assert_eq!(load.failed.load(Ordering::Relaxed), 0, "{failures:?}");
            assert_eq!(stats.token("password", "ok"), 2, "{}", show(server, &stats));
            assert_eq!(stats.token("refresh_token", "invalid_grant"), 1);
            assert_eq!(stats.token_requests, 3);
            let refused = &stats.token_errors[0];
            assert_eq!(refused.detail.as_deref(), Some("refresh token is expired"));
            assert_eq!(stats.api_unauthorized, 0, "the old token served meanwhile");
        },
    )
    .await;
}

// 5. Wrong password, wrong client secret: a typed error carrying the server's own code and
// description, after exactly one token-endpoint call, and no second call when asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_credentials_are_typed_and_asked_once() {
    scenario(Lifetimes::default(), async |server| {
        let wrong_password = OAuth2Refresher::builder(&server.urls.token, "interop-post")
            .client_secret(server.client_secret(ClientKind::Post))
            .password(&server.username, "not the password")
            .scope(server::SCOPE);
        let wrong_secret = server
            .refresher(ClientKind::Post)
            .client_secret("not the secret");
        let cases = [
            (
                wrong_password,
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                ErrorKind::CredentialsRejected,
            ),
            (
                wrong_secret,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                ErrorKind::ClientRejected,
            ),
        ];
        for (builder, status, code, kind) in cases {
            let before = server.stats().await.token_requests;
            let session = session(AuthLayer::new(builder.build_http().unwrap()));
            let error = session.handle.token().await.unwrap_err();
            let oauth = oauth2_error(&error);
            let stats = server.stats().await;
            let answered = stats.token_errors.last().unwrap();
            assert_eq!(oauth.kind(), kind, "{oauth}");
            assert_eq!(oauth.status(), Some(status));
            assert_eq!(oauth.error_code(), Some(code));
            assert_eq!(answered.error, code);
            assert_eq!(
                oauth.error_description(),
                answered.error_description.as_deref()
            );
            // A request through the layer fails at once with the same error: no second call.
            let request = Request::get(server.api("/me"))
                .body(Full::default())
                .unwrap();
            let again = session.service.clone().oneshot(request).await.unwrap_err();
            let again = again
                .downcast_ref::<RefreshError>()
                .expect("a RefreshError");
            assert_eq!(oauth2_error(again).error_code(), Some(code));
            let stats = server.stats().await;
            assert_eq!(stats.token_requests - before, 1, "{}", show(server, &stats));
            eprintln!(
                "{code}: HTTP {}, \"{}\" (server detail: {:?})",
                status.as_u16(),
                oauth.error_description().unwrap_or_default(),
                answered.detail
            );
        }
        assert_eq!(server.stats().await.token("password", "ok"), 0);
    })
    .await;
}

// 6. client_credentials: no refresh token, so every renewal is a new client_credentials grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_renew_with_a_new_grant() {
    scenario(
        Lifetimes {
            client_credentials: 2,
            ..Lifetimes::default()
        },
        async |server| {
            let refresher = OAuth2Refresher::builder(&server.urls.token, "interop-post")
                .client_secret(server.client_secret(ClientKind::Post))
                .client_credentials()
                .scope("api:read")
                .build_http()
                .unwrap();
            let session = session(AuthLayer::new(refresher));
            let url = server.api("/me");
            get(&session.service, &url).await.unwrap();
            assert!(!session.handle.state().unwrap().has_refresh_token());
            // Past the 2 s lifetime: the next request waits for a new token.
            tokio::time::sleep(Duration::from_millis(2100)).await;
            get(&session.service, &url).await.unwrap();
            session.handle.refresh().await.unwrap();
            get(&session.service, &url).await.unwrap();
            let stats = server.stats().await;
            assert_eq!(
                stats.token("client_credentials", "ok"),
                3,
                "{}",
                show(server, &stats)
            );
            assert_eq!(
                stats.token_requests, 3,
                "no refresh_token grant, no password grant"
            );
            assert_eq!((stats.api_ok, stats.api_unauthorized), (3, 0));
        },
    )
    .await;
}

// 7. The server grants fewer scopes than asked (RFC 6749 §3.3): the session must go on. A
// refresh that asks again for the login scope is refused by oidc-provider (`invalid_scope`,
// RFC 6749 §6: the scope of a refresh must not exceed the granted one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_scopes_granted_than_asked_keeps_the_session() {
    scenario(
        Lifetimes {
            access: 2,
            ..Lifetimes::default()
        },
        async |server| {
            let asked = format!("{NARROW_SCOPE} api:write");
            let refresher = server
                .refresher(ClientKind::Narrow)
                .scope(asked)
                .build_http()
                .unwrap();
            let session = session(AuthLayer::new(refresher));
            let url = server.api("/me");
            get(&session.service, &url).await.unwrap();
            // Past the 2 s lifetime: the next request needs a refreshed token.
            tokio::time::sleep(Duration::from_millis(2100)).await;
            let after_expiry = get(&session.service, &url).await;
            let again = get(&session.service, &url).await;
            let stats = server.stats().await;
            assert!(
                after_expiry.is_ok() && again.is_ok(),
                "{after_expiry:?}, {again:?}: {}",
                show(server, &stats)
            );
            assert_eq!(stats.token("password", "ok"), 1);
            assert_eq!(stats.token("refresh_token", "ok"), 1);
            assert_eq!(stats.token_requests, 2);
        },
    )
    .await;
}

// 8. A public client (`none`): oidc-provider rotates its refresh tokens on every use by
// default; three refreshes in a row, no reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_client_logs_in_and_refreshes() {
    scenario(Lifetimes::default(), async |server| {
        let session = login_session(server, ClientKind::Public);
        let url = server.api("/me");
        get(&session.service, &url).await.unwrap();
        for _ in 0..3 {
            session.handle.refresh().await.unwrap();
            get(&session.service, &url).await.unwrap();
        }
        let stats = server.stats().await;
        assert_eq!(stats.token("password", "ok"), 1, "{}", show(server, &stats));
        assert_eq!(stats.token("refresh_token", "ok"), 3);
        assert_eq!(stats.token_requests, 4);
        assert_eq!((stats.reuse_detected, stats.api_ok), (0, 4));
    })
    .await;
}

// The "0 reuse" counts above mean something only if the server notices reuse: replaying a
// rotated-out refresh token is refused, counted, and ends the whole grant (oidc-provider's
// `rotateRefreshToken: true`), so even the newest refresh token dies with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_detects_refresh_token_reuse() {
    scenario(Lifetimes::default(), async |server| {
        let refresher = server.refresher(ClientKind::Post).build_http().unwrap();
        let first = refresher.login().await.unwrap();
        let second = refresher.refresh(&first).await.unwrap();
        assert_ne!(first.refresh_token(), second.refresh_token(), "rotated");
        let reused = refresher.refresh(&first).await.unwrap_err();
        assert_eq!(reused.kind(), ErrorKind::RefreshTokenRejected);
        let newest = refresher.refresh(&second).await.unwrap_err();
        assert_eq!(newest.kind(), ErrorKind::RefreshTokenRejected);
        let stats = server.stats().await;
        assert_eq!(
            (stats.reuse_detected, stats.grants_revoked),
            (1, 1),
            "{}",
            show(server, &stats)
        );
        assert_eq!(stats.token("refresh_token", "invalid_grant"), 2);
        let reuse = &stats.token_errors[0];
        assert_eq!(reuse.grant_type.as_deref(), Some("refresh_token"));
        assert_eq!((reuse.status, reuse.error.as_str()), (400, "invalid_grant"));
        assert_eq!(reuse.detail.as_deref(), Some("refresh token already used"));
    })
    .await;
}

// The same suite's external-server path (a real Keycloak by URL), pointed at this server so
// that it is tested here too; see `external.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_external_server_path_works_against_oidc_provider() {
    scenario(Lifetimes::default(), async |server| {
        let vars = [
            ("INTEROP_TOKEN_URL", server.urls.token.clone()),
            ("INTEROP_API_URL", server.api("/me")),
            ("INTEROP_CLIENT_ID", "interop-post".to_owned()),
            (
                "INTEROP_CLIENT_SECRET",
                server.client_secret(ClientKind::Post).to_owned(),
            ),
            ("INTEROP_USERNAME", server.username.clone()),
            ("INTEROP_PASSWORD", server.password.clone()),
            ("INTEROP_SCOPE", server::SCOPE.to_owned()),
        ];
        let lookup = |name: &str| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.clone())
        };
        let target = external::Target::from_lookup(lookup).unwrap().unwrap();
        let report = external::run(&target).await.unwrap();
        let stats = server.stats().await;
        assert_eq!(stats.token("password", "ok"), 1, "{}", show(server, &stats));
        assert_eq!(stats.token("refresh_token", "ok"), 1);
        assert_eq!(stats.token("password", "invalid_grant"), 1);
        assert_eq!(stats.token("password", "invalid_client"), 1);
        assert_eq!(stats.token_requests, 4);
        assert_eq!(report.generations, (1, 2));
        assert!(report.has_refresh_token);
        assert_eq!(report.wrong_password_code.as_deref(), Some("invalid_grant"));
        assert_eq!(report.wrong_secret_code.as_deref(), Some("invalid_client"));
        assert_eq!(stats.api_ok, 2);

        assert_eq!(
            report.revoked_refresh_code, None,
            "no revocation endpoint given"
        );

        // By issuer (discovery), with client_secret_basic, and logging out at the provider.
        let basic_secret = server.client_secret(ClientKind::Basic).to_owned();
        let by_issuer = |name: &str| match name {
            "INTEROP_TOKEN_URL" => None,
            "INTEROP_ISSUER" => Some(server.urls.issuer.clone()),
            "INTEROP_CLIENT_ID" => Some("interop-basic".to_owned()),
            "INTEROP_CLIENT_SECRET" => Some(basic_secret.clone()),
            "INTEROP_CLIENT_AUTH" => Some("client_secret_basic".to_owned()),
            other => lookup(other),
        };
        let target = external::Target::from_lookup(by_issuer).unwrap().unwrap();
        let report = external::run(&target).await.unwrap();
        let after = server.stats().await;
        assert_eq!(
            report.revoked_refresh_code.as_deref(),
            Some("invalid_grant")
        );
        assert_eq!(report.wrong_secret_code.as_deref(), Some("invalid_client"));
        assert_eq!(after.revocations, 1, "{}", show(server, &after));
        // login, refresh, login, refused refresh, wrong password, wrong secret.
        assert_eq!(after.token_requests - stats.token_requests, 6);
        assert_eq!(
            after.client_auth("client_secret_basic"),
            7,
            "six token requests, one revocation"
        );

        // Missing variables are named, not guessed.
        let error = external::Target::from_lookup(|name| {
            (name == "INTEROP_TOKEN_URL").then(|| server.urls.token.clone())
        })
        .err()
        .expect("missing variables are an error");
        assert!(error.contains("INTEROP_CLIENT_ID"), "{error}");
    })
    .await;
}

// A real identity provider given by environment variables (a Keycloak realm, say); skipped with
// a message when `INTEROP_TOKEN_URL` is not set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_identity_provider_from_the_environment() {
    let target = match external::Target::from_lookup(|name| std::env::var(name).ok()) {
        Ok(Some(target)) => target,
        Ok(None) => {
            let _ = writeln!(
                std::io::stderr(),
                "interop: skipped: INTEROP_TOKEN_URL is not set (see interop/README.md)"
            );
            return;
        }
        Err(error) => panic!("{error}"),
    };
    let report = bounded(external::run(&target)).await.unwrap();
    eprintln!("{report:#?}");
}

// Not a test of the crate: what the scenarios of `any_idp.rs` and `dpop.rs` rely on is in
// place, as oidc-provider itself publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_offers_what_the_awaited_features_need() {
    scenario(Lifetimes::default(), async |server| {
        let metadata = server.discovery().await;
        assert_eq!(metadata["issuer"], server.urls.issuer.as_str());
        assert_eq!(metadata["token_endpoint"], server.urls.token.as_str());
        assert_eq!(
            metadata["revocation_endpoint"],
            server.urls.revocation.as_str()
        );
        let methods = metadata["token_endpoint_auth_methods_supported"].to_string();
        for method in [
            "client_secret_basic",
            "client_secret_post",
            "private_key_jwt",
            "none",
        ] {
            assert!(methods.contains(method), "{method}: {methods}");
        }
        let grants = metadata["grant_types_supported"].to_string();
        for grant in ["password", "refresh_token", "client_credentials"] {
            assert!(grants.contains(grant), "{grant}: {grants}");
        }
        assert!(metadata["dpop_signing_alg_values_supported"].is_array());
    })
    .await;
}
