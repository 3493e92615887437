//! HTTP/1.1 plumbing shared by the identity provider and the API.

use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The largest request body either server reads; a larger one gets `413`.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// Binds a listener on `127.0.0.1` with a port chosen by the system.
pub(super) async fn bind() -> io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Stops a server, its listener and every open connection, when triggered or dropped.
#[derive(Debug)]
pub(super) struct Shutdown(watch::Sender<bool>);

impl Shutdown {
    pub(super) fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// Serves `listener` in a spawned task, one more task per connection, until the
/// returned [`Shutdown`] is triggered or dropped.
///
/// A handler error closes the connection without a response.
pub(super) fn spawn<H, F>(listener: TcpListener, handler: H) -> Shutdown
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = io::Result<Response<ResponseBody>>> + Send + 'static,
{
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(accept_loop(listener, receiver, handler));
    Shutdown(sender)
}

async fn accept_loop<H, F>(listener: TcpListener, stop: watch::Receiver<bool>, handler: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = io::Result<Response<ResponseBody>>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            biased;
            () = stopped(stop.clone()) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // For example out of file descriptors: back off rather than spin.
                tracing::warn!(%error, "fake server: accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // Best effort: only latency depends on it.
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(handler);
            let connection = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                result = connection => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "fake server: connection ended with an error");
                    }
                }
                // Dropping the connection closes it, whatever it was doing.
                () = stopped(stop) => {}
            }
        });
    }
}

/// Resolves once the server is told to stop or its [`Shutdown`] is dropped.
async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender was dropped: stop as well.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Why a request body could not be read.
pub(super) enum BodyError {
    /// Longer than [`MAX_BODY`].
    TooLarge,
    /// The connection failed while reading it.
    Broken,
}

/// Reads a whole request body, refusing more than [`MAX_BODY`] bytes.
pub(super) async fn read_body(headers: &HeaderMap, body: Incoming) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(BodyError::TooLarge)
        }
        Err(_) => Err(BodyError::Broken),
    }
}

/// A response with a body and a `Content-Type`.
pub(super) fn response(
    status: StatusCode,
    content_type: HeaderValue,
    body: Bytes,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

/// A JSON response.
pub(super) fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    // Serializing plain structs and `serde_json::Value`s cannot fail; an empty object
    // is a harmless fallback all the same.
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    response(
        status,
        HeaderValue::from_static("application/json"),
        Bytes::from(body),
    )
}

/// The body of every response: some bytes, then either the end or a failure.
#[derive(Debug)]
pub(super) struct ResponseBody {
    data: Option<Bytes>,
    end: End,
}

#[derive(Debug)]
enum End {
    /// A complete body of known length.
    Complete,
    /// The stream fails after the data, which makes hyper close the connection. The
    /// flag records that it already returned `Pending` once, so that hyper flushed what
    /// came before.
    Fail { flushed: bool },
}

impl ResponseBody {
    /// A complete body.
    pub(super) fn full(data: Bytes) -> Self {
        Self {
            data: (!data.is_empty()).then_some(data),
            end: End::Complete,
        }
    }

    /// A body whose stream fails after `data`; give the response a `Content-Length`
    /// larger than `data` so that the client sees a truncated message.
    pub(super) fn truncated(data: Bytes) -> Self {
        Self {
            data: Some(data),
            end: End::Fail { flushed: false },
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        match &mut this.end {
            End::Complete => Poll::Ready(None),
            End::Fail { flushed } if !*flushed => {
                // Let hyper write out the headers and data before the failure.
                *flushed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            End::Fail { .. } => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fault: body cut short",
            )))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && matches!(self.end, End::Complete)
    }

    fn size_hint(&self) -> SizeHint {
        match self.end {
            End::Complete => {
                SizeHint::with_exact(self.data.as_ref().map_or(0, |data| data.len() as u64))
            }
            End::Fail { .. } => SizeHint::default(),
        }
    }
}
