//! The client's DPoP key: made or read once, then used for every proof. What a proof needs of
//! it that never changes (the JOSE header with the public key, the thumbprint) is computed here
//! once, so that a proof costs one signature and the claims.

use std::fmt::Write as _;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::encoding::AsBigEndian as _;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters,
    EllipticCurveKeyType, Jwk, OctetKeyPairParameters, OctetKeyPairType,
};
use jsonwebtoken::{Algorithm, Header};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::error::{DpopError, DpopErrorKind};
use crate::jose::{self, Wiped};

/// The media type of a proof (RFC 9449 §4.2).
const PROOF_TYPE: &str = "dpop+jwt";

fn key_error(message: &'static str) -> DpopError {
    DpopError::new(DpopErrorKind::Key, message)
}

enum Pair {
    /// ECDSA with P-256 and SHA-256: what every DPoP server accepts (RFC 9449 §4.2 names it;
    /// the AT Protocol requires it).
    Es256(EcdsaKeyPair),
    /// EdDSA with Ed25519 (RFC 8037).
    Ed25519(Ed25519KeyPair),
}

/// A key and what its proofs share.
pub(super) struct Key {
    pair: Pair,
    /// RFC 7638 SHA-256 thumbprint, base64url: the `cnf.jkt` of tokens bound to this key.
    thumbprint: String,
    /// The public JWK (RFC 7517), as the proofs' header carries it.
    public_jwk: serde_json::Value,
    /// The proofs' JOSE header (`typ`, `alg`, `jwk`), base64url: the same for every proof.
    header: String,
}

#[derive(Deserialize)]
struct PrivateJwk {
    kty: String,
    crv: Option<String>,
    alg: Option<String>,
    x: Option<String>,
    y: Option<String>,
    d: Option<Wiped>,
}

