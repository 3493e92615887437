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
use std::time::Duration;

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

/// A request to end a session at the identity provider, sent to the layer's revoker by
/// [`AuthHandle::logout`](crate::AuthHandle::logout): revoke these tokens (RFC 7009, or a
/// provider's logout endpoint).
///
/// A revoker is any `Service<RevokeRequest, Response = ()>`;
/// [`OAuth2Revoker`](crate::oauth2::OAuth2Revoker) is one.
#[derive(Clone, Debug)]
pub struct RevokeRequest {
    tokens: TokenSet,
}

impl RevokeRequest {
    /// A request to revoke `tokens`.
    pub fn new(tokens: TokenSet) -> Self {
        Self { tokens }
    }

    /// The token set to revoke: its refresh token first (revoking it ends the session at most
    /// servers), else its access token.
    pub fn tokens(&self) -> &TokenSet {
        &self.tokens
    }
}

/// A refresh failed. Every request waiting for that refresh receives a clone of this error.
///
/// [`kind`](Self::kind) says what went wrong; for [`RefreshErrorKind::Refresher`], the error
/// the refresher returned is the [`source`](StdError::source) and can be downcast, e.g. to
/// [`oauth2::Error`](crate::oauth2::Error) when the crate's OAuth2 refresher is used. Its
/// `Display` names the refresher's error too (`the token refresher failed: the token endpoint
/// rejected …: invalid_grant "Invalid user credentials"`), and says when the error is a
/// remembered one rather than the outcome of a new attempt ([`is_cached`](Self::is_cached)).
///
/// Out of a tower service's `BoxError`, get it with [`refresh_error`](crate::refresh_error).
#[derive(Clone)]
pub struct RefreshError {
    kind: RefreshErrorKind,
    source: Option<Arc<dyn StdError + Send + Sync>>,
    cached: Option<Cached>,
}

/// Why a remembered error was given instead of calling the refresher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cached {
    /// The backoff after a transient failure has this long to run.
    For(Duration),
    /// A terminal failure: until the application sets tokens, replaces the refresher or forces
    /// a refresh.
    UntilTheApplicationActs,
    /// The waiters of a refresh timed out and its exchange is still running; none other starts
    /// meanwhile (it could spend the refresh token the running one is about to replace).
    UntilTheRunningRefreshEnds,
}

/// What kind of failure a [`RefreshError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefreshErrorKind {
    /// The refresher returned an error (it is the error's source).
    Refresher,
    /// The refresher returned an access token that cannot be sent in an HTTP header.
    InvalidToken,
    /// The refresher returned a token that had already expired (a clock that disagrees with
    /// the issuer's, or a token endpoint that answers with stale tokens). It is not installed;
    /// the refresh is tried again after the backoff.
    AlreadyExpired,
    /// The refresh ended without an outcome: the refresher panicked (tried again after the
    /// backoff), or the runtime the layer was pinned to shut down.
    Aborted,
    /// The layer could not start its background runtime and no runtime was running to drive
    /// the refresh.
    NoRuntime,
    /// The refresher did not answer within the refresh timeout
    /// ([`AuthLayerBuilder::refresh_timeout`](crate::AuthLayerBuilder::refresh_timeout)). The
    /// exchange itself goes on, and a late answer is installed.
    Timeout,
    /// The application set or cleared the tokens ([`AuthHandle::clear`](crate::AuthHandle::clear))
    /// while the refresh ran; its result was discarded.
    Superseded,
    /// The token store failed to take the application's tokens or to delete the session (the
    /// source is the [`StoreError`](crate::store::StoreError)).
    Store,
    /// The identity provider did not revoke the session on
    /// [`AuthHandle::logout`](crate::AuthHandle::logout) (the source is the revoker's error).
    /// The session was cleared here and in the store all the same.
    Revoke,
}

impl RefreshError {
    pub(crate) fn new(kind: RefreshErrorKind) -> Self {
        Self {
            kind,
            source: None,
            cached: None,
        }
    }

    pub(crate) fn refresher(source: BoxError) -> Self {
        Self {
            kind: RefreshErrorKind::Refresher,
            source: Some(Arc::from(source)),
            cached: None,
        }
    }

    pub(crate) fn store(source: crate::store::StoreError) -> Self {
        Self {
            kind: RefreshErrorKind::Store,
            source: Some(Arc::new(source)),
            cached: None,
        }
    }

