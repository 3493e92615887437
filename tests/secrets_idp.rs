//! No secret of the issue 13 features in any log line, `Debug` or `Display`: client secrets
//! sent with HTTP Basic, private keys and the assertions they sign, the tokens a revocation
//! sends; and a server that echoes the whole request in its `error_description` gets none of
//! them into an error.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceExt, service_fn};
use tower_auth_refresh::oauth2::{ClientAuthMethod, OAuth2Refresher, ProviderMetadata};
use tower_auth_refresh::test_util::{Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, RevokeRequest, TokenSet};

#[path = "support/captured_log.rs"]
mod captured_log;
use captured_log::Captured;

const PASSWORD: &str = "pw-idp-S3cr3t&=+-5678";
const CLIENT_SECRET: &str = "cs-idp+/:%-0a1b2c";

/// Fails if any secret, or its form-encoded spelling, appears in `shown`.
fn assert_no_secret(shown: &str, secrets: &[String]) {
    for secret in secrets {
        let encoded = serde_urlencoded::to_string([("x", secret)]).unwrap();
        for needle in [secret.as_str(), &encoded[2..]] {
            assert!(
                !shown.contains(needle),
                "a secret ({} chars) appears in the output",
                needle.len()
            );
        }
    }
}

#[tokio::test]
async fn basic_discovery_revocation_and_logout_print_no_secret() {
    let (log, _guard) = Captured::trace();

    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .user("reader", PASSWORD)
            .client("client", CLIENT_SECRET),
    )
    .await
    .unwrap();
    let builder = OAuth2Refresher::issuer(idp.issuer(), "client")
        .client_secret(CLIENT_SECRET)
        .client_auth(ClientAuthMethod::ClientSecretBasic)
        .password("reader", PASSWORD)
        .logout_url(idp.logout_url());
    let builder_debug = format!("{builder:?}");
    let refresher = builder.discover_http().await.unwrap();
    let revoker = refresher.revoker();
    let handle = AuthLayer::new(refresher.clone()).handle();
    handle.token().await.unwrap();
    handle.refresh().await.unwrap();
    let tokens = refresher.login().await.unwrap();
    let refreshed = refresher.refresh(&tokens).await.unwrap();
    idp.push_revocation_fault(Fault::service_unavailable_html());
    let unavailable = revoker
        .clone()
        .oneshot(RevokeRequest::new(refreshed.clone()))
        .await
        .unwrap_err();
    revoker
        .clone()
        .oneshot(RevokeRequest::new(refreshed.clone()))
        .await
        .unwrap();
    let garbled = TokenSet::new("a").with_refresh_token("garbled-refresh-token");
    let refused = refresher.revoke(&garbled).await.unwrap_err();
    let wrong = OAuth2Refresher::builder(idp.token_url(), "client")
        .client_secret("wrong-secret-xyz")
        .client_auth(ClientAuthMethod::ClientSecretBasic)
        .revocation_url(idp.revocation_url())
        .build_http()
        .unwrap();
    let rejected = wrong.revoke(&refreshed).await.unwrap_err();
    let document = format!(
        r#"{{"issuer":"{}","token_endpoint":"{}"}}"#,
        idp.issuer(),
        idp.token_url()
    );
    let metadata = ProviderMetadata::from_document(&idp.issuer(), document.as_bytes()).unwrap();
    assert_eq!(idp.stats().logouts, 1);

    let shown = [
        builder_debug,
        format!("{refresher:?}"),
        format!("{revoker:?}"),
        format!("{unavailable} {unavailable:?}"),
        format!("{refused} {refused:?}"),
        format!("{rejected} {rejected:?}"),
        format!("{metadata:?}"),
        format!("{wrong:?}"),
        log.text(),
    ]
    .join("\n");
    assert!(
        shown.contains("revoking the session"),
        "the log was captured"
    );
    assert!(shown.contains("client_secret_basic"), "{shown}");
    let mut secrets = vec![
        PASSWORD.to_owned(),
        CLIENT_SECRET.to_owned(),
        "wrong-secret-xyz".to_owned(),
    ];
    for set in [&tokens, &refreshed] {
        secrets.push(set.access_token().secret().to_owned());
        secrets.extend(set.refresh_token().map(|token| token.secret().to_owned()));
    }
    assert_no_secret(&shown, &secrets);
}

