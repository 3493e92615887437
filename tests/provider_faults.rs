//! The loopback identity provider's harmful faults (the grant is processed, then its answer
//! is lost or garbled), its HTML and empty pages, and its scope handling, seen over raw HTTP
//! as any client would see them.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower_auth_refresh::test_util::{AfterGrant, Fault, IdentityProvider, ProviderConfig};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }

    /// A field of the JSON answer, as text.
    fn field(&self, name: &str) -> String {
        match &self.json()[name] {
            Value::String(text) => text.clone(),
            other => panic!("{name} is {other}"),
        }
    }

    fn header_value(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
    }
}

/// Posts a form to the token endpoint: the reply, or the client's error when there was none.
async fn post(idp: &IdentityProvider, form: &[(&str, &str)]) -> Result<Reply, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::post(idp.token_url())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap();
    let response = client
        .request(request)
        .await
        .map_err(|error| error.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|error| error.to_string())?;
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.to_bytes(),
    })
}

/// Logs in, asking for `scope` if given.
async fn login(idp: &IdentityProvider, scope: Option<&str>) -> Reply {
    let config = idp.config();
    let mut form = vec![
        ("grant_type", "password"),
        ("username", config.username()),
        ("password", config.password()),
        ("client_id", config.client_id()),
        ("client_secret", config.client_secret()),
    ];
    form.extend(scope.map(|scope| ("scope", scope)));
    post(idp, &form).await.unwrap()
}

/// Refreshes with `refresh_token`, asking for `scope` if given.
async fn refresh(
    idp: &IdentityProvider,
    refresh_token: &str,
    scope: Option<&str>,
) -> Result<Reply, String> {
    let config = idp.config();
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", config.client_id()),
        ("client_secret", config.client_secret()),
    ];
    form.extend(scope.map(|scope| ("scope", scope)));
    post(idp, &form).await
}

async fn start(config: ProviderConfig) -> IdentityProvider {
    IdentityProvider::start(config).await.unwrap()
}

// A refresh whose answer is garbled after the grant: the refresh token was rotated all the
// same, the answer carries the new one, the old one is spent.
#[tokio::test]
async fn a_garbled_answer_still_rotated_the_refresh_token() {
    let idp = start(ProviderConfig::default()).await;
    let first = login(&idp, None).await.field("refresh_token");

    idp.push_fault(Fault::AfterGrant(AfterGrant::Set("expires_in", json!(0))));
    let reply = refresh(&idp, &first, None).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["expires_in"], 0);
    assert_eq!(reply.header_value(header::CACHE_CONTROL), "no-store");
    let second = reply.field("refresh_token");
    assert_ne!(second, first);

    idp.push_fault(Fault::AfterGrant(AfterGrant::Remove("access_token")));
    let reply = refresh(&idp, &second, None).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json().get("access_token"), None);
    assert_eq!(reply.json()["token_type"], "Bearer", "the rest is intact");
    let third = reply.field("refresh_token");

    let stats = idp.stats();
    assert_eq!((stats.refresh_grants, stats.faults_served), (2, 2));
    // The newest refresh token works; the spent one ends the session.
    let fourth = refresh(&idp, &third, None).await.unwrap();
    assert_eq!(fourth.status, StatusCode::OK);
    let reused = refresh(&idp, &second, None).await.unwrap();
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reused.field("error_description"),
        "Maximum allowed refresh token reuse exceeded"
    );
    assert_eq!(idp.stats().reuse_detected, 1);
}

// An answer lost after the grant (the connection closed, or never answered): the client has
// nothing, and its refresh token is spent anyway.
#[tokio::test]
async fn a_lost_answer_still_rotated_the_refresh_token() {
    let idp = start(ProviderConfig::default()).await;
    let first = login(&idp, None).await.field("refresh_token");

    idp.push_fault(Fault::AfterGrant(AfterGrant::Close));
    assert!(refresh(&idp, &first, None).await.is_err());

    idp.push_fault(Fault::AfterGrant(AfterGrant::Hang));
    let hung = tokio::time::timeout(Duration::from_millis(300), login(&idp, None)).await;
    assert!(hung.is_err(), "no answer");

    let stats = idp.stats();
    assert_eq!((stats.refresh_grants, stats.password_grants), (1, 2));
    let reused = refresh(&idp, &first, None).await.unwrap();
    assert_eq!(reused.field("error"), "invalid_grant");
    assert_eq!(idp.stats().reuse_detected, 1);
}

