//! The token cache keeps its promises when faults strike at the worst moment: after the
//! identity provider processed a grant, while the caller's runtime goes away or idles, when the
//! API refuses every token, when clocks disagree, with absurd settings.
//!
//! Real sockets against the loopback identity provider and API where a user would have them;
//! tokio's paused clock where only time matters.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_auth_refresh::test_util::{Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{
    AuthLayer, AuthService, BoxError, RefreshErrorKind, RefreshRequest, TokenSet, refresh_error,
};

type Http = Client<HttpConnector, Full<Bytes>>;

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http()
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

async fn status(service: &AuthService<Http>, url: &str) -> Result<StatusCode, BoxError> {
    Ok(service.clone().oneshot(get(url)).await?.status())
}

// 1. A timeout bounds the waiters, not the exchange. The provider rotates the refresh token,
// then answers after the refresh timeout: the waiters time out, the late answer is installed,
// and the next refresh presents the rotated token, so the provider sees no reuse.
#[tokio::test]
async fn a_timeout_bounds_the_waiters_not_the_exchange() {
    let idp = IdentityProvider::start(
        ProviderConfig::default().response_delay(Duration::from_millis(600)),
    )
    .await
    .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .refresh_timeout(Duration::from_millis(200))
        .build();
    let handle = layer.handle();
    let service = layer.layer(http());
    let url = api.url("/user/me");

    // The login is processed, then answered late: the request gets the timeout…
    let error = status(&service, &url).await.unwrap_err();
    assert_eq!(
        refresh_error(&*error).unwrap().kind(),
        RefreshErrorKind::Timeout
    );
    // … and the answer is installed when it comes.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(handle.state().unwrap().generation(), 1);
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);

    // Two refreshes, each rotated by the provider and answered after its waiters gave up.
    for generation in [2, 3] {
        let error = handle.refresh().await.unwrap_err();
        assert_eq!(error.kind(), RefreshErrorKind::Timeout);
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(handle.state().unwrap().generation(), generation);
    }
    let stats = idp.stats();
    assert_eq!(
        (
            stats.password_grants,
            stats.refresh_grants,
            stats.reuse_detected
        ),
        (1, 2, 0),
        "each refresh presented the token the one before rotated in: {stats:?}"
    );
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);
}

// While an exchange runs past its timeout, no second one starts (it would present the refresh
// token the first is about to replace): requests that need a token fail at once, saying why.
#[tokio::test]
async fn no_second_exchange_starts_while_a_late_one_runs() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .refresh_timeout(Duration::from_millis(100))
        .build();
    let handle = layer.handle();
    idp.push_fault(Fault::Delay(Duration::from_millis(800)));
    assert_eq!(
        handle.token().await.unwrap_err().kind(),
        RefreshErrorKind::Timeout
    );
    for _ in 0..5 {
        let error = handle.token().await.unwrap_err();
        assert_eq!(error.kind(), RefreshErrorKind::Timeout);
        assert!(error.is_cached(), "{error}");
        assert!(error.to_string().contains("still running"), "{error}");
    }
    assert_eq!(idp.stats().requests, 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(handle.token().await.unwrap().generation(), 1);
    assert_eq!(idp.stats().requests, 1);
}

// A request that joined the refresh but whose task is next polled only after the late answer
// was installed (its runtime was starved meanwhile): it is sent with that token, not failed
// with the timeout the other waiters got while there was nothing.
#[test]
fn a_waiter_polled_after_the_late_answer_is_sent_with_it() {
    let (_servers, idp, api) = servers(ProviderConfig::default());
    let layer = AuthLayer::builder(idp.refresher_builder().build_http().unwrap())
        .refresh_timeout(Duration::from_millis(100))
        .build();
    let handle = layer.handle();
    let service = layer.layer(http());
    idp.push_fault(Fault::Delay(Duration::from_millis(300)));
    let url = api.url("/user/me");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut request = std::pin::pin!(status(&service, &url));
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(request.as_mut().poll(cx)));
    assert!(
        runtime.block_on(polled).is_pending(),
        "waiting for the login"
    );
    // Nobody drives this runtime: past the timeout, past the late answer.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        handle.state().unwrap().generation(),
        1,
        "the late answer landed"
    );
    assert_eq!(runtime.block_on(request).unwrap(), StatusCode::OK);
    assert_eq!(idp.stats().requests, 1);
}

