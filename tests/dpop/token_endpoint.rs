//! The refresher at a DPoP token endpoint: a proof on every token request, the nonce met
//! once, the token type checked; the provider refuses what it should.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tower_auth_refresh::dpop::Dpop;
use tower_auth_refresh::oauth2::{ErrorKind, HttpClient, OAuth2Refresher};
use tower_auth_refresh::test_util::{AfterGrant, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, RefreshError, TokenType};

use crate::support::{Recording, claims, refresher, send};

async fn provider(config: ProviderConfig) -> IdentityProvider {
    IdentityProvider::start(config).await.unwrap()
}

fn nonce_provider() -> ProviderConfig {
    ProviderConfig::default()
        .require_dpop(true)
        .dpop_nonce(true)
}

fn oauth2_error(error: &RefreshError) -> &tower_auth_refresh::oauth2::Error {
    error
        .refresher_error()
        .and_then(|error| error.downcast_ref())
        .expect("an OAuth2 error")
}

// Login, refreshes through nonce rotations, each request with a new proof; the nonce challenge
// costs one more request, and only when the nonce the client holds is too old.
#[tokio::test]
async fn login_and_refreshes_prove_every_request_and_meet_each_nonce_once() {
    let idp = provider(nonce_provider()).await;
    let dpop = Dpop::generate().unwrap();
    let client = Recording::new();
    let refresher = idp
        .refresher_builder()
        .dpop(dpop.clone())
        .build(client.clone())
        .unwrap();

    let tokens = refresher.login().await.unwrap();
    let stats = idp.stats();
    assert_eq!(tokens.token_type(), TokenType::DPoP);
    assert_eq!(
        (
            stats.requests,
            stats.dpop_nonce_challenges,
            stats.dpop_proofs
        ),
        (2, 1, 1),
        "{stats:?}"
    );
    assert_eq!(stats.password_grants, 1);
    // Bound to this key: the server's record and the token's own cnf.jkt.
    let access = tokens.access_token().secret();
    assert_eq!(idp.access_token_jkt(access), Some(dpop.thumbprint()));
    assert_eq!(claims(access)["cnf"]["jkt"], dpop.thumbprint().as_str());
    // The retry is a new proof, with the nonce the challenge gave; the first had none.
    let proofs: Vec<String> = client.proofs().into_iter().map(Option::unwrap).collect();
    let (first, retry) = (claims(&proofs[0]), claims(&proofs[1]));
    assert_ne!(first["jti"], retry["jti"]);
    assert_eq!(first.get("nonce"), None);
    let nonce = dpop.nonce(&idp.token_url().parse().unwrap()).unwrap();
    assert_eq!(retry["nonce"], nonce.as_str());
    assert_eq!(retry["htm"], "POST");
    assert_eq!(retry["htu"], idp.token_url().as_str());
    assert_eq!(dpop.stats().token_endpoint_nonce_retries, 1);

    // The nonce is kept: a refresh is one request.
    let tokens = refresher.refresh(&tokens).await.unwrap();
    assert_eq!(tokens.token_type(), TokenType::DPoP);
    assert_eq!((idp.stats().requests, idp.stats().refresh_grants), (3, 1));

    // A new nonce: the previous one is still taken, and the answer brings the new one.
    idp.rotate_dpop_nonce();
    let tokens = refresher.refresh(&tokens).await.unwrap();
    assert_eq!(idp.stats().requests, 4);
    let rotated = dpop.nonce(&idp.token_url().parse().unwrap()).unwrap();
    assert_ne!(rotated, nonce, "learnt from a 200");
    let tokens = refresher.refresh(&tokens).await.unwrap();
    assert_eq!(idp.stats().requests, 5);
    assert_eq!(
        claims(client.proofs()[4].as_deref().unwrap())["nonce"],
        rotated.as_str()
    );

    // Two rotations: the held nonce is refused, one challenge, one retry.
    idp.rotate_dpop_nonce();
    idp.rotate_dpop_nonce();
    let tokens = refresher.refresh(&tokens).await.unwrap();
    let stats = idp.stats();
    assert_eq!(
        (
            stats.requests,
            stats.dpop_nonce_challenges,
            stats.refresh_grants
        ),
        (7, 2, 4),
        "{stats:?}"
    );
    assert_eq!((stats.reuse_detected, stats.dpop_replays), (0, 0));
    assert_eq!(dpop.stats().token_endpoint_nonce_retries, 2);
    assert_eq!(dpop.stats().token_endpoint_nonce_refusals, 0);
    assert_eq!(
        idp.access_token_jkt(tokens.access_token().secret()),
        Some(dpop.thumbprint())
    );
    let jtis: std::collections::HashSet<_> = client
        .proofs()
        .iter()
        .map(|proof| claims(proof.as_deref().unwrap())["jti"].to_string())
        .collect();
    assert_eq!(jtis.len(), 7, "a new proof every request");
}

