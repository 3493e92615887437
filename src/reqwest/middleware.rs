use std::fmt;

use ::reqwest::header::AUTHORIZATION;
use ::reqwest::{Request, Response, Url};
use http::{Extensions, Uri};
use reqwest_middleware::{Error, Next};

use crate::auth::AuthLayer;
use crate::handle::AuthHandle;

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

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for AuthMiddleware {
    async fn handle(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if request.headers().contains_key(AUTHORIZATION) || !self.allows(request.url()) {
            return next.run(request, extensions).await;
        }
        let (cache, windows) = (&self.layer.cache, self.layer.windows);
        let entry = cache
            .clone()
            .acquire(windows)
            .await
            .map_err(Error::middleware)?;
        request
            .headers_mut()
            .insert(AUTHORIZATION, entry.header.clone());
        let generation = entry.generation;
        drop(entry);
        // Taken before sending: a reusable body is a reference count, a streaming one `None`.
        let retry = request.try_clone();

        let response = next.clone().run(request, extensions).await?;
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
        let Some(mut retry) = retry else {
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
        // Frees the connection rather than hold it while the refresh runs.
        drop(response);
        let entry = cache
            .clone()
            .after_rejection(generation, windows)
            .await
            .map_err(Error::middleware)?;
        retry
            .headers_mut()
            .insert(AUTHORIZATION, entry.header.clone());
        let retry_generation = entry.generation;
        drop(entry);
        let response = next.run(retry, extensions).await?;
        if self
            .layer
            .rejection
            .matches(response.status(), response.headers())
        {
            cache.retry_rejected(retry_generation);
        } else {
            cache.accepted(retry_generation);
        }
        Ok(response)
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
