//! Property tests of the two parsers that read untrusted input: token-endpoint answers
//! (`parse_token_response`) and the `exp` claim of JWT access tokens (`jwt_expiry`).
//!
//! The same functions are fuzzed by the cargo-fuzz targets in `fuzz/`. Each property runs a
//! few hundred cases so the whole file takes seconds in a debug build; set `PROPTEST_CASES`
//! to run more, e.g. `PROPTEST_CASES=100000 cargo test --release --test proptest`.

use std::error::Error as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_auth_refresh::jwt_expiry;
use tower_auth_refresh::oauth2::{Error, ErrorKind, parse_token_response};
use tower_auth_refresh::{TokenSet, TokenType};

/// The longest `expires_in` accepted: ten years of 365 days.
const TEN_YEARS: u64 = 315_360_000;
/// The fields the parser reads; generated unknown fields avoid these names.
const KNOWN_FIELDS: [&str; 5] = [
    "access_token",
    "token_type",
    "expires_in",
    "refresh_token",
    "refresh_expires_in",
];

/// `cases` cases, or `PROPTEST_CASES` when set; failures are not persisted to files (the
/// regressions worth keeping are written out as `#[test]`s at the end of this file).
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(cases);
    let mut config = ProptestConfig::with_cases(cases);
    config.failure_persistence = None;
    config
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

/// Visible ASCII without the space (what a bearer token may be made of), `min..=64` long.
fn token_text(min: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(0x21u8..=0x7e, min..=64)
        .prop_map(|bytes| String::from_utf8(bytes).expect("ASCII"))
}

/// A character a token must not contain: a control character, the space, or non-ASCII.
fn bad_char() -> impl Strategy<Value = char> {
    prop_oneof![
        (0u8..0x20).prop_map(char::from),
        Just('\x7f'),
        Just(' '),
        any::<char>().prop_filter("non-ASCII", |c| !c.is_ascii()),
    ]
}

/// Any JSON value, a few levels deep: the contents of unknown fields.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

/// Fields the parser does not know, as servers add them (`scope`, `session_state`, …).
fn unknown_fields() -> impl Strategy<Value = Vec<(String, Value)>> {
    let name = "[a-z_-]{1,16}".prop_filter("an unknown field", |name: &String| {
        !KNOWN_FIELDS.contains(&name.as_str())
    });
    prop::collection::vec((name, json_value()), 0..4)
}

/// A number of seconds, as a JSON number or, as some servers send it, a numeric string.
fn seconds(value: u64, as_text: bool) -> Value {
    if as_text {
        Value::from(value.to_string())
    } else {
        Value::from(value)
    }
}

/// A token response that the parser must accept.
#[derive(Clone, Debug)]
struct Valid {
    access_token: String,
    token_type: Option<String>,
    /// Seconds, and whether they are sent as a string.
    expires_in: Option<(u64, bool)>,
    refresh_token: Option<String>,
    /// Seconds (0: the refresh token does not expire), and whether sent as a string.
    refresh_expires_in: Option<(u64, bool)>,
    unknown: Vec<(String, Value)>,
}

impl Valid {
    fn fields(&self) -> Vec<(String, Value)> {
        let mut fields = vec![("access_token".to_owned(), json!(self.access_token))];
        if let Some(token_type) = &self.token_type {
            fields.push(("token_type".to_owned(), json!(token_type)));
        }
        if let Some((value, as_text)) = self.expires_in {
            fields.push(("expires_in".to_owned(), seconds(value, as_text)));
        }
        if let Some(refresh_token) = &self.refresh_token {
            fields.push(("refresh_token".to_owned(), json!(refresh_token)));
        }
        if let Some((value, as_text)) = self.refresh_expires_in {
            fields.push(("refresh_expires_in".to_owned(), seconds(value, as_text)));
        }
        fields.extend(self.unknown.iter().cloned());
        fields
    }
}