impl Key {
    /// A fresh P-256 key.
    pub(super) fn generate_es256() -> Result<Self, DpopError> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|_| {
            DpopError::new(DpopErrorKind::Sign, "no randomness to make a P-256 key")
        })?;
        Self::new(Pair::Es256(pair))
    }

    /// A fresh Ed25519 key.
    pub(super) fn generate_ed25519() -> Result<Self, DpopError> {
        let pair = Ed25519KeyPair::generate().map_err(|_| {
            DpopError::new(DpopErrorKind::Sign, "no randomness to make an Ed25519 key")
        })?;
        Self::new(Pair::Ed25519(pair))
    }

    pub(super) fn from_pem(pem: &[u8]) -> Result<Self, DpopError> {
        Self::from_der(&jose::private_key_der(pem)?)
    }

    /// PKCS#8 or SEC1 for P-256, PKCS#8 (v1 or v2) for Ed25519.
    pub(super) fn from_der(der: &[u8]) -> Result<Self, DpopError> {
        if let Ok(pair) = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
        {
            return Self::new(Pair::Es256(pair));
        }
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Self::new(Pair::Ed25519(pair));
        }
        Err(key_error(
            "the key is not a P-256 or Ed25519 private key (PKCS#8 or SEC1)",
        ))
    }

    /// `{"kty":"EC","crv":"P-256","x","y","d"}` or `{"kty":"OKP","crv":"Ed25519","x","d"}`.
    pub(super) fn from_jwk(jwk: &str) -> Result<Self, DpopError> {
        let jwk: PrivateJwk = serde_json::from_str(jwk)
            .map_err(|error| key_error("the key is not a JWK").with_source(error))?;
        if jwk.d.is_none() {
            return Err(key_error(
                "the JWK has no private part (d): a public key cannot sign",
            ));
        }
        let d = jose::decode_secret(jwk.d.as_ref())?;
        let (pair, alg) = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let point = jose::ec_point(jwk.x.as_deref(), jwk.y.as_deref())?;
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &d,
                    &point,
                )
                .map_err(|error| {
                    key_error("the JWK is not a valid P-256 private key").with_source(error)
                })?;
                (Pair::Es256(pair), "ES256")
            }
            ("OKP", Some("Ed25519")) => {
                let x = jose::decode(jwk.x.as_deref())?;
                let pair = Ed25519KeyPair::from_seed_and_public_key(&d, &x).map_err(|error| {
                    key_error("the JWK is not a valid Ed25519 private key").with_source(error)
                })?;
                (Pair::Ed25519(pair), "EdDSA")
            }
            _ => {
                return Err(key_error(
                    "the JWK is not a P-256 (kty EC) or Ed25519 (kty OKP) key",
                ));
            }
        };
        if jwk.alg.as_deref().is_some_and(|given| given != alg) {
            return Err(key_error("the JWK's alg is not the one its key signs"));
        }
        Self::new(pair)
    }

    fn new(pair: Pair) -> Result<Self, DpopError> {
        let (jwk, thumbprint_input) = match &pair {
            Pair::Es256(pair) => {
                // The uncompressed point: 0x04, then x and y, 32 bytes each.
                let point = pair.public_key().as_ref();
                let coordinates = point.get(1..).unwrap_or_default();
                let (x, y) = coordinates.split_at(coordinates.len() / 2);
                let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
                let input = ec_thumbprint_input(&x, &y);
                let parameters = EllipticCurveKeyParameters {
                    key_type: EllipticCurveKeyType::EC,
                    curve: EllipticCurve::P256,
                    x,
                    y,
                };
                (AlgorithmParameters::EllipticCurve(parameters), input)
            }
            Pair::Ed25519(pair) => {
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                let input = okp_thumbprint_input(&x);
                let parameters = OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x,
                };
                (AlgorithmParameters::OctetKeyPair(parameters), input)
            }
        };
        let jwk = Jwk {
            common: CommonParameters::default(),
            algorithm: jwk,
        };
        let mut header = Header::new(match pair {
            Pair::Es256(_) => Algorithm::ES256,
            Pair::Ed25519(_) => Algorithm::EdDSA,
        });
        header.typ = Some(PROOF_TYPE.to_owned());
        header.jwk = Some(jwk.clone());
        let encode = |error| key_error("the public key cannot be encoded").with_source(error);
        let header = serde_json::to_vec(&header).map_err(encode)?;
        let public_jwk = serde_json::to_value(&jwk).map_err(encode)?;
        let key = Self {
            pair,
            thumbprint: thumbprint(&thumbprint_input),
            public_jwk,
            header: URL_SAFE_NO_PAD.encode(header),
        };
        // Signed once now, so that a key that cannot sign fails here, not on a request.
        key.sign(b"check")?;
        Ok(key)
    }

    pub(super) fn algorithm(&self) -> &'static str {
        match self.pair {
            Pair::Es256(_) => "ES256",
            Pair::Ed25519(_) => "EdDSA",
        }
    }

    pub(super) fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    pub(super) fn public_jwk(&self) -> &serde_json::Value {
        &self.public_jwk
    }

    /// The proofs' header, base64url.
    pub(super) fn header(&self) -> &str {
        &self.header
    }

    /// The JWS signature of `message` (for ES256 the fixed-size `r ‖ s`, RFC 7518 §3.4).
    pub(super) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, DpopError> {
        let failed = |_| DpopError::new(DpopErrorKind::Sign, "the DPoP key failed to sign");
        Ok(match &self.pair {
            Pair::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map_err(failed)?
                .as_ref()
                .to_vec(),
            Pair::Ed25519(pair) => pair.try_sign(message).map_err(failed)?.as_ref().to_vec(),
        })
    }

    /// The private JWK, in a buffer that is wiped when dropped: written into room reserved
    /// first, so that no reallocation leaves a copy behind.
    pub(super) fn private_jwk(&self) -> Result<Zeroizing<String>, DpopError> {
        let unreadable = |_| key_error("the DPoP key's private part cannot be read");
        let d: Zeroizing<Vec<u8>> = match &self.pair {
            Pair::Es256(pair) => Zeroizing::new(
                pair.private_key()
                    .as_be_bytes()
                    .map_err(unreadable)?
                    .as_ref()
                    .to_vec(),
            ),
            Pair::Ed25519(pair) => Zeroizing::new(
                pair.seed()
                    .and_then(|seed| seed.as_be_bytes())
                    .map_err(unreadable)?
                    .as_ref()
                    .to_vec(),
            ),
        };
        let public = &self.public_jwk;
        let member = |name: &str| public.get(name).and_then(|value| value.as_str());
        let mut jwk = Zeroizing::new(String::with_capacity(256));
        let _ = write!(
            jwk,
            r#"{{"kty":"{}","crv":"{}","x":"{}""#,
            member("kty").unwrap_or_default(),
            member("crv").unwrap_or_default(),
            member("x").unwrap_or_default()
        );
        if let Some(y) = member("y") {
            let _ = write!(jwk, r#","y":"{y}""#);
        }
        jwk.push_str(r#","d":""#);
        URL_SAFE_NO_PAD.encode_string(&*d, &mut jwk);
        jwk.push_str(r#""}"#);
        Ok(jwk)
    }
}

/// RFC 7638 §3.2: an EC key's required members, in lexicographic order, no spaces.
fn ec_thumbprint_input(x: &str, y: &str) -> String {
    format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#)
}

/// RFC 8037 §2: an OKP key's required members are `crv`, `kty`, `x`.
fn okp_thumbprint_input(x: &str) -> String {
    format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#)
}

/// The base64url SHA-256 of the thumbprint input.
fn thumbprint(input: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, input.as_bytes()))
}

#[cfg(test)]
mod tests;
