//! The examples that fit the layer into the ecosystem, run as tests: the axum gateway
//! (`examples/axum_gateway.rs`) and the tower-generic SDK (`examples/sdk.rs`). Each test runs
//! the example's own scenario, in-process, against the loopback identity provider and API.

#[path = "../examples/axum_gateway.rs"]
#[allow(dead_code)] // its `main`
mod axum_gateway;

#[path = "../examples/sdk.rs"]
#[allow(dead_code)] // its `main`
mod sdk;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http::header::HOST;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};
use tower_auth_refresh::replay::{BufferBody, ReplayBody};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, AuthService};

// Many concurrent inbound requests share one token and one login; after the upstream revokes
// it, one refresh, and every request retried with its body: the callers see only 200s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_gateway_shares_one_token_and_recovers_from_a_401() {
    let outcome = axum_gateway::run(100).await.unwrap();
    assert_eq!(outcome.requests, 200);
    assert_eq!(outcome.statuses.get(&200), Some(&200), "{outcome:?}");
    assert_eq!(outcome.echoes_intact, 100, "{outcome:?}");
    assert_eq!(outcome.upstream_without_token, 0, "tokens attached");
    assert!(outcome.upstream_unauthorized >= 1, "a 401 recovered");
    assert_eq!((outcome.logins, outcome.refreshes), (1, 1));
    assert!(outcome.is_success());
}

// The SDK alone gets a 401; wrapped in the layer (typed and boxed) it succeeds with one
// login, and after the server revokes the token, with one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tower_generic_sdk_works_through_the_layer_typed_and_boxed() {
    let outcome = sdk::run(64).await.unwrap();
    assert_eq!(
        outcome.without_auth.as_deref(),
        Some("the API answered 401 Unauthorized")
    );
    assert_eq!(outcome.calls, 66);
    assert_eq!(outcome.users, 66, "{outcome:?}");
    assert!(outcome.unauthorized >= 2, "a 401 recovered: {outcome:?}");
    assert_eq!((outcome.logins, outcome.refreshes), (1, 1));
    assert!(outcome.is_success());
}

// The boxed stack can be named, so the SDK over it fits in a struct, and that struct is
// `Clone + Send + Sync + 'static`: it can be axum state.
#[tokio::test]
async fn the_sdk_over_the_boxed_stack_can_be_axum_state() {
    async fn me(State(mut app): State<sdk::App>) -> Result<String, StatusCode> {
        let user = app
            .mangadex
            .me()
            .await
            .map_err(|_| StatusCode::BAD_GATEWAY)?;
        Ok(user.username)
    }
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap());
    let app = Router::new()
        .route("/me", get(me))
        .with_state(sdk::App::new(layer, api.origin()));

    let request = Request::get("/me").body(Body::empty()).unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "reader");
    assert_eq!(idp.stats().password_grants, 1);
}

// A reverse proxy that streams inbound bodies upstream, made replayable by `BufferBody`: a
// request rejected with 401 is retried from the buffer, whether its body has a length (a
// POST) or is empty (a GET). hyper stops polling a request body once `is_end_stream()` is
// true, and never polls one that is empty from the start: the buffer must still know it has
// the whole body.
#[tokio::test]
async fn a_streaming_proxy_retries_inbound_bodies_from_the_buffer() {
    type Upstream = AuthService<Client<HttpConnector, ReplayBody<Body>>, BufferBody>;
    async fn proxy(
        State((upstream, origin)): State<(Upstream, String)>,
        mut request: Request<Body>,
    ) -> Response {
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = Uri::try_from(format!("{origin}{path}")).unwrap();
        request.headers_mut().remove(HOST);
        upstream.oneshot(request).await.unwrap().into_response()
    }

    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    let layer = AuthLayer::new(idp.refresher_builder().build_http().unwrap())
        .replay_policy(BufferBody::default());
    layer.handle().token().await.unwrap();
    let upstream = layer.layer(Client::builder(TokioExecutor::new()).build_http());
    let app = Router::new()
        .fallback(proxy)
        .with_state((upstream, api.origin()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, app).into_future());
    let callers = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    idp.revoke_access_tokens();
    let post = Request::post(format!("http://{address}/echo"))
        .body(Full::new(Bytes::from_static(b"{\"n\":1}")))
        .unwrap();
    let response = callers.request(post).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{\"n\":1}");

    idp.revoke_access_tokens();
    let get = Request::get(format!("http://{address}/user/me"))
        .body(Full::default())
        .unwrap();
    assert_eq!(callers.request(get).await.unwrap().status(), StatusCode::OK);
    assert_eq!(api.stats().unauthorized, 2);
    assert_eq!(idp.stats().refresh_grants, 2);
}
