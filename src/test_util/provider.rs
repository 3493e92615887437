//! The fake Keycloak token endpoint.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;
use tokio::time::Instant;

use super::fault::Fault;
use super::ids::Ids;
use super::server::{self, BodyError, ResponseBody, Shutdown};

/// The path of the token endpoint.
const TOKEN_PATH: &str = "/realms/mangadex/protocol/openid-connect/token";
/// The issuer's path (the `iss` claim is the origin followed by this).
const REALM_PATH: &str = "/realms/mangadex";
/// The `scope` of every token.
const SCOPE: &str = "groups email profile";

const ACCESS_HEADER: &str = r#"{"alg":"RS256","typ":"JWT","kid":"fake-idp-access"}"#;
const REFRESH_HEADER: &str = r#"{"alg":"HS512","typ":"JWT","kid":"fake-idp-refresh"}"#;

/// How an [`IdentityProvider`] behaves.
///
/// Start from [`ProviderConfig::default()`] and change what the test needs:
///
/// ```
/// use std::time::Duration;
///
/// use tower_auth_refresh::test_util::ProviderConfig;
///
/// let config = ProviderConfig::default()
///     .user("alice", "p&ss=w+rd é")
///     .access_lifetime(Duration::from_secs(5))
///     .include_expires_in(false);
/// assert_eq!(config.username(), "alice");
/// ```
///
/// Its `Debug` output leaves out the password and the client secret.
#[derive(Clone)]
pub struct ProviderConfig {
    username: String,
    password: String,
    client_id: String,
    client_secret: String,
    access_lifetime: Duration,
    refresh_lifetime: Duration,
    rotate_refresh_tokens: bool,
    reuse_detection: bool,
    include_expires_in: bool,
    include_refresh_expires_in: bool,
    include_refresh_token_on_refresh: bool,
    legacy_invalid_client: bool,
    response_delay: Duration,
}

impl Default for ProviderConfig {
    /// User `reader` with password `correct horse battery staple`, client
    /// `personal-client-test` with secret `test-client-secret`, access tokens for 900 s,
    /// refresh tokens for 30 days, rotation and reuse detection on, every optional field
    /// included, `unauthorized_client` for a bad client, no delay.
    fn default() -> Self {
        Self {
            username: "reader".to_owned(),
            password: "correct horse battery staple".to_owned(),
            client_id: "personal-client-test".to_owned(),
            client_secret: "test-client-secret".to_owned(),
            access_lifetime: Duration::from_secs(900),
            refresh_lifetime: Duration::from_secs(30 * 24 * 60 * 60),
            rotate_refresh_tokens: true,
            reuse_detection: true,
            include_expires_in: true,
            include_refresh_expires_in: true,
            include_refresh_token_on_refresh: true,
            legacy_invalid_client: false,
            response_delay: Duration::ZERO,
        }
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("access_lifetime", &self.access_lifetime)
            .field("refresh_lifetime", &self.refresh_lifetime)
            .field("rotate_refresh_tokens", &self.rotate_refresh_tokens)
            .field("reuse_detection", &self.reuse_detection)
            .field("include_expires_in", &self.include_expires_in)
            .field(
                "include_refresh_expires_in",
                &self.include_refresh_expires_in,
            )
            .field(
                "include_refresh_token_on_refresh",
                &self.include_refresh_token_on_refresh,
            )
            .field("legacy_invalid_client", &self.legacy_invalid_client)
            .field("response_delay", &self.response_delay)
            .finish()
    }
}

impl ProviderConfig {
    /// The one user who can log in with the `password` grant (compared exactly).
    #[must_use]
    pub fn user(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = username.into();
        self.password = password.into();
        self
    }

    /// The one client allowed to use the token endpoint.
    #[must_use]
    pub fn client(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.client_id = id.into();
        self.client_secret = secret.into();
        self
    }

