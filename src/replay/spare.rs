//! Text buffers for snapshots, kept per thread: a request's snapshot takes one that an earlier
//! request on the same thread gave back, and gives it back when it is dropped.
//!
//! Measured (BENCHMARKS.md): glibc's `malloc` and `free` of the snapshot's small buffer cost
//! about 130 instructions per request, a buffer from this list about 30. A crate's object
//! pool would share its buffers between threads, with an atomic operation or a lock for each;
//! a list per thread, of one size and bounded, needs neither.
//!
//! A thread makes at most [`KEPT`] such buffers. Beyond them (more requests in flight on a
//! thread than that, such as a stampede of thousands waiting for one refresh, whose copies
//! are all alive at once) a text gets a buffer of its exact length, as it did before the list:
//! thousands of 256-byte buffers would be more memory to touch than thousands of 30-byte ones.

use std::cell::RefCell;
use std::mem;

/// The length of a kept buffer: the text of a request up to this length (most requests: the
/// URI and the headers but the token) goes in one.
pub(super) const SIZE: usize = 256;

/// Buffers a thread makes, and keeps, at most (4 KiB): beyond, a buffer given back is freed.
const KEPT: usize = 16;

/// A thread's spare buffers, and how many it made.
struct Spare {
    list: Vec<Box<[u8]>>,
    made: usize,
}

thread_local! {
    static SPARE: RefCell<Spare> = const {
        RefCell::new(Spare {
            list: Vec::new(),
            made: 0,
        })
    };
}

/// A snapshot's text: in a buffer of [`SIZE`] bytes, given back to this thread's list when
/// dropped, or in one of its exact length. Bytes past the text are left as an earlier text
/// wrote them, and never read.
pub(super) struct Text(Box<[u8]>);

impl Text {
    /// A buffer of [`SIZE`] bytes: a spare one, or a new one while this thread made fewer
    /// than [`KEPT`]; beyond, an empty one (no text fits: take one of its exact length).
    #[inline]
    pub(super) fn spare() -> Self {
        let spare = SPARE.try_with(|spare| {
            let mut spare = spare.try_borrow_mut().ok()?;
            if let Some(text) = spare.list.pop() {
                return Some(text);
            }
            if spare.made < KEPT {
                spare.made += 1;
                return Some(vec![0; SIZE].into_boxed_slice());
            }
            None
        });
        Self(spare.ok().flatten().unwrap_or_default())
    }

    /// A buffer of exactly `len` bytes.
    #[inline]
    pub(super) fn of_len(len: usize) -> Self {
        Self(vec![0; len].into_boxed_slice())
    }

    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Writes the text, in order.
    #[inline]
    pub(super) fn writer(&mut self) -> Writer<'_> {
        Writer {
            text: &mut self.0,
            at: 0,
        }
    }
}

impl Drop for Text {
    #[inline]
    fn drop(&mut self) {
        if self.0.len() != SIZE {
            return;
        }
        let text = mem::take(&mut self.0);
        // A thread that is ending, or a full list: the buffer is freed.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                let list = &mut spare.list;
                if list.len() < KEPT {
                    if list.capacity() == 0 {
                        // The list's own room, made once per thread.
                        list.reserve_exact(KEPT);
                    }
                    list.push(text);
                }
            }
        });
    }
}

/// Writes a text into its buffer, part after part.
pub(super) struct Writer<'a> {
    text: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    /// Appends `bytes`; `None` if they do not fit (never: the buffer was made for the text).
    #[inline]
    pub(super) fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.at.checked_add(bytes.len())?;
        self.text.get_mut(self.at..end)?.copy_from_slice(bytes);
        self.at = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares() -> usize {
        SPARE.with(|spare| spare.borrow().list.len())
    }

    #[test]
    fn a_buffer_given_back_is_taken_again() {
        let first = Text::spare();
        assert_eq!(first.bytes().len(), SIZE, "a new thread makes one");
        let address = first.bytes().as_ptr();
        let before = spares();
        drop(first);
        assert_eq!(spares(), before + 1);
        let second = Text::spare();
        assert_eq!(second.bytes().as_ptr(), address, "the same buffer");
        assert_eq!(spares(), before);
    }

    #[test]
    fn a_text_of_its_own_length_is_not_kept() {
        let before = spares();
        for len in [0, 10, SIZE - 1, SIZE + 1, 4 * SIZE] {
            let text = Text::of_len(len);
            assert_eq!(text.bytes().len(), len);
            drop(text);
        }
        assert_eq!(spares(), before);
    }

    // Beyond a few texts alive at once on a thread (a stampede of waiting requests), the
    // others get buffers of their own length: the thread makes no more spare ones, and keeps
    // no more than it made.
    #[test]
    fn a_thread_makes_and_keeps_a_few_buffers() {
        let spare = |text: &Text| text.bytes().len() == SIZE;
        let texts: Vec<Text> = (0..KEPT * 3).map(|_| Text::spare()).collect();
        assert_eq!(texts.iter().filter(|text| spare(text)).count(), KEPT);
        assert!(texts[KEPT..].iter().all(|text| text.bytes().is_empty()));
        drop(texts);
        assert_eq!(spares(), KEPT);
        let again: Vec<Text> = (0..KEPT * 3).map(|_| Text::spare()).collect();
        assert_eq!(again.iter().filter(|text| spare(text)).count(), KEPT);
    }

    /// What this thread's spare buffers hold, end to end.
    fn kept_bytes() -> Vec<u8> {
        SPARE.with(|spare| {
            let spare = spare.borrow();
            spare.list.iter().flat_map(|text| text.to_vec()).collect()
        })
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    // The text a retry is made from is taken before the layer attaches its token: a buffer
    // given back holds the request's own headers, never the token, whether the request waited
    // for the token or was sent at once.
    #[test]
    fn the_layers_token_is_never_in_a_kept_text() {
        use crate::{AuthLayer, RefreshRequest, TokenSet};
        use http_body_util::Full;
        use tower::{Layer, service_fn};

        const TOKEN: &str = "the-layers-secret-token-value";
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let refresher = service_fn(|_: RefreshRequest| async {
            Ok::<_, std::convert::Infallible>(TokenSet::new(TOKEN))
        });
        let api = service_fn(|request: http::Request<Full<bytes::Bytes>>| async move {
            let sent = request.headers()[http::header::AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            assert_eq!(sent, format!("Bearer {TOKEN}"));
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::<bytes::Bytes>::default()))
        });
        let service = AuthLayer::new(refresher).layer(api);
        runtime.block_on(async {
            // The first waits for the login, the second is sent at once.
            for _ in 0..2 {
                let request = http::Request::get("http://127.0.0.1/user/me")
                    .header("x-marker", "the-requests-own-header")
                    .body(Full::default())
                    .unwrap();
                service.clone().oneshot(request).await.unwrap();
            }
        });
        let kept = kept_bytes();
        assert!(
            contains(&kept, b"the-requests-own-header"),
            "the texts were given back"
        );
        assert!(!contains(&kept, TOKEN.as_bytes()));
    }

    #[test]
    fn a_text_that_does_not_fit_is_refused() {
        let mut text = Text::of_len(SIZE);
        let mut writer = text.writer();
        assert_eq!(writer.put(&[1; 200]), Some(()));
        assert_eq!(writer.put(&[2; SIZE - 200]), Some(()));
        assert_eq!(writer.put(&[3]), None, "past the end");
    }
}
