//! DPoP on API requests (RFC 9449 §7): a new proof with every request sent with a DPoP token,
//! the nonces the servers send, and their challenges, which are not rejections of the token.
//!
//! Without the feature `dpop`, [`Proof`] is empty and every function here is a no-op the
//! compiler removes; a DPoP token then goes out without a proof (which a DPoP server refuses).

use http::Request;

use super::origin::Origins;
use crate::cache::Entry;
use crate::refresh::BoxError;

/// What a request's DPoP proof needs to follow its response: the key that signed it and the
/// absolute URI it was for. Empty for a request sent with a Bearer token.
#[derive(Default)]
pub(crate) struct Proof {
    #[cfg(feature = "dpop")]
    proved: Option<Box<Proved>>,
}

#[cfg(feature = "dpop")]
struct Proved {
    dpop: crate::dpop::Dpop,
    uri: http::Uri,
    /// The nonce the proof carried: a challenge that brings no other is not worth a retry.
    nonce: Option<std::sync::Arc<str>>,
}

/// What a response to a proved request calls for.
#[cfg_attr(not(feature = "dpop"), allow(dead_code))]
pub(crate) enum Challenge {
    /// Not a DPoP challenge: the usual rules (a rejection refreshes the token).
    None,
    /// A nonce challenge: send the request once more with a new proof carrying the nonce,
    /// with the same token.
    Nonce,
    /// A refused proof, or a nonce challenge that cannot be answered: the response goes back.
    Returned,
}

#[cfg(feature = "dpop")]
impl Proved {
    /// Whether the origin's nonce, after the response was observed, is one the proof did not
    /// carry.
    fn has_new_nonce(&self) -> bool {
        let fresh = self.dpop.nonce(&self.uri);
        fresh.is_some() && fresh.as_deref() != self.nonce.as_deref()
    }
}

impl Proof {
    /// Whether the request carried a proof.
    #[inline]
    pub(crate) fn is_some(&self) -> bool {
        #[cfg(feature = "dpop")]
        return self.proved.is_some();
        #[cfg(not(feature = "dpop"))]
        false
    }

    /// Learns the response's nonce, and says what its status calls for. `can_retry`: the
    /// request can be sent once more (its body can be replayed, and it was not sent again
    /// already). `from`: where the response came from, if a redirect followed inside the
    /// stack says so; a response from another origin than the proof's says nothing of it
    /// (its nonce is not that origin's, its challenge not about this proof).
    pub(crate) fn answer(
        &self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        can_retry: bool,
        from: Option<&http::Uri>,
    ) -> Challenge {
        #[cfg(feature = "dpop")]
        if let Some(proved) = &self.proved {
            if from.is_some_and(|from| !crate::dpop::same_origin(from, &proved.uri)) {
                // Not the proof's origin: its nonce is not that origin's; its challenge goes
                // back as it came, no rejection of the token either.
                return if Dpop::is_challenge(status, headers) {
                    Challenge::Returned
                } else {
                    Challenge::None
                };
            }
            use crate::cache::metrics;
            use crate::dpop::{Dpop, DpopChallenge};
            proved.dpop.observe(&proved.uri, headers);
            return match Dpop::challenge(status, headers) {
                None => Challenge::None,
                Some(DpopChallenge::UseNonce) if can_retry && proved.has_new_nonce() => {
                    metrics::dpop_nonce_retried("resource");
                    tracing::debug!("the API asked for a DPoP nonce; sending again with it");
                    Challenge::Nonce
                }
                Some(challenge) => {
                    let name = match challenge {
                        DpopChallenge::UseNonce => "use_dpop_nonce",
                        _ => "invalid_dpop_proof",
                    };
                    metrics::dpop_challenge_returned(name);
                    tracing::debug!(
                        challenge = name,
                        "the API refused the DPoP proof; not a rejection of the token"
                    );
                    Challenge::Returned
                }
            };
        }
        let _ = (status, headers, can_retry, from);
        Challenge::None
    }
}

/// Puts `entry`'s token on `request` (`Authorization`, and for a DPoP token a new `DPoP`
/// proof for this request), and returns what its response needs to be read.
///
/// Fails, with nothing sent, when a DPoP token has no key to prove it with, or the request's
/// URI cannot be a proof's (relative, with no [`origin_of_relative`](crate::AuthLayer::origin_of_relative)).
#[inline(always)]
pub(crate) fn authorize<B>(
    request: &mut Request<B>,
    entry: &Entry,
    origins: &Origins,
) -> Result<Proof, BoxError> {
    request
        .headers_mut()
        .insert(http::header::AUTHORIZATION, entry.header.clone());
    if entry.bearer {
        return Ok(Proof::default());
    }
    let (method, uri) = (
        request.method().clone(),
        origins.absolute_or_none(request.uri()),
    );
    prove(&method, uri, request.headers_mut(), entry)
}

/// Adds the proof of a request with this method and (absolute) URI to its headers, for a
/// DPoP token; nothing for a Bearer one.
#[cold]
pub(crate) fn prove(
    method: &http::Method,
    uri: Option<http::Uri>,
    headers: &mut http::HeaderMap,
    entry: &Entry,
) -> Result<Proof, BoxError> {
    if entry.bearer {
        // A copy of a request proved for an earlier DPoP token (reqwest's retry) must not
        // carry that proof with a Bearer token.
        headers.remove("dpop");
        return Ok(Proof::default());
    }
    #[cfg(feature = "dpop")]
    {
        use crate::dpop::{DpopError, DpopErrorKind};
        let dpop = entry.tokens.dpop().ok_or_else(|| {
            DpopError::new(
                DpopErrorKind::Key,
                "the token is a DPoP token, but its token set has no key to prove it with \
                 (TokenSet::with_dpop): the request was not sent",
            )
        })?;
        let uri = uri.ok_or_else(|| {
            DpopError::new(
                DpopErrorKind::Uri,
                "a DPoP proof needs the request's absolute URI: give the layer the origin of \
                 relative URIs (AuthLayer::origin_of_relative); the request was not sent",
            )
        })?;
        let token = entry.tokens.access_token().secret();
        let (proof, nonce) = dpop.proof_with_nonce(method, &uri, Some(token))?;
        headers.insert("dpop", proof);
        Ok(Proof {
            proved: Some(Box::new(Proved {
                dpop: dpop.clone(),
                uri,
                nonce,
            })),
        })
    }
    #[cfg(not(feature = "dpop"))]
    {
        let _ = (method, uri, headers);
        Ok(Proof::default())
    }
}