/// A provider and an API serving from a runtime of their own, for tests whose callers make and
/// drop runtimes.
fn servers(config: ProviderConfig) -> (tokio::runtime::Runtime, IdentityProvider, Api) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (idp, api) = runtime.block_on(async {
        let idp = IdentityProvider::start(config).await.unwrap();
        let api = Api::start(&idp).await.unwrap();
        (idp, api)
    });
    (runtime, idp, api)
}

// 2a. A runtime per call: the caller's runtime shuts down while the provider processes the
// refresh. The refresh is not the caller's: it completes, and the next one uses the rotated
// token.
#[test]
fn a_runtime_that_shuts_down_mid_refresh_loses_nothing() {
    let (_servers, idp, api) =
        servers(ProviderConfig::default().response_delay(Duration::from_millis(300)));
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let handle = layer.handle();
    let service = layer.layer(http());
    let call = |service: &AuthService<Http>| {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(status(service, &api.url("/user/me")))
    };
    assert_eq!(call(&service).unwrap(), StatusCode::OK);

    // A synchronous wrapper that gives up after 50 ms, and drops its runtime with the refresh
    // still at the provider.
    {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let outcome = runtime.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), handle.refresh()).await
        });
        assert!(outcome.is_err(), "the caller gave up first");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        handle.state().unwrap().generation(),
        2,
        "the refresh landed"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(runtime.block_on(handle.refresh()).unwrap().generation(), 3);
    drop(runtime);
    assert_eq!(call(&service).unwrap(), StatusCode::OK);
    let stats = idp.stats();
    assert_eq!(
        (
            stats.password_grants,
            stats.refresh_grants,
            stats.reuse_detected
        ),
        (1, 2, 0),
        "{stats:?}"
    );
}

// 2b. A refresh started from a current-thread runtime that then stops being driven (alive,
// idle) does not hang the requests of other runtimes, and its timeout still fires.
#[test]
fn an_idle_runtime_does_not_stall_other_callers() {
    let (_servers, idp, api) =
        servers(ProviderConfig::default().response_delay(Duration::from_millis(200)));
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let service = layer.layer(http());
    let url = api.url("/user/me");

    let idle = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = idle.block_on(async {
        tokio::time::timeout(Duration::from_millis(20), status(&service, &url)).await
    });
    assert!(started.is_err(), "the login was still running");
    // `idle` lives on, undriven. Another runtime's request gets the login's token.
    let other = tokio::runtime::Runtime::new().unwrap();
    let outcome = other.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), status(&service, &url)).await
    });
    assert_eq!(outcome.expect("no hang").unwrap(), StatusCode::OK);
    assert_eq!(idp.stats().password_grants, 1);
    drop(idle);
}

// 3. A current-thread runtime that idles between `block_on` calls (a blocking client's
// pattern): no timer of it needs to run for the token's expiry to be seen. The expired token
// is never sent; the request waits for a refresh instead.
#[test]
fn an_expired_token_is_never_sent_because_a_timer_did_not_fire() {
    let (_servers, idp, api) =
        servers(ProviderConfig::default().access_lifetime(Duration::from_secs(2)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let service = AuthLayer::new(idp.refresher_builder().build_http().unwrap()).layer(http());
    let url = api.url("/user/me");
    assert_eq!(
        runtime.block_on(status(&service, &url)).unwrap(),
        StatusCode::OK
    );
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(
        runtime.block_on(status(&service, &url)).unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        api.stats().unauthorized,
        0,
        "the expired token never went out"
    );
    assert_eq!(idp.stats().refresh_grants, 1);
}

// 4. An API that answers 401 for a reason other than the token: a refresh, one retry, and then
// the 401s go back as they are; not a refresh per request.
#[tokio::test]
async fn a_401_is_not_a_licence_to_refresh_without_limit() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let service = AuthLayer::new(idp.refresher_builder().build_http().unwrap()).layer(http());
    let url = api.url("/user/me");
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);

    api.push_unauthorized(1_000);
    for _ in 0..50 {
        assert_eq!(
            status(&service, &url).await.unwrap(),
            StatusCode::UNAUTHORIZED
        );
    }
    let stats = idp.stats();
    assert_eq!(
        stats.password_grants + stats.refresh_grants,
        2,
        "one login and one refresh for 50 rejected requests"
    );
    assert_eq!(api.stats().requests, 1 + 51, "one retry in all");

    // Concurrent requests behave alike.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (service, url) = (service.clone(), url.clone());
            tokio::spawn(async move { status(&service, &url).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(idp.stats().refresh_grants, 1);
}

// A server that revokes tokens twice in a row is not mistaken for one that refuses every token:
// the token got after the first revocation was accepted before the second.
#[tokio::test]
async fn revocations_in_a_row_are_each_recovered() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let service = AuthLayer::new(idp.refresher_builder().build_http().unwrap()).layer(http());
    let url = api.url("/user/me");
    assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);
    for _ in 0..5 {
        idp.revoke_access_tokens();
        assert_eq!(status(&service, &url).await.unwrap(), StatusCode::OK);
    }
    assert_eq!(idp.stats().refresh_grants, 5);
}

