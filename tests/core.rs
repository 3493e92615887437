//! The core behaviour of `AuthService` over mocks and closures, with tokio's clock paused where
//! time matters.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tokio::time::Instant;
use tower::util::BoxService;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_auth_refresh::replay::NoReplay;
use tower_auth_refresh::test_util::ChunkedBody;
use tower_auth_refresh::{
    AuthLayer, RefreshError, RefreshErrorKind, RefreshReason, RefreshRequest, TokenSet,
};
use tower_test::mock;

#[path = "support/strict_service.rs"]
mod strict_service;
use strict_service::{Strict, served_by};

const LIFETIME: Duration = Duration::from_secs(900);

/// A refresher that hands out `token-1`, `token-2`, … after `delay`, and counts its calls.
#[derive(Clone)]
struct Counter {
    calls: Arc<AtomicUsize>,
    reasons: Arc<std::sync::Mutex<Vec<RefreshReason>>>,
}

impl Counter {
    fn new() -> Self {
        Self {
            calls: Arc::default(),
            reasons: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn reasons(&self) -> Vec<RefreshReason> {
        self.reasons.lock().unwrap().clone()
    }

    fn refresher(&self, delay: Duration) -> BoxService<RefreshRequest, TokenSet, Infallible> {
        let this = self.clone();
        service_fn(move |request: RefreshRequest| {
            let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
            this.reasons.lock().unwrap().push(request.reason());
            async move {
                tokio::time::sleep(delay).await;
                Ok(TokenSet::new(format!("token-{n}")).with_expires_in(LIFETIME))
            }
        })
        .boxed()
    }
}

fn get() -> Request<Full<Bytes>> {
    Request::get("http://127.0.0.1/user/me")
        .body(Full::default())
        .unwrap()
}

fn respond(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

fn bearer(request: &Request<impl Sized>) -> String {
    request
        .headers()
        .get(AUTHORIZATION)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// An API that echoes the token it received, accepting only the tokens `accept` allows.
fn api(
    accept: impl Fn(&str) -> bool + Clone + Send + 'static,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |request: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let token = bearer(&request);
        let status = if accept(token.trim_start_matches("Bearer ")) {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        async move { Ok(respond(status, token)) }
    })
}

async fn body_text(response: Response<Full<Bytes>>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

// 1. The header is attached, sensitive and exact.
#[tokio::test]
async fn attaches_an_exact_sensitive_bearer_header() {
    let counter = Counter::new();
    let layer = AuthLayer::new(counter.refresher(Duration::ZERO));
    let (inner, mut server) = mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut service = layer.layer(inner);

    let call = tokio::spawn(service.ready().await.unwrap().call(get()));
    let (request, reply) = server.next_request().await.unwrap();
    let value = request.headers().get(AUTHORIZATION).unwrap();
    assert_eq!(value, "Bearer token-1");
    assert!(value.is_sensitive());
    assert_eq!(request.headers().get_all(AUTHORIZATION).iter().count(), 1);
    reply.send_response(respond(StatusCode::OK, String::new()));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);

    // The second request is sent at once with the cached token.
    let call = tokio::spawn(service.ready().await.unwrap().call(get()));
    let (request, reply) = server.next_request().await.unwrap();
    assert_eq!(request.headers()[AUTHORIZATION], "Bearer token-1");
    reply.send_response(respond(StatusCode::OK, String::new()));
    call.await.unwrap().unwrap();
    assert_eq!(counter.calls(), 1);
}

#[tokio::test]
async fn a_request_with_its_own_authorization_passes_untouched() {
    let counter = Counter::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(counter.refresher(Duration::ZERO))
        .layer(api(|token| token == "mine", calls.clone()));

    let mut request = get();
    request
        .headers_mut()
        .insert(AUTHORIZATION, "Bearer theirs".parse().unwrap());
    let response = service.oneshot(request).await.unwrap();
    // Not our token: no login, no retry, the 401 comes back.
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_text(response).await, "Bearer theirs");
    assert_eq!(counter.calls(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// The layer looks for the caller's `Authorization` among a few names in turn, and through the
// map's lookup among many: wherever it is, with few names or many, it is found.
#[tokio::test]
async fn the_callers_authorization_is_found_among_few_headers_or_many() {
    let counter = Counter::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthLayer::new(counter.refresher(Duration::ZERO))
        .layer(api(|token| token.starts_with("token-"), calls.clone()));
    for others in [1, 7, 8, 9, 40] {
        for at in [0, others] {
            let mut request = get();
            let headers = request.headers_mut();
            for n in 0..others {
                if n == at {
                    headers.insert(AUTHORIZATION, "Bearer theirs".parse().unwrap());
                }
                headers.insert(
                    format!("x-other-{n}").parse::<http::HeaderName>().unwrap(),
                    "1".parse().unwrap(),
                );
            }
            if at == others {
                headers.insert(AUTHORIZATION, "Bearer theirs".parse().unwrap());
            }
            let response = service.clone().oneshot(request).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{others} others, at {at}"
            );
            assert_eq!(body_text(response).await, "Bearer theirs");
        }
        // Without one, the layer's token goes out, with few names or many.
        let mut request = get();
        for n in 0..others {
            request.headers_mut().insert(
                format!("x-other-{n}").parse::<http::HeaderName>().unwrap(),
                "1".parse().unwrap(),
            );
        }
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(
            body_text(response).await,
            "Bearer token-1",
            "{others} others"
        );
    }
    assert_eq!(
        counter.calls(),
        1,
        "one login, for the requests without their own"
    );
}

// 2. Soft window: one background refresh, no request delayed. Hard window and expiry: requests
// wait, then carry the new token.
#[tokio::test(start_paused = true)]
async fn soft_window_refreshes_in_the_background_and_hard_window_waits() {
    let counter = Counter::new();
    let refresh_takes = Duration::from_secs(1);
    let layer = AuthLayer::new(counter.refresher(refresh_takes))
        .refresh_before(Duration::from_secs(60))
        .wait_before(Duration::from_secs(5));
    let handle = layer.handle();
    let service = layer.layer(api(|_| true, Arc::default()));

    let timed = |service: &_| {
        let service: tower_auth_refresh::AuthService<_> = Clone::clone(service);
        async move {
            let started = Instant::now();
            let response = service.oneshot(get()).await.unwrap();
            (started.elapsed(), body_text(response).await)
        }
    };

    // No token yet: the first request waits for the login.
    assert_eq!(
        timed(&service).await,
        (refresh_takes, "Bearer token-1".into())
    );

    // Fresh: no wait, no refresh.
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        timed(&service).await,
        (Duration::ZERO, "Bearer token-1".into())
    );
    assert_eq!(counter.calls(), 1);

    // Soft window (60 s before expiry): served at once with the old token while one refresh
    // runs in the background.
    tokio::time::sleep(Duration::from_secs(241)).await;
    let token_1 = (Duration::ZERO, "Bearer token-1".to_owned());
    assert_eq!(timed(&service).await, token_1);
    tokio::task::yield_now().await;
    assert_eq!(counter.calls(), 2, "the background refresh started");
    // Requests during that refresh are not delayed either, and start no other refresh.
    tokio::time::sleep(refresh_takes / 2).await;
    for _ in 0..10 {
        assert_eq!(timed(&service).await, token_1);
    }
    assert_eq!(counter.calls(), 2);
    tokio::time::sleep(refresh_takes / 2 + Duration::from_millis(1)).await;
    let token_2 = (Duration::ZERO, "Bearer token-2".to_owned());
    assert_eq!(timed(&service).await, token_2);
    assert_eq!(counter.calls(), 2);
    assert_eq!(counter.reasons()[1], RefreshReason::Expiring);

    // Hard window (5 s before expiry), reached with no request in the soft window: requests
    // wait for the refresh, then carry the new token.
    let token_2_expires = handle.state().unwrap().expires_at();
    tokio::time::sleep_until(token_2_expires - Duration::from_secs(3)).await;
    let (a, b) = tokio::join!(timed(&service), timed(&service));
    assert_eq!(a, (refresh_takes, "Bearer token-3".into()));
    assert_eq!(b, (refresh_takes, "Bearer token-3".into()));
    assert_eq!(counter.calls(), 3);

    // Expired: the same.
    tokio::time::sleep(LIFETIME * 2).await;
    assert_eq!(
        timed(&service).await,
        (refresh_takes, "Bearer token-4".into())
    );
    assert_eq!(counter.calls(), 4);
    assert_eq!(
        counter.reasons(),
        [
            RefreshReason::NoToken,
            RefreshReason::Expiring,
            RefreshReason::Expiring,
            RefreshReason::Expired
        ]
    );
}

// 3a. However many first requests arrive at once, one login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_first_requests_call_the_refresher_once() {
    let counter = Counter::new();
    let service = AuthLayer::new(counter.refresher(Duration::from_millis(20)))
        .layer(api(|token| token == "token-1", Arc::default()));

    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_text(response).await, "Bearer token-1");
    }
    assert_eq!(counter.calls(), 1);
}

