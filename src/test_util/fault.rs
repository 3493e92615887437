//! Misbehaviours of the token endpoint.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

/// How the token endpoint misbehaves on a request.
///
/// Give one to [`IdentityProvider::push_fault`](super::IdentityProvider::push_fault)
/// for the next request only, or to
/// [`IdentityProvider::set_fault`](super::IdentityProvider::set_fault) for every request
/// until it is cleared. Every fault counts in
/// [`ProviderStats::faults_served`](super::ProviderStats::faults_served).
///
/// Most faults are harmless to the session: they replace the whole handling, so the
/// request's credentials and tokens are not looked at, nothing is issued or rotated, and
/// [`ProviderConfig::response_delay`] does not apply. [`Fault::Delay`] delays the normal
/// handling. [`Fault::AfterGrant`] is the harmful kind: the grant is processed (a login made,
/// a refresh token rotated out, counted in the stats as usual) and then its answer is
/// delayed, lost or garbled, as when a proxy times out after the identity provider did its
/// work.
///
/// [`ProviderConfig::response_delay`]: super::ProviderConfig::response_delay
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this response.
    Status {
        /// The status code.
        status: StatusCode,
        /// The `Content-Type` header. An empty or invalid header value is left out.
        content_type: &'static str,
        /// The body, sent as is.
        body: Bytes,
        /// A `Retry-After` header (seconds or an HTTP date), if any. An invalid header
        /// value is left out.
        retry_after: Option<String>,
    },
    /// Sleep this long (on Tokio's clock), then handle the request normally.
    Delay(Duration),
    /// Never answer: the connection stays open until the provider shuts down.
    Hang,
    /// Close the connection without sending anything.
    CloseConnection,
    /// Send `200 OK` headers with a `Content-Length` larger than the body, the start of
    /// a token response, and then close the connection.
    ResetMidBody,
    /// Process the grant as usual, then misbehave instead of sending its answer as it is.
    AfterGrant(AfterGrant),
}

/// What the token endpoint does with the answer to a grant it processed: see
/// [`Fault::AfterGrant`].
///
/// The grant's effects stand whatever happens to its answer: a refresh token that was
/// rotated out stays spent (with reuse detection on, presenting it again ends the session),
/// and the grant counts in [`ProviderStats`](super::ProviderStats). A request the endpoint
/// refused (a wrong password, an unknown refresh token) gets the same treatment.
///
/// ```
/// use serde_json::json;
/// use tower_auth_refresh::test_util::{AfterGrant, Fault};
///
/// // Rotate the refresh token, then answer 200 with an access token the client must refuse;
/// // the answer still carries the new refresh token.
/// let fault = Fault::AfterGrant(AfterGrant::Set("token_type", json!("mac")));
/// # let _ = fault;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterGrant {
    /// Send the answer this much later (on Tokio's clock), after
    /// [`ProviderConfig::response_delay`](super::ProviderConfig::response_delay) if any.
    Delay(Duration),
    /// Close the connection without answering.
    Close,
    /// Never answer: the connection stays open until the provider shuts down.
    Hang,
    /// Answer with this field of the JSON answer replaced, or added if it was not there;
    /// the status stays.
    Set(&'static str, Value),
    /// Answer without this field of the JSON answer; the status stays.
    Remove(&'static str),
}

impl Fault {
    /// `503 Service Unavailable` with an HTML page, as a reverse proxy in front of an
    /// identity provider that is down answers.
    pub fn service_unavailable_html() -> Fault {
        Fault::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            content_type: "text/html; charset=utf-8",
            body: Bytes::from_static(
                b"<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n\
                  <body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n\
                  <hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
            ),
            retry_after: None,
        }
    }

    /// `429 Too Many Requests` with `Retry-After: <retry_after_secs>` and the JSON body
    /// `{"error":"too_many_requests","error_description":"Too many requests"}`.
    pub fn too_many_requests(retry_after_secs: u64) -> Fault {
        Fault::Status {
            status: StatusCode::TOO_MANY_REQUESTS,
            content_type: "application/json",
            body: Bytes::from_static(
                br#"{"error":"too_many_requests","error_description":"Too many requests"}"#,
            ),
            retry_after: Some(retry_after_secs.to_string()),
        }
    }

    /// A response with this status and this HTML page, as an ingress answers during a deploy
    /// (`404`), a web application firewall in front of the endpoint (`403`) or an
    /// authenticating proxy (`401`).
    pub fn html(status: StatusCode, body: &str) -> Fault {
        Fault::Status {
            status,
            content_type: "text/html; charset=utf-8",
            body: Bytes::copy_from_slice(body.as_bytes()),
            retry_after: None,
        }
    }

    /// A response with this status, an empty body and no `Content-Type`.
    pub fn empty(status: StatusCode) -> Fault {
        Fault::Status {
            status,
            content_type: "",
            body: Bytes::new(),
            retry_after: None,
        }
    }

    /// A response with this status and this JSON body (sent as is, not checked).
    pub fn json(status: StatusCode, body: &str) -> Fault {
        Fault::Status {
            status,
            content_type: "application/json",
            body: Bytes::copy_from_slice(body.as_bytes()),
            retry_after: None,
        }
    }
}
