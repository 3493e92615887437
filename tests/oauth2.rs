//! The OAuth2 refresher against the loopback Keycloak-like identity provider, over real
//! sockets.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::Layer;
use tower_auth_refresh::oauth2::{ErrorKind, HttpClient, OAuth2Refresher};
use tower_auth_refresh::test_util::{Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthHandle, AuthLayer, AuthService, RefreshError, TokenSet};

#[derive(Clone)]
struct Setup {
    idp: IdentityProvider,
    api: Api,
    handle: AuthHandle,
    service: AuthService<HttpClient>,
}

async fn setup(config: ProviderConfig) -> Setup {
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    let refresher = idp.refresher_builder().build_http().unwrap();
    let layer = AuthLayer::new(refresher);
    let handle = layer.handle();
    let client = Client::builder(TokioExecutor::new()).build_http();
    Setup {
        idp,
        api,
        handle,
        service: layer.layer(client),
    }
}

impl Setup {
    async fn get(&self, path: &str) -> Result<(StatusCode, String), tower::BoxError> {
        let request = Request::get(self.api.url(path)).body(Full::<Bytes>::default())?;
        let response = self.service.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

fn oauth2_error(error: &RefreshError) -> &tower_auth_refresh::oauth2::Error {
    error
        .refresher_error()
        .and_then(|error| error.downcast_ref())
        .expect("an OAuth2 error")
}

fn short_lived() -> ProviderConfig {
    ProviderConfig::default().access_lifetime(Duration::from_secs(1))
}

// 1. Login, refresh on expiry, rotation with reuse detection: 200 concurrent requests through
// 5 expiries, one login, five refreshes, no invalid_grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_concurrency_never_reuses_a_refresh_token() {
    let setup = setup(short_lived().reuse_detection(true)).await;
    for round in 0..=5 {
        if round > 0 {
            // Let the token expire.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let requests = (0..200).map(|_| {
            let setup = setup.clone();
            async move { setup.get("/user/me").await }
        });
        for outcome in futures_join_all(requests).await {
            let (status, body) = outcome.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    }
    let stats = setup.idp.stats();
    assert_eq!(stats.password_grants, 1);
    assert_eq!(stats.refresh_grants, 5);
    assert_eq!(stats.invalid_grants, 0);
    assert_eq!(stats.reuse_detected, 0);
    assert_eq!(setup.api.stats().unauthorized, 0);
}

/// Runs futures concurrently on the runtime and collects their outputs in order.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

// 2. A refresh answer with only an access token keeps the old refresh token.
#[tokio::test]
async fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
    let idp =
        IdentityProvider::start(ProviderConfig::default().include_refresh_token_on_refresh(false))
            .await
            .unwrap();
    let refresher = idp.refresher_builder().build_http().unwrap();
    let login = refresher.login().await.unwrap();
    let refreshed = refresher.refresh(&login).await.unwrap();
    assert_ne!(refreshed.access_token(), login.access_token());
    assert_eq!(refreshed.refresh_token(), login.refresh_token());
    // And it still works.
    let again = refresher.refresh(&refreshed).await.unwrap();
    assert!(idp.is_valid_access_token(again.access_token().secret()));
    assert_eq!(idp.stats().refresh_grants, 2);
}

#[tokio::test]
async fn a_rotated_refresh_token_replaces_the_old_one() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let refresher = idp.refresher_builder().build_http().unwrap();
    let login = refresher.login().await.unwrap();
    let refreshed = refresher.refresh(&login).await.unwrap();
    assert_ne!(refreshed.refresh_token(), login.refresh_token());
    refresher.refresh(&refreshed).await.unwrap();
    assert_eq!(idp.stats().invalid_grants, 0);
}

// 3. An expired refresh token: one new login, and the request succeeds.
#[tokio::test]
async fn an_expired_refresh_token_leads_to_one_login() {
    let setup = setup(ProviderConfig::default()).await;
    assert_eq!(setup.get("/user/me").await.unwrap().0, StatusCode::OK);
    setup.idp.expire_refresh_tokens();
    setup.idp.revoke_access_tokens();

    let (status, _) = setup.get("/user/me").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    let stats = setup.idp.stats();
    assert_eq!(stats.password_grants, 2);
    assert_eq!(stats.invalid_grants, 1, "the one refused refresh");
}

