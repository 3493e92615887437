//! The client's private key for `private_key_jwt` (RFC 7523), and the assertions it signs.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair,
    EcdsaSigningAlgorithm, RsaKeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::error::{Error, ErrorKind};
use crate::jose::{self, Wiped};

/// How long an assertion is valid: RFC 7523 §3 wants an `exp`; a minute outlives any clock
/// skew a server tolerates without making a captured assertion useful for long.
const ASSERTION_LIFETIME_SECS: u64 = 60;

/// The signature algorithm of a [`ClientKey`]'s assertions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SigningAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, for RSA keys (2048 to 8192 bits).
    Rs256,
    /// ECDSA with P-256 and SHA-256.
    Es256,
    /// ECDSA with P-384 and SHA-384.
    Es384,
}

impl SigningAlgorithm {
    /// The JOSE name (`alg`): `RS256`, `ES256`, `ES384`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
        }
    }

    fn jose(self) -> Algorithm {
        match self {
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
            Self::Es384 => Algorithm::ES384,
        }
    }
}

/// A client's private key, for `private_key_jwt` client authentication
/// ([`ClientAuthMethod::PrivateKeyJwt`](super::ClientAuthMethod::PrivateKeyJwt)). Feature
/// `private-key-jwt`.
///
/// Read from PEM ([`from_pem`](Self::from_pem)), DER ([`from_der`](Self::from_der)) or a
/// private JWK ([`from_jwk`](Self::from_jwk)); an RSA key signs RS256, a P-256 key ES256, a
/// P-384 key ES384. The key is checked when it is read: a key that cannot sign is
/// [`ErrorKind::Config`] then, never a failure on the first refresh. Its `Debug` shows the
/// algorithm and the key id, nothing of the key.
///
/// ```no_run
/// use tower_auth_refresh::oauth2::{ClientKey, OAuth2Refresher};
///
/// # fn main() -> Result<(), tower_auth_refresh::BoxError> {
/// let key = ClientKey::from_pem(&std::fs::read("client-key.pem")?)?.key_id("2024-key-1");
/// let refresher = OAuth2Refresher::builder("https://idp.example/token", "my-client")
///     .client_key(key)
///     .client_credentials()
///     .build_http()?;
/// # let _ = refresher;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientKey {
    key: EncodingKey,
    algorithm: SigningAlgorithm,
    key_id: Option<String>,
    x5t_s256: Option<String>,
}

#[derive(Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    kid: Option<String>,
    x: Option<String>,
    y: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<Wiped>,
    p: Option<Wiped>,
    q: Option<Wiped>,
    dp: Option<Wiped>,
    dq: Option<Wiped>,
    qi: Option<Wiped>,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: u64,
    exp: u64,
}

fn config(message: &'static str) -> Error {
    Error::new(ErrorKind::Config, message)
}

impl ClientKey {
    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`, RSA or EC), PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`, with or without the
    /// `EC PARAMETERS` block before it). An encrypted key must be decrypted first.
    pub fn from_pem(pem: &[u8]) -> Result<Self, Error> {
        Self::from_der(&jose::private_key_der(pem).map_err(key_error)?)
    }

    /// Reads a DER private key: PKCS#8 (RSA or EC), PKCS#1 (RSA) or SEC1 (EC).
    pub fn from_der(der: &[u8]) -> Result<Self, Error> {
        if RsaKeyPair::from_pkcs8(der).is_ok() {
            return Self::rsa_pkcs8(der);
        }
        if RsaKeyPair::from_der(der).is_ok() {
            return Ok(Self::new(
                EncodingKey::from_rsa_der(der),
                SigningAlgorithm::Rs256,
            ));
        }
        for (signing, algorithm) in curves() {
            if let Ok(pair) = EcdsaKeyPair::from_private_key_der(signing, der) {
                return Self::ec(&pair, algorithm);
            }
        }
        Err(config(
            "the client key is not an RSA (2048 bits or more), P-256 or P-384 private key",
        ))
    }

