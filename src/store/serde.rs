//! The token set as stored: JSON with wall-clock expiries, so another process (or a restarted
//! one) can read it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::token::TokenSet;

#[derive(Serialize, Deserialize)]
struct Stored {
    access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// Seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_expires_at: Option<f64>,
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

/// The JSON a store keeps. Holds secrets: write it only where the tokens may be.
pub(super) fn encode(tokens: &TokenSet) -> String {
    let stored = Stored {
        access_token: tokens.access_token().secret().to_owned(),
        refresh_token: tokens.refresh_token().map(|t| t.secret().to_owned()),
        expires_at: tokens.expires_at().and_then(to_unix),
        refresh_expires_at: tokens.refresh_expires_at().and_then(to_unix),
    };
    // Serialising strings and numbers cannot fail.
    serde_json::to_string(&stored).unwrap_or_default()
}

/// The token set in `json`, or `None` if it is not a stored token set.
pub(super) fn decode(json: &[u8]) -> Option<TokenSet> {
    let stored: Stored = serde_json::from_slice(json).ok()?;
    if stored.access_token.is_empty() {
        return None;
    }
    let mut tokens = TokenSet::new(stored.access_token);
    if let Some(refresh_token) = stored.refresh_token {
        tokens = tokens.with_refresh_token(refresh_token);
    }
    if let Some(at) = stored.expires_at.and_then(from_unix) {
        tokens = tokens.with_expires_at(at);
    }
    if let Some(at) = stored.refresh_expires_at.and_then(from_unix) {
        tokens = tokens.with_refresh_expires_at(at);
    }
    Some(tokens)
}

/// The refresh token of a stored JSON, for compare-and-swap.
#[cfg(feature = "redis")]
pub(super) fn refresh_token_of(tokens: Option<&TokenSet>) -> &str {
    tokens
        .and_then(TokenSet::refresh_token)
        .map_or("", |token| token.secret())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_with_expiries() {
        let tokens = TokenSet::new("a")
            .with_refresh_token("r")
            .with_expires_in(Duration::from_secs(900))
            .with_refresh_expires_in(Duration::from_secs(3600));
        let back = decode(encode(&tokens).as_bytes()).unwrap();
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
        assert!(decode(b"not json").is_none());
        assert!(decode(br#"{"access_token":""}"#).is_none());
    }
}