// 3b. However many requests are rejected with the same token, one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rejections_of_one_token_cause_one_refresh() {
    let counter = Counter::new();
    let layer = AuthLayer::new(counter.refresher(Duration::from_millis(20)));
    layer.handle().token().await.unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    // The server has revoked token-1.
    let service = layer.layer(api(|token| token == "token-2", calls.clone()));

    let tasks: Vec<_> = (0..1000)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    for task in tasks {
        let response = task.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_text(response).await, "Bearer token-2");
    }
    assert_eq!(counter.calls(), 2, "the login and one refresh");
    assert_eq!(counter.reasons()[1], RefreshReason::Rejected);
    // Requests that started after the refresh went out once, with token-2.
    let sent = calls.load(Ordering::SeqCst);
    assert!(
        (1001..=2000).contains(&sent),
        "{sent}: at most one retry each"
    );
}

// 3c. A 401 for a token that was already replaced: retry with the newer one, no refresh.
#[tokio::test]
async fn a_rejection_of_a_replaced_token_retries_without_refreshing() {
    let counter = Counter::new();
    let layer = AuthLayer::new(counter.refresher(Duration::ZERO));
    let handle = layer.handle();
    let (inner, mut server) = mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut service = layer.layer(inner);

    let call = tokio::spawn(service.ready().await.unwrap().call(get()));
    let (request, reply) = server.next_request().await.unwrap();
    assert_eq!(request.headers()[AUTHORIZATION], "Bearer token-1");
    // While that request is out, the token is replaced.
    handle
        .set_tokens(TokenSet::new("token-from-elsewhere").with_expires_in(LIFETIME))
        .await
        .unwrap();
    reply.send_response(respond(StatusCode::UNAUTHORIZED, String::new()));

    let (retry, reply) = server.next_request().await.unwrap();
    assert_eq!(
        retry.headers()[AUTHORIZATION],
        "Bearer token-from-elsewhere"
    );
    reply.send_response(respond(StatusCode::OK, String::new()));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(counter.calls(), 1, "the login only");
}

