//! Tokens: what a refresher returns and the cache serves.
//!
//! A [`TokenSet`] is one answer of a token endpoint: the access token, the refresh token that
//! may come with it, and when each of them dies. The secret strings are wrapped in
//! [`AccessToken`] and [`RefreshToken`], whose `Debug` shows no secret.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_auth_refresh::TokenSet;
//!
//! let tokens = TokenSet::new("access-token")
//!     .with_refresh_token("refresh-token")
//!     .with_expires_in(Duration::from_secs(900));
//! assert_eq!(tokens.access_token().secret(), "access-token");
//! // Debug never prints a token.
//! assert!(!format!("{tokens:?}").contains("access-token"));
//! ```

mod jwt;
mod secret;

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

pub use self::jwt::expiry_claim as jwt_expiry;
pub use self::secret::{AccessToken, RefreshToken, Secret};

/// Lifetimes beyond this are treated as this: it keeps `Instant` arithmetic from overflowing
/// on absurd `expires_in` values while being longer than any real token lives.
const LONGEST_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The instant `lifetime` from now, saturating for absurd lifetimes.
pub(crate) fn deadline_after(lifetime: Duration) -> Instant {
    instant_after(Instant::now(), lifetime)
}

/// The instant `lifetime` after `base`, saturating for absurd lifetimes.
pub(crate) fn instant_after(base: Instant, lifetime: Duration) -> Instant {
    base.checked_add(lifetime.min(LONGEST_LIFETIME))
        .unwrap_or(base)
}

/// How an access token is sent: the `Authorization` scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenType {
    /// `Authorization: Bearer <token>` (RFC 6750): whoever holds the token can use it.
    #[default]
    Bearer,
    /// `Authorization: DPoP <token>` (RFC 9449), with a proof of the client's key on every
    /// request: the token is bound to that key.
    DPoP,
}

impl TokenType {
    /// The scheme's name, as in `Authorization` headers and `token_type` answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "Bearer",
            Self::DPoP => "DPoP",
        }
    }
}

/// An access token with its optional refresh token and expiries.
///
/// The expiry of the access token comes, in this order, from [`with_expires_in`] /
/// [`with_expires_at`], from the `exp` claim when the access token is a JWT, and else from
/// the default lifetime configured on the layer ([`AuthLayerBuilder::default_lifetime`]).
///
/// Instants are [`tokio::time::Instant`]s, so they follow tokio's clock (and its paused clock
/// in tests).
///
/// [`with_expires_in`]: TokenSet::with_expires_in
/// [`with_expires_at`]: TokenSet::with_expires_at
/// [`AuthLayerBuilder::default_lifetime`]: crate::AuthLayerBuilder::default_lifetime
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    access_token: AccessToken,
    token_type: TokenType,
    refresh_token: Option<RefreshToken>,
    expires_at: Option<Instant>,
    refresh_expires_at: Option<Instant>,
    /// The key a DPoP token is bound to.
    #[cfg(feature = "dpop")]
    dpop: Option<crate::dpop::Dpop>,
}

impl TokenSet {
    /// A token set holding only an access token, of unknown expiry.
    pub fn new(access_token: impl Into<AccessToken>) -> Self {
        Self {
            access_token: access_token.into(),
            token_type: TokenType::Bearer,
            refresh_token: None,
            expires_at: None,
            refresh_expires_at: None,
            #[cfg(feature = "dpop")]
            dpop: None,
        }
    }

    /// The kind of access token (default [`TokenType::Bearer`]): a
    /// [`DPoP`](TokenType::DPoP) token is sent as `Authorization: DPoP <token>`.
    pub fn with_token_type(mut self, token_type: TokenType) -> Self {
        self.token_type = token_type;
        self
    }

    /// The kind of access token.
    pub fn token_type(&self) -> TokenType {
        self.token_type
    }

    /// The DPoP key the tokens are bound to (feature `dpop`): every request sent with a
    /// [`DPoP`](TokenType::DPoP) token carries a proof signed with it, and a store keeps it
    /// with the tokens, so another process or a restart signs with the same key. The crate's
    /// OAuth2 refresher attaches its key to the DPoP tokens it gets; set it on tokens obtained
    /// elsewhere (an interactive login) before [`AuthHandle::set_tokens`](crate::AuthHandle::set_tokens).
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn with_dpop(mut self, dpop: crate::dpop::Dpop) -> Self {
        self.dpop = Some(dpop);
        self
    }

    /// The DPoP key the tokens are bound to, if any; see [`with_dpop`](Self::with_dpop).
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn dpop(&self) -> Option<&crate::dpop::Dpop> {
        self.dpop.as_ref()
    }

    /// Adds the refresh token that came with the access token.
    pub fn with_refresh_token(mut self, refresh_token: impl Into<RefreshToken>) -> Self {
        self.refresh_token = Some(refresh_token.into());
        self
    }

    /// Replaces or removes the refresh token.
    pub fn set_refresh_token(&mut self, refresh_token: Option<RefreshToken>) {
        self.refresh_token = refresh_token;
    }

    /// The access token expires this long from now (a token response's `expires_in`).
    pub fn with_expires_in(mut self, lifetime: Duration) -> Self {
        self.expires_at = Some(deadline_after(lifetime));
        self
    }

