//! Discovery: an identity provider's endpoints and client authentication methods, read from
//! its metadata (OpenID Connect Discovery 1.0 §4, RFC 8414 §3).

use bytes::Bytes;
use http::header::{ACCEPT, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::Full;
use serde::Deserialize;
use tower::Service;

use super::builder::OAuth2RefresherBuilder;
use super::client_auth::ClientAuthMethod;
use super::config::{Endpoint, endpoint_url};
use super::error::{Error, ErrorKind};
use super::refresher::OAuth2Refresher;
use super::response::{self, Grant};
use super::transport;
use crate::refresh::BoxError;

/// What the refresher uses of an identity provider's metadata.
///
/// Fetched by [`OAuth2RefresherBuilder::discover`], or by
/// [`ProviderMetadata::discover`] for a builder of your own
/// ([`OAuth2RefresherBuilder::metadata`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderMetadata {
    issuer: String,
    token_endpoint: String,
    revocation_endpoint: Option<String>,
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Document {
    issuer: Option<serde_json::Value>,
    token_endpoint: Option<serde_json::Value>,
    revocation_endpoint: Option<serde_json::Value>,
    token_endpoint_auth_methods_supported: Option<serde_json::Value>,
}

impl ProviderMetadata {
    /// Fetches the metadata of `issuer` over `client`: `<issuer>/.well-known/openid-configuration`,
    /// and where that is not found (404, 410), RFC 8414's
    /// `/.well-known/oauth-authorization-server<issuer path>`.
    ///
    /// Fails with [`ErrorKind::Config`] for an issuer that is not `https` (plain `http` is
    /// allowed on this machine only), no document at either place, or a document whose
    /// `issuer` is not `issuer`, a trailing `/` aside (OpenID Connect Discovery §4.3: a
    /// mix-up, or a wrong URL);
    /// [`ErrorKind::InvalidResponse`] for a document that is not JSON or has no
    /// `token_endpoint`; [`ErrorKind::Transient`] when the server is unreachable or answers
    /// 5xx / 429. At most 64 KiB are read.
    pub async fn discover<C, ResB>(issuer: &str, client: &C) -> Result<Self, Error>
    where
        C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone,
        C::Error: Into<BoxError>,
        ResB: Body,
        ResB::Error: Into<BoxError>,
    {
        Self::fetch(issuer, client, super::config::DEFAULT_MAX_RESPONSE).await
    }

    pub(super) async fn fetch<C, ResB>(issuer: &str, client: &C, max: usize) -> Result<Self, Error>
    where
        C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone,
        C::Error: Into<BoxError>,
        ResB: Body,
        ResB::Error: Into<BoxError>,
    {
        let parsed = endpoint_url(issuer, Endpoint::Issuer)?;
        let mut last = None;
        for url in well_known(issuer, &parsed)? {
            let answer = transport::send(client, Grant::Discovery, get(url), max).await?;
            if answer.status.is_success() {
                let body = answer.body.ok_or_else(|| {
                    invalid("the discovery document is too large").with_status(answer.status)
                })?;
                return Self::from_document(issuer, &body).map_err(|error| {
                    error
                        .with_grant(Grant::Discovery)
                        .with_status(answer.status)
                });
            }
            if !matches!(answer.status, StatusCode::NOT_FOUND | StatusCode::GONE) {
                return Err(response::classify(
                    Grant::Discovery,
                    answer.status,
                    &answer.headers,
                    answer.body.as_deref().unwrap_or_default(),
                    &[],
                )
                .with_grant(Grant::Discovery)
                .with_status(answer.status));
            }
            last = Some(answer.status);
        }
        let mut error = Error::new(
            ErrorKind::Config,
            "the issuer has no discovery document (neither openid-configuration nor oauth-authorization-server)",
        )
        .with_grant(Grant::Discovery);
        if let Some(status) = last {
            error = error.with_status(status);
        }
        Err(error)
    }

    /// Reads a discovery document fetched for `issuer`, with the checks
    /// [`discover`](Self::discover) makes.
    ///
    /// ```
    /// use tower_auth_refresh::oauth2::{ClientAuthMethod, ErrorKind, ProviderMetadata};
    ///
    /// let document = br#"{"issuer":"https://idp.example/realms/demo",
    ///     "token_endpoint":"https://idp.example/realms/demo/protocol/openid-connect/token",
    ///     "token_endpoint_auth_methods_supported":["client_secret_basic","private_key_jwt"]}"#;
    /// let metadata = ProviderMetadata::from_document("https://idp.example/realms/demo", document)?;
    /// assert!(metadata.supports_auth_method(ClientAuthMethod::ClientSecretBasic));
    /// assert!(!metadata.supports_auth_method(ClientAuthMethod::ClientSecretPost));
    ///
    /// let other = ProviderMetadata::from_document("https://idp.example/realms/other", document);
    /// assert_eq!(other.unwrap_err().kind(), ErrorKind::Config);
    /// # Ok::<(), tower_auth_refresh::oauth2::Error>(())
    /// ```
    pub fn from_document(issuer: &str, document: &[u8]) -> Result<Self, Error> {
        if document.trim_ascii_start().first() != Some(&b'{') {
            return Err(invalid("the discovery document is not a JSON object"));
        }
        let document: Document = serde_json::from_slice(document).map_err(|error| {
            invalid("the discovery document is not the expected JSON").with_source(error)
        })?;
        let text = |value: Option<serde_json::Value>| match value {
            Some(serde_json::Value::String(text)) if !text.is_empty() => Some(text),
            _ => None,
        };
        let claimed =
            text(document.issuer).ok_or_else(|| invalid("the discovery document has no issuer"))?;
        if claimed.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(Error::new(
                ErrorKind::Config,
                "the discovery document is for another issuer than the one asked for",
            ));
        }
        let token_endpoint = text(document.token_endpoint)
            .ok_or_else(|| invalid("the discovery document has no token_endpoint"))?;
        let methods = match document.token_endpoint_auth_methods_supported {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::Array(items)) => Some(
                items
                    .into_iter()
                    .filter_map(|item| item.as_str().map(str::to_owned))
                    .collect(),
            ),
            Some(_) => {
                return Err(invalid(
                    "the discovery document's token_endpoint_auth_methods_supported is not a list",
                ));
            }
        };
        Ok(Self {
            issuer: claimed,
            token_endpoint,
            revocation_endpoint: text(document.revocation_endpoint),
            token_endpoint_auth_methods_supported: methods,
        })
    }

    /// The issuer, as the document states it.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint.
    pub fn token_endpoint(&self) -> &str {
        &self.token_endpoint
    }

    /// The revocation endpoint (RFC 7009), if the server has one.
    pub fn revocation_endpoint(&self) -> Option<&str> {
        self.revocation_endpoint.as_deref()
    }

    /// `token_endpoint_auth_methods_supported` as listed, if it is.
    pub fn token_endpoint_auth_methods(&self) -> Option<&[String]> {
        self.token_endpoint_auth_methods_supported.as_deref()
    }

    /// Whether the server supports `method` at its token endpoint: listed, or, with no list,
    /// `client_secret_basic` (the default of RFC 8414 §2). `none` (a public client) counts as
    /// supported always: Keycloak, for one, serves public clients without listing it.
    pub fn supports_auth_method(&self, method: ClientAuthMethod) -> bool {
        if method == ClientAuthMethod::None {
            return true;
        }
        match &self.token_endpoint_auth_methods_supported {
            Some(methods) => methods.iter().any(|name| name == method.as_str()),
            None => method == ClientAuthMethod::ClientSecretBasic,
        }
    }
}

