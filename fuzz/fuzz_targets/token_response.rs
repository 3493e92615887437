//! `parse_token_response` on arbitrary bytes: it must never panic, must reject with
//! `InvalidResponse` only, must accept only JSON objects, and what it accepts must be usable
//! (see `check_tokens`). Errors must not print a distinctive token of the body.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::time::Instant;
use tower_auth_refresh::oauth2::{ErrorKind, parse_token_response};
use tower_auth_refresh::{TokenSet, jwt_expiry};

/// The longest `expires_in` and `refresh_expires_in` the parser keeps.
const TEN_YEARS: Duration = Duration::from_secs(315_360_000);

fuzz_target!(|body: &[u8]| {
    let before = Instant::now();
    let result = parse_token_response(body);
    let after = Instant::now();
    match result {
        Ok(tokens) => {
            // RFC 6749 §5.1: the parameters are the members of a JSON object.
            assert_eq!(
                body.trim_ascii_start().first(),
                Some(&b'{'),
                "a token response that is not a JSON object was accepted"
            );
            check_tokens(&tokens, before, after);
        }
        Err(error) => {
            assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{error}");
            let shown = [error.to_string(), format!("{error:?}")];
            for secret in sent_tokens(body) {
                for text in &shown {
                    assert!(!text.contains(&secret), "{secret:?} printed in {text:?}");
                }
            }
        }
    }
});

/// A token the parser accepts is non-empty visible ASCII; expiries are within ten years; the
/// helpers that read a `TokenSet` do not panic and agree with it; `Debug` shows no token.
fn check_tokens(tokens: &TokenSet, before: Instant, after: Instant) {
    let access = tokens.access_token().secret();
    assert!(is_token_text(access), "access token {access:?}");
    let refresh = tokens.refresh_token().map(|token| token.secret());
    if let Some(refresh) = refresh {
        assert!(is_token_text(refresh), "refresh token {refresh:?}");
    }

    let latest = after + TEN_YEARS;
    for at in [tokens.expires_at(), tokens.refresh_expires_at()]
        .into_iter()
        .flatten()
    {
        assert!(at >= before && at <= latest, "expiry out of range");
    }
    match tokens.expires_at() {
        Some(at) => {
            assert_eq!(tokens.expiry_or(Duration::ZERO), at);
            assert_eq!(tokens.expiry_or(Duration::MAX), at);
        }
        None => {
            assert!(tokens.expiry_or(Duration::ZERO) >= before);
            let default = tokens.expiry_or(Duration::MAX);
            if jwt_expiry(access).is_none() {
                assert!(default > latest, "the default lifetime was not used");
            }
        }
    }
    let has_refresh = refresh.is_some();
    assert_eq!(
        tokens.refresh_token_expires_within(Duration::MAX),
        !has_refresh || tokens.refresh_expires_at().is_some()
    );
    if !has_refresh {
        assert!(tokens.refresh_token_expires_within(Duration::ZERO));
    }

    // Debug prints lengths, not tokens. The same set with placeholder tokens prints the same
    // frame, so a token that happens to be a piece of that frame is not a leak.
    let shown = format!("{tokens:?}");
    let frame = format!("{:?}", with_placeholders(tokens));
    for secret in [Some(access), refresh].into_iter().flatten() {
        let only_duration_text = secret
            .chars()
            .all(|c| c.is_ascii_digit() || ".nmsµ".contains(c));
        if secret.len() >= 8 && !only_duration_text && !frame.contains(secret) {
            assert!(!shown.contains(secret), "{secret:?} printed in {shown:?}");
        }
    }
}

fn is_token_text(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

fn with_placeholders(tokens: &TokenSet) -> TokenSet {
    let placeholder = |secret: &str| "\u{1}".repeat(secret.len());
    let mut copy = TokenSet::new(placeholder(tokens.access_token().secret()));
    if let Some(refresh) = tokens.refresh_token() {
        copy = copy.with_refresh_token(placeholder(refresh.secret()));
    }
    if let Some(at) = tokens.expires_at() {
        copy = copy.with_expires_at(at);
    }
    if let Some(at) = tokens.refresh_expires_at() {
        copy = copy.with_refresh_expires_at(at);
    }
    copy
}

/// The `access_token` and `refresh_token` strings of a JSON object body that are distinctive
/// enough to be looked for in an error message: at least 12 characters, no whitespace, with
/// a letter and a digit (no word or number of the messages themselves is like that).
fn sent_tokens(body: &[u8]) -> Vec<String> {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return Vec::new();
    };
    ["access_token", "refresh_token"]
        .into_iter()
        .filter_map(|name| fields.get(name)?.as_str())
        .filter(|token| {
            token.len() >= 12
                && !token.chars().any(char::is_whitespace)
                && token.chars().any(|c| c.is_ascii_digit())
                && token.chars().any(char::is_alphabetic)
        })
        .map(str::to_owned)
        .collect()
}
