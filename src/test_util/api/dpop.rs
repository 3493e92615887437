//! The API as a DPoP resource server (RFC 9449 §7), with the feature `dpop`: `Authorization:
//! DPoP <token>` and a `DPoP` proof for this very request (`htm`, `htu`, `ath` the token's
//! hash) signed by the key the token is bound to; its own nonces, apart from the identity
//! provider's, when [`Api::set_dpop_nonce`] asks for them.

use std::collections::HashSet;

use http::Response;
use http::header::HeaderValue;
use http::request::Parts;

use super::{Api, ApiShared, ApiState, Denial, Owner};
use crate::test_util::dpop::{self, Expected, Nonces};
use crate::test_util::server::ResponseBody;

/// What the API keeps for DPoP: its nonces, when it asks for them, and the proofs it took.
#[derive(Default)]
pub(super) struct DpopState {
    nonces: Option<Nonces>,
    jtis: HashSet<String>,
}

fn invalid_proof(state: &mut ApiState, why: &'static str) -> Denial {
    state.stats.dpop_invalid_proofs += 1;
    Denial::Dpop("invalid_dpop_proof", why)
}

impl Api {
    /// Whether proofs must carry the API's own nonce (default `false`). A proof without it, or
    /// with one older than the previous, gets `401`, `WWW-Authenticate: DPoP
    /// error="use_dpop_nonce"` and the current nonce in `DPoP-Nonce`; every answer to a DPoP
    /// request then carries the current nonce.
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn set_dpop_nonce(&self, on: bool) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        state.dpop.nonces = on.then(|| Nonces::new(&mut state.ids));
    }

    /// A new nonce ([`set_dpop_nonce`](Self::set_dpop_nonce)): proofs with the one before are
    /// still taken, older ones are challenged.
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn rotate_dpop_nonce(&self) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        if let Some(nonces) = &mut state.dpop.nonces {
            nonces.rotate(&mut state.ids);
        }
    }
}

impl ApiShared {
    /// The verdict on a request with `Authorization: DPoP <token>`.
    pub(super) fn dpop_verdict(
        &self,
        state: &mut ApiState,
        parts: &Parts,
        token: &str,
    ) -> Result<Owner, Denial> {
        let owner = self.provider.authorize(token).map_err(Denial::Rejected)?;
        let Some(bound) = owner.jkt.clone() else {
            return Err(Denial::Dpop("invalid_token", "The token is not DPoP-bound"));
        };
        let mut proofs = parts.headers.get_all("dpop").iter();
        let proof = match (proofs.next(), proofs.next()) {
            (Some(proof), None) => proof.to_str().ok(),
            _ => None,
        }
        .ok_or_else(|| invalid_proof(state, "Exactly one DPoP proof is required"))?;
        let htu = match parts.uri.path_and_query().map(|path| path.path()) {
            Some(path) => format!("{}{path}", self.origin),
            None => format!("{}/", self.origin),
        };
        let expected = Expected {
            method: &parts.method,
            htu: &htu,
            access_token: Some(token),
        };
        let verified = dpop::verify(proof, &expected).map_err(|why| invalid_proof(state, why))?;
        if verified.jkt != bound {
            return Err(invalid_proof(
                state,
                "DPoP proof key is not the key the token is bound to",
            ));
        }
        if let Some(nonces) = &state.dpop.nonces {
            if !nonces.accepts(verified.nonce.as_deref()) {
                state.stats.dpop_nonce_challenges += 1;
                return Err(Denial::Dpop(
                    "use_dpop_nonce",
                    "Resource server requires nonce in DPoP proof",
                ));
            }
        }
        if !state.dpop.jtis.insert(verified.jti) {
            return Err(invalid_proof(state, "DPoP proof JWT Replay detected"));
        }
        Ok(owner)
    }
}

impl ApiState {
    /// The response, with the current nonce if the request was a DPoP one and the API gives
    /// nonces (RFC 9449 §9: a success may bring the next one too).
    pub(super) fn with_dpop_nonce(
        &self,
        dpop_scheme: bool,
        mut response: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        let nonce = self.dpop.nonces.as_ref().filter(|_| dpop_scheme);
        if let Some(value) = nonce.and_then(|nonces| HeaderValue::from_str(nonces.current()).ok()) {
            response.headers_mut().insert("dpop-nonce", value);
        }
        response
    }
}