// Through the layer, across expiries: the cache holds DPoP-typed sets and refreshes them.
#[tokio::test]
async fn the_layer_keeps_a_dpop_session_across_expiries() {
    let idp = provider(nonce_provider().access_lifetime(Duration::from_secs(1))).await;
    let dpop = Dpop::generate().unwrap();
    let refresher = refresher(&idp, &dpop);
    let handle = AuthLayer::new(refresher).handle();
    let first = handle.token().await.unwrap();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let state = handle.token().await.unwrap();
        assert!(state.generation() > first.generation());
        let access = handle.access_token().unwrap();
        assert_eq!(
            idp.access_token_jkt(access.secret()),
            Some(dpop.thumbprint())
        );
    }
    let stats = idp.stats();
    assert_eq!(
        (stats.password_grants, stats.refresh_grants),
        (1, 2),
        "{stats:?}"
    );
    assert_eq!((stats.dpop_nonce_challenges, stats.requests), (1, 4));
    assert_eq!(stats.reuse_detected, 0);
}

// client_credentials: no refresh token, every renewal a new grant, each proven.
#[tokio::test]
async fn client_credentials_meet_the_nonce_once() {
    let idp = provider(nonce_provider()).await;
    let dpop = Dpop::generate_ed25519().unwrap();
    let config = idp.config();
    let refresher = OAuth2Refresher::builder(idp.token_url(), config.client_id())
        .client_secret(config.client_secret())
        .client_credentials()
        .dpop(dpop.clone())
        .build_http()
        .unwrap();
    for _ in 0..3 {
        let tokens = refresher.login().await.unwrap();
        assert_eq!(tokens.token_type(), TokenType::DPoP);
        assert_eq!(
            idp.access_token_jkt(tokens.access_token().secret()),
            Some(dpop.thumbprint())
        );
    }
    let stats = idp.stats();
    assert_eq!(stats.client_credentials_grants, 3);
    assert_eq!(
        (stats.requests, stats.dpop_nonce_challenges),
        (4, 1),
        "{stats:?}"
    );
    assert_eq!(dpop.stats().token_endpoint_nonce_retries, 1);
}

// The retry after a nonce challenge is a whole new request: a new client assertion too, since
// the provider accepts each assertion's jti once.
#[tokio::test]
async fn a_private_key_jwt_client_signs_a_new_assertion_for_the_retry() {
    // The client key and the DPoP key are different keys, as they should be.
    let client_key = Dpop::generate().unwrap();
    let jwk = client_key.public_jwk().to_string();
    let key = tower_auth_refresh::oauth2::ClientKey::from_jwk(
        client_key.to_private_jwk().unwrap().secret(),
    )
    .unwrap();
    let idp = provider(nonce_provider().client_jwk(jwk)).await;
    let dpop = Dpop::generate().unwrap();
    let refresher = OAuth2Refresher::builder(idp.token_url(), idp.config().client_id())
        .client_key(key)
        .password(idp.config().username(), idp.config().password())
        .dpop(dpop)
        .build_http()
        .unwrap();
    refresher.login().await.unwrap();
    let stats = idp.stats();
    assert_eq!((stats.requests, stats.client_auth_jwt), (2, 2), "{stats:?}");
    assert_eq!(stats.dpop_nonce_challenges, 1);
}

