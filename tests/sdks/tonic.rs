//! gRPC through tonic: the layer over a `Channel`, `BufferBody` mapped back into
//! `tonic::body::Body`, and `Rejection::grpc_unauthenticated()`, against a tonic server on
//! loopback that checks every call's token with the identity provider and answers a bad one
//! with `UNAUTHENTICATED` (HTTP 200, `grpc-status: 16` in the headers: a trailers-only
//! response). No protoc: messages are raw bytes, through a codec of a few lines.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use tokio::net::TcpListener;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tower::{Service, ServiceBuilder};
use tower_auth_refresh::replay::{BufferBody, MapReplayBody, ReplayBody};
use tower_auth_refresh::test_util::IdentityProvider;
use tower_auth_refresh::{AuthLayer, AuthService, Origin, Rejection};

use super::servers;

/// The call every test makes.
const SAY: &str = "/test.Echo/Say";

/// The body mapping a tonic stack needs, named so the stack's type can be written down.
type ToTonic = fn(ReplayBody<tonic::body::Body>) -> tonic::body::Body;
type Stack = AuthService<Channel, MapReplayBody<ToTonic>>;

/// The recipe: the layer over the channel, buffered bodies mapped back into tonic's body, and
/// gRPC's way of saying "bad token" as the rejection.
fn grpc_layer(idp: &IdentityProvider) -> AuthLayer<MapReplayBody<ToTonic>> {
    AuthLayer::new(idp.refresher_builder().build_http().unwrap())
        .rejection(Rejection::grpc_unauthenticated())
        .replay_policy(BufferBody::default().map_body(tonic::body::Body::new as ToTonic))
}

impl GrpcServer {
    /// A tonic client over `layer` and a channel to this server: what an application
    /// writes, give or take the generated client around `Grpc`.
    async fn client(&self, layer: AuthLayer<MapReplayBody<ToTonic>>) -> tonic::client::Grpc<Stack> {
        let channel = Endpoint::from_shared(self.origin())
            .unwrap()
            .connect()
            .await
            .unwrap();
        tonic::client::Grpc::new(ServiceBuilder::new().layer(layer).service(channel))
    }
}

async fn say(
    client: &mut tonic::client::Grpc<Stack>,
    message: &'static str,
) -> Result<Bytes, Status> {
    client
        .ready()
        .await
        .map_err(|error| Status::unknown(error.to_string()))?;
    let request = tonic::Request::new(Bytes::from_static(message.as_bytes()));
    let response = client
        .unary(request, PathAndQuery::from_static(SAY), BytesCodec)
        .await?;
    Ok(response.into_inner())
}

// A revoked token: the server answers `UNAUTHENTICATED`, the layer refreshes once and retries
// the call with its message replayed from the buffer; the caller sees the answer.
#[tokio::test]
async fn a_revoked_token_costs_one_refresh_and_the_call_succeeds() {
    let (idp, _api) = servers().await;
    let server = GrpcServer::start(&idp).await;
    let layer = grpc_layer(&idp);
    layer.handle().token().await.unwrap();
    let mut client = server.client(layer).await;

    idp.revoke_access_tokens();
    assert_eq!(say(&mut client, "hello").await.unwrap(), "hello");
    assert_eq!(server.unauthenticated(), 1, "the first attempt was refused");
    assert_eq!(
        server.echoed(),
        ["hello"],
        "the retry carried the whole message"
    );
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
}

// What the preset is for: with the default predicate (status 401), gRPC's `UNAUTHENTICATED`
// is a success at the HTTP level, and the caller gets the error with no refresh.
#[tokio::test]
async fn without_the_grpc_preset_unauthenticated_goes_back_to_the_caller() {
    let (idp, _api) = servers().await;
    let server = GrpcServer::start(&idp).await;
    let layer = grpc_layer(&idp).rejection(Rejection::status_401());
    layer.handle().token().await.unwrap();
    let mut client = server.client(layer).await;

    idp.revoke_access_tokens();
    let status = say(&mut client, "hello").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(idp.stats().refresh_grants, 0);
}

