//! Reading the `exp` claim of a JWT access token, without verifying it.
//!
//! The client is not the audience of its own access token and has no key to check it; `exp` is
//! only a hint for when to refresh, used when the token response carries no `expires_in`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// base64url that accepts both padded and unpadded input, as issuers differ.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A JWT payload larger than this is not decoded: access tokens are a few KiB at most.
const MAX_PAYLOAD: usize = 16 * 1024;

/// The `exp` claim (seconds since the Unix epoch) of a compact JWS, or `None` when the token is
/// not a JWT, its payload is not JSON, or `exp` is missing, negative or not a number.
///
/// The signature is not checked: a client is not the audience of its access token, and `exp`
/// only tells it when to refresh.
pub fn expiry_claim(token: &str) -> Option<SystemTime> {
    time_claims(token)?.exp
}

/// The `exp` and `iat` claims, as instants.
struct TimeClaims {
    exp: Option<SystemTime>,
    iat: Option<SystemTime>,
}

fn time_claims(token: &str) -> Option<TimeClaims> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || payload.len() > MAX_PAYLOAD {
        return None;
    }
    let bytes = URL_SAFE_LENIENT.decode(payload).ok()?;
    // The claims are a JSON object (RFC 7519 §7.2); serde would also read an array.
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Claims {
        exp: Option<serde_json::Number>,
        iat: Option<serde_json::Number>,
    }
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    Some(TimeClaims {
        exp: claims.exp.as_ref().and_then(unix_time),
        iat: claims.iat.as_ref().and_then(unix_time),
    })
}

/// A NumericDate (seconds since the Unix epoch), if it is a finite, non-negative number.
fn unix_time(seconds: &serde_json::Number) -> Option<SystemTime> {
    let seconds = seconds.as_f64()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(seconds).ok()?)
}

/// How long from now until the token's `exp` by this machine's clock; zero when it has passed.
///
/// For a token `fresh` from its issuer, a clock that disagrees with the issuer's (it is past
/// `exp`, or more than [`SKEW_TOLERANCE`] before `iat`) is skew, and the token's issued lifetime
/// `exp − iat` is the better guess. A token kept for a while (restored by the application, read
/// from a store) may simply have expired: its `exp` is taken as it is.
pub(crate) fn remaining_lifetime(token: &str, fresh: bool) -> Option<Duration> {
    let claims = time_claims(token)?;
    let exp = claims.exp?;
    let now = SystemTime::now();
    let issued_lifetime = claims.iat.and_then(|iat| exp.duration_since(iat).ok());
    let skewed = fresh
        && claims.iat.is_some_and(|iat| {
            now >= exp
                || iat
                    .duration_since(now)
                    .is_ok_and(|ahead| ahead > SKEW_TOLERANCE)
        });
    match issued_lifetime {
        Some(lifetime) if skewed => {
            tracing::debug!(
                lifetime_s = lifetime.as_secs(),
                "this clock disagrees with the token issuer's; using the token's issued lifetime"
            );
            Some(lifetime)
        }
        _ => Some(exp.duration_since(now).unwrap_or(Duration::ZERO)),
    }
}

/// How far ahead of this machine's clock an issuer's `iat` may be before it counts as skew.
const SKEW_TOLERANCE: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn reads_exp() {
        let token = jwt(r#"{"exp":1700000000,"sub":"u"}"#);
        assert_eq!(
            expiry_claim(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        let fractional = jwt(r#"{"exp":1700000000.5}"#);
        assert_eq!(
            expiry_claim(&fractional),
            Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_500))
        );
    }

    #[test]
    fn remaining_is_measured_from_now() {
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let secs = in_an_hour.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let left = remaining_lifetime(&jwt(&format!(r#"{{"exp":{secs}}}"#)), true).unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        assert_eq!(
            remaining_lifetime(&jwt(r#"{"exp":10}"#), true),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_clock_that_disagrees_with_the_issuer_uses_the_issued_lifetime() {
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let now = SystemTime::now();
        // This clock runs an hour ahead of the issuer's: `exp` has passed here.
        let issued = now - Duration::from_secs(3600);
        let behind = jwt(&format!(
            r#"{{"iat":{},"exp":{}}}"#,
            secs(issued),
            secs(issued) + 900
        ));
        assert_eq!(
            remaining_lifetime(&behind, true),
            Some(Duration::from_secs(900))
        );
        // The same token kept for a while (restored, read from a store) has simply expired.
        assert_eq!(remaining_lifetime(&behind, false), Some(Duration::ZERO));
        // An hour behind: `iat` is in the future here.
        let issued = now + Duration::from_secs(3600);
        let ahead = jwt(&format!(
            r#"{{"iat":{},"exp":{}}}"#,
            secs(issued),
            secs(issued) + 900
        ));
        assert_eq!(
            remaining_lifetime(&ahead, true),
            Some(Duration::from_secs(900))
        );
        // Clocks that agree: the remaining time by this clock.
        let fresh = jwt(&format!(
            r#"{{"iat":{},"exp":{}}}"#,
            secs(now) - 100,
            secs(now) + 800
        ));
        let left = remaining_lifetime(&fresh, true).unwrap();
        assert!(left <= Duration::from_secs(800) && left > Duration::from_secs(790));
    }

    #[test]
    fn rejects_what_is_not_a_jwt_with_exp() {
        for token in [
            "opaque-token".to_owned(),
            "a.b".to_owned(),
            "a.b.c.d".to_owned(),
            "a.!!!.c".to_owned(),
            jwt("not json"),
            jwt(r#"{"sub":"no exp"}"#),
            jwt(r#"{"exp":-5}"#),
            jwt(r#"{"exp":"soon"}"#),
            jwt(r#"{"exp":1e300}"#),
            jwt("[0]"),
            jwt(" [1700000000]"),
        ] {
            assert_eq!(expiry_claim(&token), None, "{token}");
        }
    }
}
