//! Scopes: what a login is granted (RFC 6749 §3.3: possibly fewer than asked) and what a
//! refresh may ask for (§6: at most what was granted).

use super::protocol::OAuthError;

/// The scope a login is granted: all of `grantable` when it asks for none, else the asked
/// scopes the provider grants. Asking only for scopes it never grants is refused with
/// Keycloak's `400 invalid_scope "Invalid scopes: …"`.
pub(super) fn for_login(grantable: &str, asked: Option<&str>) -> Result<String, OAuthError> {
    let Some(asked) = asked else {
        return Ok(join(scopes(grantable)));
    };
    let granted = join(scopes(grantable).filter(|scope| scopes(asked).any(|a| a == *scope)));
    if granted.is_empty() {
        return Err(OAuthError::invalid_scope(format!(
            "Invalid scopes: {asked}"
        )));
    }
    Ok(granted)
}

/// The scope of the access token a refresh issues: the session's whole grant when it asks
/// for none, else the asked scopes, if they are all in the grant. Asking for more is refused
/// with node oidc-provider's `400 invalid_scope "refresh token missing requested scope"`.
pub(super) fn for_refresh(granted: &str, asked: Option<&str>) -> Result<String, OAuthError> {
    let Some(asked) = asked else {
        return Ok(granted.to_owned());
    };
    let missing = scopes(asked).filter(|scope| !scopes(granted).any(|g| g == *scope));
    if missing.count() > 0 {
        return Err(OAuthError::invalid_scope(
            "refresh token missing requested scope",
        ));
    }
    Ok(join(scopes(asked)))
}

/// Space-delimited scope tokens; repeated spaces are tolerated.
fn scopes(scope: &str) -> impl Iterator<Item = &str> + Clone {
    scope.split(' ').filter(|scope| !scope.is_empty())
}

fn join<'a>(scopes: impl Iterator<Item = &'a str>) -> String {
    let mut joined = String::new();
    for scope in scopes {
        if !joined.split(' ').any(|seen| seen == scope) {
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(scope);
        }
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_is_granted_the_asked_scopes_it_may_have() {
        let grantable = "groups email profile";
        assert_eq!(for_login(grantable, None).ok().as_deref(), Some(grantable));
        let fewer = for_login(grantable, Some("openid email  groups email"));
        assert_eq!(fewer.ok().as_deref(), Some("groups email"));
        let none = for_login(grantable, Some("openid admin"))
            .err()
            .map(|e| e.description);
        assert_eq!(none.as_deref(), Some("Invalid scopes: openid admin"));
    }

    #[test]
    fn a_refresh_asks_for_at_most_the_grant() {
        let granted = "groups email";
        assert_eq!(for_refresh(granted, None).ok().as_deref(), Some(granted));
        assert_eq!(
            for_refresh(granted, Some("email")).ok().as_deref(),
            Some("email")
        );
        let more = for_refresh(granted, Some("email profile")).err();
        assert_eq!(
            more.map(|error| (error.status.as_u16(), error.error, error.description)),
            Some((
                400,
                "invalid_scope",
                "refresh token missing requested scope".to_owned()
            ))
        );
    }
}
