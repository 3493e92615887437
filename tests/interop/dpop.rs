//! DPoP (RFC 9449) against oidc-provider's own DPoP: its client `interop-dpop` has
//! `dpop_bound_access_tokens` and `requireNonce`, so every token request needs a proof with the
//! server's nonce. The API checks resource proofs with jose (panva's, oidc-provider's JOSE
//! library), and asks for its own nonce. Every count is the server's, or the `Dpop`'s.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::Layer;
use tower_auth_refresh::dpop::{Dpop, DpopChallenge};
use tower_auth_refresh::oauth2::{HttpClient, OAuth2Refresher};
use tower_auth_refresh::{AuthLayer, TokenType};

use super::server::{ClientKind, Interop, Lifetimes};
use super::{scenario, show};

/// `GET url` with `Authorization: DPoP <token>` and a new proof for it: the status, the
/// headers and the body.
async fn dpop_get(
    dpop: &Dpop,
    url: &str,
    token: &str,
    method_in_proof: &Method,
) -> (StatusCode, HeaderMap, serde_json::Value) {
    let proof = dpop
        .proof(method_in_proof, &url.parse().unwrap(), Some(token))
        .unwrap();
    let request = Request::get(url)
        .header(http::header::AUTHORIZATION, format!("DPoP {token}"))
        .header("dpop", proof)
        .body(Full::<Bytes>::default())
        .unwrap();
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    (parts.status, parts.headers, body)
}

/// A refresher for the DPoP client, with the user's password grant, proving with `dpop`.
fn dpop_refresher(server: &Interop, dpop: &Dpop) -> OAuth2Refresher<HttpClient> {
    server
        .refresher(ClientKind::Dpop)
        .dpop(dpop.clone())
        .build_http()
        .unwrap()
}

/// A resource request as the layer will make it: a nonce challenge is met once, with a new
/// proof carrying the API's nonce.
async fn call_api(dpop: &Dpop, url: &str, token: &str) -> StatusCode {
    let (status, headers, _) = dpop_get(dpop, url, token, &Method::GET).await;
    dpop.observe(&url.parse().unwrap(), &headers);
    if Dpop::challenge(status, &headers) != Some(DpopChallenge::UseNonce) {
        return status;
    }
    let (status, headers, _) = dpop_get(dpop, url, token, &Method::GET).await;
    dpop.observe(&url.parse().unwrap(), &headers);
    status
}

// Password login and refreshes across expiries, each token request proven, the refresh token
// rotated every time; the API requests go through the layer, which proves each and meets the
// API's nonce challenge once, without a refresh. Each server's nonce costs one more request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_login_and_refreshes_across_expiries_with_rotation() {
    let lifetimes = Lifetimes {
        access: 2,
        ..Lifetimes::default()
    };
    scenario(lifetimes, async |server| {
        let dpop = Dpop::generate().unwrap();
        let refresher = dpop_refresher(server, &dpop);
        let layer = AuthLayer::new(refresher);
        let handle = layer.handle();
        let client = layer.layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
        let url = server.api("/me");
        let get = || Request::get(&url).body(Full::<Bytes>::default()).unwrap();
        assert_eq!(client.clone().oneshot(get()).await.unwrap().status(), StatusCode::OK);
        let first = handle.state().unwrap();
        for _ in 0..3 {
            // Past the 2 s lifetime: the next token comes from a refresh.
            tokio::time::sleep(Duration::from_millis(2100)).await;
            assert_eq!(client.clone().oneshot(get()).await.unwrap().status(), StatusCode::OK);
            assert!(handle.state().unwrap().generation() > first.generation());
        }
        let stats = server.stats().await;
        assert_eq!(stats.token("password", "use_dpop_nonce"), 1, "{}", show(server, &stats));
        assert_eq!(stats.token("password", "ok"), 1);
        assert_eq!(stats.token("refresh_token", "ok"), 3);
        assert_eq!(stats.token_all("refresh_token"), 3, "no refresh challenged or refused");
        assert_eq!((stats.reuse_detected, stats.grants_revoked), (0, 0));
        // The API: one nonce challenge, then every proof taken, each with the token's key.
        assert_eq!(
            (stats.api_dpop_ok, stats.api_dpop_nonce_challenges, stats.api_dpop_invalid_proofs),
            (4, 1, 0),
            "{:?}",
            stats.api_dpop_errors
        );
        let counted = dpop.stats();
        assert_eq!(counted.token_endpoint_nonce_retries, 1);
        assert_eq!(counted.token_endpoint_nonce_refusals, 0);
        assert_eq!(counted.proofs, 5 + 5, "5 token requests, 5 API requests");
        eprintln!(
            "dpop: {} token requests ({} nonce challenge), {} refreshes, {} API calls ({} nonce challenge), {} proofs",
            stats.token_requests,
            stats.token("password", "use_dpop_nonce"),
            stats.token("refresh_token", "ok"),
            stats.api_dpop_ok,
            stats.api_dpop_nonce_challenges,
            counted.proofs
        );
    })
    .await;
}

