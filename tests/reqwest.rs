//! The reqwest middleware against the loopback identity provider and API: the core
//! acceptance tests that apply to a reqwest client, and one token shared with a tower client.
#![cfg(feature = "reqwest")]

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware};
use tower::ServiceBuilder;
use tower_auth_refresh::reqwest::{AuthMiddleware, refresh_error};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, Origin, RefreshErrorKind, oauth2};

/// How long the token endpoint takes where requests must meet a login in flight.
const LOGIN_TIME: Duration = Duration::from_millis(50);

async fn servers() -> (IdentityProvider, Api) {
    servers_with(ProviderConfig::default()).await
}

async fn servers_with(config: ProviderConfig) -> (IdentityProvider, Api) {
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    (idp, api)
}

fn layer(idp: &IdentityProvider) -> AuthLayer {
    AuthLayer::new(idp.refresher_builder().build_http().unwrap())
}

/// A reqwest client with the middleware; no proxy from the environment for loopback.
fn client(middleware: AuthMiddleware) -> ClientWithMiddleware {
    let reqwest = reqwest::Client::builder().no_proxy().build().unwrap();
    ClientBuilder::new(reqwest).with(middleware).build()
}

/// A body reqwest cannot copy: `Request::try_clone` returns `None` for it.
fn uncopyable(bytes: &'static [u8]) -> reqwest::Body {
    reqwest::Body::wrap(Full::new(Bytes::from_static(bytes)))
}