// 4, the other half. A redirect followed inside the stack ends at another origin, whose 401
// says nothing about this layer's token: no refresh, no retry.
#[cfg(feature = "tower-http")]
#[tokio::test]
async fn a_401_from_another_origin_after_a_redirect_causes_no_refresh() {
    use tower_auth_refresh::Origin;
    use tower_http::follow_redirect::FollowRedirectLayer;

    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let elsewhere = Api::start(&idp).await.unwrap();
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap())
        .allow_origin(Origin::parse(&api.origin()).unwrap());
    let service = ServiceBuilder::new()
        .layer(layer)
        .layer(FollowRedirectLayer::new())
        .service(http());
    let to = elsewhere.url("/user/me");
    let redirect = api.url(&format!("/redirect?to={}", urlencode(&to)));
    let response = service.oneshot(get(&redirect)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(elsewhere.stats().missing_token, 1, "the token stayed home");
    assert_eq!(elsewhere.stats().requests, 1, "no retry");
    assert_eq!(idp.stats().refresh_grants, 0, "no refresh");
}

#[cfg(feature = "tower-http")]
fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A JWT-shaped token whose issuer's clock is `offset` seconds from this one's.
fn jwt_issued(offset: i64, lifetime: u64, n: usize) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let iat = now + offset;
    let payload = format!(r#"{{"iat":{iat},"exp":{},"n":{n}}}"#, iat + lifetime as i64);
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(payload)
    )
}

fn accepting_api() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(|request: Request<Full<Bytes>>| async move {
        assert!(request.headers().contains_key(AUTHORIZATION));
        Ok(Response::new(Full::default()))
    })
}

