//! The token endpoint's DPoP (RFC 9449 §5, §8), with the feature `dpop`, checked as node
//! oidc-provider checks it: a proof's header, signature and claims (`htm` POST, `htu` the
//! token endpoint, `iat` within a minute), then the server's nonce when
//! [`ProviderConfig::dpop_nonce`](super::ProviderConfig::dpop_nonce) asks for one, then its
//! `jti`, accepted once. The tokens are then bound to the proof's key (`cnf.jkt`).

use http::header::HeaderMap;
use http::{Method, StatusCode};

use super::ProviderShared;
use super::protocol::{Answer, OAuthError};
use crate::test_util::dpop::{self, Expected};

fn invalid_proof(why: &str) -> OAuthError {
    OAuthError::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why)
}

impl ProviderShared {
    /// The key a token request's tokens are bound to (`None`: Bearer tokens), or why the
    /// request is refused.
    pub(super) fn dpop_binding(&self, headers: &HeaderMap) -> Result<Option<String>, OAuthError> {
        if !self.config.dpop {
            return Ok(None);
        }
        let mut proofs = headers.get_all("dpop").iter();
        let proof = match (proofs.next(), proofs.next()) {
            (None, _) if self.config.require_dpop => {
                self.lock().stats.dpop_missing += 1;
                return Err(OAuthError::invalid_grant(
                    StatusCode::BAD_REQUEST,
                    "DPoP proof JWT not provided",
                ));
            }
            (None, _) => return Ok(None),
            (Some(_), Some(_)) => return Err(self.refuse_proof("more than one DPoP header")),
            (Some(proof), None) => proof
                .to_str()
                .map_err(|_| self.refuse_proof("DPoP proof is malformed"))?,
        };
        let expected = Expected {
            method: &Method::POST,
            htu: &self.token_url,
            access_token: None,
        };
        let verified = dpop::verify(proof, &expected).map_err(|why| self.refuse_proof(why))?;
        let mut state = self.lock();
        if self.config.dpop_nonce {
            if self.config.dpop_nonce_every_request {
                // Twice: the nonce the last answer gave is not even the previous one now.
                let state = &mut *state;
                state.dpop_nonces.rotate(&mut state.ids);
                state.dpop_nonces.rotate(&mut state.ids);
            }
            if !state.dpop_nonces.accepts(verified.nonce.as_deref()) {
                state.stats.dpop_nonce_challenges += 1;
                let why = match verified.nonce {
                    None => "nonce is required in the DPoP proof",
                    Some(_) => "invalid nonce in DPoP proof",
                };
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "use_dpop_nonce",
                    why,
                ));
            }
        }
        if !state.dpop_jtis.insert(verified.jti) {
            state.stats.dpop_replays += 1;
            return Err(OAuthError::invalid_grant(
                StatusCode::BAD_REQUEST,
                "DPoP proof JWT Replay detected",
            ));
        }
        state.stats.dpop_proofs += 1;
        Ok(Some(verified.jkt))
    }

    fn refuse_proof(&self, why: &str) -> OAuthError {
        self.lock().stats.dpop_invalid_proofs += 1;
        invalid_proof(why)
    }

    /// A token-endpoint answer with the current nonce, when the provider gives nonces.
    pub(super) fn with_dpop_nonce(&self, mut answer: Answer) -> Answer {
        if self.config.dpop_nonce {
            if let Ok(nonce) = http::HeaderValue::from_str(self.lock().dpop_nonces.current()) {
                answer.headers.insert("dpop-nonce", nonce);
            }
        }
        answer
    }
}
