//! Answers of real servers, read and classified; what may never be lost or printed.

use super::*;
use http::HeaderValue;

fn answer(grant: Grant, status: u16, content_type: &str, body: &str) -> Error {
    let mut headers = HeaderMap::new();
    if !content_type.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
    }
    interpret(
        grant,
        StatusCode::from_u16(status).unwrap(),
        &headers,
        Some(body.as_bytes()),
        &["s3cret-password", "rt-presented"],
    )
    .unwrap_err()
}

fn json(grant: Grant, status: u16, body: &str) -> Error {
    answer(grant, status, "application/json", body)
}

#[tokio::test]
async fn parses_a_keycloak_answer() {
    let body = br#"{"access_token":"eyJ.a.b","expires_in":900,"refresh_expires_in":2414162,
        "refresh_token":"eyJ.r.s","token_type":"Bearer","not-before-policy":0,
        "session_state":"x","scope":"groups email profile","client_type":"personal"}"#;
    let tokens = parse_token_response(body).unwrap();
    assert_eq!(tokens.access_token().secret(), "eyJ.a.b");
    assert_eq!(tokens.refresh_token().unwrap().secret(), "eyJ.r.s");
    let left = tokens.expires_at().unwrap() - tokio::time::Instant::now();
    assert!(left > Duration::from_secs(899) && left <= Duration::from_secs(900));
    assert!(tokens.refresh_expires_at().is_some());
}