/// A valid token response whose tokens are at least `min_token` characters long.
fn valid(min_token: usize) -> impl Strategy<Value = Valid> {
    let token_type = prop_oneof![
        Just("Bearer".to_owned()),
        Just("bearer".to_owned()),
        Just("BEARER".to_owned()),
        "[bB][eE][aA][rR][eE][rR]",
        // RFC 9449 §5: a DPoP-bound token.
        "[dD][pP][oO][pP]",
    ];
    (
        token_text(min_token),
        prop::option::of(token_type),
        prop::option::of((1..=TEN_YEARS, any::<bool>())),
        prop::option::of(token_text(min_token)),
        prop::option::of((0..=TEN_YEARS, any::<bool>())),
        unknown_fields(),
    )
        .prop_map(
            |(access_token, token_type, expires_in, refresh_token, refresh_expires_in, unknown)| {
                Valid {
                    access_token,
                    token_type,
                    expires_in,
                    refresh_token,
                    refresh_expires_in,
                    unknown,
                }
            },
        )
}

/// A JSON object of these fields in this order, with or without spaces.
fn render(fields: &[(String, Value)], spaced: bool) -> String {
    let separator = if spaced { ", " } else { "," };
    let colon = if spaced { ": " } else { ":" };
    let fields: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{}{colon}{value}", Value::from(name.as_str())))
        .collect();
    format!("{{{}}}", fields.join(separator))
}

/// A valid response as a body: its fields shuffled, with or without spaces.
fn valid_body(min_token: usize) -> impl Strategy<Value = (Valid, String)> {
    valid(min_token).prop_flat_map(|response| {
        let fields = Just(response.fields()).prop_shuffle();
        (Just(response), fields, any::<bool>())
            .prop_map(|(response, fields, spaced)| (response, render(&fields, spaced)))
    })
}

/// What makes a response unusable; each must give `ErrorKind::InvalidResponse`.
#[derive(Clone, Debug)]
enum Flaw {
    /// This character inserted into the access token.
    AccessTokenChar(Index, char),
    /// This character inserted into the refresh token (one is added if there was none).
    RefreshTokenChar(Index, char),
    /// A `token_type` other than Bearer and DPoP.
    TokenType(Value),
    /// No usable `access_token`: missing (`None`), or this value (null, "", not a string).
    AccessToken(Option<Value>),
}

fn bad_token_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("mac")),
        Just(json!("DPoP ")),
        Just(json!("DPoP-Bearer")),
        Just(json!("")),
        Just(json!("Bearer ")),
        Just(json!(" bearer")),
        Just(json!("bearer\u{0}")),
        Just(json!(1)),
        Just(json!(["Bearer"])),
        "[ -~]{0,12}".prop_filter_map("not bearer or dpop", |text: String| {
            (!text.eq_ignore_ascii_case("bearer") && !text.eq_ignore_ascii_case("dpop"))
                .then(|| json!(text))
        }),
    ]
}

/// An `expires_in` that is not positive, not at most ten years, or not a number: ignored.
fn bad_expires_in() -> impl Strategy<Value = Value> {
    let not_positive = prop_oneof![
        (-1_000_000_000_000i64..=0).prop_map(Value::from),
        Just(json!(-0.0)),
        (-1e300f64..=0.0).prop_map(Value::from),
    ];
    let too_long = prop_oneof![
        (TEN_YEARS + 1..=u64::MAX).prop_map(Value::from),
        Just(json!(315_360_000.5)),
        (315_360_000.001f64..1e300).prop_map(Value::from),
    ];
    let number = prop_oneof![not_positive, too_long];
    prop_oneof![
        4 => number.clone(),
        2 => number.prop_map(|value| json!(value.to_string())),
        1 => prop_oneof![
            Just(json!("inf")),
            Just(json!("NaN")),
            Just(json!("-inf")),
            Just(json!("")),
            Just(json!("soon")),
            Just(json!("1e400")),
            Just(json!("0x10")),
            Just(json!(true)),
            Just(json!([900])),
            Just(json!({"seconds": 900})),
        ],
    ]
}