// A DPoP-bound token to a client without a key: terminal, typed, the refresh token kept, and
// not asked again.
#[tokio::test]
async fn a_dpop_token_to_a_client_without_a_key_is_a_terminal_error() {
    let idp = provider(ProviderConfig::default()).await;
    idp.push_fault(Fault::AfterGrant(AfterGrant::Set(
        "token_type",
        json!("DPoP"),
    )));
    let refresher = idp.refresher_builder().build_http().unwrap();
    let handle = AuthLayer::new(refresher).handle();
    let error = handle.token().await.unwrap_err();
    let oauth = oauth2_error(&error);
    assert_eq!(oauth.kind(), ErrorKind::Dpop, "{oauth}");
    assert!(!oauth.is_transient());
    assert!(
        oauth.refresh_token().is_some(),
        "the answer's refresh token is kept"
    );
    assert!(oauth.to_string().contains("no DPoP key"), "{oauth}");
    assert_eq!(oauth.grant_type(), Some("password"));
    // Terminal: asked again, the layer does not call the token endpoint.
    let again = handle.token().await.unwrap_err();
    assert_eq!(oauth2_error(&again).kind(), ErrorKind::Dpop);
    assert_eq!(idp.stats().requests, 1);
}

// A server that ignores the proof and answers Bearer: refused unless the client says so.
#[tokio::test]
async fn a_bearer_answer_to_a_dpop_client_is_refused_unless_allowed() {
    let idp = provider(ProviderConfig::default()).await;
    let dpop = Dpop::generate().unwrap();
    let strict = refresher(&idp, &dpop);
    let error = strict.login().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Dpop, "{error}");
    assert!(error.to_string().contains("bearer_fallback"), "{error}");
    assert!(error.refresh_token().is_some());

    let lenient = idp
        .refresher_builder()
        .dpop(dpop)
        .bearer_fallback(true)
        .build_http()
        .unwrap();
    let tokens = lenient.login().await.unwrap();
    assert_eq!(tokens.token_type(), TokenType::Bearer);
    let tokens = lenient.refresh(&tokens).await.unwrap();
    assert_eq!(tokens.token_type(), TokenType::Bearer);
    assert_eq!(idp.stats().password_grants, 2);
}

// A server that answers every proof with a new nonce challenge: two requests per attempt,
// then an error the cache backs off from. Never a loop.
#[tokio::test]
async fn a_server_that_challenges_every_proof_costs_two_requests() {
    let idp = provider(ProviderConfig::default().dpop_nonce_every_request(true)).await;
    let dpop = Dpop::generate().unwrap();
    let refresher = refresher(&idp, &dpop);
    let error = refresher.login().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    assert_eq!(error.error_code(), Some("use_dpop_nonce"));
    assert_eq!(idp.stats().requests, 2);
    let stats = dpop.stats();
    assert_eq!(
        (
            stats.token_endpoint_nonce_retries,
            stats.token_endpoint_nonce_refusals
        ),
        (1, 1)
    );

    // Through the layer: its retries of a transient failure are bounded too.
    let handle = AuthLayer::new(refresher).handle();
    let error = handle.token().await.unwrap_err();
    assert_eq!(oauth2_error(&error).error_code(), Some("use_dpop_nonce"));
    let requests = idp.stats().requests - 2;
    assert!((2..=10).contains(&requests), "{requests} requests");
    assert_eq!(requests % 2, 0, "two per attempt");
    let cached = handle.token().await.unwrap_err();
    assert!(cached.is_cached(), "{cached}");
    assert_eq!(
        idp.stats().requests - 2,
        requests,
        "none during the backoff"
    );
}

// A public client's refresh token is bound to its key (RFC 9449 §5): another key cannot
// refresh it.
#[tokio::test]
async fn a_public_clients_refresh_token_needs_its_own_key() {
    let idp = provider(nonce_provider().public_client(true)).await;
    let owner = Dpop::generate().unwrap();
    let thief = Dpop::generate().unwrap();
    let login = refresher(&idp, &owner);
    let tokens = login.login().await.unwrap();
    let stolen = refresher(&idp, &thief);
    // The token set carries its key, and a refresher signs with the key the session came
    // with: the thief has the tokens but not the key, so it presents its own.
    let without_key = tokens.clone().with_dpop(thief.clone());
    let error = stolen.refresh(&without_key).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RefreshTokenRejected, "{error}");
    assert_eq!(
        error.error_description(),
        Some("DPoP proof key does not match the refresh token")
    );
    let tokens = login.refresh(&tokens).await.unwrap();
    assert_eq!(
        idp.access_token_jkt(tokens.access_token().secret()),
        Some(owner.thumbprint())
    );
}

