//! What the DPoP tests share: a client that records what the refresher sends, raw requests,
//! and reading JWTs.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tower::Service;
use tower_auth_refresh::dpop::Dpop;
use tower_auth_refresh::oauth2::{HttpClient, OAuth2Refresher};
use tower_auth_refresh::test_util::IdentityProvider;

/// A hyper-util client that keeps the headers of every request it sends.
#[derive(Clone)]
pub struct Recording {
    client: HttpClient,
    pub sent: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Recording {
    pub fn new() -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            sent: Arc::default(),
        }
    }

    /// The `DPoP` header of every request sent, in order (`None` for a request without).
    pub fn proofs(&self) -> Vec<Option<String>> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|headers| {
                headers
                    .get("dpop")
                    .map(|value| value.to_str().unwrap().to_owned())
            })
            .collect()
    }
}

impl Service<Request<Full<Bytes>>> for Recording {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<Full<Bytes>>>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        self.sent.lock().unwrap().push(request.headers().clone());
        self.client.call(request)
    }
}

/// A refresher for the provider's user and client, proving with `dpop`.
pub fn refresher(idp: &IdentityProvider, dpop: &Dpop) -> OAuth2Refresher<HttpClient> {
    idp.refresher_builder()
        .dpop(dpop.clone())
        .build_http()
        .unwrap()
}

/// The claims of a JWT (a proof, or a JWT-shaped access token).
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// An answer read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends one request with these headers and reads the answer.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, HeaderValue)],
    form: Option<&[(&str, &str)]>,
) -> Reply {
    let mut request = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, value.clone());
    }
    let body = match form {
        Some(form) => {
            request = request.header("content-type", "application/x-www-form-urlencoded");
            Full::new(Bytes::from(serde_urlencoded::to_string(form).unwrap()))
        }
        None => Full::default(),
    };
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request.body(body).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    }
}
