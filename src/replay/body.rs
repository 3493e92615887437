//! A body that keeps what it streams, so that it can be sent again.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use smallvec::SmallVec;

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
            record: Arc<Mutex<Record>>,
        },
        Copy {
            record: Arc<Mutex<Record>>,
            next: usize,
            trailers_sent: bool,
        },
    }
}

/// What the original has streamed.
#[derive(Default)]
struct Record {
    chunks: SmallVec<[Bytes; 2]>,
    buffered: usize,
    max: usize,
    trailers: Option<HeaderMap>,
    /// The original body ended without error.
    complete: bool,
    /// More than `max` bytes, or an error: the record is incomplete for good.
    spoiled: bool,
}

impl Record {
    fn replayable(&self) -> bool {
        self.complete && !self.spoiled
    }
}

fn lock(record: &Mutex<Record>) -> MutexGuard<'_, Record> {
    record.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<B> ReplayBody<B> {
    pub(crate) fn new(body: B, max: usize) -> Self {
        Self {
            role: Role::Original {
                body,
                record: Arc::new(Mutex::new(Record {
                    max,
                    ..Record::default()
                })),
            },
        }
    }

    /// A copy that will replay the record; `None` for a copy of a copy.
    pub(crate) fn replay_copy(&self) -> Option<Self> {
        match &self.role {
            Role::Original { record, .. } => Some(Self {
                role: Role::Copy {
                    record: Arc::clone(record),
                    next: 0,
                    trailers_sent: false,
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
            RoleProj::Original { mut body, record } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                let mut record = lock(record);
                let frame = match frame {
                    None => {
                        record.complete = true;
                        return Poll::Ready(None);
                    }
                    Some(Err(error)) => {
                        record.spoiled = true;
                        return Poll::Ready(Some(Err(error)));
                    }
                    Some(Ok(frame)) => frame,
                };
                let frame = match frame.into_data() {
                    Ok(mut data) => {
                        let bytes = data.copy_to_bytes(data.remaining());
                        if !record.spoiled {
                            if record.buffered + bytes.len() > record.max {
                                // Past the cap: this body will not be replayed.
                                record.spoiled = true;
                                record.chunks = SmallVec::new();
                            } else {
                                record.buffered += bytes.len();
                                record.chunks.push(bytes.clone());
                            }
                        }
                        // A client may stop polling once the body says it has ended (hyper
                        // does, and never polls a body that is empty from the start).
                        if body.is_end_stream() {
                            record.complete = true;
                        }
                        Frame::data(bytes)
                    }
                    Err(frame) => match frame.into_trailers() {
                        // Trailers are the last frame: hyper does not poll past them.
                        Ok(trailers) => {
                            record.trailers = Some(trailers.clone());
                            record.complete = true;
                            Frame::trailers(trailers)
                        }
                        // An unknown kind of frame: pass it on, but it cannot be replayed.
                        Err(frame) => {
                            record.spoiled = true;
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
            Role::Original { body, record } => {
                let end = body.is_end_stream();
                if end {
                    lock(record).complete = true;
                }
                end
            }
            Role::Copy {
                record,
                next,
                trailers_sent,
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
