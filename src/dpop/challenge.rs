//! A resource server's DPoP challenges (RFC 9449 §7.1, §9): `401` with
//! `WWW-Authenticate: DPoP error="use_dpop_nonce"` (send again with the nonce it gave) or
//! `error="invalid_dpop_proof"` (the proof was refused). Neither says the access token is bad,
//! so neither is a reason to refresh it.
//!
//! The header is parsed as RFC 9110 §11.6.1 has it: one or more challenges, comma-separated,
//! each a scheme and then parameters (`name=token` or `name="quoted string"`), in as many
//! `WWW-Authenticate` lines as the server likes.

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, StatusCode};

/// Which DPoP challenge a response is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DpopChallenge {
    /// `error="use_dpop_nonce"`: the server wants its nonce (in `DPoP-Nonce`) in the proof.
    UseNonce,
    /// `error="invalid_dpop_proof"`: the server refused the proof itself (its signature, its
    /// `htm`, `htu`, `iat`, `ath`, or the key the token is bound to).
    InvalidProof,
}

/// The DPoP challenge of a `401`, if it is one.
pub(super) fn of(status: StatusCode, headers: &HeaderMap) -> Option<DpopChallenge> {
    if status != StatusCode::UNAUTHORIZED {
        return None;
    }
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(challenges)
        .filter(|challenge| challenge.scheme.eq_ignore_ascii_case("DPoP"))
        .find_map(|challenge| {
            let error = challenge
                .params
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case("error"))?;
            match error.1.as_str() {
                "use_dpop_nonce" => Some(DpopChallenge::UseNonce),
                "invalid_dpop_proof" => Some(DpopChallenge::InvalidProof),
                _ => None,
            }
        })
}

struct Challenge<'a> {
    scheme: &'a str,
    params: Vec<(&'a str, String)>,
}

/// RFC 9110 §5.6.2's `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The challenges of one header line; what cannot be parsed is passed over.
fn challenges(line: &str) -> Vec<Challenge<'_>> {
    let mut found: Vec<Challenge<'_>> = Vec::new();
    for element in elements(line) {
        let element = element.trim_matches([' ', '\t']);
        let token_end = element
            .bytes()
            .position(|b| !is_tchar(b))
            .unwrap_or(element.len());
        if token_end == 0 {
            continue;
        }
        let (token, rest) = element.split_at(token_end);
        let after = rest.trim_start_matches([' ', '\t']);
        if let Some(value) = after.strip_prefix('=') {
            // `name = value`: a parameter of the challenge before it.
            if let (Some(challenge), Some(value)) = (found.last_mut(), param_value(value)) {
                challenge.params.push((token, value));
            }
            continue;
        }
        // A new challenge: its scheme, then perhaps its first parameter (or a token68).
        let mut challenge = Challenge {
            scheme: token,
            params: Vec::new(),
        };
        if let Some((name, value)) = after.split_once('=') {
            let name = name.trim_end_matches([' ', '\t']);
            if !name.is_empty() && name.bytes().all(is_tchar) {
                if let Some(value) = param_value(value) {
                    challenge.params.push((name, value));
                }
            }
        }
        found.push(challenge);
    }
    found
}

/// A parameter's value: a token, or a quoted string unescaped.
fn param_value(text: &str) -> Option<String> {
    let text = text.trim_matches([' ', '\t']);
    let Some(quoted) = text.strip_prefix('"') else {
        return (!text.is_empty() && text.bytes().all(is_tchar)).then(|| text.to_owned());
    };
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '"' => return chars.as_str().trim().is_empty().then_some(value),
            c => value.push(c),
        }
    }
    None
}

/// The comma-separated elements of a header line, commas inside quoted strings kept.
fn elements(line: &str) -> Vec<&str> {
    let mut elements = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (index, b) in line.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                elements.push(&line[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    elements.push(&line[start..]);
    elements
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn challenge(lines: &[&str]) -> Option<DpopChallenge> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(WWW_AUTHENTICATE, HeaderValue::from_str(line).unwrap());
        }
        of(StatusCode::UNAUTHORIZED, &headers)
    }

    #[test]
    fn the_rfc_examples_and_real_servers() {
        // RFC 9449 §9.
        assert_eq!(
            challenge(&[
                r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#
            ]),
            Some(DpopChallenge::UseNonce)
        );
        // RFC 9449 §7.1, with algs.
        assert_eq!(
            challenge(&[r#"DPoP algs="ES256 PS256", error="invalid_dpop_proof""#]),
            Some(DpopChallenge::InvalidProof)
        );
        // Several schemes in one line, and in several lines; the error as a token.
        assert_eq!(
            challenge(&[r#"Bearer realm="api", DPoP algs="ES256", error=use_dpop_nonce"#]),
            Some(DpopChallenge::UseNonce)
        );
        assert_eq!(
            challenge(&[
                r#"Bearer error="invalid_token""#,
                r#"dpop ERROR="use_dpop_nonce""#
            ]),
            Some(DpopChallenge::UseNonce)
        );
        // A comma and a quote inside a quoted description do not end it.
        assert_eq!(
            challenge(&[
                r#"DPoP error_description="nonce, \"please\"", error="invalid_dpop_proof""#
            ]),
            Some(DpopChallenge::InvalidProof)
        );
    }

    #[test]
    fn what_is_no_dpop_challenge() {
        for lines in [
            &[r#"DPoP error="invalid_token""#][..],
            &[r#"Bearer error="use_dpop_nonce""#],
            &[r#"Bearer realm="x", error="use_dpop_nonce""#],
            &["DPoP"],
            &[r#"DPoP error="use_dpop_nonce"#],
            &[r#"DPoP realm="use_dpop_nonce""#],
            &["Basic dXNlcjpwYXNz=="],
            &[",,, =,\"\\"],
            &[],
        ] {
            assert_eq!(challenge(lines), None, "{lines:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"DPoP error="use_dpop_nonce""#),
        );
        for status in [
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::FORBIDDEN,
        ] {
            assert_eq!(of(status, &headers), None, "{status}");
        }
    }

    #[test]
    fn no_panic_on_any_line() {
        let pieces = [
            "DPoP",
            " ",
            ",",
            "=",
            "\"",
            "\\",
            "error",
            "use_dpop_nonce",
            "é",
        ];
        // Every line of up to four pieces.
        let mut lines = vec![String::new()];
        for _ in 0..4 {
            lines = lines
                .iter()
                .flat_map(|line| pieces.iter().map(move |piece| format!("{line}{piece}")))
                .collect();
            for line in &lines {
                let _ = challenges(line);
            }
        }
    }
}
