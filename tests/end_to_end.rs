//! End to end over real sockets: a hyper-util `Client` wrapped in the layer, a hyper server on
//! 127.0.0.1 playing the API, another playing the identity provider.

use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceBuilder};
use tower_auth_refresh::oauth2::HttpClient;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, AuthService};

async fn servers() -> (IdentityProvider, Api) {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    (idp, api)
}

// A token revoked by the server: the 401 is answered by one refresh and one retry; the
// caller never sees it.
#[tokio::test]
async fn a_revoked_token_is_recovered_without_the_caller_noticing() {
    let (idp, api) = servers().await;
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());

    let get = || {
        Request::get(api.url("/user/me"))
            .body(Full::default())
            .unwrap()
    };
    let response = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    idp.revoke_access_tokens();
    let response = client.clone().oneshot(get()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"username\":\"reader\""));

    assert_eq!(api.stats().unauthorized, 1);
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
}

// A POST with a JSON body is retried with the identical body.
#[tokio::test]
async fn a_rejected_post_is_retried_with_its_body() {
    let (idp, api) = servers().await;
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let handle = layer.handle();
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    handle.token().await.unwrap();
    idp.revoke_access_tokens();

    let json = Bytes::from_static(br#"{"title":"Yotsuba&!","tags":["comedy"]}"#);
    let request = Request::post(api.url("/echo"))
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(json.clone()))
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        json
    );
    let stats = api.stats();
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(stats.echo_bodies, [json]);
}

// The whole session ended on the server: the refresh token is refused, so the refresher logs
// in again, and the request still succeeds.
#[tokio::test]
async fn an_ended_session_is_recovered_by_a_new_login() {
    let (idp, api) = servers().await;
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let client = client(layer);
    let get = || {
        Request::get(api.url("/auth/check"))
            .body(Full::default())
            .unwrap()
    };
    assert_eq!(
        client.clone().oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );

    idp.revoke_sessions();
    assert_eq!(
        client.oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    let stats = idp.stats();
    assert_eq!(stats.password_grants, 2);
    assert_eq!(stats.invalid_grants, 1, "the refused refresh token");
}

// Tokens that expire while the client runs are refreshed before they are sent.
#[tokio::test]
async fn short_lived_tokens_are_refreshed_ahead_of_expiry() {
    let idp =
        IdentityProvider::start(ProviderConfig::default().access_lifetime(Duration::from_secs(1)))
            .await
            .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let client = client(AuthLayer::new(
        idp.refresher_builder().build_http().unwrap(),
    ));
    for _ in 0..6 {
        let request = Request::get(api.url("/user/me"))
            .body(Full::default())
            .unwrap();
        assert_eq!(
            client.clone().oneshot(request).await.unwrap().status(),
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(
        api.stats().unauthorized,
        0,
        "no expired token was ever sent"
    );
    assert!(idp.stats().refresh_grants >= 2);
}

/// The layer over a plain-HTTP hyper-util client.
fn client(layer: AuthLayer) -> AuthService<HttpClient> {
    layer.layer(Client::builder(TokioExecutor::new()).build_http())
}
