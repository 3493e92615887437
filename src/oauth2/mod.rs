//! The OAuth2 refresher: log in and refresh at an OAuth2 / OpenID Connect token endpoint.
//!
//! [`OAuth2Refresher`] speaks the password, refresh_token and client_credentials grants as
//! `application/x-www-form-urlencoded` forms, as Keycloak (and so MangaDex personal clients)
//! expects. It runs over any tower HTTP client; [`OAuth2RefresherBuilder::build_http`] and
//! (feature `rustls`, or `https` with a provider and roots of your choice)
//! [`OAuth2RefresherBuilder::build_https`] make a hyper-util one.
//!
//! Eager login, to fail fast on bad credentials at start-up, is
//! [`AuthHandle::token`](crate::AuthHandle::token); otherwise the first request logs in.
//!
//! # Any identity provider
//!
//! - **Client authentication** ([`ClientAuthMethod`], RFC 6749 §2.3, OpenID Connect Core
//!   §9): `client_secret_post` (the default with a secret), `client_secret_basic`,
//!   `private_key_jwt` with a [`ClientKey`](self#private_key_jwt) (feature `private-key-jwt`:
//!   RS256, ES256, ES384; PEM, DER or JWK), `none` for public clients. The same method
//!   authenticates revocations.
//! - **Parameters**: `scope` per grant ([`scope`](OAuth2RefresherBuilder::scope),
//!   [`refresh_scope`](OAuth2RefresherBuilder::refresh_scope)), extra form parameters per
//!   grant ([`login_param`](OAuth2RefresherBuilder::login_param) for Auth0's `audience`,
//!   [`refresh_param`](OAuth2RefresherBuilder::refresh_param),
//!   [`token_param`](OAuth2RefresherBuilder::token_param)) and extra headers
//!   ([`token_request_header`](OAuth2RefresherBuilder::token_request_header)).
//! - **Discovery**: [`OAuth2Refresher::issuer`] then
//!   [`discover`](OAuth2RefresherBuilder::discover) reads the issuer's metadata
//!   ([`ProviderMetadata`]) over the refresher's own client.
//! - **Logout at the provider**: [`OAuth2Refresher::revoker`] is a
//!   `Service<`[`RevokeRequest`](crate::RevokeRequest)`>` ([`OAuth2Revoker`]) that revokes
//!   the refresh token (RFC 7009) or posts it to Keycloak's logout endpoint.
//!
//! ```
//! use tower_auth_refresh::oauth2::{ClientAuthMethod, OAuth2Refresher};
//!
//! # fn main() -> Result<(), tower_auth_refresh::oauth2::Error> {
//! // Microsoft Entra ID, client credentials: the `.default` scope, HTTP Basic.
//! let entra = OAuth2Refresher::builder(
//!     "https://login.microsoftonline.com/my-tenant/oauth2/v2.0/token",
//!     "my-app-id",
//! )
//! .client_secret("…")
//! .client_auth(ClientAuthMethod::ClientSecretBasic)
//! .client_credentials()
//! .scope("https://graph.microsoft.com/.default")
//! .build_http()?;
//! # let _ = entra;
//! # Ok(())
//! # }
//! ```
//!
//! ## private_key_jwt
//!
//! With the feature `private-key-jwt`, [`OAuth2RefresherBuilder::client_key`] takes the
//! client's `ClientKey`; every token or revocation request then carries a fresh client
//! assertion (RFC 7523) signed by jsonwebtoken over aws-lc-rs.
//!
//! # Never throwing a session away
//!
//! Once the token endpoint has answered a refresh grant, the old refresh token may be spent
//! (Keycloak rotates it on every refresh). So a refresh token the server sent is kept even in
//! an answer that is otherwise refused ([`Error::refresh_token`]); an implausible `expires_in`
//! is ignored rather than refused; a refresh sends no `scope` (RFC 6749 §6 keeps the grant);
//! and only a parseable RFC 6749 §5.2 refusal is terminal: an ingress's HTML 404 or a WAF's
//! 403 page is [`ErrorKind::Transient`]. [`ErrorKind`] lists which server answers give which
//! kind.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_auth_refresh::AuthLayer;
//! use tower_auth_refresh::oauth2::OAuth2Refresher;
//!
//! # fn main() -> Result<(), tower_auth_refresh::oauth2::Error> {
//! // MangaDex personal client; `build_https` needs the `rustls` feature.
//! let refresher = OAuth2Refresher::builder(
//!     "http://127.0.0.1:8080/realms/mangadex/protocol/openid-connect/token",
//!     "personal-client-…",
//! )
//! .client_secret("…")
//! .password("username", "password")
//! .build_http()?;
//!
//! // MangaDex access tokens live 15 minutes; `expires_in` says so on every answer.
//! let layer = AuthLayer::builder(refresher)
//!     .default_lifetime(Duration::from_secs(900))
//!     .build();
//! # let _ = layer;
//! # Ok(())
//! # }
//! ```

mod builder;
mod client_auth;
mod config;
mod discovery;
mod dpop;
mod error;
mod form;
#[cfg(feature = "private-key-jwt")]
mod key;
mod refresher;
mod response;
mod revoke;
mod rotation;
mod transport;
mod wiped;

use bytes::Bytes;
use http_body_util::Full;

pub use self::builder::OAuth2RefresherBuilder;
pub use self::client_auth::ClientAuthMethod;
pub use self::discovery::ProviderMetadata;
pub use self::error::{Error, ErrorKind};
#[cfg(feature = "private-key-jwt")]
#[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
pub use self::key::{ClientKey, SigningAlgorithm};
pub use self::refresher::OAuth2Refresher;
pub use self::response::parse_token_response;
pub use self::revoke::OAuth2Revoker;

