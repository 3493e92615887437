//! How the identity provider behaves: its user, client, lifetimes and quirks.

use std::fmt;
use std::time::Duration;

/// How an [`IdentityProvider`](super::IdentityProvider) behaves.
///
/// Start from [`ProviderConfig::default()`] and change what the test needs:
///
/// ```
/// use std::time::Duration;
///
/// use tower_auth_refresh::test_util::ProviderConfig;
///
/// let config = ProviderConfig::default()
///     .user("alice", "p&ss=w+rd é")
///     .access_lifetime(Duration::from_secs(5))
///     .include_expires_in(false);
/// assert_eq!(config.username(), "alice");
/// ```
///
/// Its `Debug` output leaves out the password and the client secret.
#[derive(Clone)]
pub struct ProviderConfig {
    pub(super) username: String,
    pub(super) password: String,
    /// More users, by name, with their passwords.
    pub(super) users: std::collections::BTreeMap<String, String>,
    pub(super) client_id: String,
    pub(super) client_secret: String,
    pub(super) access_lifetime: Duration,
    pub(super) refresh_lifetime: Duration,
    pub(super) rotate_refresh_tokens: bool,
    pub(super) reuse_detection: bool,
    pub(super) include_expires_in: bool,
    pub(super) include_refresh_expires_in: bool,
    pub(super) include_refresh_token_on_refresh: bool,
    pub(super) legacy_invalid_client: bool,
    pub(super) response_delay: Duration,
    pub(super) granted_scope: String,
    pub(super) public_client: bool,
    pub(super) auth_methods: Vec<String>,
    pub(super) openid_configuration: bool,
    pub(super) client_jwk: Option<String>,
    pub(super) dpop: bool,
    pub(super) require_dpop: bool,
    pub(super) dpop_nonce: bool,
    pub(super) dpop_nonce_every_request: bool,
}

impl Default for ProviderConfig {
    /// User `reader` with password `correct horse battery staple`, client
    /// `personal-client-test` with secret `test-client-secret`, access tokens for 900 s,
    /// refresh tokens for 30 days, rotation and reuse detection on, every optional field
    /// included, `unauthorized_client` for a bad client, no delay.
    fn default() -> Self {
        Self {
            username: "reader".to_owned(),
            password: "correct horse battery staple".to_owned(),
            users: std::collections::BTreeMap::new(),
            client_id: "personal-client-test".to_owned(),
            client_secret: "test-client-secret".to_owned(),
            access_lifetime: Duration::from_secs(900),
            refresh_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
            rotate_refresh_tokens: true,
            reuse_detection: true,
            include_expires_in: true,
            include_refresh_expires_in: true,
            include_refresh_token_on_refresh: true,
            legacy_invalid_client: false,
            response_delay: Duration::ZERO,
            granted_scope: "groups email profile".to_owned(),
            public_client: false,
            auth_methods: super::endpoints::KEYCLOAK_AUTH_METHODS
                .iter()
                .map(|method| (*method).to_owned())
                .collect(),
            openid_configuration: true,
            client_jwk: None,
            dpop: false,
            require_dpop: false,
            dpop_nonce: false,
            dpop_nonce_every_request: false,
        }
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("users", &self.users.len())
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("access_lifetime", &self.access_lifetime)
            .field("refresh_lifetime", &self.refresh_lifetime)
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field("reuse_detection", &self.reuse_detection)
            .field("include_expires_in", &self.include_expires_in)
            .field(
                "include_refresh_expires_in",
                &self.include_refresh_expires_in,
            )
            .field(
                "include_refresh_token_on_refresh",
                &self.include_refresh_token_on_refresh,
            )
            .field("legacy_invalid_client", &self.legacy_invalid_client)
            .field("response_delay", &self.response_delay)
            .field("granted_scope", &self.granted_scope)
            .field("public_client", &self.public_client)
            .field("auth_methods", &self.auth_methods)
            .field("openid_configuration", &self.openid_configuration)
            .field("client_jwk", &self.client_jwk)
            .field("dpop", &self.dpop)
            .field("require_dpop", &self.require_dpop)
            .field("dpop_nonce", &self.dpop_nonce)
            .field("dpop_nonce_every_request", &self.dpop_nonce_every_request)
            .finish()
    }
}

