//! Issue 13, "Any identity provider", against the loopback Keycloak-like provider over real
//! sockets: client authentication methods (1), extra parameters and headers (2), discovery (3)
//! and logout at the provider (4). Every count is the provider's own.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneSyncService;
use tower::{ServiceExt, service_fn};
use tower_auth_refresh::oauth2::{
    ClientAuthMethod, ErrorKind, HttpClient, OAuth2Refresher, OAuth2Revoker,
};
use tower_auth_refresh::test_util::{Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, RevokeRequest, TokenSet};

async fn provider(config: ProviderConfig) -> (IdentityProvider, Api) {
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    (idp, api)
}

fn http() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Whether the API accepts `tokens`' access token.
async fn api_accepts(api: &Api, tokens: &TokenSet) -> bool {
    let request = Request::get(api.url("/user/me"))
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", tokens.access_token().secret()),
        )
        .body(Full::<Bytes>::default())
        .unwrap();
    http().oneshot(request).await.unwrap().status() == StatusCode::OK
}

/// What the token endpoint was sent: each request's headers and form.
type Seen = Arc<Mutex<Vec<(http::HeaderMap, Vec<(String, String)>)>>>;

/// A client that records every request before sending it.
fn recording(
    seen: Seen,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = tower::BoxError,
    Future = impl Send,
> + Clone
+ Send
+ Sync
+ 'static {
    service_fn(move |request: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            let form = serde_urlencoded::from_bytes(&body).unwrap_or_default();
            seen.lock().unwrap().push((parts.headers.clone(), form));
            let request = Request::from_parts(parts, Full::new(body));
            let response = http().oneshot(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, tower::BoxError>(Response::from_parts(parts, Full::new(body)))
        }
    })
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

// 1. client_secret_basic: the id and secret are form-urlencoded before base64 (RFC 6749
// §2.3.1), so a secret with ':', '+', '%' and a space is accepted; no secret in the body.
#[tokio::test]
async fn client_secret_basic_survives_special_characters() {
    let secret = "s3cr:t+50% off";
    let (idp, _api) = provider(ProviderConfig::default().client("client:one", secret)).await;
    let seen = Seen::default();
    let refresher = idp
        .refresher_builder()
        .client_auth(ClientAuthMethod::ClientSecretBasic)
        .build(recording(seen.clone()))
        .unwrap();
    let tokens = refresher.login().await.unwrap();
    refresher.refresh(&tokens).await.unwrap();
    let stats = idp.stats();
    assert_eq!((stats.client_auth_basic, stats.client_auth_post), (2, 0));
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
    for (headers, form) in seen.lock().unwrap().iter() {
        assert!(headers[http::header::AUTHORIZATION].is_sensitive());
        assert_eq!(field(form, "client_secret"), None);
        assert_eq!(field(form, "client_id"), None);
    }
    // The default stays client_secret_post.
    idp.refresher_builder()
        .build_http()
        .unwrap()
        .login()
        .await
        .unwrap();
    assert_eq!(idp.stats().client_auth_post, 1);
}

// 1. A public client (`none`): its id only, no secret anywhere.
#[tokio::test]
async fn a_public_client_sends_only_its_id() {
    let (idp, api) = provider(ProviderConfig::default().public_client(true)).await;
    let seen = Seen::default();
    let refresher = idp
        .refresher_builder()
        .build(recording(seen.clone()))
        .unwrap();
    let tokens = refresher.login().await.unwrap();
    let tokens = refresher.refresh(&tokens).await.unwrap();
    assert!(api_accepts(&api, &tokens).await);
    assert_eq!(idp.stats().client_auth_none, 2);
    for (headers, form) in seen.lock().unwrap().iter() {
        assert!(!headers.contains_key(http::header::AUTHORIZATION));
        assert_eq!(field(form, "client_id"), Some("personal-client-test"));
        assert_eq!(field(form, "client_secret"), None);
    }
}