// 4. The caller that triggered the refresh goes away: the refresh goes on, the others get
// its token.
#[tokio::test]
async fn a_dropped_caller_does_not_cancel_the_refresh() {
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let refresher = {
        let (calls, started, release) = (calls.clone(), started.clone(), release.clone());
        service_fn(move |_: RefreshRequest| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (started, release) = (started.clone(), release.clone());
            async move {
                started.notify_one();
                release.notified().await;
                Ok::<_, Infallible>(TokenSet::new("token-1").with_expires_in(LIFETIME))
            }
        })
    };
    let layer = AuthLayer::new(refresher);
    let handle = layer.handle();
    let service = layer.layer(api(|token| token == "token-1", Arc::default()));

    let first = tokio::spawn(service.clone().oneshot(get()));
    started.notified().await;
    let others: Vec<_> = (0..10)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    release.notify_one();

    for other in others {
        let response = other.await.unwrap().unwrap();
        assert_eq!(body_text(response).await, "Bearer token-1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(handle.state().unwrap().generation(), 1);
}

// 5. A failed refresh reaches every waiter, once the flight's quick retries (1 + 4 calls) failed
// too; after a backoff, the next request tries again.
#[tokio::test(start_paused = true)]
async fn a_refresh_error_reaches_every_waiter_and_does_not_stick() {
    #[derive(Debug)]
    struct Down;
    impl std::fmt::Display for Down {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("identity provider down")
        }
    }
    impl std::error::Error for Down {}

    let calls = Arc::new(AtomicUsize::new(0));
    let refresher = {
        let calls = calls.clone();
        service_fn(move |_: RefreshRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if n <= FAILING_CALLS {
                    Err(Down)
                } else {
                    Ok(TokenSet::new("token-1").with_expires_in(LIFETIME))
                }
            }
        })
    };
    const FAILING_CALLS: usize = 5;
    let service = AuthLayer::new(refresher).layer(api(|_| true, Arc::default()));

    let waiters: Vec<_> = (0..50)
        .map(|_| tokio::spawn(service.clone().oneshot(get())))
        .collect();
    for waiter in waiters {
        let error = waiter.await.unwrap().unwrap_err();
        let error = error
            .downcast_ref::<RefreshError>()
            .expect("a RefreshError");
        assert_eq!(error.kind(), RefreshErrorKind::Refresher);
        let cause = error.refresher_error().unwrap();
        assert!(cause.downcast_ref::<Down>().is_some());
        assert_eq!(
            std::error::Error::source(error).unwrap().to_string(),
            "identity provider down"
        );
        assert_eq!(
            error.to_string(),
            "the token refresher failed: identity provider down"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), FAILING_CALLS);

    // During the backoff (1 s by default) a request fails at once with the same error,
    // without calling the refresher.
    let started = Instant::now();
    let error = service.clone().oneshot(get()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    let error = error.downcast_ref::<RefreshError>().unwrap();
    assert!(error.is_cached(), "{error}");
    assert!(
        error.to_string().contains("not retried for another"),
        "{error}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), FAILING_CALLS);

    // After it, the next request tries again and succeeds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(body_text(response).await, "Bearer token-1");
    assert_eq!(calls.load(Ordering::SeqCst), FAILING_CALLS + 1);
}

// A refresher that panics does not wedge the cache either: an error, a backoff, another try.
#[tokio::test(start_paused = true)]
async fn a_panicking_refresher_gives_an_error_and_the_next_request_tries_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let refresher = {
        let calls = calls.clone();
        service_fn(move |_: RefreshRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                assert!(n > 1, "refresher bug");
                Ok::<_, Infallible>(TokenSet::new("token-1").with_expires_in(LIFETIME))
            }
        })
    };
    let service = AuthLayer::new(refresher).layer(api(|_| true, Arc::default()));
    let error = service.clone().oneshot(get()).await.unwrap_err();
    let error = error.downcast_ref::<RefreshError>().unwrap();
    assert_eq!(error.kind(), RefreshErrorKind::Aborted);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(body_text(response).await, "Bearer token-1");
}

