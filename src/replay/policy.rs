//! The policy trait, and the two policies that keep the body as it is.

use http::Request;

use super::{ReplayableBody, Snapshot};

/// Prepares requests for sending and keeps what a retry needs.
///
/// For each request the service calls [`prepare`](Self::prepare): the inner service receives
/// `Request<Self::Body>`, and, for a request the layer may retry, the policy keeps a
/// [`Kept`](Self::Kept) value. If the first attempt is rejected, [`replay`](Self::replay) turns
/// that value into the request to send again, or says it cannot.
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

    /// Turns the caller's request into the one sent (e.g. wraps its body) and, when `keep` is
    /// true (the request is one the layer may retry), puts what a retry needs into `kept`
    /// (left `None` if the request cannot be replayed). An out-parameter rather than a pair:
    /// returned alone, the request is not copied on the way.
    fn prepare(
        &self,
        request: Request<B>,
        keep: bool,
        kept: &mut Option<Self::Kept>,
    ) -> Request<Self::Body>;

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
    fn prepare(
        &self,
        request: Request<B>,
        keep: bool,
        kept: &mut Option<Snapshot<B>>,
    ) -> Request<B> {
        if keep {
            *kept = Snapshot::of(&request, request.body().clone());
        }
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
    fn prepare(
        &self,
        request: Request<B>,
        _keep: bool,
        _kept: &mut Option<Self::Kept>,
    ) -> Request<B> {
        request
    }

    fn replay(kept: Self::Kept) -> Option<Request<B>> {
        match kept {}
    }
}