// A refresh token known to be expired is not even sent: straight to a login.
#[tokio::test]
async fn a_refresh_token_past_its_expiry_is_not_sent() {
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .access_lifetime(Duration::from_secs(1))
            .refresh_lifetime(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let refresher = idp
        .refresher_builder()
        .refresh_margin(Duration::from_secs(30))
        .build_http()
        .unwrap();
    let layer = AuthLayer::new(refresher);
    let handle = layer.handle();
    handle.token().await.unwrap();
    handle.refresh().await.unwrap();
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (2, 0));
    assert_eq!(stats.invalid_grants, 0);
}

// 4. Wrong password, wrong client secret: a typed terminal error with the server's words, and
// no retry loop.
#[tokio::test]
async fn rejected_credentials_are_a_typed_terminal_error() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let cases = [
        (
            idp.refresher_builder().password("reader", "wrong"),
            ErrorKind::CredentialsRejected,
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "Invalid user credentials",
        ),
        (
            idp.refresher_builder().client_secret("wrong"),
            ErrorKind::ClientRejected,
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Invalid client or Invalid client credentials",
        ),
    ];
    for (builder, kind, status, code, description) in cases {
        let handle = AuthLayer::new(builder.build_http().unwrap()).handle();
        let before = idp.stats().requests;
        let error = handle.token().await.unwrap_err();
        let oauth = oauth2_error(&error);
        assert_eq!(oauth.kind(), kind);
        assert_eq!(oauth.status(), Some(status));
        assert_eq!(oauth.error_code(), Some(code));
        assert_eq!(oauth.error_description(), Some(description));
        assert!(!oauth.is_transient());
        assert_eq!(idp.stats().requests - before, 1, "one attempt, no loop");
    }
    assert!(idp.stats().password_grants == 0);
}

#[tokio::test]
async fn the_legacy_invalid_client_is_client_rejected_too() {
    let idp = IdentityProvider::start(ProviderConfig::default().legacy_invalid_client(true))
        .await
        .unwrap();
    let refresher = idp
        .refresher_builder()
        .client_secret("wrong")
        .build_http()
        .unwrap();
    let error = refresher.login().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClientRejected);
    assert_eq!(error.error_code(), Some("invalid_client"));
}

