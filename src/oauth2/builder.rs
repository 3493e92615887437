//! The refresher's builder: credentials, grants, parameters, endpoints.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use super::client_auth::{ClientAuthMethod, Credentials};
use super::config::{Config, DEFAULT_MAX_RESPONSE, Endpoint, Login, endpoint_url};
use super::discovery::ProviderMetadata;
use super::error::{Error, ErrorKind};
#[cfg(feature = "private-key-jwt")]
use super::key::ClientKey;
use super::refresher::OAuth2Refresher;
use crate::token::Secret;

/// Form parameters the refresher sets itself: an extra parameter may not replace one.
const RESERVED: &[&str] = &[
    "grant_type",
    "client_id",
    "client_secret",
    "client_assertion",
    "client_assertion_type",
    "username",
    "password",
    "refresh_token",
    "scope",
    "token",
    "token_type_hint",
];

/// Builds an [`OAuth2Refresher`]. Start with [`OAuth2Refresher::builder`] (a token URL) or
/// [`OAuth2Refresher::issuer`] (discovery).
pub struct OAuth2RefresherBuilder {
    pub(super) token_url: Option<String>,
    pub(super) issuer: Option<String>,
    revocation_url: Option<String>,
    logout_url: Option<String>,
    client_id: String,
    client_secret: Option<Secret>,
    pub(super) client_auth: Option<ClientAuthMethod>,
    #[cfg(feature = "private-key-jwt")]
    client_key: Option<ClientKey>,
    login: Option<Login>,
    scope: Option<String>,
    refresh_scope: Option<String>,
    login_params: Vec<(String, String)>,
    refresh_params: Vec<(String, String)>,
    headers: HeaderMap,
    refresh_margin: Duration,
    pub(super) max_response: usize,
    /// The server's metadata lists neither secret method for a client with a secret.
    no_secret_method: bool,
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::Dpop>,
    #[cfg(feature = "dpop")]
    bearer_fallback: bool,
}

impl OAuth2RefresherBuilder {
    pub(super) fn new(
        token_url: Option<String>,
        issuer: Option<String>,
        client_id: String,
    ) -> Self {
        Self {
            token_url,
            issuer,
            revocation_url: None,
            logout_url: None,
            client_id,
            client_secret: None,
            client_auth: None,
            #[cfg(feature = "private-key-jwt")]
            client_key: None,
            login: None,
            scope: None,
            refresh_scope: None,
            login_params: Vec::new(),
            refresh_params: Vec::new(),
            headers: HeaderMap::new(),
            refresh_margin: Duration::from_secs(30),
            max_response: DEFAULT_MAX_RESPONSE,
            no_secret_method: false,
            #[cfg(feature = "dpop")]
            dpop: None,
            #[cfg(feature = "dpop")]
            bearer_fallback: false,
        }
    }

    /// The client secret. Sent in the form body (`client_secret_post`, as Keycloak and
    /// MangaDex personal clients expect) unless [`client_auth`](Self::client_auth) says
    /// `client_secret_basic`.
    pub fn client_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// How the client authenticates (RFC 6749 §2.3, OpenID Connect Core §9), on every request
    /// to the token and revocation endpoints. Default: `private_key_jwt` with a
    /// [`client_key`](Self::client_key), else `client_secret_post` with a
    /// [`client_secret`](Self::client_secret), else `none` (a public client); with discovery,
    /// a method the server supports. [`build`](Self::build) fails with [`ErrorKind::Config`]
    /// when the method's credential is missing.
    ///
    /// ```
    /// use tower_auth_refresh::oauth2::{ClientAuthMethod, OAuth2Refresher};
    ///
    /// # fn main() -> Result<(), tower_auth_refresh::oauth2::Error> {
    /// // Entra ID and Okta confidential clients: client_secret_basic.
    /// let refresher = OAuth2Refresher::builder("https://idp.example/oauth2/token", "my-client")
    ///     .client_secret("…")
    ///     .client_auth(ClientAuthMethod::ClientSecretBasic)
    ///     .client_credentials()
    ///     .build_http()?;
    /// # let _ = refresher;
    /// # Ok(()) }
    /// ```
    pub fn client_auth(mut self, method: ClientAuthMethod) -> Self {
        self.client_auth = Some(method);
        self
    }

