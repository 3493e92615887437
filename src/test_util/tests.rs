//! Tests over real connections on 127.0.0.1.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use super::{Api, Fault, IdentityProvider, ProviderConfig};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("not JSON ({error}): {:?}", self.body))
    }

    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .map(|value| value.to_str().expect("ASCII header"))
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("UTF-8 body")
    }
}

async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Reply {
    let response = client.request(request).await.expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

async fn post_raw(client: &HttpClient, url: &str, content_type: &str, body: Vec<u8>) -> Reply {
    let request = Request::post(url)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::from(body))
        .expect("request");
    send(client, request).await
}

async fn post_form(client: &HttpClient, url: &str, form: &[(&str, &str)]) -> Reply {
    let body = serde_urlencoded::to_string(form).expect("form");
    post_raw(
        client,
        url,
        "application/x-www-form-urlencoded",
        body.into_bytes(),
    )
    .await
}

async fn get(client: &HttpClient, url: &str, token: Option<&str>) -> Reply {
    let mut request = Request::get(url);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(client, request.body(Full::default()).expect("request")).await
}

fn login_form(config: &ProviderConfig) -> Vec<(&str, &str)> {
    vec![
        ("grant_type", "password"),
        ("username", config.username()),
        ("password", config.password()),
        ("client_id", config.client_id()),
        ("client_secret", config.client_secret()),
    ]
}

fn refresh_form<'a>(config: &'a ProviderConfig, refresh_token: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", config.client_id()),
        ("client_secret", config.client_secret()),
    ]
}

/// Logs in with the provider's own credentials and returns the token response.
async fn login(client: &HttpClient, idp: &IdentityProvider) -> Value {
    let reply = post_form(client, &idp.token_url(), &login_form(idp.config())).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

async fn refresh(client: &HttpClient, idp: &IdentityProvider, refresh_token: &str) -> Reply {
    post_form(
        client,
        &idp.token_url(),
        &refresh_form(idp.config(), refresh_token),
    )
    .await
}

fn token<'a>(tokens: &'a Value, name: &str) -> &'a str {
    tokens[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {tokens}"))
}

/// The decoded payload of a JWT.
fn claims(jwt: &str) -> Value {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {jwt}");
    for part in &parts {
        assert!(!part.contains('='), "padded base64: {jwt}");
    }
    let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload");
    serde_json::from_slice(&payload).expect("JSON payload")
}

fn oauth_error(error: &str, description: &str) -> Value {
    json!({"error": error, "error_description": description})
}

/// Replaces the random `id` of a MangaDex error body, after checking it looks like a UUID.
fn without_error_id(mut body: Value) -> Value {
    let id = body["errors"][0]["id"].as_str().expect("error id");
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(id.matches('-').count(), 4, "{id}");
    body["errors"][0]["id"] = json!("ID");
    body
}

fn api_error(status: u16, title: &str, detail: &str) -> Value {
    json!({"result": "error", "errors": [
        {"id": "ID", "status": status, "title": title, "detail": detail, "context": null}
    ]})
}

async fn start(config: ProviderConfig) -> IdentityProvider {
    IdentityProvider::start(config)
        .await
        .expect("start provider")
}

/// Sends raw bytes and reads until the server closes the connection (a reset counts
/// as closing).
async fn raw_exchange(addr: SocketAddr, request: &str) -> Vec<u8> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    write_all(&stream, request.as_bytes()).await.expect("write");
    read_to_end(&stream).await
}

async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(written) => data = &data[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

async fn read_to_end(stream: &TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        if stream.readable().await.is_err() {
            return received;
        }
        match stream.try_read(&mut buffer) {
            Ok(0) => return received,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) if error.kind() == io::ErrorKind::ConnectionReset => return received,
            Err(error) => panic!("read failed: {error}"),
        }
    }
}

fn raw_login_request(idp: &IdentityProvider) -> String {
    let body = serde_urlencoded::to_string(login_form(idp.config())).expect("form");
    format!(
        "POST /realms/mangadex/protocol/openid-connect/token HTTP/1.1\r\nHost: {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        idp.addr(),
        body.len()
    )
}

