//! Keep an OAuth2 session alive for any tower HTTP client.
//!
//! [`AuthLayer`] wraps any `tower::Service<http::Request<B>>` (a hyper-util `Client`, an
//! axum/tower stack, a generated API client) in an [`AuthService`] that:
//!
//! - attaches `Authorization: Bearer <token>`, a header built once per token and marked
//!   sensitive: the hot path is one atomic load, no lock, no allocation beyond what the request
//!   copy for a retry needs;
//! - refreshes the token before it expires, in the background while it is still valid (the
//!   soft window), and makes requests wait only when it is about to expire (the hard window);
//! - calls the refresher at most once at a time, however many requests need a token, in a
//!   spawned task that a dropped request never cancels;
//! - on a 401, refreshes only if the rejected token is still the current one, then retries the
//!   request once, if its body can be replayed.
//!
//! The refresher is any `Service<`[`RefreshRequest`]`, Response = `[`TokenSet`]`>`: a closure
//! through `tower::service_fn`, or the OAuth2 token-endpoint client in [`oauth2`].
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{header::AUTHORIZATION, Request, Response, StatusCode};
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_auth_refresh::BoxError> {
//! // Where tokens come from: here a closure; in real use an OAuth2 token endpoint.
//! let refresher = service_fn(|_request: RefreshRequest| async {
//!     Ok::<_, Infallible>(TokenSet::new("token-1").with_expires_in(Duration::from_secs(900)))
//! });
//!
//! // The API: here a closure that checks the header; in real use a hyper-util Client.
//! let api = service_fn(|request: Request<Full<Bytes>>| async move {
//!     let status = match request.headers().get(AUTHORIZATION) {
//!         Some(value) if value == "Bearer token-1" => StatusCode::OK,
//!         _ => StatusCode::UNAUTHORIZED,
//!     };
//!     let mut response = Response::new(Full::new(Bytes::new()));
//!     *response.status_mut() = status;
//!     Ok::<_, Infallible>(response)
//! });
//!
//! let layer = AuthLayer::new(refresher).refresh_before(Duration::from_secs(60));
//! let client = ServiceBuilder::new().layer(layer).service(api);
//!
//! let response = client
//!     .oneshot(Request::get("http://127.0.0.1/user/me").body(Full::default())?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//!
//! [`AuthService`]'s error type is [`BoxError`], as in tower's own middleware: the inner
//! service's error passes through unchanged (downcast it to its own type), and a failed
//! refresh is a [`RefreshError`] whose source is the refresher's error.
//!
//! # Layer order
//!
//! - Put `AuthLayer` *outside* tower-http's `FollowRedirect`, so the token is attached once,
//!   by this layer, and a redirect hop does not re-send it to another origin.
//! - Put tower-http's `SetSensitiveRequestHeaders` before `Trace`, so traces never print the
//!   header (this layer already marks the header value sensitive).
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod cache;
#[cfg(feature = "dpop")]
#[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
pub mod dpop;
mod handle;
#[cfg(feature = "private-key-jwt")]
mod jose;
#[cfg(feature = "keyed")]
#[cfg_attr(docsrs, doc(cfg(feature = "keyed")))]
pub mod keyed;
#[cfg(feature = "oauth2")]
#[cfg_attr(docsrs, doc(cfg(feature = "oauth2")))]
pub mod oauth2;
mod refresh;
pub mod replay;
#[cfg(feature = "reqwest")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
pub mod reqwest;
pub mod store;
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;
mod token;

pub use crate::auth::{
    AuthLayer, AuthLayerBuilder, AuthService, InvalidOrigin, Origin, Rejection, ResponseFuture,
};
pub use crate::cache::TokenEvent;
pub use crate::handle::{AuthHandle, TokenState};
pub use crate::refresh::{
    BoxError, RefreshError, RefreshErrorKind, RefreshReason, RefreshRequest, RevokeRequest,
    TerminalError, refresh_error,
};
pub use crate::token::{AccessToken, RefreshToken, Secret, TokenSet, TokenType, jwt_expiry};

/// The README's examples, compiled as doc tests.
#[cfg(all(doctest, feature = "rustls"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