#[tokio::test]
async fn a_delayed_answer_comes_late_and_whole() {
    let idp = start(ProviderConfig::default()).await;
    idp.push_fault(Fault::AfterGrant(AfterGrant::Delay(Duration::from_millis(
        300,
    ))));
    let started = Instant::now();
    let reply = login(&idp, None).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(reply.status, StatusCode::OK);
    assert!(idp.is_valid_access_token(&reply.field("access_token")));
}

// A refused grant gets the same treatment: the status stays, the field changes.
#[tokio::test]
async fn an_error_answer_can_be_edited_too() {
    let idp = start(ProviderConfig::default()).await;
    idp.push_fault(Fault::AfterGrant(AfterGrant::Set(
        "error_description",
        json!("Account disabled"),
    )));
    let config = idp.config();
    let wrong_password = [
        ("grant_type", "password"),
        ("username", config.username()),
        ("password", "wrong"),
        ("client_id", config.client_id()),
        ("client_secret", config.client_secret()),
    ];
    let reply = post(&idp, &wrong_password).await.unwrap();
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.field("error"), "invalid_grant");
    assert_eq!(reply.field("error_description"), "Account disabled");
}

#[tokio::test]
async fn html_pages_and_empty_bodies_at_any_status() {
    let idp = start(ProviderConfig::default()).await;
    let page = "<html><head><title>404 Not Found</title></head><body>nginx</body></html>";
    idp.push_fault(Fault::html(StatusCode::NOT_FOUND, page));
    idp.push_fault(Fault::empty(StatusCode::FORBIDDEN));
    let html = login(&idp, None).await;
    assert_eq!(html.status, StatusCode::NOT_FOUND);
    assert_eq!(
        html.header_value(header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_eq!(html.body, page);
    let empty = login(&idp, None).await;
    assert_eq!(empty.status, StatusCode::FORBIDDEN);
    assert!(empty.body.is_empty());
    assert_eq!(empty.headers.get(header::CONTENT_TYPE), None);
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.faults_served), (0, 2));
}

/// The `scope` claim of a JWT-shaped token.
fn scope_claim(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&payload).unwrap()["scope"].clone()
}

// RFC 6749 §3.3: a login may be granted fewer scopes than it asked for, and the answer says
// which.
#[tokio::test]
async fn a_login_is_granted_the_scopes_the_provider_grants() {
    let idp = start(ProviderConfig::default().granted_scope("groups email")).await;
    let all = login(&idp, None).await;
    assert_eq!(all.field("scope"), "groups email");

    let fewer = login(&idp, Some("openid email profile")).await;
    assert_eq!(fewer.status, StatusCode::OK);
    assert_eq!(fewer.field("scope"), "email");
    assert_eq!(scope_claim(&fewer.field("access_token")), "email");
    assert_eq!(scope_claim(&fewer.field("refresh_token")), "email");

    let none = login(&idp, Some("openid")).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST);
    assert_eq!(none.field("error"), "invalid_scope");
    assert_eq!(none.field("error_description"), "Invalid scopes: openid");
}

// RFC 6749 §6: a refresh without `scope` keeps the grant; one asking for more is refused (node
// oidc-provider's words) and rotates nothing; one asking for less gets a narrower access token
// and a refresh token that keeps the whole grant.
#[tokio::test]
async fn a_refresh_may_not_ask_for_more_than_the_login_was_granted() {
    let idp = start(ProviderConfig::default()).await;
    let login = login(&idp, Some("groups email")).await;
    assert_eq!(login.field("scope"), "groups email");
    let first = login.field("refresh_token");

    let more = refresh(&idp, &first, Some("groups email profile"))
        .await
        .unwrap();
    assert_eq!(more.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        more.json(),
        json!({"error": "invalid_scope", "error_description": "refresh token missing requested scope"})
    );
    assert_eq!(idp.stats().refresh_grants, 0);

    let kept = refresh(&idp, &first, None).await.unwrap();
    assert_eq!(kept.field("scope"), "groups email");
    let narrower = refresh(&idp, &kept.field("refresh_token"), Some("email"))
        .await
        .unwrap();
    assert_eq!(narrower.field("scope"), "email");
    assert_eq!(scope_claim(&narrower.field("access_token")), "email");
    assert_eq!(
        scope_claim(&narrower.field("refresh_token")),
        "groups email"
    );
    let again = refresh(&idp, &narrower.field("refresh_token"), None)
        .await
        .unwrap();
    assert_eq!(again.field("scope"), "groups email");
    assert_eq!(idp.stats().invalid_grants, 0);
}
