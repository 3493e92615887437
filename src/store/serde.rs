//! The session as stored: JSON with its version and wall-clock expiries, so another process (or
//! a restarted one) can read it. After a delete, only the version remains (no secret).
//!
//! The buffers that hold the JSON are wiped when dropped: the text is written into one buffer
//! sized for it up front (so it never moves and leaves a copy behind) and read from the
//! caller's buffer, which the stores wipe too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::Stored;
use crate::token::{Secret, TokenSet, TokenType};

#[derive(Serialize)]
struct Out<'a> {
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    /// Absent for Bearer tokens (as in the format before token types).
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<&'a str>,
    /// Seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_expires_at: Option<f64>,
    /// The private JWK of the DPoP key the tokens are bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    dpop_key: Option<&'a str>,
}

#[derive(Deserialize)]
struct In {
    version: Option<u64>,
    access_token: Option<String>,
    token_type: Option<String>,
    refresh_token: Option<String>,
    expires_at: Option<f64>,
    refresh_expires_at: Option<f64>,
    dpop_key: Option<String>,
}

fn to_unix(at: Instant) -> Option<f64> {
    let now = Instant::now();
    let wall = if at >= now {
        SystemTime::now().checked_add(at - now)?
    } else {
        SystemTime::now().checked_sub(now - at)?
    };
    Some(wall.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
}

fn from_unix(seconds: f64) -> Option<Instant> {
    let wall = UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds).ok()?)?;
    let now = Instant::now();
    Some(match wall.duration_since(SystemTime::now()) {
        Ok(ahead) => now.checked_add(ahead)?,
        Err(behind) => now.checked_sub(behind.duration()).unwrap_or(now),
    })
}

/// The JSON a store keeps for `tokens` (none: a deleted session) at `version`. Holds secrets:
/// write it only where the tokens may be.
pub(super) fn encode(tokens: Option<&TokenSet>, version: u64) -> Zeroizing<Vec<u8>> {
    let dpop_key = dpop_key(tokens);
    let out = Out {
        version,
        access_token: tokens.map(|t| t.access_token().secret()),
        token_type: tokens
            .map(TokenSet::token_type)
            .filter(|kind| *kind != TokenType::Bearer)
            .map(TokenType::as_str),
        refresh_token: tokens.and_then(TokenSet::refresh_token).map(|t| t.secret()),
        expires_at: tokens.and_then(TokenSet::expires_at).and_then(to_unix),
        refresh_expires_at: tokens
            .and_then(TokenSet::refresh_expires_at)
            .and_then(to_unix),
        dpop_key: dpop_key.as_ref().map(|key| key.secret()),
    };
    let secrets = out.access_token.map_or(0, str::len)
        + out.refresh_token.map_or(0, str::len)
        + out.dpop_key.map_or(0, str::len);
    // JSON escapes at most double an ASCII token; the rest is a short frame.
    let mut json = Zeroizing::new(Vec::with_capacity(2 * secrets + 256));
    // Writing strings and numbers into memory cannot fail.
    let _ = serde_json::to_writer(&mut *json, &out);
    json
}

/// What `json` holds, or `None` if it is not a stored session (corrupt, another format).
pub(super) fn decode(json: &[u8]) -> Option<Stored> {
    let stored: In = serde_json::from_slice(json).ok()?;
    let tokens = stored
        .access_token
        .filter(|token| !token.is_empty())
        .map(|access_token| {
            let mut tokens = TokenSet::new(access_token);
            if stored
                .token_type
                .is_some_and(|kind| kind.eq_ignore_ascii_case(TokenType::DPoP.as_str()))
            {
                tokens = tokens.with_token_type(TokenType::DPoP);
            }
            if let Some(refresh_token) = stored.refresh_token {
                tokens = tokens.with_refresh_token(refresh_token);
            }
            if let Some(at) = stored.expires_at.and_then(from_unix) {
                tokens = tokens.with_expires_at(at);
            }
            if let Some(at) = stored.refresh_expires_at.and_then(from_unix) {
                tokens = tokens.with_refresh_expires_at(at);
            }
            with_dpop_key(tokens, stored.dpop_key.map(Secret::new))
        });
    // A session written before versions existed counts as the first one.
    let version = stored.version.unwrap_or(u64::from(tokens.is_some()));
    Some(Stored { tokens, version })
}

