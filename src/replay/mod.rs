//! Which requests can be sent a second time, after a 401.
//!
//! Retrying a request means sending its body again. The layer asks its [`ReplayPolicy`] for a
//! copy of each request before sending it; a request without a copy is never retried, and the
//! caller gets the server's 401 as it came.
//!
//! - [`CloneBody`] (the default) copies requests whose body type is `Clone`: `Full<Bytes>`,
//!   `Empty<Bytes>`, `String`, `Bytes`, `Vec<u8>`, `()`. Cloning these is a reference count
//!   or a small copy.
//! - [`NoReplay`] never retries: for streaming bodies such as `hyper::body::Incoming`.
//!
//! # Example
//!
//! ```
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower_auth_refresh::replay::{CloneBody, NoReplay, ReplayPolicy};
//!
//! let request = http::Request::post("http://127.0.0.1/echo")
//!     .body(Full::new(Bytes::from_static(b"{}")))
//!     .unwrap();
//! let copy = CloneBody.clone_request(&request).expect("Full<Bytes> is Clone");
//! assert_eq!(copy.uri(), request.uri());
//! assert!(ReplayPolicy::<Full<Bytes>>::clone_request(&NoReplay, &request).is_none());
//! ```

use http::Request;

/// Decides whether a request can be sent again, by making the copy to send.
///
/// Called once per request, before it is sent, so the copy holds the body as it was before
/// any of it was read.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot replay requests with a body of type `{B}`",
    label = "the replay policy for this body type",
    note = "the default policy `CloneBody` replays `Clone` bodies only; for a streaming body use `AuthLayer::replay_policy(NoReplay)` or a policy of your own"
)]
pub trait ReplayPolicy<B>: Clone {
    /// A copy of `request` to send if the first attempt is rejected, or `None` if it cannot
    /// be replayed.
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>>;
}

/// Replays requests whose body is `Clone`. The default policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneBody;

impl<B: Clone> ReplayPolicy<B> for CloneBody {
    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

/// Never replays: a rejected request's 401 goes back to the caller (the token is still
/// refreshed, so the next request succeeds).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    fn clone_request(&self, _request: &Request<B>) -> Option<Request<B>> {
        None
    }
}
