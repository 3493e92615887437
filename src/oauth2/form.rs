//! The form bodies of the grants (`application/x-www-form-urlencoded`).

use zeroize::Zeroizing;

use super::config::{Config, Login};
use super::response::Grant;
use crate::token::RefreshToken;

/// The login grant's form, or `None` when no login is configured.
pub(super) fn login(config: &Config) -> Option<(Grant, Zeroizing<String>)> {
    match config.login.as_ref()? {
        Login::Password { username, password } => Some((
            Grant::Password,
            encode(
                config,
                Grant::Password,
                &[("username", username), ("password", password.secret())],
                config.scope.as_deref(),
            ),
        )),
        Login::ClientCredentials => Some((
            Grant::ClientCredentials,
            encode(
                config,
                Grant::ClientCredentials,
                &[],
                config.scope.as_deref(),
            ),
        )),
    }
}

/// The refresh_token grant's form. It asks for no `scope` unless told to: without one, the
/// server keeps the whole grant (RFC 6749 §6), whereas the login's scope may be more than the
/// server granted (§3.3) and get the refresh refused.
pub(super) fn refresh(config: &Config, refresh_token: &RefreshToken) -> Zeroizing<String> {
    encode(
        config,
        Grant::RefreshToken,
        &[("refresh_token", refresh_token.secret())],
        config.refresh_scope.as_deref(),
    )
}

fn encode(
    config: &Config,
    grant: Grant,
    fields: &[(&str, &str)],
    scope: Option<&str>,
) -> Zeroizing<String> {
    let mut form: Vec<(&str, &str)> = Vec::with_capacity(6);
    form.push(("grant_type", grant.as_str()));
    form.extend_from_slice(fields);
    form.push(("client_id", &config.client_id));
    if let Some(secret) = &config.client_secret {
        form.push(("client_secret", secret.secret()));
    }
    if let Some(scope) = scope {
        form.push(("scope", scope));
    }
    // Encoding `&str` pairs cannot fail; an empty body would be refused by the server.
    Zeroizing::new(serde_urlencoded::to_string(&form).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Secret;

    fn config(login: Option<Login>) -> Config {
        Config {
            client_id: "client".into(),
            client_secret: Some(Secret::new("s3cr&t")),
            login,
            ..Config::for_tests()
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
        assert_eq!(
            form.as_str(),
            "grant_type=password&username=reader&password=p%26ss%3Dw%2Brd+%C3%A9&client_id=client&client_secret=s3cr%26t"
        );
        let decoded: Vec<(String, String)> = serde_urlencoded::from_str(&form).unwrap();
        assert_eq!(decoded[2], ("password".into(), "p&ss=w+rd é".into()));
    }

    #[test]
    fn only_an_explicit_refresh_scope_goes_into_a_refresh() {
        let mut config = config(Some(Login::ClientCredentials));
        config.scope = Some("openid profile".into());
        let form = refresh(&config, &RefreshToken::new("rt"));
        assert!(!form.contains("scope"), "{}", form.as_str());
        let (_, login) = login(&config).unwrap();
        assert!(
            login.ends_with("&scope=openid+profile"),
            "{}",
            login.as_str()
        );
        config.refresh_scope = Some("profile".into());
        let form = refresh(&config, &RefreshToken::new("rt"));
        assert!(form.ends_with("&scope=profile"), "{}", form.as_str());
    }

    #[test]
    fn refresh_and_client_credentials_forms() {
        let config = config(Some(Login::ClientCredentials));
        let form = refresh(&config, &RefreshToken::new("rt"));
        assert_eq!(
            form.as_str(),
            "grant_type=refresh_token&refresh_token=rt&client_id=client&client_secret=s3cr%26t"
        );
        let (grant, form) = login(&config).unwrap();
        assert_eq!(grant, Grant::ClientCredentials);
        assert_eq!(
            form.as_str(),
            "grant_type=client_credentials&client_id=client&client_secret=s3cr%26t"
        );
        assert!(super::login(&super::tests::config(None)).is_none());
    }
}
