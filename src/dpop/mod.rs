//! DPoP (RFC 9449): sender-constrained tokens. Feature `dpop`.
//!
//! A DPoP client holds a key pair and signs a fresh proof — a small JWT naming the request's
//! method and URL — for every request that carries a DPoP-bound token, and for every token
//! request; servers bind the tokens they issue to the key's thumbprint (`cnf.jkt`), so a
//! token stolen without the key is worth nothing. Servers may also hand out nonces that the
//! next proofs must carry.
//!
//! [`Dpop`] is that key together with the nonces servers gave, one per origin. Clones share
//! both: give the same value to the [`OAuth2Refresher`](crate::oauth2::OAuth2Refresher)
//! ([`OAuth2RefresherBuilder::dpop`](crate::oauth2::OAuth2RefresherBuilder::dpop)) and to the
//! code that calls the API, so that a nonce learnt on any answer is used by the next proof
//! to that server.
//!
//! - **Cost.** What never changes is made once per key: the JOSE header (`typ`, `alg`, the
//!   public `jwk`), base64url-encoded, and the thumbprint. A proof is the claims, one
//!   signature (ES256 with aws-lc-rs, the backend of `jsonwebtoken`, or Ed25519) and one
//!   allocation for the result: the README's DPoP section has the measured cost.
//! - **Nonces.** [`observe`](Dpop::observe) keeps the `DPoP-Nonce` of any response (a success
//!   too) as its origin's latest; [`proof`](Dpop::proof) puts the latest nonce of the request's
//!   origin into the proof. The lock around them is held for a lookup, never across a
//!   signature.
//! - **Challenges.** At the token endpoint a nonce challenge is `400 {"error":"use_dpop_nonce"}`;
//!   the refresher answers it by signing again with the new nonce, once. At a resource server it
//!   is `401 WWW-Authenticate: DPoP error="use_dpop_nonce"`, and `error="invalid_dpop_proof"`
//!   refuses a proof: [`Dpop::challenge`] tells them apart from a refused token, which is what
//!   a refresh is for.
//! - **Secrets.** The private key is never in a `Debug` or `Display` (both show the algorithm
//!   and the thumbprint), and [`to_private_jwk`](Dpop::to_private_jwk), for a store to keep the
//!   key with its session, is a [`Secret`], wiped from memory when dropped. Proofs are header
//!   values marked sensitive.
//!
//! # Example
//!
//! ```
//! use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
//! use tower_auth_refresh::dpop::{Dpop, DpopChallenge};
//!
//! # fn main() -> Result<(), tower_auth_refresh::dpop::DpopError> {
//! let dpop = Dpop::generate()?; // or Dpop::from_pem(…), Dpop::from_jwk(…)
//! let api: Uri = "https://api.example.com/v1/items?page=2".parse().unwrap();
//!
//! // A proof for one request with a DPoP-bound token: `htm` GET, `htu` without the query,
//! // `ath` the token's hash.
//! let proof = dpop.proof(&Method::GET, &api, Some("the-access-token"))?;
//! assert!(proof.is_sensitive());
//! # let claims = |proof: &HeaderValue| -> serde_json::Value {
//! #     use base64::Engine as _;
//! #     let payload = proof.to_str().unwrap().split('.').nth(1).unwrap();
//! #     serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
//! # };
//! assert_eq!(claims(&proof)["htu"], "https://api.example.com/v1/items");
//! assert_eq!(claims(&proof).get("nonce"), None);
//!
//! // The server challenges: 401, WWW-Authenticate and a nonce. No reason to refresh the token.
//! let mut headers = HeaderMap::new();
//! headers.insert("www-authenticate", HeaderValue::from_static(r#"DPoP error="use_dpop_nonce""#));
//! headers.insert("dpop-nonce", HeaderValue::from_static("eyJ7S_zG.eyJH0-Z.HX4w-7v"));
//! assert_eq!(Dpop::challenge(StatusCode::UNAUTHORIZED, &headers), Some(DpopChallenge::UseNonce));
//! dpop.observe(&api, &headers);
//!
//! // The retry's proof is a new one, and carries the nonce of that server only.
//! let retry = dpop.proof(&Method::GET, &api, Some("the-access-token"))?;
//! assert_ne!(retry, proof);
//! assert_eq!(claims(&retry)["nonce"], "eyJ7S_zG.eyJH0-Z.HX4w-7v");
//! let idp: Uri = "https://idp.example.com/token".parse().unwrap();
//! assert_eq!(claims(&dpop.proof(&Method::POST, &idp, None)?).get("nonce"), None);
//!
//! // The key, for a store to keep with the session, and back.
//! let kept = dpop.to_private_jwk()?;
//! assert_eq!(Dpop::from_private_jwk(&kept)?.thumbprint(), dpop.thumbprint());
//! assert!(!format!("{dpop:?} {kept:?}").contains(kept.secret()));
//! # Ok(())
//! # }
//! ```