/// The two places a discovery document may be, in the order tried.
fn well_known(issuer: &str, parsed: &Uri) -> Result<[Uri; 2], Error> {
    let trimmed = issuer.trim_end_matches('/');
    let path = parsed.path().trim_end_matches('/');
    let authority = parsed.authority().map(|a| a.as_str()).unwrap_or_default();
    let scheme = parsed.scheme_str().unwrap_or("https");
    let parse = |url: String| {
        url.parse::<Uri>().map_err(|error| {
            Error::new(ErrorKind::Config, "the issuer makes no discovery URL").with_source(error)
        })
    };
    Ok([
        // OpenID Connect Discovery §4: appended to the issuer.
        parse(format!("{trimmed}/.well-known/openid-configuration"))?,
        // RFC 8414 §3.1: inserted between the host and the issuer's path.
        parse(format!(
            "{scheme}://{authority}/.well-known/oauth-authorization-server{path}"
        ))?,
    ])
}

fn get(url: Uri) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::default());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = url;
    request
        .headers_mut()
        .insert(ACCEPT, HeaderValue::from_static("application/json"));
    request
}

fn invalid(message: &'static str) -> Error {
    Error::new(ErrorKind::InvalidResponse, message).with_grant(Grant::Discovery)
}

impl OAuth2RefresherBuilder {
    /// Reads the issuer's discovery document over `client` (the client the refresher will use),
    /// takes the token endpoint, the revocation endpoint and a client authentication method
    /// from it ([`metadata`](Self::metadata)), and builds the refresher over `client`. Start
    /// the builder with [`OAuth2Refresher::issuer`].
    ///
    /// Fails as [`ProviderMetadata::discover`] and [`build`](Self::build) do; a builder started
    /// with a token URL is [`ErrorKind::Config`].
    ///
    /// ```no_run
    /// use tower_auth_refresh::oauth2::OAuth2Refresher;
    ///
    /// # async fn run() -> Result<(), tower_auth_refresh::oauth2::Error> {
    /// let refresher = OAuth2Refresher::issuer("https://auth.example/realms/demo", "my-client")
    ///     .client_secret("…")
    ///     .password("reader", "…")
    ///     .discover_https()
    ///     .await?;
    /// # let _ = refresher;
    /// # Ok(()) }
    /// ```
    pub async fn discover<C, ResB>(self, client: C) -> Result<OAuth2Refresher<C>, Error>
    where
        C: Service<Request<Full<Bytes>>, Response = Response<ResB>> + Clone,
        C::Error: Into<BoxError>,
        ResB: Body,
        ResB::Error: Into<BoxError>,
    {
        let Some(issuer) = self.issuer.as_deref() else {
            return Err(Error::new(
                ErrorKind::Config,
                "discover() needs a builder started with OAuth2Refresher::issuer",
            ));
        };
        let metadata = ProviderMetadata::fetch(issuer, &client, self.max_response).await?;
        self.metadata(&metadata).build(client)
    }