#[tokio::test]
async fn password_login_returns_keycloak_shaped_tokens() {
    let idp = start(ProviderConfig::default()).await;
    let client = client();
    assert!(
        idp.token_url()
            .starts_with(&format!("http://127.0.0.1:{}/", idp.addr().port()))
    );
    assert!(
        idp.token_url()
            .ends_with("/realms/mangadex/protocol/openid-connect/token")
    );

    let reply = post_form(&client, &idp.token_url(), &login_form(idp.config())).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    let tokens = reply.json();
    assert_eq!(tokens["expires_in"], 900);
    assert_eq!(tokens["refresh_expires_in"], 30 * 24 * 60 * 60);
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["not-before-policy"], 0);
    assert_eq!(tokens["scope"], "groups email profile");
    assert_eq!(tokens["client_type"], "personal");
    let session_state = token(&tokens, "session_state");
    assert_eq!(session_state.len(), 36);

    let access = claims(token(&tokens, "access_token"));
    let refresh = claims(token(&tokens, "refresh_token"));
    assert_eq!(access["typ"], "Bearer");
    assert_eq!(refresh["typ"], "Refresh");
    assert_eq!(access["sid"], session_state);
    assert_eq!(refresh["sid"], session_state);
    assert_eq!(access["sub"], refresh["sub"]);
    assert_ne!(access["jti"], refresh["jti"]);
    assert_eq!(access["preferred_username"], "reader");
    let (iat, exp) = (access["iat"].as_u64(), access["exp"].as_u64());
    assert_eq!(exp.zip(iat).map(|(exp, iat)| exp - iat), Some(900));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(iat.is_some_and(|iat| iat.abs_diff(now) < 60));
    assert!(idp.is_valid_access_token(token(&tokens, "access_token")));
    assert!(!idp.is_valid_access_token(token(&tokens, "refresh_token")));

    // A second login is a second session with other tokens.
    let again = login(&client, &idp).await;
    assert_ne!(again["session_state"], tokens["session_state"]);
    assert_ne!(again["access_token"], tokens["access_token"]);
    let stats = idp.stats();
    assert_eq!(stats.password_grants, 2);
    assert_eq!(stats.requests, 2);
    assert_eq!(stats.invalid_grants, 0);
}

#[tokio::test]
async fn wrong_credentials_get_the_exact_keycloak_errors() {
    let idp = start(ProviderConfig::default()).await;
    let client = client();
    let url = idp.token_url();
    let config = idp.config();

    let mut form = login_form(config);
    form[2].1 = "wrong password";
    let reply = post_form(&client, &url, &form).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    assert_eq!(
        reply.text(),
        r#"{"error":"invalid_grant","error_description":"Invalid user credentials"}"#
    );

    let mut form = login_form(config);
    form[1].1 = "somebody-else";
    let reply = post_form(&client, &url, &form).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json(),
        oauth_error("invalid_grant", "Invalid user credentials")
    );

    // The client is checked first, even when the user is wrong too.
    let unauthorized_client = oauth_error(
        "unauthorized_client",
        "Invalid client or Invalid client credentials",
    );
    for (index, value) in [(3, "other-client"), (4, "wrong-secret")] {
        let mut form = login_form(config);
        form[index].1 = value;
        form[2].1 = "wrong password";
        let reply = post_form(&client, &url, &form).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json(), unauthorized_client);
    }
    assert_eq!(idp.stats().invalid_grants, 2);
    assert_eq!(idp.stats().password_grants, 0);

    let legacy = start(ProviderConfig::default().legacy_invalid_client(true)).await;
    let mut form = login_form(legacy.config());
    form[4].1 = "wrong-secret";
    let reply = post_form(&client, &legacy.token_url(), &form).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        reply.json(),
        oauth_error("invalid_client", "Invalid client credentials")
    );
}