    /// How long an access token is valid (default 900 s).
    #[must_use]
    pub fn access_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_lifetime = lifetime;
        self
    }

    /// How long a refresh token is valid from its issue (default 30 days).
    #[must_use]
    pub fn refresh_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_lifetime = lifetime;
        self
    }

    /// Whether each refresh issues a new refresh token (default `true`). When `false`,
    /// refresh responses carry the same refresh token again, and it stays valid.
    #[must_use]
    pub fn rotate_refresh_tokens(mut self, rotate: bool) -> Self {
        self.rotate_refresh_tokens = rotate;
        self
    }

    /// Whether a refresh token that was rotated out may not be used again (default
    /// `true`). When `true`, using it again answers `invalid_grant` "Maximum allowed
    /// refresh token reuse exceeded" and ends the whole session. When `false`, old
    /// refresh tokens stay valid until they expire.
    #[must_use]
    pub fn reuse_detection(mut self, on: bool) -> Self {
        self.reuse_detection = on;
        self
    }

    /// Whether token responses have `expires_in` (default `true`). Without it a client
    /// must read the `exp` claim of the access token.
    #[must_use]
    pub fn include_expires_in(mut self, include: bool) -> Self {
        self.include_expires_in = include;
        self
    }

    /// Whether token responses have `refresh_expires_in` (default `true`).
    #[must_use]
    pub fn include_refresh_expires_in(mut self, include: bool) -> Self {
        self.include_refresh_expires_in = include;
        self
    }

    /// Whether responses to the `refresh_token` grant have a `refresh_token` (default
    /// `true`). When `false`, no new refresh token is issued and the one the client
    /// sent stays valid (it is not rotated out, whatever the other settings).
    #[must_use]
    pub fn include_refresh_token_on_refresh(mut self, include: bool) -> Self {
        self.include_refresh_token_on_refresh = include;
        self
    }

    /// Whether a bad client id or secret answers `invalid_client` "Invalid client
    /// credentials", as older Keycloak releases do, instead of `unauthorized_client`
    /// "Invalid client or Invalid client credentials" (default `false`). Both are `401`.
    #[must_use]
    pub fn legacy_invalid_client(mut self, legacy: bool) -> Self {
        self.legacy_invalid_client = legacy;
        self
    }

    /// Delays every normally handled token-endpoint response, errors included (default
    /// zero). The request is processed first, so a client that gives up while waiting
    /// still got its tokens issued and its refresh token rotated out; compare
    /// [`Fault::Delay`], which waits before processing.
    #[must_use]
    pub fn response_delay(mut self, delay: Duration) -> Self {
        self.response_delay = delay;
        self
    }

    /// The username of the user.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The password of the user.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret.
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }
}

/// What the token endpoint has seen: a snapshot from [`IdentityProvider::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Successful `password` grants (logins).
    pub password_grants: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Successful `client_credentials` grants.
    pub client_credentials_grants: u64,
    /// Every answer with the error `invalid_grant` (bad user credentials, unknown,
    /// expired or reused refresh tokens, ended sessions).
    pub invalid_grants: u64,
    /// Refresh tokens used again after being rotated out (each also ended a session).
    pub reuse_detected: u64,
    /// Every request to the token endpoint, whatever its method and whatever the
    /// answer, faults included.
    pub requests: u64,
    /// Requests answered with a [`Fault`].
    pub faults_served: u64,
}

/// A fake Keycloak token endpoint on `127.0.0.1`, like the one MangaDex uses for
/// personal API clients.
///
/// See the [module documentation](super) for the protocol. Clones share the same
/// server and state; the server runs until [`shutdown`](Self::shutdown) is called or
/// the last clone is dropped (an [`Api`](super::Api) started from it keeps working
/// either way). `Debug` shows no secrets.
#[derive(Clone)]
pub struct IdentityProvider {
    shared: Arc<ProviderShared>,
    shutdown: Arc<Shutdown>,
    addr: SocketAddr,
}