#[tokio::test]
async fn the_token_is_attached() {
    let (idp, api) = servers().await;
    let client = client(layer(&idp).reqwest_middleware());

    let response = client.get(api.url("/user/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.unwrap();
    assert!(body.contains("\"username\":\"reader\""), "{body}");
    assert_eq!(api.stats().missing_token, 0);
    assert_eq!(idp.stats().password_grants, 1);
}

// Core 3a: however many first requests arrive at once, one login. The token endpoint takes
// 50 ms, so the requests meet the login in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_first_requests_log_in_once() {
    let (idp, api) = servers_with(ProviderConfig::default().response_delay(LOGIN_TIME)).await;
    let client = client(layer(&idp).reqwest_middleware());

    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let request = client.get(api.url("/auth/check"));
            tokio::spawn(async move { request.send().await.unwrap().status() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 0));
    let api = api.stats();
    assert_eq!((api.ok, api.unauthorized), (1000, 0));
}

// Core: a 401 with the current token is answered by one refresh and one retry.
#[tokio::test]
async fn a_revoked_token_is_refreshed_once_and_the_request_retried() {
    let (idp, api) = servers().await;
    let layer = layer(&idp);
    layer.handle().token().await.unwrap();
    let client = client(layer.reqwest_middleware());

    idp.revoke_access_tokens();
    let response = client.get(api.url("/user/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    assert_eq!(api.stats().unauthorized, 1);
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
    assert_eq!(layer.handle().state().unwrap().generation(), 2);
}

#[tokio::test]
async fn a_rejected_post_is_retried_with_its_body() {
    let (idp, api) = servers().await;
    let layer = layer(&idp);
    layer.handle().token().await.unwrap();
    let client = client(layer.reqwest_middleware());
    idp.revoke_access_tokens();

    let json = Bytes::from_static(br#"{"title":"Yotsuba&!","tags":["comedy"]}"#);
    let response = client
        .post(api.url("/echo"))
        .header(CONTENT_TYPE, "application/json")
        .body(json.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap(), json);
    let stats = api.stats();
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(stats.echo_bodies, [json]);
}

// Core: a body that cannot be replayed is never sent twice; the 401 goes back, and the token
// is refreshed in the background for the next request.
#[tokio::test]
async fn a_body_that_cannot_be_copied_gets_the_401_back_and_is_sent_once() {
    let (idp, api) = servers().await;
    let layer = layer(&idp);
    let handle = layer.handle();
    handle.token().await.unwrap();
    let client = client(layer.reqwest_middleware());
    idp.revoke_access_tokens();

    let response = client
        .post(api.url("/echo"))
        .body(uncopyable(b"sent once"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = api.stats();
    assert_eq!((stats.requests, stats.unauthorized), (1, 1));

    while handle.state().unwrap().generation() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let response = client
        .post(api.url("/echo"))
        .body(uncopyable(b"next"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(api.stats().echo_bodies, [Bytes::from_static(b"next")]);
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
}

// Retried once, never more: the second 401 goes back as it is.
#[tokio::test]
async fn a_401_on_the_retry_is_returned() {
    let (idp, api) = servers().await;
    let layer = layer(&idp);
    layer.handle().token().await.unwrap();
    let client = client(layer.reqwest_middleware());

    api.push_unauthorized(2);
    let response = client.get(api.url("/user/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.stats().requests, 2);
    assert_eq!(idp.stats().refresh_grants, 1);
}

// A failed refresh reaches the caller as a typed error, and the request is not sent.
#[tokio::test]
async fn a_failed_login_is_a_typed_error() {
    let (idp, api) = servers().await;
    let refresher = idp
        .refresher_builder()
        .password(idp.config().username(), "not the password")
        .build_http()
        .unwrap();
    let client = client(AuthLayer::new(refresher).reqwest_middleware());

    let error = client.get(api.url("/user/me")).send().await.unwrap_err();
    assert!(error.is_middleware());
    let refresh = refresh_error(&error).expect("a RefreshError");
    assert_eq!(refresh.kind(), RefreshErrorKind::Refresher);
    let oauth2 = refresh
        .refresher_error()
        .and_then(|error| error.downcast_ref::<oauth2::Error>())
        .expect("the OAuth2 refresher's error");
    assert_eq!(oauth2.kind(), oauth2::ErrorKind::CredentialsRejected);
    assert_eq!(api.stats().requests, 0);

    // Terminal: the next request fails at once, without asking the identity provider.
    let requests = idp.stats().requests;
    let error = client.get(api.url("/user/me")).send().await.unwrap_err();
    assert!(refresh_error(&error).is_some());
    assert_eq!(idp.stats().requests, requests);
}

// A request with its own `Authorization`, or to an origin not allowed, is sent untouched:
// no token, no login, its 401 returned without a refresh.
#[tokio::test]
async fn requests_that_are_not_ours_are_sent_untouched() {
    let (idp, api) = servers().await;
    let elsewhere = Api::start(&idp).await.unwrap();
    let layer = layer(&idp).allow_origin(Origin::parse(&api.origin()).unwrap());
    let client = client(layer.reqwest_middleware());

    let response = client
        .get(api.url("/user/me"))
        .header(AUTHORIZATION, "Bearer the-callers-own")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(api.stats().requests, 1);

    let response = client.get(elsewhere.url("/user/me")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(elsewhere.stats().missing_token, 1);

    assert_eq!(idp.stats().requests, 0);
    assert!(layer.handle().state().is_none());
}

// reqwest follows redirects after the middleware; another origin never sees the token.
#[tokio::test]
async fn a_redirect_to_another_origin_does_not_carry_the_token() {
    let (idp, api) = servers().await;
    let elsewhere = Api::start(&idp).await.unwrap();
    let client = client(layer(&idp).reqwest_middleware());

    let url = format!("{}?to={}", api.url("/redirect"), elsewhere.url("/user/me"));
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = elsewhere.stats();
    assert!(stats.requests >= 1);
    assert_eq!(stats.missing_token, stats.requests, "{stats:?}");
    assert_eq!(api.stats().missing_token, 0);
}

// Tokens that expire while the client runs are refreshed before they are sent.
#[tokio::test]
async fn short_lived_tokens_are_refreshed_ahead_of_expiry() {
    let (idp, api) =
        servers_with(ProviderConfig::default().access_lifetime(Duration::from_secs(1))).await;
    let client = client(layer(&idp).reqwest_middleware());
    for _ in 0..6 {
        let response = client.get(api.url("/user/me")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(api.stats().unauthorized, 0, "no expired token was sent");
    assert!(idp.stats().refresh_grants >= 2);
}

// A tower client and a reqwest client made from one layer share one token: one login for
// both, and one refresh when the server revokes it under both at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tower_client_and_a_reqwest_client_share_one_token() {
    let (idp, api) = servers_with(ProviderConfig::default().response_delay(LOGIN_TIME)).await;
    let layer = layer(&idp);
    let handle = layer.handle();
    let middleware = layer.reqwest_middleware();
    let reqwest = client(middleware.clone());
    let tower = ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let url = api.url("/user/me");

    let mut tasks = Vec::new();
    for _ in 0..50 {
        let request = reqwest.get(&url);
        tasks.push(tokio::spawn(async move {
            request.send().await.unwrap().status()
        }));
        let request = Request::get(&url).body(Full::default()).unwrap();
        let tower = tower.clone();
        tasks.push(tokio::spawn(async move {
            tower.oneshot(request).await.unwrap().status()
        }));
    }
    for task in tasks.drain(..) {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 0));
    assert_eq!(middleware.handle().state(), handle.state());

    idp.revoke_access_tokens();
    let request = reqwest.get(&url);
    let from_reqwest = tokio::spawn(async move { request.send().await.unwrap().status() });
    let request = Request::get(&url).body(Full::default()).unwrap();
    let from_tower = tokio::spawn(tower.oneshot(request));
    assert_eq!(from_reqwest.await.unwrap(), StatusCode::OK);
    assert_eq!(from_tower.await.unwrap().unwrap().status(), StatusCode::OK);
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
    assert_eq!(handle.state().unwrap().generation(), 2);
}

#[tokio::test]
async fn debug_shows_no_token() {
    let (idp, api) = servers().await;
    let middleware = layer(&idp).reqwest_middleware();
    let client = client(middleware.clone());
    client.get(api.url("/user/me")).send().await.unwrap();
    let debug = format!("{middleware:?}");
    assert!(debug.starts_with("AuthMiddleware"), "{debug}");
    assert!(!debug.contains("Bearer ey"), "{debug}");
    assert!(!debug.contains(idp.config().password()), "{debug}");
}

// A retry after a rejection carries a proof made for it, or none: when the refresh brings a
// Bearer token, the first request's DPoP proof does not travel with the copy.
#[cfg(feature = "dpop")]
#[tokio::test]
async fn a_retry_with_a_bearer_token_carries_no_earlier_proof() {
    use std::sync::{Arc, Mutex};
    use tower_auth_refresh::dpop::Dpop;
    use tower_auth_refresh::{RefreshRequest, TokenSet, TokenType};

    // The API: records each request's Authorization and DPoP headers; refuses the first.
    type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let recorded = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let recorded = Arc::clone(&recorded);
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let header = |name| {
                        request
                            .headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                    };
                    let mut seen = recorded.lock().unwrap();
                    seen.push((header("authorization").unwrap_or_default(), header("dpop")));
                    let status = if seen.len() == 1 { 401 } else { 200 };
                    let response = http::Response::builder()
                        .status(status)
                        .body(Full::<Bytes>::default());
                    std::future::ready(response)
                });
            let io = hyper_util::rt::TokioIo::new(stream);
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
        }
    });
    // The first token is DPoP-bound; the refresh after the rejection brings a Bearer one.
    let key = Dpop::generate().unwrap();
    let refresher = tower::service_fn(move |request: RefreshRequest| {
        let key = key.clone();
        async move {
            let tokens = if request.current().is_none() {
                TokenSet::new("first-dpop")
                    .with_token_type(TokenType::DPoP)
                    .with_dpop(key)
            } else {
                TokenSet::new("then-bearer")
            };
            Ok::<_, std::convert::Infallible>(tokens.with_expires_in(Duration::from_secs(900)))
        }
    });
    let client = client(AuthLayer::new(refresher).reqwest_middleware());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].0, "DPoP first-dpop");
    assert!(seen[0].1.is_some(), "the first request is proved");
    assert_eq!(
        seen[1],
        ("Bearer then-bearer".to_owned(), None),
        "no proof with a Bearer token"
    );
}

// DPoP through reqwest: every request proved, the API's nonce challenge met once with a new
// proof and no refresh; a request whose body cannot be copied gets the challenge back.
#[cfg(feature = "dpop")]
#[tokio::test]
async fn dpop_requests_meet_the_apis_nonce_once_without_a_refresh() {
    use tower_auth_refresh::dpop::Dpop;

    let (idp, api) = servers_with(ProviderConfig::default().dpop(true)).await;
    api.set_dpop_nonce(true);
    let refresher = idp.refresher_builder().dpop(Dpop::generate().unwrap());
    let client = client(AuthLayer::new(refresher.build_http().unwrap()).reqwest_middleware());
    for _ in 0..3 {
        let response = client.get(api.url("/user/me")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let stats = api.stats();
    assert_eq!(
        (
            stats.dpop_ok,
            stats.dpop_nonce_challenges,
            stats.dpop_invalid_proofs
        ),
        (3, 1, 0),
        "{stats:?}"
    );
    assert_eq!(
        (idp.stats().password_grants, idp.stats().refresh_grants),
        (1, 0)
    );

    // Twice: the nonce before the current one is still taken.
    api.rotate_dpop_nonce();
    api.rotate_dpop_nonce();
    let response = client
        .post(api.url("/echo"))
        .body(uncopyable(b"once"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "returned as it came"
    );
    assert_eq!(api.stats().dpop_nonce_challenges, 2);
    assert_eq!(idp.stats().refresh_grants, 0);
}