// 6. A server that rejects everything: one retry, then its 401.
#[tokio::test]
async fn a_server_that_always_rejects_gets_exactly_one_retry() {
    let counter = Counter::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let service =
        AuthLayer::new(counter.refresher(Duration::ZERO)).layer(api(|_| false, calls.clone()));
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(body_text(response).await, "Bearer token-2");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(counter.calls(), 2);
}

// 6a. A request's response future holds no clone of the inner service (a hyper-util
// `Client`'s clone is several reference counts): 100 requests sent with a valid token clone it
// not once. A retry goes through a clone of one the service kept, polled ready first: one
// clone per retry, of a service that must be ready before each call.
#[tokio::test]
async fn requests_clone_the_inner_service_only_to_retry() {
    let counter = Counter::new();
    let inner = Strict::rejecting(["Bearer token-1"]);
    let (clones, rejected) = (Arc::clone(&inner.clones), Arc::clone(&inner.rejected));
    let mut service = AuthLayer::new(counter.refresher(Duration::ZERO)).layer(inner);

    // Log in (token-1), rejected, refreshed (token-2), retried.
    let response = service.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "Bearer token-2");

    let before = clones.load(Ordering::SeqCst);
    for _ in 0..100 {
        let response = service.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        before,
        "clones for 100 requests"
    );

    // The server stops taking token-2: one refresh, one retry, one clone for it.
    rejected.lock().unwrap().push("Bearer token-2".to_owned());
    let response = service.ready().await.unwrap().call(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "Bearer token-3");
    assert_eq!(
        clones.load(Ordering::SeqCst),
        before + 1,
        "clones for one retry"
    );
    assert_eq!(counter.calls(), 3);
}

