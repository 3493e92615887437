//! Reading token-endpoint answers: strictly, with a size cap, never panicking.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderMap, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use super::error::{Error, ErrorKind};
use crate::refresh::BoxError;
use crate::token::TokenSet;

/// `expires_in` beyond this (ten years) is taken for a server bug, not a lifetime.
const LONGEST_EXPIRES_IN: f64 = 10.0 * 365.0 * 24.0 * 3600.0;
/// A server's `error_description` is cut to this many characters.
const LONGEST_DESCRIPTION: usize = 512;
/// A `Retry-After` longer than this (a day) is capped.
const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Which grant a response answers: an `invalid_grant` means different things for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Grant {
    Password,
    RefreshToken,
    ClientCredentials,
}

impl Grant {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }
}

/// Reads a body up to `limit` bytes. `Ok(None)`: it was larger.
pub(super) async fn read_body<B>(body: B, limit: usize) -> Result<Option<Bytes>, Error>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(Some(collected.to_bytes())),
        Err(error) if error.is::<LengthLimitError>() => Ok(None),
        Err(error) => Err(Error::new(
            ErrorKind::Transient,
            "the token endpoint's answer was cut short",
        )
        .with_source(error)),
    }
}

/// Turns a token-endpoint answer into a token set or a classified error.
pub(super) fn interpret(
    grant: Grant,
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&[u8]>,
) -> Result<TokenSet, Error> {
    if status.is_success() {
        let body = body.ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidResponse,
                "the token response is too large",
            )
            .with_status(status)
        })?;
        return parse_token_response(body).map_err(|error| error.with_status(status));
    }
    Err(classify(grant, status, headers, body.unwrap_or_default()))
}

/// A number of seconds, as a JSON number or (some servers) a numeric string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Seconds {
    Number(f64),
    Text(String),
}

impl Seconds {
    fn value(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(text) => text.trim().parse().ok(),
        }
        .filter(|n: &f64| n.is_finite())
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<Seconds>,
    refresh_token: Option<String>,
    refresh_expires_in: Option<Seconds>,
}

fn invalid(message: &'static str) -> Error {
    Error::new(ErrorKind::InvalidResponse, message)
}

/// Parses a successful token response body (RFC 6749 §5.1), strictly: the checks the
/// refresher makes on every answer, for clients that talk to the token endpoint themselves.
///
/// ```
/// use tower_auth_refresh::oauth2::{parse_token_response, ErrorKind};
///
/// let tokens = parse_token_response(br#"{"access_token":"abc","token_type":"Bearer","expires_in":900}"#)?;
/// assert_eq!(tokens.access_token().secret(), "abc");
/// let error = parse_token_response(br#"{"access_token":"abc","token_type":"mac"}"#).unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::InvalidResponse);
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
    let access_token = response
        .access_token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| invalid("the token response has no access_token"))?;
    if !is_token_text(&access_token) {
        return Err(invalid(
            "the access_token has characters that cannot be sent in a header",
        ));
    }
    if let Some(token_type) = &response.token_type {
        if !token_type.eq_ignore_ascii_case("bearer") {
            return Err(invalid("the token_type is not Bearer"));
        }
    }
    let mut tokens = TokenSet::new(access_token);
    if let Some(expires_in) = &response.expires_in {
        let seconds = expires_in
            .value()
            .filter(|s| *s > 0.0 && *s <= LONGEST_EXPIRES_IN)
            .ok_or_else(|| invalid("the expires_in is not a positive, plausible lifetime"))?;
        tokens = tokens.with_expires_in(Duration::from_secs_f64(seconds));
    }
    if let Some(refresh_token) = response.refresh_token.filter(|token| !token.is_empty()) {
        if !is_token_text(&refresh_token) {
            return Err(invalid(
                "the refresh_token has characters outside visible ASCII",
            ));
        }
        tokens = tokens.with_refresh_token(refresh_token);
    }
    if let Some(refresh_expires_in) = &response.refresh_expires_in {
        let seconds = refresh_expires_in
            .value()
            .filter(|s| *s >= 0.0)
            .ok_or_else(|| invalid("the refresh_expires_in is negative or not a number"))?;
        // Keycloak says 0 for refresh tokens that do not expire (offline tokens).
        if seconds > 0.0 && seconds <= LONGEST_EXPIRES_IN {
            tokens = tokens.with_refresh_expires_in(Duration::from_secs_f64(seconds));
        }
    }
    Ok(tokens)
}

