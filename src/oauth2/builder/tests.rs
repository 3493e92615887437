//! The builder refuses what would send credentials astray or replace the refresher's own parameters.

use super::*;

fn build(url: &str) -> Result<OAuth2Refresher<()>, Error> {
    OAuth2Refresher::builder(url, "client").build(())
}

#[test]
fn plain_http_only_to_this_machine() {
    for url in [
        "https://auth.mangadex.org/realms/mangadex/protocol/openid-connect/token",
        "http://127.0.0.1:8080/token",
        "http://127.5.0.1/token",
        "http://localhost/token",
        "http://[::1]:9000/token",
    ] {
        assert!(build(url).is_ok(), "{url}");
    }
    for url in [
        "http://auth.mangadex.org/token",
        "http://10.0.0.1/token",
        "ftp://127.0.0.1/token",
        "/token",
        "not a url",
    ] {
        let error = build(url).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::Config, "{url}");
    }
    let error = OAuth2Refresher::builder("https://a/t", "")
        .build(())
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Config);
    let revocation = OAuth2Refresher::builder("https://a/t", "client")
        .revocation_url("http://10.0.0.1/revoke")
        .build(())
        .err()
        .unwrap();
    assert!(
        revocation.to_string().contains("revocation URL"),
        "{revocation}"
    );
}

#[test]
fn extra_parameters_and_headers_cannot_replace_the_refreshers_own() {
    let base = || OAuth2Refresher::builder("https://a/t", "client").client_secret("s");
    for builder in [
        base().login_param("client_id", "other"),
        base().refresh_param("grant_type", "password"),
        base().token_param("scope", "admin"),
        base().login_param("", "x"),
        base().token_request_header(CONTENT_TYPE, HeaderValue::from_static("text/plain")),
        base()
            .client_auth(ClientAuthMethod::ClientSecretBasic)
            .token_request_header(AUTHORIZATION, HeaderValue::from_static("Bearer x")),
    ] {
        let error = builder.build(()).err().unwrap();
        assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    }
    // Authorization is the user's to set when the refresher does not use it.
    base()
        .token_request_header(AUTHORIZATION, HeaderValue::from_static("Bearer gateway"))
        .login_param("audience", "https://api/")
        .build(())
        .unwrap();
}

#[test]
fn an_issuer_builder_needs_its_metadata() {
    let error = OAuth2Refresher::issuer("https://idp.example", "client")
        .build(())
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(error.to_string().contains("discover"), "{error}");
}

#[test]
fn the_default_method_follows_the_credentials() {
    let method = |builder: OAuth2RefresherBuilder| format!("{:?}", builder.build(()).unwrap());
    let builder = || OAuth2Refresher::builder("https://a/t", "client");
    assert!(method(builder().client_secret("s")).contains("client_secret_post"));
    assert!(method(builder()).contains("client_auth: none"));
    let basic = builder()
        .client_secret("s")
        .client_auth(ClientAuthMethod::ClientSecretBasic);
    assert!(method(basic).contains("client_secret_basic"));
}

#[test]
fn debug_shows_no_secret() {
    let builder = OAuth2Refresher::builder("https://a/t", "client")
        .client_secret("client-secret-value")
        .password("reader", "password-value")
        .login_param("audience", "param-value");
    let refresher = OAuth2Refresher::builder("https://a/t", "client")
        .client_secret("client-secret-value")
        .password("reader", "password-value")
        .login_param("audience", "param-value")
        .token_request_header(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("header-value"),
        )
        .build(())
        .unwrap();
    let shown = format!("{builder:?} {refresher:?}");
    assert!(!shown.contains("value"), "{shown}");
    assert!(
        shown.contains("audience") && shown.contains("x-api-key"),
        "{shown}"
    );
}
