//! Client authentication at the token and revocation endpoints (RFC 6749 §2.3, OpenID Connect
//! Core §9): how the client proves who it is on every request it sends there.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::Uri;
use http::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use zeroize::Zeroizing;

use super::error::{Error, ErrorKind};
use super::form::{Form, form_encode};
#[cfg(feature = "private-key-jwt")]
use super::key::ClientKey;
use crate::token::Secret;

/// How the client authenticates to the identity provider, by its registered name
/// (`token_endpoint_auth_method`, RFC 7591 §2).
///
/// Chosen with [`OAuth2RefresherBuilder::client_auth`](super::OAuth2RefresherBuilder::client_auth).
/// Left unchosen, it follows from the credentials given: a key means `private_key_jwt`, a
/// secret `client_secret_post` (what Keycloak and MangaDex expect), neither `none`; with
/// discovery, a method the server lists is preferred (see
/// [`OAuth2RefresherBuilder::discover`](super::OAuth2RefresherBuilder::discover)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuthMethod {
    /// `client_id` and `client_secret` in the form body (RFC 6749 §2.3.1).
    ClientSecretPost,
    /// `Authorization: Basic` with the client id and secret, each form-urlencoded before they
    /// are joined with `:` and base64-encoded (RFC 6749 §2.3.1): a secret with `+`, `%` or `:`
    /// in it reaches the server intact. No `client_id` in the body.
    ClientSecretBasic,
    /// A JWT signed with the client's private key (RFC 7523 §2.2): `client_assertion_type`
    /// `urn:ietf:params:oauth:client-assertion-type:jwt-bearer` and a fresh `client_assertion`
    /// on every request, with `iss` and `sub` the client id, `aud` the token endpoint, a
    /// random `jti`, `iat` now and `exp` a minute later. Needs the feature `private-key-jwt`
    /// and a key ([`OAuth2RefresherBuilder::client_key`](super::OAuth2RefresherBuilder::client_key)).
    PrivateKeyJwt,
    /// A public client: `client_id` in the form body, nothing else.
    None,
}

impl ClientAuthMethod {
    /// The registered name: `client_secret_post`, `client_secret_basic`, `private_key_jwt`,
    /// `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretPost => "client_secret_post",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::PrivateKeyJwt => "private_key_jwt",
            Self::None => "none",
        }
    }

    /// The method with this registered name, if the refresher speaks it.
    ///
    /// ```
    /// use tower_auth_refresh::oauth2::ClientAuthMethod;
    ///
    /// assert_eq!(ClientAuthMethod::from_name("client_secret_basic"), Some(ClientAuthMethod::ClientSecretBasic));
    /// assert_eq!(ClientAuthMethod::from_name("tls_client_auth"), None);
    /// ```
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::ClientSecretPost,
            Self::ClientSecretBasic,
            Self::PrivateKeyJwt,
            Self::None,
        ]
        .into_iter()
        .find(|method| method.as_str() == name)
    }
}

impl fmt::Display for ClientAuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client's credentials, as the chosen method sends them.
pub(super) enum Credentials {
    SecretPost(Secret),
    SecretBasic(Secret),
    #[cfg(feature = "private-key-jwt")]
    PrivateKeyJwt(ClientKey),
    None,
}

impl Credentials {
    /// The credentials `method` sends, from those given; a method without what it needs is a
    /// configuration error.
    pub(super) fn new(
        method: ClientAuthMethod,
        secret: Option<Secret>,
        #[cfg(feature = "private-key-jwt")] key: Option<ClientKey>,
    ) -> Result<Self, Error> {
        let needs_secret = || {
            Error::new(
                ErrorKind::Config,
                "client_secret_post and client_secret_basic need a client secret",
            )
        };
        match method {
            ClientAuthMethod::ClientSecretPost => {
                Ok(Self::SecretPost(secret.ok_or_else(needs_secret)?))
            }
            ClientAuthMethod::ClientSecretBasic => {
                Ok(Self::SecretBasic(secret.ok_or_else(needs_secret)?))
            }
            #[cfg(feature = "private-key-jwt")]
            ClientAuthMethod::PrivateKeyJwt => key
                .map(Self::PrivateKeyJwt)
                .ok_or_else(|| Error::new(ErrorKind::Config, "private_key_jwt needs a client key")),
            #[cfg(not(feature = "private-key-jwt"))]
            ClientAuthMethod::PrivateKeyJwt => Err(Error::new(
                ErrorKind::Config,
                "private_key_jwt needs the crate feature `private-key-jwt`",
            )),
            ClientAuthMethod::None => Ok(Self::None),
        }
    }