// 6a'. A retry goes through the inner service of the value that sent the request: a clone
// changed through `get_mut` before it sends keeps its own for its retries, and a value changed
// through `get_mut` after its first retry sends the next retry through the changed one.
#[tokio::test]
async fn a_retry_goes_through_the_inner_service_of_the_value_that_sent_it() {
    let counter = Counter::new();
    let mut inner = Strict::rejecting(["Bearer token-1"]);
    inner.name = "a".to_owned();
    let rejected = Arc::clone(&inner.rejected);
    let mut original = AuthLayer::new(counter.refresher(Duration::ZERO)).layer(inner);
    let mut clone = original.clone();
    clone.get_mut().name = "b".to_owned();
    // Who answered, with which token.
    async fn send(service: &mut tower_auth_refresh::AuthService<Strict>) -> (String, String) {
        let response = service.ready().await.unwrap().call(get()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        (served_by(&response).to_owned(), body_text(response).await)
    }

    // The clone sends first: token-1 is rejected, the retry goes through "b".
    assert_eq!(
        send(&mut clone).await,
        ("b".into(), "Bearer token-2".into())
    );
    // The original's retry goes through its own "a".
    rejected.lock().unwrap().push("Bearer token-2".to_owned());
    assert_eq!(
        send(&mut original).await,
        ("a".into(), "Bearer token-3".into())
    );
    // Changed through `get_mut` after its retries began: the next retry goes through "c".
    original.get_mut().name = "c".to_owned();
    rejected.lock().unwrap().push("Bearer token-3".to_owned());
    assert_eq!(
        send(&mut original).await,
        ("c".into(), "Bearer token-4".into())
    );
    // The clone is untouched by either change.
    rejected.lock().unwrap().push("Bearer token-4".to_owned());
    assert_eq!(
        send(&mut clone).await,
        ("b".into(), "Bearer token-5".into())
    );
    assert_eq!(counter.calls(), 5);
}

// 6b. The retry is the same request, however many values one header has (more than a header
// map may have names); a request whose URI the copy could not keep is sent once.
#[tokio::test]
async fn a_retry_keeps_thirty_thousand_values_of_one_header() {
    let counter = Counter::new();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = Arc::clone(&seen);
    let inner = service_fn(move |request: Request<Full<Bytes>>| {
        let values = request.headers().get_all("x-a").iter().count();
        recorded.lock().unwrap().push((bearer(&request), values));
        let status = if bearer(&request) == "Bearer token-2" {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        async move { Ok::<_, Infallible>(respond(status, String::new())) }
    });
    let service = AuthLayer::new(counter.refresher(Duration::ZERO)).layer(inner);
    let mut request = get();
    for value in 0..30_000_u32 {
        request
            .headers_mut()
            .append("x-a", http::HeaderValue::from(value));
    }
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            ("Bearer token-1".to_owned(), 30_000),
            ("Bearer token-2".to_owned(), 30_000)
        ]
    );
}

#[tokio::test]
async fn an_absolute_request_for_star_is_sent_once() {
    let counter = Counter::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let service =
        AuthLayer::new(counter.refresher(Duration::ZERO)).layer(api(|_| false, calls.clone()));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(http::uri::Authority::from_static("127.0.0.1"));
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("*"));
    let mut request = get();
    *request.method_mut() = http::Method::OPTIONS;
    *request.uri_mut() = http::Uri::from_parts(parts).unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not retried");
}

// 6d. A replay policy of the caller's own: `keep` sees the request before the layer's token
// is attached, `prepare` the request as it is sent (the token attached when it is sent at
// once), and a rejected request is retried from what `keep` kept, with the new token.
#[derive(Clone, Default)]
struct WholeRequest {
    seen: Arc<std::sync::Mutex<Vec<(&'static str, String)>>>,
}

static WHOLE_REQUEST_REPLAYS: AtomicUsize = AtomicUsize::new(0);

impl tower_auth_refresh::replay::ReplayPolicy<Full<Bytes>> for WholeRequest {
    type Body = Full<Bytes>;
    type Kept = Request<Full<Bytes>>;

    fn keep(&self, request: &Request<Full<Bytes>>) -> Option<Self::Kept> {
        self.seen.lock().unwrap().push(("keep", bearer(request)));
        let mut copy = Request::new(request.body().clone());
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.headers_mut() = request.headers().clone();
        Some(copy)
    }

