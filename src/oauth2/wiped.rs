//! The refresher's own buffers that hold secrets, wiped from memory when they are dropped: the
//! form body it sends (password, refresh token, client secret, client assertion) and the
//! answer it reads (access and refresh tokens).
//!
//! The form goes out as `Full<Bytes>`, what any tower HTTP client takes, so the refresher
//! stays generic over the clients users already have: the `Bytes` own their buffer through
//! [`Bytes::from_owner`], and the buffer is wiped when the last `Bytes` that shares it is
//! dropped (after the client wrote it). The answer is gathered into a buffer that is wiped
//! too, grown by copying into a larger wiped buffer, never by a reallocation that would leave
//! the old bytes behind. What other crates copy on the way (hyper's read and write buffers,
//! the TLS library's records) is theirs and is not wiped.

use std::ops::Deref;

use bytes::{Buf, Bytes};
use http_body::Body;
use http_body_util::{BodyExt as _, Full};
use zeroize::{Zeroize, Zeroizing};

use super::error::{Error, ErrorKind};
use crate::refresh::BoxError;

/// A request body over `buffer`, which is wiped when the last `Bytes` sharing it is dropped.
pub(super) fn body<T>(buffer: T) -> Full<Bytes>
where
    T: AsRef<[u8]> + Zeroize + Send + 'static,
{
    Full::new(Bytes::from_owner(Zeroizing::new(buffer)))
}

/// A response body read whole into a buffer that is wiped when dropped.
pub(super) struct Wiped(Zeroizing<Vec<u8>>);

impl Deref for Wiped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Reads a body up to `limit` bytes. `Ok(None)`: it was larger.
pub(super) async fn read<B>(body: B, limit: usize) -> Result<Option<Wiped>, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = body.size_hint().exact().map(|length| length as usize);
    if declared.is_some_and(|length| length > limit) {
        return Ok(None);
    }
    let mut buffer = Zeroizing::new(Vec::with_capacity(declared.unwrap_or(1024)));
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            Error::new(
                ErrorKind::Transient,
                "the token endpoint's answer was cut short",
            )
            .with_source(error)
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue; // Trailers: nothing to read.
        };
        while data.has_remaining() {
            let chunk = data.chunk();
            if buffer.len() + chunk.len() > limit {
                return Ok(None);
            }
            append(&mut buffer, chunk);
            let read = chunk.len();
            data.advance(read);
        }
    }
    Ok(Some(Wiped(buffer)))
}

/// Appends `chunk`; when there is no room, moves everything into a larger buffer and lets the
/// old one be wiped, rather than let `Vec` reallocate and free it unwiped.
fn append(buffer: &mut Zeroizing<Vec<u8>>, chunk: &[u8]) {
    let needed = buffer.len() + chunk.len();
    if needed > buffer.capacity() {
        let mut larger = Zeroizing::new(Vec::with_capacity(needed.max(buffer.capacity() * 2)));
        larger.extend_from_slice(buffer);
        *buffer = larger;
    }
    buffer.extend_from_slice(chunk);
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    /// A buffer that records what it held when it was wiped.
    struct Probe {
        bytes: Vec<u8>,
        wiped: Arc<Mutex<Option<Vec<u8>>>>,
    }

    impl AsRef<[u8]> for Probe {
        fn as_ref(&self) -> &[u8] {
            &self.bytes
        }
    }

    impl Zeroize for Probe {
        fn zeroize(&mut self) {
            *self.wiped.lock().unwrap() = Some(self.bytes.clone());
            self.bytes.zeroize();
        }
    }

    #[tokio::test]
    async fn the_form_is_wiped_when_the_last_bytes_sharing_it_go() {
        let wiped = Arc::new(Mutex::new(None));
        let form = b"grant_type=password&password=hunter2".to_vec();
        let body = body(Probe {
            bytes: form.clone(),
            wiped: Arc::clone(&wiped),
        });
        // A client that keeps a clone of the data while it writes it.
        let sent = body.clone().collect().await.unwrap().to_bytes();
        assert_eq!(sent, form.as_slice());
        drop(body);
        assert_eq!(*wiped.lock().unwrap(), None, "still in use: not wiped yet");
        drop(sent);
        assert_eq!(
            wiped.lock().unwrap().as_deref(),
            Some(form.as_slice()),
            "wiped once the last Bytes went"
        );
    }

    fn chunked(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = BoxError> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
            .collect();
        StreamBody::new(futures_util_stream(frames))
    }

    fn futures_util_stream<T>(items: Vec<T>) -> impl futures_core::Stream<Item = T> {
        struct Iter<T>(std::vec::IntoIter<T>);
        impl<T> futures_core::Stream for Iter<T> {
            type Item = T;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<T>> {
                std::task::Poll::Ready(self.0.next())
            }
        }
        impl<T> Unpin for Iter<T> {}
        Iter(items.into_iter())
    }

    #[tokio::test]
    async fn an_answer_is_read_whole_up_to_the_limit() {
        let read_all = read(chunked(&[b"{\"access", b"_token\":", b"\"t\"}"]), 64)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&*read_all, b"{\"access_token\":\"t\"}");
        let over = read(chunked(&[b"0123456789", b"0123456789"]), 15).await;
        assert!(over.unwrap().is_none());
        let declared_over = read(Full::new(Bytes::from_static(&[0; 100])), 99).await;
        assert!(declared_over.unwrap().is_none());
        let empty = read(Full::new(Bytes::new()), 10).await.unwrap().unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn growing_moves_into_a_larger_buffer() {
        let mut buffer = Zeroizing::new(Vec::with_capacity(4));
        append(&mut buffer, b"abc");
        append(&mut buffer, b"defgh");
        append(&mut buffer, b"i");
        assert_eq!(buffer.as_slice(), b"abcdefghi");
        assert!(buffer.capacity() >= 9);
    }
}