#[tokio::test]
async fn malformed_requests_get_errors_not_panics() {
    let idp = start(ProviderConfig::default()).await;
    let client = client();
    let url = idp.token_url();
    let config = idp.config();

    let json_body = serde_json::to_vec(&json!({
        "grant_type": "password",
        "username": config.username(),
        "password": config.password(),
        "client_id": config.client_id(),
        "client_secret": config.client_secret(),
    }))
    .expect("JSON");
    let reply = post_raw(&client, &url, "application/json", json_body).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"], "invalid_request");

    let missing =
        |name: &str| oauth_error("invalid_request", &format!("Missing parameter: {name}"));
    let cases = [
        (login_form(config)[1..].to_vec(), missing("grant_type")),
        (login_form(config)[..4].to_vec(), missing("client_secret")),
        (
            [&login_form(config)[..2], &login_form(config)[3..]].concat(),
            missing("password"),
        ),
        (
            [login_form(config), vec![("username", "again")]].concat(),
            oauth_error("invalid_request", "Duplicate parameter: username"),
        ),
        (
            vec![("grant_type", "authorization_code"), ("code", "x")],
            oauth_error("unsupported_grant_type", "Unsupported grant_type"),
        ),
    ];
    for (form, expected) in cases {
        let reply = post_form(&client, &url, &form).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{form:?}");
        assert_eq!(reply.json(), expected, "{form:?}");
    }
    let reply = post_form(&client, &url, &[("grant_type", "refresh_token")]).await;
    assert_eq!(
        reply.json(),
        oauth_error("invalid_request", "Missing parameter: client_id")
    );

    // Not UTF-8, not even a form: still an answer.
    let reply = post_raw(
        &client,
        &url,
        "application/x-www-form-urlencoded",
        vec![0xff, 0xfe, b'&', b'=', b'%'],
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = get(&client, &url, None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header(header::ALLOW), "POST");

    let huge = vec![b'a'; 100 * 1024];
    let reply = post_raw(&client, &url, "application/x-www-form-urlencoded", huge).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);

    let elsewhere = url.replace("/token", "/userinfo");
    assert_eq!(
        get(&client, &elsewhere, None).await.status,
        StatusCode::NOT_FOUND
    );

    // Parameters on the media type are fine.
    let body = serde_urlencoded::to_string(login_form(config)).expect("form");
    let reply = post_raw(
        &client,
        &url,
        "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        body.into_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);

    let stats = idp.stats();
    assert_eq!(stats.requests, 11, "{stats:?}");
    assert_eq!(stats.password_grants, 1);
    assert_eq!(stats.invalid_grants, 0);
}

#[tokio::test]
async fn form_encoding_of_special_characters_is_decoded() {
    let password = "p&ss=w+rd é";
    let idp = start(ProviderConfig::default().user("reader", password)).await;
    let client = client();

    let body = serde_urlencoded::to_string(login_form(idp.config())).expect("form");
    assert!(body.contains("p%26ss%3Dw%2Brd+%C3%A9"), "{body}");
    login(&client, &idp).await;

    // Written by hand: `+` is a space, `%2B` a plus.
    let body = "grant_type=password&username=reader&password=p%26ss%3Dw%2Brd+%C3%A9\
                &client_id=personal-client-test&client_secret=test-client-secret";
    let form = "application/x-www-form-urlencoded";
    let reply = post_raw(&client, &idp.token_url(), form, body.into()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = body.replace("%2B", "+");
    let reply = post_raw(&client, &idp.token_url(), form, body.into()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(idp.stats().password_grants, 2);
}

#[tokio::test]
async fn client_credentials_and_http_basic_client_authentication() {
    let idp = start(ProviderConfig::default().client("my client", "s3cr:t&+é")).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();

    // RFC 6749 §2.3.1: form-encode id and secret, then Basic.
    let credentials = format!(
        "{}:{}",
        "my+client",
        serde_urlencoded::to_string([("", "s3cr:t&+é")]).expect("encode")[1..].to_owned()
    );
    let request = Request::post(idp.token_url())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(
            header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(credentials)),
        )
        .body(Full::from("grant_type=client_credentials"))
        .expect("request");
    let reply = send(&client, request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let tokens = reply.json();
    assert!(tokens.get("refresh_token").is_none());
    assert!(tokens.get("session_state").is_none());
    assert_eq!(tokens["refresh_expires_in"], 0);
    let access = token(&tokens, "access_token");
    let me = get(&client, &api.url("/user/me"), Some(access))
        .await
        .json();
    assert_eq!(
        me["data"]["attributes"]["username"],
        "service-account-my client"
    );

    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "my client"),
        ("client_secret", "s3cr:t&+é"),
    ];
    assert_eq!(
        post_form(&client, &idp.token_url(), &form).await.status,
        StatusCode::OK
    );
    assert_eq!(idp.stats().client_credentials_grants, 2);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_ends_the_session() {
    let idp = start(ProviderConfig::default()).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();
    let check = api.url("/auth/check");

    let first = login(&client, &idp).await;
    let reply = refresh(&client, &idp, token(&first, "refresh_token")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(header::CACHE_CONTROL), "no-store");
    let second = reply.json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_ne!(second["access_token"], first["access_token"]);
    assert_eq!(second["session_state"], first["session_state"]);
    assert_eq!(
        claims(token(&second, "access_token"))["sid"],
        first["session_state"]
    );
    let new_access = token(&second, "access_token");
    assert_eq!(
        get(&client, &check, Some(new_access)).await.status,
        StatusCode::OK
    );

    // The rotated-out refresh token is used again: reuse, and the session ends.
    let reply = refresh(&client, &idp, token(&first, "refresh_token")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        oauth_error(
            "invalid_grant",
            "Maximum allowed refresh token reuse exceeded"
        )
    );
    for access in [new_access, token(&first, "access_token")] {
        assert!(!idp.is_valid_access_token(access));
        let reply = get(&client, &check, Some(access)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(reply.json()["errors"][0]["detail"], "Session is not active");
    }
    let reply = refresh(&client, &idp, token(&second, "refresh_token")).await;
    assert_eq!(
        reply.json(),
        oauth_error("invalid_grant", "Session not active")
    );

    let stats = idp.stats();
    assert_eq!(stats.refresh_grants, 1);
    assert_eq!(stats.reuse_detected, 1);
    assert_eq!(stats.invalid_grants, 2);

    // Logging in again works.
    let third = login(&client, &idp).await;
    let access = token(&third, "access_token");
    assert_eq!(
        get(&client, &check, Some(access)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_refreshes_with_one_token_are_reuse() {
    let idp = start(ProviderConfig::default()).await;
    let client = client();
    let tokens = login(&client, &idp).await;
    let refresh_token = token(&tokens, "refresh_token");
    let (a, b) = tokio::join!(
        refresh(&client, &idp, refresh_token),
        refresh(&client, &idp, refresh_token)
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::BAD_REQUEST]);
    assert_eq!(idp.stats().reuse_detected, 1);
}

#[tokio::test]
async fn without_reuse_detection_old_refresh_tokens_stay_valid() {
    let idp = start(ProviderConfig::default().reuse_detection(false)).await;
    let client = client();
    let first = login(&client, &idp).await;
    let second = refresh(&client, &idp, token(&first, "refresh_token"))
        .await
        .json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    for tokens in [&first, &second, &first] {
        let reply = refresh(&client, &idp, token(tokens, "refresh_token")).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(idp.stats().refresh_grants, 4);
}

#[tokio::test]
async fn refresh_responses_can_keep_the_same_refresh_token() {
    let client = client();

    let idp = start(ProviderConfig::default().include_refresh_token_on_refresh(false)).await;
    let first = login(&client, &idp).await;
    for _ in 0..3 {
        let reply = refresh(&client, &idp, token(&first, "refresh_token")).await;
        assert_eq!(reply.status, StatusCode::OK);
        let tokens = reply.json();
        assert!(tokens.get("refresh_token").is_none(), "{tokens}");
        assert!(tokens["refresh_expires_in"].as_u64() > Some(0));
    }

    let idp = start(ProviderConfig::default().rotate_refresh_tokens(false)).await;
    let first = login(&client, &idp).await;
    for _ in 0..3 {
        let tokens = refresh(&client, &idp, token(&first, "refresh_token"))
            .await
            .json();
        assert_eq!(tokens["refresh_token"], first["refresh_token"]);
    }
    assert_eq!(idp.stats().reuse_detected, 0);
}

#[tokio::test]
async fn optional_fields_can_be_left_out() {
    let idp = start(
        ProviderConfig::default()
            .access_lifetime(Duration::from_secs(42))
            .include_expires_in(false)
            .include_refresh_expires_in(false),
    )
    .await;
    let client = client();
    let tokens = login(&client, &idp).await;
    assert!(tokens.get("expires_in").is_none());
    assert!(tokens.get("refresh_expires_in").is_none());
    let access = claims(token(&tokens, "access_token"));
    assert_eq!(
        access["exp"].as_u64(),
        access["iat"].as_u64().map(|iat| iat + 42)
    );
}

#[tokio::test]
async fn server_side_expiry_and_revocation() {
    let idp = start(ProviderConfig::default()).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();
    let check = api.url("/auth/check");

    let first = login(&client, &idp).await;
    idp.expire_refresh_tokens();
    let reply = refresh(&client, &idp, token(&first, "refresh_token")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json(),
        oauth_error("invalid_grant", "Token is not active")
    );
    let reply = refresh(&client, &idp, "eyJhbGciOiJIUzUxMiJ9.e30.bm90LW91cnM").await;
    assert_eq!(
        reply.json(),
        oauth_error("invalid_grant", "Invalid refresh token")
    );

    // Revoked access tokens: the API refuses them, refreshing still works.
    let second = login(&client, &idp).await;
    idp.revoke_access_tokens();
    let old_access = token(&second, "access_token");
    assert_eq!(
        get(&client, &check, Some(old_access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let third = refresh(&client, &idp, token(&second, "refresh_token"))
        .await
        .json();
    let new_access = token(&third, "access_token");
    assert_eq!(
        get(&client, &check, Some(new_access)).await.status,
        StatusCode::OK
    );

    // Ended sessions: neither kind of token works.
    idp.revoke_sessions();
    assert_eq!(
        get(&client, &check, Some(new_access)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = refresh(&client, &idp, token(&third, "refresh_token")).await;
    assert_eq!(
        reply.json(),
        oauth_error("invalid_grant", "Session not active")
    );
    assert_eq!(idp.stats().invalid_grants, 3);
}

#[tokio::test(start_paused = true)]
async fn lifetimes_follow_the_tokio_clock() {
    let config = ProviderConfig::default()
        .access_lifetime(Duration::from_secs(60))
        .refresh_lifetime(Duration::from_secs(120));
    let idp = start(config).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();
    let check = api.url("/auth/check");

    let first = login(&client, &idp).await;
    assert_eq!(first["expires_in"], 60);
    assert_eq!(first["refresh_expires_in"], 120);
    let access = token(&first, "access_token");
    assert_eq!(
        get(&client, &check, Some(access)).await.status,
        StatusCode::OK
    );

    tokio::time::advance(Duration::from_secs(61)).await;
    assert!(!idp.is_valid_access_token(access));
    let reply = get(&client, &check, Some(access)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json()["errors"][0]["detail"], "Token has expired");

    let second = refresh(&client, &idp, token(&first, "refresh_token"))
        .await
        .json();
    assert_eq!(second["refresh_expires_in"], 120);
    tokio::time::advance(Duration::from_secs(121)).await;
    let reply = refresh(&client, &idp, token(&second, "refresh_token")).await;
    assert_eq!(
        reply.json(),
        oauth_error("invalid_grant", "Token is not active")
    );
}

#[tokio::test]
async fn pushed_faults_are_served_once_in_order() {
    let idp = start(ProviderConfig::default()).await;
    let client = client();
    let url = idp.token_url();
    let form = login_form(idp.config());

    idp.push_fault(Fault::service_unavailable_html());
    idp.push_fault(Fault::too_many_requests(7));
    let reply = post_form(&client, &url, &form).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reply.header(header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert!(reply.text().contains("503 Service Temporarily Unavailable"));
    let reply = post_form(&client, &url, &form).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(reply.header(header::RETRY_AFTER), "7");
    assert_eq!(post_form(&client, &url, &form).await.status, StatusCode::OK);

    idp.set_fault(Some(Fault::json(StatusCode::BAD_GATEWAY, r#"{"oops":1}"#)));
    idp.push_fault(Fault::json(StatusCode::INTERNAL_SERVER_ERROR, "{}"));
    let statuses = [
        post_form(&client, &url, &form).await.status,
        post_form(&client, &url, &form).await.status,
        post_form(&client, &url, &form).await.status,
    ];
    assert_eq!(
        statuses,
        [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::BAD_GATEWAY
        ]
    );
    idp.set_fault(None);
    assert_eq!(post_form(&client, &url, &form).await.status, StatusCode::OK);

    idp.push_fault(Fault::Delay(Duration::from_millis(100)));
    let started = Instant::now();
    assert_eq!(post_form(&client, &url, &form).await.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(100));

    let stats = idp.stats();
    assert_eq!(stats.requests, 8);
    assert_eq!(stats.faults_served, 6);
    assert_eq!(stats.password_grants, 3);
}

#[tokio::test]
async fn connection_faults() {
    let idp = start(ProviderConfig::default()).await;
    let request = raw_login_request(&idp);

    idp.push_fault(Fault::CloseConnection);
    assert_eq!(raw_exchange(idp.addr(), &request).await, b"");

    idp.push_fault(Fault::ResetMidBody);
    let received = raw_exchange(idp.addr(), &request).await;
    let text = String::from_utf8(received).expect("UTF-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("content-length: 1024"), "{head}");
    assert!(body.starts_with(r#"{"access_token":"eyJ"#), "{body}");
    assert!(body.len() < 1024);

    // A client sees a failed body.
    idp.push_fault(Fault::ResetMidBody);
    let form = serde_urlencoded::to_string(login_form(idp.config())).expect("form");
    let request = Request::post(idp.token_url())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::from(form))
        .expect("request");
    let response = client().request(request).await.expect("response head");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.into_body().collect().await.is_err());

    // Normal service afterwards.
    let client = client();
    login(&client, &idp).await;
    assert_eq!(idp.stats().faults_served, 3);
}

#[tokio::test]
async fn hang_lasts_until_shutdown() {
    let idp = start(ProviderConfig::default()).await;
    idp.push_fault(Fault::Hang);
    let stream = TcpStream::connect(idp.addr()).await.expect("connect");
    write_all(&stream, raw_login_request(&idp).as_bytes())
        .await
        .expect("write");
    let wait = timeout(Duration::from_millis(200), read_to_end(&stream)).await;
    assert!(wait.is_err(), "answered: {wait:?}");

    idp.shutdown();
    let received = timeout(Duration::from_secs(5), read_to_end(&stream)).await;
    assert_eq!(received.expect("closed at shutdown"), b"");
    assert!(TcpStream::connect(idp.addr()).await.is_err());
}

#[tokio::test]
async fn response_delay_applies_after_processing() {
    let delay = Duration::from_millis(200);
    let idp = start(ProviderConfig::default().response_delay(delay)).await;
    let client = client();
    let started = Instant::now();
    let tokens = login(&client, &idp).await;
    assert!(started.elapsed() >= delay);

    // A client that gives up while waiting still had its refresh token rotated out.
    let url = idp.token_url();
    let form = refresh_form(idp.config(), token(&tokens, "refresh_token"));
    let processed = async {
        while idp.stats().refresh_grants == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        _ = post_form(&client, &url, &form) => panic!("answered before the delay"),
        () = processed => {}
    }
    let reply = refresh(&client, &idp, token(&tokens, "refresh_token")).await;
    assert_eq!(
        reply.json()["error_description"],
        "Maximum allowed refresh token reuse exceeded"
    );
}

#[tokio::test]
async fn dropping_the_last_handle_stops_the_servers() {
    let idp = start(ProviderConfig::default()).await;
    let api = Api::start(&idp).await.expect("start API");
    let (idp_addr, api_addr) = (idp.addr(), api.addr());
    let clone = idp.clone();
    drop(idp);
    assert!(TcpStream::connect(idp_addr).await.is_ok());
    drop(clone);
    drop(api);
    for addr in [idp_addr, api_addr] {
        let mut refused = false;
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "{addr} still accepts connections");
    }
}

#[tokio::test]
async fn api_accepts_valid_tokens_and_rejects_others() {
    let idp = start(ProviderConfig::default()).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();
    assert_ne!(api.addr(), idp.addr());
    assert_eq!(
        api.origin(),
        format!("http://127.0.0.1:{}", api.addr().port())
    );
    assert_eq!(api.url("/user/me"), format!("{}/user/me", api.origin()));

    let tokens = login(&client, &idp).await;
    let access = token(&tokens, "access_token");

    let reply = get(&client, &api.url("/auth/check"), Some(access)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["result"], "ok");
    assert_eq!(body["isAuthenticated"], true);
    assert!(
        body["roles"]
            .as_array()
            .is_some_and(|roles| !roles.is_empty())
    );

    let me = get(&client, &api.url("/user/me"), Some(access))
        .await
        .json();
    assert_eq!(me["result"], "ok");
    assert_eq!(me["response"], "entity");
    assert_eq!(me["data"]["type"], "user");
    assert_eq!(me["data"]["attributes"]["username"], "reader");
    assert_eq!(me["data"]["id"], claims(access)["sub"]);

    let reply = get(&client, &api.url("/auth/check"), Some("not-a-token")).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header(header::CONTENT_TYPE), "application/json");
    assert!(reply.headers.get(header::WWW_AUTHENTICATE).is_none());
    assert_eq!(
        without_error_id(reply.json()),
        api_error(401, "unauthorized_http_exception", "Token is invalid")
    );
    // A refresh token is not an access token.
    let refresh_token = token(&tokens, "refresh_token");
    let reply = get(&client, &api.url("/auth/check"), Some(refresh_token)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

    api.set_www_authenticate(true);
    let reply = get(&client, &api.url("/user/me"), Some("not-a-token")).await;
    assert_eq!(
        reply.header(header::WWW_AUTHENTICATE),
        r#"Bearer error="invalid_token""#
    );
    let reply = get(&client, &api.url("/user/me"), None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.header(header::WWW_AUTHENTICATE), "Bearer");
    assert_eq!(
        without_error_id(reply.json()),
        api_error(401, "unauthorized_http_exception", "No token provided")
    );

    let reply = get(&client, &api.url("/manga"), Some(access)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(
        without_error_id(reply.json()),
        api_error(
            404,
            "not_found_http_exception",
            r#"No route found for "GET /manga""#
        )
    );

    let stats = api.stats();
    assert_eq!(
        (stats.requests, stats.ok, stats.unauthorized),
        (7, 2, 4),
        "{stats:?}"
    );
}

#[tokio::test]
async fn api_echoes_and_records_bodies_and_can_refuse_on_demand() {
    let idp = start(ProviderConfig::default()).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();
    let access = token(&login(&client, &idp).await, "access_token").to_owned();
    let echo = |body: &'static str, method: Method| {
        Request::builder()
            .method(method)
            .uri(api.url("/echo"))
            .header(header::AUTHORIZATION, format!("Bearer {access}"))
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::from(body))
            .expect("request")
    };

    let reply = send(&client, echo("hello", Method::POST)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "hello");
    assert_eq!(reply.header(header::CONTENT_TYPE), "text/plain");

    api.push_unauthorized(2);
    for body in ["refused 1", "refused 2"] {
        let reply = send(&client, echo(body, Method::PUT)).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    let reply = send(&client, echo("again", Method::PUT)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "again");

    let stats = api.stats();
    assert_eq!(
        stats.echo_bodies,
        [Bytes::from("hello"), Bytes::from("again")]
    );
    assert_eq!((stats.requests, stats.ok, stats.unauthorized), (4, 2, 2));
}

#[tokio::test]
async fn oversized_api_bodies_are_refused() {
    let idp = start(ProviderConfig::default()).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();
    let access = token(&login(&client, &idp).await, "access_token").to_owned();
    let request = Request::post(api.url("echo"))
        .header(header::AUTHORIZATION, format!("Bearer {access}"))
        .body(Full::from(vec![b'x'; 64 * 1024 + 1]))
        .expect("request");
    let reply = send(&client, request).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(api.stats().echo_bodies.is_empty());
}

#[tokio::test]
async fn debug_output_shows_no_secrets() {
    let config = ProviderConfig::default().user("reader", "hunter2-password");
    let idp = start(config.clone()).await;
    let api = Api::start(&idp).await.expect("start API");
    let client = client();
    let tokens = login(&client, &idp).await;
    for debug in [
        format!("{config:?}"),
        format!("{idp:?}"),
        format!("{api:?}"),
        format!("{:?}", idp.stats()),
    ] {
        assert!(!debug.contains("hunter2-password"), "{debug}");
        assert!(!debug.contains("test-client-secret"), "{debug}");
        assert!(!debug.contains(token(&tokens, "access_token")), "{debug}");
    }
    assert!(format!("{idp:?}").contains(&idp.token_url()));
}
