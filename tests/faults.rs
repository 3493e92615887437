//! The fault suite: a misbehaving token endpoint or API, against the loopback identity
//! provider and API. Each test is one row of the README's fault table.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{BoxError, Layer};
use tower_auth_refresh::oauth2::{ErrorKind, HttpClient};
use tower_auth_refresh::test_util::{Api, ChunkedBody, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{
    AuthLayer, AuthLayerBuilder, AuthService, RefreshError, RefreshErrorKind,
};

#[derive(Clone)]
struct Rig {
    idp: IdentityProvider,
    api: Api,
    layer: AuthLayer,
    service: AuthService<HttpClient>,
}

async fn rig(
    config: ProviderConfig,
    layer: impl FnOnce(AuthLayerBuilder) -> AuthLayerBuilder,
) -> Rig {
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = layer(AuthLayer::builder(
        idp.refresher_builder().build_http().unwrap(),
    ))
    .build();
    Rig {
        service: layer.layer(Client::builder(TokioExecutor::new()).build_http()),
        layer,
        idp,
        api,
    }
}

impl Rig {
    fn handle(&self) -> tower_auth_refresh::AuthHandle {
        self.layer.handle()
    }

    async fn get(&self) -> Result<StatusCode, BoxError> {
        let request = Request::get(self.api.url("/user/me")).body(Full::<Bytes>::default())?;
        let response = self.service.clone().oneshot(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        Ok(status)
    }
}

fn refresh_error(error: &BoxError) -> &RefreshError {
    error.downcast_ref().expect("a RefreshError")
}

fn oauth2_kind(error: &RefreshError) -> Option<ErrorKind> {
    error
        .refresher_error()?
        .downcast_ref::<tower_auth_refresh::oauth2::Error>()
        .map(|error| error.kind())
}

// Rejected credentials are terminal: one attempt, then every request fails at once with the
// same error and the token endpoint hears nothing more, until the application acts.
#[tokio::test]
async fn rejected_credentials_stop_all_further_attempts() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let wrong = idp
        .refresher_builder()
        .password("reader", "wrong")
        .build_http()
        .unwrap();
    let layer = AuthLayer::new(wrong);
    let handle = layer.handle();
    let service = layer.layer(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let get = || {
        Request::get(api.url("/user/me"))
            .body(Full::default())
            .unwrap()
    };

    for _ in 0..20 {
        let error = service.clone().oneshot(get()).await.unwrap_err();
        assert_eq!(
            oauth2_kind(refresh_error(&error)),
            Some(ErrorKind::CredentialsRejected)
        );
    }
    assert_eq!(idp.stats().requests, 1, "one login attempt for 20 requests");

    // New credentials end it.
    handle
        .set_refresher(idp.refresher_builder().build_http().unwrap())
        .await;
    assert_eq!(
        service.oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(idp.stats().password_grants, 1);
}

// A transient failure backs off: requests fail fast with the last error until the backoff
// (here at least the server's Retry-After, longer than the requests may wait) ends; then the
// next request tries again.
#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    let rig = rig(ProviderConfig::default(), |layer| {
        layer
            .retry_backoff(Duration::from_millis(10), Duration::from_millis(20))
            .refresh_timeout(Duration::from_millis(500))
    })
    .await;
    rig.idp.push_fault(Fault::too_many_requests(1));
    let error = rig.get().await.unwrap_err();
    let error = refresh_error(&error);
    assert_eq!(oauth2_kind(error), Some(ErrorKind::Transient));
    assert!(!error.is_cached(), "the answer of a call: {error}");

    let started = Instant::now();
    while Instant::now() - started < Duration::from_millis(800) {
        let error = rig.get().await.unwrap_err();
        let error = refresh_error(&error);
        assert_eq!(oauth2_kind(error), Some(ErrorKind::Transient));
        assert!(error.is_cached(), "{error}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        rig.idp.stats().requests,
        1,
        "nothing sent before Retry-After"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    assert_eq!(rig.idp.stats().password_grants, 1);
}

// A token endpoint that never answers: waiters get a timeout error, nothing hangs.
#[tokio::test]
async fn a_hung_token_endpoint_times_out() {
    let rig = rig(ProviderConfig::default(), |layer| {
        layer.refresh_timeout(Duration::from_millis(300))
    })
    .await;
    rig.idp.push_fault(Fault::Hang);
    let started = Instant::now();
    let outcomes = futures(10, || {
        let rig = rig.clone();
        async move { rig.get().await }
    })
    .await;
    for outcome in outcomes {
        let error = outcome.unwrap_err();
        assert_eq!(refresh_error(&error).kind(), RefreshErrorKind::Timeout);
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(rig.idp.stats().requests, 1);
}

// A token endpoint that answers after 10 s is the same as one that hangs.
#[tokio::test]
async fn a_slow_token_endpoint_times_out() {
    let rig = rig(ProviderConfig::default(), |layer| {
        layer.refresh_timeout(Duration::from_millis(300))
    })
    .await;
    rig.idp.push_fault(Fault::Delay(Duration::from_secs(10)));
    let started = Instant::now();
    let error = rig.get().await.unwrap_err();
    assert_eq!(refresh_error(&error).kind(), RefreshErrorKind::Timeout);
    assert!(started.elapsed() < Duration::from_secs(5));
}

// A background refresh that fails keeps the still-valid token in service and does not make
// every request in the soft window hammer the token endpoint.
#[tokio::test]
async fn a_failing_background_refresh_keeps_serving_and_backs_off() {
    let rig = rig(
        ProviderConfig::default().access_lifetime(Duration::from_secs(4)),
        |layer| layer.retry_backoff(Duration::from_millis(400), Duration::from_millis(400)),
    )
    .await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    // Into the soft window (the last 2 s of 4), with the endpoint down.
    rig.idp.set_fault(Some(Fault::service_unavailable_html()));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let started = Instant::now();
    let mut requests = 0;
    while started.elapsed() < Duration::from_millis(1000) {
        assert_eq!(
            rig.get().await.unwrap(),
            StatusCode::OK,
            "the old token still works"
        );
        requests += 1;
    }
    let attempts = rig.idp.stats().requests - 1;
    assert!(requests > 50, "{requests}");
    // The backoff is jittered over its upper half: 200–400 ms, so at most 1 + 1000 / 200.
    assert!(
        (1..=6).contains(&attempts),
        "{attempts} refresh attempts in 1 s"
    );
    rig.idp.set_fault(None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rig.idp.stats().refresh_grants, 1);
}

// The token endpoint fails while 500 requests wait: every one gets the error, none hangs, the
// endpoint saw one call and the flight's quick retries; after recovery the next request
// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_waiters_share_one_failure() {
    let rig = rig(ProviderConfig::default(), |layer| {
        layer.retry_backoff(Duration::from_secs(1), Duration::from_secs(1))
    })
    .await;
    rig.idp.set_fault(Some(Fault::service_unavailable_html()));
    let outcomes = futures(500, || {
        let rig = rig.clone();
        async move { rig.get().await }
    })
    .await;
    for outcome in outcomes {
        let error = outcome.unwrap_err();
        assert_eq!(
            oauth2_kind(refresh_error(&error)),
            Some(ErrorKind::Transient)
        );
    }
    assert_eq!(
        rig.idp.stats().requests,
        5,
        "one call to the token endpoint, and four quick retries"
    );

    rig.idp.set_fault(None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    assert_eq!(rig.idp.stats().password_grants, 1);
}

/// Runs `n` futures made by `make` concurrently on the runtime, in order.
async fn futures<F>(n: usize, make: impl Fn() -> F) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(make())).collect();
    let mut outputs = Vec::with_capacity(n);
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

// Answers of the token endpoint that cannot be used: each a typed error, never a panic, and
// the session survives them.
#[tokio::test]
async fn unusable_token_responses_are_typed_errors() {
    let rig = rig(ProviderConfig::default(), |layer| layer).await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    let huge = format!(r#"{{"access_token":"{}"}}"#, "a".repeat(1024 * 1024));
    let bodies = [
        r#"{"access_token":"abc""#,
        "<html>not json</html>",
        &huge,
        r#"{"token_type":"Bearer","expires_in":900}"#,
        "{\"access_token\":\"abc\\ndef\",\"token_type\":\"Bearer\"}",
        "{\"access_token\":\"abc\\u0007\",\"token_type\":\"Bearer\"}",
        // An implausible `expires_in` is ignored, not refused (tests/oauth2_refusals.rs).
        r#"{"access_token":"abc","token_type":"mac"}"#,
    ];
    for body in bodies {
        rig.idp.push_fault(Fault::json(StatusCode::OK, body));
        let error = rig.handle().refresh().await.unwrap_err();
        let shown: String = body.chars().take(50).collect();
        assert_eq!(
            oauth2_kind(&error),
            Some(ErrorKind::InvalidResponse),
            "{shown}"
        );
    }
    // The session is intact.
    rig.handle().refresh().await.unwrap();
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    assert_eq!(rig.idp.stats().password_grants, 1);
}

// The API's 401, with or without `WWW-Authenticate: Bearer error="invalid_token"`: recovered.
#[tokio::test]
async fn a_401_with_or_without_www_authenticate_is_recovered() {
    let rig = rig(ProviderConfig::default(), |layer| layer).await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    for www_authenticate in [false, true] {
        rig.api.set_www_authenticate(www_authenticate);
        rig.idp.revoke_access_tokens();
        assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    }
    assert_eq!(rig.api.stats().unauthorized, 2);
    assert_eq!(rig.idp.stats().refresh_grants, 2);
}

// 401 twice in a row: one retry, and the second 401 goes back.
#[tokio::test]
async fn a_second_401_is_returned_as_it_is() {
    let rig = rig(ProviderConfig::default(), |layer| layer).await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    rig.api.push_unauthorized(2);
    assert_eq!(rig.get().await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(rig.api.stats().unauthorized, 2);
    assert_eq!(rig.idp.stats().refresh_grants, 1);
    // And the next request works with the refreshed token.
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
}

// 403 is not a rejection of the token (by default): no refresh, no retry.
#[tokio::test]
async fn a_403_is_not_a_rejection() {
    let rig = rig(ProviderConfig::default(), |layer| layer).await;
    let request = Request::get(rig.api.url("/forbidden"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = rig.service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(rig.api.stats().requests, 1);
    assert_eq!(rig.idp.stats().refresh_grants, 0);
}

// A streaming body under the cap is replayed from the buffer: the retry carries the identical
// body. Over the cap, the 401 goes back and the body was sent once.
#[tokio::test]
async fn streaming_bodies_replay_under_the_cap_only() {
    use tower_auth_refresh::replay::BufferBody;
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap())
        .replay_policy(BufferBody::new(1024));
    let handle = layer.handle();
    let client = layer.layer(
        Client::builder(TokioExecutor::new())
            .build_http::<tower_auth_refresh::replay::ReplayBody<ChunkedBody>>(),
    );
    handle.token().await.unwrap();
    let post = |chunks: Vec<Bytes>| {
        Request::post(api.url("/echo"))
            .body(ChunkedBody::new(chunks))
            .unwrap()
    };

    idp.revoke_access_tokens();
    let small = vec![Bytes::from_static(b"{\"page\":"), Bytes::from_static(b"1}")];
    let response = client.clone().oneshot(post(small)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echoed = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(echoed, "{\"page\":1}");
    assert_eq!(
        api.stats().echo_bodies,
        [Bytes::from_static(b"{\"page\":1}")]
    );
    assert_eq!((api.stats().requests, api.stats().unauthorized), (2, 1));

    idp.revoke_access_tokens();
    let large = vec![Bytes::from(vec![b'x'; 1000]), Bytes::from(vec![b'y'; 1000])];
    let response = client.oneshot(post(large)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = api.stats();
    assert_eq!(stats.requests, 3, "the large body was sent once");
    assert_eq!(stats.echo_bodies.len(), 1);
}

// django-oauth-toolkit answers a revoked token with a bare 403: the default (401 only) never
// refreshes; the preset for such servers does, once.
#[tokio::test]
async fn a_bare_403_is_a_rejection_with_the_preset_for_such_servers() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    api.set_bare_403(true);
    let client = || Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get = || {
        Request::get(api.url("/user/me"))
            .body(Full::default())
            .unwrap()
    };
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let default = layer.layer(client());
    let preset = layer
        .clone()
        .rejection(tower_auth_refresh::Rejection::status_401_or_bare_403())
        .layer(client());
    assert_eq!(
        default.clone().oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );

    idp.revoke_access_tokens();
    let status = default.oneshot(get()).await.unwrap().status();
    assert_eq!(status, StatusCode::FORBIDDEN, "the default ignores a 403");
    assert_eq!(idp.stats().refresh_grants, 0);
    assert_eq!(
        preset.oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(idp.stats().refresh_grants, 1);
}
