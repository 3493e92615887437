//! A fake identity provider and a fake protected API on `127.0.0.1`, for testing
//! OAuth2 clients without network access.
//!
//! [`IdentityProvider`] behaves like the Keycloak token endpoint that MangaDex uses for
//! personal API clients (`POST /realms/mangadex/protocol/openid-connect/token`), and
//! [`Api`] like `https://api.mangadex.org`: a second server, on its own port and so its
//! own origin, that accepts only the access tokens the provider issued. Both run in
//! tasks of the current Tokio runtime, need nothing but loopback networking, and stop
//! when their last handle is dropped or `shutdown()` is called.
//!
//! # The token endpoint
//!
//! It takes `application/x-www-form-urlencoded` `POST`s with these grants (the client
//! authenticates with `client_id` and `client_secret` in the form, or with HTTP Basic):
//!
//! | `grant_type` | other parameters | answer |
//! | --- | --- | --- |
//! | `password` | `username`, `password` | a new session: access and refresh token |
//! | `refresh_token` | `refresh_token` | a new access token and, by default, a new refresh token |
//! | `client_credentials` | none | a new session: access token only |
//!
//! Each may carry `scope`. A login is granted the scopes it asks for that the provider grants
//! ([`ProviderConfig::granted_scope`], default `groups email profile`), or all of them if it
//! asks for none; a refresh without `scope` keeps the login's grant. The answer's `scope` says
//! what was granted.
//!
//! A success is `200` with `Cache-Control: no-store` and a body like Keycloak's:
//!
//! ```json
//! {"access_token":"eyJ…","expires_in":900,"refresh_expires_in":2592000,"refresh_token":"eyJ…",
//!  "token_type":"Bearer","not-before-policy":0,"session_state":"5c3f…","scope":"groups email profile",
//!  "client_type":"personal"}
//! ```
//!
//! Tokens are JWT-shaped (`header.payload.signature`, base64url without padding); the
//! payload has `exp` and `iat` (wall-clock Unix seconds), a unique `jti`, `sub`, `sid`
//! (the session) and `typ` (`"Bearer"` or `"Refresh"`). The signature is random bytes:
//! the provider recognises its tokens by looking them up, so an altered token is simply
//! unknown.
//!
//! Errors follow RFC 6749 §5.2, `{"error":"…","error_description":"…"}`:
//!
//! | situation | status | `error` | `error_description` |
//! | --- | --- | --- | --- |
//! | not a form body, a missing or repeated parameter | 400 | `invalid_request` | says which |
//! | unknown `grant_type` | 400 | `unsupported_grant_type` | `Unsupported grant_type` |
//! | wrong client id or secret (checked before the user) | 401 | `unauthorized_client`, or `invalid_client` with [`ProviderConfig::legacy_invalid_client`] | `Invalid client or Invalid client credentials` / `Invalid client credentials` |
//! | wrong username or password | 401 | `invalid_grant` | `Invalid user credentials` |
//! | unknown or garbled refresh token | 400 | `invalid_grant` | `Invalid refresh token` |
//! | expired refresh token | 400 | `invalid_grant` | `Token is not active` |
//! | the token's session has ended | 400 | `invalid_grant` | `Session not active` |
//! | a rotated-out refresh token used again (reuse detection on) | 400 | `invalid_grant` | `Maximum allowed refresh token reuse exceeded` |
//! | a login asking only for scopes the provider does not grant | 400 | `invalid_scope` | `Invalid scopes: …` |
//! | a refresh asking for a scope the login was not granted | 400 | `invalid_scope` | `refresh token missing requested scope` (node oidc-provider's words) |
//!
//! # Discovery, revocation, logout
//!
//! Beside the token endpoint, as Keycloak serves them (all under `/realms/mangadex`):
//!
//! | endpoint | answer |
//! | --- | --- |
//! | `GET /.well-known/openid-configuration` | the discovery document: `issuer`, `token_endpoint`, `revocation_endpoint`, `end_session_endpoint`, `token_endpoint_auth_methods_supported` ([`ProviderConfig::auth_methods`]); at RFC 8414's `/.well-known/oauth-authorization-server/realms/mangadex` instead with [`ProviderConfig::openid_configuration`]`(false)` |
//! | `POST /protocol/openid-connect/revoke` (RFC 7009), `token` | `200`, empty: a refresh token ends its session, an access token stops working; an unknown, expired or already revoked token `200 {"error":"invalid_token","error_description":"Invalid token"}`; no `token` `400 invalid_request "Token not provided"` |
//! | `POST /protocol/openid-connect/logout`, `refresh_token` | `204`: the session ends; no `refresh_token` `400 invalid_request "No refresh token"`; unknown `400 invalid_grant "Invalid refresh token"`; expired `400 invalid_grant "Token is not active"` |
//!
//! Both authenticate the client as the token endpoint does: its secret in the form or with
//! HTTP Basic (form-urlencoded, RFC 6749 §2.3.1), or, for a [`ProviderConfig::public_client`],
//! its `client_id` alone, or (feature `private-key-jwt`, a key registered with
//! [`ProviderConfig::client_jwk`]) a signed client assertion, as Keycloak's "Signed JWT"
//! authenticator does; [`ProviderStats`] counts each method. The token endpoint takes the
//! same. [`IdentityProvider::push_revocation_fault`] breaks these two endpoints.
//!
//! Reusing a rotated-out refresh token also ends its session, as Keycloak does: the
//! session's access tokens stop working at the [`Api`] and its newest refresh token
//! answers `Session not active`. Other answers: `405` for a method other than `POST`,
//! `413` for a body over 64 KiB, `404` for any other path.
//!
//! # Breaking things on purpose
//!
//! [`IdentityProvider::push_fault`] and [`IdentityProvider::set_fault`] make the token
//! endpoint misbehave instead of handling the request ([`Fault`]: a canned status page, an
//! HTML page or an empty body at any status, a delay, a hang, a dropped connection, a
//! truncated body), or after handling it ([`Fault::AfterGrant`], [`AfterGrant`]: the login
//! made or the refresh token rotated out, then the answer delayed, lost, or sent with a field
//! changed or removed); [`IdentityProvider::revoke_sessions`],
//! [`IdentityProvider::revoke_access_tokens`] and
//! [`IdentityProvider::expire_refresh_tokens`] invalidate tokens on the server side; and
//! [`Api::push_unauthorized`] makes the API refuse the next requests whatever their
//! token. [`IdentityProvider::stats`] and [`Api::stats`] count what the servers saw.
//!
//! # Clocks
//!
//! Token lifetimes are measured with [`tokio::time::Instant`], so in a test with a
//! paused clock (`#[tokio::test(start_paused = true)]` and `tokio::time::advance`)
//! tokens expire when the test says so. Only the `exp` and `iat` claims inside the JWTs
//! use the wall clock, as a client that reads them would expect; `expires_in` and
//! `refresh_expires_in` are whole seconds, rounded down.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//!
//! use tower_auth_refresh::test_util::{Api, Fault, IdentityProvider, ProviderConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let config = ProviderConfig::default().access_lifetime(Duration::from_secs(60));
//! let idp = IdentityProvider::start(config).await?;
//! let api = Api::start(&idp).await?;
//!
//! // Point the client under test at these.
//! let token_url = idp.token_url();
//! let me = api.url("/user/me");
//! assert!(token_url.starts_with("http://127.0.0.1:"));
//! assert!(me.ends_with("/user/me"));
//! let (username, password) = (idp.config().username(), idp.config().password());
//! # let _ = (username, password);
//!
//! // The first token request gets a 503 page, the next ones are handled normally.
//! idp.push_fault(Fault::service_unavailable_html());
//!
//! // ... run the client, then check what the servers saw:
//! assert_eq!(idp.stats().password_grants, 0);
//! assert_eq!(api.stats().unauthorized, 0);
//! # Ok(())
//! # }
//! ```

mod api;
mod body;
#[cfg(feature = "dpop")]
mod dpop;
mod fault;
mod ids;
mod provider;
mod server;
#[cfg(test)]
mod tests;

pub use self::api::{Api, ApiStats, EXPECTED_USER};
pub use self::body::ChunkedBody;
pub use self::fault::{AfterGrant, Fault};
pub use self::provider::{IdentityProvider, ProviderConfig, ProviderStats};

impl IdentityProvider {
    /// A refresher builder already pointed at this provider, with its client credentials
    /// (none for a public client), its user's password grant and its revocation endpoint:
    /// add options, then `build_http()` or `build(client)`.
    pub fn refresher_builder(&self) -> crate::oauth2::OAuth2RefresherBuilder {
        let config = self.config();
        let builder = crate::oauth2::OAuth2Refresher::builder(self.token_url(), config.client_id())
            .password(config.username(), config.password())
            .revocation_url(self.revocation_url());
        match config.is_public_client() {
            true => builder,
            false => builder.client_secret(config.client_secret()),
        }
    }
}
