//! The requests the refresher sends: `application/x-www-form-urlencoded` bodies with the
//! client's credentials, the user's extra parameters and headers.

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Uri};
use http_body_util::Full;
use zeroize::Zeroizing;

use super::config::{Config, Login};
use super::error::Error;
use super::response::Grant;
use crate::token::RefreshToken;

/// A form body being built; every value is wiped from memory when it is dropped.
#[derive(Default)]
pub(super) struct Form(Vec<(String, Zeroizing<String>)>);

impl Form {
    pub(super) fn push(&mut self, name: &str, value: &str) {
        self.0
            .push((name.to_owned(), Zeroizing::new(value.to_owned())));
    }

    fn extend(&mut self, params: &[(String, String)]) {
        for (name, value) in params {
            self.push(name, value);
        }
    }

    pub(super) fn encode(&self) -> Zeroizing<String> {
        let pairs: Vec<(&str, &str)> = self
            .0
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        // Encoding `&str` pairs cannot fail; an empty body would be refused by the server.
        Zeroizing::new(serde_urlencoded::to_string(&pairs).unwrap_or_default())
    }
}

/// One value, `application/x-www-form-urlencoded` (RFC 6749 Appendix B).
pub(super) fn form_encode(value: &str) -> String {
    let pair = serde_urlencoded::to_string([("v", value)]).unwrap_or_default();
    pair.get(2..).unwrap_or_default().to_owned()
}

/// The login grant's form, or `None` when no login is configured.
pub(super) fn login(config: &Config) -> Option<(Grant, Form)> {
    let mut form = Form::default();
    let grant = match config.login.as_ref()? {
        Login::Password { username, password } => {
            form.push("grant_type", Grant::Password.as_str());
            form.push("username", username);
            form.push("password", password.secret());
            Grant::Password
        }
        Login::ClientCredentials => {
            form.push("grant_type", Grant::ClientCredentials.as_str());
            Grant::ClientCredentials
        }
    };
    if let Some(scope) = &config.scope {
        form.push("scope", scope);
    }
    form.extend(&config.login_params);
    Some((grant, form))
}

/// The refresh_token grant's form. It asks for no `scope` unless told to: without one, the
/// server keeps the whole grant (RFC 6749 §6), whereas the login's scope may be more than the
/// server granted (§3.3) and get the refresh refused.
pub(super) fn refresh(config: &Config, refresh_token: &RefreshToken) -> Form {
    let mut form = Form::default();
    form.push("grant_type", Grant::RefreshToken.as_str());
    form.push("refresh_token", refresh_token.secret());
    if let Some(scope) = &config.refresh_scope {
        form.push("scope", scope);
    }
    form.extend(&config.refresh_params);
    form
}

/// A request ready to send, and the client assertion in it (to keep out of errors).
pub(super) struct Post {
    pub(super) request: Request<Full<Bytes>>,
    pub(super) assertion: Option<Zeroizing<String>>,
}

/// A `POST` of `form` to `url`, with the client's credentials and the configured headers.
pub(super) fn post(config: &Config, url: &Uri, mut form: Form) -> Result<Post, Error> {
    let mut request = Request::new(Full::default());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = url.clone();
    let headers = request.headers_mut();
    headers.extend(config.headers.clone());
    let assertion =
        config
            .credentials
            .apply(&config.client_id, &config.token_url, &mut form, headers)?;
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
    let body = form.encode();
    *request.body_mut() = Full::new(Bytes::from(body.as_bytes().to_vec()));
    Ok(Post { request, assertion })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::client_auth::Credentials;
    use crate::token::Secret;

    fn config(login: Option<Login>) -> Config {
        Config {
            client_id: "client".into(),
            credentials: Credentials::SecretPost(Secret::new("s3cr&t")),
            login,
            ..Config::for_tests()
        }
    }

    fn body(config: &Config, form: Form) -> String {
        let request = post(config, &config.token_url, form).unwrap().request;
        let bytes = futures_body(request.into_body());
        String::from_utf8(bytes).unwrap()
    }

    fn futures_body(body: Full<Bytes>) -> Vec<u8> {
        use http_body::Body as _;
        let mut body = std::pin::pin!(body);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match body.as_mut().poll_frame(&mut cx) {
            std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap().to_vec(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn password_form_survives_special_characters() {
        let config = config(Some(Login::Password {
            username: "reader".into(),
            password: Secret::new("p&ss=w+rd é"),
        }));
        let (grant, form) = login(&config).unwrap();
        assert_eq!(grant, Grant::Password);
        let form = body(&config, form);
        assert_eq!(
            form,
            "grant_type=password&username=reader&password=p%26ss%3Dw%2Brd+%C3%A9&client_id=client&client_secret=s3cr%26t"
        );
        let decoded: Vec<(String, String)> = serde_urlencoded::from_str(&form).unwrap();
        assert_eq!(decoded[2], ("password".into(), "p&ss=w+rd é".into()));
    }

    #[test]
    fn only_an_explicit_refresh_scope_goes_into_a_refresh() {
        let mut config = config(Some(Login::ClientCredentials));
        config.scope = Some("openid profile".into());
        let form = body(&config, refresh(&config, &RefreshToken::new("rt")));
        assert!(!form.contains("scope"), "{form}");
        let (_, login) = login(&config).unwrap();
        let login = body(&config, login);
        assert!(login.contains("&scope=openid+profile"), "{login}");
        config.refresh_scope = Some("profile".into());
        let form = body(&config, refresh(&config, &RefreshToken::new("rt")));
        assert!(form.contains("&scope=profile"), "{form}");
    }

    #[test]
    fn refresh_and_client_credentials_forms() {
        let config = config(Some(Login::ClientCredentials));
        let form = body(&config, refresh(&config, &RefreshToken::new("rt")));
        assert_eq!(
            form,
            "grant_type=refresh_token&refresh_token=rt&client_id=client&client_secret=s3cr%26t"
        );
        let (grant, form) = login(&config).unwrap();
        assert_eq!(grant, Grant::ClientCredentials);
        assert_eq!(
            body(&config, form),
            "grant_type=client_credentials&client_id=client&client_secret=s3cr%26t"
        );
        assert!(super::login(&super::tests::config(None)).is_none());
    }

    #[test]
    fn extra_parameters_go_to_their_grant() {
        let mut config = config(Some(Login::ClientCredentials));
        config.login_params = vec![("audience".into(), "https://api.example/".into())];
        config.refresh_params = vec![("resource".into(), "urn:api".into())];
        let (_, login) = login(&config).unwrap();
        let login = body(&config, login);
        assert!(
            login.contains("audience=https%3A%2F%2Fapi.example%2F"),
            "{login}"
        );
        assert!(!login.contains("resource"), "{login}");
        let refresh = body(&config, refresh(&config, &RefreshToken::new("rt")));
        assert!(refresh.contains("resource=urn%3Aapi"), "{refresh}");
        assert!(!refresh.contains("audience"), "{refresh}");
    }

    #[test]
    fn form_encode_is_one_value() {
        assert_eq!(form_encode("a b+c&d=é:"), "a+b%2Bc%26d%3D%C3%A9%3A");
    }
}
