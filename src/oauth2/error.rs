use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

use crate::refresh::BoxError;

/// What went wrong talking to the token endpoint.
///
/// The kind tells what to do about it: [`CredentialsRejected`](ErrorKind::CredentialsRejected)
/// needs new credentials, [`Transient`](ErrorKind::Transient) can be retried later (after
/// [`Error::retry_after`] if the server said), the others need a fix in the configuration or
/// at the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token endpoint refused the login: wrong username or password (`invalid_grant` on the
    /// password grant), or a wrong client id or secret (`invalid_client`,
    /// `unauthorized_client`). Retrying with the same credentials cannot succeed.
    CredentialsRejected,
    /// The refresh token was refused (`invalid_grant`: expired, revoked, session ended) and no
    /// login credentials are configured to start a new session.
    RefreshTokenRejected,
    /// No refresh token to refresh with and no login credentials configured.
    NoCredentials,
    /// A failure that may pass: a 5xx or 429 answer, a connection error, a body cut short.
    Transient,
    /// The endpoint refused the request for another reason (`invalid_request`,
    /// `unsupported_grant_type`, `invalid_scope`, or another 4xx).
    Rejected,
    /// A success answer that cannot be used: not JSON, too large, no `access_token`, a token
    /// that is not a valid header value, an `expires_in` that is negative, zero or absurd, a
    /// `token_type` other than Bearer.
    InvalidResponse,
    /// The refresher's configuration is unusable, e.g. a token URL that would send
    /// credentials over plain HTTP to a host other than this machine.
    Config,
}

/// An error of the [`OAuth2Refresher`](super::OAuth2Refresher).
///
/// Carries the server's RFC 6749 `error` and `error_description` when it gave them, the HTTP
/// status, and `Retry-After`. Never carries a secret.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: &'static str,
    status: Option<StatusCode>,
    code: Option<String>,
    description: Option<String>,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl Error {
    pub(super) fn new(kind: ErrorKind, message: &'static str) -> Self {
        Self {
            kind,
            message,
            status: None,
            code: None,
            description: None,
            retry_after: None,
            source: None,
        }
    }

    pub(super) fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    pub(super) fn with_oauth(mut self, code: String, description: Option<String>) -> Self {
        self.code = Some(code);
        self.description = description;
        self
    }

    pub(super) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub(super) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether trying again later may succeed without changing anything.
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    /// The HTTP status the token endpoint answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.status
    }

    /// The RFC 6749 `error` code the server gave, e.g. `invalid_grant`.
    pub fn error_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The server's `error_description`, e.g. "Invalid user credentials".
    pub fn error_description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// How long the server asked clients to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message)?;
        if let Some(status) = self.status {
            write!(f, " (HTTP {})", status.as_u16())?;
        }
        if let Some(code) = &self.code {
            write!(f, ": {code}")?;
            if let Some(description) = &self.description {
                write!(f, " \"{}\"", description.escape_debug())?;
            }
        }
        if let Some(retry_after) = self.retry_after {
            write!(f, "; retry after {} s", retry_after.as_secs())?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}