// 5. This machine's clock runs two hours ahead of the issuer's, and the token response has no
// `expires_in`: by `exp` every token is expired on arrival; `exp − iat` is its lifetime.
#[tokio::test(start_paused = true)]
async fn clock_skew_never_causes_a_refresh_per_request() {
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher = {
        let calls = calls.clone();
        service_fn(move |_: RefreshRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(TokenSet::new(jwt_issued(-7200, 900, n))) }
        })
    };
    let service = AuthLayer::new(refresher).layer(accepting_api());
    for _ in 0..20 {
        service
            .clone()
            .oneshot(get("http://127.0.0.1/x"))
            .await
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// 5, the other half. A token that is expired on arrival whatever the claims say counts as a
// failed refresh, with a backoff: never a loop.
#[tokio::test(start_paused = true)]
async fn a_token_expired_on_arrival_is_a_failure_with_a_backoff() {
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher = {
        let calls = calls.clone();
        service_fn(move |_: RefreshRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let gone = tokio::time::Instant::now() - Duration::from_secs(1);
                Ok::<_, Infallible>(
                    TokenSet::new("stale")
                        .with_expires_at(gone)
                        .with_refresh_token("rotated"),
                )
            }
        })
    };
    let service = AuthLayer::new(refresher).layer(accepting_api());
    for _ in 0..20 {
        let error = service
            .clone()
            .oneshot(get("http://127.0.0.1/x"))
            .await
            .unwrap_err();
        assert_eq!(
            refresh_error(&*error).unwrap().kind(),
            RefreshErrorKind::AlreadyExpired
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// 7. A cold start with a token endpoint that answers 503 three times: the flight retries at
// once for the requests that wait, and the first request succeeds within about 1.5 s.
#[tokio::test(start_paused = true)]
async fn a_cold_start_survives_a_few_transient_failures() {
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher = {
        let calls = calls.clone();
        service_fn(move |_: RefreshRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                if n <= 3 {
                    Err(std::io::Error::other("503 Service Unavailable"))
                } else {
                    Ok(TokenSet::new("token").with_expires_in(Duration::from_secs(900)))
                }
            }
        })
    };
    let service = AuthLayer::new(refresher).layer(accepting_api());
    let started = tokio::time::Instant::now();
    let requests: Vec<_> = (0..15)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100) * i).await;
                service.oneshot(get("http://127.0.0.1/x")).await.unwrap();
                tokio::time::Instant::now()
            })
        })
        .collect();
    let mut first_done = None;
    for request in requests {
        let done = request.await.unwrap();
        first_done.get_or_insert(done);
    }
    let first = first_done.unwrap() - started;
    assert!(first <= Duration::from_millis(1500), "{first:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

// The same against the loopback provider over real sockets.
#[tokio::test]
async fn a_cold_start_survives_three_503s_from_the_provider() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    for _ in 0..3 {
        idp.push_fault(Fault::service_unavailable_html());
    }
    let service = AuthLayer::new(idp.refresher_builder().build_http().unwrap()).layer(http());
    assert_eq!(
        status(&service, &api.url("/user/me")).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(idp.stats().requests, 4);
}

// 8. Errors explain themselves in one line, and a tower user gets the `RefreshError` (and the
// OAuth2 error in it) out of the stack's `BoxError`, through `Buffer` and `Timeout`.
#[tokio::test]
async fn errors_explain_themselves_through_the_stack() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let wrong = idp
        .refresher_builder()
        .password("reader", "wrong password")
        .build_http()
        .unwrap();
    let service = ServiceBuilder::new()
        .buffer(16)
        .timeout(Duration::from_secs(10))
        .layer(AuthLayer::new(wrong))
        .service(http());
    let error = service
        .oneshot(get(&api.url("/user/me")))
        .await
        .unwrap_err();
    let refresh = refresh_error(&*error).expect("a RefreshError in the chain");
    let shown = refresh.to_string();
    assert!(shown.contains("invalid_grant"), "{shown}");
    assert!(shown.contains("Invalid user credentials"), "{shown}");
    assert!(!shown.contains("wrong password"), "{shown}");
    let oauth2 = refresh
        .refresher_error()
        .and_then(|e| e.downcast_ref::<tower_auth_refresh::oauth2::Error>())
        .expect("the OAuth2 error");
    assert_eq!(oauth2.error_code(), Some("invalid_grant"));
}

// The cache keeps the refresh token of an answer it could not use: a refresher that never saw
// that answer (new credentials, a restarted refresher) presents the rotated token, not the spent
// one.
#[tokio::test]
async fn the_cache_keeps_a_refresh_token_from_a_refused_answer() {
    use tower_auth_refresh::test_util::AfterGrant;
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let handle = layer.handle();
    handle.token().await.unwrap();
    // The provider rotates, then answers with a token type this client cannot use.
    idp.push_fault(Fault::AfterGrant(AfterGrant::Set(
        "token_type",
        serde_json::json!("mac"),
    )));
    handle.refresh().await.unwrap_err();
    assert_eq!(idp.stats().refresh_grants, 1);
    // A refresher with no memory of that answer.
    handle
        .set_refresher(idp.refresher_builder().build_http().unwrap())
        .await;
    handle.refresh().await.unwrap();
    let stats = idp.stats();
    assert_eq!(
        (
            stats.password_grants,
            stats.refresh_grants,
            stats.reuse_detected
        ),
        (1, 2, 0),
        "{stats:?}"
    );
}