/// A negative or non-numeric `refresh_expires_in`: ignored.
fn bad_refresh_expires_in() -> impl Strategy<Value = Value> {
    prop_oneof![
        (i64::MIN..0).prop_map(Value::from),
        (-1e300f64..-1e-300).prop_map(Value::from),
        (i64::MIN..0).prop_map(|value| json!(value.to_string())),
        Just(json!("NaN")),
        Just(json!("never")),
        Just(json!(false)),
    ]
}

fn flaw() -> impl Strategy<Value = Flaw> {
    prop_oneof![
        (any::<Index>(), bad_char()).prop_map(|(at, c)| Flaw::AccessTokenChar(at, c)),
        (any::<Index>(), bad_char()).prop_map(|(at, c)| Flaw::RefreshTokenChar(at, c)),
        bad_token_type().prop_map(Flaw::TokenType),
        prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            Just(Some(json!(""))),
            Just(Some(json!(42))),
            Just(Some(json!(["t"]))),
            Just(Some(json!({"token": "t"}))),
        ]
        .prop_map(Flaw::AccessToken),
    ]
}

/// `text` with `c` inserted at `at` (`text` is ASCII, so every index is a char boundary).
fn insert(text: &str, at: Index, c: char) -> String {
    let mut text = text.to_owned();
    text.insert(at.index(text.len() + 1), c);
    text
}

/// Applies `flaw` to a valid response: the fields of the broken response.
fn apply(response: &Valid, flaw: &Flaw) -> Vec<(String, Value)> {
    let mut response = response.clone();
    let mut replace: Option<(&str, Option<Value>)> = None;
    match flaw {
        Flaw::AccessTokenChar(at, c) => {
            response.access_token = insert(&response.access_token, *at, *c);
        }
        Flaw::RefreshTokenChar(at, c) => {
            // Without a refresh token, a copy of the (random) access token is one.
            let token = response
                .refresh_token
                .as_ref()
                .unwrap_or(&response.access_token);
            response.refresh_token = Some(insert(token, *at, *c));
        }
        Flaw::TokenType(value) => replace = Some(("token_type", Some(value.clone()))),
        Flaw::AccessToken(value) => replace = Some(("access_token", value.clone())),
    }
    let mut fields = response.fields();
    if let Some((name, value)) = replace {
        fields.retain(|(field, _)| field != name);
        if let Some(value) = value {
            fields.push((name.to_owned(), value));
        }
    }
    fields
}

/// An invalid body: a valid response with one flaw, its fields shuffled.
fn invalid_body(min_token: usize) -> impl Strategy<Value = (Valid, Flaw, String)> {
    (valid(min_token), flaw()).prop_flat_map(|(response, flaw)| {
        let fields = Just(apply(&response, &flaw)).prop_shuffle();
        (Just(response), Just(flaw), fields, any::<bool>())
            .prop_map(|(response, flaw, fields, spaced)| (response, flaw, render(&fields, spaced)))
    })
}

/// Bodies near the parser's paths: valid and invalid responses, cut and with bytes changed.
fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    let body = prop_oneof![
        valid_body(1).prop_map(|(_, body)| body),
        invalid_body(1).prop_map(|(_, _, body)| body),
    ];
    (
        body,
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..4),
        any::<Index>(),
    )
        .prop_map(|(body, changes, cut)| {
            let mut body = body.into_bytes();
            for (at, byte) in changes {
                let at = at.index(body.len());
                body[at] = byte;
            }
            body.truncate(cut.index(body.len() + 1).max(body.len() / 2));
            body
        })
}

// ---------------------------------------------------------------------------------------------
// Checks shared by the properties
// ---------------------------------------------------------------------------------------------