impl ProviderConfig {
    /// The one user who can log in with the `password` grant (compared exactly).
    #[must_use]
    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = username.into();
        self.password = password.into();
        self
    }

    /// One more user who can log in with the `password` grant, beside the
    /// [`user`](Self::user): for tests of many sessions (a keyed layer's). Each gets sessions
    /// and tokens of their own; the API tells whose a token is ([`ApiStats::by_user`](crate::test_util::ApiStats::by_user)).
    #[must_use]
    pub fn with_user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.insert(username.into(), password.into());
        self
    }

    /// Whether `username` and `password` are one user's credentials.
    pub(super) fn knows(&self, username: &str, password: &str) -> bool {
        (username == self.username && password == self.password)
            || self
                .users
                .get(username)
                .is_some_and(|known| known == password)
    }

    /// The one client allowed to use the token endpoint.
    #[must_use]
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client_id = id.into();
        self.client_secret = secret.into();
        self
    }

    /// How long an access token is valid (default 900 s).
    #[must_use]
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_lifetime = lifetime;
        self
    }

    /// How long a refresh token is valid from its issue (default 30 days).
    #[must_use]
    pub fn refresh_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_lifetime = lifetime;
        self
    }

    /// Whether each refresh issues a new refresh token (default `true`). When `false`,
    /// refresh responses carry the same refresh token again, and it stays valid.
    #[must_use]
    pub fn rotate_refresh_tokens(mut self, rotate: bool) -> Self {
        self.rotate_refresh_tokens = rotate;
        self
    }

    /// Whether a refresh token that was rotated out may not be used again (default
    /// `true`). When `true`, using it again answers `invalid_grant` "Maximum allowed
    /// refresh token reuse exceeded" and ends the whole session. When `false`, old
    /// refresh tokens stay valid until they expire.
    #[must_use]
    pub fn reuse_detection(mut self, on: bool) -> Self {
        self.reuse_detection = on;
        self
    }

    /// Whether token responses have `expires_in` (default `true`). Without it a client
    /// must read the `exp` claim of the access token.
    #[must_use]
    pub fn include_expires_in(mut self, include: bool) -> Self {
        self.include_expires_in = include;
        self
    }

    /// Whether token responses have `refresh_expires_in` (default `true`).
    #[must_use]
    pub fn include_refresh_expires_in(mut self, include: bool) -> Self {
        self.include_refresh_expires_in = include;
        self
    }

    /// Whether responses to the `refresh_token` grant have a `refresh_token` (default
    /// `true`). When `false`, no new refresh token is issued and the one the client
    /// sent stays valid (it is not rotated out, whatever the other settings).
    #[must_use]
    pub fn include_refresh_token_on_refresh(mut self, include: bool) -> Self {
        self.include_refresh_token_on_refresh = include;
        self
    }

    /// Whether a bad client id or secret answers `invalid_client` "Invalid client
    /// credentials", as older Keycloak releases do, instead of `unauthorized_client`
    /// "Invalid client or Invalid client credentials" (default `false`). Both are `401`.
    #[must_use]
    pub fn legacy_invalid_client(mut self, legacy: bool) -> Self {
        self.legacy_invalid_client = legacy;
        self
    }

    /// Delays every normally handled token-endpoint response, errors included (default
    /// zero). The request is processed first, so a client that gives up while waiting
    /// still got its tokens issued and its refresh token rotated out; compare
    /// [`Fault::Delay`](crate::test_util::Fault::Delay), which waits before processing, and
    /// [`Fault::AfterGrant`](crate::test_util::Fault::AfterGrant), for one answer.
    #[must_use]
    pub fn response_delay(mut self, delay: Duration) -> Self {
        self.response_delay = delay;
        self
    }

    /// The scopes the provider grants, space-delimited (default `groups email profile`, what
    /// Keycloak grants MangaDex personal clients).
    ///
    /// A login (password or client credentials grant) without `scope` is granted all of them;
    /// one that asks for scopes is granted those of them it asked for, fewer than asked if it
    /// asked for others (RFC 6749 §3.3), or refused `400 invalid_scope` "Invalid scopes: …"
    /// (Keycloak's words) if it asked for none of them. The answer's `scope` and the tokens'
    /// `scope` claim say what was granted.
    ///
    /// A refresh without `scope` keeps the whole grant (§6). One that asks for scopes within
    /// the grant gets an access token for those (the new refresh token keeps the whole grant);
    /// one that asks for a scope beyond the grant is refused `400 invalid_scope` "refresh
    /// token missing requested scope" (node oidc-provider's words) and rotates nothing.
    #[must_use]
    pub fn granted_scope(mut self, scope: impl Into<String>) -> Self {
        self.granted_scope = scope.into();
        self
    }

    /// Whether the client is public (Keycloak's "Client authentication" off; default
    /// `false`): it sends its `client_id` and no secret, which the endpoints accept. A
    /// confidential client must authenticate with its secret, in the form
    /// (`client_secret_post`) or with HTTP Basic (`client_secret_basic`), as it chooses:
    /// Keycloak's "Client Id and Secret" authenticator takes either.
    #[must_use]
    pub fn public_client(mut self, public: bool) -> Self {
        self.public_client = public;
        self
    }

    /// The client authentication methods the discovery document lists as
    /// `token_endpoint_auth_methods_supported` (default Keycloak's: `private_key_jwt`,
    /// `client_secret_basic`, `client_secret_post`, `tls_client_auth`, `client_secret_jwt`).
    /// Only what the document says: the endpoints accept the client secret in the form or
    /// with HTTP Basic whatever it lists, and check no signed JWT.
    #[must_use]
    pub fn auth_methods(mut self, methods: &[&str]) -> Self {
        self.auth_methods = methods.iter().map(|method| (*method).to_owned()).collect();
        self
    }

    /// Whether the discovery document is at `<issuer>/.well-known/openid-configuration`
    /// (default `true`, as Keycloak serves it); when `false`, it is at RFC 8414's
    /// `/.well-known/oauth-authorization-server/realms/mangadex` instead, as a plain OAuth2
    /// authorization server serves it.
    #[must_use]
    pub fn openid_configuration(mut self, served: bool) -> Self {
        self.openid_configuration = served;
        self
    }

    /// The client's public key (a JWK, RSA or EC), as Keycloak's "Signed JWT" authenticator
    /// holds it (default none). With it, and the feature `private-key-jwt`, a request may
    /// authenticate with a client assertion (RFC 7523) instead of the secret: signature
    /// checked with this key (RS256, ES256, ES384), `iss` and `sub` the client id, `aud` the
    /// issuer or the token endpoint, `exp` in the future, each `jti` accepted once; a refusal is
    /// `401 unauthorized_client "Client authentication with signed JWT failed: …"`.
    #[must_use]
    pub fn client_jwk(mut self, jwk: impl Into<String>) -> Self {
        self.client_jwk = Some(jwk.into());
        self
    }

    /// Whether the token endpoint speaks DPoP (RFC 9449; feature `dpop`; default `false`, a
    /// server that ignores `DPoP` headers and issues Bearer tokens). When `true`, a request's
    /// proof is checked as node oidc-provider checks it (its signature with the header's key,
    /// `typ` `dpop+jwt`, `alg` ES256 or EdDSA, `htm` POST, `htu` the token endpoint, `iat`
    /// within a minute, each `jti` once) and the tokens are bound to its key: `token_type`
    /// `DPoP`, the access token's `cnf.jkt`, and a public client's refresh token, which then
    /// needs a proof of the same key. A request without a proof gets Bearer tokens, as
    /// Keycloak does with "Require DPoP bound tokens" off; see
    /// [`require_dpop`](Self::require_dpop).
    ///
    /// Refusals: `400 invalid_dpop_proof` (why in the description), `400 invalid_grant`
    /// "DPoP proof JWT Replay detected" for a `jti` seen before, `400 invalid_grant` "DPoP
    /// proof key does not match the refresh token". [`ProviderStats`](super::ProviderStats)
    /// counts each.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    #[must_use]
    pub fn dpop(mut self, on: bool) -> Self {
        self.dpop = on;
        self
    }

    /// Whether every token request must carry a DPoP proof (default `false`); implies
    /// [`dpop`](Self::dpop). Without one: `400 invalid_grant` "DPoP proof JWT not provided"
    /// (node oidc-provider's words for a `dpop_bound_access_tokens` client).
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    #[must_use]
    pub fn require_dpop(mut self, on: bool) -> Self {
        self.require_dpop = on;
        self.dpop |= on;
        self
    }

    /// Whether proofs must carry the provider's nonce (node oidc-provider's `requireNonce`;
    /// default `false`); implies [`dpop`](Self::dpop). A proof without it, or with one older
    /// than the previous, is answered `400 {"error":"use_dpop_nonce"}` with the current nonce
    /// in `DPoP-Nonce`; every token-endpoint answer carries the current nonce, a success too.
    /// [`IdentityProvider::rotate_dpop_nonce`](super::IdentityProvider::rotate_dpop_nonce)
    /// changes it.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    #[must_use]
    pub fn dpop_nonce(mut self, on: bool) -> Self {
        self.dpop_nonce = on;
        self.dpop |= on;
        self
    }

    /// A hostile server (default `false`; implies [`dpop_nonce`](Self::dpop_nonce)): the
    /// nonce changes before every proof is checked, so every request is answered with a new
    /// `use_dpop_nonce` challenge. A client must give up, not loop.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    #[must_use]
    pub fn dpop_nonce_every_request(mut self, on: bool) -> Self {
        self.dpop_nonce_every_request = on;
        self.dpop_nonce |= on;
        self.dpop |= on;
        self
    }

    /// The username of the user.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password of the user.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether the client is public ([`public_client`](Self::public_client)).
    pub fn is_public_client(&self) -> bool {
        self.public_client
    }

    /// The client secret.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }
}