    fn prepare(
        &self,
        request: Request<Full<Bytes>>,
        kept: Option<&Self::Kept>,
    ) -> Request<Full<Bytes>> {
        assert_eq!(kept.map(|kept| kept.uri()), Some(request.uri()));
        self.seen
            .lock()
            .unwrap()
            .push(("prepare", bearer(&request)));
        request
    }

    fn replay(kept: Self::Kept) -> Option<Request<Full<Bytes>>> {
        WHOLE_REQUEST_REPLAYS.fetch_add(1, Ordering::SeqCst);
        Some(kept)
    }
}

#[tokio::test]
async fn a_replay_policy_of_the_callers_own_keeps_before_the_token_and_replays() {
    let counter = Counter::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let policy = WholeRequest::default();
    let service = AuthLayer::new(counter.refresher(Duration::ZERO))
        .replay_policy(policy.clone())
        .layer(api(|token| token != "token-1", calls.clone()));
    // The first request waits for the login (token-1), is rejected, and is retried from the
    // kept copy with token-2.
    let response = service.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "Bearer token-2");
    assert_eq!(WHOLE_REQUEST_REPLAYS.load(Ordering::SeqCst), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The second is sent at once: prepared with the token attached.
    let response = service.oneshot(get()).await.unwrap();
    assert_eq!(body_text(response).await, "Bearer token-2");
    let seen = policy.seen.lock().unwrap().clone();
    let seen: Vec<(&str, &str)> = seen
        .iter()
        .map(|(step, token)| (*step, &token[..]))
        .collect();
    assert_eq!(
        seen,
        [
            ("keep", ""),
            ("prepare", ""),
            ("keep", ""),
            ("prepare", "Bearer token-2"),
        ]
    );
    assert_eq!(WHOLE_REQUEST_REPLAYS.load(Ordering::SeqCst), 1);
}

// 7. A streaming body cannot be replayed: the 401 comes back, the body was sent once, and the
// token is still refreshed for the next request.
#[tokio::test]
async fn a_streaming_body_is_never_sent_twice() {
    let counter = Counter::new();
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = {
        let bodies = bodies.clone();
        service_fn(move |request: Request<ChunkedBody>| {
            let bodies = bodies.clone();
            async move {
                let token = bearer(&request);
                let body = request.into_body().collect().await.unwrap().to_bytes();
                bodies.lock().unwrap().push(body);
                let status = if token == "Bearer token-2" {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                };
                Ok::<_, Infallible>(respond(status, String::new()))
            }
        })
    };
    let layer = AuthLayer::new(counter.refresher(Duration::ZERO)).replay_policy(NoReplay);
    let handle = layer.handle();
    let service = layer.layer(inner);

    let streaming = || {
        Request::post("http://127.0.0.1/echo")
            .body(ChunkedBody::new([
                Bytes::from_static(b"chunk-1,"),
                Bytes::from_static(b"chunk-2"),
            ]))
            .unwrap()
    };
    let response = service.clone().oneshot(streaming()).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        *bodies.lock().unwrap(),
        [Bytes::from_static(b"chunk-1,chunk-2")]
    );

    // The rejection still refreshed the token (in the background): the next request succeeds.
    while handle.state().unwrap().generation() < 2 {
        tokio::task::yield_now().await;
    }
    let response = service.oneshot(streaming()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(bodies.lock().unwrap().len(), 2);
    assert_eq!(counter.calls(), 2);
}

#[tokio::test]
async fn works_under_service_builder_and_as_a_box_clone_sync_service() {
    use tower::util::BoxCloneSyncService;
    let counter = Counter::new();
    let stack = ServiceBuilder::new()
        .layer(AuthLayer::new(counter.refresher(Duration::ZERO)))
        .service(api(|_| true, Arc::default()));
    let boxed: BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, BoxError> =
        BoxCloneSyncService::new(stack);
    let response = boxed.clone().oneshot(get()).await.unwrap();
    assert_eq!(body_text(response).await, "Bearer token-1");
}

#[tokio::test]
async fn inner_errors_pass_through_unchanged() {
    #[derive(Debug, PartialEq)]
    struct Refused;
    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("connection refused")
        }
    }
    impl std::error::Error for Refused {}

    let counter = Counter::new();
    let inner =
        service_fn(|_: Request<Full<Bytes>>| async { Err::<Response<Full<Bytes>>, _>(Refused) });
    let error = AuthLayer::new(counter.refresher(Duration::ZERO))
        .layer(inner)
        .oneshot(get())
        .await
        .unwrap_err();
    assert_eq!(error.downcast_ref::<Refused>(), Some(&Refused));
    assert!(error.downcast_ref::<RefreshError>().is_none());
}