/// The private JWK of the key `tokens` are bound to, if any.
fn dpop_key(tokens: Option<&TokenSet>) -> Option<Secret> {
    #[cfg(feature = "dpop")]
    if let Some(dpop) = tokens.and_then(TokenSet::dpop) {
        return match dpop.to_private_jwk() {
            Ok(jwk) => Some(jwk),
            Err(error) => {
                tracing::warn!(%error, "the DPoP key could not be written with its tokens");
                None
            }
        };
    }
    let _ = tokens;
    None
}

/// `tokens` bound to the stored key, if there is one this build can read.
fn with_dpop_key(tokens: TokenSet, key: Option<Secret>) -> TokenSet {
    #[cfg(feature = "dpop")]
    if let Some(key) = key {
        return match crate::dpop::Dpop::from_private_jwk(&key) {
            Ok(dpop) => tokens.with_dpop(dpop),
            Err(error) => {
                tracing::warn!(%error, "the stored DPoP key is unreadable; the tokens are kept without it");
                tokens
            }
        };
    }
    if key.is_some() {
        tracing::warn!(
            "the stored session has a DPoP key, which this build (without the feature `dpop`) cannot use"
        );
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_with_expiries_and_versions() {
        let tokens = TokenSet::new("a")
            .with_refresh_token("r")
            .with_expires_in(Duration::from_secs(900))
            .with_refresh_expires_in(Duration::from_secs(3600));
        let back = decode(&encode(Some(&tokens), 7)).unwrap();
        assert_eq!(back.version, 7);
        let back = back.tokens.unwrap();
        assert_eq!(back.access_token(), tokens.access_token());
        assert_eq!(back.refresh_token(), tokens.refresh_token());
        let drift = |a: Instant, b: Instant| if a > b { a - b } else { b - a };
        assert!(
            drift(back.expires_at().unwrap(), tokens.expires_at().unwrap())
                < Duration::from_millis(5)
        );
        assert!(
            drift(
                back.refresh_expires_at().unwrap(),
                tokens.refresh_expires_at().unwrap()
            ) < Duration::from_millis(5)
        );
    }

    #[test]
    fn the_token_type_is_kept() {
        let tokens = TokenSet::new("a").with_token_type(TokenType::DPoP);
        let back = decode(&encode(Some(&tokens), 1)).unwrap().tokens.unwrap();
        assert_eq!(back.token_type(), TokenType::DPoP);
        let bearer = decode(&encode(Some(&TokenSet::new("a")), 1)).unwrap();
        assert_eq!(bearer.tokens.unwrap().token_type(), TokenType::Bearer);
    }

    #[test]
    fn a_deleted_session_keeps_its_version_and_no_secret() {
        let json = encode(None, 8);
        assert_eq!(&json[..], br#"{"version":8}"#);
        assert_eq!(
            decode(&json),
            Some(Stored {
                tokens: None,
                version: 8
            })
        );
    }

    #[test]
    fn older_formats_and_garbage() {
        let old = decode(br#"{"access_token":"a","refresh_token":"r"}"#).unwrap();
        assert_eq!(old.version, 1);
        assert!(old.tokens.is_some());
        assert!(decode(b"not json").is_none());
        assert_eq!(decode(br#"{"access_token":""}"#).unwrap().tokens, None);
    }

    #[test]
    fn the_buffer_is_sized_up_front_and_never_grows() {
        let long = "x".repeat(4000);
        let tokens = TokenSet::new(long.clone()).with_refresh_token(long);
        let json = encode(Some(&tokens), 1);
        assert!(json.len() <= json.capacity());
        assert_eq!(
            json.capacity(),
            2 * 8000 + 256,
            "never grown, so never moved"
        );
    }
}
