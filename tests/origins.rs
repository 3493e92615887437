//! The token goes only where it belongs: the origin allow-list, and redirects.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::ServiceBuilder;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, Origin};
use tower_http::follow_redirect::FollowRedirectLayer;

fn http_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

// Only allowed origins get the token; a request elsewhere goes without it and its 401 causes
// no login and no refresh.
#[tokio::test]
async fn the_token_goes_only_to_allowed_origins() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let (ours, theirs) = (
        Api::start(&idp).await.unwrap(),
        Api::start(&idp).await.unwrap(),
    );
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap())
        .allow_origin(Origin::parse(&ours.origin()).unwrap());
    let client = ServiceBuilder::new().layer(layer).service(http_client());

    let get = |url: String| Request::get(url).body(Full::default()).unwrap();
    let response = client
        .clone()
        .oneshot(get(theirs.url("/user/me")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(theirs.stats().missing_token, 1);
    assert_eq!(idp.stats().requests, 0, "no login for a foreign origin");

    let response = client
        .clone()
        .oneshot(get(ours.url("/user/me")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(ours.stats().missing_token, 0);
    assert_eq!(idp.stats().password_grants, 1);
}

// With FollowRedirect inside the layer, a redirect to another origin does not carry the
// token: tower-http's default policy drops credentials on cross-origin hops.
#[tokio::test]
async fn a_cross_origin_redirect_does_not_carry_the_token() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let (ours, theirs) = (
        Api::start(&idp).await.unwrap(),
        Api::start(&idp).await.unwrap(),
    );
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap())
        .allow_origin(Origin::parse(&ours.origin()).unwrap());
    let client = ServiceBuilder::new()
        .layer(layer)
        .layer(FollowRedirectLayer::new())
        .service(http_client());

    // A same-origin redirect keeps it.
    let to = ours.url("/auth/check");
    let request = Request::get(ours.url(&format!("/redirect?to={to}")))
        .body(Full::default())
        .unwrap();
    assert_eq!(
        client.clone().oneshot(request).await.unwrap().status(),
        StatusCode::OK
    );

    // A cross-origin one does not: the other server sees no token (and, since it would
    // accept this provider's tokens, would have answered 200 had one leaked).
    let to = theirs.url("/auth/check");
    let request = Request::get(ours.url(&format!("/redirect?to={to}")))
        .body(Full::default())
        .unwrap();
    let response = client.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let stats = theirs.stats();
    assert!(stats.requests >= 1);
    assert_eq!(
        stats.missing_token, stats.requests,
        "the token never reached the other origin"
    );
}
