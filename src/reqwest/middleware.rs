use std::fmt;
use std::sync::Arc;

use ::reqwest::header::AUTHORIZATION;
use ::reqwest::{Request, Response, Url};
use http::{Extensions, Uri};
use reqwest_middleware::{Error, Next};

use crate::auth::AuthLayer;
use crate::auth::proof::{self, Challenge, Proof};
use crate::cache::Entry;
use crate::handle::AuthHandle;
use crate::refresh::{BoxError, RefreshError};

/// Attaches the access token to every request of a reqwest client, refreshes it when needed,
/// and retries a request the server rejected. Made by
/// [`AuthLayer::reqwest_middleware`](crate::AuthLayer::reqwest_middleware).
///
/// Clones, and every middleware and service made from the same layer, share the token cache.
/// See the [module docs](crate::reqwest) for the behaviour, the errors and an example.
#[derive(Clone)]
pub struct AuthMiddleware {
    // The layer's shared parts: the cache, the rejection predicate and the origins. Its
    // replay policy has no use here (reqwest says which requests can be copied).
    layer: AuthLayer<()>,
}

impl AuthMiddleware {
    pub(super) fn from_layer(layer: AuthLayer<()>) -> Self {
        Self { layer }
    }

    /// A handle on the token cache this middleware shares with its layer.
    pub fn handle(&self) -> AuthHandle {
        self.layer.handle()
    }

    /// Whether the token may go to `url`: the layer's origin check, on an `http::Uri` made
    /// of the URL's scheme, host and port. A URL that makes no such URI is never sent a token.
    fn allows(&self, url: &Url) -> bool {
        let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
            return false;
        };
        format!("{}://{host}:{port}/", url.scheme())
            .parse::<Uri>()
            .is_ok_and(|uri| self.layer.origins.allow(&uri))
    }
}

/// Where a request goes once the token is on it: the rest of a `reqwest_middleware` chain,
/// or a plain client (progenitor's `ClientHooks::exec`).
trait Sender {
    type Error;
    async fn send(&mut self, request: Request) -> Result<Response, Self::Error>;
}

struct ToNext<'a>(Next<'a>, &'a mut Extensions);

impl Sender for ToNext<'_> {
    type Error = Error;
    async fn send(&mut self, request: Request) -> Result<Response, Error> {
        self.0.clone().run(request, self.1).await
    }
}

struct ToClient<'a>(&'a ::reqwest::Client);

impl Sender for ToClient<'_> {
    type Error = ::reqwest::Error;
    async fn send(&mut self, request: Request) -> Result<Response, ::reqwest::Error> {
        self.0.execute(request).await
    }
}

/// Why a request sent through [`AuthMiddleware::send`] got no response to return.
enum Failure<E> {
    /// Sending failed: the client's or the next middleware's error.
    Send(E),
    /// No token could be had before sending; the request, unsent.
    NoToken(RefreshError, Request),
    /// A DPoP token, but its proof could not be made; the request, unsent, without the token.
    Proof(BoxError, Request),
    /// The refresh after a rejection failed; the server's rejection.
    Refresh(RefreshError, Response),
}

impl AuthMiddleware {
    /// A new DPoP proof for `request`, if `entry` is a DPoP token.
    fn prove(request: &mut Request, entry: &Entry) -> Result<Proof, BoxError> {
        let uri = request.url().as_str().parse().ok();
        let method = request.method().clone();
        proof::prove(&method, uri, request.headers_mut(), entry)
    }