/// Everything a user could print of a parse result: Debug and Display, with error sources.
fn shown(result: &Result<TokenSet, Error>) -> Vec<String> {
    match result {
        Ok(tokens) => vec![format!("{tokens:?}"), format!("{tokens:#?}")],
        Err(error) => {
            let mut shown = vec![
                error.to_string(),
                format!("{error:?}"),
                format!("{error:#?}"),
            ];
            let mut source = error.source();
            while let Some(cause) = source {
                shown.push(cause.to_string());
                shown.push(format!("{cause:?}"));
                source = cause.source();
            }
            shown
        }
    }
}

/// The parts of `secret` that must never be printed: itself and, when it holds characters that
/// a printer may escape, each run of at least 8 characters between them.
fn secret_parts(secret: &str) -> Vec<&str> {
    let mut parts = vec![secret];
    parts.extend(
        secret
            .split(|c: char| !c.is_ascii_graphic())
            .filter(|part| part.len() >= 8 && *part != secret),
    );
    parts
}

/// Parses `body`, checking what must hold of any result: no panic, only `InvalidResponse`
/// errors, tokens that are non-empty visible ASCII, expiries within ten years from now, and
/// the helpers of `TokenSet` that read them.
fn parse_and_check(body: &[u8]) -> Result<TokenSet, Error> {
    let before = Instant::now();
    let result = parse_token_response(body);
    let after = Instant::now();
    match &result {
        Ok(tokens) => {
            let access = tokens.access_token().secret();
            assert!(!access.is_empty(), "empty access token");
            assert!(
                access.bytes().all(|b| b.is_ascii_graphic()),
                "access token {access:?}"
            );
            if let Some(refresh) = tokens.refresh_token() {
                let refresh = refresh.secret();
                assert!(!refresh.is_empty(), "empty refresh token");
                assert!(
                    refresh.bytes().all(|b| b.is_ascii_graphic()),
                    "refresh token {refresh:?}"
                );
            }
            let latest = after + Duration::from_secs(TEN_YEARS);
            for at in [tokens.expires_at(), tokens.refresh_expires_at()]
                .into_iter()
                .flatten()
            {
                assert!(at >= before && at <= latest, "expiry out of range");
            }
            if let Some(at) = tokens.expires_at() {
                assert_eq!(tokens.expiry_or(Duration::ZERO), at);
                assert_eq!(tokens.expiry_or(Duration::MAX), at);
            } else {
                assert!(tokens.expiry_or(Duration::ZERO) >= before);
                if jwt_expiry(access).is_none() {
                    // The default lifetime, capped (at a hundred years) but not overflowing.
                    assert!(tokens.expiry_or(Duration::MAX) > latest);
                }
            }
            let has_refresh = tokens.refresh_token().is_some();
            let refresh_expires = tokens.refresh_expires_at().is_some();
            assert_eq!(
                tokens.refresh_token_expires_within(Duration::MAX),
                !has_refresh || refresh_expires
            );
            if !has_refresh {
                assert!(tokens.refresh_token_expires_within(Duration::ZERO));
            }
        }
        Err(error) => assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{error}"),
    }
    let _ = shown(&result);
    result
}

