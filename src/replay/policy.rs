//! The policy trait, and the two policies that keep the body as it is.

use http::Request;

use super::{ReplayableBody, Snapshot};

/// Keeps what a retry needs, and prepares requests for sending.
///
/// For a request the layer may retry, the service first calls [`keep`](Self::keep), before it
/// attaches its token, and holds what it returns. For every request it then calls
/// [`prepare`](Self::prepare): the inner service receives `Request<Self::Body>`. If the first
/// attempt is rejected, [`replay`](Self::replay) turns the kept value into the request to send
/// again, or says it cannot.
///
/// Two steps rather than one, so that the request moves from the caller to the inner service
/// through `prepare` alone: moved through a function that also reads it by reference, a
/// `Request` (256 bytes) is copied once more on the way, and those copies were the largest
/// part of what `CloneBody` cost beyond `NoReplay` (BENCHMARKS.md).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot replay requests with a body of type `{B}`",
    label = "the replay policy for this body type",
    note = "the default policy `CloneBody` replays `ReplayableBody` bodies only (`Full<Bytes>`, `String`, …); for a streaming body use `AuthLayer::replay_policy(BufferBody::default())`, or `NoReplay`"
)]
pub trait ReplayPolicy<B>: Clone {
    /// The body type the inner service receives.
    type Body;

    /// What is kept, before the request is sent, to make the retry from.
    type Kept;

    /// What a retry of `request` needs, or `None` if it cannot be replayed. Called only for a
    /// request the layer may retry, before the layer's token is attached.
    fn keep(&self, request: &Request<B>) -> Option<Self::Kept>;

    /// Turns the caller's request into the one sent (e.g. wraps its body). `kept` is what
    /// [`keep`](Self::keep) returned for it (`None` if it was not asked, or kept nothing).
    /// The layer's token may be attached already: a request sent at once gets it before,
    /// one that waits for a token after. What `prepare` changes in the request is not in
    /// `kept`, so not in the retry. The layer gives each `kept` to the `prepare` of its own
    /// request, once; [`BufferBody`](super::BufferBody) given one `kept` twice records the
    /// second body for nothing (its copy replays the first).
    fn prepare(&self, request: Request<B>, kept: Option<&Self::Kept>) -> Request<Self::Body>;

    /// The request to send again, made from what was kept; `None` if it turns out it cannot
    /// be replayed (asked after the first attempt was rejected).
    fn replay(kept: Self::Kept) -> Option<Request<Self::Body>>;
}

/// Replays requests whose body is a [`ReplayableBody`]: before it is sent, the request is kept
/// as a [`Snapshot`] (its text in one buffer, a clone of its body), and made again from it for
/// a retry. The default policy.
///
/// A body that is not `ReplayableBody` is a compile error that names
/// [`BufferBody`](super::BufferBody). See the [module docs](super).
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneBody;

// A body that is not replayable is reported with `ReplayableBody`'s message wherever a bound
// requires the service (`AuthService::oneshot` and `ready`, an SDK's constructor,
// `BoxCloneSyncService::new`). A method of a wrapper around the service gets "the method exists
// … but its trait bounds were not satisfied", with no message and at best the line of the
// bound below: that line carries the hint.
impl<B> ReplayPolicy<B> for CloneBody
where
    B: ReplayableBody, // not replayable: `.replay_policy(BufferBody::default())`, see `replay`
{
    type Body = B;
    type Kept = Snapshot<B>;

    #[inline]
    fn keep(&self, request: &Request<B>) -> Option<Snapshot<B>> {
        Snapshot::of(request, request.body().clone())
    }

    #[inline]
    fn prepare(&self, request: Request<B>, _kept: Option<&Snapshot<B>>) -> Request<B> {
        request
    }

    #[inline]
    fn replay(kept: Snapshot<B>) -> Option<Request<B>> {
        kept.into_request()
    }
}

/// Never replays: a rejected request's 401 goes back to the caller (the token is still
/// refreshed, so the next request succeeds).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoReplay;

impl<B> ReplayPolicy<B> for NoReplay {
    type Body = B;
    type Kept = std::convert::Infallible;

    #[inline]
    fn keep(&self, _request: &Request<B>) -> Option<Self::Kept> {
        None
    }

    #[inline]
    fn prepare(&self, request: Request<B>, _kept: Option<&Self::Kept>) -> Request<B> {
        request
    }

    fn replay(kept: Self::Kept) -> Option<Request<B>> {
        match kept {}
    }
}
