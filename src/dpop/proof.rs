//! One proof (RFC 9449 §4): a JWT whose header is the key's (made once) and whose claims name
//! the request: `jti`, `htm`, `htu`, `iat`, and `ath` and `nonce` when they apply.

use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, Method, Uri};
use serde::Serialize;

use super::error::{DpopError, DpopErrorKind};
use super::key::Key;

/// Random bytes in a `jti`: 128 bits, so that two proofs never share one.
const JTI_BYTES: usize = 16;

/// Where a request goes, as proofs and nonces see it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Target {
    /// `scheme://authority/path`: no query, no fragment, no user info; scheme and host in
    /// lower case, the scheme's default port left out (RFC 9449 §4.3's normalisation, RFC
    /// 3986 §6.2.2 and §6.2.3).
    pub(super) htu: String,
    /// `scheme://authority`, the same way: whose nonce the proof carries.
    pub(super) origin: String,
}

fn uri_error(message: &'static str) -> DpopError {
    DpopError::new(DpopErrorKind::Uri, message)
}

/// The target of a request to `uri`, which must be absolute `http` or `https`.
pub(super) fn target(uri: &Uri) -> Result<Target, DpopError> {
    let scheme = uri
        .scheme_str()
        .ok_or_else(|| uri_error("a proof needs an absolute URI (this one has no scheme)"))?
        .to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(uri_error("a proof's URI must be http or https")),
    };
    let host = uri
        .host()
        .filter(|host| !host.is_empty())
        .ok_or_else(|| uri_error("a proof needs an absolute URI (this one has no host)"))?
        .to_ascii_lowercase();
    let origin = match uri.port_u16() {
        Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    };
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    Ok(Target {
        htu: format!("{origin}{path}"),
        origin,
    })
}

/// `ath`: the base64url SHA-256 of the access token's ASCII (RFC 9449 §4.2).
pub(super) fn access_token_hash(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, access_token.as_bytes()))
}

#[derive(Serialize)]
struct Claims<'a> {
    jti: &'a str,
    htm: &'a str,
    htu: &'a str,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ath: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

/// A signed proof for `method` to `target`, as a header value marked sensitive.
pub(super) fn sign(
    key: &Key,
    method: &Method,
    target: &Target,
    access_token: Option<&str>,
    nonce: Option<&str>,
) -> Result<HeaderValue, DpopError> {
    let mut jti = [0u8; JTI_BYTES];
    aws_lc_rs::rand::fill(&mut jti)
        .map_err(|_| DpopError::new(DpopErrorKind::Sign, "no randomness for the proof's jti"))?;
    let jti = URL_SAFE_NO_PAD.encode(jti);
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = Claims {
        jti: &jti,
        htm: method.as_str(),
        htu: &target.htu,
        iat,
        ath: access_token.map(access_token_hash),
        nonce,
    };
    let claims = serde_json::to_vec(&claims).map_err(|error| {
        DpopError::new(DpopErrorKind::Sign, "the proof's claims cannot be encoded")
            .with_source(error)
    })?;
    // Header, claims and an ES256 or Ed25519 signature (86 characters): one allocation.
    let mut jwt = String::with_capacity(key.header().len() + claims.len() * 4 / 3 + 96);
    jwt.push_str(key.header());
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
    let signature = key.sign(jwt.as_bytes())?;
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
    let mut value = HeaderValue::try_from(jwt).map_err(|error| {
        DpopError::new(DpopErrorKind::Sign, "the proof is not a header value").with_source(error)
    })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target_of(uri: &str) -> Result<Target, DpopError> {
        target(&uri.parse().unwrap())
    }

    #[test]
    fn htu_has_no_query_fragment_or_user_info_and_is_normalised() {
        let cases = [
            (
                "https://API.Example.com/v1/items?page=2",
                "https://api.example.com/v1/items",
            ),
            ("HTTPS://api.example.com:443/x", "https://api.example.com/x"),
            ("http://127.0.0.1:80/token", "http://127.0.0.1/token"),
            (
                "http://127.0.0.1:8080/realms/r/token",
                "http://127.0.0.1:8080/realms/r/token",
            ),
            ("https://api.example.com", "https://api.example.com/"),
            (
                "https://user@api.example.com/me",
                "https://api.example.com/me",
            ),
            ("http://[::1]:3000/a/b/", "http://[::1]:3000/a/b/"),
            // Percent-encodings go as the request sends them: the server sees those bytes.
            (
                "https://api.example.com/a%2Fb?x#y",
                "https://api.example.com/a%2Fb",
            ),
        ];
        for (uri, htu) in cases {
            assert_eq!(target_of(uri).unwrap().htu, htu, "{uri}");
        }
        assert_eq!(
            target_of("https://api.example.com:8443/x?y")
                .unwrap()
                .origin,
            "https://api.example.com:8443"
        );
    }

    #[test]
    fn relative_and_other_uris_are_refused() {
        for uri in ["/user/me", "ftp://files.example/x", "urn:x"] {
            let Ok(parsed) = uri.parse::<Uri>() else {
                continue;
            };
            let error = target(&parsed).unwrap_err();
            assert_eq!(error.kind(), DpopErrorKind::Uri, "{uri}");
        }
    }

    // RFC 9449 §7.1's example: this access token and this `ath`.
    #[test]
    fn ath_is_the_rfc_example() {
        assert_eq!(
            access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
            "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
        );
    }
}