/// Asserts that nothing printed of `result` contains a part of one of the `secrets`.
fn assert_no_secret(result: &Result<TokenSet, Error>, secrets: &[&str]) {
    for text in shown(result) {
        for secret in secrets {
            for part in secret_parts(secret) {
                assert!(!text.contains(part), "{part:?} printed in {text:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Token responses
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn token_response_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        parse_and_check(&body).ok();
    }

    #[test]
    fn token_response_never_panics_on_text(body in "\\PC{0,128}") {
        parse_and_check(body.as_bytes()).ok();
    }

    #[test]
    fn token_response_never_panics_near_valid(body in mutated_body()) {
        parse_and_check(&body).ok();
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn valid_response_round_trips((response, body) in valid_body(1)) {
        let before = Instant::now();
        let tokens = parse_and_check(body.as_bytes())
            .map_err(|error| TestCaseError::fail(format!("{error} ({error:?}) for {body}")))?;
        let after = Instant::now();
        prop_assert_eq!(tokens.access_token().secret(), response.access_token.as_str());
        prop_assert_eq!(
            tokens.refresh_token().map(|token| token.secret()),
            response.refresh_token.as_deref()
        );
        let dpop = response
            .token_type
            .as_deref()
            .is_some_and(|name| name.eq_ignore_ascii_case("dpop"));
        prop_assert_eq!(tokens.token_type() == TokenType::DPoP, dpop);
        match response.expires_in {
            Some((seconds, _)) => {
                let lifetime = Duration::from_secs(seconds);
                let at = tokens.expires_at().expect("expires_in given");
                prop_assert!(at >= before + lifetime && at <= after + lifetime);
                prop_assert_eq!(tokens.expiry_or(Duration::from_secs(1)), at);
            }
            None => {
                prop_assert_eq!(tokens.expires_at(), None);
                // A random token is no JWT, so the default lifetime applies.
                prop_assert_eq!(jwt_expiry(&response.access_token), None);
                let default = Duration::from_secs(900);
                let at = tokens.expiry_or(default);
                prop_assert!(at >= before + default && at <= Instant::now() + default);
            }
        }
        match (response.refresh_token.is_some(), response.refresh_expires_in) {
            (true, Some((seconds, _))) if seconds > 0 => {
                let lifetime = Duration::from_secs(seconds);
                let at = tokens.refresh_expires_at().expect("refresh_expires_in given");
                prop_assert!(at >= before + lifetime && at <= after + lifetime);
                prop_assert!(tokens.refresh_token_expires_within(lifetime));
                if seconds > 60 {
                    prop_assert!(!tokens.refresh_token_expires_within(lifetime - Duration::from_secs(60)));
                }
            }
            (true, _) => {
                prop_assert!(!tokens.refresh_token_expires_within(Duration::from_secs(TEN_YEARS)));
            }
            (false, _) => prop_assert!(tokens.refresh_token_expires_within(Duration::ZERO)),
        }
    }

    #[test]
    fn invalid_response_is_rejected((response, flaw, body) in invalid_body(1)) {
        match parse_and_check(body.as_bytes()) {
            Ok(tokens) => {
                return Err(TestCaseError::fail(format!("{flaw:?} accepted: {body} gave {tokens:?}")));
            }
            Err(error) => {
                prop_assert_eq!(error.kind(), ErrorKind::InvalidResponse);
                // The server may have rotated the old refresh token out: a valid new one is
                // kept in the error.
                let kept = error.refresh_token().map(|token| token.secret());
                match flaw {
                    Flaw::RefreshTokenChar(..) => prop_assert_eq!(kept, None),
                    _ => prop_assert_eq!(kept, response.refresh_token.as_deref()),
                }
            }
        }
    }

    #[test]
    fn implausible_lifetimes_are_ignored(
        (response, body) in valid_body(1),
        expires_in in prop::option::of(bad_expires_in()),
        refresh_expires_in in prop::option::of(bad_refresh_expires_in()),
    ) {
        let mut fields = response.fields();
        for (name, value) in [("expires_in", expires_in.clone()), ("refresh_expires_in", refresh_expires_in.clone())] {
            if let Some(value) = value {
                fields.retain(|(field, _)| field != name);
                fields.push((name.to_owned(), value));
            }
        }
        let flawed = render(&fields, false);
        let tokens = parse_and_check(flawed.as_bytes())
            .map_err(|error| TestCaseError::fail(format!("{error} for {flawed} (from {body})")))?;
        prop_assert_eq!(tokens.access_token().secret(), response.access_token.as_str());
        prop_assert_eq!(
            tokens.refresh_token().map(|token| token.secret()),
            response.refresh_token.as_deref()
        );
        if expires_in.is_some() {
            prop_assert_eq!(tokens.expires_at(), None);
        }
        if refresh_expires_in.is_some() {
            prop_assert_eq!(tokens.refresh_expires_at(), None);
        }
    }

    #[test]
    fn valid_response_prints_no_token((response, body) in valid_body(8)) {
        let result = parse_and_check(body.as_bytes());
        prop_assert!(result.is_ok(), "{body}");
        let mut secrets = vec![response.access_token.as_str()];
        secrets.extend(response.refresh_token.as_deref());
        assert_no_secret(&result, &secrets);
    }

    #[test]
    fn invalid_response_prints_no_token((response, flaw, _body) in invalid_body(8)) {
        let fields = apply(&response, &flaw);
        let body = render(&fields, false);
        let result = parse_and_check(body.as_bytes());
        prop_assert!(result.is_err(), "{body}");
        // The tokens as sent, flawed or not.
        let sent: Vec<String> = fields
            .iter()
            .filter(|(name, _)| name == "access_token" || name == "refresh_token")
            .filter_map(|(_, value)| value.as_str().map(str::to_owned))
            .filter(|token| token.len() >= 8)
            .collect();
        let mut secrets: Vec<&str> = sent.iter().map(String::as_str).collect();
        secrets.push(&response.access_token);
        secrets.extend(response.refresh_token.as_deref());
        assert_no_secret(&result, &secrets);
    }
}

// ---------------------------------------------------------------------------------------------
// JWT `exp`
// ---------------------------------------------------------------------------------------------

/// A JWT segment that is not decoded (header or signature): anything without a dot.
fn jwt_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{0,48}",
        "[^.]{0,24}",
        Just("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9".to_owned()),
    ]
}

/// A JSON payload with `"exp": exp` among other claims, base64url with or without padding.
fn jwt_with_exp(exp: Value) -> impl Strategy<Value = String> {
    let claims = prop::collection::vec(
        (
            "[a-z]{1,8}".prop_filter("not exp", |name: &String| name != "exp"),
            json_value(),
        ),
        0..3,
    );
    (jwt_segment(), claims, any::<bool>(), jwt_segment()).prop_flat_map(
        move |(header, claims, padded, signature)| {
            let mut fields: Vec<(String, Value)> = claims;
            fields.push(("exp".to_owned(), exp.clone()));
            (Just(fields).prop_shuffle(), any::<bool>()).prop_map(move |(fields, spaced)| {
                let payload = render(&fields, spaced);
                let payload = if padded {
                    URL_SAFE.encode(payload)
                } else {
                    URL_SAFE_NO_PAD.encode(payload)
                };
                format!("{header}.{payload}.{signature}")
            })
        },
    )
}

/// A token of three segments whose payload is base64url of these bytes.
fn jwt_of_payload(payload: Vec<u8>, padded: bool) -> impl Strategy<Value = String> {
    let payload = if padded {
        URL_SAFE.encode(payload)
    } else {
        URL_SAFE_NO_PAD.encode(payload)
    };
    (jwt_segment(), jwt_segment())
        .prop_map(move |(header, signature)| format!("{header}.{payload}.{signature}"))
}

/// Anything near a JWT: random strings, dotted segments, payloads of random or JSON-ish bytes.
fn jwt_like() -> impl Strategy<Value = String> {
    let exp_text = prop_oneof![
        "-?[0-9]{1,25}(\\.[0-9]{0,12})?([eE][-+]?[0-9]{1,4})?",
        "\\PC{0,12}",
    ];
    prop_oneof![
        "\\PC{0,64}",
        prop::collection::vec("[A-Za-z0-9_=+/-]{0,24}", 0..5).prop_map(|parts| parts.join(".")),
        (prop::collection::vec(any::<u8>(), 0..64), any::<bool>())
            .prop_flat_map(|(payload, padded)| jwt_of_payload(payload, padded)),
        (exp_text, any::<bool>()).prop_flat_map(|(exp, padded)| {
            jwt_of_payload(format!("{{\"exp\":{exp}}}").into_bytes(), padded)
        }),
        json_value().prop_flat_map(jwt_with_exp),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn jwt_exp_round_trips(
        (exp, token) in (0u64..1 << 53).prop_flat_map(|exp| (Just(exp), jwt_with_exp(json!(exp))))
    ) {
        prop_assert_eq!(jwt_expiry(&token), Some(UNIX_EPOCH + Duration::from_secs(exp)), "{}", token);
    }

    #[test]
    fn jwt_without_usable_exp_gives_none(
        token in prop_oneof![
            (i64::MIN..0).prop_map(Value::from),
            (-1e300f64..-1e-300).prop_map(Value::from),
            Just(Value::Null),
            "\\PC{0,8}".prop_map(Value::String),
            Just(json!([1_700_000_000])),
            Just(json!({"exp": 1_700_000_000})),
            Just(json!(true)),
        ]
        .prop_flat_map(jwt_with_exp)
    ) {
        prop_assert_eq!(jwt_expiry(&token), None, "{}", token);
    }

    #[test]
    fn jwt_expiry_never_panics(token in jwt_like()) {
        if let Some(at) = jwt_expiry(&token) {
            prop_assert!(at >= UNIX_EPOCH);
            prop_assert_eq!(token.matches('.').count(), 2);
        }
        // Any string may be an access token: `expiry_or` reads its `exp` without panicking.
        let _ = TokenSet::new(token).expiry_or(Duration::from_secs(60));
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// A response without `expires_in` whose access token is a JWT expires at its `exp`.
    #[test]
    fn response_without_expires_in_expires_at_jwt_exp(
        (offset, token) in (-100_000_000i64..=1_000_000_000).prop_flat_map(|offset| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
            let exp = now.saturating_add_signed(offset);
            (Just(offset), jwt_with_exp(json!(exp)))
        }).prop_filter("a token the parser accepts", |(_, token)| {
            token.bytes().all(|b| b.is_ascii_graphic())
        })
    ) {
        let body = json!({"access_token": token, "token_type": "Bearer"}).to_string();
        let tokens = parse_and_check(body.as_bytes())
            .map_err(|error| TestCaseError::fail(format!("{error} for {body}")))?;
        prop_assert_eq!(tokens.expires_at(), None);
        let left = tokens.expiry_or(Duration::from_secs(900)).saturating_duration_since(Instant::now());
        let expected = Duration::from_secs(offset.max(0).unsigned_abs());
        // `exp` has whole seconds, and the clock moved between making the token and now.
        prop_assert!(
            left <= expected && left + Duration::from_secs(5) >= expected,
            "{left:?} left, {expected:?} expected"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Fixed cases: the fuzzers' findings and edges of the properties above
// ---------------------------------------------------------------------------------------------

#[test]
fn edges_of_expires_in() {
    let body = |expires_in: &str| format!(r#"{{"access_token":"t","expires_in":{expires_in}}}"#);
    for accepted in [
        "1",
        "315360000",
        "\"315360000\"",
        "\" 60 \"",
        "0.5",
        "1e-300",
    ] {
        let result = parse_and_check(body(accepted).as_bytes());
        assert!(result.is_ok(), "{accepted}: {result:?}");
    }
    // Implausible: ignored for the JWT `exp` or the default lifetime, not a refused answer.
    for ignored in [
        "0",
        "-0",
        "-0.0",
        "315360000.001",
        "315360001",
        "\"1e400\"",
        "\"inf\"",
        "\"NaN\"",
        "\"\"",
        "true",
    ] {
        let result = parse_and_check(body(ignored).as_bytes());
        assert_eq!(
            result.map(|tokens| tokens.expires_at()).ok(),
            Some(None),
            "{ignored}"
        );
    }
    // A number serde_json cannot read makes the body unreadable: refused whole.
    assert!(parse_and_check(body("1e400").as_bytes()).is_err());
}

#[test]
fn edges_of_jwt_exp() {
    let jwt = |payload: &str| format!("h.{}.s", URL_SAFE_NO_PAD.encode(payload));
    assert_eq!(jwt_expiry(&jwt(r#"{"exp":0}"#)), Some(UNIX_EPOCH));
    assert_eq!(
        jwt_expiry(&jwt(r#"{"exp":9007199254740992}"#)),
        Some(UNIX_EPOCH + Duration::from_secs(1 << 53))
    );
    for none in [
        r#"{"exp":18446744073709551615}"#,
        r#"{"exp":1e19}"#,
        r#"{"exp":-1}"#,
        r#"{"exp":-0.5}"#,
        r#"{"exp":1,"exp":2}"#,
    ] {
        assert_eq!(jwt_expiry(&jwt(none)), None, "{none}");
    }
    assert_eq!(jwt_expiry(""), None);
    assert_eq!(jwt_expiry(".."), None);
    assert_eq!(jwt_expiry(&format!("h.{}.s", "A".repeat(17 * 1024))), None);
}

/// A JSON payload is read only if it is an object: RFC 7519 §7.2 requires the claims set to be
/// one, and `jwt_expiry` documents `None` for a payload without an `exp` claim.
///
/// Found by the `jwt_exp` fuzzer (fixed): the payload was read into a derived struct, and serde
/// reads a struct from a JSON array too, so a payload `[N]` gave `Some(UNIX_EPOCH + N s)`. The
/// first two tokens are the fuzzer's (payloads `"\t\t[0]"` and, minimised by `cargo fuzz tmin`,
/// `"\t\t[\t\r4\t]"`); `.WzBd.` is `[0]`.
#[test]
fn jwt_payload_that_is_an_array_has_no_exp() {
    for token in ["`.CQlbMF0.", ".CQlbCQ00CV0.", ".WzBd."] {
        assert_eq!(jwt_expiry(token), None, "{token}");
    }
    for payload in ["[1700000000]", " [ 1700000000.5 ] "] {
        let token = format!("h.{}.s", URL_SAFE_NO_PAD.encode(payload));
        assert_eq!(jwt_expiry(&token), None, "{payload}");
    }
}

/// A token response is a JSON object (RFC 6749 §5.1).
///
/// The same bug (fixed), found by reading the code after the `jwt_exp` finding:
/// `parse_token_response` read its derived `TokenResponse` from a JSON array of exactly five
/// elements, in field order.
#[test]
fn token_response_that_is_an_array_is_rejected() {
    for body in [
        r#"["t",null,null,null,null]"#,
        r#"["t","Bearer",900,"r",0]"#,
    ] {
        let result = parse_token_response(body.as_bytes());
        assert!(result.is_err(), "{body}: {result:?}");
    }
}

/// Claims and fields that are not read are skipped without checking their UTF-8 (serde_json
/// does not validate strings it ignores). Lenient, not unsafe: what is read is still checked.
#[test]
fn invalid_utf8_in_unread_strings_is_skipped() {
    let token = format!(
        "h.{}.s",
        URL_SAFE_NO_PAD.encode(b"{\"exp\":1,\"sub\":\"\x85\"}")
    );
    if let Some(at) = jwt_expiry(&token) {
        assert_eq!(at, UNIX_EPOCH + Duration::from_secs(1));
    }
    let body = b"{\"access_token\":\"t\",\"scope\":\"\xff\"}";
    if let Ok(tokens) = parse_and_check(body) {
        assert_eq!(tokens.access_token().secret(), "t");
    }
    // A read field with invalid UTF-8 is rejected.
    let body = b"{\"access_token\":\"t\xff\"}";
    assert!(parse_and_check(body).is_err());
}
