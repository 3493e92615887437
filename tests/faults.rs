//! The fault suite: a misbehaving token endpoint or API, against the loopback identity
//! provider and API. Each test is one row of the README's fault table.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::{BoxError, Layer, ServiceExt};
use tower_auth_refresh::oauth2::{ErrorKind, HttpClient};
use tower_auth_refresh::test_util::{Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, AuthService, RefreshError, RefreshErrorKind};

#[derive(Clone)]
struct Rig {
    idp: IdentityProvider,
    api: Api,
    service: AuthService<HttpClient>,
}

async fn rig(config: ProviderConfig, layer: impl FnOnce(AuthLayer) -> AuthLayer) -> Rig {
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = layer(AuthLayer::new(
        idp.refresher_builder().build_http().unwrap(),
    ));
    Rig {
        service: layer.layer(Client::builder(TokioExecutor::new()).build_http()),
        idp,
        api,
    }
}

impl Rig {
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
// (here at least the server's Retry-After) ends; then the next request tries again.
#[tokio::test]
async fn a_429_with_retry_after_is_honoured() {
    let rig = rig(ProviderConfig::default(), |layer| {
        layer.retry_backoff(Duration::from_millis(10), Duration::from_millis(20))
    })
    .await;
    rig.idp.push_fault(Fault::too_many_requests(1));
    let error = rig.get().await.unwrap_err();
    let error = refresh_error(&error);
    assert_eq!(oauth2_kind(error), Some(ErrorKind::Transient));

    let started = Instant::now();
    while Instant::now() - started < Duration::from_millis(800) {
        let error = rig.get().await.unwrap_err();
        assert_eq!(
            oauth2_kind(refresh_error(&error)),
            Some(ErrorKind::Transient)
        );
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
    assert!(
        (1..=4).contains(&attempts),
        "{attempts} refresh attempts in 1 s"
    );
    rig.idp.set_fault(None);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rig.get().await.unwrap(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rig.idp.stats().refresh_grants, 1);
}

// The token endpoint fails while 500 requests wait: every one gets the error, none hangs, the
// endpoint saw one call; after recovery the next request succeeds.
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
        1,
        "one call to the token endpoint"
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
