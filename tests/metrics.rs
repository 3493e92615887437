//! The metrics the layer records through the `metrics` facade, seen by a recorder.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

type Entry = (
    metrics_util::CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
);
use tower::Layer;
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};

/// Counter values by name and sorted labels, e.g. `refreshes_total{outcome=refreshed,reason=forced}`.
fn counters(snapshot: &[Entry]) -> HashMap<String, u64> {
    snapshot
        .iter()
        .filter_map(|(key, _, _, value)| {
            let DebugValue::Counter(count) = value else {
                return None;
            };
            let count = *count;
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|label| format!("{}={}", label.key(), label.value()))
                .collect();
            labels.sort();
            let name = key.name().trim_start_matches("tower_auth_refresh_");
            Some((format!("{name}{{{}}}", labels.join(",")), count))
        })
        .collect()
}

#[tokio::test]
async fn refreshes_rejections_retries_and_waits_are_counted() {
    // The flights record on the layer's own runtime thread: a global recorder sees them.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let handle = layer.handle();
    let service = layer.layer(Client::builder(TokioExecutor::new()).build_http());
    let get = || {
        Request::get(api.url("/user/me"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let status = |service: &tower_auth_refresh::AuthService<_>| {
        let service = service.clone();
        async move { service.oneshot(get()).await.unwrap().status() }
    };

    assert_eq!(status(&service).await, StatusCode::OK); // waits for the login
    handle.refresh().await.unwrap();
    idp.revoke_access_tokens();
    assert_eq!(status(&service).await, StatusCode::OK); // a rejection, a refresh, a retry
    api.push_unauthorized(3);
    for _ in 0..2 {
        // The token got because of the rejection is refused at once: no second refresh.
        status(&service).await;
    }

    // A snapshot drains what it reads: one for everything.
    let snapshot = snapshotter.snapshot().into_vec();
    let latencies: usize = snapshot
        .iter()
        .filter(|(key, ..)| key.key().name() == "tower_auth_refresh_refresh_seconds")
        .map(|(_, _, _, value)| match value {
            DebugValue::Histogram(values) => values.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(latencies, 4, "one latency per refresh");
    let counters = counters(&snapshot);
    let count = |key: &str| counters.get(key).copied().unwrap_or(0);
    assert_eq!(
        count("refreshes_total{outcome=refreshed,reason=no_token}"),
        1,
        "{counters:#?}"
    );
    assert_eq!(count("refreshes_total{outcome=refreshed,reason=forced}"), 1);
    assert_eq!(
        count("refreshes_total{outcome=refreshed,reason=rejected}"),
        2,
        "{counters:#?}"
    );
    assert_eq!(
        count("rejections_total{refreshed=true}"),
        2,
        "{counters:#?}"
    );
    assert_eq!(
        count("rejections_total{refreshed=false}"),
        1,
        "{counters:#?}"
    );
    assert_eq!(count("retries_total{}"), 2);
    assert_eq!(count("waits_total{}"), 1);

    #[cfg(feature = "dpop")]
    dpop_challenges_are_counted(&snapshotter).await;
}

/// DPoP nonce challenges: one met at the token endpoint (the login), one at the API, and one
/// returned to the caller (a request that cannot be sent again); none counts as a rejection.
/// (In the same test: the recorder is global, and a snapshot drains what it read.)
#[cfg(feature = "dpop")]
async fn dpop_challenges_are_counted(snapshotter: &metrics_util::debugging::Snapshotter) {
    use tower_auth_refresh::dpop::Dpop;
    use tower_auth_refresh::replay::NoReplay;

    let config = ProviderConfig::default().dpop(true).dpop_nonce(true);
    let idp = IdentityProvider::start(config).await.unwrap();
    let api = Api::start(&idp).await.unwrap();
    api.set_dpop_nonce(true);
    let refresher = idp.refresher_builder().dpop(Dpop::generate().unwrap());
    let layer = AuthLayer::new(refresher.build_http().unwrap());
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let get = || {
        Request::get(api.url("/user/me"))
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    let client = layer.clone().layer(http.clone());
    for _ in 0..2 {
        assert_eq!(
            client.clone().oneshot(get()).await.unwrap().status(),
            StatusCode::OK
        );
    }
    // Twice: the nonce before the current one is still taken.
    api.rotate_dpop_nonce();
    api.rotate_dpop_nonce();
    let unreplayable = layer.replay_policy(NoReplay).layer(http);
    let response = unreplayable.oneshot(get()).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "returned as it came"
    );

    let counters = counters(&snapshotter.snapshot().into_vec());
    let count = |key: &str| counters.get(key).copied().unwrap_or(0);
    assert_eq!(
        count("dpop_nonce_retries_total{server=token_endpoint}"),
        1,
        "{counters:#?}"
    );
    assert_eq!(count("dpop_nonce_retries_total{server=resource}"), 1);
    assert_eq!(
        count("dpop_challenges_returned_total{challenge=use_dpop_nonce}"),
        1
    );
    let rejections: u64 = counters
        .iter()
        .filter(|(key, _)| key.starts_with("rejections_total"))
        .map(|(_, count)| count)
        .sum();
    assert_eq!(rejections, 0, "no challenge is a rejection: {counters:#?}");
    assert_eq!(idp.stats().refresh_grants, 0);
}