// 2. Extra form parameters per grant and extra headers on every token request, without the
// user rewriting form bodies.
#[tokio::test]
async fn extra_parameters_and_headers_reach_the_token_endpoint() {
    let (idp, _api) = provider(ProviderConfig::default()).await;
    let seen = Seen::default();
    let tenant = HeaderName::from_static("x-tenant");
    let refresher = idp
        .refresher_builder()
        .scope("email")
        .refresh_scope("email")
        .login_param("audience", "https://api.example.com/")
        .refresh_param("resource", "urn:example:api")
        .token_param("ui_locales", "fr")
        .token_request_header(tenant.clone(), HeaderValue::from_static("tenant-7"))
        .build(recording(seen.clone()))
        .unwrap();
    let tokens = refresher.login().await.unwrap();
    refresher.refresh(&tokens).await.unwrap();
    let seen = seen.lock().unwrap();
    let (login_headers, login) = &seen[0];
    let (refresh_headers, refresh) = &seen[1];
    assert_eq!(field(login, "audience"), Some("https://api.example.com/"));
    assert_eq!(field(login, "resource"), None);
    assert_eq!(field(refresh, "resource"), Some("urn:example:api"));
    assert_eq!(field(refresh, "audience"), None);
    assert_eq!(field(login, "ui_locales"), Some("fr"));
    assert_eq!(field(refresh, "ui_locales"), Some("fr"));
    assert_eq!(
        (field(login, "scope"), field(refresh, "scope")),
        (Some("email"), Some("email"))
    );
    assert_eq!(login_headers[&tenant], "tenant-7");
    assert_eq!(refresh_headers[&tenant], "tenant-7");
    assert_eq!(idp.stats().refresh_grants, 1, "the provider took them");
}

// 3. Discovery: the endpoints from the document, a method the server lists, over the same
// client; RFC 8414's place when OpenID Connect's is not served.
#[tokio::test]
async fn discovery_finds_the_endpoints_and_a_supported_method() {
    let (idp, api) = provider(ProviderConfig::default()).await;
    let config = idp.config().clone();
    let seen = Seen::default();
    let refresher = OAuth2Refresher::issuer(idp.issuer(), config.client_id())
        .client_secret(config.client_secret())
        .password(config.username(), config.password())
        .discover(recording(seen.clone()))
        .await
        .unwrap();
    let tokens = refresher.login().await.unwrap();
    assert!(api_accepts(&api, &tokens).await);
    // The revocation endpoint came from the document too.
    refresher.revoke(&tokens).await.unwrap();
    let stats = idp.stats();
    assert_eq!(stats.discovery_requests, 1);
    assert_eq!((stats.client_auth_post, stats.revocations), (2, 1));
    assert_eq!(
        seen.lock().unwrap().len(),
        3,
        "discovery, login, revocation: one client"
    );

    // A server that lists only client_secret_basic gets it; RFC 8414's place is found.
    let (basic_only, _) = provider(
        ProviderConfig::default()
            .auth_methods(&["client_secret_basic"])
            .openid_configuration(false),
    )
    .await;
    let config = basic_only.config();
    OAuth2Refresher::issuer(basic_only.issuer(), config.client_id())
        .client_secret(config.client_secret())
        .password(config.username(), config.password())
        .discover_http()
        .await
        .unwrap()
        .login()
        .await
        .unwrap();
    let stats = basic_only.stats();
    assert_eq!((stats.discovery_requests, stats.client_auth_basic), (1, 1));

    // A server that lists no secret method: a typed error, not a guess.
    let (jwt_only, _) =
        provider(ProviderConfig::default().auth_methods(&["private_key_jwt"])).await;
    let error = OAuth2Refresher::issuer(jwt_only.issuer(), "personal-client-test")
        .client_secret("test-client-secret")
        .discover_http()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
}

// 3. The document must be the issuer's own, and the issuer https (or on this machine).
#[tokio::test]
async fn discovery_refuses_another_issuer_and_plain_http() {
    let (idp, _api) = provider(ProviderConfig::default()).await;
    // The same server under another name: its document names 127.0.0.1.
    let other_name = idp.issuer().replace("127.0.0.1", "localhost");
    let mismatch = OAuth2Refresher::issuer(other_name, "personal-client-test")
        .discover_http()
        .await
        .unwrap_err();
    assert_eq!(mismatch.kind(), ErrorKind::Config);
    assert!(
        mismatch.to_string().contains("another issuer"),
        "{mismatch}"
    );
    let missing = OAuth2Refresher::issuer(format!("{}/nothing-here", idp.issuer()), "c")
        .discover_http()
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Config);
    assert_eq!(missing.status(), Some(StatusCode::NOT_FOUND));
    // Refused before anything is sent: no name is even looked up.
    let plain = OAuth2Refresher::issuer("http://idp.example/realms/demo", "c")
        .discover_http()
        .await
        .unwrap_err();
    assert_eq!(plain.kind(), ErrorKind::Config);
    assert!(std::error::Error::source(&plain).is_none());
    assert_eq!(idp.stats().discovery_requests, 1, "only the mismatched one");
}

