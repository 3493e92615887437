//! Reading token-endpoint answers: with a size cap, never panicking, and never throwing away a
//! refresh token the server sent.

use std::time::{Duration, SystemTime};

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use zeroize::Zeroize as _;

use super::error::{Error, ErrorKind};
use crate::token::{RefreshToken, TokenSet, TokenType};

/// `expires_in` beyond this (ten years) is taken for a server bug, not a lifetime.
const LONGEST_EXPIRES_IN: f64 = 10.0 * 365.0 * 24.0 * 3600.0;
/// A server's `error` and `error_description` are cut to this many characters.
const LONGEST_DESCRIPTION: usize = 512;
/// A `Retry-After` longer than this (a day) is capped.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Which request a response answers: a grant at the token endpoint (an `invalid_grant` means
/// different things for each), or a request to another endpoint of the identity provider.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Grant {
    Password,
    RefreshToken,
    ClientCredentials,
    /// A revocation request (RFC 7009).
    Revocation,
    /// A `POST` to Keycloak's logout endpoint.
    Logout,
    /// The discovery document.
    Discovery,
}

impl Grant {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::Revocation => "revocation",
            Self::Logout => "logout",
            Self::Discovery => "discovery",
        }
    }

    /// Whether this is a `grant_type` at the token endpoint.
    pub(super) fn is_grant(self) -> bool {
        matches!(
            self,
            Self::Password | Self::RefreshToken | Self::ClientCredentials
        )
    }

    /// What a refusal of this request is called.
    fn refused(self) -> &'static str {
        match self {
            Self::Revocation => "the revocation endpoint refused the request",
            Self::Logout => "the logout endpoint refused the request",
            Self::Discovery => "the discovery document was refused",
            _ => REFUSED,
        }
    }

    /// What an answer that is no verdict is called, when this is not a grant.
    fn unavailable(self) -> Option<&'static str> {
        match self {
            Self::Revocation => {
                Some("the revocation endpoint is unavailable or gave no OAuth2 answer")
            }
            Self::Logout => Some("the logout endpoint is unavailable or gave no OAuth2 answer"),
            Self::Discovery => Some("the discovery document is unavailable"),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Grant {
    // As the `grant_type` it is sent as: `RefreshToken` in a `Debug` line reads like a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Turns a token-endpoint answer into a token set or a classified error. `secrets` are what
/// the request sent (password, client secret, refresh token): a server that echoes one in its
/// `error_description` does not get it into a log.
pub(super) fn interpret(
    grant: Grant,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    secrets: &[&str],
) -> Result<TokenSet, Error> {
    let outcome = if status.is_success() {
        match body {
            Some(body) => parse_token_response(body),
            None => Err(invalid("the token response is too large")),
        }
    } else {
        Err(classify(
            grant,
            status,
            headers,
            body.unwrap_or_default(),
            secrets,
        ))
    };
    outcome.map_err(|error| error.with_grant(grant).with_status(status))
}

/// A number of seconds, as a JSON number or (some servers) a numeric string; `None` for
/// anything else, and for infinities.
fn seconds(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
    .filter(|n: &f64| n.is_finite())
}

/// The fields read, as whatever JSON the server sent: each is checked on its own, so that one
/// bad field does not hide the refresh token in another.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<Value>,
    token_type: Option<Value>,
    expires_in: Option<Value>,
    refresh_token: Option<Value>,
    refresh_expires_in: Option<Value>,
}

impl Drop for TokenResponse {
    // The tokens' text, as serde_json read it, is wiped like the token sets it goes into.
    fn drop(&mut self) {
        for field in [&mut self.access_token, &mut self.refresh_token] {
            if let Some(Value::String(text)) = field {
                text.zeroize();
            }
        }
    }
}

fn invalid(message: &'static str) -> Error {
    Error::new(ErrorKind::InvalidResponse, message)
}

/// Parses a successful token response body (RFC 6749 §5.1): the checks the refresher makes on
/// every answer, for clients that talk to the token endpoint themselves.
///
/// Refused ([`ErrorKind::InvalidResponse`]) only when there is no usable access token: not a
/// JSON object, no `access_token` or one a header cannot carry, a `token_type` other than
/// Bearer or DPoP (any case), a `refresh_token` that is not visible ASCII. A `DPoP` token
/// (RFC 9449 §5) is [`TokenType::DPoP`](crate::TokenType::DPoP) in the token set; without a
/// `token_type` it is Bearer. A refused answer's valid
/// refresh token is kept in the error ([`Error::refresh_token`]): the server may have rotated
/// the old one out. An implausible `expires_in` or `refresh_expires_in` (zero or negative, over
/// ten years, not a number) is ignored with a warning, for the JWT `exp` claim or the default
/// lifetime.
///
/// ```
/// use tower_auth_refresh::oauth2::{parse_token_response, ErrorKind};
///
/// let tokens = parse_token_response(br#"{"access_token":"abc","token_type":"bearer","expires_in":900}"#)?;
/// assert_eq!(tokens.access_token().secret(), "abc");
/// let bound = parse_token_response(br#"{"access_token":"abc","token_type":"DPoP"}"#)?;
/// assert_eq!(bound.token_type(), tower_auth_refresh::TokenType::DPoP);
/// let error = parse_token_response(br#"{"access_token":"abc","token_type":"mac","refresh_token":"r2"}"#).unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::InvalidResponse);
/// assert_eq!(error.refresh_token().map(|token| token.secret()), Some("r2"));
/// # Ok::<(), tower_auth_refresh::oauth2::Error>(())
/// ```
pub fn parse_token_response(body: &[u8]) -> Result<TokenSet, Error> {
    // A JSON object (RFC 6749 §5.1); serde would also read an array into the struct.
    if !is_json_object(body) {
        return Err(invalid("the token response is not a JSON object"));
    }
    let response: TokenResponse = serde_json::from_slice(body).map_err(|error| {
        invalid("the token response is not the expected JSON").with_source(error)
    })?;
    // First the refresh token: once the server has answered, it may be the only live one.
    let refresh_token = match &response.refresh_token {
        None => None,
        Some(Value::String(token)) if token.is_empty() => None,
        Some(Value::String(token)) if is_token_text(token) => {
            Some(RefreshToken::new(token.as_str()))
        }
        Some(_) => {
            return Err(invalid(
                "the refresh_token is not a string of visible ASCII",
            ));
        }
    };
    let (access_token, token_type) =
        access_token(&response).map_err(|error| error.with_refresh_token(refresh_token.clone()))?;
    let mut tokens = TokenSet::new(access_token).with_token_type(token_type);
    if let Some(expires_in) = &response.expires_in {
        match seconds(expires_in).filter(|s| *s > 0.0 && *s <= LONGEST_EXPIRES_IN) {
            Some(seconds) => tokens = tokens.with_expires_in(Duration::from_secs_f64(seconds)),
            None => tracing::warn!(
                "the token endpoint's expires_in is not a plausible lifetime; \
                 using the access token's exp claim or the default lifetime"
            ),
        }
    }
    if let Some(refresh_token) = refresh_token {
        tokens = tokens.with_refresh_token(refresh_token);
    }
    if let Some(refresh_expires_in) = &response.refresh_expires_in {
        match seconds(refresh_expires_in).filter(|s| *s >= 0.0) {
            // Keycloak says 0 for refresh tokens that do not expire (offline tokens).
            Some(seconds) if seconds > 0.0 && seconds <= LONGEST_EXPIRES_IN => {
                tokens = tokens.with_refresh_expires_in(Duration::from_secs_f64(seconds));
            }
            Some(_) => {}
            None => tracing::warn!(
                "the token endpoint's refresh_expires_in is negative or not a number; ignored"
            ),
        }
    }
    Ok(tokens)
}

/// The access token and its type, if the answer has a usable one.
fn access_token(response: &TokenResponse) -> Result<(String, TokenType), Error> {
    let access_token = match &response.access_token {
        Some(Value::String(token)) if !token.is_empty() => token,
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(invalid("the token response has no access_token"));
        }
        Some(_) => return Err(invalid("the access_token is not a string")),
    };
    if !is_token_text(access_token) {
        return Err(invalid(
            "the access_token has characters that cannot be sent in a header",
        ));
    }
    // RFC 6749 §7.1: the type is compared case-insensitively.
    let token_type = match response.token_type.as_ref().map(Value::as_str) {
        None => TokenType::Bearer,
        Some(Some(name)) if name.eq_ignore_ascii_case("bearer") => TokenType::Bearer,
        Some(Some(name)) if name.eq_ignore_ascii_case("dpop") => TokenType::DPoP,
        Some(_) => return Err(invalid("the token_type is not Bearer or DPoP")),
    };
    Ok((access_token.clone(), token_type))
}

