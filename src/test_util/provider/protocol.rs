//! The token endpoint's wire formats: form parameters, client credentials, and the JSON
//! answers (RFC 6749 §5.1 and §5.2) before they are sent.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::super::server::{self, BodyError, ResponseBody};

/// A token-endpoint answer not sent yet, so that a fault can still change it.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    /// A JSON object, or nothing.
    pub(super) body: Bytes,
    /// Extra headers (`Allow` on a `405`).
    pub(super) headers: HeaderMap,
    /// Whether it may be cached (a discovery document); token answers may not.
    pub(super) cache: bool,
}

impl Answer {
    pub(super) fn json<T: Serialize>(status: StatusCode, body: &T) -> Self {
        // Serializing plain structs cannot fail; an empty object is a harmless fallback.
        let body = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
        Self {
            status,
            body: Bytes::from(body),
            headers: HeaderMap::new(),
            cache: false,
        }
    }

    /// An answer without a body (`204`, or a revocation's `200`).
    pub(super) fn empty(status: StatusCode) -> Self {
        Self {
            status,
            body: Bytes::new(),
            headers: HeaderMap::new(),
            cache: false,
        }
    }

    /// The response, `Cache-Control: no-store` as Keycloak sends every token-endpoint answer.
    pub(super) fn into_response(self) -> Response<ResponseBody> {
        let mut response = if self.body.is_empty() {
            let mut response = Response::new(ResponseBody::full(Bytes::new()));
            *response.status_mut() = self.status;
            response
        } else {
            server::response(
                self.status,
                HeaderValue::from_static("application/json"),
                self.body,
            )
        };
        let headers = response.headers_mut();
        if !self.cache {
            no_store(headers);
        }
        headers.extend(self.headers);
        response
    }
}

/// A successful answer, field by field as Keycloak orders them.
#[derive(Serialize)]
pub(super) struct TokenResponse {
    pub(super) access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) refresh_expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) refresh_token: Option<String>,
    pub(super) token_type: &'static str,
    #[serde(rename = "not-before-policy")]
    pub(super) not_before_policy: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) session_state: Option<String>,
    pub(super) scope: String,
    pub(super) client_type: &'static str,
}

/// An RFC 6749 §5.2 error answer.
pub(super) struct OAuthError {
    pub(super) status: StatusCode,
    pub(super) error: &'static str,
    pub(super) description: String,
}

impl OAuthError {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    pub(super) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(super) fn invalid_grant(status: StatusCode, description: &str) -> Self {
        Self::new(status, "invalid_grant", description)
    }

    pub(super) fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub(super) fn into_answer(self) -> Answer {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            error_description: &'a str,
        }
        let mut answer = Answer::json(
            self.status,
            &Body {
                error: self.error,
                error_description: &self.description,
            },
        );
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            answer
                .headers
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        answer
    }
}

/// The form parameters, each present at most once.
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    pub(super) fn new(params: Vec<(String, String)>) -> Result<Self, OAuthError> {
        let mut seen = HashSet::new();
        for (name, _) in &params {
            if !seen.insert(name.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "Duplicate parameter: {name}"
                )));
            }
        }
        Ok(Self(params))
    }

    /// A parameter's value; an empty value counts as missing.
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("Missing parameter: {name}")))
    }
}

/// Reads a form `POST`, as every endpoint but discovery takes: its headers and parameters, or
/// the error to answer with (`405` for another method, `413` for a body over 64 KiB, `400` for
/// anything that is not a well-formed form).
pub(super) async fn read_form(request: Request<Incoming>) -> Result<(HeaderMap, Form), OAuthError> {
    let (parts, body) = request.into_parts();
    if parts.method != Method::POST {
        return Err(OAuthError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            "Use POST",
        ));
    }
    if !is_form(&parts.headers) {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    let body = match server::read_body(&parts.headers, body).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return Err(OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                "Request body too large",
            ));
        }
        Err(BodyError::Broken) => {
            return Err(OAuthError::invalid_request("Incomplete request body"));
        }
    };
    let params = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .map_err(|_| OAuthError::invalid_request("Malformed form body"))?;
    Ok((parts.headers, Form::new(params)?))
}

pub(super) fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

pub(super) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Client credentials from an `Authorization: Basic` header: `None` without one,
/// `Some(None)` for a malformed one. Per RFC 6749 §2.3.1 the id and the secret are
/// form-urlencoded before being joined with `:` and base64-encoded.
pub(super) fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(decoded.and_then(|decoded| {
        let (id, secret) = decoded.split_once(':')?;
        Some((form_decode(id)?, form_decode(secret)?))
    }))
}

/// Undoes `application/x-www-form-urlencoded` encoding of one value.
fn form_decode(encoded: &str) -> Option<String> {
    let pair = format!("v={}", encoded.replace('&', "%26"));
    let mut pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(&pair).ok()?;
    pairs.pop().map(|(_, value)| value)
}