#[tokio::test]
async fn lenient_where_servers_differ() {
    let tokens =
        parse_token_response(br#"{"access_token":"t","token_type":"bearer","expires_in":"60"}"#)
            .unwrap();
    assert!(tokens.expires_at().is_some());
    let no_type = parse_token_response(br#"{"access_token":"t"}"#).unwrap();
    assert_eq!(no_type.expires_at(), None);
    let offline =
        parse_token_response(br#"{"access_token":"t","refresh_token":"r","refresh_expires_in":0}"#)
            .unwrap();
    assert_eq!(offline.refresh_expires_at(), None);
    let null_refresh = parse_token_response(br#"{"access_token":"t","refresh_token":null}"#);
    assert_eq!(null_refresh.unwrap().refresh_token(), None);
}

#[test]
fn dpop_tokens_are_typed_and_nonce_challenges_are_no_refusal() {
    for (body, token_type) in [
        (
            r#"{"access_token":"t","token_type":"DPoP"}"#,
            TokenType::DPoP,
        ),
        (
            r#"{"access_token":"t","token_type":"dpop"}"#,
            TokenType::DPoP,
        ),
        (
            r#"{"access_token":"t","token_type":"Bearer"}"#,
            TokenType::Bearer,
        ),
        (r#"{"access_token":"t"}"#, TokenType::Bearer),
    ] {
        let tokens = parse_token_response(body.as_bytes()).unwrap();
        assert_eq!(tokens.token_type(), token_type, "{body}");
    }
    let nonce = json(
        Grant::RefreshToken,
        400,
        r#"{"error":"use_dpop_nonce","error_description":"Authorization server requires nonce in DPoP proof"}"#,
    );
    assert_eq!(nonce.kind(), ErrorKind::Transient, "{nonce}");
    assert_eq!(nonce.error_code(), Some("use_dpop_nonce"));
    let proof = json(
        Grant::Password,
        400,
        r#"{"error":"invalid_dpop_proof","error_description":"DPoP proof htu mismatch"}"#,
    );
    assert_eq!(proof.kind(), ErrorKind::Dpop, "{proof}");
    assert!(!proof.is_transient());
}

// Issue 11.1: an implausible lifetime is ignored, not a reason to refuse the answer (and
// lose its rotated refresh token).
#[test]
fn implausible_lifetimes_are_ignored() {
    for field in [
        r#""expires_in":0"#,
        r#""expires_in":-1"#,
        r#""expires_in":1000000000000"#,
        r#""expires_in":"soon""#,
        r#""expires_in":[900]"#,
        r#""refresh_expires_in":-5"#,
        r#""refresh_expires_in":"never""#,
    ] {
        let body = format!(r#"{{"access_token":"t","refresh_token":"r2",{field}}}"#);
        let tokens = parse_token_response(body.as_bytes())
            .unwrap_or_else(|error| panic!("{field}: {error}"));
        assert_eq!(tokens.expires_at(), None, "{field}");
        assert_eq!(tokens.refresh_expires_at(), None, "{field}");
        assert_eq!(tokens.refresh_token().unwrap().secret(), "r2");
    }
}

#[test]
fn refuses_answers_without_a_usable_access_token() {
    for body in [
        "",
        "not json",
        r#"{"access_token":"t""#,
        r#"{"token_type":"Bearer"}"#,
        r#"{"access_token":""}"#,
        r#"{"access_token":null}"#,
        r#"{"access_token":"a\nb"}"#,
        r#"{"access_token":"a b"}"#,
        r#"{"access_token":"tøken"}"#,
        r#"{"access_token":"t","token_type":"mac"}"#,
        r#"{"access_token":"t","token_type":1}"#,
        r#"{"access_token":42}"#,
        r#"{"access_token":"t","refresh_token":"r 2"}"#,
        r#"{"access_token":"t","refresh_token":7}"#,
        r#"["t","Bearer",900,"r",0]"#,
    ] {
        let error = parse_token_response(body.as_bytes()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{body}");
        assert!(error.is_transient(), "{body}");
        assert_eq!(error.refresh_token(), None, "{body}");
    }
    let too_large = interpret(
        Grant::Password,
        StatusCode::OK,
        &HeaderMap::new(),
        None,
        &[],
    );
    assert_eq!(too_large.unwrap_err().kind(), ErrorKind::InvalidResponse);
}

// Issue 11.1: the server rotated the refresh token before the client refused the answer.
#[test]
fn a_refused_answer_keeps_its_refresh_token() {
    for body in [
        r#"{"refresh_token":"r2","token_type":"Bearer"}"#,
        r#"{"access_token":"","refresh_token":"r2"}"#,
        r#"{"access_token":42,"refresh_token":"r2"}"#,
        r#"{"access_token":"a\u0007b","refresh_token":"r2"}"#,
        r#"{"access_token":"t","token_type":"mac","refresh_token":"r2"}"#,
    ] {
        let error = parse_token_response(body.as_bytes()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{body}");
        assert_eq!(
            error.refresh_token().map(RefreshToken::secret),
            Some("r2"),
            "{body}"
        );
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("r2\""), "{shown}");
        assert!(shown.contains("carried a new refresh token"), "{shown}");
    }
}

/// Grant, status, `Content-Type`, body; the kind, `error` and `error_description` read.
type Case<'a> = (
    Grant,
    u16,
    &'a str,
    &'a str,
    ErrorKind,
    Option<&'a str>,
    Option<&'a str>,
);

// Issue 11.2: real servers' answers, and what stands in front of them.
#[test]
fn classifies_real_servers_answers() {
    use ErrorKind::*;
    use Grant::*;
    let nginx_404 = "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
                     <center><h1>404 Not Found</h1></center>\r\n</body>\r\n</html>\r\n";
    #[rustfmt::skip]
    let cases: &[Case<'_>] = &[
        // Keycloak (MangaDex).
        (Password, 401, "application/json", r#"{"error":"invalid_grant","error_description":"Invalid user credentials"}"#, CredentialsRejected, Some("invalid_grant"), Some("Invalid user credentials")),
        (Password, 400, "application/json", r#"{"error":"invalid_grant","error_description":"Account is not fully set up"}"#, CredentialsRejected, Some("invalid_grant"), Some("Account is not fully set up")),
        (RefreshToken, 400, "application/json", r#"{"error":"invalid_grant","error_description":"Token is not active"}"#, RefreshTokenRejected, Some("invalid_grant"), Some("Token is not active")),
        (RefreshToken, 400, "application/json", r#"{"error":"invalid_grant","error_description":"Maximum allowed refresh token reuse exceeded"}"#, RefreshTokenRejected, Some("invalid_grant"), Some("Maximum allowed refresh token reuse exceeded")),
        (RefreshToken, 401, "application/json", r#"{"error":"unauthorized_client","error_description":"Invalid client or Invalid client credentials"}"#, ClientRejected, Some("unauthorized_client"), Some("Invalid client or Invalid client credentials")),
        (Password, 401, "application/json", r#"{"error":"invalid_client","error_description":"Invalid client credentials"}"#, ClientRejected, Some("invalid_client"), Some("Invalid client credentials")),
        (Password, 400, "application/json", r#"{"error":"unauthorized_client","error_description":"Client not allowed for direct access grants"}"#, GrantNotAllowed, Some("unauthorized_client"), Some("Client not allowed for direct access grants")),
        (Password, 400, "application/json", r#"{"error":"unsupported_grant_type","error_description":"Unsupported grant_type"}"#, GrantNotAllowed, Some("unsupported_grant_type"), Some("Unsupported grant_type")),
        (Password, 400, "application/json", r#"{"error":"invalid_scope","error_description":"Invalid scopes: openid admin"}"#, ScopeRejected, Some("invalid_scope"), Some("Invalid scopes: openid admin")),
        (Password, 400, "application/json", r#"{"error":"invalid_request","error_description":"Missing parameter: username"}"#, Rejected, Some("invalid_request"), Some("Missing parameter: username")),
        // node oidc-provider.
        (RefreshToken, 400, "application/json; charset=utf-8", r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#, RefreshTokenRejected, Some("invalid_grant"), Some("grant request is invalid")),
        (RefreshToken, 400, "application/json; charset=utf-8", r#"{"error":"invalid_scope","error_description":"refresh token missing requested scope","scope":"profile"}"#, ScopeRejected, Some("invalid_scope"), Some("refresh token missing requested scope")),
        (ClientCredentials, 401, "application/json; charset=utf-8", r#"{"error":"invalid_client","error_description":"client authentication failed"}"#, ClientRejected, Some("invalid_client"), Some("client authentication failed")),
        (ClientCredentials, 400, "application/json; charset=utf-8", r#"{"error":"unauthorized_client","error_description":"requested grant type is not allowed for this client"}"#, GrantNotAllowed, Some("unauthorized_client"), Some("requested grant type is not allowed for this client")),
        (RefreshToken, 500, "application/json; charset=utf-8", r#"{"error":"server_error","error_description":"oops! something went wrong"}"#, Transient, Some("server_error"), Some("oops! something went wrong")),
        // django-oauth-toolkit (oauthlib): codes with and without descriptions.
        (RefreshToken, 400, "application/json", r#"{"error": "invalid_grant"}"#, RefreshTokenRejected, Some("invalid_grant"), None),
        (Password, 400, "application/json", r#"{"error": "invalid_grant", "error_description": "Invalid credentials given."}"#, CredentialsRejected, Some("invalid_grant"), Some("Invalid credentials given.")),
        (RefreshToken, 401, "application/json", r#"{"error": "invalid_client"}"#, ClientRejected, Some("invalid_client"), None),
        (RefreshToken, 400, "application/json", r#"{"error": "invalid_scope"}"#, ScopeRejected, Some("invalid_scope"), None),
        // OAuth2 words for "not now".
        (RefreshToken, 400, "application/json", r#"{"error":"temporarily_unavailable"}"#, Transient, Some("temporarily_unavailable"), None),
        (RefreshToken, 400, "application/json", r#"{"error":"server_error"}"#, Transient, Some("server_error"), None),
        // What stands in front of token endpoints: never a verdict on the session.
        (RefreshToken, 404, "text/html", nginx_404, Transient, None, None),
        (Password, 403, "text/html; charset=UTF-8", "<!DOCTYPE html><title>Attention Required!</title>", Transient, None, None),
        (RefreshToken, 401, "", "<html><body>401 Authorization Required</body></html>", Transient, None, None),
        (RefreshToken, 400, "", "", Transient, None, None),
        (Password, 401, "application/json", "", Transient, None, None),
        (RefreshToken, 404, "application/json", r#"{"message":"no Route matched with those values"}"#, Transient, None, None),
        (RefreshToken, 404, "application/json", r#"{"error":"Realm does not exist"}"#, Transient, Some("Realm does not exist"), None),
        (RefreshToken, 400, "application/json", r#"{"error":{"code":400}}"#, Transient, None, None),
        (RefreshToken, 302, "text/html", "<a href=\"/login\">Found</a>", Transient, None, None),
        (RefreshToken, 503, "text/html", "<html>down</html>", Transient, None, None),
        (RefreshToken, 502, "", "", Transient, None, None),
        (RefreshToken, 429, "application/json", r#"{"error":"invalid_grant"}"#, Transient, Some("invalid_grant"), None),
    ];
    for &(grant, status, content_type, body, kind, code, description) in cases {
        let error = answer(grant, status, content_type, body);
        let shown = format!("{status} {body}");
        assert_eq!(error.kind(), kind, "{shown}: {error}");
        assert_eq!(error.is_transient(), kind == Transient, "{shown}");
        assert_eq!(error.status().map(|s| s.as_u16()), Some(status), "{shown}");
        assert_eq!(error.grant_type(), Some(grant.as_str()), "{shown}");
        assert_eq!(error.error_code(), code, "{shown}");
        assert_eq!(error.error_description(), description, "{shown}");
    }
}

// Issue 11.4: the message names the grant, the code and the description as sent.
#[test]
fn messages_name_the_grant_and_the_servers_words() {
    for (error, shown) in [
        (
            json(
                Grant::Password,
                401,
                r#"{"error":"invalid_grant","error_description":"Invalid user credentials"}"#,
            ),
            r#"the token endpoint refused the grant (password grant, HTTP 401): invalid_grant "Invalid user credentials""#,
        ),
        (
            json(
                Grant::Password,
                400,
                r#"{"error":"unauthorized_client","error_description":"Client not allowed for direct access grants"}"#,
            ),
            r#"the token endpoint refused the grant (password grant, HTTP 400): unauthorized_client "Client not allowed for direct access grants""#,
        ),
        (
            json(Grant::RefreshToken, 400, r#"{"error": "invalid_grant"}"#),
            "the token endpoint refused the grant (refresh_token grant, HTTP 400): invalid_grant",
        ),
        (
            answer(Grant::RefreshToken, 404, "text/html", "<html>404</html>"),
            "the token endpoint answered with an HTML page, not an OAuth2 error (refresh_token grant, HTTP 404)",
        ),
        (
            answer(Grant::ClientCredentials, 403, "", ""),
            "the token endpoint answered with an empty body, not an OAuth2 error (client_credentials grant, HTTP 403)",
        ),
    ] {
        assert_eq!(error.to_string(), shown);
    }
}

// Issue 11.4: bounded, control characters escaped, never a secret the request sent.
#[test]
fn server_words_are_bounded_escaped_and_redacted() {
    let long = format!(
        r#"{{"error":"invalid_grant","error_description":"bad\u0000\u001b[31m\n{}"}}"#,
        "x".repeat(10_000)
    );
    let error = json(Grant::Password, 400, &long);
    assert_eq!(
        error.error_description().map(|d| d.chars().count()),
        Some(LONGEST_DESCRIPTION)
    );
    let shown = error.to_string();
    assert!(shown.len() < 2 * LONGEST_DESCRIPTION, "{}", shown.len());
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    assert!(shown.contains(r"bad\0\u{1b}[31m\n"), "{shown}");

    let echoed = json(
        Grant::RefreshToken,
        400,
        r#"{"error":"invalid_grant","error_description":"Invalid refresh token rt-presented for password s3cret-password"}"#,
    );
    assert_eq!(
        echoed.error_description(),
        Some("Invalid refresh token <redacted> for password <redacted>")
    );
    let shown = format!("{echoed} {echoed:?}");
    assert!(
        !shown.contains("rt-presented") && !shown.contains("s3cret"),
        "{shown}"
    );
}

#[test]
fn reads_retry_after() {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    let error = interpret(
        Grant::RefreshToken,
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        Some(b""),
        &[],
    )
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));

    let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(60));
    headers.insert(RETRY_AFTER, HeaderValue::from_str(&in_a_minute).unwrap());
    let wait = retry_after(&headers).unwrap();
    assert!(wait > Duration::from_secs(58) && wait <= Duration::from_secs(60));

    headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(retry_after(&headers), None);
}
