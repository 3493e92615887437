//! The OAuth2 refresher: log in and refresh at an OAuth2 / OpenID Connect token endpoint.
//!
//! [`OAuth2Refresher`] speaks the password, refresh_token and client_credentials grants as
//! `application/x-www-form-urlencoded` forms, as Keycloak (and so MangaDex personal clients)
//! expects. It runs over any tower HTTP client; [`OAuth2RefresherBuilder::build_http`] and
//! (feature `rustls`) [`OAuth2RefresherBuilder::build_https`] make a hyper-util one.
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
mod error;
mod form;
#[cfg(feature = "private-key-jwt")]
mod key;
mod refresher;
mod response;
mod revoke;
mod rotation;
mod transport;

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

/// The HTTPS hyper-util client of [`OAuth2RefresherBuilder::build_https`].
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A hyper-util client that speaks HTTPS (rustls with ring and Mozilla's roots) and HTTP.
#[cfg(feature = "rustls")]
#[cfg_attr(docsrs, doc(cfg(feature = "rustls")))]
pub fn https_client() -> Result<HttpsClient, Error> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
        .map_err(|error| Error::new(ErrorKind::Config, "could not set up TLS").with_source(error))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}
