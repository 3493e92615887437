//! The refresher's configuration, fixed when it is built and shared by its clones and its
//! revokers.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, Uri};

use super::client_auth::Credentials;
use super::error::{Error, ErrorKind};
use crate::token::{RefreshToken, Secret};

/// Token responses larger than this are refused by default.
pub(super) const DEFAULT_MAX_RESPONSE: usize = 64 * 1024;

/// How the refresher logs in when it has no usable refresh token.
pub(super) enum Login {
    /// The resource owner password grant (MangaDex personal clients).
    Password { username: String, password: Secret },
    /// The client credentials grant.
    ClientCredentials,
}

pub(super) struct Config {
    pub(super) token_url: Uri,
    pub(super) revocation_url: Option<Uri>,
    pub(super) logout_url: Option<Uri>,
    pub(super) client_id: String,
    pub(super) credentials: Credentials,
    pub(super) login: Option<Login>,
    pub(super) scope: Option<String>,
    pub(super) refresh_scope: Option<String>,
    pub(super) login_params: Vec<(String, String)>,
    pub(super) refresh_params: Vec<(String, String)>,
    pub(super) headers: HeaderMap,
    pub(super) refresh_margin: Duration,
    pub(super) max_response: usize,
    /// The DPoP key every token request proves, and the nonces it learnt.
    #[cfg(feature = "dpop")]
    pub(super) dpop: Option<crate::dpop::Dpop>,
    /// Whether a Bearer answer to a DPoP client is taken (a server that ignores DPoP).
    #[cfg(feature = "dpop")]
    pub(super) bearer_fallback: bool,
}

impl Config {
    #[cfg(test)]
    pub(super) fn for_tests() -> Self {
        Self {
            token_url: Uri::from_static("http://127.0.0.1/token"),
            revocation_url: None,
            logout_url: None,
            client_id: String::new(),
            credentials: Credentials::None,
            login: None,
            scope: None,
            refresh_scope: None,
            login_params: Vec::new(),
            refresh_params: Vec::new(),
            headers: HeaderMap::new(),
            refresh_margin: Duration::from_secs(30),
            max_response: DEFAULT_MAX_RESPONSE,
            #[cfg(feature = "dpop")]
            dpop: None,
            #[cfg(feature = "dpop")]
            bearer_fallback: false,
        }
    }

    /// What a request may send that must never come back in an error: the client secret, the
    /// password, and the token `presented`.
    pub(super) fn secrets<'a>(&'a self, presented: Option<&'a str>) -> Vec<&'a str> {
        let mut secrets = Vec::with_capacity(3);
        secrets.extend(self.credentials.secret());
        if let Some(Login::Password { password, .. }) = &self.login {
            secrets.push(password.secret());
        }
        secrets.extend(presented);
        secrets
    }

    /// The refresh token's text, for [`secrets`](Self::secrets).
    pub(super) fn presented(token: Option<&RefreshToken>) -> Option<&str> {
        token.map(RefreshToken::secret)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let login = match &self.login {
            None => "none",
            Some(Login::Password { .. }) => "password",
            Some(Login::ClientCredentials) => "client_credentials",
        };
        let names = |params: &[(String, String)]| -> Vec<String> {
            params.iter().map(|(name, _)| name.clone()).collect()
        };
        f.debug_struct("OAuth2Config")
            .field("token_url", &self.token_url)
            .field("revocation_url", &self.revocation_url)
            .field("logout_url", &self.logout_url)
            .field("client_id", &self.client_id)
            .field("client_auth", &self.credentials)
            .field("login", &login)
            .field("scope", &self.scope)
            .field("refresh_scope", &self.refresh_scope)
            // Names only: a user may pass a value that is a credential of some kind.
            .field("login_params", &names(&self.login_params))
            .field("refresh_params", &names(&self.refresh_params))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("refresh_margin", &self.refresh_margin)
            .field("dpop", &self.dpop_debug())
            .finish()
    }
}

impl Config {
    /// The DPoP key's `Debug` (algorithm and thumbprint), or `None`.
    fn dpop_debug(&self) -> Option<&dyn fmt::Debug> {
        #[cfg(feature = "dpop")]
        return self.dpop.as_ref().map(|dpop| dpop as &dyn fmt::Debug);
        #[cfg(not(feature = "dpop"))]
        None
    }
}

/// Which URL of the identity provider a check is about, for its error message.
#[derive(Clone, Copy)]
pub(super) enum Endpoint {
    Token,
    Revocation,
    Logout,
    Issuer,
}

/// Parses one of the identity provider's URLs: absolute, and `https` unless it is on this
/// machine, because credentials go there.
pub(super) fn endpoint_url(url: &str, endpoint: Endpoint) -> Result<Uri, Error> {
    use Endpoint::*;
    let (invalid, no_host, plain, scheme) = match endpoint {
        Token => (
            "the token URL is not a valid URL",
            "the token URL has no host",
            "the token URL would send credentials over plain HTTP to another machine; use https",
            "the token URL must start with https://",
        ),
        Revocation => (
            "the revocation URL is not a valid URL",
            "the revocation URL has no host",
            "the revocation URL would send credentials over plain HTTP to another machine; use https",
            "the revocation URL must start with https://",
        ),
        Logout => (
            "the logout URL is not a valid URL",
            "the logout URL has no host",
            "the logout URL would send credentials over plain HTTP to another machine; use https",
            "the logout URL must start with https://",
        ),
        Issuer => (
            "the issuer is not a valid URL",
            "the issuer has no host",
            "the issuer is plain HTTP on another machine; discovery needs https (or http on this machine)",
            "the issuer must start with https://",
        ),
    };
    let parsed: Uri = url
        .parse()
        .map_err(|error| Error::new(ErrorKind::Config, invalid).with_source(error))?;
    let host = parsed
        .host()
        .ok_or_else(|| Error::new(ErrorKind::Config, no_host))?;
    match parsed.scheme_str() {
        Some("https") => Ok(parsed),
        Some("http") if is_loopback(host) => Ok(parsed),
        Some("http") => Err(Error::new(ErrorKind::Config, plain)),
        _ => Err(Error::new(ErrorKind::Config, scheme)),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