#[tokio::test]
async fn an_access_token_that_is_not_a_header_value_is_a_typed_error() {
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("bad\ntoken")) });
    let error = AuthLayer::new(refresher)
        .layer(api(|_| true, Arc::default()))
        .oneshot(get())
        .await
        .unwrap_err();
    let error = error.downcast_ref::<RefreshError>().unwrap();
    assert_eq!(error.kind(), RefreshErrorKind::InvalidToken);
    assert!(!format!("{error} {error:?}").contains("bad"));
}

#[test]
fn services_are_send_sync_and_clone() {
    fn assert_send_sync_clone<T: Send + Sync + Clone>(_: &T) {}
    let counter = Counter::new();
    let service =
        AuthLayer::new(counter.refresher(Duration::ZERO)).layer(api(|_| true, Arc::default()));
    assert_send_sync_clone(&service);
}

// The wait for a token holds no capacity of the inner service: a refresher that shares the
// API client through a `Buffer` of one slot is not starved by the request waiting for it.
#[tokio::test]
async fn a_waiting_request_holds_no_capacity_the_refresher_needs() {
    use tower::buffer::Buffer;
    let http = Buffer::new(
        service_fn(|_: Request<Full<Bytes>>| async {
            Ok::<_, Infallible>(respond(StatusCode::OK, String::new()))
        }),
        1,
    );
    let refresher = {
        let http = http.clone();
        service_fn(move |_: RefreshRequest| {
            let http = http.clone();
            async move {
                let token_request = Request::post("http://127.0.0.1/token")
                    .body(Full::default())
                    .unwrap();
                http.oneshot(token_request).await?;
                Ok::<_, BoxError>(TokenSet::new("token-1").with_expires_in(LIFETIME))
            }
        })
    };
    let service = AuthLayer::new(refresher).layer(http);
    let outcome = tokio::time::timeout(Duration::from_secs(5), service.oneshot(get())).await;
    assert_eq!(
        outcome.expect("no deadlock").unwrap().status(),
        StatusCode::OK
    );
}

