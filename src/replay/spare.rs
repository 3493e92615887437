//! Text buffers for snapshots, kept per thread: a request's snapshot takes one that an earlier
//! request gave back on this thread, and gives it back, wiped, to the list of the thread
//! that drops it.
//!
//! Measured (BENCHMARKS.md, callgrind): glibc's `malloc` and `free` of the snapshot's small
//! buffer cost about 130 instructions per request, taking a buffer from this list and giving
//! it back (wiped) about 40. A crate's object pool would share its buffers between threads,
//! with an atomic operation or a lock for each; a list per thread, of one size and bounded,
//! needs neither.
//!
//! A text that finds the list empty gets a buffer of its exact length, as before the list;
//! when that buffer goes and the list has room, a new spare one takes its place. So a
//! stampede's thousands of copies alive at once take thousands of small buffers, not of
//! 256 bytes; and a thread whose spares ended up on other threads (futures dropped there)
//! gets new ones after its next requests.

use std::cell::RefCell;
use std::mem;
use std::thread::LocalKey;

/// The length of a kept buffer: the text of a request up to this length (most requests: the
/// URI and the headers but the token) goes in one.
pub(super) const SIZE: usize = 256;

/// Spares of one kind kept per thread, at most (4 KiB of text buffers): beyond, one given
/// back is freed.
pub(super) const KEPT: usize = 16;

/// A thread's list of spares of one kind (text buffers here, `BufferBody`'s records in
/// `body.rs`).
pub(super) type Spares<T> = RefCell<Vec<T>>;

/// A spare from this thread's `list`, if it has one (none on a thread that is ending).
#[inline]
pub(super) fn take<T: 'static>(list: &'static LocalKey<Spares<T>>) -> Option<T> {
    list.try_with(|list| list.try_borrow_mut().ok()?.pop())
        .ok()
        .flatten()
}

/// Gives back to this thread's `list` what `spare` makes, if the list has room; else (or on a
/// thread that is ending) `spare` is not called. `spare` runs while the list is borrowed: it
/// must not run code of the application's (a `Drop` of its bytes).
#[inline]
pub(super) fn give_back<T: 'static>(list: &'static LocalKey<Spares<T>>, spare: impl FnOnce() -> T) {
    let _ = list.try_with(|list| {
        let Ok(mut list) = list.try_borrow_mut() else {
            return;
        };
        if list.len() >= KEPT {
            return;
        }
        if list.capacity() == 0 {
            // The list's own room, made once per thread.
            list.reserve_exact(KEPT);
        }
        list.push(spare());
    });
}

thread_local! {
    static SPARE: Spares<Box<[u8]>> = const { RefCell::new(Vec::new()) };
}

/// A snapshot's text: in a spare buffer of [`SIZE`] bytes, or in one of its exact length.
/// Bytes past the text in a spare buffer are zeros (it is wiped when given back), never read.
pub(super) struct Text(Box<[u8]>);