    /// The middleware's work: attach the token, send, and after a rejection refresh once and
    /// send the copy again.
    async fn send<V: Sender>(
        &self,
        mut request: Request,
        mut via: V,
    ) -> Result<Response, Failure<V::Error>> {
        if request.headers().contains_key(AUTHORIZATION) || !self.allows(request.url()) {
            return via.send(request).await.map_err(Failure::Send);
        }
        let (cache, windows) = (&self.layer.cache, self.layer.windows);
        let entry = match cache.acquire(windows).await {
            Ok(entry) => entry,
            Err(error) => return Err(Failure::NoToken(error, request)),
        };
        request
            .headers_mut()
            .insert(AUTHORIZATION, entry.header.clone());
        let proof = match Self::prove(&mut request, &entry) {
            Ok(proof) => proof,
            Err(error) => {
                request.headers_mut().remove(AUTHORIZATION);
                return Err(Failure::Proof(error, request));
            }
        };
        let generation = entry.generation;
        drop(entry);
        // Taken before sending: a reusable body is a reference count, a streaming one `None`.
        let retry = request.try_clone();

        let response = via.send(request).await.map_err(Failure::Send)?;
        let from_uri = from(&proof, &response);
        match proof.answer(
            response.status(),
            response.headers(),
            retry.is_some(),
            from_uri.as_ref(),
        ) {
            Challenge::None => {}
            Challenge::Returned => return Ok(response),
            // A nonce challenge is no rejection of the token: the copy goes once more, with
            // the same token (or a newer one) and a new proof carrying the nonce.
            Challenge::Nonce => {
                let Some(retry) = retry else {
                    return Ok(response);
                };
                // No token to send it with (a refresh failed meanwhile): the challenge is the
                // answer.
                let Ok(entry) = cache.acquire(windows).await else {
                    return Ok(response);
                };
                return self.resend(retry, entry, response, &mut via, true).await;
            }
        }
        // reqwest follows redirects inside: a 401 from where they ended is about this
        // layer's token only if that origin may get it.
        if !self
            .layer
            .rejection
            .matches(response.status(), response.headers())
        {
            cache.accepted(generation);
            return Ok(response);
        }
        if !self.allows(response.url()) || !cache.rejected(generation) {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let Some(retry) = retry else {
            tracing::debug!(
                generation,
                status,
                "token rejected; the request cannot be replayed"
            );
            cache.refresh_after_rejection(generation, &windows);
            return Ok(response);
        };
        tracing::debug!(
            generation,
            status,
            "token rejected; retrying with a newer token"
        );
        let entry = match cache.after_rejection(generation, windows).await {
            Ok(entry) => entry,
            Err(error) => return Err(Failure::Refresh(error, response)),
        };
        self.resend(retry, entry, response, &mut via, false).await
    }

    /// Sends the copy `retry` with `entry`'s token, the one retry of a request whose first
    /// answer was `first` (returned if the retry cannot be proved); a challenge or a
    /// rejection of the retry goes back as it came. `after_nonce`: the retry answers a DPoP
    /// nonce challenge with the same token, so a rejection of it starts a refresh for the
    /// next requests.
    async fn resend<V: Sender>(
        &self,
        mut retry: Request,
        entry: Arc<Entry>,
        first: Response,
        via: &mut V,
        after_nonce: bool,
    ) -> Result<Response, Failure<V::Error>> {
        retry
            .headers_mut()
            .insert(AUTHORIZATION, entry.header.clone());
        let proof = match Self::prove(&mut retry, &entry) {
            Ok(proof) => proof,
            Err(error) => {
                tracing::warn!(%error, "the retry's DPoP proof could not be made");
                return Ok(first);
            }
        };
        let generation = entry.generation;
        drop(entry);
        // Frees the connection rather than hold it for the retry.
        drop(first);
        let response = via.send(retry).await.map_err(Failure::Send)?;
        let from_uri = from(&proof, &response);
        if !matches!(
            proof.answer(
                response.status(),
                response.headers(),
                false,
                from_uri.as_ref()
            ),
            Challenge::None
        ) {
            return Ok(response);
        }
        let cache = &self.layer.cache;
        if self
            .layer
            .rejection
            .matches(response.status(), response.headers())
        {
            if !after_nonce {
                cache.retry_rejected(generation);
            } else if self.allows(response.url()) && cache.rejected(generation) {
                cache.refresh_after_rejection(generation, &self.layer.windows);
            }
        } else {
            cache.accepted(generation);
        }
        Ok(response)
    }

    /// Sends `request` with `client` and does what the middleware does (attach the token,
    /// refresh, retry once after a rejection): for clients that take a plain
    /// `reqwest::Client` and a hook around each request, such as progenitor's
    /// `ClientHooks::exec`, whose body it makes one line.
    ///
    /// A `reqwest::Error` cannot carry a failed refresh, and this never invents a response:
    /// when the refresh after a rejection fails, the server's own 401 is returned, with the
    /// [`RefreshError`] in its extensions ([`failed_refresh`](super::failed_refresh) finds it).
    /// When no token can be had at all, the request is sent without one and the server's
    /// answer is returned the same way; ask for the token before (`AuthHandle::token`, in
    /// progenitor's `ClientHooks::pre`) so that a failed login stops the request before it
    /// leaves. See the [module docs](crate::reqwest#generated-clients-progenitor).
    pub async fn execute(
        &self,
        client: &::reqwest::Client,
        request: Request,
    ) -> ::reqwest::Result<Response> {
        let (mut response, error) = match self.send(request, ToClient(client)).await {
            Ok(response) => return Ok(response),
            Err(Failure::Send(error)) => return Err(error),
            Err(Failure::Refresh(error, response)) => (response, error),
            Err(Failure::NoToken(error, request)) => {
                tracing::debug!(%error, "no token; the request is sent without one");
                (client.execute(request).await?, error)
            }
            Err(Failure::Proof(error, request)) => {
                tracing::warn!(%error, "no DPoP proof; the request is sent without the token");
                return client.execute(request).await;
            }
        };
        response.extensions_mut().insert(error);
        Ok(response)
    }
}

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for AuthMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        match self.send(request, ToNext(next, extensions)).await {
            Ok(response) => Ok(response),
            Err(Failure::Send(error)) => Err(error),
            Err(Failure::NoToken(error, _) | Failure::Refresh(error, _)) => {
                Err(Error::middleware(error))
            }
            Err(Failure::Proof(error, _)) => Err(Error::middleware(ProofFailed(error))),
        }
    }
}

/// A DPoP proof that could not be made, as a middleware error.
#[derive(Debug)]
struct ProofFailed(BoxError);

impl fmt::Display for ProofFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for ProofFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl fmt::Debug for AuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthMiddleware")
            .field("windows", &self.layer.windows)
            .field("rejection", &self.layer.rejection)
            .field("origins", &self.layer.origins)
            .finish()
    }
}

/// Where a response came from (after any redirect reqwest followed), for a proved request:
/// a DPoP proof's origin is compared with it.
fn from(proof: &Proof, response: &Response) -> Option<http::Uri> {
    if !proof.is_some() {
        return None;
    }
    response.url().as_str().parse().ok()
}
