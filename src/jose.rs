//! Reading private keys, shared by `private_key_jwt` client keys and DPoP keys: PEM blocks,
//! base64url JWK members, and JWK members that hold key material (wiped when dropped).
//!
//! Each reader returns a [`KeyError`]; the caller turns it into its own error type.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::refresh::BoxError;

/// Why a key could not be read: a message without key material, and perhaps a cause.
#[derive(Debug)]
pub(crate) struct KeyError {
    pub(crate) message: &'static str,
    pub(crate) source: Option<BoxError>,
}

impl KeyError {
    pub(crate) fn new(message: &'static str) -> Self {
        Self {
            message,
            source: None,
        }
    }

    fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }
}

/// The DER of the first private key in a PEM text: PKCS#8 (`PRIVATE KEY`), PKCS#1
/// (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`); other blocks (`EC PARAMETERS`, certificates)
/// are passed over.
pub(crate) fn private_key_der(pem: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let blocks = pem::parse_many(pem)
        .map_err(|error| KeyError::new("the key is not PEM").with_source(error))?;
    let mut encrypted = false;
    for block in blocks {
        match block.tag() {
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                return Ok(Zeroizing::new(block.into_contents()));
            }
            "ENCRYPTED PRIVATE KEY" => encrypted = true,
            _ => {}
        }
    }
    Err(KeyError::new(if encrypted {
        "the key is encrypted; decrypt it first (openssl pkcs8 -nocrypt)"
    } else {
        "the PEM has no private key (a certificate or a public key is not enough)"
    }))
}

/// A JWK member in base64url, with or without padding (RFC 7515 §2 says without; some tools
/// add it).
pub(crate) fn decode(field: Option<&str>) -> Result<Vec<u8>, KeyError> {
    let text = field.ok_or_else(|| KeyError::new("the JWK lacks a member its key type needs"))?;
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .map_err(|error| KeyError::new("a JWK member is not base64url").with_source(error))
}

/// A private JWK member (`d`, `p`, …), wiped from memory when dropped.
#[derive(Deserialize)]
#[serde(from = "String")]
pub(crate) struct Wiped(Zeroizing<String>);

impl From<String> for Wiped {
    fn from(text: String) -> Self {
        Self(Zeroizing::new(text))
    }
}

/// A private JWK member, decoded into a buffer that is wiped when dropped.
pub(crate) fn decode_secret(field: Option<&Wiped>) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    decode(field.map(|value| value.0.as_str())).map(Zeroizing::new)
}

/// The uncompressed SEC1 point `04 ‖ x ‖ y` of an EC JWK.
pub(crate) fn ec_point(x: Option<&str>, y: Option<&str>) -> Result<Vec<u8>, KeyError> {
    let mut point = vec![0x04];
    point.extend(decode(x)?);
    point.extend(decode(y)?);
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_a_private_key_says_why() {
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(
            private_key_der(public.as_bytes())
                .unwrap_err()
                .message
                .contains("no private key")
        );
        let encrypted =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert!(
            private_key_der(encrypted.as_bytes())
                .unwrap_err()
                .message
                .contains("encrypted")
        );
        assert_eq!(
            private_key_der(b"\xff\xfe garbage").unwrap_err().message,
            "the PEM has no private key (a certificate or a public key is not enough)"
        );
    }

    #[test]
    fn base64url_with_or_without_padding() {
        assert_eq!(decode(Some("AQ")).unwrap(), [1]);
        assert_eq!(decode(Some("AQ==")).unwrap(), [1]);
        assert!(decode(Some("*")).is_err());
        assert!(decode(None).is_err());
        assert_eq!(ec_point(Some("AQ"), Some("Ag")).unwrap(), [4, 1, 2]);
    }
}