// 5. Transient and malformed answers: typed errors, no panic, no new login.
#[tokio::test]
async fn faults_are_typed_and_never_cause_a_login() {
    let setup = setup(ProviderConfig::default()).await;
    setup.handle.token().await.unwrap();
    let huge = "x".repeat(1024 * 1024);
    let cases: Vec<(Fault, ErrorKind, Option<StatusCode>)> = vec![
        (
            Fault::service_unavailable_html(),
            ErrorKind::Transient,
            Some(StatusCode::SERVICE_UNAVAILABLE),
        ),
        (
            Fault::json(
                StatusCode::INTERNAL_SERVER_ERROR,
                r#"{"error":"server_error"}"#,
            ),
            ErrorKind::Transient,
            Some(StatusCode::INTERNAL_SERVER_ERROR),
        ),
        (
            Fault::too_many_requests(7),
            ErrorKind::Transient,
            Some(StatusCode::TOO_MANY_REQUESTS),
        ),
        (
            Fault::ResetMidBody,
            ErrorKind::Transient,
            Some(StatusCode::OK),
        ),
        (Fault::CloseConnection, ErrorKind::Transient, None),
        (
            Fault::json(StatusCode::OK, r#"{"access_token":"abc","expires_in":9"#),
            ErrorKind::InvalidResponse,
            Some(StatusCode::OK),
        ),
        (
            Fault::json(StatusCode::OK, &huge),
            ErrorKind::InvalidResponse,
            Some(StatusCode::OK),
        ),
        (
            Fault::json(StatusCode::SERVICE_UNAVAILABLE, &huge),
            ErrorKind::Transient,
            Some(StatusCode::SERVICE_UNAVAILABLE),
        ),
    ];
    for (fault, kind, status) in cases {
        let shown = format!("{fault:?}").chars().take(60).collect::<String>();
        setup.idp.push_fault(fault);
        let error = setup.handle.refresh().await.unwrap_err();
        let oauth = oauth2_error(&error);
        assert_eq!(oauth.kind(), kind, "{shown}: {oauth}");
        assert_eq!(oauth.status(), status, "{shown}");
        if oauth.status() == Some(StatusCode::TOO_MANY_REQUESTS) {
            assert_eq!(oauth.retry_after(), Some(Duration::from_secs(7)));
        }
    }
    assert_eq!(setup.idp.stats().password_grants, 1, "no new login");
    // The session is intact: the next refresh works.
    setup.handle.refresh().await.unwrap();
    assert_eq!(setup.get("/user/me").await.unwrap().0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_endpoint_that_refuses_connections_is_transient() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let refresher = OAuth2Refresher::builder(format!("http://{closed}/token"), "client")
        .password("reader", "secret")
        .build_http()
        .unwrap();
    let error = refresher.login().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert!(std::error::Error::source(&error).is_some());
}

// 6. No expires_in: the JWT exp is used; neither: the default lifetime.
#[tokio::test]
async fn expiry_comes_from_expires_in_then_the_jwt_then_the_default() {
    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .include_expires_in(false)
            .access_lifetime(Duration::from_secs(120)),
    )
    .await
    .unwrap();
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .default_lifetime(Duration::from_secs(900))
        .build();
    let handle = layer.handle();
    let left = handle.token().await.unwrap().expires_at() - Instant::now();
    // The JWT exp is in whole seconds of the wall clock.
    assert!(
        left > Duration::from_secs(117) && left <= Duration::from_secs(121),
        "{left:?}"
    );

    idp.push_fault(Fault::json(
        StatusCode::OK,
        r#"{"access_token":"opaque-token","token_type":"Bearer"}"#,
    ));
    let left = handle.refresh().await.unwrap().expires_at() - Instant::now();
    assert!(
        left > Duration::from_secs(899) && left <= Duration::from_secs(900),
        "{left:?}"
    );
}

// 7. A password with form-special and non-ASCII characters logs in.
#[tokio::test]
async fn a_password_with_special_characters_logs_in() {
    let idp = IdentityProvider::start(ProviderConfig::default().user("reader", "p&ss=w+rd é"))
        .await
        .unwrap();
    let tokens: TokenSet = idp
        .refresher_builder()
        .build_http()
        .unwrap()
        .login()
        .await
        .unwrap();
    assert!(idp.is_valid_access_token(tokens.access_token().secret()));
}

#[tokio::test]
async fn client_credentials_log_in_without_a_refresh_token() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let config = idp.config();
    let refresher = OAuth2Refresher::builder(idp.token_url(), config.client_id())
        .client_secret(config.client_secret())
        .client_credentials()
        .build_http()
        .unwrap();
    let handle = AuthLayer::new(refresher).handle();
    assert!(!handle.token().await.unwrap().has_refresh_token());
    // With no refresh token, a refresh is a new login.
    handle.refresh().await.unwrap();
    assert_eq!(idp.stats().client_credentials_grants, 2);
}

#[tokio::test]
async fn no_login_and_a_refused_refresh_token_is_a_typed_error() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
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
    let handle = AuthLayer::new(refresh_only).handle();
    handle.set_tokens(tokens).await.unwrap();
    idp.revoke_sessions();
    let error = handle.refresh().await.unwrap_err();
    let oauth = oauth2_error(&error);
    assert_eq!(oauth.kind(), ErrorKind::RefreshTokenRejected);
    assert_eq!(oauth.error_description(), Some("Session not active"));

    handle.clear().await.unwrap();
    let error = handle.token().await.unwrap_err();
    assert_eq!(oauth2_error(&error).kind(), ErrorKind::NoCredentials);
}