    /// [`discover`](Self::discover) over a plain-HTTP hyper-util client: for an identity
    /// provider on this machine.
    pub async fn discover_http(self) -> Result<OAuth2Refresher<super::HttpClient>, Error> {
        self.discover(super::http_client()).await
    }

    /// [`discover`](Self::discover) over [`https_client`](super::https_client).
    #[cfg(feature = "https")]
    #[cfg_attr(docsrs, doc(cfg(feature = "https")))]
    pub async fn discover_https(self) -> Result<OAuth2Refresher<super::HttpsClient>, Error> {
        self.discover(super::https_client()?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_well_known_places() {
        let issuer = "https://idp.example/realms/demo/";
        let [oidc, rfc8414] = well_known(issuer, &issuer.parse().unwrap()).unwrap();
        assert_eq!(
            oidc,
            "https://idp.example/realms/demo/.well-known/openid-configuration"
        );
        assert_eq!(
            rfc8414,
            "https://idp.example/.well-known/oauth-authorization-server/realms/demo"
        );
        let root = "http://127.0.0.1:8080";
        let [_, rfc8414] = well_known(root, &root.parse().unwrap()).unwrap();
        assert_eq!(
            rfc8414,
            "http://127.0.0.1:8080/.well-known/oauth-authorization-server"
        );
    }

    #[test]
    fn documents_that_cannot_be_used() {
        let issuer = "https://idp.example";
        for (document, kind) in [
            ("not json", ErrorKind::InvalidResponse),
            ("[]", ErrorKind::InvalidResponse),
            (
                r#"{"token_endpoint":"https://idp.example/t"}"#,
                ErrorKind::InvalidResponse,
            ),
            (
                r#"{"issuer":"https://idp.example"}"#,
                ErrorKind::InvalidResponse,
            ),
            (
                r#"{"issuer":"https://evil.example","token_endpoint":"https://evil.example/t"}"#,
                ErrorKind::Config,
            ),
            (
                r#"{"issuer":"https://idp.example","token_endpoint":"https://idp.example/t","token_endpoint_auth_methods_supported":"none"}"#,
                ErrorKind::InvalidResponse,
            ),
        ] {
            let error = ProviderMetadata::from_document(issuer, document.as_bytes()).unwrap_err();
            assert_eq!(error.kind(), kind, "{document}: {error}");
        }
        let minimal = ProviderMetadata::from_document(
            issuer,
            br#"{"issuer":"https://idp.example/","token_endpoint":"https://idp.example/t"}"#,
        )
        .unwrap();
        // No list: RFC 8414's default, client_secret_basic.
        assert!(minimal.supports_auth_method(ClientAuthMethod::ClientSecretBasic));
        assert!(!minimal.supports_auth_method(ClientAuthMethod::ClientSecretPost));
        assert_eq!(minimal.revocation_endpoint(), None);
    }
}