/// The plain-HTTP hyper-util client of [`OAuth2RefresherBuilder::build_http`].
pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// A plain-HTTP hyper-util client, as [`OAuth2RefresherBuilder::build_http`] makes.
fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// The HTTPS hyper-util client of [`https_client`] and
/// [`OAuth2RefresherBuilder::build_https`], generic over the request body (`Full<Bytes>` for
/// the token endpoint; any body for an API client, a [`ReplayBody`](crate::replay::ReplayBody)
/// included).
#[cfg(feature = "https")]
#[cfg_attr(docsrs, doc(cfg(feature = "https")))]
pub type HttpsClient<B = Full<Bytes>> = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    B,
>;

/// A hyper-util client that speaks HTTPS (rustls) and HTTP, for any request body that
/// hyper-util accepts.
///
/// The crypto provider is the process default if the application installed one
/// (`rustls::crypto::CryptoProvider::install_default`), else aws-lc-rs (feature
/// `rustls-aws-lc-rs`, reqwest 0.13's choice), else ring (`rustls-ring`). The trusted roots are
/// the system's (`rustls-native-roots`; the `SSL_CERT_FILE` and `SSL_CERT_DIR` variables are
/// honoured), else Mozilla's (`rustls-webpki-roots`). Feature `rustls` is ring with Mozilla's
/// roots. Without a provider or roots it is a [`ErrorKind::Config`] error, never a panic; to
/// trust roots of your own, build a `rustls::ClientConfig` and use [`https_client_with`].
///
/// ```
/// # fn main() -> Result<(), tower_auth_refresh::oauth2::Error> {
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower_auth_refresh::AuthLayer;
/// use tower_auth_refresh::oauth2::{HttpsClient, https_client};
/// use tower_auth_refresh::replay::{BufferBody, ReplayBody};
///
/// // For the token endpoint and for API calls with in-memory bodies:
/// let client: HttpsClient = https_client()?;
/// // For streaming bodies made replayable by `BufferBody`:
/// let streaming: HttpsClient<ReplayBody<hyper::body::Incoming>> = https_client()?;
/// # let _ = (client, streaming);
/// # Ok(())
/// # }
/// ```
#[cfg(feature = "https")]
#[cfg_attr(docsrs, doc(cfg(feature = "https")))]
pub fn https_client<B>() -> Result<HttpsClient<B>, Error>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let provider = crypto_provider().ok_or_else(|| {
        Error::new(
            ErrorKind::Config,
            "no TLS crypto provider: enable feature `rustls-ring` or `rustls-aws-lc-rs`, or install a rustls default provider",
        )
    })?;
    let builder = with_roots(hyper_rustls::HttpsConnectorBuilder::new(), provider)?;
    Ok(client_over(builder.https_or_http().enable_http1().build()))
}

/// Like [`https_client`], with a TLS configuration of your own: other roots (a private CA),
/// client certificates, another provider. The client sets the ALPN protocols itself: a
/// configuration that already has some is a [`ErrorKind::Config`] error.
#[cfg(feature = "https")]
#[cfg_attr(docsrs, doc(cfg(feature = "https")))]
pub fn https_client_with<B>(tls: rustls::ClientConfig) -> Result<HttpsClient<B>, Error>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    // hyper-rustls panics on a configuration with ALPN protocols.
    if !tls.alpn_protocols.is_empty() {
        return Err(Error::new(
            ErrorKind::Config,
            "the TLS configuration must not set ALPN protocols: the client sets them",
        ));
    }
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(client_over(connector))
}

#[cfg(feature = "https")]
fn client_over<B>(
    connector: hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
) -> HttpsClient<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector)
}

#[cfg(feature = "https")]
type WantsSchemes = hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>;

/// The roots the features chose: the system's, else Mozilla's.
#[cfg(feature = "https")]
fn with_roots(
    builder: hyper_rustls::HttpsConnectorBuilder<hyper_rustls::builderstates::WantsTlsConfig>,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> Result<WantsSchemes, Error> {
    #[cfg(feature = "rustls-native-roots")]
    return builder
        .with_provider_and_native_roots(provider)
        .map_err(|error| {
            Error::new(ErrorKind::Config, "could not load the system's TLS roots")
                .with_source(error)
        });
    #[cfg(all(feature = "rustls-webpki-roots", not(feature = "rustls-native-roots")))]
    return builder
        .with_provider_and_webpki_roots(provider)
        .map_err(|error| Error::new(ErrorKind::Config, "could not set up TLS").with_source(error));
    #[cfg(not(any(feature = "rustls-webpki-roots", feature = "rustls-native-roots")))]
    {
        let _ = (builder, provider);
        Err(Error::new(
            ErrorKind::Config,
            "no TLS roots: enable feature `rustls-webpki-roots` or `rustls-native-roots`, or use `https_client_with`",
        ))
    }
}

/// The application's default provider, else the one this crate was built with.
#[cfg(feature = "https")]
fn crypto_provider() -> Option<std::sync::Arc<rustls::crypto::CryptoProvider>> {
    if let Some(provider) = rustls::crypto::CryptoProvider::get_default() {
        return Some(std::sync::Arc::clone(provider));
    }
    #[cfg(feature = "rustls-aws-lc-rs")]
    return Some(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ));
    #[cfg(all(feature = "rustls-ring", not(feature = "rustls-aws-lc-rs")))]
    return Some(std::sync::Arc::new(rustls::crypto::ring::default_provider()));
    #[cfg(not(any(feature = "rustls-ring", feature = "rustls-aws-lc-rs")))]
    None
}
