//! An inner service that counts its clones and must be polled ready before each call, for
//! the tests of which clone a retry goes through. Shared through `#[path]`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::Service;

/// An inner service that counts its clones, must be polled ready before each call (as
/// tower's `Buffer` must), and answers 401 to the tokens in `rejected`, else 200 with the
/// request's `Authorization`, and its `name` in `x-served-by`.
pub struct Strict {
    pub clones: Arc<AtomicUsize>,
    pub rejected: Arc<Mutex<Vec<String>>>,
    /// Which service answered: a clone keeps it, `get_mut` changes it.
    pub name: String,
    ready: bool,
}

impl Strict {
    pub fn rejecting<const N: usize>(tokens: [&str; N]) -> Self {
        let rejected = tokens.map(str::to_owned).to_vec();
        Self {
            clones: Arc::default(),
            rejected: Arc::new(Mutex::new(rejected)),
            name: String::new(),
            ready: false,
        }
    }
}

/// The `name` of the service that answered `response`.
#[allow(dead_code)]
pub fn served_by<B>(response: &Response<B>) -> &str {
    response.headers()["x-served-by"].to_str().unwrap()
}

impl Clone for Strict {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: Arc::clone(&self.clones),
            rejected: Arc::clone(&self.rejected),
            name: self.name.clone(),
            ready: false,
        }
    }
}

impl Service<Request<Full<Bytes>>> for Strict {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Full<Bytes>>) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "called before it was ready"
        );
        let token = request
            .headers()
            .get(AUTHORIZATION)
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let status = if self.rejected.lock().unwrap().contains(&token) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        let mut response = Response::new(Full::new(Bytes::from(token)));
        *response.status_mut() = status;
        let name = http::HeaderValue::from_str(&self.name).unwrap();
        response.headers_mut().insert("x-served-by", name);
        std::future::ready(Ok(response))
    }
}
