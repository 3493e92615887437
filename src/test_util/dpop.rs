//! DPoP proofs as a server checks them (RFC 9449 §4.3), for the identity provider and the API
//! alike: the JOSE header (`typ`, an asymmetric `alg`, a public `jwk`), the signature with that
//! key, the claims (`jti`, `htm`, `htu`, `iat` within a minute, `ath` for an access token),
//! and the key's RFC 7638 thumbprint. Nonces and replays are the caller's: each server has its
//! own. Written apart from the client's code (`crate::dpop`), so that the two check each other.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{Method, Uri};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::ids::Ids;

/// How far a proof's `iat` may be from this server's clock, either way.
const IAT_WINDOW_SECS: u64 = 60;

/// A proof that passed the checks.
pub(super) struct Verified {
    /// The thumbprint of the proof's key.
    pub(super) jkt: String,
    pub(super) jti: String,
    pub(super) nonce: Option<String>,
}

/// What a proof is checked against: the request it came with.
pub(super) struct Expected<'a> {
    pub(super) method: &'a Method,
    /// The URL the server is at for this request, without query.
    pub(super) htu: &'a str,
    /// The access token sent with it, at a resource server.
    pub(super) access_token: Option<&'a str>,
}

/// Checks a `DPoP` header; the error says why it is refused, as a server would.
pub(super) fn verify(proof: &str, expected: &Expected<'_>) -> Result<Verified, &'static str> {
    let mut parts = proof.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("DPoP proof is not a compact JWS");
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| "DPoP proof is malformed")
    };
    let header: Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| "DPoP proof is malformed")?;
    let claims: Value =
        serde_json::from_slice(&decode(payload)?).map_err(|_| "DPoP proof is malformed")?;
    if header["typ"] != "dpop+jwt" {
        return Err("DPoP proof typ must be dpop+jwt");
    }
    let algorithm = match header["alg"].as_str() {
        Some("ES256") => Algorithm::ES256,
        Some("EdDSA" | "Ed25519") => Algorithm::EdDSA,
        _ => return Err("DPoP proof alg is not supported"),
    };
    let jwk_value = &header["jwk"];
    if jwk_value.get("d").is_some() {
        return Err("DPoP proof jwk must not contain a private key");
    }
    let key = serde_json::from_value::<Jwk>(jwk_value.clone())
        .ok()
        .and_then(|jwk| DecodingKey::from_jwk(&jwk).ok())
        .ok_or("DPoP proof jwk is not a public key")?;
    let verifier =
        (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.verifier_factory)(&algorithm, &key)
            .map_err(|_| "DPoP proof alg does not fit its jwk")?;
    let signed = &proof[..proof.rfind('.').unwrap_or(0)];
    verifier
        .verify(signed.as_bytes(), &decode(signature)?)
        .map_err(|_| "DPoP proof signature is invalid")?;
    let jti = claims["jti"]
        .as_str()
        .filter(|jti| !jti.is_empty())
        .ok_or("DPoP proof must have a jti string property")?;
    if claims["htm"].as_str() != Some(expected.method.as_str()) {
        return Err("DPoP proof htm mismatch");
    }
    let htu = claims["htu"].as_str().and_then(normalised);
    if htu.is_none() || htu != normalised(expected.htu) {
        return Err("DPoP proof htu mismatch");
    }
    let iat = claims["iat"]
        .as_u64()
        .ok_or("DPoP proof must have a iat number property")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    if iat.abs_diff(now) > IAT_WINDOW_SECS {
        return Err("DPoP proof iat is not recent enough");
    }
    if let Some(token) = expected.access_token {
        let ath = URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            token.as_bytes(),
        ));
        if claims["ath"].as_str() != Some(ath.as_str()) {
            return Err("DPoP proof ath mismatch");
        }
    }
    let nonce = match &claims["nonce"] {
        Value::Null => None,
        Value::String(nonce) => Some(nonce.clone()),
        _ => return Err("DPoP proof nonce must be a string"),
    };
    Ok(Verified {
        jkt: thumbprint(jwk_value).ok_or("DPoP proof jwk is not a public key")?,
        jti: jti.to_owned(),
        nonce,
    })
}

