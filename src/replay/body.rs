//! A body that keeps what it streams, so that it can be sent again.

use std::cell::RefCell;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use smallvec::SmallVec;

use super::spare::{self, Spares};

pin_project! {
    /// A request body that records what it streams, up to a cap, so that a copy can send it
    /// again. Made by [`BufferBody`](super::BufferBody); see the [module docs](super).
    ///
    /// The original streams from the wrapped body; the copy streams from the record, and only
    /// when the original streamed whole and within the cap.
    pub struct ReplayBody<B> {
        #[pin]
        role: Role<B>,
    }
}

pin_project! {
    #[project = RoleProj]
    enum Role<B> {
        Original {
            #[pin]
            body: B,
            record: Shared,
            // The cap: past it, the record is spoiled.
            max: usize,
            // The body said it ended, and the record is complete: its end need not be
            // recorded again (a lock fewer for a client that asks, as hyper does).
            ended: bool,
        },
        Copy {
            record: Shared,
            next: usize,
            trailers_sent: bool,
            // Set by the one original that records for this copy: a second one given the same
            // copy records for itself, so the copy never replays two bodies run together.
            tied: AtomicBool,
        },
    }
}

/// What the original has streamed.
#[derive(Default)]
struct Record {
    chunks: SmallVec<[Bytes; 2]>,
    buffered: usize,
    trailers: Option<HeaderMap>,
    /// The original body ended without error.
    complete: bool,
    /// More than `max` bytes, or an error: the record is incomplete for good.
    spoiled: bool,
}

impl Record {
    /// Empties the record for the next body: its chunks and trailers are released, and a
    /// list of chunks that outgrew its inline room is freed too.
    #[inline]
    fn clear(&mut self) {
        if self.chunks.spilled() {
            self.chunks = SmallVec::new();
        } else {
            self.chunks.clear();
        }
        self.trailers = None;
        self.buffered = 0;
        self.complete = false;
        self.spoiled = false;
    }

    fn replayable(&self) -> bool {
        self.complete && !self.spoiled
    }
}

#[inline]
fn lock(record: &Shared) -> MutexGuard<'_, Record> {
    record.arc().lock().unwrap_or_else(PoisonError::into_inner)
}

thread_local! {
    static SPARE: Spares<Arc<Mutex<Record>>> = const { RefCell::new(Vec::new()) };
}

/// The record an original and its copy share. The last of the two to go gives it back,
/// emptied, to this thread's spares, and the thread's next recording body takes it instead of
/// a new allocation (as the copies' text buffers are, in `spare.rs`).
///
/// `None` only while it is dropped: the record moves into the spares as it is, without a
/// reference count taken and given back on the way.
struct Shared(Option<Arc<Mutex<Record>>>);

impl Shared {
    #[inline]
    fn new() -> Self {
        Self(Some(spare::take(&SPARE).unwrap_or_default()))
    }

    #[inline]
    fn share(&self) -> Self {
        Self(self.0.clone())
    }

    #[inline]
    fn arc(&self) -> &Arc<Mutex<Record>> {
        match &self.0 {
            Some(record) => record,
            // Taken only in `drop`.
            None => unreachable!("a record is taken only when it is dropped"),
        }
    }
}

impl Drop for Shared {
    #[inline]
    fn drop(&mut self) {
        let Some(mut record) = self.0.take() else {
            return;
        };
        // The other holds it still: it gives it back. (A plain load first: `get_mut` writes,
        // and the first of the two to go need not.)
        if Arc::strong_count(&record) > 1 {
            return;
        }
        let Some(inner) = Arc::get_mut(&mut record) else {
            return;
        };
        // Emptied now: the chunks and trailers it held are released with this body.
        inner
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        inner.clear_poison();
        // A thread that is ending, or a full list: the record is freed.
        spare::give_back(&SPARE, move || record);
    }
}

impl<B> ReplayBody<B> {
    /// An original that records what `body` streams, up to `max` bytes.
    #[cfg(test)]
    pub(crate) fn new(body: B, max: usize) -> Self {
        Self::recording(body, max, None)
    }

    /// An original that records what `body` streams, up to `max` bytes, for `copy` to replay
    /// (a record of its own if there is no copy, `copy` is not one, or another original
    /// records for it already).
    #[inline]
    pub(crate) fn recording(body: B, max: usize, copy: Option<&Self>) -> Self {
        let record = match copy.map(|copy| &copy.role) {
            Some(Role::Copy { record, tied, .. }) if !tied.swap(true, Ordering::Relaxed) => {
                record.share()
            }
            _ => Shared::new(),
        };
        Self {
            role: Role::Original {
                body,
                record,
                max,
                ended: false,
            },
        }
    }

