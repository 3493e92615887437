//! Sending one request to the identity provider and reading its answer, size-capped: what the
//! token exchange, revocation and discovery share.

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower::{Service, ServiceExt};

use super::error::{Error, ErrorKind};
use super::response::Grant;
use super::wiped::{self, Wiped};
use crate::refresh::BoxError;

/// An answer read: the body is `None` when it was larger than the cap.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Option<Wiped>,
}

/// Sends `request` on a clone of `client` and reads the answer's body up to `max` bytes.
/// Failing to reach the server, or a body cut short, is [`ErrorKind::Transient`].
pub(super) async fn send<C, ResB>(
    client: &C,
    grant: Grant,
    request: Request<Full<Bytes>>,
    max: usize,
) -> Result<Answer, Error>
where
    C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone,
    C::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    let unreachable = match grant {
        Grant::Revocation => "could not reach the revocation endpoint",
        Grant::Logout => "could not reach the logout endpoint",
        Grant::Discovery => "could not fetch the discovery document",
        _ => "could not reach the token endpoint",
    };
    let response = client.clone().oneshot(request).await.map_err(|error| {
        Error::new(ErrorKind::Transient, unreachable)
            .with_grant(grant)
            .with_source(error)
    })?;
    let (parts, body) = response.into_parts();
    let body = wiped::read(body, max)
        .await
        .map_err(|error| error.with_grant(grant).with_status(parts.status))?;
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}
