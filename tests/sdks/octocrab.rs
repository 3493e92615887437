//! octocrab over the layer: its client takes `Request<OctoBody>`, a body whose clones share
//! one stream, so the default policy refuses it and `BufferBody` mapped back into `OctoBody`
//! replays it.

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use octocrab::{AuthState, OctoBody, Octocrab, OctocrabBuilder};
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::replay::BufferBody;
use tower_auth_refresh::test_util::{Api, IdentityProvider};

use super::servers;

/// octocrab over a plain-HTTP hyper-util client, with the layer in its service stack.
fn octocrab(idp: &IdentityProvider) -> (Octocrab, tower_auth_refresh::AuthHandle) {
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap())
        .replay_policy(BufferBody::default().map_body(OctoBody::new));
    let handle = layer.handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<OctoBody>();
    let octocrab = OctocrabBuilder::new_empty()
        .with_service(client)
        .with_layer(&layer)
        .with_auth(AuthState::None)
        .build()
        .unwrap();
    (octocrab, handle)
}

async fn text(response: http::Response<impl http_body::Body<Error: std::fmt::Debug>>) -> Bytes {
    response.into_body().collect().await.unwrap().to_bytes()
}

// Why the default policy must refuse `OctoBody`: a clone taken before the request is sent
// shares the original's stream, and once the original is sent the clone is empty. Retried,
// that clone would be a POST with no body, and the API below answers it 200.
#[tokio::test]
async fn an_octo_body_clone_is_empty_once_the_original_was_sent() {
    let original = OctoBody::from(String::from(r#"{"title":"x"}"#));
    let clone = original.clone();
    assert_eq!(
        original.collect().await.unwrap().to_bytes(),
        r#"{"title":"x"}"#
    );
    assert!(clone.collect().await.unwrap().to_bytes().is_empty());
}

// The same POST that the default policy used to retry empty: through `BufferBody` mapped back
// into `OctoBody`, the retry carries the whole body, and the API records exactly that body.
#[tokio::test]
async fn a_rejected_octocrab_post_is_retried_with_its_whole_body() {
    let (idp, api) = servers().await;
    let (octocrab, handle) = octocrab(&idp);
    handle.token().await.unwrap();
    idp.revoke_access_tokens();

    let issue = serde_json::json!({"title": "Found a bug", "labels": ["bug"]});
    let response = octocrab
        ._post(api.url("/echo"), Some(&issue))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let sent = Bytes::from(serde_json::to_vec(&issue).unwrap());
    assert_eq!(text(response).await, sent);

    let stats = api.stats();
    assert_eq!(stats.unauthorized, 1, "the first attempt was rejected");
    assert_eq!(
        stats.echo_bodies,
        [sent],
        "the retry carried the whole body"
    );
    assert_eq!(idp.stats().refresh_grants, 1);
}

// Many concurrent octocrab calls: one login; after a revocation, one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_octocrab_calls_share_one_login_and_one_refresh() {
    let (idp, api) = servers().await;
    let (octocrab, _handle) = octocrab(&idp);
    let get_all = |octocrab: &Octocrab, api: &Api| {
        (0..50)
            .map(|_| {
                let (octocrab, url) = (octocrab.clone(), api.url("/user/me"));
                tokio::spawn(async move { octocrab._get(url).await.unwrap().status() })
            })
            .collect::<Vec<_>>()
    };
    for call in get_all(&octocrab, &api) {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    idp.revoke_access_tokens();
    for call in get_all(&octocrab, &api) {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
}
