//! Which body types the default policy may copy.

use std::borrow::Cow;

use bytes::{Buf, Bytes};
use http_body_util::combinators::{MapErr, MapFrame};
use http_body_util::{Either, Empty, Full, Limited};

/// A body whose clone is an independent copy of the whole body: sending one clone leaves what
/// every other clone sends untouched. [`CloneBody`](super::CloneBody), the default policy,
/// retries only requests whose body is `ReplayableBody`.
///
/// `Clone` alone is not enough: some bodies' clones share one stream (octocrab's `OctoBody`
/// is `Clone`, and a clone of a sent one is empty). A retry with such a clone would send an
/// empty or truncated body, and the server may well accept it.
///
/// Implemented for `Full<D>`, `Empty<D>`, `String`, `Bytes`, `Vec<u8>`, `()`, `&'static str`,
/// `&'static [u8]`, `Cow<'static, str>`, `Cow<'static, [u8]>`, and for http-body-util's
/// `Either`, `Limited`, `MapErr` and `MapFrame` over replayable bodies. Implement it for a
/// body type of yours whose clones are independent; for any other body, use
/// [`BufferBody`](super::BufferBody), which records the body as it streams and replays the
/// record.
///
/// ```
/// use tower_auth_refresh::replay::ReplayableBody;
///
/// /// A body that owns its bytes: each clone streams them from the start.
/// #[derive(Clone)]
/// struct Json(bytes::Bytes);
///
/// impl ReplayableBody for Json {}
/// ```
#[diagnostic::on_unimplemented(
    message = "the default replay policy cannot retry a request whose body is `{Self}`",
    label = "not known to be replayable by cloning",
    note = "`CloneBody` (the default) retries only bodies whose clones are independent copies (`ReplayableBody`): `Full<Bytes>`, `Empty<Bytes>`, `String`, `Bytes`, `Vec<u8>`, …",
    note = "for a streaming body, or one whose clones share a stream, use `AuthLayer::replay_policy(BufferBody::default())`; where the inner service takes one body type (tonic, octocrab, kube), map the buffered body back: `BufferBody::default().map_body(YourBody::new)`; or `NoReplay` to never retry",
    note = "if `{Self}`'s clones are independent copies, implement `ReplayableBody` for it"
)]
pub trait ReplayableBody: Clone {} // not one? `.replay_policy(BufferBody::default())`

impl<D: Buf + Clone> ReplayableBody for Full<D> {}
impl<D> ReplayableBody for Empty<D> {}
impl ReplayableBody for String {}
impl ReplayableBody for Bytes {}
impl ReplayableBody for Vec<u8> {}
impl ReplayableBody for () {}
impl ReplayableBody for &'static str {}
impl ReplayableBody for &'static [u8] {}
impl ReplayableBody for Cow<'static, str> {}
impl ReplayableBody for Cow<'static, [u8]> {}
impl<L: ReplayableBody, R: ReplayableBody> ReplayableBody for Either<L, R> {}
// `Limited` counts what is left in each clone: a clone taken before sending starts afresh.
impl<B: ReplayableBody> ReplayableBody for Limited<B> {}
impl<B: ReplayableBody, F: Clone> ReplayableBody for MapErr<B, F> {}
impl<B: ReplayableBody, F: Clone> ReplayableBody for MapFrame<B, F> {}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    // The promise the trait makes, checked for each body with data: a clone taken before the
    // original is sent streams the whole body afterwards.
    async fn clone_is_independent<B>(body: B, expected: &'static [u8])
    where
        B: ReplayableBody + http_body::Body + Unpin,
        B::Error: std::fmt::Debug,
    {
        let copy = body.clone();
        assert_eq!(body.collect().await.unwrap().to_bytes(), expected);
        assert_eq!(copy.collect().await.unwrap().to_bytes(), expected);
    }

    #[tokio::test]
    async fn clones_of_the_bodies_it_is_implemented_for_are_independent() {
        clone_is_independent(Full::new(Bytes::from_static(b"{}")), b"{}").await;
        clone_is_independent(Empty::<Bytes>::new(), b"").await;
        clone_is_independent(String::from("text"), b"text").await;
        clone_is_independent(
            Limited::new(Full::new(Bytes::from_static(b"12345")), 5),
            b"12345",
        )
        .await;
        clone_is_independent(
            Either::<_, Empty<Bytes>>::Left(Full::new(Bytes::from_static(b"left"))),
            b"left",
        )
        .await;
        clone_is_independent(
            Full::new(Bytes::from_static(b"mapped")).map_err(|never| never),
            b"mapped",
        )
        .await;
    }
}