// client_credentials with a DPoP key: the first grant meets the nonce, the next ones carry it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_client_credentials() {
    scenario(Lifetimes::default(), async |server| {
        let dpop = Dpop::generate_ed25519().unwrap();
        let refresher = OAuth2Refresher::builder(&server.urls.token, ClientKind::Dpop.id())
            .client_secret(server.client_secret(ClientKind::Dpop))
            .client_credentials()
            .scope("api:read")
            .dpop(dpop.clone())
            .build_http()
            .unwrap();
        for _ in 0..3 {
            let tokens = refresher.login().await.unwrap();
            assert_eq!(tokens.token_type(), TokenType::DPoP);
            let url = server.api("/me");
            let status = call_api(&dpop, &url, tokens.access_token().secret()).await;
            assert_eq!(status, StatusCode::OK);
        }
        let stats = server.stats().await;
        assert_eq!(
            stats.token("client_credentials", "use_dpop_nonce"),
            1,
            "{}",
            show(server, &stats)
        );
        assert_eq!(stats.token("client_credentials", "ok"), 3);
        assert_eq!(stats.token_requests, 4);
        assert_eq!(dpop.stats().token_endpoint_nonce_retries, 1);
    })
    .await;
}

// What jose refuses at the API: a proof for another method or another key, a bound token sent
// as a bearer token; and a new API nonce learnt from a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_resource_proofs_are_checked_by_jose() {
    scenario(Lifetimes::default(), async |server| {
        let dpop = Dpop::generate().unwrap();
        let refresher = dpop_refresher(server, &dpop);
        let tokens = refresher.login().await.unwrap();
        let token = tokens.access_token().secret();
        let url = server.api("/me");
        assert_eq!(call_api(&dpop, &url, token).await, StatusCode::OK);
        let (status, _, body) = dpop_get(&dpop, &url, token, &Method::GET).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body["jkt"],
            dpop.thumbprint().as_str(),
            "oidc-provider's cnf.jkt"
        );

        let (status, headers, _) = dpop_get(&dpop, &url, token, &Method::POST).await;
        assert_eq!(
            Dpop::challenge(status, &headers),
            Some(DpopChallenge::InvalidProof)
        );
        let other = Dpop::generate().unwrap();
        other.observe(&url.parse().unwrap(), &headers);
        let (status, headers, _) = dpop_get(&other, &url, token, &Method::GET).await;
        assert_eq!(
            Dpop::challenge(status, &headers),
            Some(DpopChallenge::InvalidProof)
        );
        let bearer = Request::get(&url)
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let response = client.request(bearer).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Dpop::challenge(response.status(), response.headers()), None);

        // A new API nonce: the held one is still taken, and the 200 brings the new one.
        let held = dpop.nonce(&url.parse().unwrap()).unwrap();
        server.rotate_api_dpop_nonce().await;
        let (status, headers, _) = dpop_get(&dpop, &url, token, &Method::GET).await;
        assert_eq!(status, StatusCode::OK);
        dpop.observe(&url.parse().unwrap(), &headers);
        assert_ne!(dpop.nonce(&url.parse().unwrap()).unwrap(), held);
        let stats = server.stats().await;
        assert_eq!(
            (
                stats.api_dpop_ok,
                stats.api_dpop_invalid_proofs,
                stats.api_dpop_nonce_challenges
            ),
            (3, 2, 1),
            "{:?}",
            stats.api_dpop_errors
        );
        assert_eq!(
            stats.api_dpop_errors,
            [
                "DPoP proof htm mismatch",
                "DPoP proof key is not the key the token is bound to"
            ]
        );
    })
    .await;
}