mod challenge;
mod error;
mod key;
mod nonce;
mod proof;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

pub use self::challenge::DpopChallenge;
pub use self::error::{DpopError, DpopErrorKind};
use self::key::Key;
use self::nonce::Nonces;
use crate::token::Secret;

/// Whether two absolute URIs have one origin, normalised as a proof's `htu` and the nonces'
/// keys are (scheme and host in lower case, the scheme's default port left out).
pub(crate) fn same_origin(a: &Uri, b: &Uri) -> bool {
    match (proof::target(a), proof::target(b)) {
        (Ok(a), Ok(b)) => a.origin == b.origin,
        _ => false,
    }
}

/// The client's DPoP key and the nonces servers gave: clones share both.
///
/// Made with [`generate`](Self::generate) (P-256, ES256: what every DPoP server accepts),
/// [`generate_ed25519`](Self::generate_ed25519), or read from a PEM or a private JWK. See the
/// [module example](self#example).
#[derive(Clone)]
pub struct Dpop {
    shared: Arc<Shared>,
}

struct Shared {
    // Replaceable, for a session that arrives with its own key (`set_key`); a proof loads it
    // once, so it is signed and described by one key.
    key: ArcSwap<Key>,
    nonces: Nonces,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    proofs: AtomicU64,
    nonces: AtomicU64,
    token_nonce_retries: AtomicU64,
    token_nonce_refusals: AtomicU64,
}

/// What a [`Dpop`] (and its clones) did: a snapshot from [`Dpop::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DpopStats {
    /// Proofs signed.
    pub proofs: u64,
    /// Nonces learnt: each new `DPoP-Nonce` an origin sent.
    pub nonces: u64,
    /// Token requests sent again, with a new proof carrying the new nonce, after a
    /// `use_dpop_nonce` answer of the token endpoint.
    pub token_endpoint_nonce_retries: u64,
    /// Token requests given up after a second `use_dpop_nonce` answer in a row (a server
    /// that challenges every proof): an error, never a loop.
    pub token_endpoint_nonce_refusals: u64,
}

impl Dpop {
    /// A fresh P-256 key (ES256).
    pub fn generate() -> Result<Self, DpopError> {
        Key::generate_es256().map(Self::with_key)
    }

    /// A fresh Ed25519 key (EdDSA), for servers that list it in
    /// `dpop_signing_alg_values_supported`.
    pub fn generate_ed25519() -> Result<Self, DpopError> {
        Key::generate_ed25519().map(Self::with_key)
    }

    /// Reads a PEM private key: P-256 as PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1
    /// (`BEGIN EC PRIVATE KEY`, with or without the `EC PARAMETERS` block before it), or
    /// Ed25519 as PKCS#8. An encrypted key must be decrypted first.
    pub fn from_pem(pem: &[u8]) -> Result<Self, DpopError> {
        Key::from_pem(pem).map(Self::with_key)
    }

    /// Reads a private JWK (RFC 7517): `{"kty":"EC","crv":"P-256","x","y","d"}` or
    /// `{"kty":"OKP","crv":"Ed25519","x","d"}`. An `alg` other than the key's is refused.
    pub fn from_jwk(jwk: &str) -> Result<Self, DpopError> {
        Key::from_jwk(jwk).map(Self::with_key)
    }

    /// Reads back what [`to_private_jwk`](Self::to_private_jwk) gave: the key a store kept
    /// with its session.
    pub fn from_private_jwk(jwk: &Secret) -> Result<Self, DpopError> {
        Self::from_jwk(jwk.secret())
    }

    fn with_key(key: Key) -> Self {
        Self {
            shared: Arc::new(Shared {
                key: ArcSwap::from_pointee(key),
                nonces: Nonces::default(),
                counters: Counters::default(),
            }),
        }
    }

    /// The key as a private JWK, for a store to keep with the session (tokens bound to this
    /// key are worth nothing without it). A [`Secret`]: wiped from memory when dropped, and
    /// never in a `Debug`.
    pub fn to_private_jwk(&self) -> Result<Secret, DpopError> {
        let mut jwk = self.shared.key.load().private_jwk()?;
        // Moves the buffer, not a copy of it, into the secret.
        Ok(Secret::new(std::mem::take(&mut *jwk)))
    }

    /// The key's RFC 7638 JWK SHA-256 thumbprint (base64url): what the `cnf.jkt` claim of a
    /// token bound to it holds. Owned, because [`set_key`](Self::set_key) may replace the key.
    pub fn thumbprint(&self) -> String {
        self.shared.key.load().thumbprint().to_owned()
    }

