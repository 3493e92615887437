use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::StatusCode;

use super::response::Grant;
use crate::refresh::BoxError;
use crate::token::RefreshToken;

/// What went wrong talking to the token endpoint.
///
/// Only a parseable RFC 6749 §5.2 error answer (`{"error":"…"}`) with one of the codes below is
/// a refusal, and a refusal is terminal: trying again unchanged gets the same answer.
/// Everything else — 5xx, 429, connection errors, and any answer that is not an OAuth2 error,
/// such as an ingress's HTML page — is [`Transient`](ErrorKind::Transient): retry later
/// ([`Error::is_transient`], after [`Error::retry_after`] if the server said).
///
/// The examples are real servers' answers: Keycloak (MangaDex), node oidc-provider, and
/// django-oauth-toolkit (oauthlib).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A login (password or client credentials grant) refused with `invalid_grant`: wrong
    /// username or password, or the account cannot log in. New credentials are needed.
    ///
    /// Keycloak `401 {"error":"invalid_grant","error_description":"Invalid user credentials"}`,
    /// `400 … "Account disabled"`, `400 … "Account is not fully set up"`;
    /// django-oauth-toolkit `400 {"error": "invalid_grant", "error_description": "Invalid
    /// credentials given."}`.
    CredentialsRejected,
    /// A refresh refused with `invalid_grant`: the refresh token expired, was revoked or
    /// reused, or its session ended. The [`OAuth2Refresher`](super::OAuth2Refresher) logs in
    /// again when it can; this is its error when no login is configured.
    ///
    /// Keycloak `400 {"error":"invalid_grant","error_description":"Token is not active"}`,
    /// `"Session not active"`, `"Invalid refresh token"`, `"Maximum allowed refresh token
    /// reuse exceeded"`, `"Stale token"`; node oidc-provider `400
    /// {"error":"invalid_grant","error_description":"grant request is invalid"}`;
    /// django-oauth-toolkit `400 {"error": "invalid_grant"}`.
    RefreshTokenRejected,
    /// The client was refused: `invalid_client`, or `unauthorized_client` with status 401 (a
    /// failed client authentication, as Keycloak says it). A wrong client id or secret.
    ///
    /// Keycloak `401 {"error":"unauthorized_client","error_description":"Invalid client or
    /// Invalid client credentials"}`, older releases `401 {"error":"invalid_client",
    /// "error_description":"Invalid client credentials"}`; node oidc-provider `401
    /// {"error":"invalid_client","error_description":"client authentication failed"}`;
    /// django-oauth-toolkit `401 {"error": "invalid_client"}`.
    ClientRejected,
    /// The client may not use this grant: `unauthorized_client` (other than with status 401)
    /// or `unsupported_grant_type`. The client's configuration at the server must change.
    ///
    /// Keycloak `400 {"error":"unauthorized_client","error_description":"Client not allowed
    /// for direct access grants"}`, `400 {"error":"unsupported_grant_type",
    /// "error_description":"Unsupported grant_type"}`; node oidc-provider `400
    /// {"error":"unauthorized_client","error_description":"requested grant type is not allowed
    /// for this client"}`.
    GrantNotAllowed,
    /// The `scope` asked for was refused: `invalid_scope`. To a refresh, the
    /// [`OAuth2Refresher`](super::OAuth2Refresher) answers with a new login when it can.
    ///
    /// Keycloak `400 {"error":"invalid_scope","error_description":"Invalid scopes: openid
    /// admin"}`; node oidc-provider, to a refresh asking for more than the login was granted,
    /// `400 {"error":"invalid_scope","error_description":"refresh token missing requested
    /// scope","scope":"profile"}`.
    ScopeRejected,
    /// The request was refused as malformed: `invalid_request`; or, by a revocation endpoint,
    /// `unsupported_token_type` (RFC 7009 §2.2.1). A bug or a configuration the server does
    /// not accept.
    ///
    /// Keycloak `400 {"error":"invalid_request","error_description":"Missing parameter:
    /// username"}`; at its revocation endpoint `400 {"error":"unsupported_token_type",
    /// "error_description":"Unsupported token type"}`.
    Rejected,
    /// No refresh token to refresh with and no login credentials configured.
    NoCredentials,
    /// A failure that may pass, worth retrying later unchanged: a 5xx, 429 or 408 answer, an
    /// OAuth2 `temporarily_unavailable` or `server_error`, an answer that is not an OAuth2
    /// error (an HTML page, an empty body, other JSON, an error code RFC 6749 §5.2 does not
    /// define) at any status, a connection error, a body cut short.
    ///
    /// An ingress's `404` HTML page during a deploy, a WAF's `403` page, a proxy's `401` page,
    /// an empty `400`; nginx `503 <html>…503 Service Temporarily Unavailable…`; node
    /// oidc-provider `500 {"error":"server_error","error_description":"oops! something went
    /// wrong"}`.
    Transient,
    /// A success answer that cannot be used: not a JSON object, too large, no usable
    /// `access_token` (missing, empty, not a string, or with characters a header cannot carry),
    /// a `token_type` other than Bearer or DPoP (compared case-insensitively), a
    /// `refresh_token` that is not visible ASCII. Retried like a transient failure; a valid refresh token in the
    /// answer is kept in the error ([`Error::refresh_token`]), because the server may have
    /// rotated the old one out.
    ///
    /// An implausible `expires_in` (zero, negative, over ten years, not a number) is no reason
    /// to refuse an answer: it is ignored, with a warning, for the JWT `exp` claim or the
    /// default lifetime.
    InvalidResponse,
    /// DPoP (RFC 9449) cannot work as configured, and trying again unchanged will not help:
    ///
    /// - the token endpoint issued a DPoP-bound token (`token_type: DPoP`) to a refresher
    ///   without a DPoP key (feature `dpop`, `OAuth2RefresherBuilder::dpop`): it cannot be used
    ///   without proofs;
    /// - it issued a Bearer token to a DPoP client (a server that ignored the proof) and
    ///   `OAuth2RefresherBuilder::bearer_fallback` does not allow that;
    /// - it refused the proof: `invalid_dpop_proof` (an algorithm it does not take, a clock
    ///   far from the server's, an `htu` that is not the URL it sees behind a proxy);
    /// - the key failed to sign a proof.
    ///
    /// A refresh token in such an answer is kept ([`Error::refresh_token`]). A nonce
    /// challenge (`use_dpop_nonce`) is not this kind: it is answered once, and a second one in
    /// a row is [`Transient`](ErrorKind::Transient).
    ///
    /// node oidc-provider `400 {"error":"invalid_dpop_proof","error_description":"DPoP proof
    /// htu mismatch"}`.
    Dpop,
    /// The refresher's configuration is unusable, e.g. a token URL that would send
    /// credentials over plain HTTP to a host other than this machine, a client authentication
    /// method without its credential, a key that cannot be read, a revocation without a
    /// revocation endpoint; or discovery found no document, or one for another issuer.
    Config,
}

