// A streaming body (not `ReplayableBody`) through the default policy, over hyper-util, sent
// with `oneshot`.
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{ServiceBuilder, service_fn};
use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};

type Streaming = UnsyncBoxBody<Bytes, Infallible>;

async fn send(body: Streaming) {
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("token")) });
    let client = ServiceBuilder::new()
        .layer(AuthLayer::new(refresher))
        .service(Client::builder(TokioExecutor::new()).build_http::<Streaming>());
    let request = http::Request::post("https://api.example.com/upload").body(body).unwrap();
    let _ = client.oneshot(request).await;
}

fn main() {
    let _ = send;
}