    pub(crate) fn revoke(source: BoxError) -> Self {
        Self {
            kind: RefreshErrorKind::Revoke,
            source: Some(Arc::from(source)),
            cached: None,
        }
    }

    pub(crate) fn cached(mut self, why: Cached) -> Self {
        self.cached = Some(why);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> RefreshErrorKind {
        self.kind
    }

    /// The refresher's own error, if that is what failed.
    pub fn refresher_error(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.source.as_deref()
    }

    /// Whether this is a remembered failure, given without calling the refresher: during the
    /// backoff after a transient failure, after a terminal one, or while a timed-out refresh
    /// is still running.
    pub fn is_cached(&self) -> bool {
        self.cached.is_some()
    }

    /// For a remembered transient failure, how long until the refresher is tried again.
    pub fn retry_in(&self) -> Option<Duration> {
        match self.cached {
            Some(Cached::For(wait)) => Some(wait),
            _ => None,
        }
    }
}

impl fmt::Debug for RefreshError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshError")
            .field("kind", &self.kind)
            .field("source", &self.source)
            .field("cached", &self.cached)
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
            RefreshErrorKind::AlreadyExpired => {
                "the token refresher returned a token that had already expired"
            }
            RefreshErrorKind::Aborted => "the token refresh ended without an outcome",
            RefreshErrorKind::NoRuntime => "no tokio runtime is running to refresh the token",
            RefreshErrorKind::Timeout => "the token refresher did not answer in time",
            RefreshErrorKind::Superseded => "the tokens were cleared while the refresh ran",
            RefreshErrorKind::Store => "the token store failed",
            RefreshErrorKind::Revoke => "the identity provider did not revoke the session",
        })?;
        // The refresher's own words are what a user needs (`invalid_grant "Invalid user
        // credentials"`); the error types of this crate never carry a secret in them.
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        match self.cached {
            None => Ok(()),
            Some(Cached::For(wait)) => write!(
                f,
                " (remembered: not retried for another {:.1} s)",
                wait.as_secs_f64()
            ),
            Some(Cached::UntilTheApplicationActs) => {
                f.write_str(" (remembered: not retried until the application acts)")
            }
            Some(Cached::UntilTheRunningRefreshEnds) => {
                f.write_str(" (remembered: a refresh past its timeout is still running)")
            }
        }
    }
}

impl StdError for RefreshError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|error| error as &(dyn StdError + 'static))
    }
}

/// The [`RefreshError`] in an error's cause chain, if a failed refresh is what it is: for the
/// `BoxError` of an [`AuthService`](crate::AuthService), also behind tower's `Buffer` and other
/// wrappers that keep the cause as a source.
///
/// ```
/// # use std::io;
/// # use tower::{service_fn, ServiceExt, Layer};
/// # use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
/// use tower_auth_refresh::{refresh_error, RefreshErrorKind};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let refresher = service_fn(|_: RefreshRequest| async {
///     Err::<TokenSet, _>(io::Error::other("the token endpoint is down"))
/// });
/// # let api = service_fn(|_: http::Request<String>| async { Ok::<_, io::Error>(http::Response::new(String::new())) });
/// let client = tower::buffer::Buffer::new(AuthLayer::new(refresher).layer(api), 8);
///
/// let error = client.oneshot(http::Request::new(String::new())).await.unwrap_err();
/// let refresh = refresh_error(&*error).expect("a failed refresh");
/// assert_eq!(refresh.kind(), RefreshErrorKind::Refresher);
/// assert!(refresh.to_string().contains("the token endpoint is down"));
/// # }
/// ```
pub fn refresh_error<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a RefreshError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(refresh) = error.downcast_ref::<RefreshError>() {
            return Some(refresh);
        }
        cause = error.source();
    }
    None
}

/// A refresher error that retrying cannot cure, e.g. revoked credentials.
///
/// Return it (or any error whose boxed form is one) from a refresher of your own: the cache
/// then stops calling the refresher until the application sets tokens, replaces the refresher,
/// clears the session or forces a refresh through the [`AuthHandle`](crate::AuthHandle).
/// Meanwhile a token that is still valid keeps being sent (it may well still work); a request
/// that needs a new one fails at once with this error. Other errors are taken as transient and
/// retried after a backoff. The [`OAuth2Refresher`](crate::oauth2::OAuth2Refresher)'s refusals
/// (rejected credentials, a refused refresh token with no login) are terminal too.
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
