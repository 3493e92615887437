//! Many users behind one layer: a session per key (feature `keyed`).
//!
//! A backend that calls an API on behalf of its users (each user linked an account) needs one
//! session per user: each with its own token set, refresh windows, single flight, failure state
//! and backoff, none ever sent with another user's request. [`KeyedAuthLayer`] is
//! [`AuthLayer`](crate::AuthLayer) with a session per key:
//!
//! - **The key comes from the request**: by default a request extension of the key's type,
//!   which the application inserts (its own session middleware knows the user); or a closure
//!   over the request's head ([`KeyedAuthLayer::key_from`]). A request the layer would send a
//!   token with but that has no key fails with [`MissingSessionKey`] and is not sent: it never
//!   gets another user's token, nor a shared one unless the layer was given a
//!   [`default_key`](KeyedAuthLayer::default_key).
//! - **Each key's refresher is made for it**: the layer is built from a function of the key that
//!   returns the refresher of that key's session (the crate's OAuth2 refresher with that user's
//!   credentials, or a closure that looks them up in the application's database). It is called
//!   once per session, when the session is first needed (and again if it was evicted).
//! - **A 401 refreshes only the session whose token was rejected**, as everything else the
//!   single-session layer does, per key: the same cache runs each key's session.
//! - **Memory is bounded** if asked ([`KeyedAuthLayerBuilder::max_sessions`],
//!   [`idle_timeout`](KeyedAuthLayerBuilder::idle_timeout)): the least recently used sessions
//!   are dropped from memory (a concurrent cache, `quick_cache`, without a global lock on the
//!   hot path).
//!   **With a store** ([`KeyedAuthLayerBuilder::store`], e.g. a keyed
//!   [`RedisStore`](crate::store::RedisStore)), an evicted session is read back from the store on
//!   its next use, without a new login; processes sharing the store share one login and one
//!   refresh chain per key. **Without a store, an evicted session is gone**, refresh token and
//!   all: its next request asks the refresher for a new login
//!   ([`RefreshReason::NoToken`](crate::RefreshReason::NoToken)). So bound a layer without a
//!   store only if its refresher can log every user in again.
//! - **The handle speaks per key**: [`KeyedHandle::set_tokens`] after a user's interactive
//!   login elsewhere, [`token`](KeyedHandle::token), [`refresh`](KeyedHandle::refresh),
//!   [`logout`](KeyedHandle::logout), [`clear`](KeyedHandle::clear).
//!
//! # Example
//!
//! ```
//! # use std::convert::Infallible;
//! # use std::time::Duration;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use bytes::Bytes;
//! use tower::{Layer, ServiceExt, service_fn};
//! use tower_auth_refresh::keyed::KeyedAuthLayer;
//! use tower_auth_refresh::{RefreshRequest, TokenSet};
//!
//! /// The application's own user id: the session key, carried as a request extension.
//! #[derive(Clone, Debug, PartialEq, Eq, Hash)]
//! struct UserId(u64);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_auth_refresh::BoxError> {
//! // Each user's refresher: here a closure that logs the user in with a token of their own.
//! let layer = KeyedAuthLayer::builder(|user: &UserId| {
//!     let user = user.0;
//!     service_fn(move |_: RefreshRequest| async move {
//!         Ok::<_, Infallible>(TokenSet::new(format!("token-of-{user}")).with_expires_in(Duration::from_secs(900)))
//!     })
//! })
//! .max_sessions(10_000)
//! .build();
//!
//! let api = service_fn(|request: Request<Full<Bytes>>| async move {
//!     let token = request.headers()["authorization"].to_str().unwrap().to_owned();
//!     Ok::<_, Infallible>(Response::new(token))
//! });
//! let client = layer.layer(api);
//!
//! let mut request = Request::new(Full::default());
//! request.extensions_mut().insert(UserId(7));
//! let response = client.clone().oneshot(request).await?;
//! assert_eq!(response.into_body(), "Bearer token-of-7");
//!
//! // Without a key, nothing is sent.
//! let error = client.oneshot(Request::new(Full::default())).await.unwrap_err();
//! assert!(error.is::<tower_auth_refresh::keyed::MissingSessionKey>());
//! # Ok(())
//! # }
//! ```

mod builder;
mod handle;
mod key;
mod layer;
mod service;
mod sessions;

pub use self::builder::KeyedAuthLayerBuilder;
pub use self::handle::KeyedHandle;
pub use self::key::{MissingSessionKey, RequestHead};
pub use self::layer::KeyedAuthLayer;
pub use self::service::KeyedAuthService;