impl fmt::Debug for IdentityProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityProvider")
            .field("token_url", &self.shared.token_url)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl IdentityProvider {
    /// Binds `127.0.0.1` on a free port and serves the token endpoint in a task of the
    /// current Tokio runtime (so call it from inside one).
    pub async fn start(config: ProviderConfig) -> io::Result<IdentityProvider> {
        let (listener, addr) = server::bind().await?;
        let origin = format!("http://{addr}");
        let mut ids = Ids::new();
        let shared = Arc::new(ProviderShared {
            token_url: format!("{origin}{TOKEN_PATH}"),
            issuer: format!("{origin}{REALM_PATH}"),
            user_id: ids.uuid(),
            service_account_id: ids.uuid(),
            config,
            state: Mutex::new(State {
                ids,
                sessions: HashMap::new(),
                access: HashMap::new(),
                refresh: HashMap::new(),
                prune_access_at: PRUNE_MIN,
                faults: VecDeque::new(),
                sticky_fault: None,
                stats: ProviderStats::default(),
            }),
        });
        let handler_shared = Arc::clone(&shared);
        let shutdown = server::spawn(listener, move |request| {
            Arc::clone(&handler_shared).handle(request)
        });
        tracing::debug!(%addr, "fake identity provider listening");
        Ok(IdentityProvider {
            shared,
            shutdown: Arc::new(shutdown),
            addr,
        })
    }

    /// The token endpoint:
    /// `http://127.0.0.1:PORT/realms/mangadex/protocol/openid-connect/token`.
    pub fn token_url(&self) -> String {
        self.shared.token_url.clone()
    }

    /// The address the provider listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it was started with (for the credentials, say).
    pub fn config(&self) -> &ProviderConfig {
        &self.shared.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProviderStats {
        self.shared.lock().stats.clone()
    }

    /// Ends every session: their access tokens stop working at the [`Api`](super::Api)
    /// and their refresh tokens answer `invalid_grant` "Session not active". Logging in
    /// again starts a new session.
    pub fn revoke_sessions(&self) {
        let mut state = self.shared.lock();
        for session in state.sessions.values_mut() {
            session.active = false;
        }
    }

    /// Revokes every access token issued so far (the [`Api`](super::Api) answers `401`
    /// to them); refresh tokens keep working and the tokens they get are valid.
    pub fn revoke_access_tokens(&self) {
        self.shared.lock().access.clear();
    }

    /// Makes every refresh token issued so far expired: they answer `invalid_grant`
    /// "Token is not active". Later logins get working refresh tokens.
    pub fn expire_refresh_tokens(&self) {
        let now = Instant::now();
        let mut state = self.shared.lock();
        for entry in state.refresh.values_mut() {
            entry.expires_at = entry.expires_at.min(now);
        }
    }

    /// Whether the [`Api`](super::Api) would accept this access token now: issued by this
    /// provider, not expired, not revoked, and its session not ended.
    pub fn is_valid_access_token(&self, token: &str) -> bool {
        self.shared.authorize(token).is_ok()
    }

    /// Answers the next token-endpoint request with `fault` instead of handling it.
    /// Pushed faults are served first in, first out, before any
    /// [`set_fault`](Self::set_fault) one.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Answers every token-endpoint request with `fault` (once the pushed ones are
    /// used up) until this is called with `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.lock().sticky_fault = fault;
    }

    /// Forgets the pushed faults and the [`set_fault`](Self::set_fault) one.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.faults.clear();
        state.sticky_fault = None;
    }

    /// Stops the server: it closes its listener and every open connection, hanging ones
    /// included. The tokens it issued stay valid at an [`Api`](super::Api).
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }

    pub(super) fn shared(&self) -> &Arc<ProviderShared> {
        &self.shared
    }
}

/// The state behind an [`IdentityProvider`], shared with its server and its APIs.
pub(super) struct ProviderShared {
    config: ProviderConfig,
    token_url: String,
    issuer: String,
    user_id: String,
    service_account_id: String,
    state: Mutex<State>,
}

/// Prune expired access tokens when there are more than this, and no more often than
/// each time their number doubles.
const PRUNE_MIN: usize = 1024;