    pub(super) fn method(&self) -> ClientAuthMethod {
        match self {
            Self::SecretPost(_) => ClientAuthMethod::ClientSecretPost,
            Self::SecretBasic(_) => ClientAuthMethod::ClientSecretBasic,
            #[cfg(feature = "private-key-jwt")]
            Self::PrivateKeyJwt(_) => ClientAuthMethod::PrivateKeyJwt,
            Self::None => ClientAuthMethod::None,
        }
    }

    /// The client secret, for redacting it from a server's words.
    pub(super) fn secret(&self) -> Option<&str> {
        match self {
            Self::SecretPost(secret) | Self::SecretBasic(secret) => Some(secret.secret()),
            _ => None,
        }
    }

    /// Adds the client's credentials to a request: fields of its `form`, or its `headers`.
    /// `audience` is the token endpoint, the `aud` of a client assertion (RFC 7523 §3).
    /// Returns the client assertion, if it made one: a secret to keep out of errors.
    pub(super) fn apply(
        &self,
        client_id: &str,
        audience: &Uri,
        form: &mut Form,
        headers: &mut HeaderMap,
    ) -> Result<Option<Zeroizing<String>>, Error> {
        #[cfg(not(feature = "private-key-jwt"))]
        let _ = audience;
        match self {
            Self::SecretPost(secret) => {
                form.push("client_id", client_id);
                form.push("client_secret", secret.secret());
            }
            Self::SecretBasic(secret) => {
                headers.insert(AUTHORIZATION, basic(client_id, secret.secret())?);
            }
            #[cfg(feature = "private-key-jwt")]
            Self::PrivateKeyJwt(key) => {
                let assertion = key.assertion(client_id, &audience.to_string())?;
                form.push("client_id", client_id);
                form.push(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                );
                form.push("client_assertion", &assertion);
                return Ok(Some(Zeroizing::new(assertion)));
            }
            Self::None => form.push("client_id", client_id),
        }
        Ok(None)
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))`, marked sensitive.
fn basic(client_id: &str, secret: &str) -> Result<HeaderValue, Error> {
    let joined = Zeroizing::new(format!(
        "{}:{}",
        form_encode(client_id).as_str(),
        form_encode(secret).as_str()
    ));
    let encoded = Zeroizing::new(format!("Basic {}", STANDARD.encode(joined.as_bytes())));
    // Base64 is always a valid header value; the error cannot happen.
    let mut value = HeaderValue::from_str(&encoded).map_err(|error| {
        Error::new(ErrorKind::Config, "the client credentials make no header").with_source(error)
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            #[cfg(feature = "private-key-jwt")]
            Self::PrivateKeyJwt(key) => write!(f, "private_key_jwt({key:?})"),
            other => f.write_str(other.method().as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_encodes_before_base64() {
        // RFC 6749 §2.3.1: form-urlencoded first, so ':' in the id and '+' in the secret
        // survive; a server decodes them back.
        let value = basic("client:1", "s+cr t%").unwrap();
        assert!(value.is_sensitive());
        let encoded = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
        assert_eq!(decoded, "client%3A1:s%2Bcr+t%25");
    }

    #[test]
    fn each_method_sends_what_it_should() {
        let url = Uri::from_static("https://idp.example/token");
        let cases = [
            (
                Credentials::SecretPost(Secret::new("s")),
                "client_id=c&client_secret=s",
                false,
            ),
            (Credentials::SecretBasic(Secret::new("s")), "", true),
            (Credentials::None, "client_id=c", false),
        ];
        for (credentials, body, header) in cases {
            let mut form = Form::default();
            let mut headers = HeaderMap::new();
            credentials
                .apply("c", &url, &mut form, &mut headers)
                .unwrap();
            assert_eq!(form.encode().as_slice(), body.as_bytes(), "{credentials:?}");
            assert_eq!(headers.contains_key(AUTHORIZATION), header);
        }
        for name in [
            "client_secret_post",
            "client_secret_basic",
            "private_key_jwt",
            "none",
        ] {
            assert_eq!(ClientAuthMethod::from_name(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn a_method_without_its_credentials_is_a_config_error() {
        for method in [
            ClientAuthMethod::ClientSecretPost,
            ClientAuthMethod::ClientSecretBasic,
            ClientAuthMethod::PrivateKeyJwt,
        ] {
            let error = Credentials::new(
                method,
                None,
                #[cfg(feature = "private-key-jwt")]
                None,
            )
            .unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config, "{method}");
        }
    }
}
