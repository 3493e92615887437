//! The suite's path for an identity provider given by URL (a real Keycloak realm, say), where
//! no server-side counter can be read: what is checked is what a user sees.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `INTEROP_TOKEN_URL` | the token endpoint (https, or http on this machine) |
//! | `INTEROP_ISSUER` | instead of the token URL: the issuer, whose discovery document gives the token and revocation endpoints |
//! | `INTEROP_API_URL` | a URL that answers 200 to a valid access token, e.g. the userinfo endpoint |
//! | `INTEROP_CLIENT_ID`, `INTEROP_CLIENT_SECRET` | the client (no secret: a public client) |
//! | `INTEROP_CLIENT_AUTH` | optional: `client_secret_post` (the default with a secret) or `client_secret_basic` |
//! | `INTEROP_USERNAME`, `INTEROP_PASSWORD` | a user allowed the password grant |
//! | `INTEROP_SCOPE` | optional scope to ask for |
//! | `INTEROP_REVOCATION_URL`, `INTEROP_LOGOUT_URL` | optional: the revocation endpoint (discovery finds it too) or Keycloak's logout endpoint; then the run also logs out and checks that the refresh token is refused |

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::Layer;
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::oauth2::{
    ClientAuthMethod, ErrorKind, OAuth2Refresher, OAuth2RefresherBuilder,
};

// An external server is usually reached over TLS; without the `rustls` feature only http on
// this machine can be used.
#[cfg(feature = "rustls")]
type Client = tower_auth_refresh::oauth2::HttpsClient;
#[cfg(not(feature = "rustls"))]
type Client = tower_auth_refresh::oauth2::HttpClient;

#[cfg(feature = "rustls")]
fn http_client() -> Client {
    tower_auth_refresh::oauth2::https_client().expect("TLS client")
}

#[cfg(not(feature = "rustls"))]
fn http_client() -> Client {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    Client::builder(TokioExecutor::new()).build_http()
}

/// An identity provider and API given by the `INTEROP_*` variables.
#[derive(Clone)]
pub struct Target {
    /// The token URL, or the issuer to discover it from.
    endpoint: Endpoint,
    api_url: String,
    client_id: String,
    client_secret: Option<String>,
    username: String,
    password: String,
    scope: Option<String>,
    client_auth: Option<ClientAuthMethod>,
    revocation_url: Option<String>,
    logout_url: Option<String>,
}

#[derive(Clone)]
enum Endpoint {
    Token(String),
    Issuer(String),
}

/// What the run saw.
#[derive(Debug)]
pub struct Report {
    pub generations: (u64, u64),
    pub has_refresh_token: bool,
    pub wrong_password_code: Option<String>,
    pub wrong_secret_code: Option<String>,
    /// With a revocation or logout endpoint: the error code refusing the revoked refresh token.
    pub revoked_refresh_code: Option<String>,
}

impl Target {
    /// `Ok(None)` when `INTEROP_TOKEN_URL` is unset; an error naming every other required
    /// variable that is missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let endpoint = match (lookup("INTEROP_TOKEN_URL"), lookup("INTEROP_ISSUER")) {
            (Some(token_url), None) => Endpoint::Token(token_url),
            (None, Some(issuer)) => Endpoint::Issuer(issuer),
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err("set INTEROP_TOKEN_URL or INTEROP_ISSUER, not both".into());
            }
        };
        let client_auth = match lookup("INTEROP_CLIENT_AUTH") {
            None => None,
            Some(name) => Some(
                ClientAuthMethod::from_name(&name)
                    .ok_or_else(|| format!("INTEROP_CLIENT_AUTH: unknown method {name:?}"))?,
            ),
        };
        let required = [
            "INTEROP_API_URL",
            "INTEROP_CLIENT_ID",
            "INTEROP_USERNAME",
            "INTEROP_PASSWORD",
        ];
        let missing: Vec<_> = required
            .iter()
            .filter(|name| lookup(name).is_none())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "INTEROP_TOKEN_URL is set but these are not: {missing:?}"
            ));
        }
        let value = |name: &str| lookup(name).unwrap_or_default();
        Ok(Some(Self {
            endpoint,
            client_auth,
            revocation_url: lookup("INTEROP_REVOCATION_URL"),
            logout_url: lookup("INTEROP_LOGOUT_URL"),
            api_url: value("INTEROP_API_URL"),
            client_id: value("INTEROP_CLIENT_ID"),
            client_secret: lookup("INTEROP_CLIENT_SECRET"),
            username: value("INTEROP_USERNAME"),
            password: value("INTEROP_PASSWORD"),
            scope: lookup("INTEROP_SCOPE"),
        }))
    }

    fn builder(&self, password: &str, secret: Option<&str>) -> OAuth2RefresherBuilder {
        let mut builder = match &self.endpoint {
            Endpoint::Token(url) => OAuth2Refresher::builder(url, &self.client_id),
            Endpoint::Issuer(issuer) => OAuth2Refresher::issuer(issuer, &self.client_id),
        }
        .password(&self.username, password);
        if let Some(secret) = secret {
            builder = builder.client_secret(secret);
        }
        if let Some(scope) = &self.scope {
            builder = builder.scope(scope);
        }
        if let Some(method) = self.client_auth {
            builder = builder.client_auth(method);
        }
        if let Some(url) = &self.revocation_url {
            builder = builder.revocation_url(url);
        }
        if let Some(url) = &self.logout_url {
            builder = builder.logout_url(url);
        }
        builder
    }

    /// Builds, discovering first when the target is an issuer.
    async fn refresher(&self, builder: OAuth2RefresherBuilder) -> Result<Refresher, String> {
        match self.endpoint {
            Endpoint::Token(_) => builder.build(http_client()),
            Endpoint::Issuer(_) => builder.discover(http_client()).await,
        }
        .map_err(|error| error.to_string())
    }

    fn revokes(&self) -> bool {
        self.revocation_url.is_some()
            || self.logout_url.is_some()
            || matches!(self.endpoint, Endpoint::Issuer(_))
    }
}

