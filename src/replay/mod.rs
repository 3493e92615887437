//! Which requests can be sent a second time, after a 401.
//!
//! Retrying a request means sending its body again. The layer's [`ReplayPolicy`] prepares each
//! request before it is sent and keeps what a retry needs; a request without it, or whose copy
//! turns out not to be replayable, is never retried, and the caller gets the server's 401 as it
//! came. Nothing is ever sent twice, sent truncated, or replayed empty.
//!
//! - [`CloneBody`] (the default) copies requests whose body is a [`ReplayableBody`]: a body
//!   whose clones are independent copies (`Full<Bytes>`, `Empty<Bytes>`, `String`, `Bytes`,
//!   `Vec<u8>`, `()`, …). `Clone` is not enough, as some bodies' clones share one stream; any
//!   other body is a compile error that points here. A request whose parts cannot be kept
//!   (a header or an extension method's name over 64 KiB, more than 65,535 header values, an
//!   absolute URI whose path is `*`, a path without `/` that could read back as an authority)
//!   is sent once, not retried.
//! - [`BufferBody`] makes any body replayable: it wraps it in a [`ReplayBody`] that keeps
//!   what it streams, up to a cap (default 64 KiB), and replays from that buffer. A body
//!   larger than the cap, or not yet fully sent when the server answered, is not replayed.
//!   [`BufferBody::map_body`] turns the `ReplayBody` into the one body type an SDK's transport
//!   takes (tonic's `Channel`, octocrab's client).
//! - [`NoReplay`] never retries.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower_auth_refresh::replay::{BufferBody, CloneBody, NoReplay, ReplayPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let new_request = || {
//!     http::Request::post("http://127.0.0.1/echo")
//!         .body(Full::new(Bytes::from_static(b"{}")))
//!         .unwrap()
//! };
//!
//! // `Full<Bytes>` is replayable: a snapshot is kept before it is sent, and made into the copy.
//! let request = new_request();
//! let copy = CloneBody.keep(&request).expect("a replayable body");
//! let sent = CloneBody.prepare(request, Some(&copy));
//! let copy = CloneBody::replay(copy).expect("a clone replays");
//! assert_eq!(copy.uri(), sent.uri());
//!
//! // `BufferBody` replays what the original streamed, once it streamed whole.
//! let request = new_request();
//! let copy = BufferBody::default().keep(&request).unwrap();
//! let sent = BufferBody::default().prepare(request, Some(&copy));
//! sent.into_body().collect().await.unwrap();
//! let copy = <BufferBody as ReplayPolicy<Full<Bytes>>>::replay(copy).unwrap();
//! assert_eq!(copy.into_body().collect().await.unwrap().to_bytes(), "{}");
//!
//! assert!(NoReplay.keep(&new_request()).is_none());
//! # }
//! ```
//!
//! A body that the default policy cannot copy is a compile error where the service is used,
//! "the default replay policy cannot retry a request whose body is `…`", with a hint to
//! `BufferBody` (`tests/compile_fail/` holds the cases and the messages).

mod body;
mod buffer;
mod policy;
mod replayable;
mod snapshot;
mod spare;

pub use self::body::ReplayBody;
pub use self::buffer::{BufferBody, MapReplayBody};
pub use self::policy::{CloneBody, NoReplay, ReplayPolicy};
pub use self::replayable::ReplayableBody;
pub use self::snapshot::Snapshot;