// 4. Revocation (RFC 7009): the refresh token's session ends at the provider; the next
// refresh is refused and the refresher logs in again; a second revocation is a success.
#[tokio::test]
async fn a_revoked_session_is_refused_and_leads_to_a_login() {
    let (idp, api) = provider(ProviderConfig::default()).await;
    let seen = Seen::default();
    let refresher = idp
        .refresher_builder()
        .build(recording(seen.clone()))
        .unwrap();
    let layer = AuthLayer::new(refresher.clone());
    let handle = layer.handle();
    let state = handle.token().await.unwrap();
    let tokens = refresher.login().await.unwrap();
    refresher.revoke(&tokens).await.unwrap();
    {
        let seen = seen.lock().unwrap();
        let (_, form) = seen.last().unwrap();
        assert_eq!(field(form, "token_type_hint"), Some("refresh_token"));
        assert_eq!(
            field(form, "token"),
            tokens.refresh_token().map(|t| t.secret())
        );
    }
    assert!(
        !api_accepts(&api, &tokens).await,
        "the session's access token died with it"
    );
    let error = refresher.refresh(&tokens).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RefreshTokenRejected);
    assert_eq!(error.error_description(), Some("Session not active"));
    refresher.revoke(&tokens).await.unwrap();
    assert_eq!(
        idp.stats().revocations,
        1,
        "the second one found nothing to revoke"
    );

    // Through the cache: a refresh after the provider-side logout is a new login.
    assert_eq!(state.generation(), 1);
    handle.set_tokens(tokens).await.unwrap();
    handle.refresh().await.unwrap();
    let stats = idp.stats();
    assert_eq!(
        stats.password_grants, 3,
        "two logins above, one after the refusal"
    );
}

// 4. Without a refresh token the access token is revoked; a service shape that a layer's
// logout can hold.
#[tokio::test]
async fn the_revoker_is_a_clonable_service_and_revokes_access_tokens() {
    let (idp, api) = provider(ProviderConfig::default()).await;
    let refresher = idp.refresher_builder().build_http().unwrap();
    let revoker: OAuth2Revoker<HttpClient> = refresher.revoker();
    let boxed: BoxCloneSyncService<RevokeRequest, (), tower_auth_refresh::oauth2::Error> =
        BoxCloneSyncService::new(revoker.clone());
    let login = refresher.login().await.unwrap();
    let access_only = TokenSet::new(login.access_token().secret());
    boxed
        .oneshot(RevokeRequest::new(access_only.clone()))
        .await
        .unwrap();
    assert!(!api_accepts(&api, &access_only).await);
    // The refresh token still works: only the access token was revoked.
    let refreshed = refresher.refresh(&login).await.unwrap();
    assert!(api_accepts(&api, &refreshed).await);
    assert_eq!(idp.stats().revocations, 1);
}

// 4. Failures of the revocation endpoint carry the usual classification.
#[tokio::test]
async fn revocation_failures_are_typed() {
    let (idp, _api) = provider(ProviderConfig::default()).await;
    let refresher = idp.refresher_builder().build_http().unwrap();
    let tokens = refresher.login().await.unwrap();
    idp.push_revocation_fault(Fault::service_unavailable_html());
    idp.push_revocation_fault(Fault::json(
        StatusCode::BAD_REQUEST,
        r#"{"error":"unsupported_token_type","error_description":"Unsupported token type"}"#,
    ));
    let unavailable = refresher.revoke(&tokens).await.unwrap_err();
    assert_eq!(unavailable.kind(), ErrorKind::Transient);
    assert!(unavailable.is_transient());
    assert_eq!(unavailable.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(unavailable.grant_type(), None);
    let unsupported = refresher.revoke(&tokens).await.unwrap_err();
    assert_eq!(unsupported.kind(), ErrorKind::Rejected);
    assert_eq!(unsupported.error_code(), Some("unsupported_token_type"));
    assert_eq!(
        unsupported.to_string(),
        r#"the revocation endpoint refused the request (HTTP 400): unsupported_token_type "Unsupported token type""#
    );
    let wrong_secret = idp
        .refresher_builder()
        .client_secret("wrong")
        .build_http()
        .unwrap();
    let refused = wrong_secret.revoke(&tokens).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ClientRejected);
    let nowhere = OAuth2Refresher::builder(idp.token_url(), "personal-client-test")
        .build_http()
        .unwrap();
    assert_eq!(
        nowhere.revoke(&tokens).await.unwrap_err().kind(),
        ErrorKind::Config
    );
    assert_eq!(idp.stats().revocations, 0);
    // The session survived all of it.
    refresher.refresh(&tokens).await.unwrap();
}