    /// The client's private key, for `private_key_jwt` (RFC 7523): each request carries a
    /// fresh assertion signed with it. See [`ClientKey`](super::ClientKey).
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    pub fn client_key(mut self, key: ClientKey) -> Self {
        self.client_key = Some(key);
        self
    }

    /// The client's DPoP key (RFC 9449; feature `dpop`): every token request (login, refresh,
    /// client credentials) then carries a new proof signed with it, and the tokens come back
    /// bound to it (`token_type: DPoP`). Give the same [`Dpop`](crate::dpop::Dpop) (or a clone)
    /// to the code that calls the API: the nonces the token endpoint sends are kept in it.
    ///
    /// A `400 {"error":"use_dpop_nonce"}` with a `DPoP-Nonce` is answered once, with a new
    /// proof carrying that nonce; a second one in a row is a [`ErrorKind::Transient`] error
    /// (counted in [`DpopStats::token_endpoint_nonce_refusals`](crate::dpop::DpopStats)), never
    /// a loop. A refused proof (`invalid_dpop_proof`) is [`ErrorKind::Dpop`], and so is a
    /// Bearer answer unless [`bearer_fallback`](Self::bearer_fallback) allows it.
    ///
    /// ```
    /// use tower_auth_refresh::dpop::Dpop;
    /// use tower_auth_refresh::oauth2::OAuth2Refresher;
    ///
    /// # fn main() -> Result<(), tower_auth_refresh::BoxError> {
    /// let dpop = Dpop::generate()?;
    /// let refresher = OAuth2Refresher::builder("https://idp.example/token", "my-public-client")
    ///     .password("user", "password")
    ///     .dpop(dpop.clone())
    ///     .build_http()?;
    /// # let _ = refresher;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// Whether a DPoP client takes a Bearer token from a server that ignored its proof
    /// (default `false`: such an answer is [`ErrorKind::Dpop`], terminal, because the client
    /// asked for sender-constrained tokens and the server did not give them). With `true`, the
    /// token set is [`TokenType::Bearer`](crate::TokenType::Bearer), sent as a bearer token.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn bearer_fallback(mut self, accept: bool) -> Self {
        self.bearer_fallback = accept;
        self
    }

    /// Log in with the password grant (`grant_type=password`), as MangaDex personal clients do.
    pub fn password(mut self, username: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.login = Some(Login::Password {
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Log in with the client credentials grant (`grant_type=client_credentials`).
    pub fn client_credentials(mut self) -> Self {
        self.login = Some(Login::ClientCredentials);
        self
    }

    /// The `scope` to ask for on login (default: none, the server's default scopes).
    ///
    /// A refresh does not send it: without `scope` a refresh keeps whatever the login was
    /// granted (RFC 6749 §6), and a server that granted fewer scopes than asked (§3.3) would
    /// refuse a refresh asking for them all. See [`refresh_scope`](Self::refresh_scope).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// A `scope` to ask for on refresh, to get access tokens narrower than the login's grant
    /// (default: none, which keeps the whole grant).
    ///
    /// It must be within what the login was granted: a server refuses more with
    /// `invalid_scope` ([`ErrorKind::ScopeRejected`]), and the refresher then logs in again
    /// if it has a login grant.
    pub fn refresh_scope(mut self, scope: impl Into<String>) -> Self {
        self.refresh_scope = Some(scope.into());
        self
    }

    /// An extra form parameter for the login (password or client credentials grant), e.g.
    /// Auth0's `audience` or RFC 8707's `resource`. Repeat it for more, or for a parameter with
    /// several values.
    ///
    /// The refresher's own parameters (`grant_type`, `client_id`, `scope`, …) cannot be set
    /// this way: [`build`](Self::build) fails with [`ErrorKind::Config`].
    ///
    /// ```
    /// use tower_auth_refresh::oauth2::OAuth2Refresher;
    ///
    /// # fn main() -> Result<(), tower_auth_refresh::oauth2::Error> {
    /// // Auth0: the API the access token is for.
    /// let refresher = OAuth2Refresher::builder("https://tenant.eu.auth0.com/oauth/token", "my-client")
    ///     .client_secret("…")
    ///     .client_credentials()
    ///     .login_param("audience", "https://api.example.com/")
    ///     .build_http()?;
    /// # let _ = refresher;
    /// # Ok(()) }
    /// ```
    pub fn login_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.login_params.push((name.into(), value.into()));
        self
    }

    /// An extra form parameter for refreshes (`grant_type=refresh_token`), e.g. RFC 8707's
    /// `resource` on a server that wants it again on every refresh.
    pub fn refresh_param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.refresh_params.push((name.into(), value.into()));
        self
    }

    /// An extra form parameter for every token request, login and refresh alike.
    pub fn token_param(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        self.login_param(name.clone(), value.clone())
            .refresh_param(name, value)
    }

    /// A header sent with every request to the identity provider's token, revocation and
    /// logout endpoints (an API gateway's key, a tenant header). Repeat it for more.
    ///
    /// `Content-Type`, `Content-Length` and `Host` are the refresher's own, and so is
    /// `Authorization` with `client_secret_basic`: [`build`](Self::build) fails with
    /// [`ErrorKind::Config`].
    pub fn token_request_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.append(name, value);
        self
    }

    /// The revocation endpoint (RFC 7009), for [`OAuth2Refresher::revoker`]: Keycloak's is
    /// `…/realms/<realm>/protocol/openid-connect/revoke`. Discovery sets it from the server's
    /// `revocation_endpoint`.
    pub fn revocation_url(mut self, url: impl Into<String>) -> Self {
        self.revocation_url = Some(url.into());
        self
    }

    /// Keycloak's logout endpoint (`…/realms/<realm>/protocol/openid-connect/logout`), for
    /// [`OAuth2Refresher::revoker`]: a `POST` of the refresh token there ends the user's whole
    /// session at Keycloak (every client of it), where revocation ends this client's part. Used
    /// instead of the revocation endpoint whenever there is a refresh token.
    pub fn logout_url(mut self, url: impl Into<String>) -> Self {
        self.logout_url = Some(url.into());
        self
    }

    /// Takes the endpoints and, unless [`client_auth`](Self::client_auth) chose one, a client
    /// authentication method from the server's metadata. What
    /// [`discover`](Self::discover) does after fetching it; for metadata fetched otherwise.
    ///
    /// The method, for a client with a secret: `client_secret_post` if the server lists it,
    /// else `client_secret_basic` if it lists that (a server that lists no methods supports
    /// `client_secret_basic`, RFC 8414 §2); with a key, `private_key_jwt`; with neither, `none`.
    /// A client with a secret and a server that lists neither secret method is a configuration
    /// error at [`build`](Self::build).
    pub fn metadata(mut self, metadata: &ProviderMetadata) -> Self {
        self.token_url = Some(metadata.token_endpoint().to_owned());
        if self.revocation_url.is_none() {
            self.revocation_url = metadata.revocation_endpoint().map(str::to_owned);
        }
        if self.client_auth.is_none() {
            self.client_auth = self.method_for(metadata);
            self.no_secret_method = self.client_auth.is_none();
        }
        self
    }

    fn method_for(&self, metadata: &ProviderMetadata) -> Option<ClientAuthMethod> {
        #[cfg(feature = "private-key-jwt")]
        if self.client_key.is_some() {
            return Some(ClientAuthMethod::PrivateKeyJwt);
        }
        if self.client_secret.is_none() {
            return Some(ClientAuthMethod::None);
        }
        [
            ClientAuthMethod::ClientSecretPost,
            ClientAuthMethod::ClientSecretBasic,
        ]
        .into_iter()
        .find(|method| metadata.supports_auth_method(*method))
    }

    /// A refresh token that expires within this margin (default 30 s) is not used: the
    /// refresher logs in instead of sending a refresh that would fail.
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// The largest token response (and discovery document) accepted (default 64 KiB).
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response = bytes;
        self
    }

    /// Builds the refresher over `client`, any tower HTTP client service, so the token
    /// endpoint is reached with your connector, TLS and timeouts.
    ///
    /// Fails with [`ErrorKind::Config`] if a URL is not absolute, or would send credentials
    /// over plain HTTP to a host other than this machine; if the client id is empty; if the
    /// client authentication method lacks its credential; if an extra parameter or header
    /// would replace one of the refresher's own; or if the builder was started from an issuer
    /// and not given its metadata ([`discover`](Self::discover)).
    pub fn build<C>(self, client: C) -> Result<OAuth2Refresher<C>, Error> {
        let Some(token_url) = &self.token_url else {
            return Err(Error::new(
                ErrorKind::Config,
                "the builder knows only the issuer: call discover() (or metadata()) to find the token endpoint",
            ));
        };
        let token_url = endpoint_url(token_url, Endpoint::Token)?;
        let revocation_url = self
            .revocation_url
            .as_deref()
            .map(|url| endpoint_url(url, Endpoint::Revocation))
            .transpose()?;
        let logout_url = self
            .logout_url
            .as_deref()
            .map(|url| endpoint_url(url, Endpoint::Logout))
            .transpose()?;
        if self.client_id.is_empty() {
            return Err(Error::new(ErrorKind::Config, "the client id is empty"));
        }
        if self.no_secret_method {
            return Err(Error::new(
                ErrorKind::Config,
                "the server lists neither client_secret_post nor client_secret_basic; choose a method with client_auth()",
            ));
        }
        for (name, _) in self.login_params.iter().chain(&self.refresh_params) {
            if name.is_empty() || RESERVED.contains(&name.as_str()) {
                return Err(Error::new(
                    ErrorKind::Config,
                    "an extra parameter is empty or one the refresher sets itself (grant_type, client_id, scope, …)",
                ));
            }
        }
        #[cfg(feature = "private-key-jwt")]
        let has_key = self.client_key.is_some();
        #[cfg(not(feature = "private-key-jwt"))]
        let has_key = false;
        let method = self.client_auth.unwrap_or(if has_key {
            ClientAuthMethod::PrivateKeyJwt
        } else if self.client_secret.is_some() {
            ClientAuthMethod::ClientSecretPost
        } else {
            ClientAuthMethod::None
        });
        let reserved_header = [CONTENT_TYPE, CONTENT_LENGTH, HOST]
            .iter()
            .any(|name| self.headers.contains_key(name))
            || (method == ClientAuthMethod::ClientSecretBasic
                && self.headers.contains_key(AUTHORIZATION));
        #[cfg(feature = "dpop")]
        let reserved_header =
            reserved_header || (self.dpop.is_some() && self.headers.contains_key("dpop"));
        if reserved_header {
            return Err(Error::new(
                ErrorKind::Config,
                "an extra header is one the refresher sets itself (Content-Type, Content-Length, Host, Authorization with client_secret_basic, DPoP with a DPoP key)",
            ));
        }
        let credentials = Credentials::new(
            method,
            self.client_secret,
            #[cfg(feature = "private-key-jwt")]
            self.client_key,
        )?;
        let config = Config {
            token_url,
            revocation_url,
            logout_url,
            client_id: self.client_id,
            credentials,
            login: self.login,
            scope: self.scope,
            refresh_scope: self.refresh_scope,
            login_params: self.login_params,
            refresh_params: self.refresh_params,
            headers: self.headers,
            refresh_margin: self.refresh_margin,
            max_response: self.max_response,
            #[cfg(feature = "dpop")]
            dpop: self.dpop,
            #[cfg(feature = "dpop")]
            bearer_fallback: self.bearer_fallback,
        };
        Ok(OAuth2Refresher::from_parts(client, Arc::new(config)))
    }

    /// Builds the refresher over a plain-HTTP hyper-util client: for a token endpoint on this
    /// machine (tests, a local identity provider).
    pub fn build_http(self) -> Result<OAuth2Refresher<super::HttpClient>, Error> {
        self.build(super::http_client())
    }

    /// Builds the refresher over [`https_client`](super::https_client) (feature `rustls`: ring
    /// and Mozilla's roots; see there for the other choices).
    #[cfg(feature = "https")]
    #[cfg_attr(docsrs, doc(cfg(feature = "https")))]
    pub fn build_https(self) -> Result<OAuth2Refresher<super::HttpsClient>, Error> {
        self.build(super::https_client()?)
    }
}

impl fmt::Debug for OAuth2RefresherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("OAuth2RefresherBuilder");
        debug
            .field("token_url", &self.token_url)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("client_auth", &self.client_auth);
        #[cfg(feature = "private-key-jwt")]
        debug.field("client_key", &self.client_key);
        #[cfg(feature = "dpop")]
        debug
            .field("dpop", &self.dpop)
            .field("bearer_fallback", &self.bearer_fallback);
        debug
            .field("login", &self.login.as_ref().map(|_| "configured"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