    /// Reads a private JWK (RFC 7517): `"kty":"RSA"` with `n`, `e`, `d`, `p`, `q`, `dp`, `dq`,
    /// `qi`, or `"kty":"EC"` with `crv` `P-256` / `P-384`, `x`, `y`, `d`. Its `kid` becomes the
    /// assertions' key id; an `alg` other than the key's is refused.
    pub fn from_jwk(jwk: &str) -> Result<Self, Error> {
        let jwk: PrivateJwk = serde_json::from_str(jwk)
            .map_err(|error| config("the client key is not a JWK").with_source(error))?;
        let bytes = |field: &Option<String>| jose::decode(field.as_deref()).map_err(key_error);
        let secret = |field: &Option<Wiped>| jose::decode_secret(field.as_ref()).map_err(key_error);
        let key = match jwk.kty.as_str() {
            "EC" => {
                let (signing, algorithm) = match jwk.crv.as_deref() {
                    Some("P-256") => (&ECDSA_P256_SHA256_FIXED_SIGNING, SigningAlgorithm::Es256),
                    Some("P-384") => (&ECDSA_P384_SHA384_FIXED_SIGNING, SigningAlgorithm::Es384),
                    _ => return Err(config("the JWK's curve is not P-256 or P-384")),
                };
                let point =
                    jose::ec_point(jwk.x.as_deref(), jwk.y.as_deref()).map_err(key_error)?;
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    signing,
                    &secret(&jwk.d)?,
                    &point,
                )
                .map_err(|error| {
                    config("the JWK is not a valid EC private key").with_source(error)
                })?;
                Self::ec(&pair, algorithm)?
            }
            "RSA" => {
                use aws_lc_rs::rsa::{KeyPairComponents, PublicKeyComponents};
                let components = KeyPairComponents {
                    public_key: PublicKeyComponents {
                        n: bytes(&jwk.n)?,
                        e: bytes(&jwk.e)?,
                    },
                    d: secret(&jwk.d)?,
                    p: secret(&jwk.p)?,
                    q: secret(&jwk.q)?,
                    dP: secret(&jwk.dp)?,
                    dQ: secret(&jwk.dq)?,
                    qInv: secret(&jwk.qi)?,
                };
                let pair = RsaKeyPair::from_components(&components).map_err(|error| {
                    config("the JWK is not a valid RSA private key").with_source(error)
                })?;
                let pkcs8 = pair
                    .as_der()
                    .map_err(|_| config("the RSA key could not be encoded"))?;
                Self::rsa_pkcs8(pkcs8.as_ref())?
            }
            _ => return Err(config("the JWK's kty is not RSA or EC")),
        };
        if let Some(alg) = &jwk.alg {
            if alg != key.algorithm.as_str() {
                return Err(config("the JWK's alg is not the one its key signs"));
            }
        }
        Ok(match jwk.kid {
            Some(kid) => key.key_id(kid),
            None => key,
        })
    }

    /// The key id sent as the assertions' `kid` header, for a server that holds several keys
    /// of the client (a JWKS).
    #[must_use]
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.key_id = Some(kid.into());
        self
    }

    /// The SHA-256 thumbprint of the key's X.509 certificate (base64url of the DER's hash),
    /// sent as the assertions' `x5t#S256` header: how Microsoft Entra ID finds the certificate
    /// credential a client registered (it wants this, or `x5t`, not `kid`).
    #[must_use]
    pub fn x509_thumbprint_sha256(mut self, thumbprint: impl Into<String>) -> Self {
        self.x5t_s256 = Some(thumbprint.into());
        self
    }

    /// The algorithm the assertions are signed with.
    pub fn algorithm(&self) -> SigningAlgorithm {
        self.algorithm
    }

    fn new(key: EncodingKey, algorithm: SigningAlgorithm) -> Self {
        Self {
            key,
            algorithm,
            key_id: None,
            x5t_s256: None,
        }
    }

    /// jsonwebtoken keeps RSA keys as PKCS#1; its PEM reader unwraps PKCS#8.
    fn rsa_pkcs8(der: &[u8]) -> Result<Self, Error> {
        let pem = Zeroizing::new(pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec())));
        let key = EncodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|error| config("the RSA key could not be read").with_source(error))?;
        Self::checked(key, SigningAlgorithm::Rs256)
    }

    fn ec(pair: &EcdsaKeyPair, algorithm: SigningAlgorithm) -> Result<Self, Error> {
        let pkcs8 = pair
            .to_pkcs8v1()
            .map_err(|_| config("the EC key could not be encoded"))?;
        Self::checked(EncodingKey::from_ec_der(pkcs8.as_ref()), algorithm)
    }

    /// A key that signs: tried once now, so that a bad one fails here.
    fn checked(key: EncodingKey, algorithm: SigningAlgorithm) -> Result<Self, Error> {
        let key = Self::new(key, algorithm);
        key.sign(b"check")?;
        Ok(key)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        // jsonwebtoken's aws-lc-rs signer, called directly: its process-wide provider would
        // panic in a program that also enables its `rust_crypto` feature.
        let factory = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.signer_factory;
        let signer = factory(&self.algorithm.jose(), &self.key)
            .map_err(|error| config("the client key cannot sign").with_source(error))?;
        signer.try_sign(message).map_err(|error| {
            Error::new(ErrorKind::Config, "the client key failed to sign").with_source(error)
        })
    }

    /// A client assertion (RFC 7523 §2.2, §3) for `client_id` at `audience` (the token
    /// endpoint): `iss` and `sub` the client, a random `jti`, `iat` now, `exp` a minute on.
    pub(super) fn assertion(&self, client_id: &str, audience: &str) -> Result<String, Error> {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti)
            .map_err(|_| config("no randomness for the assertion's jti"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: client_id,
            sub: client_id,
            aud: audience,
            jti: URL_SAFE_NO_PAD.encode(jti),
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        let mut header = Header::new(self.algorithm.jose());
        header.kid = self.key_id.clone();
        header.x5t_s256 = self.x5t_s256.clone();
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(to_json(&header)?),
            URL_SAFE_NO_PAD.encode(to_json(&claims)?)
        );
        let signature = self.sign(signing_input.as_bytes())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value)
        .map_err(|error| config("the assertion could not be encoded").with_source(error))
}

fn curves() -> [(&'static EcdsaSigningAlgorithm, SigningAlgorithm); 2] {
    [
        (&ECDSA_P256_SHA256_FIXED_SIGNING, SigningAlgorithm::Es256),
        (&ECDSA_P384_SHA384_FIXED_SIGNING, SigningAlgorithm::Es384),
    ]
}

/// A key that could not be read, as the refresher's configuration error.
fn key_error(error: jose::KeyError) -> Error {
    let config = config(error.message);
    match error.source {
        Some(source) => config.with_source(source),
        None => config,
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("algorithm", &self.algorithm.as_str())
            .field("key_id", &self.key_id)
            .field("x5t#S256", &self.x5t_s256)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