// 4. Keycloak's logout endpoint with the refresh token: 204, the session ends; a refresh token
// it does not know is refused with Keycloak's words.
#[tokio::test]
async fn keycloaks_logout_endpoint_ends_the_session() {
    let (idp, api) = provider(ProviderConfig::default()).await;
    let refresher = idp
        .refresher_builder()
        .logout_url(idp.logout_url())
        .build_http()
        .unwrap();
    let tokens = refresher.login().await.unwrap();
    refresher.revoke(&tokens).await.unwrap();
    let stats = idp.stats();
    assert_eq!((stats.logouts, stats.revocations), (1, 0));
    assert!(!api_accepts(&api, &tokens).await);
    let error = refresher.refresh(&tokens).await.unwrap_err();
    assert_eq!(error.error_description(), Some("Session not active"));

    let garbled = TokenSet::new("a").with_refresh_token("not-a-refresh-token");
    let error = refresher.revoke(&garbled).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RefreshTokenRejected);
    assert_eq!(error.error_description(), Some("Invalid refresh token"));
    assert!(
        error.to_string().starts_with("the logout endpoint refused"),
        "{error}"
    );
}

/// Key pairs made now, as `ClientKey`s and the public JWKs a provider registers.
#[cfg(feature = "private-key-jwt")]
mod keys {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair as RsaPair, KeySize};
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use tower_auth_refresh::oauth2::ClientKey;

    pub fn p256() -> (ClientKey, String) {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = pair.public_key().as_ref();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..]),
        });
        (
            ClientKey::from_der(pkcs8.as_ref()).unwrap(),
            jwk.to_string(),
        )
    }

    pub fn rsa() -> (ClientKey, String) {
        let pair = RsaPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = AsDer::<Pkcs8V1Der<'_>>::as_der(&pair).unwrap();
        let public = pair.public_key();
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
            "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
        });
        (
            ClientKey::from_der(pkcs8.as_ref()).unwrap(),
            jwk.to_string(),
        )
    }
}

// 1. private_key_jwt at the loopback provider (Keycloak's "Signed JWT"): ES256 and RS256
// assertions on logins, refreshes and revocations; a replayed assertion and another key are
// refused.
#[cfg(feature = "private-key-jwt")]
#[tokio::test]
async fn private_key_jwt_signs_every_request_with_a_fresh_assertion() {
    for (key, jwk) in [keys::p256(), keys::rsa()] {
        let (idp, api) = provider(ProviderConfig::default().client_jwk(jwk)).await;
        let seen = Seen::default();
        let config = idp.config();
        let refresher = OAuth2Refresher::builder(idp.token_url(), config.client_id())
            .client_key(key)
            .password(config.username(), config.password())
            .revocation_url(idp.revocation_url())
            .build(recording(seen.clone()))
            .unwrap();
        let tokens = refresher.login().await.unwrap();
        let tokens = refresher.refresh(&tokens).await.unwrap();
        assert!(api_accepts(&api, &tokens).await);
        refresher.revoke(&tokens).await.unwrap();
        let stats = idp.stats();
        assert_eq!(stats.client_auth_jwt, 3);
        assert_eq!((stats.client_auth_post, stats.revocations), (0, 1));

        // The first request's form, sent again: its assertion's jti was used.
        let (_, form) = seen.lock().unwrap()[0].clone();
        let assertions: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, form)| field(form, "client_assertion").map(str::to_owned))
            .collect();
        assert_eq!(assertions.len(), 3);
        assert!(assertions[0] != assertions[1] && assertions[1] != assertions[2]);
        let replay = Request::post(idp.token_url())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::from(serde_urlencoded::to_string(&form).unwrap()))
            .unwrap();
        let replayed = http().oneshot(replay).await.unwrap();
        assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
        let body = replayed.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("Token reuse detected"),
            "{body:?}"
        );
    }
    // A key the provider does not hold for the client.
    let (_, registered) = keys::p256();
    let (other, _) = keys::p256();
    let (idp, _api) = provider(ProviderConfig::default().client_jwk(registered)).await;
    let error = OAuth2Refresher::builder(idp.token_url(), idp.config().client_id())
        .client_key(other)
        .client_credentials()
        .build_http()
        .unwrap()
        .login()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ClientRejected, "{error}");
    assert!(
        error
            .error_description()
            .is_some_and(|d| d.contains("Signature")),
        "{error}"
    );
}
