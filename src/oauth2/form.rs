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
use super::wiped;
use crate::token::RefreshToken;

/// A form body being built; every value is wiped from memory when it is dropped.
#[derive(Clone, Default)]
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

    /// The body, `name=value&…`, in a buffer of its exact size (so that no reallocation leaves
    /// a copy of a secret behind), wiped when dropped.
    pub(super) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let length: usize = self
            .0
            .iter()
            .map(|(name, value)| encoded_len(name) + 1 + encoded_len(value))
            .sum::<usize>()
            + self.0.len().saturating_sub(1);
        let mut body = Zeroizing::new(Vec::with_capacity(length));
        for (index, (name, value)) in self.0.iter().enumerate() {
            if index > 0 {
                body.push(b'&');
            }
            encode_into(name, &mut body);
            body.push(b'=');
            encode_into(value, &mut body);
        }
        body
    }
}

/// Bytes that `application/x-www-form-urlencoded` keeps as they are (the WHATWG URL
/// standard's byte serializer, as serde_urlencoded and every browser encode forms).
fn is_kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_')
}

fn encoded_len(text: &str) -> usize {
    text.bytes()
        .map(|b| if is_kept(b) || b == b' ' { 1 } else { 3 })
        .sum()
}

fn encode_into(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        match b {
            b' ' => out.push(b'+'),
            b if is_kept(b) => out.push(b),
            b => out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
}

/// One value, `application/x-www-form-urlencoded` (RFC 6749 Appendix B), wiped when dropped.
pub(super) fn form_encode(value: &str) -> Zeroizing<String> {
    let mut encoded = Zeroizing::new(Vec::with_capacity(encoded_len(value)));
    encode_into(value, &mut encoded);
    // Only ASCII was written.
    Zeroizing::new(String::from_utf8(std::mem::take(&mut *encoded)).unwrap_or_default())
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
    *request.body_mut() = wiped::body(form.encode());
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
        assert_eq!(
            form_encode("a b+c&d=é:").as_str(),
            "a+b%2Bc%26d%3D%C3%A9%3A"
        );
    }

    // The encoder is serde_urlencoded's (form_urlencoded's byte serializer), byte for byte,
    // and its buffer is exactly as long as the body.
    #[test]
    fn encodes_as_serde_urlencoded_does_into_an_exact_buffer() {
        let all_bytes: String = (1u8..128).map(char::from).collect();
        let values = [
            "",
            "plain",
            "a b",
            "~!*'();:@&=+$,/?#[]%",
            "é ü 中",
            &all_bytes,
        ];
        for value in values {
            let mut form = Form::default();
            form.push("k", value);
            form.push("n a/me", "v");
            let ours = form.encode();
            let theirs = serde_urlencoded::to_string([("k", value), ("n a/me", "v")]).unwrap();
            assert_eq!(String::from_utf8_lossy(&ours), theirs, "{value:?}");
            assert_eq!(ours.capacity(), ours.len(), "{value:?}");
        }
        assert!(Form::default().encode().is_empty());
    }
}