struct State {
    ids: Ids,
    /// By session id.
    sessions: HashMap<String, Session>,
    /// By token.
    access: HashMap<String, AccessEntry>,
    /// By token. Never pruned, so that an expired one is told apart from a bad one.
    refresh: HashMap<String, RefreshEntry>,
    prune_access_at: usize,
    faults: VecDeque<Fault>,
    sticky_fault: Option<Fault>,
    stats: ProviderStats,
}

struct Session {
    username: String,
    user_id: String,
    active: bool,
}

struct AccessEntry {
    sid: String,
    expires_at: Instant,
}

struct RefreshEntry {
    sid: String,
    expires_at: Instant,
    /// Rotated out: using it again is reuse.
    used: bool,
}

/// Whose access token it is.
pub(super) struct Owner {
    pub(super) username: String,
    pub(super) user_id: String,
}

/// Why an access token is refused.
pub(super) enum Rejection {
    /// Not issued by this provider, or revoked.
    Unknown,
    /// Past its lifetime.
    Expired,
    /// Its session has ended.
    SessionEnded,
}

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
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_expires_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    token_type: &'static str,
    #[serde(rename = "not-before-policy")]
    not_before_policy: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    session_state: Option<String>,
    scope: &'static str,
    client_type: &'static str,
}

/// An RFC 6749 §5.2 error answer.
struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_grant(status: StatusCode, description: &str) -> Self {
        Self::new(status, "invalid_grant", description)
    }

    fn into_response(self) -> Response<ResponseBody> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: &'a str,
            error_description: &'a str,
        }
        let mut response = server::json(
            self.status,
            &Body {
                error: self.error,
                error_description: &self.description,
            },
        );
        no_store(response.headers_mut());
        response
    }
}

enum Grant {
    Password,
    RefreshToken,
    ClientCredentials,
}

/// The form parameters, each present at most once.
struct Form(Vec<(String, String)>);

impl Form {
    fn new(params: Vec<(String, String)>) -> Result<Self, OAuthError> {
        let mut seen = HashSet::new();
        for (name, _) in &params {
            if !seen.insert(name.as_str()) {
                return Err(OAuthError::invalid_request(format!(
                    "Duplicate parameter: {name}"
                )));
            }
        }
        Ok(Self(params))
    }

    /// A parameter's value; an empty value counts as missing.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.as_str())
    }

    fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name)
            .ok_or_else(|| OAuthError::invalid_request(format!("Missing parameter: {name}")))
    }
}

