//! The endpoints beside the token endpoint, as Keycloak answers them: discovery, revocation
//! (RFC 7009) and the logout endpoint's `POST` with a refresh token.

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use tokio::time::Instant;

use super::protocol::{self, Answer, Form, OAuthError};
use super::{LOGOUT_PATH, ProviderShared, REVOKE_PATH, TOKEN_PATH};

/// What Keycloak lists as `token_endpoint_auth_methods_supported` (and for revocation).
pub(super) const KEYCLOAK_AUTH_METHODS: &[&str] = &[
    "private_key_jwt",
    "client_secret_basic",
    "client_secret_post",
    "tls_client_auth",
    "client_secret_jwt",
];

impl ProviderShared {
    /// The discovery document (OpenID Connect Discovery §4), the fields Keycloak serves that
    /// a client of the token endpoint uses, with Keycloak's values.
    pub(super) fn discovery(&self, method: &Method) -> Answer {
        if method != Method::GET && method != Method::HEAD {
            let mut answer =
                OAuthError::new(StatusCode::METHOD_NOT_ALLOWED, "invalid_request", "Use GET")
                    .into_answer();
            answer
                .headers
                .insert(header::ALLOW, HeaderValue::from_static("GET"));
            return answer;
        }
        self.lock().stats.discovery_requests += 1;
        let origin = self.issuer.trim_end_matches(super::REALM_PATH);
        let url = |path: &str| format!("{origin}{path}");
        let methods = &self.config.auth_methods;
        let mut answer = Answer::json(
            StatusCode::OK,
            &json!({
                "issuer": self.issuer,
                "authorization_endpoint": format!("{}/protocol/openid-connect/auth", self.issuer),
                "token_endpoint": url(TOKEN_PATH),
                "revocation_endpoint": url(REVOKE_PATH),
                "end_session_endpoint": url(LOGOUT_PATH),
                "grant_types_supported": ["authorization_code", "refresh_token", "password", "client_credentials"],
                "token_endpoint_auth_methods_supported": methods,
                "revocation_endpoint_auth_methods_supported": methods,
                "scopes_supported": self.config.granted_scope.split(' ').collect::<Vec<_>>(),
                "backchannel_logout_supported": true,
            }),
        );
        // A discovery document may be cached, unlike a token answer.
        answer.cache = true;
        answer
    }

    /// The revocation endpoint, as Keycloak's `TokenRevocationEndpoint` answers: the client
    /// authenticates as at the token endpoint; a refresh token ends its session, an access
    /// token stops working; `200` with an empty body. A token it does not know (expired,
    /// already revoked, garbled) is `200` too, with `{"error":"invalid_token",…}` in the body.
    pub(super) async fn revocation_endpoint(&self, request: Request<Incoming>) -> Answer {
        self.authenticated(request, Self::revoke).await
    }

    /// Reads a form `POST`, authenticates its client and hands the form to `then`.
    async fn authenticated(
        &self,
        request: Request<Incoming>,
        then: fn(&Self, &Form) -> Result<Answer, OAuthError>,
    ) -> Answer {
        let result = match protocol::read_form(request).await {
            Ok((headers, form)) => self
                .authenticate_client(&form, &headers)
                .and_then(|()| then(self, &form)),
            Err(error) => Err(error),
        };
        result.unwrap_or_else(OAuthError::into_answer)
    }

    fn revoke(&self, form: &Form) -> Result<Answer, OAuthError> {
        let token = form
            .get("token")
            .ok_or_else(|| OAuthError::invalid_request("Token not provided"))?;
        let now = Instant::now();
        let mut state = self.lock();
        let revoked = if let Some(entry) = state.refresh.get(token) {
            let (sid, live) = (entry.sid.clone(), entry.expires_at > now);
            match state
                .sessions
                .get_mut(&sid)
                .filter(|session| session.active)
            {
                Some(session) if live => {
                    session.active = false;
                    true
                }
                _ => false,
            }
        } else if state
            .access
            .get(token)
            .is_some_and(|entry| entry.expires_at > now)
        {
            state.access.remove(token);
            true
        } else {
            false
        };
        if !revoked {
            return Ok(
                OAuthError::new(StatusCode::OK, "invalid_token", "Invalid token").into_answer(),
            );
        }
        state.stats.revocations += 1;
        tracing::debug!("fake identity provider: token revoked");
        Ok(Answer::empty(StatusCode::OK))
    }

    /// The logout endpoint's `POST` (Keycloak's `LogoutEndpoint.logoutToken`): the client
    /// authenticates, the refresh token's session ends, `204`. No refresh token is `400
    /// invalid_request "No refresh token"`; an unknown one `400 invalid_grant "Invalid refresh
    /// token"`, an expired one `400 invalid_grant "Token is not active"`; a session that has
    /// already ended `204` again.
    pub(super) async fn logout_endpoint(&self, request: Request<Incoming>) -> Answer {
        self.authenticated(request, Self::logout).await
    }

    fn logout(&self, form: &Form) -> Result<Answer, OAuthError> {
        let token = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::invalid_request("No refresh token"))?;
        let mut state = self.lock();
        let entry = state.refresh.get(token).ok_or_else(|| {
            OAuthError::invalid_grant(StatusCode::BAD_REQUEST, "Invalid refresh token")
        })?;
        if entry.expires_at <= Instant::now() {
            return Err(OAuthError::invalid_grant(
                StatusCode::BAD_REQUEST,
                "Token is not active",
            ));
        }
        let sid = entry.sid.clone();
        if let Some(session) = state
            .sessions
            .get_mut(&sid)
            .filter(|session| session.active)
        {
            session.active = false;
            state.stats.logouts += 1;
            tracing::debug!(%sid, "fake identity provider: session logged out");
        }
        Ok(Answer::empty(StatusCode::NO_CONTENT))
    }
}