/// Visible ASCII without spaces: what a bearer token can be (RFC 6750's b64token is narrower,
/// but real servers differ).
fn is_token_text(token: &str) -> bool {
    token.bytes().all(|b| b.is_ascii_graphic())
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

fn is_json_object(body: &[u8]) -> bool {
    body.trim_ascii_start().first() == Some(&b'{')
}

fn classify(grant: Grant, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let oauth = is_json_object(body)
        .then(|| serde_json::from_slice::<OAuthError>(body).ok())
        .flatten();
    let code = oauth.as_ref().map(|oauth| oauth.error.as_str());
    let (kind, message) = if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || code == Some("temporarily_unavailable")
    {
        (ErrorKind::Transient, "the token endpoint is unavailable")
    } else {
        match (code, grant) {
            (Some("invalid_client" | "unauthorized_client"), _) => (
                ErrorKind::CredentialsRejected,
                "the token endpoint rejected the client credentials",
            ),
            (Some("invalid_grant"), Grant::RefreshToken) => (
                ErrorKind::RefreshTokenRejected,
                "the token endpoint rejected the refresh token",
            ),
            (Some("invalid_grant"), Grant::Password | Grant::ClientCredentials) => (
                ErrorKind::CredentialsRejected,
                "the token endpoint rejected the login credentials",
            ),
            _ => (
                ErrorKind::Rejected,
                "the token endpoint refused the request",
            ),
        }
    };
    let mut error = Error::new(kind, message)
        .with_status(status)
        .with_retry_after(retry_after(headers));
    if let Some(oauth) = oauth {
        let description = oauth
            .error_description
            .map(|text| text.chars().take(LONGEST_DESCRIPTION).collect());
        let code = oauth.error.chars().take(LONGEST_DESCRIPTION).collect();
        error = error.with_oauth(code, description);
    }
    error
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
mod tests {
    use super::*;
    use http::HeaderValue;

    fn error(grant: Grant, status: u16, body: &str) -> Error {
        interpret(
            grant,
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            Some(body.as_bytes()),
        )
        .unwrap_err()
    }

    #[tokio::test]
    async fn parses_a_keycloak_answer() {
        let body = br#"{"access_token":"eyJ.a.b","expires_in":900,"refresh_expires_in":2414162,
            "refresh_token":"eyJ.r.s","token_type":"Bearer","not-before-policy":0,
            "session_state":"x","scope":"groups email profile","client_type":"personal"}"#;
        let tokens = parse_token_response(body).unwrap();
        assert_eq!(tokens.access_token().secret(), "eyJ.a.b");
        assert_eq!(tokens.refresh_token().unwrap().secret(), "eyJ.r.s");
        let left = tokens.expires_at().unwrap() - tokio::time::Instant::now();
        assert!(left > Duration::from_secs(899) && left <= Duration::from_secs(900));
        assert!(tokens.refresh_expires_at().is_some());
    }

    #[tokio::test]
    async fn lenient_where_servers_differ() {
        let tokens = parse_token_response(
            br#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#,
        )
        .unwrap();
        assert!(tokens.expires_at().is_some());
        let no_type = parse_token_response(br#"{"access_token":"t"}"#).unwrap();
        assert_eq!(no_type.expires_at(), None);
        let offline = parse_token_response(
            br#"{"access_token":"t","refresh_token":"r","refresh_expires_in":0}"#,
        )
        .unwrap();
        assert_eq!(offline.refresh_expires_at(), None);
    }

    #[test]
    fn rejects_unusable_answers() {
        for body in [
            "",
            "not json",
            r#"{"access_token":"t""#,
            r#"{"token_type":"Bearer"}"#,
            r#"{"access_token":""}"#,
            r#"{"access_token":"a\nb"}"#,
            r#"{"access_token":"a b"}"#,
            r#"{"access_token":"tøken"}"#,
            r#"{"access_token":"t","token_type":"mac"}"#,
            r#"{"access_token":"t","expires_in":-1}"#,
            r#"{"access_token":"t","expires_in":0}"#,
            r#"{"access_token":"t","expires_in":1000000000000}"#,
            r#"{"access_token":"t","expires_in":"soon"}"#,
            r#"{"access_token":"t","refresh_expires_in":-5}"#,
            r#"{"access_token":42}"#,
            r#"["t","Bearer",900,"r",0]"#,
        ] {
            let error = parse_token_response(body.as_bytes()).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{body}");
        }
        let too_large = interpret(Grant::Password, StatusCode::OK, &HeaderMap::new(), None);
        assert_eq!(too_large.unwrap_err().kind(), ErrorKind::InvalidResponse);
    }

    #[test]
    fn classifies_keycloak_errors() {
        let wrong_password = error(
            Grant::Password,
            401,
            r#"{"error":"invalid_grant","error_description":"Invalid user credentials"}"#,
        );
        assert_eq!(wrong_password.kind(), ErrorKind::CredentialsRejected);
        assert_eq!(wrong_password.error_code(), Some("invalid_grant"));
        assert_eq!(
            wrong_password.error_description(),
            Some("Invalid user credentials")
        );
        assert_eq!(
            wrong_password.to_string(),
            "the token endpoint rejected the login credentials (HTTP 401): invalid_grant \"Invalid user credentials\""
        );

        let bad_client = error(
            Grant::RefreshToken,
            401,
            r#"{"error":"unauthorized_client"}"#,
        );
        assert_eq!(bad_client.kind(), ErrorKind::CredentialsRejected);
        let legacy = error(Grant::Password, 401, r#"{"error":"invalid_client"}"#);
        assert_eq!(legacy.kind(), ErrorKind::CredentialsRejected);

        let expired = error(
            Grant::RefreshToken,
            400,
            r#"{"error":"invalid_grant","error_description":"Token is not active"}"#,
        );
        assert_eq!(expired.kind(), ErrorKind::RefreshTokenRejected);

        let unsupported = error(
            Grant::Password,
            400,
            r#"{"error":"unsupported_grant_type"}"#,
        );
        assert_eq!(unsupported.kind(), ErrorKind::Rejected);

        for (status, body) in [
            (503, "<html>down</html>"),
            (500, r#"{"error":"server_error"}"#),
            (502, ""),
        ] {
            let error = error(Grant::RefreshToken, status, body);
            assert_eq!(error.kind(), ErrorKind::Transient, "{status}");
            assert!(error.is_transient());
        }
    }

    #[test]
    fn reads_retry_after() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let error = interpret(
            Grant::RefreshToken,
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            Some(b""),
        )
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Transient);
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&in_a_minute).unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(wait > Duration::from_secs(58) && wait <= Duration::from_secs(60));

        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }
}