impl ProviderShared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but never turn one panic into many.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks an access token the way the API does.
    pub(super) fn authorize(&self, token: &str) -> Result<Owner, Rejection> {
        let state = self.lock();
        let entry = state.access.get(token).ok_or(Rejection::Unknown)?;
        let session = state.sessions.get(&entry.sid).ok_or(Rejection::Unknown)?;
        if !session.active {
            return Err(Rejection::SessionEnded);
        }
        if Instant::now() >= entry.expires_at {
            return Err(Rejection::Expired);
        }
        Ok(Owner {
            username: session.username.clone(),
            user_id: session.user_id.clone(),
        })
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> io::Result<Response<ResponseBody>> {
        if request.uri().path() != TOKEN_PATH {
            return Ok(OAuthError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Unable to find matching target resource method",
            )
            .into_response());
        }
        let fault = {
            let mut state = self.lock();
            state.stats.requests += 1;
            let fault = match state.faults.pop_front() {
                Some(fault) => Some(fault),
                None => state.sticky_fault.clone(),
            };
            if fault.is_some() {
                state.stats.faults_served += 1;
            }
            fault
        };
        if let Some(fault) = &fault {
            tracing::debug!(?fault, "fake identity provider: serving a fault");
        }
        match fault {
            None => {}
            Some(Fault::Delay(delay)) => tokio::time::sleep(delay).await,
            Some(Fault::Status {
                status,
                content_type,
                body,
                retry_after,
            }) => {
                drain(request).await;
                return Ok(canned_response(status, content_type, body, retry_after));
            }
            Some(Fault::Hang) => {
                drain(request).await;
                // The server drops this future when it shuts down.
                let never: Infallible = std::future::pending().await;
                match never {}
            }
            Some(Fault::CloseConnection) => {
                drain(request).await;
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "fault: connection closed",
                ));
            }
            Some(Fault::ResetMidBody) => {
                drain(request).await;
                return Ok(truncated_response());
            }
        }
        let response = self.token_endpoint(request).await;
        if !self.config.response_delay.is_zero() {
            tokio::time::sleep(self.config.response_delay).await;
        }
        Ok(response)
    }

    async fn token_endpoint(&self, request: Request<Incoming>) -> Response<ResponseBody> {
        let (parts, body) = request.into_parts();
        if parts.method != Method::POST {
            let mut response = OAuthError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                "Use POST",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        if !is_form(&parts.headers) {
            return OAuthError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            )
            .into_response();
        }
        let body = match server::read_body(&parts.headers, body).await {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return OAuthError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request",
                    "Request body too large",
                )
                .into_response();
            }
            Err(BodyError::Broken) => {
                return OAuthError::invalid_request("Incomplete request body").into_response();
            }
        };
        let result = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map_err(|_| OAuthError::invalid_request("Malformed form body"))
            .and_then(Form::new)
            .and_then(|form| self.grant(&form, &parts.headers));
        match result {
            Ok(tokens) => {
                let mut response = server::json(StatusCode::OK, &tokens);
                no_store(response.headers_mut());
                response
            }
            Err(error) => {
                tracing::debug!(
                    status = %error.status,
                    error = error.error,
                    description = %error.description,
                    "fake identity provider: token request refused"
                );
                error.into_response()
            }
        }
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
        let mut state = self.lock();
        let result = match grant {
            Grant::Password => self.password_grant(&mut state, form),
            Grant::RefreshToken => self.refresh_grant(&mut state, form),
            Grant::ClientCredentials => Ok(self.client_credentials_grant(&mut state)),
        };
        if let Err(error) = &result {
            if error.error == "invalid_grant" {
                state.stats.invalid_grants += 1;
            }
        }
        result
    }

    /// Checks the client's credentials, from the form or from HTTP Basic.
    fn authenticate_client(&self, form: &Form, headers: &HeaderMap) -> Result<(), OAuthError> {
        let matches = match basic_credentials(headers) {
            Some(basic) => {
                if form.get("client_secret").is_some() {
                    return Err(OAuthError::invalid_request(
                        "Multiple client authentication methods",
                    ));
                }
                match basic {
                    Some((id, secret)) => {
                        form.get("client_id").is_none_or(|form_id| form_id == id)
                            && id == self.config.client_id
                            && secret == self.config.client_secret
                    }
                    None => false,
                }
            }
            None => {
                let id = form.require("client_id")?;
                let secret = form.require("client_secret")?;
                id == self.config.client_id && secret == self.config.client_secret
            }
        };
        if matches {
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

    fn password_grant(&self, state: &mut State, form: &Form) -> Result<TokenResponse, OAuthError> {
        let username = form.require("username")?;
        let password = form.require("password")?;
        if username != self.config.username || password != self.config.password {
            return Err(OAuthError::invalid_grant(
                StatusCode::UNAUTHORIZED,
                "Invalid user credentials",
            ));
        }
        let sid = state.new_session(&self.config.username, &self.user_id);
        let (access_token, _) = self.mint(state, &sid, TokenType::Access);
        let (refresh_token, _) = self.mint(state, &sid, TokenType::Refresh);
        state.stats.password_grants += 1;
        tracing::debug!(%sid, "fake identity provider: password grant");
        let refresh_expires_in = whole_seconds(self.config.refresh_lifetime);
        Ok(self.token_response(
            access_token,
            Some(refresh_token),
            refresh_expires_in,
            Some(sid),
        ))
    }

    fn refresh_grant(&self, state: &mut State, form: &Form) -> Result<TokenResponse, OAuthError> {
        let presented = form.require("refresh_token")?;
        let now = Instant::now();
        let (sid, expires_at, used) = match state.refresh.get(presented) {
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
        let (access_token, _) = self.mint(state, &sid, TokenType::Access);
        // The refresh token the client holds after this, and when it expires.
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
            let (token, expires_at) = self.mint(state, &sid, TokenType::Refresh);
            (Some(token), expires_at)
        };
        state.stats.refresh_grants += 1;
        tracing::debug!(%sid, "fake identity provider: refresh grant");
        let refresh_expires_in =
            whole_seconds(refresh_expires_at.saturating_duration_since(Instant::now()));
        Ok(self.token_response(access_token, refresh_token, refresh_expires_in, Some(sid)))
    }

    fn client_credentials_grant(&self, state: &mut State) -> TokenResponse {
        let username = format!("service-account-{}", self.config.client_id);
        let sid = state.new_session(&username, &self.service_account_id);
        let (access_token, _) = self.mint(state, &sid, TokenType::Access);
        state.stats.client_credentials_grants += 1;
        tracing::debug!(%sid, "fake identity provider: client credentials grant");
        // Keycloak issues no refresh token for this grant and says so with a zero.
        self.token_response(access_token, None, 0, None)
    }

    /// Issues and records a token for the session `sid`; returns it and its expiry.
    fn mint(&self, state: &mut State, sid: &str, kind: TokenType) -> (String, Instant) {
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
            scope: SCOPE,
            preferred_username: match kind {
                TokenType::Access => Some(username.as_str()),
                TokenType::Refresh => None,
            },
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
            token_type: "Bearer",
            not_before_policy: 0,
            session_state,
            scope: SCOPE,
            client_type: "personal",
        }
    }
}

