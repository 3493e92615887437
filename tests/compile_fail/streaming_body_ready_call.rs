// The same through `ready().await?.call(..)`, over a `service_fn`.
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use tower::{Layer, Service, service_fn};
use tower_auth_refresh::{AuthLayer, BoxError, RefreshRequest, TokenSet};

type Streaming = UnsyncBoxBody<Bytes, Infallible>;

async fn send(body: Streaming) -> Result<(), BoxError> {
    let refresher =
        service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("token")) });
    let api = service_fn(|_: http::Request<Streaming>| async {
        Ok::<_, Infallible>(http::Response::new(String::new()))
    });
    let mut client = AuthLayer::new(refresher).layer(api);
    client.ready().await?.call(http::Request::new(body)).await?;
    Ok(())
}

fn main() {
    let _ = send;
}
