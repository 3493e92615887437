//! What the cache asks of a refresher, and how a refresh can fail.
//!
//! A refresher is any [`tower::Service`]`<`[`RefreshRequest`]`, Response = `[`TokenSet`]`>`.
//! The cache calls it at most once at a time; the request says why a token is needed and
//! carries the current token set, whose refresh token a refresh-token grant uses.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::service_fn;
//! use tower_auth_refresh::{RefreshReason, RefreshRequest, TokenSet};
//!
//! // A refresher is often a closure; this one asks nothing of any server.
//! let refresher = service_fn(|request: RefreshRequest| async move {
//!     let token = match request.reason() {
//!         RefreshReason::NoToken => "first-token",
//!         _ => "next-token",
//!     };
//!     Ok::<_, Infallible>(TokenSet::new(token).with_expires_in(Duration::from_secs(900)))
//! });
//! # let _ = refresher;
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use crate::token::{RefreshToken, TokenSet};

/// Errors of any type, boxed: what a refresher's error is turned into.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// Why the cache needs a new token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshReason {
    /// There is no token yet (or it was cleared): log in.
    NoToken,
    /// The token is inside its refresh window: it still works, but not for long.
    Expiring,
    /// The token has expired, or is too close to expiry to be sent.
    Expired,
    /// The server rejected the token (by default: answered 401).
    Rejected,
    /// The application asked for a refresh through [`AuthHandle::refresh`](crate::AuthHandle::refresh).
    Forced,
}

impl fmt::Display for RefreshReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoToken => "no token",
            Self::Expiring => "expiring",
            Self::Expired => "expired",
            Self::Rejected => "rejected",
            Self::Forced => "forced",
        })
    }
}

/// A request for a new token set, sent to the refresher.
#[derive(Clone, Debug)]
pub struct RefreshRequest {
    reason: RefreshReason,
    current: Option<TokenSet>,
}

impl RefreshRequest {
    /// A request for the given reason, carrying the current token set, if any.
    pub fn new(reason: RefreshReason, current: Option<TokenSet>) -> Self {
        Self { reason, current }
    }

    /// Why a new token is needed.
    pub fn reason(&self) -> RefreshReason {
        self.reason
    }

    /// The token set in use now, if any.
    pub fn current(&self) -> Option<&TokenSet> {
        self.current.as_ref()
    }

    /// The current refresh token, if any.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.current.as_ref().and_then(TokenSet::refresh_token)
    }
}

/// A refresh failed. Every request waiting for that refresh receives a clone of this error.
///
/// [`kind`](Self::kind) says what went wrong; for [`RefreshErrorKind::Refresher`], the error
/// the refresher returned is the [`source`](StdError::source) and can be downcast, e.g. to
/// [`oauth2::Error`](crate::oauth2::Error) when the crate's OAuth2 refresher is used.
#[derive(Clone)]
pub struct RefreshError {
    kind: RefreshErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

/// What kind of failure a [`RefreshError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshErrorKind {
    /// The refresher returned an error (it is the error's source).
    Refresher,
    /// The refresher returned an access token that cannot be sent in an HTTP header.
    InvalidToken,
    /// The refresh task ended without an outcome: the refresher panicked, or the runtime
    /// shut down.
    Aborted,
    /// No tokio runtime was running to drive the refresh.
    NoRuntime,
    /// The refresher did not answer within the refresh timeout
    /// ([`AuthLayer::refresh_timeout`](crate::AuthLayer::refresh_timeout)).
    Timeout,
    /// The application cleared the tokens ([`AuthHandle::clear`](crate::AuthHandle::clear))
    /// while the refresh ran; its result was discarded.
    Superseded,
}

impl RefreshError {
    pub(crate) fn new(kind: RefreshErrorKind) -> Self {
        Self { kind, source: None }
    }

    pub(crate) fn refresher(source: BoxError) -> Self {
        Self {
            kind: RefreshErrorKind::Refresher,
            source: Some(Arc::from(source)),
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> RefreshErrorKind {
        self.kind
    }

    /// The refresher's own error, if that is what failed.
    pub fn refresher_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }
}

impl fmt::Debug for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            RefreshErrorKind::Refresher => "the token refresher failed",
            RefreshErrorKind::InvalidToken => {
                "the token refresher returned an access token that is not a valid header value"
            }
            RefreshErrorKind::Aborted => "the token refresh ended without an outcome",
            RefreshErrorKind::NoRuntime => "no tokio runtime is running to refresh the token",
            RefreshErrorKind::Timeout => "the token refresher did not answer in time",
            RefreshErrorKind::Superseded => "the tokens were cleared while the refresh ran",
        })
    }
}

impl StdError for RefreshError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|error| error as &(dyn StdError + 'static))
    }
}

/// A refresher error that retrying cannot cure, e.g. revoked credentials.
///
/// Return it (or any error whose boxed form is one) from a refresher of your own: the cache
/// then stops calling the refresher, and every request fails at once with this error, until
/// the application sets tokens, replaces the refresher or forces a refresh through the
/// [`AuthHandle`](crate::AuthHandle). Other errors are taken as transient and retried after a
/// backoff. The [`OAuth2Refresher`](crate::oauth2::OAuth2Refresher)'s refusals (rejected
/// credentials, a refused refresh token with no login) are terminal too.
#[derive(Debug)]
pub struct TerminalError(BoxError);

impl TerminalError {
    /// Marks `error` as terminal.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }

    /// The error it marks.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl fmt::Display for TerminalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl StdError for TerminalError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0.source()
    }
}