/// Used instead of a lifetime too long for [`Instant`]: about 30 years.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

impl State {
    fn new_session(&mut self, username: &str, user_id: &str) -> String {
        let sid = self.ids.uuid();
        self.sessions.insert(
            sid.clone(),
            Session {
                username: username.to_owned(),
                user_id: user_id.to_owned(),
                active: true,
            },
        );
        sid
    }

    /// Forgets expired access tokens once in a while (they are invalid either way).
    fn prune_access(&mut self, now: Instant) {
        if self.access.len() >= self.prune_access_at {
            self.access.retain(|_, entry| entry.expires_at > now);
            self.prune_access_at = (self.access.len() * 2).max(PRUNE_MIN);
        }
    }
}

/// Reads and discards a request's body, as a server does before it answers; then
/// closing the connection sends no reset that could wipe out what the client has not
/// read yet.
async fn drain(request: Request<Incoming>) {
    let (parts, body) = request.into_parts();
    let _ = server::read_body(&parts.headers, body).await;
}

fn whole_seconds(duration: Duration) -> u64 {
    duration.as_secs()
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media_type| {
            media_type
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Client credentials from an `Authorization: Basic` header: `None` without one,
/// `Some(None)` for a malformed one. Per RFC 6749 §2.3.1 the id and the secret are
/// form-urlencoded before being joined with `:` and base64-encoded.
fn basic_credentials(headers: &HeaderMap) -> Option<Option<(String, String)>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok());
    Some(decoded.and_then(|decoded| {
        let (id, secret) = decoded.split_once(':')?;
        Some((form_decode(id)?, form_decode(secret)?))
    }))
}

/// Undoes `application/x-www-form-urlencoded` encoding of one value.
fn form_decode(encoded: &str) -> Option<String> {
    let pair = format!("v={}", encoded.replace('&', "%26"));
    let mut pairs = serde_urlencoded::from_str::<Vec<(String, String)>>(&pair).ok()?;
    pairs.pop().map(|(_, value)| value)
}

fn canned_response(
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    retry_after: Option<String>,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    if let Some(value) = retry_after.and_then(|value| HeaderValue::from_str(&value).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `200 OK` promising more JSON than it sends before the connection is closed.
fn truncated_response() -> Response<ResponseBody> {
    const PARTIAL: &[u8] = br#"{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjE3"#;
    let mut response = Response::new(ResponseBody::truncated(Bytes::from_static(PARTIAL)));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
    no_store(headers);
    response
}