    /// The access token expires at this instant.
    pub fn with_expires_at(mut self, at: Instant) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The refresh token expires this long from now (Keycloak's `refresh_expires_in`).
    ///
    /// Past that instant a refresh must fail, so a refresher logs in again instead.
    pub fn with_refresh_expires_in(mut self, lifetime: Duration) -> Self {
        self.refresh_expires_at = Some(deadline_after(lifetime));
        self
    }

    /// The refresh token expires at this instant.
    pub fn with_refresh_expires_at(mut self, at: Instant) -> Self {
        self.refresh_expires_at = Some(at);
        self
    }

    /// Replaces or removes the refresh token's expiry.
    pub fn set_refresh_expires_at(&mut self, at: Option<Instant>) {
        self.refresh_expires_at = at;
    }

    /// The access token.
    pub fn access_token(&self) -> &AccessToken {
        &self.access_token
    }

    /// The refresh token, if the token endpoint gave one.
    pub fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }

    /// When the access token expires, as given by [`with_expires_in`](Self::with_expires_in) or
    /// [`with_expires_at`](Self::with_expires_at); `None` when it was not given.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }

    /// When the refresh token expires, if known.
    pub fn refresh_expires_at(&self) -> Option<Instant> {
        self.refresh_expires_at
    }

    /// When the access token expires: the given expiry, else the JWT `exp` claim by this
    /// machine's clock, else `default_lifetime` from now.
    pub fn expiry_or(&self, default_lifetime: Duration) -> Instant {
        self.expiry(default_lifetime, false)
    }

    /// [`expiry_or`](Self::expiry_or) for a token set that a token endpoint just issued: when
    /// this machine's clock disagrees with the issuer's (it is past `exp`, or more than a
    /// minute before `iat`), the lifetime is `exp − iat` from now, so a clock running ahead
    /// never makes every new token look expired on arrival.
    pub(crate) fn fresh_expiry_or(&self, default_lifetime: Duration) -> Instant {
        self.expiry(default_lifetime, true)
    }

    fn expiry(&self, default_lifetime: Duration, fresh: bool) -> Instant {
        self.expires_at
            .or_else(|| {
                jwt::remaining_lifetime(self.access_token.secret(), fresh).map(deadline_after)
            })
            .unwrap_or_else(|| deadline_after(default_lifetime))
    }

    /// When the access token expires by its JWT `exp` claim and this machine's clock, if it is
    /// a JWT with one.
    pub(crate) fn jwt_expiry(&self) -> Option<Instant> {
        jwt::remaining_lifetime(self.access_token.secret(), false).map(deadline_after)
    }

    /// Whether the refresh token is known to be dead, or to die within `margin` from now.
    pub fn refresh_token_expires_within(&self, margin: Duration) -> bool {
        match (&self.refresh_token, self.refresh_expires_at) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(_), Some(at)) => at.saturating_duration_since(Instant::now()) <= margin,
        }
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let now = Instant::now();
        let left = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(now));
        let mut f = f.debug_struct("TokenSet");
        f.field("access_token", &self.access_token)
            .field("token_type", &self.token_type)
            .field("refresh_token", &self.refresh_token)
            .field("expires_in", &left(self.expires_at))
            .field("refresh_expires_in", &left(self.refresh_expires_at));
        #[cfg(feature = "dpop")]
        f.field("dpop", &self.dpop);
        f.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn jwt_expiring_in(secs: u64) -> String {
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + secs;
        let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2lnbmF0dXJl")
    }

    #[tokio::test]
    async fn expiry_prefers_expires_in_then_jwt_then_default() {
        let default = Duration::from_secs(900);
        let given = TokenSet::new(jwt_expiring_in(3600)).with_expires_in(Duration::from_secs(60));
        let left = given.expiry_or(default) - Instant::now();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(59));

        let from_jwt = TokenSet::new(jwt_expiring_in(3600));
        let left = from_jwt.expiry_or(default) - Instant::now();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3590));

        let opaque = TokenSet::new("opaque");
        let left = opaque.expiry_or(default) - Instant::now();
        assert!(left <= default && left > Duration::from_secs(899));
    }

    #[tokio::test]
    async fn absurd_lifetimes_do_not_overflow() {
        let tokens = TokenSet::new("t").with_expires_in(Duration::MAX);
        assert!(tokens.expires_at().unwrap() > Instant::now());
    }

    #[tokio::test]
    async fn refresh_token_expiry() {
        let no_refresh = TokenSet::new("a");
        assert!(no_refresh.refresh_token_expires_within(Duration::ZERO));
        let unknown = TokenSet::new("a").with_refresh_token("r");
        assert!(!unknown.refresh_token_expires_within(Duration::from_secs(60)));
        let soon = unknown
            .clone()
            .with_refresh_expires_in(Duration::from_secs(30));
        assert!(soon.refresh_token_expires_within(Duration::from_secs(60)));
        assert!(!soon.refresh_token_expires_within(Duration::from_secs(10)));
    }

    #[test]
    fn debug_shows_no_secret() {
        let tokens = TokenSet::new("access-secret").with_refresh_token("refresh-secret");
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
