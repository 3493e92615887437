//! Issue 13 against oidc-provider: client authentication by the client's registration
//! (`client_secret_basic` enforced, `private_key_jwt` with keys made at test time), discovery,
//! and logout at the provider (revocation, then the revoked refresh token is refused and the
//! refresher logs in again). Every count is the server's.

use http::{Request, StatusCode};
use http_body_util::Full;
use tower::ServiceExt;
use tower_auth_refresh::oauth2::{
    ClientAuthMethod, ErrorKind, OAuth2Refresher, OAuth2RefresherBuilder,
};
use tower_auth_refresh::{AuthLayer, RevokeRequest, TokenSet};

use super::server::{ClientKind, Interop, Lifetimes, SCOPE};
use super::{get, scenario, session, show};

/// The API's answer to `tokens`' access token, sent by hand.
async fn api_status(server: &Interop, tokens: &TokenSet) -> StatusCode {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let request = Request::get(server.api("/me"))
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", tokens.access_token().secret()),
        )
        .body(Full::default())
        .unwrap();
    client.oneshot(request).await.unwrap().status()
}

/// Through the layer: a login, then two forced refreshes, each followed by an API call.
async fn login_and_refresh_twice(server: &Interop, builder: OAuth2RefresherBuilder) {
    let session = session(AuthLayer::new(builder.build_http().unwrap()));
    let url = server.api("/me");
    get(&session.service, &url).await.unwrap();
    for _ in 0..2 {
        session.handle.refresh().await.unwrap();
        get(&session.service, &url).await.unwrap();
    }
}

// client_secret_basic, as the client's registration demands (the server refuses it anything
// else): a login and two rotated refreshes through the layer, with a secret that needs the
// form-urlencoding RFC 6749 §2.3.1 asks for; the default client_secret_post is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_basic_as_the_registration_enforces() {
    scenario(Lifetimes::default(), async |server| {
        let basic = server
            .refresher(ClientKind::Basic)
            .client_auth(ClientAuthMethod::ClientSecretBasic);
        login_and_refresh_twice(server, basic).await;
        let stats = server.stats().await;
        assert_eq!(stats.token("password", "ok"), 1, "{}", show(server, &stats));
        assert_eq!(stats.token("refresh_token", "ok"), 2);
        assert_eq!(stats.client_auth("client_secret_basic"), 3);
        assert_eq!((stats.reuse_detected, stats.api_ok), (0, 3));

        // The same client with the default method: refused, typed, asked once.
        let post = server.refresher(ClientKind::Basic).build_http().unwrap();
        let error = post.login().await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ClientRejected, "{error}");
        let stats = server.stats().await;
        assert_eq!(stats.token("password", "invalid_client"), 1);
        assert_eq!(stats.client_auth("client_secret_post"), 1);
        eprintln!(
            "client_secret_basic: {} token requests, {} with Basic",
            stats.token_requests,
            stats.client_auth("client_secret_basic")
        );
    })
    .await;
}

// private_key_jwt (RFC 7523) with keys made at test time: an ES256 key from PKCS#8 PEM and an
// RS256 key from a private JWK, each a login and two refreshes. oidc-provider checks the
// signature against the registered JWKS, `aud`, `exp`, and refuses a `jti` seen before, so six
// accepted assertions are six fresh ones.
#[cfg(feature = "private-key-jwt")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_with_es256_and_rs256() {
    use tower_auth_refresh::oauth2::{ClientKey, SigningAlgorithm};
    scenario(Lifetimes::default(), async |server| {
        let keys = [
            ClientKey::from_pem(server.ec_private_pem.as_bytes()).unwrap(),
            ClientKey::from_jwk(&server.rsa_private_jwk).unwrap(),
        ];
        assert_eq!(
            keys.each_ref().map(ClientKey::algorithm),
            [SigningAlgorithm::Es256, SigningAlgorithm::Rs256]
        );
        for key in keys {
            let builder = server.refresher(ClientKind::PrivateKeyJwt).client_key(key);
            login_and_refresh_twice(server, builder).await;
        }
        let stats = server.stats().await;
        assert_eq!(stats.token("password", "ok"), 2, "{}", show(server, &stats));
        assert_eq!(stats.token("refresh_token", "ok"), 4);
        assert_eq!(stats.client_auth("private_key_jwt"), 6);
        assert_eq!(stats.token_requests, 6, "no refused assertion");
        assert_eq!((stats.reuse_detected, stats.api_ok), (0, 6));
    })
    .await;
}

