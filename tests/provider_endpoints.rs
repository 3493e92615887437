//! The loopback provider's discovery, revocation and logout endpoints over raw HTTP, with the
//! answers Keycloak gives (its `TokenRevocationEndpoint` and `LogoutEndpoint.logoutToken`).

use bytes::Bytes;
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower_auth_refresh::test_util::{IdentityProvider, ProviderConfig};

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
}

async fn send(method: Method, url: &str, form: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::from(serde_urlencoded::to_string(form).unwrap()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A provider with one session: its access and refresh tokens.
async fn logged_in() -> (IdentityProvider, String, String) {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let tokens = login(&idp).await;
    let token = |name: &str| tokens[name].as_str().unwrap().to_owned();
    (idp.clone(), token("access_token"), token("refresh_token"))
}

async fn login(idp: &IdentityProvider) -> Value {
    let config = idp.config();
    send(
        Method::POST,
        &idp.token_url(),
        &[
            ("grant_type", "password"),
            ("username", config.username()),
            ("password", config.password()),
            ("client_id", config.client_id()),
            ("client_secret", config.client_secret()),
        ],
    )
    .await
    .json()
}

fn client<'a>(idp: &'a IdentityProvider, rest: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let config = idp.config();
    let mut form = vec![
        ("client_id", config.client_id()),
        ("client_secret", config.client_secret()),
    ];
    form.extend_from_slice(rest);
    form
}

#[tokio::test]
async fn the_discovery_document_names_the_endpoints() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let url = format!("{}/.well-known/openid-configuration", idp.issuer());
    let reply = send(Method::GET, &url, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        !reply.headers.contains_key(header::CACHE_CONTROL),
        "may be cached"
    );
    let document = reply.json();
    assert_eq!(document["issuer"], idp.issuer());
    assert_eq!(document["token_endpoint"], idp.token_url());
    assert_eq!(document["revocation_endpoint"], idp.revocation_url());
    assert_eq!(document["end_session_endpoint"], idp.logout_url());
    assert_eq!(
        document["token_endpoint_auth_methods_supported"],
        json!([
            "private_key_jwt",
            "client_secret_basic",
            "client_secret_post",
            "tls_client_auth",
            "client_secret_jwt"
        ])
    );
    let post = send(Method::POST, &url, &[]).await;
    assert_eq!(
        (post.status, post.headers[header::ALLOW].to_str().unwrap()),
        (StatusCode::METHOD_NOT_ALLOWED, "GET")
    );
    assert_eq!(idp.stats().discovery_requests, 1);
}

#[tokio::test]
async fn revocation_answers_as_keycloak_does() {
    let (idp, access, refresh) = logged_in().await;
    let (access, refresh) = (access.as_str(), refresh.as_str());
    let revoke = idp.revocation_url();

    let missing = send(Method::POST, &revoke, &client(&idp, &[])).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.json(),
        json!({"error":"invalid_request","error_description":"Token not provided"})
    );
    let unknown = send(
        Method::POST,
        &revoke,
        &client(&idp, &[("token", "garbled")]),
    )
    .await;
    assert_eq!(
        unknown.status,
        StatusCode::OK,
        "RFC 7009 §2.2: 200 for an unknown token"
    );
    assert_eq!(
        unknown.json(),
        json!({"error":"invalid_token","error_description":"Invalid token"})
    );
    let wrong = send(
        Method::POST,
        &revoke,
        &[
            ("client_id", "personal-client-test"),
            ("client_secret", "wrong"),
            ("token", access),
        ],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    let revoked = send(
        Method::POST,
        &revoke,
        &client(
            &idp,
            &[("token", access), ("token_type_hint", "access_token")],
        ),
    )
    .await;
    assert_eq!((revoked.status, revoked.body.len()), (StatusCode::OK, 0));
    assert!(!idp.is_valid_access_token(access));
    let ended = send(Method::POST, &revoke, &client(&idp, &[("token", refresh)])).await;
    assert_eq!((ended.status, ended.body.len()), (StatusCode::OK, 0));
    let again = send(Method::POST, &revoke, &client(&idp, &[("token", refresh)])).await;
    assert_eq!(again.json()["error"], "invalid_token");
    assert_eq!(idp.stats().revocations, 2);
    let get = send(Method::GET, &revoke, &[]).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn logout_answers_as_keycloak_does() {
    let (idp, access, refresh) = logged_in().await;
    let (access, refresh) = (access.as_str(), refresh.as_str());
    let logout = idp.logout_url();

    let missing = send(Method::POST, &logout, &client(&idp, &[])).await;
    assert_eq!(
        missing.json(),
        json!({"error":"invalid_request","error_description":"No refresh token"})
    );
    let unknown = send(
        Method::POST,
        &logout,
        &client(&idp, &[("refresh_token", "garbled")]),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        unknown.json(),
        json!({"error":"invalid_grant","error_description":"Invalid refresh token"})
    );
    let done = send(
        Method::POST,
        &logout,
        &client(&idp, &[("refresh_token", refresh)]),
    )
    .await;
    assert_eq!((done.status, done.body.len()), (StatusCode::NO_CONTENT, 0));
    assert!(
        !idp.is_valid_access_token(access),
        "the session's access token ended with it"
    );
    let again = send(
        Method::POST,
        &logout,
        &client(&idp, &[("refresh_token", refresh)]),
    )
    .await;
    assert_eq!(again.status, StatusCode::NO_CONTENT);
    assert_eq!(idp.stats().logouts, 1);
}
