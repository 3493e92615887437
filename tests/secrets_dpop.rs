//! No DPoP secret in any log line, `Debug` or `Display`: the private key (its PEM, its JWK,
//! `d`), the proofs (each one is a credential for its request), and the tokens of a whole DPoP
//! cycle (logins and refreshes with nonce challenges, resource proofs, a hostile server, a
//! refused proof, unreadable keys), run under a TRACE subscriber that captures everything;
//! and a server that echoes the proof in its `error_description` gets it redacted.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt, service_fn};
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::dpop::Dpop;
use tower_auth_refresh::oauth2::{HttpClient, OAuth2Refresher};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};

#[path = "support/captured_log.rs"]
mod captured_log;
use captured_log::Captured;

const PASSWORD: &str = "pw-dpop-S3cr3t&=+-9012";
const CLIENT_SECRET: &str = "cs-dpop+/:%-3c4d5e";

/// Every proof sent and every token issued, to be looked for later.
type Seen = Arc<Mutex<Vec<String>>>;

/// A hyper-util client that keeps the proofs it sends and the tokens it receives.
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
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    service_fn(move |request: Request<Full<Bytes>>| {
        let (http, seen) = (http.clone(), seen.clone());
        async move {
            if let Some(proof) = request.headers().get("dpop") {
                seen.lock().unwrap().push(proof.to_str()?.to_owned());
            }
            let response = http.oneshot(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                for key in ["access_token", "refresh_token"] {
                    if let Some(token) = json.get(key).and_then(|token| token.as_str()) {
                        seen.lock().unwrap().push(token.to_owned());
                    }
                }
            }
            Ok::<_, tower::BoxError>(Response::from_parts(parts, Full::new(body)))
        }
    })
}

/// Fails if any secret appears in `shown`; says which kind, never the secret.
fn assert_no_secret(shown: &str, secrets: &[(&str, String)]) {
    for (kind, secret) in secrets {
        assert!(
            !shown.contains(secret.as_str()),
            "a {kind} ({} chars) appears in the output",
            secret.len()
        );
    }
}