    /// A copy that will replay what an original made with [`recording`](Self::recording)
    /// records.
    #[inline]
    pub(crate) fn copy() -> Self {
        Self {
            role: Role::Copy {
                record: Shared::new(),
                next: 0,
                trailers_sent: false,
                tied: AtomicBool::new(false),
            },
        }
    }

    /// A copy that will replay the record; `None` for a copy of a copy.
    #[cfg(test)]
    pub(crate) fn replay_copy(&self) -> Option<Self> {
        match &self.role {
            Role::Original { record, .. } => Some(Self {
                role: Role::Copy {
                    record: record.share(),
                    next: 0,
                    trailers_sent: false,
                    tied: AtomicBool::new(true),
                },
            }),
            Role::Copy { .. } => None,
        }
    }

    /// Whether this copy can replay the whole body: the original streamed to its end, within
    /// the cap, without error.
    pub fn is_replayable(&self) -> bool {
        match &self.role {
            Role::Original { .. } => false,
            Role::Copy { record, .. } => lock(record).replayable(),
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().role.project() {
            RoleProj::Original {
                mut body,
                record,
                max,
                ended,
            } => {
                let frame = match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    None => {
                        if !*ended {
                            lock(record).complete = true;
                        }
                        return Poll::Ready(None);
                    }
                    Some(Err(error)) => {
                        lock(record).spoiled = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                };
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        let bytes = data.copy_to_bytes(data.remaining());
                        // A client may stop polling once the body says it has ended (hyper
                        // does, and never polls a body that is empty from the start).
                        let end = body.is_end_stream();
                        let mut record = lock(record);
                        if !record.spoiled {
                            if record.buffered + bytes.len() > *max {
                                // Past the cap: this body will not be replayed.
                                record.spoiled = true;
                                record.chunks = SmallVec::new();
                            } else {
                                record.buffered += bytes.len();
                                record.chunks.push(bytes.clone());
                            }
                        }
                        if end {
                            record.complete = true;
                            *ended = true;
                        }
                        Frame::data(bytes)
                    }
                    Err(frame) => match frame.into_trailers() {
                        // Trailers are the last frame: hyper does not poll past them.
                        Ok(trailers) => {
                            let mut record = lock(record);
                            record.trailers = Some(trailers.clone());
                            record.complete = true;
                            Frame::trailers(trailers)
                        }
                        // An unknown kind of frame: pass it on, but it cannot be replayed.
                        Err(frame) => {
                            lock(record).spoiled = true;
                            frame.map_data(|_| Bytes::new())
                        }
                    },
                };
                Poll::Ready(Some(Ok(frame)))
            }
            RoleProj::Copy {
                record,
                next,
                trailers_sent,
                ..
            } => {
                let record = lock(record);
                if !record.replayable() {
                    // Never sent: the service asks `is_replayable` first. End rather than
                    // send a part of a body.
                    return Poll::Ready(None);
                }
                if let Some(chunk) = record.chunks.get(*next) {
                    *next += 1;
                    return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
                }
                if !*trailers_sent {
                    *trailers_sent = true;
                    if let Some(trailers) = &record.trailers {
                        return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
                    }
                }
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.role {
            Role::Original {
                body,
                record,
                ended,
                ..
            } => {
                let end = body.is_end_stream();
                if end && !*ended {
                    lock(record).complete = true;
                }
                end
            }
            Role::Copy {
                record,
                next,
                trailers_sent,
                ..
            } => {
                let record = lock(record);
                *next >= record.chunks.len() && (*trailers_sent || record.trailers.is_none())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.role {
            Role::Original { body, .. } => body.size_hint(),
            Role::Copy { record, next, .. } => {
                let record = lock(record);
                let left: usize = record.chunks.iter().skip(*next).map(Bytes::len).sum();
                if record.trailers.is_some() {
                    // An exact size makes HTTP/1 send `Content-Length`, which cannot carry
                    // trailers: a lower bound keeps the chunked encoding.
                    let mut hint = SizeHint::new();
                    hint.set_lower(left as u64);
                    hint
                } else {
                    SizeHint::with_exact(left as u64)
                }
            }
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = match &self.role {
            Role::Original { .. } => "original",
            Role::Copy { .. } => "copy",
        };
        f.debug_struct("ReplayBody")
            .field("role", &role)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::spare::KEPT;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;

    fn frames(chunks: &[&'static [u8]]) -> StreamBody<IterStream> {
        StreamBody::new(IterStream(
            chunks
                .iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c))))
                .collect::<Vec<_>>()
                .into_iter(),
        ))
    }

    /// A stream of frames, without a futures dependency.
    struct IterStream(std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>);

    impl futures_core::Stream for IterStream {
        type Item = Result<Frame<Bytes>, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next())
        }
    }