// Discovery: the token and revocation endpoints from oidc-provider's own document, fetched
// over the client the refresher then uses; a document for another issuer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_token_and_revocation_endpoints() {
    scenario(Lifetimes::default(), async |server| {
        let refresher = OAuth2Refresher::issuer(&server.urls.issuer, "interop-post")
            .client_secret(server.client_secret(ClientKind::Post))
            .password(&server.username, server.password.as_str())
            .scope(SCOPE)
            .discover_http()
            .await
            .unwrap();
        let tokens = refresher.login().await.unwrap();
        let tokens = refresher.refresh(&tokens).await.unwrap();
        assert_eq!(api_status(server, &tokens).await, StatusCode::OK);
        refresher.revoke(&tokens).await.unwrap();
        let stats = server.stats().await;
        assert_eq!(stats.token("password", "ok"), 1, "{}", show(server, &stats));
        assert_eq!(stats.token("refresh_token", "ok"), 1);
        assert_eq!((stats.revocation_requests, stats.revocations), (1, 1));
        // oidc-provider lists client_secret_post; the refresher took it, as without discovery.
        assert_eq!(stats.client_auth("client_secret_post"), 3);

        // The client_secret_basic client says so; discovery keeps the user's choice.
        OAuth2Refresher::issuer(&server.urls.issuer, "interop-basic")
            .client_secret(server.client_secret(ClientKind::Basic))
            .client_auth(ClientAuthMethod::ClientSecretBasic)
            .password(&server.username, server.password.as_str())
            .scope(SCOPE)
            .discover_http()
            .await
            .unwrap()
            .login()
            .await
            .unwrap();

        let other_name = server.urls.issuer.replace("127.0.0.1", "localhost");
        let error = OAuth2Refresher::issuer(other_name, "interop-post")
            .discover_http()
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
        assert!(error.to_string().contains("another issuer"), "{error}");
    })
    .await;
}

// Logout at the provider: revoking the refresh token (RFC 7009) ends the grant at
// oidc-provider, its access token included; a session that still holds those tokens sees a
// 401, its refresh with the revoked refresh token is refused, and the refresher logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_refresh_token_is_refused_and_leads_to_a_login() {
    scenario(
        Lifetimes {
            access: 30,
            ..Lifetimes::default()
        },
        async |server| {
            let refresher = server.refresher(ClientKind::Post).build_http().unwrap();
            let tokens = refresher.login().await.unwrap();
            assert_eq!(api_status(server, &tokens).await, StatusCode::OK);
            // Through the revoker's service interface, as `AuthHandle::logout` will call it.
            refresher
                .revoker()
                .oneshot(RevokeRequest::new(tokens.clone()))
                .await
                .unwrap();
            let stats = server.stats().await;
            assert_eq!(
                (stats.revocations, stats.grants_revoked),
                (1, 1),
                "{}",
                show(server, &stats)
            );
            assert_eq!(api_status(server, &tokens).await, StatusCode::UNAUTHORIZED);
            // RFC 7009 §2.2: revoking a token the server no longer knows is a success.
            refresher.revoke(&tokens).await.unwrap();

            // A session still holding the revoked tokens: 401, refused refresh, new login.
            let session = session(AuthLayer::new(refresher.clone()));
            session.handle.set_tokens(tokens.clone()).await.unwrap();
            get(&session.service, &server.api("/me")).await.unwrap();
            let stats = server.stats().await;
            assert_eq!(
                stats.token("refresh_token", "invalid_grant"),
                1,
                "{}",
                show(server, &stats)
            );
            assert_eq!(stats.token("password", "ok"), 2);
            let refused = stats.token_errors.last().unwrap();
            assert_eq!(refused.detail.as_deref(), Some("refresh token not found"));
            assert_eq!(stats.revocation_requests, 2);

            // Without a refresh token, the access token is what gets revoked.
            let fresh = refresher.login().await.unwrap();
            let access_only = TokenSet::new(fresh.access_token().secret());
            refresher.revoke(&access_only).await.unwrap();
            assert_eq!(
                api_status(server, &access_only).await,
                StatusCode::UNAUTHORIZED
            );
            eprintln!(
                "revocation: {} requests, {} revoked, {} grants revoked",
                stats.revocation_requests, stats.revocations, stats.grants_revoked
            );
        },
    )
    .await;
}

// A revocation endpoint that refuses the client: the usual classification.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_with_a_wrong_secret_is_client_rejected() {
    scenario(Lifetimes::default(), async |server| {
        let refresher = server.refresher(ClientKind::Post).build_http().unwrap();
        let tokens = refresher.login().await.unwrap();
        let wrong = server
            .refresher(ClientKind::Post)
            .client_secret("not the secret")
            .build_http()
            .unwrap();
        let error = wrong.revoke(&tokens).await.unwrap_err();
        let stats = server.stats().await;
        assert_eq!(
            error.kind(),
            ErrorKind::ClientRejected,
            "{error}: {}",
            show(server, &stats)
        );
        assert_eq!(error.error_code(), Some("invalid_client"));
        assert_eq!(stats.revocations, 0);
        assert_eq!(api_status(server, &tokens).await, StatusCode::OK);
    })
    .await;
}
