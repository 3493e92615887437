//! Serving the [`Fault`]s: before the grant (instead of it) and after it.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Map, Value};

use super::protocol::{self, Answer};
use super::{Endpoint, ProviderShared};
use crate::test_util::fault::{AfterGrant, Fault};
use crate::test_util::server::{self, ResponseBody};

impl ProviderShared {
    /// Answers a token request, misbehaving as `fault` says.
    pub(super) async fn serve(
        self: Arc<Self>,
        fault: Option<Fault>,
        request: Request<Incoming>,
        endpoint: Endpoint,
    ) -> io::Result<Response<ResponseBody>> {
        match fault {
            None => Ok(self.answer(request, endpoint).await.into_response()),
            Some(Fault::Delay(delay)) => {
                tokio::time::sleep(delay).await;
                Ok(self.answer(request, endpoint).await.into_response())
            }
            Some(Fault::AfterGrant(after)) => {
                let answer = self.answer(request, endpoint).await;
                after_grant(after, answer).await
            }
            Some(Fault::Status {
                status,
                content_type,
                body,
                retry_after,
            }) => {
                drain(request).await;
                Ok(canned_response(status, content_type, body, retry_after))
            }
            Some(Fault::Hang) => {
                drain(request).await;
                hang().await
            }
            Some(Fault::CloseConnection) => {
                drain(request).await;
                Err(closed())
            }
            Some(Fault::ResetMidBody) => {
                drain(request).await;
                Ok(truncated_response())
            }
        }
    }

    /// The normal handling: the request processed, its answer after the configured delay.
    async fn answer(&self, request: Request<Incoming>, endpoint: Endpoint) -> Answer {
        let answer = match endpoint {
            Endpoint::Token => self.token_endpoint(request).await,
            Endpoint::Revocation => self.revocation_endpoint(request).await,
            Endpoint::Logout => self.logout_endpoint(request).await,
        };
        if !self.config.response_delay.is_zero() {
            tokio::time::sleep(self.config.response_delay).await;
        }
        answer
    }
}

async fn after_grant(after: AfterGrant, mut answer: Answer) -> io::Result<Response<ResponseBody>> {
    match after {
        AfterGrant::Delay(delay) => tokio::time::sleep(delay).await,
        AfterGrant::Close => return Err(closed()),
        AfterGrant::Hang => return hang().await,
        AfterGrant::Set(field, value) => edit(&mut answer, |object| {
            object.insert(field.to_owned(), value);
        }),
        AfterGrant::Remove(field) => edit(&mut answer, |object| {
            object.remove(field);
        }),
    }
    Ok(answer.into_response())
}

/// Changes the answer's JSON object (every answer of the endpoint is one).
fn edit(answer: &mut Answer, change: impl FnOnce(&mut Map<String, Value>)) {
    let mut object: Map<String, Value> = serde_json::from_slice(&answer.body).unwrap_or_default();
    change(&mut object);
    answer.body = Bytes::from(serde_json::to_vec(&object).unwrap_or_default());
}

/// Never resolves; the server drops this future when it shuts down.
async fn hang() -> io::Result<Response<ResponseBody>> {
    let never: Infallible = std::future::pending().await;
    match never {}
}

/// A handler error: the server closes the connection without a response.
fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "fault: connection closed")
}

/// Reads and discards a request's body, as a server does before it answers; then
/// closing the connection sends no reset that could wipe out what the client has not
/// read yet.
async fn drain(request: Request<Incoming>) {
    let (parts, body) = request.into_parts();
    let _ = server::read_body(&parts.headers, body).await;
}

fn canned_response(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    retry_after: Option<String>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    let content_type = Some(content_type).filter(|value| !value.is_empty());
    if let Some(value) = content_type.and_then(|value| HeaderValue::from_str(value).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if let Some(value) = retry_after.and_then(|value| HeaderValue::from_str(&value).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `200 OK` promising more JSON than it sends before the connection is closed.
fn truncated_response() -> Response<ResponseBody> {
    const PARTIAL: &[u8] = br#"{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3"#;
    let mut response = Response::new(ResponseBody::truncated(Bytes::from_static(PARTIAL)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
    protocol::no_store(headers);
    response
}