    #[tokio::test]
    async fn a_copy_replays_what_the_original_streamed() {
        let original = ReplayBody::new(frames(&[b"hello, ", b"world"]), 64);
        let copy = original.replay_copy().unwrap();
        assert!(!copy.is_replayable(), "not before the original was sent");
        let sent = original.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "hello, world");
        assert!(copy.is_replayable());
        assert_eq!(copy.size_hint().exact(), Some(12));
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "hello, world");
    }

    #[tokio::test]
    async fn past_the_cap_nothing_is_replayed() {
        let original = ReplayBody::new(frames(&[b"0123456789", b"0123456789"]), 15);
        let copy = original.replay_copy().unwrap();
        assert_eq!(original.collect().await.unwrap().to_bytes().len(), 20);
        assert!(!copy.is_replayable());
    }

    #[tokio::test]
    async fn a_half_sent_body_is_not_replayed() {
        let mut original = ReplayBody::new(frames(&[b"first", b"second"]), 64);
        let copy = original.replay_copy().unwrap();
        let first = original.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        assert!(!copy.is_replayable());
        // Polled anyway, the copy sends nothing rather than a part.
        assert!(copy.collect().await.unwrap().to_bytes().is_empty());
    }

    // hyper never polls a body that says it has ended: an empty body, or the last frame of a
    // sized one. Asking is enough to complete the record.
    #[test]
    fn a_body_that_says_it_ended_is_complete_without_a_final_poll() {
        let empty = ReplayBody::new(Full::new(Bytes::new()), 64);
        let copy = empty.replay_copy().unwrap();
        assert!(empty.is_end_stream());
        assert!(copy.is_replayable());
    }

    #[tokio::test]
    async fn the_last_frame_of_a_sized_body_completes_the_record() {
        let mut original = ReplayBody::new(Full::new(Bytes::from_static(b"{}")), 64);
        let copy = original.replay_copy().unwrap();
        original.frame().await.unwrap().unwrap();
        assert!(copy.is_replayable(), "no poll for the end is needed");
    }

    /// Streams `chunks`, and says it has ended once `ends_after` of them were streamed.
    struct EndsLater {
        chunks: Vec<&'static [u8]>,
        ends_after: usize,
        streamed: usize,
    }

    impl Body for EndsLater {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            let Some(chunk) = self.chunks.get(self.streamed).copied() else {
                return Poll::Ready(None);
            };
            self.streamed += 1;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))))
        }

        fn is_end_stream(&self) -> bool {
            self.streamed >= self.ends_after
        }
    }

    // A body whose end comes after its last frame was polled (a channel whose sender went):
    // asking whether it ended completes the record with what it streamed.
    #[tokio::test]
    async fn an_end_that_comes_after_the_last_poll_completes_the_record() {
        let later = EndsLater {
            chunks: vec![b"all of it"],
            ends_after: usize::MAX,
            streamed: 0,
        };
        let mut original = ReplayBody::new(later, 64);
        let copy = original.replay_copy().unwrap();
        original.frame().await.unwrap().unwrap();
        assert!(!copy.is_replayable(), "not ended yet");
        match &mut original.role {
            Role::Original { body, .. } => body.ends_after = 1,
            Role::Copy { .. } => unreachable!(),
        }
        assert!(original.is_end_stream());
        assert!(copy.is_replayable());
        assert_eq!(copy.size_hint().exact(), Some(9));
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "all of it");
    }

    fn spares() -> usize {
        SPARE.with(|spare| spare.borrow().len())
    }

    // A body that says it ended and then streams more (against `Body`'s contract): what it
    // streamed after is recorded too, so the copy never replays less than was sent.
    #[tokio::test]
    async fn frames_after_a_said_end_are_recorded_too() {
        let liar = EndsLater {
            chunks: vec![b"said the end, ", b"then more"],
            ends_after: 1,
            streamed: 0,
        };
        let original = ReplayBody::new(liar, 64);
        let copy = original.replay_copy().unwrap();
        let sent = original.collect().await.unwrap().to_bytes();
        assert_eq!(sent, "said the end, then more");
        assert!(copy.is_replayable());
        assert_eq!(copy.collect().await.unwrap().to_bytes(), sent);
    }

    // One copy handed to `prepare` with two bodies (a policy of a user's own can do it):
    // the first body records for it, the second for itself, so the copy replays the first
    // body alone, never the two run together.
    #[tokio::test]
    async fn a_copy_prepared_twice_replays_the_first_body_alone() {
        use crate::replay::{BufferBody, ReplayPolicy};
        let policy = BufferBody::default();
        let request = |body: &'static [u8]| {
            http::Request::post("http://127.0.0.1/a")
                .body(frames(&[body]))
                .unwrap()
        };
        let first = request(b"first");
        let kept = policy.keep(&first).unwrap();
        let first = policy.prepare(first, Some(&kept));
        let second = policy.prepare(request(b"second"), Some(&kept));
        assert_eq!(
            first.into_body().collect().await.unwrap().to_bytes(),
            "first"
        );
        assert_eq!(
            second.into_body().collect().await.unwrap().to_bytes(),
            "second"
        );
        let retry =
            <BufferBody as ReplayPolicy<_>>::replay(kept).expect("the first streamed whole");
        assert_eq!(
            retry.into_body().collect().await.unwrap().to_bytes(),
            "first"
        );
    }

    // A record given back is the next body's, emptied: the next copy replays that body alone,
    // and only once it streamed; while the copy of the first body lives, its record is its own.
    #[tokio::test(flavor = "current_thread")]
    async fn a_record_given_back_is_taken_again_empty() {
        let first = ReplayBody::new(frames(&[b"the first ", b"body"]), 64);
        let first_copy = first.replay_copy().unwrap();
        let first_record = match &first.role {
            Role::Original { record, .. } => Arc::as_ptr(record.arc()),
            Role::Copy { .. } => unreachable!(),
        };
        first.collect().await.unwrap();
        let before = spares();
        // The original is gone; the copy holds the record, and replays from it.
        let second = ReplayBody::new(frames(&[b"second"]), 64);
        assert_eq!(spares(), before);
        assert_eq!(
            first_copy.collect().await.unwrap().to_bytes(),
            "the first body"
        );
        assert_eq!(spares(), before + 1, "given back by the last of the two");

        let third = ReplayBody::new(frames(&[b"third"]), 64);
        let third_record = match &third.role {
            Role::Original { record, .. } => Arc::as_ptr(record.arc()),
            Role::Copy { .. } => unreachable!(),
        };
        assert_eq!(third_record, first_record, "the same record, taken again");
        let third_copy = third.replay_copy().unwrap();
        assert!(!third_copy.is_replayable(), "empty: nothing streamed yet");
        assert_eq!(third_copy.size_hint().exact(), Some(0));
        third.collect().await.unwrap();
        assert_eq!(third_copy.collect().await.unwrap().to_bytes(), "third");
        drop(second);
    }

    // A spoiled or failed record is given back emptied as well: the next body is replayable.
    #[tokio::test(flavor = "current_thread")]
    async fn a_spoiled_record_is_given_back_clean() {
        let big = ReplayBody::new(frames(&[b"0123456789", b"0123456789"]), 5);
        let big_copy = big.replay_copy().unwrap();
        big.collect().await.unwrap();
        assert!(!big_copy.is_replayable());
        drop(big_copy);
        let next = ReplayBody::new(frames(&[b"ok"]), 5);
        let next_copy = next.replay_copy().unwrap();
        next.collect().await.unwrap();
        assert!(next_copy.is_replayable());
        assert_eq!(next_copy.collect().await.unwrap().to_bytes(), "ok");
    }

    #[test]
    fn at_most_a_few_records_are_kept() {
        let bodies: Vec<_> = (0..KEPT * 3)
            .map(|_| ReplayBody::new(Full::new(Bytes::from_static(b"x")), 64))
            .collect();
        drop(bodies);
        assert_eq!(spares(), KEPT);
    }

    #[tokio::test]
    async fn full_bodies_and_trailers() {
        let original = ReplayBody::new(Full::new(Bytes::from_static(b"{}")), 64);
        let copy = original.replay_copy().unwrap();
        original.collect().await.unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "{}");

        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let with_trailers = http_body_util::StreamBody::new(IterStream(
            vec![
                Ok(Frame::data(Bytes::from_static(b"data"))),
                Ok(Frame::trailers(trailers.clone())),
            ]
            .into_iter(),
        ));
        let original = ReplayBody::new(with_trailers, 64);
        let copy = original.replay_copy().unwrap();
        original.collect().await.unwrap();
        assert_eq!(
            copy.size_hint().exact(),
            None,
            "chunked, so trailers can be sent"
        );
        let replayed = copy.collect().await.unwrap();
        assert_eq!(replayed.trailers(), Some(&trailers));
        assert_eq!(replayed.to_bytes(), "data");
    }
}