/// RFC 7638: the key type's required members, sorted, as compact JSON, hashed.
fn thumbprint(jwk: &Value) -> Option<String> {
    let required: &[&str] = match jwk["kty"].as_str()? {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        _ => return None,
    };
    let mut members = BTreeMap::new();
    for name in required {
        members.insert(*name, jwk.get(*name)?.as_str()?);
    }
    let canonical = serde_json::to_string(&members).ok()?;
    let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes());
    Some(URL_SAFE_NO_PAD.encode(hash))
}

/// A URL as RFC 9449 §4.3 compares them: without query and fragment, scheme and host in lower
/// case, no default port.
fn normalised(url: &str) -> Option<String> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    let default = if scheme == "https" { 443 } else { 80 };
    let port = uri.port_u16().filter(|port| *port != default);
    let path = if uri.path().is_empty() {
        "/"
    } else {
        uri.path()
    };
    Some(match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    })
}

/// A server's nonces: the current one and the one before it, which is still taken (as node
/// oidc-provider takes the previous window's) while answers bring the current one.
pub(super) struct Nonces {
    current: String,
    previous: Option<String>,
}

impl Nonces {
    pub(super) fn new(ids: &mut Ids) -> Self {
        Self {
            current: ids.signature(),
            previous: None,
        }
    }

    pub(super) fn current(&self) -> &str {
        &self.current
    }

    /// A new current nonce; the old one is still taken, the one before it no more.
    pub(super) fn rotate(&mut self, ids: &mut Ids) {
        let next = ids.signature();
        self.previous = Some(std::mem::replace(&mut self.current, next));
    }

    /// Whether a proof's nonce is one this server takes.
    pub(super) fn accepts(&self, nonce: Option<&str>) -> bool {
        nonce.is_some_and(|nonce| nonce == self.current || self.previous.as_deref() == Some(nonce))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpop::Dpop;

    #[test]
    fn a_proof_for_another_request_is_refused() {
        let dpop = Dpop::generate().unwrap();
        let url = "http://127.0.0.1:8080/realms/r/token";
        let proof = dpop
            .proof(&Method::POST, &url.parse().unwrap(), None)
            .unwrap();
        let proof = proof.to_str().unwrap();
        fn expect<'a>(method: &'a Method, htu: &'a str, token: Option<&'a str>) -> Expected<'a> {
            Expected {
                method,
                htu,
                access_token: token,
            }
        }
        let ok = verify(proof, &expect(&Method::POST, url, None)).unwrap();
        assert_eq!(ok.jkt, dpop.thumbprint());
        assert_eq!(ok.nonce, None);
        assert_eq!(
            verify(proof, &expect(&Method::GET, url, None)).err(),
            Some("DPoP proof htm mismatch")
        );
        assert_eq!(
            verify(
                proof,
                &expect(&Method::POST, "http://127.0.0.1:8080/other", None)
            )
            .err(),
            Some("DPoP proof htu mismatch")
        );
        assert_eq!(
            verify(proof, &expect(&Method::POST, url, Some("token"))).err(),
            Some("DPoP proof ath mismatch")
        );
        // A changed claim breaks the signature.
        let mut parts: Vec<String> = proof.split('.').map(str::to_owned).collect();
        let claims = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let claims = String::from_utf8(claims).unwrap().replace("POST", "GET");
        parts[1] = URL_SAFE_NO_PAD.encode(claims);
        assert_eq!(
            verify(&parts.join("."), &expect(&Method::GET, url, None)).err(),
            Some("DPoP proof signature is invalid")
        );
        for garbage in ["", "a.b", "a.b.c", "a.b.c.d", "..."] {
            assert!(verify(garbage, &expect(&Method::POST, url, None)).is_err());
        }
    }

    #[test]
    fn the_thumbprint_of_the_rfc_example() {
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        });
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
        );
    }

    #[test]
    fn nonces_rotate_with_one_of_grace() {
        let mut ids = Ids::new();
        let mut nonces = Nonces::new(&mut ids);
        let first = nonces.current().to_owned();
        assert!(nonces.accepts(Some(&first)));
        assert!(!nonces.accepts(None));
        nonces.rotate(&mut ids);
        assert!(nonces.accepts(Some(&first)), "the previous one");
        nonces.rotate(&mut ids);
        assert!(!nonces.accepts(Some(&first)), "two rotations ago");
        assert!(nonces.accepts(Some(nonces.current())));
    }
}
