//! Replay by recording: any body, up to a cap, and back into the body type an SDK takes.

use http::Request;

use super::{ReplayBody, ReplayPolicy, Snapshot};

/// Makes any body replayable by buffering what it streams, up to a cap.
///
/// The inner service receives [`ReplayBody`]`<B>`. A request whose body streamed whole and
/// within the cap is replayed from the buffer; one whose body was larger, failed, or was not
/// yet fully sent when the server answered, is not retried.
///
/// Where the inner service takes one body type of its own (tonic's `Channel`, octocrab's and
/// kube's clients), [`map_body`](Self::map_body) turns the `ReplayBody` back into it. See the
/// [module docs](super).
#[derive(Clone, Copy, Debug)]
pub struct BufferBody {
    max: usize,
}

impl BufferBody {
    /// Buffers at most `max` bytes of each request body.
    pub fn new(max: usize) -> Self {
        Self { max }
    }

    /// The same buffering, then `into` turns each [`ReplayBody`] into the body type the inner
    /// service takes, e.g. `tonic::body::Body::new` or `octocrab::OctoBody::new`.
    ///
    /// `into` is cloned for each request that may be retried: a function, or a closure that
    /// captures nothing, costs nothing to clone.
    ///
    /// ```
    /// # use std::convert::Infallible;
    /// # use tower::{service_fn, Layer, ServiceExt};
    /// # use tower_auth_refresh::{AuthLayer, RefreshRequest, TokenSet};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_auth_refresh::BoxError> {
    /// # let refresher = service_fn(|_: RefreshRequest| async { Ok::<_, Infallible>(TokenSet::new("t")) });
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
    /// use tower_auth_refresh::replay::{BufferBody, ReplayBody};
    ///
    /// // An SDK's transport that takes one body type, as tonic's `Channel` does.
    /// type SdkBody = UnsyncBoxBody<Bytes, tower_auth_refresh::BoxError>;
    /// let transport = service_fn(|request: http::Request<SdkBody>| async move {
    ///     let body = request.into_body().collect().await?.to_bytes();
    ///     Ok::<_, tower_auth_refresh::BoxError>(http::Response::new(Full::new(body)))
    /// });
    ///
    /// let policy = BufferBody::default().map_body(|body: ReplayBody<SdkBody>| SdkBody::new(body));
    /// let client = AuthLayer::new(refresher).replay_policy(policy).layer(transport);
    ///
    /// let body = SdkBody::new(Full::new(Bytes::from_static(b"{}")).map_err(Into::into));
    /// let response = client.oneshot(http::Request::post("http://127.0.0.1/").body(body)?).await?;
    /// assert_eq!(response.into_body().collect().await?.to_bytes(), "{}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn map_body<F>(self, into: F) -> MapReplayBody<F> {
        MapReplayBody { buffer: self, into }
    }
}

impl Default for BufferBody {
    /// Buffers at most 64 KiB.
    fn default() -> Self {
        Self::new(64 * 1024)
    }
}

impl<B> ReplayPolicy<B> for BufferBody
where
    B: http_body::Body,
{
    type Body = ReplayBody<B>;
    type Kept = Snapshot<ReplayBody<B>>;

    /// A snapshot of the request's text, with a copy of its body that will replay what the
    /// original streams ([`prepare`](ReplayPolicy::prepare) ties the two).
    #[inline]
    fn keep(&self, request: &Request<B>) -> Option<Snapshot<ReplayBody<B>>> {
        Snapshot::of(request, ReplayBody::copy())
    }

    #[inline]
    fn prepare(
        &self,
        request: Request<B>,
        kept: Option<&Snapshot<ReplayBody<B>>>,
    ) -> Request<ReplayBody<B>> {
        let copy = kept.map(Snapshot::body);
        request.map(|body| ReplayBody::recording(body, self.max, copy))
    }

    fn replay(copy: Snapshot<ReplayBody<B>>) -> Option<Request<ReplayBody<B>>> {
        copy.body().is_replayable().then(|| copy.into_request())?
    }
}

/// [`BufferBody`], with each [`ReplayBody`] turned into the body type the inner service takes.
/// Made by [`BufferBody::map_body`].
///
/// The copy kept for a retry stays a `ReplayBody` until the retry, so a request that is never
/// retried pays for one conversion only.
#[derive(Clone, Copy, Debug)]
pub struct MapReplayBody<F> {
    buffer: BufferBody,
    into: F,
}

impl<B, F, T> ReplayPolicy<B> for MapReplayBody<F>
where
    B: http_body::Body,
    F: Fn(ReplayBody<B>) -> T + Clone,
{
    type Body = T;
    type Kept = (Snapshot<ReplayBody<B>>, F);

    fn keep(&self, request: &Request<B>) -> Option<Self::Kept> {
        let copy = self.buffer.keep(request)?;
        Some((copy, self.into.clone()))
    }

    fn prepare(&self, request: Request<B>, kept: Option<&Self::Kept>) -> Request<T> {
        self.buffer
            .prepare(request, kept.map(|(copy, _)| copy))
            .map(&self.into)
    }

    fn replay((copy, into): Self::Kept) -> Option<Request<T>> {
        <BufferBody as ReplayPolicy<B>>::replay(copy).map(|copy| copy.map(into))
    }
}