// What the provider refuses: no proof, a replayed proof, a proof for another method or URL.
#[tokio::test]
async fn the_provider_refuses_missing_replayed_and_misdirected_proofs() {
    let idp = provider(ProviderConfig::default().require_dpop(true)).await;
    let config = idp.config().clone();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", config.client_id()),
        ("client_secret", config.client_secret()),
    ];
    let url = idp.token_url();
    let post = |headers: Vec<(&'static str, HeaderValue)>| {
        let url = url.clone();
        async move { send(Method::POST, &url, &headers, Some(&form[..])).await }
    };

    let missing = post(vec![]).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing.body["error"], "invalid_grant");
    assert_eq!(
        missing.body["error_description"],
        "DPoP proof JWT not provided"
    );

    let dpop = Dpop::generate().unwrap();
    let proof = dpop
        .proof(&Method::POST, &url.parse().unwrap(), None)
        .unwrap();
    let once = post(vec![("dpop", proof.clone())]).await;
    assert_eq!(once.status, StatusCode::OK, "{:?}", once.body);
    assert_eq!(once.body["token_type"], "DPoP");
    let replayed = post(vec![("dpop", proof)]).await;
    assert_eq!(replayed.status, StatusCode::BAD_REQUEST);
    assert_eq!(replayed.body["error"], "invalid_grant");
    assert_eq!(
        replayed.body["error_description"],
        "DPoP proof JWT Replay detected"
    );

    let other_url = format!("{url}/elsewhere").parse().unwrap();
    for (proof, why) in [
        (
            dpop.proof(&Method::GET, &url.parse().unwrap(), None)
                .unwrap(),
            "DPoP proof htm mismatch",
        ),
        (
            dpop.proof(&Method::POST, &other_url, None).unwrap(),
            "DPoP proof htu mismatch",
        ),
        (
            HeaderValue::from_static("not.a.proof"),
            "DPoP proof is malformed",
        ),
    ] {
        let refused = post(vec![("dpop", proof)]).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert_eq!(refused.body["error"], "invalid_dpop_proof");
        assert_eq!(refused.body["error_description"], why);
    }
    let stats = idp.stats();
    assert_eq!(
        (
            stats.dpop_missing,
            stats.dpop_replays,
            stats.dpop_invalid_proofs,
            stats.dpop_proofs
        ),
        (1, 1, 3, 1),
        "{stats:?}"
    );
    assert_eq!(stats.client_credentials_grants, 1);

    // The query is not part of htu: a token URL with one is proven right.
    let refresher = OAuth2Refresher::builder(format!("{url}?tenant=x"), config.client_id())
        .client_secret(config.client_secret())
        .client_credentials()
        .dpop(dpop.clone())
        .build_http()
        .unwrap();
    refresher.login().await.unwrap();

    // Behind a proxy that sends the request elsewhere than the client thinks, the proof's htu
    // is wrong: refused, and that is a terminal DPoP error.
    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let proxy = tower::service_fn(move |mut request: Request<Full<Bytes>>| {
        *request.uri_mut() = url.parse().unwrap();
        http.request(request)
    });
    let behind = OAuth2Refresher::builder(
        format!("http://{}/the/proxy/path", idp.addr()),
        config.client_id(),
    )
    .client_secret(config.client_secret())
    .client_credentials()
    .dpop(dpop)
    .build(proxy)
    .unwrap();
    let error = behind.login().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Dpop, "{error}");
    assert_eq!(error.error_code(), Some("invalid_dpop_proof"));
    assert_eq!(error.error_description(), Some("DPoP proof htu mismatch"));
}
