//! Misbehaviours of the token endpoint.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

/// How the token endpoint answers a request instead of handling it normally.
///
/// Give one to [`IdentityProvider::push_fault`](super::IdentityProvider::push_fault)
/// for the next request only, or to
/// [`IdentityProvider::set_fault`](super::IdentityProvider::set_fault) for every request
/// until it is cleared. Every fault counts in
/// [`ProviderStats::faults_served`](super::ProviderStats::faults_served). Except for
/// [`Fault::Delay`], a fault replaces the whole handling: the request's credentials and
/// tokens are not looked at, and [`ProviderConfig::response_delay`] does not apply.
///
/// [`ProviderConfig::response_delay`]: super::ProviderConfig::response_delay
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this response.
    Status {
        /// The status code.
        status: StatusCode,
        /// The `Content-Type` header. An invalid header value is left out.
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
