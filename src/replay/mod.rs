//! Which requests can be sent a second time, after a 401.
//!
//! Retrying a request means sending its body again. The layer's [`ReplayPolicy`] prepares each
//! request before it is sent and keeps a copy for the retry; a request without a copy, or
//! whose copy turns out not to be replayable, is never retried, and the caller gets the
//! server's 401 as it came. Nothing is ever sent twice, or sent truncated.
//!
//! - [`CloneBody`] (the default) copies requests whose body type is `Clone`: `Full<Bytes>`,
//!   `Empty<Bytes>`, `String`, `Bytes`, `Vec<u8>`, `()`. Cloning these is a reference count
//!   or a small copy.
//! - [`BufferBody`] makes any body replayable: it wraps it in a [`ReplayBody`] that keeps
//!   what it streams, up to a cap (default 64 KiB), and replays from that buffer. A body
//!   larger than the cap, or not yet fully sent when the server answered, is not replayed.
//! - [`NoReplay`] never retries.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower_auth_refresh::replay::{CloneBody, NoReplay, ReplayPolicy};
//!
//! let request = http::Request::post("http://127.0.0.1/echo")
//!     .body(Full::new(Bytes::from_static(b"{}")))
//!     .unwrap();
//! let copy = CloneBody.clone_request(&request).expect("Full<Bytes> is Clone");
//! assert_eq!(copy.uri(), request.uri());
//! assert!(ReplayPolicy::<Full<Bytes>>::clone_request(&NoReplay, &request).is_none());
//! ```

mod body;

use http::Request;

pub use self::body::ReplayBody;

/// Prepares requests for sending and decides whether they can be sent again.
///
/// For each request the service calls [`prepare`](Self::prepare) (the inner service receives
/// `Request<Self::Body>`), then [`clone_request`](Self::clone_request) for the copy to keep;
/// before sending that copy, [`can_replay`](Self::can_replay) has the last word.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot replay requests with a body of type `{B}`",
    label = "the replay policy for this body type",
    note = "the default policy `CloneBody` replays `Clone` bodies only; for a streaming body use `AuthLayer::replay_policy(BufferBody::default())` or `NoReplay`"
)]
pub trait ReplayPolicy<B>: Clone {
    /// The body type the inner service receives.
    type Body;

    /// Turns the caller's request into the one sent (e.g. wraps its body).
    fn prepare(&self, request: Request<B>) -> Request<Self::Body>;

    /// A copy of `request` to send if the first attempt is rejected, or `None` if it cannot
    /// be replayed. Called before the request is sent.
    fn clone_request(&self, request: &Request<Self::Body>) -> Option<Request<Self::Body>>;

    /// Whether `copy` can still be sent, asked after the first attempt was rejected.
    fn can_replay(copy: &Request<Self::Body>) -> bool {
        let _ = copy;
        true
    }
}

/// Replays requests whose body is `Clone`. The default policy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneBody;

impl<B: Clone> ReplayPolicy<B> for CloneBody {
    type Body = B;

    fn prepare(&self, request: Request<B>) -> Request<B> {
        request
    }

    fn clone_request(&self, request: &Request<B>) -> Option<Request<B>> {
        Some(request.clone())
    }
}

/// Never replays: a rejected request's 401 goes back to the caller (the token is still
/// refreshed, so the next request succeeds).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    type Body = B;

    fn prepare(&self, request: Request<B>) -> Request<B> {
        request
    }

    fn clone_request(&self, _request: &Request<B>) -> Option<Request<B>> {
        None
    }
}

/// Makes any body replayable by buffering what it streams, up to a cap.
///
/// The inner service receives [`ReplayBody`]`<B>`. A request whose body streamed whole and
/// within the cap is replayed from the buffer; one whose body was larger, failed, or was not
/// yet fully sent when the server answered, is not retried.
#[derive(Clone, Copy, Debug)]
pub struct BufferBody {
    max: usize,
}

impl BufferBody {
    /// Buffers at most `max` bytes of each request body.
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

impl Default for BufferBody {
    /// Buffers at most 64 KiB.
    fn default() -> Self {
        Self::new(64 * 1024)
    }
}

impl<B> ReplayPolicy<B> for BufferBody
where
    B: http_body::Body,
{
    type Body = ReplayBody<B>;

    fn prepare(&self, request: Request<B>) -> Request<ReplayBody<B>> {
        request.map(|body| ReplayBody::new(body, self.max))
    }

    fn clone_request(&self, request: &Request<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        let body = request.body().replay_copy()?;
        let mut copy = Request::new(body);
        *copy.method_mut() = request.method().clone();
        *copy.uri_mut() = request.uri().clone();
        *copy.version_mut() = request.version();
        *copy.headers_mut() = request.headers().clone();
        *copy.extensions_mut() = request.extensions().clone();
        Some(copy)
    }

    fn can_replay(copy: &Request<ReplayBody<B>>) -> bool {
        copy.body().is_replayable()
    }
}