/// Visible ASCII without spaces: what a bearer token can be (RFC 6750's b64token is narrower,
/// but real servers differ).
fn is_token_text(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_graphic())
}

/// An RFC 6749 §5.2 error body.
#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

/// The RFC 6749 §5.2 `error` code of an answer's body, if it has one.
pub(super) fn error_code(body: &[u8]) -> Option<String> {
    is_json_object(body)
        .then(|| serde_json::from_slice::<OAuthError>(body).ok())
        .flatten()
        .map(|oauth| oauth.error)
}

fn is_json_object(body: &[u8]) -> bool {
    body.trim_ascii_start().first() == Some(&b'{')
}

fn is_html(headers: &HeaderMap, body: &[u8]) -> bool {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    content_type.to_ascii_lowercase().contains("html")
        || body.trim_ascii_start().first() == Some(&b'<')
}

/// Classifies an answer that is not a success. Only a parseable RFC 6749 §5.2 error with a
/// code that refuses the credentials, the grant, the scope or the request is terminal; what
/// else stands between client and server (an ingress, a WAF, a proxy) is never taken for a
/// verdict on the session.
pub(super) fn classify(
    grant: Grant,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    secrets: &[&str],
) -> Error {
    let oauth = is_json_object(body)
        .then(|| serde_json::from_slice::<OAuthError>(body).ok())
        .flatten();
    let code = oauth.as_ref().map(|oauth| oauth.error.as_str());
    let unavailable = status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT;
    let (kind, message) = match (code, grant) {
        _ if unavailable => (ErrorKind::Transient, "the token endpoint is unavailable"),
        (Some("temporarily_unavailable" | "server_error"), _) => {
            (ErrorKind::Transient, "the token endpoint is unavailable")
        }
        (Some("invalid_grant"), Grant::Password | Grant::ClientCredentials) => {
            (ErrorKind::CredentialsRejected, REFUSED)
        }
        // A refresh, or a logout with the refresh token (Keycloak verifies it first).
        (Some("invalid_grant"), _) => (ErrorKind::RefreshTokenRejected, REFUSED),
        (Some("invalid_client"), _) => (ErrorKind::ClientRejected, REFUSED),
        // Keycloak says a failed client authentication this way, with a 401; RFC 6749 means
        // by it a grant type the client may not use.
        (Some("unauthorized_client"), _) if status == StatusCode::UNAUTHORIZED => {
            (ErrorKind::ClientRejected, REFUSED)
        }
        (Some("unauthorized_client" | "unsupported_grant_type"), _) => {
            (ErrorKind::GrantNotAllowed, REFUSED)
        }
        (Some("invalid_scope"), _) => (ErrorKind::ScopeRejected, REFUSED),
        // RFC 9449 §8: the server wants its nonce in the proof. The refresher answers one
        // challenge with a new proof; this is the next one, worth another try only later.
        (Some("use_dpop_nonce"), _) => (
            ErrorKind::Transient,
            "the token endpoint asked for a DPoP nonce again, or without giving one",
        ),
        // RFC 9449 §5: the proof itself was refused.
        (Some("invalid_dpop_proof"), _) => (ErrorKind::Dpop, REFUSED),
        // RFC 7009 §2.2.1: the server cannot revoke this kind of token.
        (Some("invalid_request" | "unsupported_token_type"), _) => (ErrorKind::Rejected, REFUSED),
        (Some(_), _) => (
            ErrorKind::Transient,
            "the token endpoint answered with an error code RFC 6749 does not define for it",
        ),
        (None, _) if body.trim_ascii().is_empty() => (
            ErrorKind::Transient,
            "the token endpoint answered with an empty body, not an OAuth2 error",
        ),
        (None, _) if is_html(headers, body) => (
            ErrorKind::Transient,
            "the token endpoint answered with an HTML page, not an OAuth2 error",
        ),
        (None, _) => (
            ErrorKind::Transient,
            "the token endpoint answered without an OAuth2 error",
        ),
    };
    let message = match (kind, grant.unavailable()) {
        (ErrorKind::Transient, Some(unavailable)) => unavailable,
        (ErrorKind::Transient, None) => message,
        _ => grant.refused(),
    };
    let mut error = Error::new(kind, message).with_retry_after(retry_after(headers));
    if let Some(oauth) = oauth {
        let description = oauth
            .error_description
            .map(|text| server_text(&text, secrets));
        error = error.with_oauth(server_text(&oauth.error, secrets), description);
    }
    error
}

const REFUSED: &str = "the token endpoint refused the grant";

/// A server's text as the error keeps it: the secrets the request sent replaced (before the
/// cut, so that no prefix of one survives it), at most [`LONGEST_DESCRIPTION`] characters.
fn server_text(text: &str, secrets: &[&str]) -> String {
    let mut text = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        if text.contains(secret) {
            text = text.replace(secret, "<redacted>");
        }
    }
    text.chars().take(LONGEST_DESCRIPTION).collect()
}

/// `Retry-After` as seconds or as an HTTP date.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(LONGEST_RETRY_AFTER))
}

#[cfg(test)]
mod tests;
