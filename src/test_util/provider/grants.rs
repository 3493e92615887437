//! Handling the grants: client authentication, the password, refresh_token and
//! client_credentials grants, and minting JWT-shaped tokens.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::HeaderMap;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::time::Instant;

use super::protocol::{self, Answer, Form, OAuthError, TokenResponse};
use super::scope;
use super::{AccessEntry, ProviderShared, RefreshEntry, State};

const ACCESS_HEADER: &str = r#"{"alg":"RS256","typ":"JWT","kid":"fake-idp-access"}"#;
const REFRESH_HEADER: &str = r#"{"alg":"HS512","typ":"JWT","kid":"fake-idp-refresh"}"#;

#[derive(Clone, Copy)]
enum TokenType {
    Access,
    Refresh,
}

#[derive(Serialize)]
struct Claims<'a> {
    exp: u64,
    iat: u64,
    jti: String,
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    typ: &'a str,
    azp: &'a str,
    sid: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    /// RFC 9449 §6.1: the DPoP key the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    cnf: Option<Confirmation<'a>>,
}

#[derive(Serialize)]
struct Confirmation<'a> {
    jkt: &'a str,
}

/// How a client authenticated, for the stats.
enum ClientAuth {
    Basic,
    Post,
    None,
}

enum Grant {
    Password,
    RefreshToken,
    ClientCredentials,
}

impl ProviderShared {
    /// Reads a token request and processes its grant: the answer, not sent yet.
    pub(super) async fn token_endpoint(&self, request: Request<Incoming>) -> Answer {
        let result = match protocol::read_form(request).await {
            Ok((headers, form)) => self.grant(&form, &headers),
            Err(error) => Err(error),
        };
        let answer = match result {
            Ok(tokens) => Answer::json(StatusCode::OK, &tokens),
            Err(error) => {
                tracing::debug!(
                    status = %error.status,
                    error = error.error,
                    description = %error.description,
                    "fake identity provider: token request refused"
                );
                error.into_answer()
            }
        };
        // Every answer, a success too, brings the current nonce (RFC 9449 §8.2).
        #[cfg(feature = "dpop")]
        return self.with_dpop_nonce(answer);
        #[cfg(not(feature = "dpop"))]
        answer
    }