type Refresher = OAuth2Refresher<Client>;

/// Login, a call to the API, a forced refresh, a call with the new token; then a wrong
/// password and (for a confidential client) a wrong secret, each a typed credentials error.
/// Four token-endpoint calls and two API calls in all.
pub async fn run(target: &Target) -> Result<Report, String> {
    let secret = target.client_secret.as_deref();
    let refresher = target
        .refresher(target.builder(&target.password, secret))
        .await?;
    let layer = AuthLayer::new(refresher.clone());
    let handle = layer.handle();
    let service = layer.layer(http_client());
    let call = || async {
        let request = Request::get(&target.api_url)
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = service
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| e.to_string())?;
        match response.status() {
            StatusCode::OK => Ok(()),
            status => Err(format!("the API answered {status}")),
        }
    };

    let login = handle.token().await.map_err(|e| format!("login: {e}"))?;
    call().await?;
    let refreshed = handle
        .refresh()
        .await
        .map_err(|e| format!("refresh: {e}"))?;
    call().await?;

    // Logging out at the provider: the refresh token it revoked is refused afterwards.
    let revoked_refresh_code = match target.revokes() {
        false => None,
        true => {
            let tokens = refresher.login().await.map_err(|e| format!("login: {e}"))?;
            refresher
                .revoke(&tokens)
                .await
                .map_err(|e| format!("revocation: {e}"))?;
            match refresher.refresh(&tokens).await {
                Ok(_) => return Err("a revoked refresh token still refreshes".into()),
                Err(error) if error.kind() == ErrorKind::RefreshTokenRejected => {
                    error.error_code().map(str::to_owned)
                }
                Err(error) => return Err(format!("refresh after revocation: {error}")),
            }
        }
    };

    let wrong_password = refused_login(
        target,
        target.builder("not the password", secret),
        ErrorKind::CredentialsRejected,
    )
    .await;
    let wrong_secret_code = match secret {
        None => None,
        Some(_) => refused_login(
            target,
            target.builder(&target.password, Some("not the secret")),
            ErrorKind::ClientRejected,
        )
        .await
        .map_err(|error| format!("wrong client secret: {error}"))?,
    };
    Ok(Report {
        generations: (login.generation(), refreshed.generation()),
        has_refresh_token: refreshed.has_refresh_token(),
        wrong_password_code: wrong_password.map_err(|error| format!("wrong password: {error}"))?,
        wrong_secret_code,
        revoked_refresh_code,
    })
}

/// A login that must be refused as `expected`; returns the server's error code.
async fn refused_login(
    target: &Target,
    builder: OAuth2RefresherBuilder,
    expected: ErrorKind,
) -> Result<Option<String>, String> {
    let refresher = target.refresher(builder).await?;
    match refresher.login().await {
        Ok(_) => Err("logged in".into()),
        Err(error) if error.kind() == expected => Ok(error.error_code().map(str::to_owned)),
        Err(error) => Err(error.to_string()),
    }
}
