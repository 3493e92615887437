//! Issue 11, "The OAuth2 refresher never throws a session away": which token-endpoint answers
//! end a session and which must not, against the loopback identity provider over real sockets.
//!
//! Once the server has answered a refresh grant, the old refresh token may be spent: a refused
//! answer still keeps its rotated refresh token (1), only a real OAuth2 refusal is terminal
//! (2), a refresh does not re-send the login scope (3), and errors name the server's words (4).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::time::Instant;
use tower::Layer;
use tower_auth_refresh::oauth2::{self, ErrorKind, HttpClient};
use tower_auth_refresh::test_util::{AfterGrant, Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{
    AuthHandle, AuthLayer, AuthLayerBuilder, AuthService, RefreshError, TokenSet,
};

#[derive(Clone)]
struct Rig {
    idp: IdentityProvider,
    api: Api,
    handle: AuthHandle,
    service: AuthService<HttpClient>,
}

async fn start(
    config: ProviderConfig,
    refresher: impl FnOnce(oauth2::OAuth2RefresherBuilder) -> oauth2::OAuth2RefresherBuilder,
    layer: impl FnOnce(AuthLayerBuilder) -> AuthLayerBuilder,
) -> Rig {
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = layer(AuthLayer::builder(
        refresher(idp.refresher_builder()).build_http().unwrap(),
    ))
    .build();
    Rig {
        handle: layer.handle(),
        service: layer.layer(Client::builder(TokioExecutor::new()).build_http()),
        idp,
        api,
    }
}

impl Rig {
    async fn get(&self) -> Result<StatusCode, tower::BoxError> {
        let request = Request::get(self.api.url("/user/me")).body(Full::<Bytes>::default())?;
        let response = self.service.clone().oneshot(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// A default provider and a refresher for it.
async fn provider() -> (IdentityProvider, oauth2::OAuth2Refresher<HttpClient>) {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let refresher = idp.refresher_builder().build_http().unwrap();
    (idp, refresher)
}

fn oauth2_error(error: &RefreshError) -> &oauth2::Error {
    error
        .refresher_error()
        .and_then(|error| error.downcast_ref())
        .expect("an OAuth2 error")
}

// 1. A refresh answer the client refuses still rotated the refresh token at the server; the
// next attempt must present the new one, or reuse detection ends the session.
#[tokio::test]
async fn a_refused_answer_keeps_its_rotated_refresh_token() {
    let rig = start(ProviderConfig::default(), |b| b, |l| l).await;
    rig.handle.token().await.unwrap();
    for garble in [
        AfterGrant::Set("token_type", json!("mac")),
        AfterGrant::Remove("access_token"),
        AfterGrant::Set("access_token", json!(42)),
    ] {
        rig.idp.push_fault(Fault::AfterGrant(garble.clone()));
        let error = rig.handle.refresh().await.unwrap_err();
        let oauth = oauth2_error(&error);
        assert_eq!(oauth.kind(), ErrorKind::InvalidResponse, "{garble:?}");
        assert!(oauth.is_transient());
        rig.handle.refresh().await.unwrap();
    }
    let stats = rig.idp.stats();
    assert_eq!(
        stats.reuse_detected, 0,
        "a spent refresh token was presented"
    );
    assert_eq!(stats.invalid_grants, 0);
    assert_eq!(stats.password_grants, 1, "the session survived");
    assert_eq!(stats.refresh_grants, 6);
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
}

// 1. An implausible `expires_in` is no reason to refuse an answer (and throw its rotated refresh
// token away): it is ignored for the JWT `exp`; `token_type` is compared case-insensitively.
#[tokio::test]
async fn an_implausible_expires_in_is_ignored_for_the_jwt_exp() {
    let rig = start(
        ProviderConfig::default().access_lifetime(Duration::from_secs(120)),
        |b| b,
        |l| l,
    )
    .await;
    rig.handle.token().await.unwrap();
    for garble in [
        AfterGrant::Set("expires_in", json!(0)),
        AfterGrant::Set("expires_in", json!(-1)),
        AfterGrant::Set("expires_in", json!(1_000_000_000_000u64)),
        AfterGrant::Set("expires_in", json!("soon")),
        AfterGrant::Set("refresh_expires_in", json!(-5)),
        AfterGrant::Set("token_type", json!("bearer")),
    ] {
        rig.idp.push_fault(Fault::AfterGrant(garble.clone()));
        let state = rig.handle.refresh().await.unwrap_or_else(|error| {
            panic!("{garble:?}: {error}");
        });
        // The JWT's `exp` is in whole seconds of the wall clock.
        let left = state.expires_at() - Instant::now();
        assert!(
            left > Duration::from_secs(117) && left <= Duration::from_secs(121),
            "{garble:?}: {left:?}"
        );
    }
    assert_eq!(rig.idp.stats().reuse_detected, 0);
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
}

/// Pages that stand in front of token endpoints: none is a verdict on the credentials.
fn pages() -> Vec<(&'static str, Fault)> {
    vec![
        (
            "an ingress's 404 during a deploy",
            Fault::html(
                StatusCode::NOT_FOUND,
                "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
                 <center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n\
                 </body>\r\n</html>\r\n",
            ),
        ),
        (
            "a WAF's 403",
            Fault::html(
                StatusCode::FORBIDDEN,
                "<html><head><title>403 Forbidden</title></head><body><center>\
                 <h1>403 Forbidden</h1></center></body></html>",
            ),
        ),
        (
            "a proxy's 401",
            Fault::html(
                StatusCode::UNAUTHORIZED,
                "<!DOCTYPE html><html><head><title>401 Authorization Required</title></head>\
                 <body><h1>Authorization Required</h1></body></html>",
            ),
        ),
        ("an empty 400", Fault::empty(StatusCode::BAD_REQUEST)),
        (
            "a JSON 404 that is no OAuth2 error",
            Fault::json(StatusCode::NOT_FOUND, r#"{"message":"no Route matched"}"#),
        ),
    ]
}

// 2. An HTML page, an empty body or another non-OAuth answer at a 4xx is transient: the refresh
// and the login are retried after a backoff, and the session survives.
#[tokio::test]
async fn a_page_in_front_of_the_token_endpoint_is_transient() {
    let rig = start(
        ProviderConfig::default(),
        |b| b,
        |l| l.retry_backoff(Duration::from_millis(20), Duration::from_millis(40)),
    )
    .await;
    rig.handle.token().await.unwrap();
    for (what, page) in pages() {
        rig.idp.push_fault(page);
        let error = rig.handle.refresh().await.unwrap_err();
        let oauth = oauth2_error(&error);
        assert_eq!(oauth.kind(), ErrorKind::Transient, "{what}: {oauth}");
        assert!(oauth.is_transient(), "{what}");
        assert_eq!(oauth.error_code(), None, "{what}");
    }
    // After the backoff, a request logs nobody out and needs no new login.
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.handle.refresh().await.unwrap();
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    assert_eq!(rig.idp.stats().password_grants, 1);

    // A login that meets a page is retried as well, not given up for good: here at once, by
    // the flight, for the request that waits for it.
    let fresh = start(
        ProviderConfig::default(),
        |b| b,
        |l| l.retry_backoff(Duration::from_millis(20), Duration::from_millis(40)),
    )
    .await;
    fresh.idp.push_fault(pages().remove(1).1);
    assert_eq!(fresh.get().await.unwrap(), StatusCode::OK);
    assert_eq!(fresh.idp.stats().requests, 2, "the page, then the login");
    assert_eq!(fresh.idp.stats().password_grants, 1);
}

// 3. The login scope is not sent again on refresh (RFC 6749 §6): a server that granted fewer
// scopes than asked (§3.3) would refuse a refresh asking for them.
#[tokio::test]
async fn a_refresh_does_not_resend_the_login_scope() {
    let rig = start(
        ProviderConfig::default()
            .granted_scope("groups email")
            .access_lifetime(Duration::from_secs(1)),
        |b| b.scope("openid groups email profile"),
        |l| l,
    )
    .await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    }
    let stats = rig.idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 2));
}

// 4. `unauthorized_client` for a grant the client may not use is no client-credentials problem:
// the error says which grant, and the server's code and words.
#[tokio::test]
async fn a_grant_not_allowed_is_named_as_the_server_said() {
    let (idp, refresher) = provider().await;
    idp.push_fault(Fault::json(
        StatusCode::BAD_REQUEST,
        r#"{"error":"unauthorized_client","error_description":"Client not allowed for direct access grants"}"#,
    ));
    let error = refresher.login().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::GrantNotAllowed);
    assert_eq!(error.grant_type(), Some("password"));
    assert!(!error.is_transient());
    let shown = error.to_string();
    assert!(!shown.contains("client credentials"), "{shown}");
    assert!(shown.contains("password grant"), "{shown}");
    assert!(
        shown.contains(r#"unauthorized_client "Client not allowed for direct access grants""#),
        "{shown}"
    );

    // A login refused for a protocol reason is not shown as wrong credentials either.
    idp.push_fault(Fault::json(
        StatusCode::BAD_REQUEST,
        r#"{"error":"invalid_grant","error_description":"Account is not fully set up"}"#,
    ));
    let shown = refresher.login().await.unwrap_err().to_string();
    assert!(!shown.contains("login credentials"), "{shown}");
    assert!(
        shown
            .contains(r#"(password grant, HTTP 400): invalid_grant "Account is not fully set up""#),
        "{shown}"
    );
}

// 4. A server that echoes what it was sent does not get a secret into a message or a log.
#[tokio::test]
async fn a_secret_echoed_by_the_server_is_redacted() {
    let (idp, refresher) = provider().await;
    let password = idp.config().password().to_owned();
    let secret = idp.config().client_secret().to_owned();
    idp.push_fault(Fault::json(
        StatusCode::UNAUTHORIZED,
        &json!({
            "error": "invalid_grant",
            "error_description": format!("no user with password {password} for client secret {secret}"),
        })
        .to_string(),
    ));
    let error = refresher.login().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::CredentialsRejected);
    assert_eq!(
        error.error_description(),
        Some("no user with password <redacted> for client secret <redacted>")
    );
    let shown = format!("{error} {error:?}");
    assert!(
        !shown.contains(&password) && !shown.contains(&secret),
        "{shown}"
    );
}

// 1. The refresher's own recovery is safe without help from its caller: the error carries the
// rotated refresh token, and asked again with the spent one, the refresher presents the new one.
/// A provider with its refresher, logged in.
async fn logged_in() -> (
    IdentityProvider,
    oauth2::OAuth2Refresher<HttpClient>,
    TokenSet,
) {
    let (idp, refresher) = provider().await;
    let login = refresher.login().await.unwrap();
    (idp, refresher, login)
}

#[tokio::test]
async fn the_refresher_never_presents_a_token_it_saw_rotated_out() {
    let (idp, refresher, login) = logged_in().await;
    idp.push_fault(Fault::AfterGrant(AfterGrant::Remove("access_token")));
    let error = refresher.refresh(&login).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidResponse);
    let rotated = error
        .refresh_token()
        .expect("the rotated refresh token")
        .clone();
    assert_ne!(Some(&rotated), login.refresh_token());
    assert!(!format!("{error} {error:?}").contains(rotated.secret()));

    // The same, spent, token set again: the refresher presents `rotated`.
    let refreshed = refresher.refresh(&login).await.unwrap();
    assert!(idp.is_valid_access_token(refreshed.access_token().secret()));
    assert_ne!(refreshed.refresh_token(), Some(&rotated), "rotated again");
    let stats = idp.stats();
    assert_eq!((stats.reuse_detected, stats.invalid_grants), (0, 0));
}

// 1. What the cache does with `Error::refresh_token`: a caller that keeps it gets on, even
// through a refresher that never saw the refused answer.
#[tokio::test]
async fn a_caller_that_keeps_the_rotated_refresh_token_gets_on() {
    let (idp, refresher, login) = logged_in().await;
    idp.push_fault(Fault::AfterGrant(AfterGrant::Set(
        "token_type",
        json!("mac"),
    )));
    let error = refresher.refresh(&login).await.unwrap_err();
    let mut kept = login.clone();
    kept.set_refresh_token(error.refresh_token().cloned());
    let other = idp.refresher_builder().build_http().unwrap();
    other.refresh(&kept).await.unwrap();
    assert_eq!(idp.stats().reuse_detected, 0);
}

// 3. An explicit refresh scope beyond the grant is refused with `invalid_scope`: the refresher
// logs in again where it can, and says `ScopeRejected` where it cannot.
#[tokio::test]
async fn an_invalid_scope_refresh_falls_back_to_a_login() {
    let rig = start(
        ProviderConfig::default().granted_scope("groups email"),
        |b| b.scope("groups email").refresh_scope("profile"),
        |l| l,
    )
    .await;
    rig.handle.token().await.unwrap();
    rig.handle.refresh().await.unwrap();
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    let stats = rig.idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (2, 0));

    let config = rig.idp.config();
    let refresh_only = oauth2::OAuth2Refresher::builder(rig.idp.token_url(), config.client_id())
        .client_secret(config.client_secret())
        .refresh_scope("profile")
        .build_http()
        .unwrap();
    let login = rig.idp.refresher_builder().build_http().unwrap();
    let tokens = login.login().await.unwrap();
    let handle = AuthLayer::new(refresh_only).handle();
    handle.set_tokens(tokens).await.unwrap();
    let error = handle.refresh().await.unwrap_err();
    let oauth = oauth2_error(&error);
    assert_eq!(oauth.kind(), ErrorKind::ScopeRejected);
    assert_eq!(oauth.grant_type(), Some("refresh_token"));
    assert_eq!(
        oauth.error_description(),
        Some("refresh token missing requested scope")
    );
    assert!(!oauth.is_transient());
}

