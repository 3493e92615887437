//! Which responses mean "this token was rejected".

use std::fmt;
use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderName, StatusCode};

type Predicate = dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync;

/// Which responses mean "this token was rejected": each such response triggers (at most) one
/// refresh and one retry. Give one to [`AuthLayer::rejection`](crate::AuthLayer::rejection), or a
/// closure to [`AuthLayer::reject_when`](crate::AuthLayer::reject_when).
///
/// ```
/// use http::{HeaderMap, StatusCode};
/// use tower_auth_refresh::Rejection;
///
/// let grpc = Rejection::grpc_unauthenticated();
/// let mut headers = HeaderMap::new();
/// headers.insert("grpc-status", "16".parse().unwrap());
/// assert!(grpc.matches(StatusCode::OK, &headers));
/// assert!(!grpc.matches(StatusCode::OK, &HeaderMap::new()));
///
/// let dot = Rejection::status_401_or_bare_403();
/// assert!(dot.matches(StatusCode::FORBIDDEN, &HeaderMap::new()));
/// ```
#[derive(Clone, Default)]
pub struct Rejection(Kind);

#[derive(Clone, Default)]
enum Kind {
    /// Status 401, checked without a call: the default.
    #[default]
    Unauthorized,
    /// 401, or a 403 without `WWW-Authenticate`.
    UnauthorizedOrBareForbidden,
    /// `grpc-status: 16` in the headers (a trailers-only response), or 401.
    GrpcUnauthenticated,
    Custom(Arc<Predicate>),
}

/// gRPC's `UNAUTHENTICATED` status code.
const GRPC_UNAUTHENTICATED: &str = "16";

impl Rejection {
    /// Status 401 (the default).
    pub fn status_401() -> Self {
        Self(Kind::Unauthorized)
    }

    /// Status 401, and 403 without a `WWW-Authenticate` header.
    ///
    /// For servers that answer an expired or revoked token with a bare 403: the protected
    /// views of django-oauth-toolkit do (`ProtectedResourceView` and its permission classes
    /// return 403 for an invalid token). A 403 that carries `WWW-Authenticate` (RFC 6750's
    /// `insufficient_scope`) is about permissions, not the token, and is not a rejection.
    pub fn status_401_or_bare_403() -> Self {
        Self(Kind::UnauthorizedOrBareForbidden)
    }

    /// gRPC's `UNAUTHENTICATED`: a response with `grpc-status: 16` in its headers (gRPC sends an
    /// error before any message as a trailers-only response, HTTP 200 with the status in the
    /// headers), and status 401 (what a proxy in front of a gRPC server may answer).
    pub fn grpc_unauthenticated() -> Self {
        Self(Kind::GrpcUnauthenticated)
    }

    /// Any predicate over the status and the headers.
    pub fn custom<F>(predicate: F) -> Self
    where
        F: Fn(StatusCode, &HeaderMap) -> bool + Send + Sync + 'static,
    {
        Self(Kind::Custom(Arc::new(predicate)))
    }

    /// Whether a response with this status and these headers is a rejection.
    #[inline]
    pub fn matches(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        match &self.0 {
            Kind::Unauthorized => status == StatusCode::UNAUTHORIZED,
            Kind::UnauthorizedOrBareForbidden => {
                status == StatusCode::UNAUTHORIZED
                    || (status == StatusCode::FORBIDDEN && !headers.contains_key(WWW_AUTHENTICATE))
            }
            Kind::GrpcUnauthenticated => {
                status == StatusCode::UNAUTHORIZED
                    || headers
                        .get(HeaderName::from_static("grpc-status"))
                        .is_some_and(|value| value.as_bytes() == GRPC_UNAUTHENTICATED.as_bytes())
            }
            Kind::Custom(predicate) => predicate(status, headers),
        }
    }
}

impl fmt::Debug for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::Unauthorized => "status 401",
            Kind::UnauthorizedOrBareForbidden => "status 401, or 403 without WWW-Authenticate",
            Kind::GrpcUnauthenticated => "grpc-status 16 or status 401",
            Kind::Custom(_) => "custom predicate",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn presets() {
        let empty = HeaderMap::new();
        let mut challenged = HeaderMap::new();
        challenged.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer error="insufficient_scope""#),
        );
        let default = Rejection::default();
        assert!(default.matches(StatusCode::UNAUTHORIZED, &empty));
        assert!(!default.matches(StatusCode::FORBIDDEN, &empty));

        let dot = Rejection::status_401_or_bare_403();
        assert!(dot.matches(StatusCode::UNAUTHORIZED, &challenged));
        assert!(dot.matches(StatusCode::FORBIDDEN, &empty));
        assert!(!dot.matches(StatusCode::FORBIDDEN, &challenged));
        assert!(!dot.matches(StatusCode::OK, &empty));

        let grpc = Rejection::grpc_unauthenticated();
        let mut status = HeaderMap::new();
        status.insert("grpc-status", HeaderValue::from_static("16"));
        assert!(grpc.matches(StatusCode::OK, &status));
        status.insert("grpc-status", HeaderValue::from_static("7"));
        assert!(!grpc.matches(StatusCode::OK, &status));
        status.insert("grpc-status", HeaderValue::from_static("160"));
        assert!(!grpc.matches(StatusCode::OK, &status));
        assert!(grpc.matches(StatusCode::UNAUTHORIZED, &empty));
    }
}