/// What the echoing server was sent.
type Sent = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A token and revocation endpoint that refuses everything, quoting the request's whole form
/// in its `error_description`.
fn echoing(
    sent: Sent,
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
        let sent = sent.clone();
        async move {
            let body = request.into_body().collect().await?.to_bytes();
            let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)?;
            let quoted = form
                .iter()
                .map(|(name, value)| format!("{name} is {value}"))
                .collect::<Vec<_>>()
                .join(", ");
            sent.lock().unwrap().push(form);
            let body = serde_json::json!({"error": "invalid_client", "error_description": quoted});
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok::<_, tower::BoxError>(response)
        }
    })
}

/// Every secret value a request sent: client secret, password, tokens, assertion.
fn sent_secrets(sent: &Sent) -> Vec<String> {
    let names = [
        "client_secret",
        "password",
        "refresh_token",
        "token",
        "client_assertion",
    ];
    sent.lock()
        .unwrap()
        .iter()
        .flatten()
        .filter(|(name, _)| names.contains(&name.as_str()))
        .map(|(_, value)| value.clone())
        .collect()
}

#[tokio::test]
async fn a_server_that_echoes_the_request_gets_no_secret_into_an_error() {
    let sent = Sent::default();
    let refresher = OAuth2Refresher::builder("http://127.0.0.1:9/token", "client")
        .client_secret(CLIENT_SECRET)
        .password("reader", PASSWORD)
        .revocation_url("http://127.0.0.1:9/revoke")
        .build(echoing(sent.clone()))
        .unwrap();
    let tokens = TokenSet::new("access-token-abcdef").with_refresh_token("refresh-token-ghijkl");
    let errors = [
        refresher.login().await.unwrap_err(),
        refresher.refresh(&tokens).await.unwrap_err(),
        refresher.revoke(&tokens).await.unwrap_err(),
    ];
    let shown: Vec<String> = errors.iter().map(|e| format!("{e} {e:?}")).collect();
    assert!(
        shown[0].contains("<redacted>"),
        "the echo is there: {}",
        shown[0]
    );
    let secrets = sent_secrets(&sent);
    assert_eq!(
        secrets.len(),
        6,
        "secret, password; secret, refresh token; secret, token"
    );
    assert_no_secret(&shown.join("\n"), &secrets);
}

#[cfg(feature = "private-key-jwt")]
#[tokio::test]
async fn a_client_key_and_its_assertions_are_never_shown() {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    use tower_auth_refresh::oauth2::ClientKey;

    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    let key = ClientKey::from_der(pkcs8.as_ref()).unwrap().key_id("kid-1");
    let sent = Sent::default();
    let builder = OAuth2Refresher::builder("http://127.0.0.1:9/token", "client")
        .client_key(key.clone())
        .client_credentials()
        .revocation_url("http://127.0.0.1:9/revoke");
    let builder_debug = format!("{builder:?}");
    let refresher = builder.build(echoing(sent.clone())).unwrap();
    let tokens = TokenSet::new("access-token-abcdef");
    let errors = [
        refresher.login().await.unwrap_err(),
        refresher.revoke(&tokens).await.unwrap_err(),
    ];
    let mut shown = vec![builder_debug, format!("{key:?}"), format!("{refresher:?}")];
    shown.extend(errors.iter().map(|e| format!("{e} {e:?}")));
    let shown = shown.join("\n");
    assert!(
        shown.contains("ES256") && shown.contains("kid-1"),
        "{shown}"
    );
    let mut secrets = sent_secrets(&sent);
    assert_eq!(secrets.len(), 3, "two assertions and the token");
    // The key itself, in every spelling: the PEM's base64 lines and the DER's.
    secrets.extend(
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .map(str::to_owned),
    );
    assert_no_secret(&shown, &secrets);
}
