//! The refresher's side of DPoP (RFC 9449 §5, §8): a proof on every token request, one more
//! try after a nonce challenge, and the token type the answer must have.
//!
//! Without the feature `dpop` only the last is here: a DPoP-bound token is refused, since
//! nothing could send the proofs it needs.

use http::Request;
use http_body_util::Full;

use super::config::Config;
use super::error::{Error, ErrorKind};
use super::response;
use super::transport::Answer;
use crate::token::{TokenSet, TokenType};

/// What the proof of one token request carried: the nonce, to tell a new one from it, and the
/// proof itself, to keep out of errors (a server may echo it).
#[derive(Default)]
pub(super) struct Sent {
    #[cfg(feature = "dpop")]
    nonce: Option<std::sync::Arc<str>>,
    #[cfg(feature = "dpop")]
    proof: Option<http::HeaderValue>,
}

impl Sent {
    /// The proof, for redacting it from a server's words.
    pub(super) fn proof(&self) -> Option<&str> {
        #[cfg(feature = "dpop")]
        return self.proof.as_ref().and_then(|proof| proof.to_str().ok());
        #[cfg(not(feature = "dpop"))]
        None
    }
}

/// Adds a new proof to a token request, if the refresher has a DPoP key.
pub(super) fn prove(
    config: &Config,
    request: &mut Request<Full<bytes::Bytes>>,
) -> Result<Sent, Error> {
    #[cfg(feature = "dpop")]
    if let Some(dpop) = &config.dpop {
        let (proof, nonce) = dpop
            .proof_with_nonce(&http::Method::POST, &config.token_url, None)
            .map_err(|error| {
                Error::new(ErrorKind::Dpop, "the DPoP proof could not be made").with_source(error)
            })?;
        request.headers_mut().insert("dpop", proof.clone());
        return Ok(Sent {
            nonce,
            proof: Some(proof),
        });
    }
    let _ = (config, request);
    Ok(Sent::default())
}

/// Learns the answer's nonce; whether the request is to be sent again: a `use_dpop_nonce`
/// answer that brought a nonce other than the one sent, and no such retry yet.
pub(super) fn retry(config: &Config, answer: &Answer, sent: &Sent, retried: bool) -> bool {
    #[cfg(feature = "dpop")]
    if let Some(dpop) = &config.dpop {
        dpop.observe(&config.token_url, &answer.headers);
        let challenged = !answer.status.is_success()
            && answer
                .body
                .as_deref()
                .and_then(response::error_code)
                .is_some_and(|code| code == "use_dpop_nonce");
        if !challenged {
            return false;
        }
        let fresh = dpop.nonce(&config.token_url);
        if !retried && fresh.is_some() && fresh.as_deref() != sent.nonce.as_deref() {
            dpop.count_token_nonce_retry();
            crate::cache::metrics::dpop_nonce_retried("token_endpoint");
            tracing::debug!("the token endpoint asked for a DPoP nonce; signing again with it");
            return true;
        }
        dpop.count_token_nonce_refusal();
        return false;
    }
    let _ = (config, answer, sent, retried, response::error_code);
    false
}

/// Signs from now on with the key `current` is bound to, if it is not this refresher's: a
/// session read from a store, or set by the application, brings the key its refresh token is
/// bound to (a public client's is).
pub(super) fn adopt_key(config: &Config, current: &TokenSet) {
    #[cfg(feature = "dpop")]
    if let (Some(mine), Some(theirs)) = (&config.dpop, current.dpop()) {
        if mine != theirs {
            tracing::debug!("signing DPoP proofs with the key the session came with");
            mine.set_key(theirs);
        }
    }
    let _ = (config, current);
}

/// The token set, if its type is one this refresher can use; else a terminal error that
/// keeps the answer's refresh token.
pub(super) fn check_token_type(config: &Config, tokens: TokenSet) -> Result<TokenSet, Error> {
    #[cfg(feature = "dpop")]
    let (has_key, bearer_fallback) = (config.dpop.is_some(), config.bearer_fallback);
    #[cfg(not(feature = "dpop"))]
    let (has_key, bearer_fallback) = {
        let _ = config;
        (false, false)
    };
    let problem = match tokens.token_type() {
        TokenType::DPoP if !has_key => {
            "the token endpoint issued a DPoP-bound token (token_type DPoP), but this refresher has no DPoP key to prove it with (feature `dpop`, OAuth2RefresherBuilder::dpop)"
        }
        TokenType::Bearer if has_key && !bearer_fallback => {
            "the token endpoint issued a Bearer token to a DPoP client (it ignored the proof); OAuth2RefresherBuilder::bearer_fallback(true) accepts that"
        }
        #[cfg(feature = "dpop")]
        TokenType::DPoP => {
            // The key goes with the tokens: the layer signs its requests' proofs with it, and
            // a store keeps it beside them.
            let key = config.dpop.clone();
            return Ok(match key {
                Some(key) if tokens.dpop().is_none() => tokens.with_dpop(key),
                _ => tokens,
            });
        }
        _ => return Ok(tokens),
    };
    Err(Error::new(ErrorKind::Dpop, problem).with_refresh_token(tokens.refresh_token().cloned()))
}
