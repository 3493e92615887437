//! The suite's path for an identity provider given by URL (a real Keycloak realm, say), where
//! no server-side counter can be read: what is checked is what a user sees.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `INTEROP_TOKEN_URL` | the token endpoint (https, or http on this machine) |
//! | `INTEROP_API_URL` | a URL that answers 200 to a valid access token, e.g. the userinfo endpoint |
//! | `INTEROP_CLIENT_ID`, `INTEROP_CLIENT_SECRET` | the client (no secret: a public client) |
//! | `INTEROP_USERNAME`, `INTEROP_PASSWORD` | a user allowed the password grant |
//! | `INTEROP_SCOPE` | optional scope to ask for |

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::Layer;
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::oauth2::{ErrorKind, OAuth2Refresher, OAuth2RefresherBuilder};

// An external server is usually reached over TLS; without the `rustls` feature only http on
// this machine can be used.
#[cfg(feature = "rustls")]
fn http_client() -> tower_auth_refresh::oauth2::HttpsClient {
    tower_auth_refresh::oauth2::https_client().expect("TLS client")
}

#[cfg(not(feature = "rustls"))]
fn http_client() -> tower_auth_refresh::oauth2::HttpClient {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    Client::builder(TokioExecutor::new()).build_http()
}

/// An identity provider and API given by the `INTEROP_*` variables.
#[derive(Clone)]
pub struct Target {
    token_url: String,
    api_url: String,
    client_id: String,
    client_secret: Option<String>,
    username: String,
    password: String,
    scope: Option<String>,
}

/// What the run saw.
#[derive(Debug)]
pub struct Report {
    pub generations: (u64, u64),
    pub has_refresh_token: bool,
    pub wrong_password_code: Option<String>,
    pub wrong_secret_code: Option<String>,
}

impl Target {
    /// `Ok(None)` when `INTEROP_TOKEN_URL` is unset; an error naming every other required
    /// variable that is missing.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let Some(token_url) = lookup("INTEROP_TOKEN_URL") else {
            return Ok(None);
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
            token_url,
            api_url: value("INTEROP_API_URL"),
            client_id: value("INTEROP_CLIENT_ID"),
            client_secret: lookup("INTEROP_CLIENT_SECRET"),
            username: value("INTEROP_USERNAME"),
            password: value("INTEROP_PASSWORD"),
            scope: lookup("INTEROP_SCOPE"),
        }))
    }

    fn builder(&self, password: &str, secret: Option<&str>) -> OAuth2RefresherBuilder {
        let mut builder = OAuth2Refresher::builder(&self.token_url, &self.client_id)
            .password(&self.username, password);
        if let Some(secret) = secret {
            builder = builder.client_secret(secret);
        }
        if let Some(scope) = &self.scope {
            builder = builder.scope(scope);
        }
        builder
    }
}

/// Login, a call to the API, a forced refresh, a call with the new token; then a wrong
/// password and (for a confidential client) a wrong secret, each a typed credentials error.
/// Four token-endpoint calls and two API calls in all.
pub async fn run(target: &Target) -> Result<Report, String> {
    let secret = target.client_secret.as_deref();
    let refresher = target
        .builder(&target.password, secret)
        .build(http_client())
        .map_err(|error| error.to_string())?;
    let layer = AuthLayer::new(refresher);
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

    let wrong_password = refused_login(
        target.builder("not the password", secret),
        ErrorKind::CredentialsRejected,
    )
    .await;
    let wrong_secret_code = match secret {
        None => None,
        Some(_) => refused_login(
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
    })
}

/// A login that must be refused as `expected`; returns the server's error code.
async fn refused_login(
    builder: OAuth2RefresherBuilder,
    expected: ErrorKind,
) -> Result<Option<String>, String> {
    let refresher = builder
        .build(http_client())
        .map_err(|error| error.to_string())?;
    match refresher.login().await {
        Ok(_) => Err("logged in".into()),
        Err(error) if error.kind() == expected => Ok(error.error_code().map(str::to_owned)),
        Err(error) => Err(error.to_string()),
    }
}
