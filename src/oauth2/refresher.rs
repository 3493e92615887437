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

use super::builder::OAuth2RefresherBuilder;
use super::config::Config;
use super::dpop;
use super::error::{Error, ErrorKind};
use super::form::{self, Form};
use super::response::{self, Grant};
use super::rotation::Rotations;
use super::transport;
use crate::refresh::{BoxError, RefreshRequest};
use crate::token::{RefreshToken, TokenSet};

/// A refresher that speaks to an OAuth2 / OpenID Connect token endpoint.
///
/// It refreshes with the `refresh_token` grant while it has a refresh token that is not about
/// to expire, and logs in (password or client credentials grant) when it has none, or when the
/// server refuses the refresh (`invalid_grant`: expired, revoked, session ended;
/// `invalid_scope`). A login the server refuses is terminal ([`ErrorKind::CredentialsRejected`],
/// [`ErrorKind::ClientRejected`], …); transient failures ([`Error::is_transient`]: 5xx, 429,
/// connection errors, pages that are not OAuth2 errors, unusable success answers) never cause a
/// login.
///
/// A refresh answer without a refresh token keeps the old one; a new one always replaces it
/// (Keycloak rotates them), even in an answer that is otherwise refused: the error carries it
/// ([`Error::refresh_token`]), and the refresher remembers it, so that asked to refresh with the
/// spent token again it presents the new one.
///
/// It is generic over the HTTP client `C`, any `Service<http::Request<Full<Bytes>>>`. See
/// the [module example](super#example).
pub struct OAuth2Refresher<C> {
    pub(super) client: C,
    pub(super) config: Arc<Config>,
    rotations: Arc<Rotations>,
}

impl OAuth2Refresher<()> {
    /// Starts building a refresher for the token endpoint at `token_url`, as client
    /// `client_id`.
    pub fn builder(
        token_url: impl Into<String>,
        client_id: impl Into<String>,
    ) -> OAuth2RefresherBuilder {
        OAuth2RefresherBuilder::new(Some(token_url.into()), None, client_id.into())
    }

    /// Starts building a refresher for the identity provider `issuer`, as client `client_id`:
    /// [`OAuth2RefresherBuilder::discover`] then reads its endpoints from its discovery
    /// document.
    pub fn issuer(
        issuer: impl Into<String>,
        client_id: impl Into<String>,
    ) -> OAuth2RefresherBuilder {
        OAuth2RefresherBuilder::new(None, Some(issuer.into()), client_id.into())
    }
}

