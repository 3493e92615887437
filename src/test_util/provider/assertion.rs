//! Keycloak's "Signed JWT" client authenticator (`private_key_jwt`, RFC 7523), with the
//! feature `private-key-jwt`: the assertion's signature checked with the client's registered
//! public key, its claims as Keycloak checks them, each `jti` accepted once.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::StatusCode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;

use super::protocol::{Form, OAuthError};
use super::{ProviderShared, TOKEN_PATH};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[derive(Deserialize)]
struct AssertionHeader {
    alg: String,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<serde_json::Value>,
    exp: Option<u64>,
    jti: Option<String>,
}

/// Keycloak's words for a signed JWT it refuses, with why.
fn refused(why: &str) -> OAuthError {
    OAuthError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized_client",
        format!("Client authentication with signed JWT failed: {why}"),
    )
}

impl ProviderShared {
    /// Checks the form's `client_assertion` against the registered key
    /// ([`ProviderConfig::client_jwk`](super::ProviderConfig::client_jwk)).
    pub(super) fn check_assertion(&self, form: &Form) -> Result<(), OAuthError> {
        if form.get("client_assertion_type") != Some(JWT_BEARER) {
            return Err(OAuthError::invalid_request(
                "Parameter client_assertion_type is missing or has wrong value",
            ));
        }
        let assertion = form.require("client_assertion")?;
        let jwk = self
            .config
            .client_jwk
            .as_deref()
            .ok_or_else(|| refused("the client has no key registered"))?;
        let key = serde_json::from_str::<Jwk>(jwk)
            .ok()
            .and_then(|jwk| DecodingKey::from_jwk(&jwk).ok())
            .ok_or_else(|| refused("the client's registered key cannot be read"))?;
        let mut parts = assertion.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refused("not a JWT"));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| refused("not a JWT"))
        };
        let header: AssertionHeader =
            serde_json::from_slice(&decode(header)?).map_err(|_| refused("not a JWT"))?;
        let algorithm = match header.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            _ => return Err(refused("unsupported algorithm")),
        };
        let verifier =
            (jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.verifier_factory)(&algorithm, &key)
                .map_err(|_| refused("the algorithm does not fit the client's key"))?;
        let signed = &assertion[..header_and_payload_len(assertion)];
        verifier
            .verify(signed.as_bytes(), &decode(signature)?)
            .map_err(|_| refused("Signature on JWT token failed validation"))?;
        let claims: Claims =
            serde_json::from_slice(&decode(payload)?).map_err(|_| refused("not a JWT"))?;
        self.check_claims(&claims)
    }

    fn check_claims(&self, claims: &Claims) -> Result<(), OAuthError> {
        let client_id = self.config.client_id.as_str();
        if claims.iss.as_deref() != Some(client_id) || claims.sub.as_deref() != Some(client_id) {
            return Err(refused("iss and sub must be the client_id"));
        }
        let token_url = self.url(TOKEN_PATH);
        let accepted = |aud: &str| aud == self.issuer || aud == token_url;
        let audience_ok = match &claims.aud {
            Some(serde_json::Value::String(aud)) => accepted(aud),
            Some(serde_json::Value::Array(auds)) => {
                auds.iter().filter_map(|aud| aud.as_str()).any(accepted)
            }
            _ => false,
        };
        if !audience_ok {
            return Err(refused("Token audience doesn't match domain"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if claims.exp.is_none_or(|exp| exp <= now) {
            return Err(refused("Token is not active"));
        }
        let jti = claims
            .jti
            .clone()
            .ok_or_else(|| refused("Token reuse detected"))?;
        let mut state = self.lock();
        if !state.assertion_ids.insert(jti) {
            return Err(refused("Token reuse detected"));
        }
        state.stats.client_auth_jwt += 1;
        Ok(())
    }
}

/// The length of `header.payload`, the signed part of a compact JWS.
fn header_and_payload_len(assertion: &str) -> usize {
    assertion.rfind('.').unwrap_or(0)
}
