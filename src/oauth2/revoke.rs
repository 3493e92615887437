//! Logging out at the identity provider: revoking the session's tokens (RFC 7009), or
//! Keycloak's logout endpoint.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::Service;

use super::config::Config;
use super::error::{Error, ErrorKind};
use super::form::{self, Form};
use super::refresher::OAuth2Refresher;
use super::response::{self, Grant};
use super::transport;
use crate::refresh::{BoxError, RevokeRequest};
use crate::token::TokenSet;

/// Ends a session at the identity provider: a [`tower::Service`]`<`[`RevokeRequest`]`>` made by
/// [`OAuth2Refresher::revoker`], with the refresher's endpoints, client authentication and
/// headers.
///
/// What it sends, for a token set with a refresh token: with a
/// [`logout_url`](super::OAuth2RefresherBuilder::logout_url) (Keycloak), `refresh_token=…` to
/// it; else, to the [`revocation_url`](super::OAuth2RefresherBuilder::revocation_url),
/// `token=…&token_type_hint=refresh_token` (RFC 7009 §2.1; revoking the refresh token ends the
/// grant at most servers, Keycloak's client session included). For a token set with only an
/// access token, `token=…&token_type_hint=access_token` to the revocation endpoint.
///
/// What it answers: `Ok(())` for any 2xx — RFC 7009 §2.2 answers 200 for a token the server
/// does not know (Keycloak even adds an `invalid_token` body), so a second revocation succeeds
/// too. Otherwise the usual [`Error`]: `unsupported_token_type` and `invalid_request` are
/// [`ErrorKind::Rejected`], `invalid_client` [`ErrorKind::ClientRejected`], Keycloak's logout
/// refusing the refresh token (`invalid_grant`) [`ErrorKind::RefreshTokenRejected`]; a 503,
/// 429, an HTML page or a connection error [`ErrorKind::Transient`] with `Retry-After`. No
/// endpoint to send to is [`ErrorKind::Config`]. It is not retried: a caller that wants
/// to try again later calls it again.
///
/// # For `AuthHandle::logout`
///
/// It fits the revoker an [`AuthLayerBuilder`](crate::AuthLayerBuilder) is given for
/// `AuthHandle::logout`: it is `Clone`, always ready, its future is `Send + 'static`, and it
/// holds no session state of its own (a revocation has no effect on the refresher), so the
/// handle can clear the cache and the store whatever it answers and report its error.
///
/// # Example
///
/// ```no_run
/// use tower::ServiceExt;
/// use tower_auth_refresh::RevokeRequest;
/// use tower_auth_refresh::oauth2::OAuth2Refresher;
///
/// # async fn run() -> Result<(), tower_auth_refresh::oauth2::Error> {
/// let refresher = OAuth2Refresher::builder(
///     "https://auth.example/realms/demo/protocol/openid-connect/token",
///     "my-client",
/// )
/// .client_secret("…")
/// .password("reader", "…")
/// .revocation_url("https://auth.example/realms/demo/protocol/openid-connect/revoke")
/// .build_https()?;
/// let tokens = refresher.login().await?;
/// // … use the session; then log out at the provider:
/// refresher.revoker().oneshot(RevokeRequest::new(tokens)).await?;
/// # Ok(()) }
/// ```
pub struct OAuth2Revoker<C> {
    client: C,
    config: Arc<Config>,
}

impl<C: Clone> OAuth2Refresher<C> {
    /// A revoker with this refresher's endpoints, client authentication and headers. See
    /// [`OAuth2Revoker`].
    pub fn revoker(&self) -> OAuth2Revoker<C> {
        OAuth2Revoker {
            client: self.client.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<C, ResB> OAuth2Refresher<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone,
    C::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    /// Revokes `tokens` at the identity provider, as [`OAuth2Revoker`] does.
    pub async fn revoke(&self, tokens: &TokenSet) -> Result<(), Error> {
        self.revoker().revoke(tokens).await
    }
}

impl<C, ResB> OAuth2Revoker<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone,
    C::Error: Into<BoxError>,
    ResB: Body,
    ResB::Error: Into<BoxError>,
{
    /// Revokes `tokens`: its refresh token if it has one, else its access token.
    pub async fn revoke(&self, tokens: &TokenSet) -> Result<(), Error> {
        let config = &self.config;
        let mut form = Form::default();
        let (grant, url, token) = match (tokens.refresh_token(), &config.logout_url) {
            (Some(refresh), Some(logout)) => {
                form.push("refresh_token", refresh.secret());
                (Grant::Logout, logout, refresh.secret())
            }
            (refresh, _) => {
                let url = config.revocation_url.as_ref().ok_or_else(|| {
                    Error::new(
                        ErrorKind::Config,
                        "no revocation endpoint is configured (revocation_url, or discovery)",
                    )
                })?;
                let (token, hint) = match refresh {
                    Some(refresh) => (refresh.secret(), "refresh_token"),
                    None => (tokens.access_token().secret(), "access_token"),
                };
                form.push("token", token);
                form.push("token_type_hint", hint);
                (Grant::Revocation, url, token)
            }
        };
        tracing::debug!(
            endpoint = grant.as_str(),
            "revoking the session at the identity provider"
        );
        let post = form::post(config, url, form).map_err(|error| error.with_grant(grant))?;
        let answer =
            transport::send(&self.client, grant, post.request, config.max_response).await?;
        if answer.status.is_success() {
            tracing::debug!(status = answer.status.as_u16(), "revoked");
            return Ok(());
        }
        let mut secrets = config.secrets(Some(token));
        secrets.extend(post.assertion.as_ref().map(|assertion| assertion.as_str()));
        let error = response::classify(
            grant,
            answer.status,
            &answer.headers,
            answer.body.as_deref().unwrap_or_default(),
            &secrets,
        )
        .with_grant(grant)
        .with_status(answer.status);
        tracing::debug!(error = %error, "revocation refused");
        Err(error)
    }
}

impl<C, ResB> Service<RevokeRequest> for OAuth2Revoker<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    ResB: Body + Send,
    ResB::Data: Send,
    ResB::Error: Into<BoxError>,
{
    type Response = ();
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each revocation drives its own clone of the client to readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RevokeRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.revoke(request.tokens()).await })
    }
}

impl<C: Clone> Clone for OAuth2Revoker<C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<C> fmt::Debug for OAuth2Revoker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Revoker")
            .field("revocation_url", &self.config.revocation_url)
            .field("logout_url", &self.config.logout_url)
            .field("client_auth", &self.config.credentials)
            .finish_non_exhaustive()
    }
}