// The scenario: 64 workers through several refreshes, with reuse detection; one refresh answer
// in the middle is refused after the server rotated the refresh token. Nobody is logged out,
// no refresh token is presented twice, and once a refresh succeeds again no request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_rotating_answer_among_64_workers_loses_nothing() {
    let rig = start(
        ProviderConfig::default()
            .access_lifetime(Duration::from_secs(2))
            .reuse_detection(true),
        |b| b,
        |l| l.retry_backoff(Duration::from_millis(50), Duration::from_millis(100)),
    )
    .await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    let started = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let rig = rig.clone();
            tokio::spawn(async move {
                // (when, whether it succeeded) for every request.
                let mut outcomes = Vec::new();
                while started.elapsed() < Duration::from_secs(7) {
                    let ok = matches!(rig.get().await, Ok(StatusCode::OK));
                    outcomes.push((Instant::now(), ok));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcomes
            })
        })
        .collect();
    // After the first refresh, garble the next one's answer.
    while rig.idp.stats().refresh_grants < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    rig.idp
        .push_fault(Fault::AfterGrant(AfterGrant::Remove("access_token")));
    let mut refused_at = None;
    let mut recovered_at = None;
    while started.elapsed() < Duration::from_secs(7) {
        let stats = rig.idp.stats();
        if refused_at.is_none() && stats.faults_served == 1 {
            refused_at = Some(Instant::now());
        }
        if refused_at.is_some() && recovered_at.is_none() && stats.refresh_grants >= 3 {
            recovered_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.unwrap());
    }
    let recovered_at = recovered_at.expect("a refresh after the refused one");
    let failed_after = outcomes
        .iter()
        .filter(|(at, ok)| *at > recovered_at && !ok)
        .count();
    let failed = outcomes.iter().filter(|(_, ok)| !ok).count();
    let stats = rig.idp.stats();
    assert!(stats.refresh_grants >= 4, "{stats:?}");
    assert_eq!(stats.faults_served, 1);
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
    assert_eq!(stats.invalid_grants, 0, "{stats:?}");
    assert_eq!(stats.password_grants, 1, "nobody was logged out");
    assert_eq!(failed_after, 0, "{failed} of {} failed", outcomes.len());
    assert!(outcomes.len() > 1000, "{}", outcomes.len());
    assert_eq!(rig.api.stats().unauthorized, 0);
}