/// An error of the [`OAuth2Refresher`](super::OAuth2Refresher).
///
/// Carries the grant it answers, the HTTP status, the server's RFC 6749 `error` and
/// `error_description` as it sent them (each cut to 512 characters, any secret the refresher
/// sent replaced by `<redacted>`; `Display` escapes control characters), `Retry-After`, and a
/// refresh token the answer issued. `Debug` and `Display` show no secret.
pub struct Error {
    // Boxed: an `Err` stays one pointer wide on the paths that succeed.
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: &'static str,
    grant: Option<Grant>,
    status: Option<StatusCode>,
    code: Option<String>,
    description: Option<String>,
    retry_after: Option<Duration>,
    refresh_token: Option<RefreshToken>,
    source: Option<BoxError>,
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `RefreshToken`'s own `Debug` shows only its length.
        let Inner {
            kind,
            message,
            grant,
            status,
            code,
            description,
            retry_after,
            refresh_token,
            source,
        } = &*self.inner;
        f.debug_struct("Error")
            .field("kind", kind)
            .field("message", message)
            .field("grant", grant)
            .field("status", status)
            .field("code", code)
            .field("description", description)
            .field("retry_after", retry_after)
            .field("refresh_token", refresh_token)
            .field("source", source)
            .finish()
    }
}