    /// The proofs' `alg`: `ES256` or `EdDSA`.
    pub fn algorithm(&self) -> &'static str {
        self.shared.key.load().algorithm()
    }

    /// The public key as a JWK, as every proof's header carries it.
    pub fn public_jwk(&self) -> serde_json::Value {
        self.shared.key.load().public_jwk().clone()
    }

    /// Uses the key of `other` from now on, in this value and every clone; the nonces stay
    /// (they belong to the servers, not to the key). For a session obtained elsewhere, whose
    /// tokens are bound to its own key.
    pub fn set_key(&self, other: &Dpop) {
        self.shared.key.store(other.shared.key.load_full());
    }

    /// A proof for one request (RFC 9449 §4.2), as a header value marked sensitive, for the
    /// `DPoP` header: `htm` the method, `htu` the URI without its query and fragment
    /// (normalised: scheme and host in lower case, no default port), a random `jti`, `iat`
    /// now, `ath` (the token's SHA-256) when the request carries an access token, and the
    /// latest nonce of the URI's origin, if it gave one. Every call makes a new proof: a
    /// request sent again needs a new one.
    ///
    /// The URI must be absolute, `http` or `https` ([`DpopErrorKind::Uri`]).
    pub fn proof(
        &self,
        method: &Method,
        uri: &Uri,
        access_token: Option<&str>,
    ) -> Result<HeaderValue, DpopError> {
        self.proof_with_nonce(method, uri, access_token)
            .map(|(proof, _)| proof)
    }

    /// [`proof`](Self::proof), and the nonce it carries.
    pub(crate) fn proof_with_nonce(
        &self,
        method: &Method,
        uri: &Uri,
        access_token: Option<&str>,
    ) -> Result<(HeaderValue, Option<Arc<str>>), DpopError> {
        let target = proof::target(uri)?;
        let nonce = self.shared.nonces.get(&target.origin);
        let key = self.shared.key.load();
        let proof = proof::sign(&key, method, &target, access_token, nonce.as_deref())?;
        self.shared.counters.proofs.fetch_add(1, Ordering::Relaxed);
        Ok((proof, nonce))
    }

    /// Keeps the `DPoP-Nonce` of a response from `uri` (any response: servers may send a new
    /// nonce with a success too) for the next proofs to that URI's origin. A response without
    /// one, or with one that is not RFC 9449 §8.1 syntax, changes nothing.
    pub fn observe(&self, uri: &Uri, headers: &HeaderMap) {
        if let Ok(target) = proof::target(uri) {
            if self.shared.nonces.observe(&target.origin, headers) {
                self.shared.counters.nonces.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The nonce the next proof to `uri` would carry, if its origin gave one.
    pub fn nonce(&self, uri: &Uri) -> Option<String> {
        let target = proof::target(uri).ok()?;
        self.shared
            .nonces
            .get(&target.origin)
            .map(|nonce| nonce.to_string())
    }

    /// Whether a response is a resource server's DPoP challenge: `401` with
    /// `WWW-Authenticate: DPoP error="use_dpop_nonce"` (a nonce challenge: send again with the
    /// nonce, after [`observe`](Self::observe)) or `error="invalid_dpop_proof"` (the proof was
    /// refused). Neither is a rejection of the token: no reason to refresh it.
    pub fn is_challenge(status: StatusCode, headers: &HeaderMap) -> bool {
        Self::challenge(status, headers).is_some()
    }

    /// Which DPoP challenge a response is, if it is one; see
    /// [`is_challenge`](Self::is_challenge).
    pub fn challenge(status: StatusCode, headers: &HeaderMap) -> Option<DpopChallenge> {
        challenge::of(status, headers)
    }

    /// A snapshot of the counters, shared by every clone.
    pub fn stats(&self) -> DpopStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DpopStats {
            proofs: read(&counters.proofs),
            nonces: read(&counters.nonces),
            token_endpoint_nonce_retries: read(&counters.token_nonce_retries),
            token_endpoint_nonce_refusals: read(&counters.token_nonce_refusals),
        }
    }

    /// The refresher sent a token request again after a nonce challenge.
    pub(crate) fn count_token_nonce_retry(&self) {
        let counters = &self.shared.counters;
        counters.token_nonce_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// The refresher gave up after a second nonce challenge in a row.
    pub(crate) fn count_token_nonce_refusal(&self) {
        let counters = &self.shared.counters;
        counters
            .token_nonce_refusals
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Two values are equal when they sign with the same key (the same thumbprint), whatever
/// nonces each has learnt.
impl PartialEq for Dpop {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared) || {
            let (mine, theirs) = (self.shared.key.load(), other.shared.key.load());
            Arc::ptr_eq(&mine, &theirs) || mine.thumbprint() == theirs.thumbprint()
        }
    }
}

impl Eq for Dpop {}

impl fmt::Debug for Dpop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.shared.key.load();
        f.debug_struct("Dpop")
            .field("algorithm", &key.algorithm())
            .field("thumbprint", &key.thumbprint())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
