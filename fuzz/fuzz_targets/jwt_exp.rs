//! `jwt_expiry` on arbitrary UTF-8: it must never panic, and an `exp` it returns must come
//! from a JSON object payload whose `exp` claim a plain decode finds with the same value.

#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::time::Instant;
use tower_auth_refresh::{TokenSet, jwt_expiry};

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(at) = jwt_expiry(token) {
        let since_epoch = at.duration_since(UNIX_EPOCH).expect("exp before 1970");
        let payload = payload(token).expect("an exp read from a token that is no JWT");
        assert_eq!(
            payload.trim_ascii_start().first(),
            Some(&b'{'),
            "an exp read from a payload that is not a JSON object: {:?}",
            String::from_utf8_lossy(&payload)
        );
        // `Value` is stricter than skipping a claim (e.g. a number beyond f64 in another
        // claim), so only a payload it parses is compared.
        if let Ok(claims) = serde_json::from_str::<Value>(&String::from_utf8_lossy(&payload)) {
            let exp = claims.get("exp").and_then(Value::as_f64);
            let exp = exp.expect("an exp read from claims without a numeric exp");
            let difference = (since_epoch.as_secs_f64() - exp).abs();
            assert!(
                difference <= exp * 1e-12 + 1e-6,
                "exp {exp} read as {since_epoch:?}"
            );
        }
    }
    // Any string may be an access token: `expiry_or` reads its `exp` without panicking.
    let now = Instant::now();
    let at = TokenSet::new(token).expiry_or(Duration::from_secs(60));
    assert!(at >= now);
});

/// The decoded middle segment of a token of three dot-separated segments, decoded with none of
/// `jwt_expiry`'s code (base64url, padding optional).
fn payload(token: &str) -> Option<Vec<u8>> {
    let segments: Vec<&str> = token.split('.').collect();
    let [_, payload, _] = segments[..] else {
        return None;
    };
    URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()
}