impl Error {
    pub(super) fn new(kind: ErrorKind, message: &'static str) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                message,
                grant: None,
                status: None,
                code: None,
                description: None,
                retry_after: None,
                refresh_token: None,
                source: None,
            }),
        }
    }

    pub(super) fn with_grant(mut self, grant: Grant) -> Self {
        self.inner.grant = Some(grant);
        self
    }

    pub(super) fn with_status(mut self, status: StatusCode) -> Self {
        self.inner.status = Some(status);
        self
    }

    /// The server's `error` and `error_description`, already cut and redacted.
    pub(super) fn with_oauth(mut self, code: String, description: Option<String>) -> Self {
        self.inner.code = Some(code);
        self.inner.description = description;
        self
    }

    pub(super) fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.inner.retry_after = retry_after;
        self
    }

    pub(super) fn with_refresh_token(mut self, refresh_token: Option<RefreshToken>) -> Self {
        self.inner.refresh_token = refresh_token;
        self
    }

    pub(super) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether trying again later, unchanged, may succeed: [`ErrorKind::Transient`] and
    /// [`ErrorKind::InvalidResponse`]. The refusals, [`ErrorKind::Config`] and
    /// [`ErrorKind::NoCredentials`] are not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.inner.kind,
            ErrorKind::Transient | ErrorKind::InvalidResponse
        )
    }

    /// The `grant_type` of the request that failed: `password`, `refresh_token` or
    /// `client_credentials`; `None` for a failed revocation, logout or discovery.
    pub fn grant_type(&self) -> Option<&'static str> {
        self.inner
            .grant
            .filter(|grant| grant.is_grant())
            .map(Grant::as_str)
    }

    /// The HTTP status the token endpoint answered with, if it answered.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The RFC 6749 `error` code the server gave, e.g. `invalid_grant`.
    pub fn error_code(&self) -> Option<&str> {
        self.inner.code.as_deref()
    }

    /// The server's `error_description`, e.g. "Invalid user credentials".
    pub fn error_description(&self) -> Option<&str> {
        self.inner.description.as_deref()
    }

    /// How long the server asked clients to wait (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// A refresh token the server issued in an answer that was otherwise refused
    /// ([`ErrorKind::InvalidResponse`]). The server may have rotated the old refresh token out
    /// when it issued this one, so the next refresh must use this one: the token cache puts it
    /// into the current token set (and a token store saves it).
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.inner.refresh_token.as_ref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.inner.message)?;
        match (self.inner.grant, self.inner.status) {
            (Some(grant), Some(status)) if grant.is_grant() => {
                write!(f, " ({} grant, HTTP {})", grant.as_str(), status.as_u16())?;
            }
            (Some(grant), None) if grant.is_grant() => write!(f, " ({} grant)", grant.as_str())?,
            (_, Some(status)) => write!(f, " (HTTP {})", status.as_u16())?,
            (_, None) => {}
        }
        if let Some(code) = &self.inner.code {
            write!(f, ": {}", code.escape_debug())?;
            if let Some(description) = &self.inner.description {
                write!(f, " \"{}\"", description.escape_debug())?;
            }
        }
        if let Some(retry_after) = self.inner.retry_after {
            write!(f, "; retry after {} s", retry_after.as_secs())?;
        }
        if self.inner.refresh_token.is_some() {
            f.write_str("; the answer carried a new refresh token")?;
        }
        Ok(())
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_send_sync_static() {
        fn assert<T: Send + Sync + 'static>() {}
        assert::<Error>();
    }

    #[test]
    fn shows_no_refresh_token() {
        let error = Error::new(ErrorKind::InvalidResponse, "refused")
            .with_refresh_token(Some(RefreshToken::new("rotated-refresh-token")));
        let shown = format!("{error} {error:?} {error:#?}");
        assert!(!shown.contains("rotated-refresh-token"), "{shown}");
        assert_eq!(
            error.refresh_token().map(RefreshToken::secret),
            Some("rotated-refresh-token")
        );
    }
}