impl Text {
    /// A spare buffer of [`SIZE`] bytes if this thread has one; else an empty one, into which
    /// no text fits (take one of its exact length).
    #[inline]
    pub(super) fn spare() -> Self {
        Self(take(&SPARE).unwrap_or_default())
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
        // An empty one (the list had none) holds nothing.
        if self.0.is_empty() {
            return;
        }
        let mut text = mem::take(&mut self.0);
        // A thread that is ending, or a full list: the buffer is freed as it is.
        give_back(&SPARE, move || {
            if text.len() == SIZE {
                #[cfg(test)]
                tests::GIVEN_BACK.with(|seen| seen.borrow_mut().extend_from_slice(&text));
                // Wiped: a caller's header (a cookie, a key of its own) does not wait in
                // the list for the thread's end.
                text.fill(0);
                text
            } else {
                // A text of its own length, taken when the list was empty: a new spare
                // buffer takes its place, for the next request.
                vec![0; SIZE].into_boxed_slice()
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
    /// Appends `bytes`; `None` if they do not fit (the text is longer than the buffer).
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

    thread_local! {
        /// What the texts given back on this thread held before they were wiped.
        pub(super) static GIVEN_BACK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    fn spares() -> usize {
        SPARE.with(|spare| spare.borrow().len())
    }

    /// What this thread's spare buffers hold, end to end.
    fn kept_bytes() -> Vec<u8> {
        SPARE.with(|spare| {
            spare
                .borrow()
                .iter()
                .flat_map(|text| text.to_vec())
                .collect()
        })
    }

    fn given_back() -> Vec<u8> {
        GIVEN_BACK.with(|seen| seen.borrow().clone())
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack
            .windows(needle.len())
            .any(|window| window == needle)
    }

    #[test]
    fn a_buffer_given_back_is_taken_again() {
        assert!(Text::spare().bytes().is_empty(), "a new thread has none");
        drop(Text::of_len(10));
        assert_eq!(spares(), 1, "a spare one in its place");
        let first = Text::spare();
        assert_eq!(first.bytes().len(), SIZE);
        let address = first.bytes().as_ptr();
        drop(first);
        let second = Text::spare();
        assert_eq!(second.bytes().as_ptr(), address, "the same buffer");
        assert_eq!(spares(), 0);
    }

    // A stampede's copies, alive at once, find the list empty and take small buffers; as they
    // go, the list fills up to its bound, no further.
    #[test]
    fn many_texts_alive_at_once_take_their_own_length_and_the_list_stays_bounded() {
        let texts: Vec<Text> = (0..KEPT * 3).map(|_| Text::of_len(30)).collect();
        assert!(Text::spare().bytes().is_empty());
        drop(texts);
        assert_eq!(spares(), KEPT);
        let again: Vec<Text> = (0..KEPT * 3).map(|_| Text::spare()).collect();
        let spare = again
            .iter()
            .filter(|text| text.bytes().len() == SIZE)
            .count();
        assert_eq!(spare, KEPT);
        assert!(again[KEPT..].iter().all(|text| text.bytes().is_empty()));
    }

    // Spares dropped on another thread (futures finished on another worker) go to that
    // thread's list; this one gets new ones after its next requests.
    #[test]
    fn a_thread_whose_spares_went_elsewhere_gets_new_ones() {
        for _ in 0..KEPT {
            drop(Text::of_len(30));
        }
        let taken: Vec<Text> = (0..KEPT).map(|_| Text::spare()).collect();
        std::thread::spawn(move || drop(taken)).join().unwrap();
        assert!(Text::spare().bytes().is_empty(), "none left here");
        drop(Text::of_len(30));
        for _ in 0..1_000 {
            assert_eq!(Text::spare().bytes().len(), SIZE);
        }
    }

    // A caller's own secret header, kept for a retry, does not wait in the list for the
    // thread's end: a buffer given back is wiped.
    #[test]
    fn a_buffer_given_back_is_wiped() {
        drop(Text::of_len(30));
        let mut secret = http::HeaderValue::from_static("Basic Y2FsbGVyOnNlY3JldA==");
        secret.set_sensitive(true);
        let request = http::Request::get("https://a.example/")
            .header("proxy-authorization", secret)
            .body(())
            .unwrap();
        drop(super::super::Snapshot::of(&request, ()).unwrap());
        assert!(
            contains(&given_back(), b"Y2FsbGVyOnNlY3JldA=="),
            "it was kept"
        );
        assert_eq!(spares(), 1);
        assert!(kept_bytes().iter().all(|&byte| byte == 0));
    }

    // The text a retry is made from is taken before the layer attaches its token: a text
    // given back held the request's own headers, never the token, whether the request waited
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
            // The first waits for the login, the others are sent at once (the second into
            // the spare buffer the first one's left).
            for _ in 0..3 {
                let request = http::Request::get("http://127.0.0.1/user/me")
                    .header("x-marker", "the-requests-own-header")
                    .body(Full::default())
                    .unwrap();
                service.clone().oneshot(request).await.unwrap();
            }
        });
        let kept = given_back();
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