impl<C> OAuth2Refresher<C> {
    pub(super) fn from_parts(client: C, config: Arc<Config>) -> Self {
        Self {
            client,
            config,
            rotations: Arc::default(),
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
    /// Logs in now with the configured grant, whatever tokens exist.
    pub async fn login(&self) -> Result<TokenSet, Error> {
        let (grant, form) = form::login(&self.config).ok_or_else(|| {
            Error::new(
                ErrorKind::NoCredentials,
                "no login grant is configured (password or client credentials)",
            )
        })?;
        tracing::debug!(grant = grant.as_str(), "logging in at the token endpoint");
        self.exchange(grant, form, None).await
    }

    /// Exchanges the refresh token of `current` for new tokens. An answer without a refresh
    /// token keeps the one presented.
    ///
    /// If that refresh token was rotated out in an answer this refresher refused, the one that
    /// answer issued is presented instead.
    pub async fn refresh(&self, current: &TokenSet) -> Result<TokenSet, Error> {
        dpop::adopt_key(&self.config, current);
        let held = current.refresh_token().ok_or_else(|| {
            Error::new(
                ErrorKind::NoCredentials,
                "there is no refresh token to refresh with",
            )
        })?;
        let replacement = self.rotations.replacement(held);
        if replacement.is_some() {
            tracing::info!(
                "presenting the refresh token a refused answer issued, not the spent one"
            );
        }
        let presented = replacement.as_ref().unwrap_or(held);
        tracing::debug!("refreshing at the token endpoint");
        let form = form::refresh(&self.config, presented);
        let outcome = self
            .exchange(Grant::RefreshToken, form, Some(presented))
            .await;
        match &outcome {
            Err(error) => match error.refresh_token() {
                Some(issued) => self.rotations.rotated(presented, issued),
                None if !error.is_transient() => self.rotations.settled(presented),
                None => {}
            },
            Ok(_) => self.rotations.settled(presented),
        }
        let tokens = outcome?;
        // The expiry known for `held` says nothing of a replacement.
        let known_expiry = replacement.is_none().then_some(current);
        Ok(keep_refresh_token(tokens, known_expiry, presented))
    }

    /// The recovery chain: refresh, else log in; a refused refresh token or refresh scope
    /// leads to a login.
    async fn renew(&self, request: RefreshRequest) -> Result<TokenSet, Error> {
        let usable = request
            .current()
            .filter(|tokens| !tokens.refresh_token_expires_within(self.config.refresh_margin));
        if let Some(current) = usable {
            match self.refresh(current).await {
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::RefreshTokenRejected | ErrorKind::ScopeRejected
                    ) && self.config.login.is_some() =>
                {
                    tracing::info!(error = %error, "refresh refused; logging in again");
                }
                outcome => return outcome,
            }
        } else if request.refresh_token().is_some() && self.config.login.is_none() {
            return Err(Error::new(
                ErrorKind::RefreshTokenRejected,
                "the refresh token has expired and no login grant is configured",
            ));
        }
        self.login().await
    }

    /// Sends one grant; `presented` is the refresh token it sends, if any. With a DPoP key,
    /// a nonce challenge is answered once, with a new request: a new proof (with the nonce),
    /// and a new client assertion (servers accept each `jti` once).
    async fn exchange(
        &self,
        grant: Grant,
        form: Form,
        presented: Option<&RefreshToken>,
    ) -> Result<TokenSet, Error> {
        let mut retried = false;
        loop {
            let mut post = form::post(&self.config, &self.config.token_url, form.clone())
                .map_err(|error| error.with_grant(grant))?;
            let sent =
                dpop::prove(&self.config, &mut post.request).map_err(|e| e.with_grant(grant))?;
            let answer =
                transport::send(&self.client, grant, post.request, self.config.max_response)
                    .await?;
            if dpop::retry(&self.config, &answer, &sent, retried) {
                retried = true;
                continue;
            }
            let mut secrets = self.config.secrets(Config::presented(presented));
            secrets.extend(post.assertion.as_ref().map(|assertion| assertion.as_str()));
            secrets.extend(sent.proof());
            let outcome = response::interpret(
                grant,
                answer.status,
                &answer.headers,
                answer.body.as_deref(),
                &secrets,
            )
            .and_then(|tokens| {
                dpop::check_token_type(&self.config, tokens)
                    .map_err(|error| error.with_grant(grant).with_status(answer.status))
            });
            match &outcome {
                Ok(_) => tracing::debug!(
                    grant = grant.as_str(),
                    status = answer.status.as_u16(),
                    "token endpoint answered"
                ),
                Err(error) => {
                    tracing::debug!(grant = grant.as_str(), status = answer.status.as_u16(), error = %error, "token endpoint refused")
                }
            }
            return outcome;
        }
    }
}

/// A refresh answer without a refresh token keeps the one it was made with, and its expiry
/// from `known`, the token set it came from.
fn keep_refresh_token(tokens: TokenSet, known: Option<&TokenSet>, used: &RefreshToken) -> TokenSet {
    if tokens.refresh_token().is_some() {
        return tokens;
    }
    let tokens = tokens.with_refresh_token(used.clone());
    match (
        tokens.refresh_expires_at(),
        known.and_then(TokenSet::refresh_expires_at),
    ) {
        (None, Some(at)) => tokens.with_refresh_expires_at(at),
        _ => tokens,
    }
}

impl<C, ResB> Service<RefreshRequest> for OAuth2Refresher<C>
where
    C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
    C::Error: Into<BoxError>,
    C::Future: Send,
    ResB: Body + Send,
    ResB::Data: Send,
    ResB::Error: Into<BoxError>,
{
    type Response = TokenSet;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<TokenSet, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each exchange drives its own clone of the client to readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RefreshRequest) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.renew(request).await })
    }
}

impl<C: Clone> Clone for OAuth2Refresher<C> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            config: Arc::clone(&self.config),
            rotations: Arc::clone(&self.rotations),
        }
    }
}

impl<C> fmt::Debug for OAuth2Refresher<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Refresher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}