// A waiting request whose service is not ready once the token is there waits for the
// service, holding nothing it would send twice: sent once it is ready, with the token, and
// retried once after a rejection, again only once the service is ready.
#[tokio::test(start_paused = true)]
async fn a_waiting_request_whose_service_is_not_ready_is_sent_once_it_is() {
    let counter = Counter::new();
    let layer = AuthLayer::new(counter.refresher(Duration::from_secs(1)));
    let (inner, mut server) = mock::pair::<Request<Full<Bytes>>, Response<Full<Bytes>>>();
    let mut service = layer.layer(inner);
    let call = tokio::spawn(service.ready().await.unwrap().call(get()));
    // The request waits for the login; meanwhile the API stops taking requests.
    server.allow(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(counter.calls(), 1, "the login");
    let early = tokio::time::timeout(Duration::from_secs(5), server.next_request()).await;
    assert!(early.is_err(), "sent before the service was ready");

    server.allow(1);
    let next = tokio::time::timeout(Duration::from_secs(5), server.next_request()).await;
    let (request, reply) = next.expect("sent once the service is ready").unwrap();
    assert_eq!(request.headers()[AUTHORIZATION], "Bearer token-1");
    reply.send_response(respond(StatusCode::UNAUTHORIZED, String::new()));
    // The retry waits for the refresh, then for the service.
    let early = tokio::time::timeout(Duration::from_secs(5), server.next_request()).await;
    assert!(early.is_err(), "retried before the service was ready");
    assert_eq!(counter.calls(), 2, "the refresh after the rejection");

    server.allow(1);
    let next = tokio::time::timeout(Duration::from_secs(5), server.next_request()).await;
    let (retry, reply) = next.expect("retried once the service is ready").unwrap();
    assert_eq!(retry.headers()[AUTHORIZATION], "Bearer token-2");
    reply.send_response(respond(StatusCode::OK, String::new()));
    assert_eq!(call.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// A replay policy whose copies are counted: each holds a clone of `0`.
#[derive(Clone, Default)]
struct CountedCopies(Arc<()>);

impl CountedCopies {
    /// The clones of `0`: the policy values (this one, the layer's, the service's) and the
    /// copies alive.
    fn count(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl tower_auth_refresh::replay::ReplayPolicy<Full<Bytes>> for CountedCopies {
    type Body = Full<Bytes>;
    type Kept = (Arc<()>, Request<Full<Bytes>>);

    fn keep(&self, request: &Request<Full<Bytes>>) -> Option<Self::Kept> {
        let mut copy = Request::new(request.body().clone());
        *copy.uri_mut() = request.uri().clone();
        Some((Arc::clone(&self.0), copy))
    }

    fn prepare(
        &self,
        request: Request<Full<Bytes>>,
        _: Option<&Self::Kept>,
    ) -> Request<Full<Bytes>> {
        request
    }

    fn replay((_, copy): Self::Kept) -> Option<Request<Full<Bytes>>> {
        Some(copy)
    }
}

// A response that accepts the token lets go of the copy kept for a retry at once, not when
// its future is dropped (a `BufferBody` record holds up to 64 KiB): for a request sent at
// once and for one that waited for the token.
#[tokio::test]
async fn an_answered_request_lets_go_of_its_copy_before_its_future_is_dropped() {
    let counter = Counter::new();
    let policy = CountedCopies::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut service = AuthLayer::new(counter.refresher(Duration::ZERO))
        .replay_policy(policy.clone())
        .layer(api(|_| true, Arc::clone(&calls)));
    let policies = policy.count();
    for case in ["waited for the token", "sent at once"] {
        let mut future = Box::pin(service.ready().await.unwrap().call(get()));
        assert_eq!(policy.count() - policies, 1, "{case}: the copy is kept");
        let response = std::future::poll_fn(|cx| future.as_mut().poll(cx)).await;
        assert_eq!(response.unwrap().status(), StatusCode::OK);
        assert_eq!(
            policy.count(),
            policies,
            "{case}: the copy is gone once answered"
        );
        drop(future);
    }
    assert_eq!((counter.calls(), calls.load(Ordering::SeqCst)), (1, 2));
}

// Logging out while a refresh runs: the refresh does not log the user back in; tokens set
// by the application while a refresh runs are not replaced by it.
#[tokio::test(start_paused = true)]
async fn tokens_cleared_or_set_during_a_refresh_stand() {
    let counter = Counter::new();
    let layer = AuthLayer::new(counter.refresher(Duration::from_secs(1)));
    let handle = layer.handle();

    let refresh = tokio::spawn({
        let handle = handle.clone();
        async move { handle.refresh().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.clear().await.unwrap();
    let error = refresh.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), RefreshErrorKind::Superseded);
    assert!(handle.state().is_none(), "logged back in after clear()");

    let refresh = tokio::spawn({
        let handle = handle.clone();
        async move { handle.refresh().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let set = handle
        .set_tokens(TokenSet::new("from-the-app").with_expires_in(LIFETIME))
        .await
        .unwrap();
    assert_eq!(
        refresh.await.unwrap().unwrap(),
        set,
        "the waiters get the app's tokens"
    );
    assert_eq!(handle.state().unwrap(), set);
}

// A token whose timer died with its runtime is still judged by the clock: an expired token
// is refreshed before use, not sent.
#[test]
fn a_token_outliving_its_runtime_is_still_refreshed_on_time() {
    let counter = Counter::new();
    let layer = AuthLayer::new(counter.refresher(Duration::ZERO));
    let handle = layer.handle();
    let first = tokio::runtime::Runtime::new().unwrap();
    first
        .block_on(async {
            handle
                .set_tokens(TokenSet::new("old").with_expires_in(Duration::from_millis(300)))
                .await
        })
        .unwrap();
    drop(first);

    let service = layer.layer(api(|token| token == "token-1", Arc::default()));
    let body = tokio::runtime::Runtime::new().unwrap().block_on(async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        body_text(service.oneshot(get()).await.unwrap()).await
    });
    assert_eq!(body, "Bearer token-1");
    assert_eq!(counter.reasons(), [RefreshReason::Expired]);
}
