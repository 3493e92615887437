//! The layer as a DPoP client of an API: a new proof with every request, the API's nonce
//! challenges met once without a refresh, refused proofs returned as they came, the retry
//! after a rejection proved anew, and the key kept with the session in the store. Every count
//! is the loopback servers' own.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_auth_refresh::dpop::{Dpop, DpopErrorKind};
use tower_auth_refresh::oauth2::HttpClient;
use tower_auth_refresh::replay::NoReplay;
use tower_auth_refresh::store::FileStore;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, Origin, RefreshRequest, TokenSet, TokenType};

use crate::support::{claims, refresher};

type Body = Full<Bytes>;

async fn servers(config: ProviderConfig) -> (IdentityProvider, Api) {
    let idp = IdentityProvider::start(config.require_dpop(true))
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    (idp, api)
}

/// A hyper-util client that keeps the `DPoP` header of every request it sends.
#[derive(Clone)]
struct Proofs {
    client: HttpClient,
    seen: Arc<Mutex<Vec<Option<String>>>>,
}

impl Proofs {
    fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            seen: Arc::default(),
        }
    }

    fn jtis(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .map(|proof| {
                claims(proof.as_deref().expect("a proof"))["jti"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

impl Service<Request<Body>> for Proofs {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        Service::<Request<Body>>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let proof = request
            .headers()
            .get("dpop")
            .map(|value| value.to_str().unwrap().to_owned());
        self.seen.lock().unwrap().push(proof);
        self.client.call(request)
    }
}

async fn get<S>(client: &S, url: &str) -> Result<StatusCode, tower_auth_refresh::BoxError>
where
    S: Service<Request<Body>, Response = Response<Incoming>, Error = tower_auth_refresh::BoxError>
        + Clone,
{
    let request = Request::get(url).body(Body::default()).unwrap();
    Ok(client.clone().oneshot(request).await?.status())
}

// Ten requests, each with a proof of its own; the API's nonce challenge is met once, with the
// same token: no refresh, and every proof unique.
#[tokio::test]
async fn every_request_is_proved_and_the_apis_nonce_costs_one_retry_and_no_refresh() {
    let (idp, api) = servers(ProviderConfig::default()).await;
    api.set_dpop_nonce(true);
    let dpop = Dpop::generate().unwrap();
    let proofs = Proofs::new();
    let client = AuthLayer::new(refresher(&idp, &dpop)).layer(proofs.clone());
    let me = api.url("/user/me");
    for _ in 0..10 {
        assert_eq!(get(&client, &me).await.unwrap(), StatusCode::OK);
    }
    let stats = api.stats();
    assert_eq!(
        (
            stats.dpop_ok,
            stats.dpop_nonce_challenges,
            stats.dpop_invalid_proofs
        ),
        (10, 1, 0),
        "{stats:?}"
    );
    assert_eq!(stats.unauthorized, 1, "the one challenge");
    let provider = idp.stats();
    assert_eq!(
        (provider.password_grants, provider.refresh_grants),
        (1, 0),
        "{provider:?}"
    );
    let mut jtis = proofs.jtis();
    assert_eq!(jtis.len(), 11);
    jtis.sort();
    jtis.dedup();
    assert_eq!(jtis.len(), 11, "a new proof for the retry too");
    let last = claims(
        proofs
            .seen
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .as_deref()
            .unwrap(),
    );
    assert_eq!(last["htm"], "GET");
    assert_eq!(last["htu"], me.as_str());
}

// Across expiries, with the API's nonce rotating: refreshes as the windows predict, none
// because of a challenge, 0 failed requests.
#[tokio::test]
async fn across_expiries_and_rotating_nonces_no_challenge_costs_a_refresh() {
    let (idp, api) = servers(
        ProviderConfig::default()
            .access_lifetime(Duration::from_secs(1))
            .reuse_detection(true),
    )
    .await;
    api.set_dpop_nonce(true);
    let dpop = Dpop::generate().unwrap();
    let client = AuthLayer::new(refresher(&idp, &dpop)).layer(Proofs::new());
    let me = api.url("/user/me");
    for round in 0..3 {
        for _ in 0..5 {
            assert_eq!(
                get(&client, &me).await.unwrap(),
                StatusCode::OK,
                "round {round}"
            );
        }
        api.rotate_dpop_nonce();
        api.rotate_dpop_nonce();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let provider = idp.stats();
    assert_eq!(
        (provider.password_grants, provider.refresh_grants),
        (1, 2),
        "{provider:?}"
    );
    assert_eq!(provider.reuse_detected, 0);
    let stats = api.stats();
    assert_eq!(stats.dpop_ok, 15, "{stats:?}");
    assert_eq!(
        stats.dpop_nonce_challenges, 3,
        "one per double rotation: {stats:?}"
    );
    assert_eq!(stats.dpop_invalid_proofs, 0);
}

// The token revoked: a 401 with `error="invalid_token"` is a rejection, so the layer refreshes
// and sends again, with a new proof for the new token.
#[tokio::test]
async fn a_rejected_token_is_refreshed_and_the_retry_is_proved_anew() {
    let (idp, api) = servers(ProviderConfig::default()).await;
    let dpop = Dpop::generate().unwrap();
    let proofs = Proofs::new();
    let client = AuthLayer::new(refresher(&idp, &dpop)).layer(proofs.clone());
    let me = api.url("/user/me");
    assert_eq!(get(&client, &me).await.unwrap(), StatusCode::OK);
    idp.revoke_access_tokens();
    assert_eq!(get(&client, &me).await.unwrap(), StatusCode::OK);
    let provider = idp.stats();
    assert_eq!(
        (provider.password_grants, provider.refresh_grants),
        (1, 1),
        "{provider:?}"
    );
    let seen = proofs.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    let (rejected, retry) = (
        claims(seen[1].as_deref().unwrap()),
        claims(seen[2].as_deref().unwrap()),
    );
    assert_ne!(rejected["jti"], retry["jti"]);
    assert_ne!(
        rejected["ath"], retry["ath"],
        "the retry proves the new token"
    );
    assert_eq!(api.stats().dpop_invalid_proofs, 0);
}

// Tokens bound to one key, signed with another: the API refuses the proof, which says nothing
// of the token: the response comes back as it is, and nothing is refreshed.
#[tokio::test]
async fn a_refused_proof_is_returned_and_refreshes_nothing() {
    let (idp, api) = servers(ProviderConfig::default()).await;
    let dpop = Dpop::generate().unwrap();
    let tokens = refresher(&idp, &dpop).login().await.unwrap();
    let layer = AuthLayer::new(refresher(&idp, &dpop));
    let other = Dpop::generate().unwrap();
    layer
        .handle()
        .set_tokens(tokens.with_dpop(other))
        .await
        .unwrap();
    let client = layer.layer(Proofs::new());
    let request = Request::get(api.url("/user/me"))
        .body(Body::default())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = Dpop::challenge(response.status(), response.headers());
    assert_eq!(
        challenge,
        Some(tower_auth_refresh::dpop::DpopChallenge::InvalidProof)
    );
    let provider = idp.stats();
    assert_eq!(
        (provider.password_grants, provider.refresh_grants),
        (1, 0),
        "{provider:?}"
    );
    assert_eq!(api.stats().dpop_invalid_proofs, 1);
}

// A DPoP token set with no key: nothing can prove it, so nothing is sent.
#[tokio::test]
async fn a_dpop_token_without_a_key_is_not_sent() {
    let refresher = service_fn(|_: RefreshRequest| async {
        Ok::<_, Infallible>(TokenSet::new("bound").with_token_type(TokenType::DPoP))
    });
    let sent = Arc::new(AtomicU64::new(0));
    let api = service_fn({
        let sent = Arc::clone(&sent);
        move |_: Request<Body>| {
            sent.fetch_add(1, Ordering::Relaxed);
            async { Ok::<_, Infallible>(Response::new(Body::default())) }
        }
    });
    let client = AuthLayer::new(refresher).layer(api);
    let request = Request::get("http://127.0.0.1/")
        .body(Body::default())
        .unwrap();
    let error = client.oneshot(request).await.unwrap_err();
    let dpop = error
        .downcast_ref::<tower_auth_refresh::dpop::DpopError>()
        .expect("a DpopError");
    assert_eq!(dpop.kind(), DpopErrorKind::Key);
    assert!(error.to_string().contains("was not sent"), "{error}");
    assert_eq!(sent.load(Ordering::Relaxed), 0);
}

/// An API that answers every proof with a new nonce challenge.
fn challenging_api(
    calls: &Arc<AtomicU64>,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send> + Clone
{
    let calls = Arc::clone(calls);
    service_fn(move |_: Request<Body>| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Body::default());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        let headers: &mut HeaderMap = response.headers_mut();
        headers.insert(
            "www-authenticate",
            r#"DPoP error="use_dpop_nonce""#.parse().unwrap(),
        );
        headers.insert("dpop-nonce", format!("nonce-{n}").parse().unwrap());
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn bound_tokens() -> (
    Dpop,
    impl Service<RefreshRequest, Response = TokenSet, Error = Infallible, Future = impl Send>
    + Send
    + 'static,
) {
    let dpop = Dpop::generate().unwrap();
    let key = dpop.clone();
    let refresher = service_fn(move |_: RefreshRequest| {
        let key = key.clone();
        async move {
            Ok::<_, Infallible>(
                TokenSet::new("bound")
                    .with_token_type(TokenType::DPoP)
                    .with_dpop(key)
                    .with_expires_in(Duration::from_secs(900)),
            )
        }
    });
    (dpop, refresher)
}

// A server that challenges every proof: one retry per request, never a loop, never a refresh;
// a request whose body cannot be replayed gets the challenge back at once.
#[tokio::test]
async fn a_server_that_challenges_every_proof_costs_one_retry_per_request() {
    let (dpop, refresher) = bound_tokens();
    let refreshes = Arc::new(AtomicU64::new(0));
    let counted = {
        let refreshes = Arc::clone(&refreshes);
        refresher.map_request(move |request: RefreshRequest| {
            refreshes.fetch_add(1, Ordering::Relaxed);
            request
        })
    };
    let layer = AuthLayer::new(counted);
    let calls = Arc::new(AtomicU64::new(0));
    let client = layer.clone().layer(challenging_api(&calls));
    for _ in 0..3 {
        let request = Request::get("http://127.0.0.1/")
            .body(Body::default())
            .unwrap();
        let response = client.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(calls.load(Ordering::Relaxed), 6);
    assert_eq!(refreshes.load(Ordering::Relaxed), 1, "the login only");
    assert_eq!(
        dpop.nonce(&"http://127.0.0.1/".parse().unwrap()).as_deref(),
        Some("nonce-5")
    );

    let unreplayable = layer.replay_policy(NoReplay).layer(challenging_api(&calls));
    let request = Request::get("http://127.0.0.1/")
        .body(Body::default())
        .unwrap();
    let response = unreplayable.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::Relaxed), 7);
    assert_eq!(refreshes.load(Ordering::Relaxed), 1);
}

// A proof's `htu` is the request's absolute URI: a relative request needs the layer to know
// where relative URIs go.
#[tokio::test]
async fn a_relative_request_is_proved_for_the_origin_it_goes_to() {
    let (_, refresher) = bound_tokens();
    let htus = Arc::new(Mutex::new(Vec::new()));
    let api = service_fn({
        let htus = Arc::clone(&htus);
        move |request: Request<Body>| {
            let proof = request.headers()["dpop"].to_str().unwrap().to_owned();
            htus.lock()
                .unwrap()
                .push(claims(&proof)["htu"].as_str().unwrap().to_owned());
            async { Ok::<_, Infallible>(Response::new(Body::default())) }
        }
    });
    let layer = AuthLayer::new(refresher);
    let relative = || {
        Request::get("/v1/items?page=2")
            .body(Body::default())
            .unwrap()
    };
    let error = layer
        .clone()
        .layer(api.clone())
        .oneshot(relative())
        .await
        .unwrap_err();
    assert_eq!(
        error
            .downcast_ref::<tower_auth_refresh::dpop::DpopError>()
            .unwrap()
            .kind(),
        DpopErrorKind::Uri
    );
    let placed = layer.origin_of_relative(Origin::from_static("https://api.example.com"));
    placed.layer(api).oneshot(relative()).await.unwrap();
    assert_eq!(*htus.lock().unwrap(), ["https://api.example.com/v1/items"]);
}

// The key lives with the session: a second layer on the same file store, whose refresher has
// a key of its own, signs with the stored key, and its refresh too.
#[tokio::test]
async fn the_key_is_kept_with_the_session_in_the_store() {
    let (idp, api) = servers(ProviderConfig::default()).await;
    let dir = std::env::temp_dir().join(format!("tar-dpop-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("session.json");
    let first_key = Dpop::generate().unwrap();
    let first = AuthLayer::builder(refresher(&idp, &first_key))
        .store(FileStore::new(&path))
        .build();
    let me = api.url("/user/me");
    assert_eq!(
        get(&first.layer(Proofs::new()), &me).await.unwrap(),
        StatusCode::OK
    );
    let stored = std::fs::read_to_string(&path).unwrap();
    assert!(
        stored.contains("\"dpop_key\""),
        "the key is stored with the tokens"
    );

    let second_key = Dpop::generate().unwrap();
    let second = AuthLayer::builder(refresher(&idp, &second_key))
        .store(FileStore::new(&path))
        .build();
    let client = second.layer(Proofs::new());
    assert_eq!(get(&client, &me).await.unwrap(), StatusCode::OK);
    second.handle().refresh().await.unwrap();
    assert_eq!(get(&client, &me).await.unwrap(), StatusCode::OK);
    let access = second.handle().access_token().unwrap();
    assert_eq!(
        idp.access_token_jkt(access.secret()),
        Some(first_key.thumbprint())
    );
    let provider = idp.stats();
    assert_eq!(
        (provider.password_grants, provider.refresh_grants),
        (1, 1),
        "{provider:?}"
    );
    let stats = api.stats();
    assert_eq!(
        (stats.dpop_ok, stats.dpop_invalid_proofs),
        (3, 0),
        "{stats:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// A nonce challenge is worth a retry only if it brings a nonce the proof did not carry: an
// API that challenges the nonce it gave (or gives none) gets its 401 back, with one request.
#[tokio::test]
async fn a_challenge_without_a_new_nonce_is_not_retried() {
    let (dpop, refresher) = bound_tokens();
    let calls = Arc::new(AtomicU64::new(0));
    // Every answer: the challenge, with the same nonce (or none, after the second call).
    let api = {
        let calls = Arc::clone(&calls);
        service_fn(move |request: Request<Body>| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            let carried = claims(request.headers()["dpop"].to_str().unwrap())["nonce"].clone();
            let mut response = Response::new(Body::default());
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            let headers: &mut HeaderMap = response.headers_mut();
            headers.insert(
                "www-authenticate",
                r#"DPoP error="use_dpop_nonce""#.parse().unwrap(),
            );
            if n < 2 {
                headers.insert("dpop-nonce", "the-only-nonce".parse().unwrap());
            }
            headers.insert("x-carried", carried.to_string().parse().unwrap());
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let client = AuthLayer::new(refresher).layer(api);
    let get = || {
        Request::get("http://127.0.0.1/")
            .body(Body::default())
            .unwrap()
    };
    // No nonce yet: the challenge brings one, worth the one retry.
    let response = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["x-carried"], r#""the-only-nonce""#);
    assert_eq!(calls.load(Ordering::Relaxed), 2);
    // The proof carries that nonce; a challenge without another one is returned at once.
    for expected in [3, 4] {
        let response = client.clone().oneshot(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(calls.load(Ordering::Relaxed), expected, "no retry");
    }
    assert_eq!(
        dpop.nonce(&"http://127.0.0.1/".parse().unwrap()).as_deref(),
        Some("the-only-nonce")
    );
}

// A redirect followed inside the stack (tower-http's `FollowRedirect`) that ends at another
// origin: that origin's nonce challenge is neither the first origin's nonce nor a reason to
// send the request again.
#[cfg(feature = "tower-http")]
#[tokio::test]
async fn a_challenge_from_where_a_redirect_ended_is_not_the_first_origins() {
    use tower_http::follow_redirect::FollowRedirectLayer;

    let (dpop, refresher) = bound_tokens();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let servers = {
        let calls = Arc::clone(&calls);
        service_fn(move |request: Request<Body>| {
            let host = request.uri().host().unwrap_or_default().to_owned();
            calls.lock().unwrap().push(host.clone());
            let mut response = Response::new(Body::default());
            if host == "api.example" {
                *response.status_mut() = StatusCode::FOUND;
                let location = "https://elsewhere.example/".parse().unwrap();
                response.headers_mut().insert("location", location);
            } else {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                let headers: &mut HeaderMap = response.headers_mut();
                let challenge = r#"DPoP error="use_dpop_nonce""#.parse().unwrap();
                headers.insert("www-authenticate", challenge);
                headers.insert("dpop-nonce", "elsewheres-nonce".parse().unwrap());
            }
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    // Only the API may get the token: a 401 from elsewhere is not about it either.
    let layer =
        AuthLayer::new(refresher).allow_origin(Origin::parse("https://api.example").unwrap());
    let client = tower::ServiceBuilder::new()
        .layer(layer)
        .layer(FollowRedirectLayer::new())
        .service(servers);
    let request = Request::get("https://api.example/me")
        .body(Body::default())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        *calls.lock().unwrap(),
        ["api.example", "elsewhere.example"],
        "no retry"
    );
    assert_eq!(dpop.nonce(&"https://api.example/".parse().unwrap()), None);
}

/// `bound_tokens`' refresher, counting its calls.
fn counted_bound_tokens() -> (
    Dpop,
    Arc<AtomicU64>,
    impl Service<RefreshRequest, Response = TokenSet, Error = Infallible, Future = impl Send>
    + Send
    + 'static,
) {
    let (dpop, refresher) = bound_tokens();
    let refreshes = Arc::new(AtomicU64::new(0));
    let counted = {
        let refreshes = Arc::clone(&refreshes);
        refresher.map_request(move |request: RefreshRequest| {
            refreshes.fetch_add(1, Ordering::Relaxed);
            request
        })
    };
    (dpop, refreshes, counted)
}

/// An API that challenges a proof without the nonce `n1` and answers `then` to one with it;
/// it records each request's host.
fn nonce_api(
    hosts: &Arc<Mutex<Vec<String>>>,
    then: StatusCode,
) -> impl Service<
    Request<Body>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let hosts = Arc::clone(hosts);
    service_fn(move |request: Request<Body>| {
        hosts
            .lock()
            .unwrap()
            .push(request.uri().host().unwrap_or("").to_owned());
        let proof = claims(request.headers()["dpop"].to_str().unwrap());
        let mut response = Response::builder();
        if proof["nonce"] == "n1" {
            response = response.status(then);
            if then == StatusCode::UNAUTHORIZED {
                response = response.header("www-authenticate", r#"DPoP error="invalid_token""#);
            }
        } else {
            response = response
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", r#"DPoP error="use_dpop_nonce""#)
                .header("dpop-nonce", "n1");
        }
        std::future::ready(Ok::<_, Infallible>(response.body(Body::default()).unwrap()))
    })
}

// A relative request (tonic's, kube's) inside `FollowRedirect`, which records the URI as the
// request gave it: the nonce challenge is still the API's, met once, no refresh.
#[cfg(feature = "tower-http")]
#[tokio::test]
async fn a_relative_request_behind_follow_redirect_meets_the_nonce_once() {
    use tower_http::follow_redirect::FollowRedirectLayer;

    let (dpop, refreshes, refresher) = counted_bound_tokens();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let origin = Origin::parse("https://api.example").unwrap();
    let client = tower::ServiceBuilder::new()
        .layer(AuthLayer::new(refresher).origin_of_relative(origin))
        .layer(FollowRedirectLayer::new())
        .service(nonce_api(&hosts, StatusCode::OK));
    let request = Request::get("/v1/items").body(Body::default()).unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        hosts.lock().unwrap().len(),
        2,
        "the challenge, then the retry"
    );
    assert_eq!(refreshes.load(Ordering::Relaxed), 1, "the login only");
    let api = "https://api.example/".parse().unwrap();
    assert_eq!(dpop.nonce(&api).as_deref(), Some("n1"));
}

// A redirect to another origin that may get the token: its DPoP challenge is not a rejection
// of the token (no refresh) and not the first origin's to retry.
#[cfg(feature = "tower-http")]
#[tokio::test]
async fn a_challenge_from_another_allowed_origin_refreshes_nothing() {
    use tower_http::follow_redirect::FollowRedirectLayer;

    let (dpop, refreshes, refresher) = counted_bound_tokens();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let elsewhere = nonce_api(&hosts, StatusCode::OK);
    let servers = {
        let hosts = Arc::clone(&hosts);
        service_fn(move |request: Request<Body>| {
            let mut elsewhere = elsewhere.clone();
            let hosts = Arc::clone(&hosts);
            async move {
                if request.uri().host() != Some("api.example") {
                    return elsewhere.call(request).await;
                }
                hosts.lock().unwrap().push("api.example".to_owned());
                let mut response = Response::new(Body::default());
                *response.status_mut() = StatusCode::FOUND;
                let location = "https://elsewhere.example/".parse().unwrap();
                response.headers_mut().insert("location", location);
                Ok(response)
            }
        })
    };
    let layer = AuthLayer::new(refresher)
        .allow_origin(Origin::parse("https://api.example").unwrap())
        .allow_origin(Origin::parse("https://elsewhere.example").unwrap());
    let client = tower::ServiceBuilder::new()
        .layer(layer)
        .layer(FollowRedirectLayer::new())
        .service(servers);
    let request = Request::get("https://api.example/me")
        .body(Body::default())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "the challenge, as it came"
    );
    assert_eq!(*hosts.lock().unwrap(), ["api.example", "elsewhere.example"]);
    assert_eq!(refreshes.load(Ordering::Relaxed), 1, "the login only");
    assert_eq!(dpop.nonce(&"https://api.example/".parse().unwrap()), None);
}

// The one retry went to a nonce challenge and the retry's token was rejected: the 401 goes
// back (no third send), and a refresh starts for the next request.
#[tokio::test]
async fn a_rejection_after_a_nonce_retry_starts_a_refresh() {
    let (_dpop, refreshes, refresher) = counted_bound_tokens();
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let client = AuthLayer::new(refresher).layer(nonce_api(&hosts, StatusCode::UNAUTHORIZED));
    let request = Request::get("https://api.example/")
        .body(Body::default())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(hosts.lock().unwrap().len(), 2, "no third send");
    for _ in 0..200 {
        if refreshes.load(Ordering::Relaxed) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        refreshes.load(Ordering::Relaxed),
        2,
        "the login, then a refresh"
    );
}