#[tokio::test]
async fn a_dpop_cycle_prints_no_key_token_or_proof() {
    let (log, _guard) = Captured::trace();

    // The key, made now and read from PEM as an application would.
    let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
    )
    .unwrap()
    .to_pkcs8v1()
    .unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    let dpop = Dpop::from_pem(pem.as_bytes()).unwrap();
    let jwk = dpop.to_private_jwk().unwrap();
    let d = serde_json::from_str::<serde_json::Value>(jwk.secret()).unwrap()["d"]
        .as_str()
        .unwrap()
        .to_owned();

    let config = ProviderConfig::default()
        .user("reader", PASSWORD)
        .client("client", CLIENT_SECRET)
        .require_dpop(true)
        .dpop_nonce(true);
    let idp = IdentityProvider::start(config.clone()).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    api.set_dpop_nonce(true);
    let seen = Seen::default();
    let builder = idp.refresher_builder().dpop(dpop.clone());
    let builder_debug = format!("{builder:?}");
    let refresher = builder.build(recording(seen.clone())).unwrap();
    let layer = AuthLayer::new(refresher.clone());
    let handle = layer.handle();
    let state = handle.token().await.unwrap();
    handle.refresh().await.unwrap();
    idp.rotate_dpop_nonce();
    idp.rotate_dpop_nonce();
    let state = format!("{state:?} {:?}", handle.refresh().await.unwrap());

    // Resource requests through the layer, their proofs kept too: the first meets the API's
    // nonce challenge (a retry with a new proof), the second carries the nonce.
    let client = layer.clone().layer(recording(seen.clone()));
    let url = api.url("/user/me");
    for _ in 0..2 {
        let request = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let api_stats = api.stats();
    assert_eq!(
        (api_stats.dpop_ok, api_stats.dpop_nonce_challenges),
        (2, 1),
        "{api_stats:?}"
    );
    let client_debug = format!("{layer:?}");
    // A DPoP token without its key: the typed error, and the request unsent.
    let keyless = AuthLayer::new(service_fn(|_: tower_auth_refresh::RefreshRequest| async {
        Ok::<_, std::convert::Infallible>(
            tower_auth_refresh::TokenSet::new("keyless-dpop-token")
                .with_token_type(tower_auth_refresh::TokenType::DPoP),
        )
    }))
    .layer(recording(seen.clone()));
    let request = Request::get(&url).body(Full::<Bytes>::default()).unwrap();
    let keyless_error = keyless.oneshot(request).await.unwrap_err();
    seen.lock().unwrap().push("keyless-dpop-token".to_owned());

    // Failures: a server that challenges every proof, a proof refused (the client thinks it
    // posts elsewhere than it does), keys that cannot be read.
    let hostile = IdentityProvider::start(config.clone().dpop_nonce_every_request(true))
        .await
        .unwrap();
    let hostile_error = hostile
        .refresher_builder()
        .dpop(dpop.clone())
        .build(recording(seen.clone()))
        .unwrap()
        .login()
        .await
        .unwrap_err();
    let real = idp.token_url();
    let inner = recording(seen.clone());
    let proxy = service_fn(move |mut request: Request<Full<Bytes>>| {
        *request.uri_mut() = real.parse().unwrap();
        inner.clone().oneshot(request)
    });
    let refused = OAuth2Refresher::builder(format!("http://{}/elsewhere", idp.addr()), "client")
        .client_secret(CLIENT_SECRET)
        .password("reader", PASSWORD)
        .dpop(dpop.clone())
        .build(proxy)
        .unwrap()
        .login()
        .await
        .unwrap_err();
    let bad_keys = [
        Dpop::from_jwk(&jwk.secret().replace("P-256", "P-384")).unwrap_err(),
        Dpop::from_jwk(&jwk.secret().replace(r#""kty":"EC""#, r#""kty":"RSA""#)).unwrap_err(),
        Dpop::from_pem(pem.replace("PRIVATE KEY", "PUBLIC KEY").as_bytes()).unwrap_err(),
    ];
    tracing::info!(?dpop, stats = ?dpop.stats(), "the application logs its DPoP value");

    let mut shown = vec![
        builder_debug,
        state,
        format!("{dpop:?} {dpop:#?} {:?}", dpop.stats()),
        format!("{refresher:?} {handle:?} {jwk:?} {client_debug}"),
        format!("{keyless_error} {keyless_error:?}"),
        format!("{hostile_error} {hostile_error:?}"),
        format!("{refused} {refused:?}"),
        format!("{:?} {:?} {config:?}", idp.stats(), api.stats()),
    ];
    shown.extend(bad_keys.iter().map(|error| format!("{error} {error:?}")));
    let shown = shown.join("\n");
    assert!(
        shown.contains(&dpop.thumbprint()),
        "the thumbprint is public"
    );
    assert!(refused.to_string().contains("htu mismatch"), "{refused}");
    let log = log.text();
    assert!(log.contains("DPoP nonce"), "the retry is logged");

    let mut secrets: Vec<(&str, String)> = vec![
        ("private key d", d),
        ("private JWK", jwk.secret().to_owned()),
        ("password", PASSWORD.to_owned()),
        ("client secret", CLIENT_SECRET.to_owned()),
    ];
    secrets.extend(
        pem.lines()
            .filter(|line| !line.starts_with("-----"))
            .map(|line| ("PEM line", line.to_owned())),
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.len() >= 12,
        "proofs and tokens recorded: {}",
        seen.len()
    );
    for value in &seen {
        secrets.push(("proof or token", value.clone()));
        // A proof's signature alone is as good as the proof.
        if let Some(signature) = value.rsplit('.').next() {
            secrets.push(("signature", signature.to_owned()));
        }
    }
    assert_no_secret(&shown, &secrets);
    assert_no_secret(&log, &secrets);
}

// A token endpoint that quotes the proof it got in its error_description.
#[tokio::test]
async fn a_server_that_echoes_the_proof_gets_it_redacted() {
    let seen = Seen::default();
    let echo = {
        let seen = seen.clone();
        service_fn(move |request: Request<Full<Bytes>>| {
            let seen = seen.clone();
            async move {
                let proof = request.headers()["dpop"].to_str()?.to_owned();
                seen.lock().unwrap().push(proof.clone());
                let body = serde_json::json!({
                    "error": "invalid_dpop_proof",
                    "error_description": format!("the proof {proof} is refused"),
                });
                let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
                *response.status_mut() = StatusCode::BAD_REQUEST;
                Ok::<_, tower::BoxError>(response)
            }
        })
    };
    let refresher = OAuth2Refresher::builder("http://127.0.0.1:9/token", "client")
        .client_credentials()
        .dpop(Dpop::generate().unwrap())
        .build(echo)
        .unwrap();
    let error = refresher.login().await.unwrap_err();
    let shown = format!("{error} {error:?}");
    assert!(shown.contains("the proof <redacted> is refused"), "{shown}");
    let proof = seen.lock().unwrap()[0].clone();
    assert_no_secret(&shown, &[("proof", proof)]);
}