// 100 concurrent calls on a cold start cost one login; 100 concurrent calls after the server
// revoked the token cost one refresh; every call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_calls_cost_one_login_then_one_refresh() {
    let (idp, _api) = servers().await;
    let server = GrpcServer::start(&idp).await;
    let client = server.client(grpc_layer(&idp)).await;
    let burst = |client: &tonic::client::Grpc<Stack>| {
        (0..100)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move { say(&mut client, "burst").await })
            })
            .collect::<Vec<_>>()
    };
    for call in burst(&client) {
        assert_eq!(call.await.unwrap().unwrap(), "burst");
    }
    assert_eq!(idp.stats().password_grants, 1);

    idp.revoke_access_tokens();
    for call in burst(&client) {
        assert_eq!(call.await.unwrap().unwrap(), "burst");
    }
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
    assert!(server.unauthenticated() >= 1);
}

// Inside tonic's client a request carries only a path; the channel adds the origin further
// in. With an allow-list, such a request gets the token only once `origin_of_relative` says
// where it goes.
#[tokio::test]
async fn relative_uris_get_the_token_only_with_origin_of_relative() {
    let (idp, _api) = servers().await;
    let server = GrpcServer::start(&idp).await;
    let origin = Origin::parse(&server.origin()).unwrap();

    let listed = grpc_layer(&idp).allow_origin(origin.clone());
    let mut client = server.client(listed).await;
    let status = say(&mut client, "no token").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(server.without_token(), 1, "sent without the token");
    assert_eq!(idp.stats().password_grants, 0, "and no login for it");

    let placed = grpc_layer(&idp)
        .allow_origin(origin.clone())
        .origin_of_relative(origin);
    let mut client = server.client(placed).await;
    assert_eq!(say(&mut client, "with token").await.unwrap(), "with token");
    assert_eq!(server.without_token(), 1);
    assert_eq!(idp.stats().password_grants, 1);
}

/// Messages as raw bytes: gRPC's framing is tonic's, the payload is ours.
#[derive(Clone, Copy, Debug, Default)]
struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl Encoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// A gRPC server with one unary method that echoes its message, for callers whose
/// `authorization` metadata is a valid access token of the identity provider.
#[derive(Clone)]
struct GrpcServer {
    idp: IdentityProvider,
    addr: std::net::SocketAddr,
    seen: Arc<Seen>,
}

#[derive(Default)]
struct Seen {
    unauthenticated: AtomicU64,
    without_token: AtomicU64,
    echoed: Mutex<Vec<Bytes>>,
}

impl GrpcServer {
    async fn start(idp: &IdentityProvider) -> GrpcServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = GrpcServer {
            idp: idp.clone(),
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
        };
        let router = tonic::transport::Server::builder().add_service(server.clone());
        tokio::spawn(router.serve_with_incoming(TcpIncoming::from(listener)));
        server
    }

    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn unauthenticated(&self) -> u64 {
        self.seen.unauthenticated.load(Ordering::SeqCst)
    }

    fn without_token(&self) -> u64 {
        self.seen.without_token.load(Ordering::SeqCst)
    }

    fn echoed(&self) -> Vec<Bytes> {
        self.seen.echoed.lock().unwrap().clone()
    }

    /// The method: checks the token, then echoes the message.
    fn say(&self, request: tonic::Request<Bytes>) -> Result<tonic::Response<Bytes>, Status> {
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        let Some(token) = token else {
            self.seen.without_token.fetch_add(1, Ordering::SeqCst);
            self.seen.unauthenticated.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unauthenticated("no token"));
        };
        if !self.idp.is_valid_access_token(token) {
            self.seen.unauthenticated.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unauthenticated("invalid token"));
        }
        let message = request.into_inner();
        self.seen.echoed.lock().unwrap().push(message.clone());
        Ok(tonic::Response::new(message))
    }
}

impl tonic::server::NamedService for GrpcServer {
    const NAME: &'static str = "test.Echo";
}

impl Service<http::Request<tonic::body::Body>> for GrpcServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let server = self.clone();
        Box::pin(async move {
            if request.uri().path() != SAY {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let method = tower::service_fn(move |request| std::future::ready(server.say(request)));
            Ok(tonic::server::Grpc::new(BytesCodec)
                .unary(method, request)
                .await)
        })
    }
}