    fn grant(&self, form: &Form, headers: &HeaderMap) -> Result<TokenResponse, OAuthError> {
        let grant = match form.require("grant_type")? {
            "password" => Grant::Password,
            "refresh_token" => Grant::RefreshToken,
            "client_credentials" => Grant::ClientCredentials,
            _ => {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "Unsupported grant_type",
                ));
            }
        };
        self.authenticate_client(form, headers)?;
        // After the client, before the grant, as oidc-provider does: a refused proof spends
        // nothing.
        #[cfg(feature = "dpop")]
        let jkt = self.dpop_binding(headers);
        #[cfg(not(feature = "dpop"))]
        let jkt: Result<Option<String>, OAuthError> = Ok(None);
        let mut state = self.lock();
        let result = jkt.and_then(|jkt| {
            let jkt = jkt.as_deref();
            match grant {
                Grant::Password => self.password_grant(&mut state, form, jkt),
                Grant::RefreshToken => self.refresh_grant(&mut state, form, jkt),
                Grant::ClientCredentials => self.client_credentials_grant(&mut state, form, jkt),
            }
        });
        if let Err(error) = &result {
            if error.error == "invalid_grant" {
                state.stats.invalid_grants += 1;
            }
        }
        result
    }

    /// Checks the client's credentials, from the form or from HTTP Basic (Keycloak's "Client
    /// Id and Secret" authenticator takes either), or only its id for a public client; counts
    /// the method in the stats.
    pub(super) fn authenticate_client(
        &self,
        form: &Form,
        headers: &HeaderMap,
    ) -> Result<(), OAuthError> {
        if form.get("client_assertion").is_some() {
            return self.authenticate_with_assertion(form);
        }
        let (method, matches) = match protocol::basic_credentials(headers) {
            Some(basic) => {
                if form.get("client_secret").is_some() {
                    return Err(OAuthError::invalid_request(
                        "Multiple client authentication methods",
                    ));
                }
                let matches = match basic {
                    Some((id, secret)) => {
                        form.get("client_id").is_none_or(|form_id| form_id == id)
                            && id == self.config.client_id
                            && (self.config.public_client || secret == self.config.client_secret)
                    }
                    None => false,
                };
                (ClientAuth::Basic, matches)
            }
            None if self.config.public_client => {
                let id = form.require("client_id")?;
                (ClientAuth::None, id == self.config.client_id)
            }
            None => {
                let id = form.require("client_id")?;
                let secret = form.require("client_secret")?;
                let matches = id == self.config.client_id && secret == self.config.client_secret;
                (ClientAuth::Post, matches)
            }
        };
        if matches {
            let mut state = self.lock();
            match method {
                ClientAuth::Basic => state.stats.client_auth_basic += 1,
                ClientAuth::Post => state.stats.client_auth_post += 1,
                ClientAuth::None => state.stats.client_auth_none += 1,
            }
            Ok(())
        } else if self.config.legacy_invalid_client {
            Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client credentials",
            ))
        } else {
            Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                "Invalid client or Invalid client credentials",
            ))
        }
    }

    /// A signed JWT instead of the secret (Keycloak's "Signed JWT" authenticator).
    fn authenticate_with_assertion(&self, form: &Form) -> Result<(), OAuthError> {
        if form
            .get("client_id")
            .is_some_and(|id| id != self.config.client_id)
        {
            return Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized_client",
                "Invalid client or Invalid client credentials",
            ));
        }
        #[cfg(feature = "private-key-jwt")]
        return self.check_assertion(form);
        #[cfg(not(feature = "private-key-jwt"))]
        Err(OAuthError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized_client",
            "Client authentication with signed JWT failed: not supported without the feature private-key-jwt",
        ))
    }

    fn password_grant(
        &self,
        state: &mut State,
        form: &Form,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let username = form.require("username")?;
        let password = form.require("password")?;
        if !self.config.knows(username, password) {
            return Err(OAuthError::invalid_grant(
                StatusCode::UNAUTHORIZED,
                "Invalid user credentials",
            ));
        }
        let scope = scope::for_login(&self.config.granted_scope, form.get("scope"))?;
        let user_id = if username == self.config.username {
            self.user_id.clone()
        } else {
            format!("user-{username}")
        };
        let sid = state.new_session(username, &user_id, &scope);
        let (access_token, _) = self.mint(state, &sid, TokenType::Access, &scope, jkt);
        let (refresh_token, _) = self.mint(state, &sid, TokenType::Refresh, &scope, jkt);
        state.stats.password_grants += 1;
        *state
            .stats
            .logins_by_user
            .entry(username.to_owned())
            .or_default() += 1;
        tracing::debug!(%sid, "fake identity provider: password grant");
        let refresh_expires_in = whole_seconds(self.config.refresh_lifetime);
        Ok(self.token_response(
            access_token,
            Some(refresh_token),
            refresh_expires_in,
            Some(sid),
            scope,
            jkt,
        ))
    }

    fn refresh_grant(
        &self,
        state: &mut State,
        form: &Form,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let presented = form.require("refresh_token")?;
        let now = Instant::now();
        let (sid, expires_at, used) = match state.refresh.get(presented) {
            // A bound refresh token needs a proof of its key (RFC 9449 §5).
            Some(entry) if entry.jkt.is_some() && entry.jkt.as_deref() != jkt => {
                return Err(OAuthError::invalid_grant(
                    StatusCode::BAD_REQUEST,
                    "DPoP proof key does not match the refresh token",
                ));
            }
            Some(entry) => (entry.sid.clone(), entry.expires_at, entry.used),
            None => {
                return Err(OAuthError::invalid_grant(
                    StatusCode::BAD_REQUEST,
                    "Invalid refresh token",
                ));
            }
        };
        if now >= expires_at {
            return Err(OAuthError::invalid_grant(
                StatusCode::BAD_REQUEST,
                "Token is not active",
            ));
        }
        let Some(session) = state
            .sessions
            .get_mut(&sid)
            .filter(|session| session.active)
        else {
            return Err(OAuthError::invalid_grant(
                StatusCode::BAD_REQUEST,
                "Session not active",
            ));
        };
        if used {
            session.active = false;
            state.stats.reuse_detected += 1;
            tracing::debug!(%sid, "fake identity provider: refresh token reuse, session ended");
            return Err(OAuthError::invalid_grant(
                StatusCode::BAD_REQUEST,
                "Maximum allowed refresh token reuse exceeded",
            ));
        }
        // Checked before anything is issued: a refused refresh rotates nothing.
        let access_scope = scope::for_refresh(&session.scope, form.get("scope"))?;
        let granted = session.scope.clone();
        let (access_token, _) = self.mint(state, &sid, TokenType::Access, &access_scope, jkt);
        // The refresh token the client holds after this, and when it expires. A new one keeps
        // the whole grant's scope, whatever the access token was narrowed to (RFC 6749 §6).
        let (refresh_token, refresh_expires_at) = if !self.config.include_refresh_token_on_refresh {
            (None, expires_at)
        } else if !self.config.rotate_refresh_tokens {
            (Some(presented.to_owned()), expires_at)
        } else {
            if self.config.reuse_detection {
                if let Some(entry) = state.refresh.get_mut(presented) {
                    entry.used = true;
                }
            }
            let (token, expires_at) = self.mint(state, &sid, TokenType::Refresh, &granted, jkt);
            (Some(token), expires_at)
        };
        state.stats.refresh_grants += 1;
        if let Some(session) = state.sessions.get(&sid) {
            let username = session.username.clone();
            *state.stats.refreshes_by_user.entry(username).or_default() += 1;
        }
        tracing::debug!(%sid, "fake identity provider: refresh grant");
        let refresh_expires_in =
            whole_seconds(refresh_expires_at.saturating_duration_since(Instant::now()));
        Ok(self.token_response(
            access_token,
            refresh_token,
            refresh_expires_in,
            Some(sid),
            access_scope,
            jkt,
        ))
    }

    fn client_credentials_grant(
        &self,
        state: &mut State,
        form: &Form,
        jkt: Option<&str>,
    ) -> Result<TokenResponse, OAuthError> {
        let scope = scope::for_login(&self.config.granted_scope, form.get("scope"))?;
        let username = format!("service-account-{}", self.config.client_id);
        let sid = state.new_session(&username, &self.service_account_id, &scope);
        let (access_token, _) = self.mint(state, &sid, TokenType::Access, &scope, jkt);
        state.stats.client_credentials_grants += 1;
        tracing::debug!(%sid, "fake identity provider: client credentials grant");
        // Keycloak issues no refresh token for this grant and says so with a zero.
        Ok(self.token_response(access_token, None, 0, None, scope, jkt))
    }

    /// Issues and records a token for the session `sid`, bound to the DPoP key `jkt` if one
    /// is given (a refresh token only for a public client); returns it and its expiry.
    fn mint(
        &self,
        state: &mut State,
        sid: &str,
        kind: TokenType,
        scope: &str,
        jkt: Option<&str>,
    ) -> (String, Instant) {
        let (header, typ, lifetime) = match kind {
            TokenType::Access => (ACCESS_HEADER, "Bearer", self.config.access_lifetime),
            TokenType::Refresh => (REFRESH_HEADER, "Refresh", self.config.refresh_lifetime),
        };
        let now = Instant::now();
        let expires_at = now
            .checked_add(lifetime)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let (username, user_id) = state
            .sessions
            .get(sid)
            .map(|session| (session.username.clone(), session.user_id.clone()))
            .unwrap_or_default();
        let claims = Claims {
            exp: wall.as_secs().saturating_add(lifetime.as_secs()),
            iat: wall.as_secs(),
            jti: state.ids.uuid(),
            iss: &self.issuer,
            aud: match kind {
                TokenType::Access => "account",
                TokenType::Refresh => self.issuer.as_str(),
            },
            sub: &user_id,
            typ,
            azp: &self.config.client_id,
            sid,
            scope,
            preferred_username: match kind {
                TokenType::Access => Some(username.as_str()),
                TokenType::Refresh => None,
            },
            cnf: jkt.map(|jkt| Confirmation { jkt }),
        };
        let payload = serde_json::to_vec(&claims).unwrap_or_default();
        let token = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            state.ids.signature()
        );
        match kind {
            TokenType::Access => {
                state.prune_access(now);
                state.access.insert(
                    token.clone(),
                    AccessEntry {
                        sid: sid.to_owned(),
                        expires_at,
                        jkt: jkt.map(str::to_owned),
                    },
                );
            }
            TokenType::Refresh => {
                state.refresh.insert(
                    token.clone(),
                    RefreshEntry {
                        sid: sid.to_owned(),
                        expires_at,
                        used: false,
                        jkt: jkt.filter(|_| self.config.public_client).map(str::to_owned),
                    },
                );
            }
        }
        (token, expires_at)
    }

    fn token_response(
        &self,
        access_token: String,
        refresh_token: Option<String>,
        refresh_expires_in: u64,
        session_state: Option<String>,
        scope: String,
        jkt: Option<&str>,
    ) -> TokenResponse {
        TokenResponse {
            access_token,
            expires_in: self
                .config
                .include_expires_in
                .then(|| whole_seconds(self.config.access_lifetime)),
            refresh_expires_in: self
                .config
                .include_refresh_expires_in
                .then_some(refresh_expires_in),
            refresh_token,
            token_type: if jkt.is_some() { "DPoP" } else { "Bearer" },
            not_before_policy: 0,
            session_state,
            scope,
            client_type: "personal",
        }
    }
}

/// Used instead of a lifetime too long for [`Instant`]: about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs()
}
