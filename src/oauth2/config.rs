//! The refresher's configuration and its builder.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;

use super::error::{Error, ErrorKind};
use super::refresher::OAuth2Refresher;
use crate::token::{RefreshToken, Secret};

/// Token responses larger than this are refused by default.
const DEFAULT_MAX_RESPONSE: usize = 64 * 1024;

/// How the refresher logs in when it has no usable refresh token.
pub(super) enum Login {
    /// The resource owner password grant (MangaDex personal clients).
    Password { username: String, password: Secret },
    /// The client credentials grant.
    ClientCredentials,
}

pub(super) struct Config {
    pub(super) token_url: Uri,
    pub(super) client_id: String,
    pub(super) client_secret: Option<Secret>,
    pub(super) login: Option<Login>,
    pub(super) scope: Option<String>,
    pub(super) refresh_scope: Option<String>,
    pub(super) refresh_margin: Duration,
    pub(super) max_response: usize,
}

impl Config {
    #[cfg(test)]
    pub(super) fn for_tests() -> Self {
        Self {
            token_url: Uri::from_static("http://127.0.0.1/token"),
            client_id: String::new(),
            client_secret: None,
            login: None,
            scope: None,
            refresh_scope: None,
            refresh_margin: Duration::from_secs(30),
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }

    /// What a request may send that must never come back in an error: the client secret, the
    /// password, and the refresh token `presented`.
    pub(super) fn secrets<'a>(&'a self, presented: Option<&'a RefreshToken>) -> Vec<&'a str> {
        let mut secrets = Vec::with_capacity(3);
        secrets.extend(self.client_secret.as_ref().map(Secret::secret));
        if let Some(Login::Password { password, .. }) = &self.login {
            secrets.push(password.secret());
        }
        secrets.extend(presented.map(RefreshToken::secret));
        secrets
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let login = match &self.login {
            None => "none",
            Some(Login::Password { .. }) => "password",
            Some(Login::ClientCredentials) => "client_credentials",
        };
        f.debug_struct("OAuth2Config")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("login", &login)
            .field("scope", &self.scope)
            .field("refresh_scope", &self.refresh_scope)
            .field("refresh_margin", &self.refresh_margin)
            .finish()
    }
}

/// Builds an [`OAuth2Refresher`]. Start with [`OAuth2Refresher::builder`].
pub struct OAuth2RefresherBuilder {
    token_url: String,
    client_id: String,
    client_secret: Option<Secret>,
    login: Option<Login>,
    scope: Option<String>,
    refresh_scope: Option<String>,
    refresh_margin: Duration,
    max_response: usize,
}

impl OAuth2RefresherBuilder {
    pub(super) fn new(token_url: String, client_id: String) -> Self {
        Self {
            token_url,
            client_id,
            client_secret: None,
            login: None,
            scope: None,
            refresh_scope: None,
            refresh_margin: Duration::from_secs(30),
            max_response: DEFAULT_MAX_RESPONSE,
        }
    }

    /// The client secret, sent in the form body (`client_secret_post`), as Keycloak and
    /// MangaDex personal clients expect.
    pub fn client_secret(mut self, secret: impl Into<Secret>) -> Self {
        self.client_secret = Some(secret.into());
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

    /// A refresh token that expires within this margin (default 30 s) is not used: the
    /// refresher logs in instead of sending a refresh that would fail.
    pub fn refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// The largest token response accepted (default 64 KiB).
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response = bytes;
        self
    }

    /// Builds the refresher over `client`, any tower HTTP client service, so the token
    /// endpoint is reached with your connector, TLS and timeouts.
    ///
    /// Fails with [`ErrorKind::Config`] if the token URL is not an absolute URL, or would send
    /// credentials over plain HTTP to a host other than this machine.
    pub fn build<C>(self, client: C) -> Result<OAuth2Refresher<C>, Error> {
        let token_url: Uri = self.token_url.parse().map_err(|error| {
            Error::new(ErrorKind::Config, "the token URL is not a valid URL").with_source(error)
        })?;
        let host = token_url
            .host()
            .ok_or_else(|| Error::new(ErrorKind::Config, "the token URL has no host"))?;
        match token_url.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            Some("http") => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "the token URL would send credentials over plain HTTP to another machine; use https",
                ));
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::Config,
                    "the token URL must start with https://",
                ));
            }
        }
        if self.client_id.is_empty() {
            return Err(Error::new(ErrorKind::Config, "the client id is empty"));
        }
        let config = Config {
            token_url,
            client_id: self.client_id,
            client_secret: self.client_secret,
            login: self.login,
            scope: self.scope,
            refresh_scope: self.refresh_scope,
            refresh_margin: self.refresh_margin,
            max_response: self.max_response,
        };
        Ok(OAuth2Refresher::from_parts(client, Arc::new(config)))
    }

    /// Builds the refresher over a plain-HTTP hyper-util client: for a token endpoint on this
    /// machine (tests, a local identity provider).
    pub fn build_http(self) -> Result<OAuth2Refresher<super::HttpClient>, Error> {
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::TokioExecutor;
        self.build(Client::builder(TokioExecutor::new()).build_http())
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
        f.debug_struct("OAuth2RefresherBuilder")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("login", &self.login.as_ref().map(|_| "configured"))
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(url: &str) -> Result<OAuth2Refresher<()>, Error> {
        OAuth2Refresher::builder(url, "client").build(())
    }

    #[test]
    fn plain_http_only_to_this_machine() {
        for url in [
            "https://auth.mangadex.org/realms/mangadex/protocol/openid-connect/token",
            "http://127.0.0.1:8080/token",
            "http://127.5.0.1/token",
            "http://localhost/token",
            "http://[::1]:9000/token",
        ] {
            assert!(build(url).is_ok(), "{url}");
        }
        for url in [
            "http://auth.mangadex.org/token",
            "http://10.0.0.1/token",
            "ftp://127.0.0.1/token",
            "/token",
            "not a url",
        ] {
            let error = build(url).err().unwrap();
            assert_eq!(error.kind(), ErrorKind::Config, "{url}");
        }
        let error = OAuth2Refresher::builder("https://a/t", "")
            .build(())
            .err()
            .unwrap();
        assert_eq!(error.kind(), ErrorKind::Config);
    }

    #[test]
    fn debug_shows_no_secret() {
        let builder = OAuth2Refresher::builder("https://a/t", "client")
            .client_secret("client-secret-value")
            .password("reader", "password-value");
        let refresher = OAuth2Refresher::builder("https://a/t", "client")
            .client_secret("client-secret-value")
            .password("reader", "password-value")
            .build(())
            .unwrap();
        let shown = format!("{builder:?} {refresher:?}");
        assert!(!shown.contains("value"), "{shown}");
        assert!(
            shown.contains("reader") || shown.contains("password"),
            "{shown}"
        );
    }
}
