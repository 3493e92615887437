//! The fake Keycloak token endpoint.
//!
//! One room per concern: `config` (how it behaves), `protocol` (forms and JSON answers),
//! `grants` (client authentication, the grants, minting tokens), `scope` (what a login is
//! granted, what a refresh may ask for), `endpoints` (discovery, revocation, logout) and
//! `faults` (misbehaving on purpose). This file holds the server's state and its public
//! handle.

#[cfg(feature = "private-key-jwt")]
mod assertion;
mod config;
#[cfg(feature = "dpop")]
mod dpop;
mod endpoints;
mod faults;
mod grants;
mod protocol;
mod scope;

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;

pub use self::config::ProviderConfig;
use self::protocol::OAuthError;
use super::fault::Fault;
use super::ids::Ids;
use super::server::{self, ResponseBody, Shutdown};

/// The path of the token endpoint.
const TOKEN_PATH: &str = "/realms/mangadex/protocol/openid-connect/token";
/// The revocation endpoint (RFC 7009).
const REVOKE_PATH: &str = "/realms/mangadex/protocol/openid-connect/revoke";
/// Keycloak's logout endpoint.
const LOGOUT_PATH: &str = "/realms/mangadex/protocol/openid-connect/logout";
/// The discovery document, OpenID Connect's place (appended to the issuer).
const OPENID_CONFIGURATION_PATH: &str = "/realms/mangadex/.well-known/openid-configuration";
/// The discovery document, RFC 8414's place (inserted before the issuer's path).
const RFC8414_PATH: &str = "/.well-known/oauth-authorization-server/realms/mangadex";

/// The endpoints that [`Fault`]s can break.
#[derive(Clone, Copy)]
enum Endpoint {
    Token,
    Revocation,
    Logout,
}
/// The issuer's path (the `iss` claim is the origin followed by this).
const REALM_PATH: &str = "/realms/mangadex";

/// What the token endpoint has seen: a snapshot from [`IdentityProvider::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProviderStats {
    /// Successful `password` grants (logins).
    pub password_grants: u64,
    /// Successful `refresh_token` grants.
    pub refresh_grants: u64,
    /// Successful `password` grants, by username.
    pub logins_by_user: std::collections::BTreeMap<String, u64>,
    /// Successful `refresh_token` grants, by the username of their session.
    pub refreshes_by_user: std::collections::BTreeMap<String, u64>,
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
    /// Requests (to any endpoint) whose client authenticated with HTTP Basic
    /// (`client_secret_basic`).
    pub client_auth_basic: u64,
    /// Requests whose client authenticated with `client_secret` in the form
    /// (`client_secret_post`).
    pub client_auth_post: u64,
    /// Requests of a public client (`client_id` only).
    pub client_auth_none: u64,
    /// Requests whose client authenticated with a signed JWT (`private_key_jwt`; feature
    /// `private-key-jwt`, [`ProviderConfig::client_jwk`]).
    pub client_auth_jwt: u64,
    /// `GET`s of the discovery document.
    pub discovery_requests: u64,
    /// Tokens revoked at the revocation endpoint (a known token; an unknown one answers 200
    /// all the same and is not counted).
    pub revocations: u64,
    /// Sessions ended at the logout endpoint.
    pub logouts: u64,
    /// DPoP proofs accepted at the token endpoint (feature `dpop`,
    /// [`ProviderConfig::dpop`]); each bound the tokens it got to its key.
    pub dpop_proofs: u64,
    /// Token requests answered `400 use_dpop_nonce` with a new `DPoP-Nonce`: no nonce, or
    /// one the provider no longer takes.
    pub dpop_nonce_challenges: u64,
    /// Proofs refused `400 invalid_dpop_proof`: signature, `typ`, `alg`, `htm`, `htu`, `iat`.
    pub dpop_invalid_proofs: u64,
    /// Proofs whose `jti` was seen before, refused `400 invalid_grant` "DPoP proof JWT Replay
    /// detected".
    pub dpop_replays: u64,
    /// Requests without a proof refused `400 invalid_grant` "DPoP proof JWT not provided"
    /// ([`ProviderConfig::require_dpop`]).
    pub dpop_missing: u64,
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
                sessions: HashMap::new(),
                access: HashMap::new(),
                refresh: HashMap::new(),
                prune_access_at: PRUNE_MIN,
                faults: VecDeque::new(),
                sticky_fault: None,
                revocation_faults: VecDeque::new(),
                #[cfg(feature = "private-key-jwt")]
                assertion_ids: std::collections::HashSet::new(),
                #[cfg(feature = "dpop")]
                dpop_nonces: super::dpop::Nonces::new(&mut ids),
                #[cfg(feature = "dpop")]
                dpop_jtis: std::collections::HashSet::new(),
                ids,
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

    /// The issuer, `http://127.0.0.1:PORT/realms/mangadex`, as the discovery document and the
    /// tokens' `iss` say.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// The revocation endpoint (RFC 7009):
    /// `http://127.0.0.1:PORT/realms/mangadex/protocol/openid-connect/revoke`.
    pub fn revocation_url(&self) -> String {
        self.shared.url(REVOKE_PATH)
    }

    /// Keycloak's logout endpoint:
    /// `http://127.0.0.1:PORT/realms/mangadex/protocol/openid-connect/logout`.
    pub fn logout_url(&self) -> String {
        self.shared.url(LOGOUT_PATH)
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

    /// A new DPoP nonce (feature `dpop`, [`ProviderConfig::dpop_nonce`]): the next answers
    /// carry it; proofs with the one before are still taken (as node oidc-provider takes the
    /// previous window's), those with older ones get a `use_dpop_nonce` challenge.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn rotate_dpop_nonce(&self) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        state.dpop_nonces.rotate(&mut state.ids);
    }

    /// The key thumbprint (`cnf.jkt`) an access token is bound to, if it is a live DPoP-bound
    /// token of this provider.
    pub fn access_token_jkt(&self, token: &str) -> Option<String> {
        self.shared.authorize(token).ok()?.jkt
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

    /// Answers the next request to the revocation or logout endpoint with `fault` instead
    /// of handling it (first in, first out). Not counted in
    /// [`ProviderStats::faults_served`], which is the token endpoint's.
    pub fn push_revocation_fault(&self, fault: Fault) {
        self.shared.lock().revocation_faults.push_back(fault);
    }

    /// Forgets the pushed faults (of every endpoint) and the [`set_fault`](Self::set_fault)
    /// one.
    pub fn clear_faults(&self) {
        let mut state = self.shared.lock();
        state.faults.clear();
        state.sticky_fault = None;
        state.revocation_faults.clear();
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
    /// For the revocation and logout endpoints.
    revocation_faults: VecDeque<Fault>,
    /// The `jti` of every client assertion accepted: each is accepted once.
    #[cfg(feature = "private-key-jwt")]
    assertion_ids: std::collections::HashSet<String>,
    /// The token endpoint's DPoP nonces.
    #[cfg(feature = "dpop")]
    dpop_nonces: super::dpop::Nonces,
    /// The `jti` of every DPoP proof accepted: each is accepted once.
    #[cfg(feature = "dpop")]
    dpop_jtis: std::collections::HashSet<String>,
    stats: ProviderStats,
}

struct Session {
    username: String,
    user_id: String,
    /// What the login was granted; its refresh tokens carry it.
    scope: String,
    active: bool,
}

struct AccessEntry {
    sid: String,
    expires_at: Instant,
    /// The thumbprint of the DPoP key it is bound to.
    jkt: Option<String>,
}

struct RefreshEntry {
    sid: String,
    expires_at: Instant,
    /// Rotated out: using it again is reuse.
    used: bool,
    /// The DPoP key it is bound to (a public client's, RFC 9449 §5).
    jkt: Option<String>,
}

/// Whose access token it is.
pub(super) struct Owner {
    pub(super) username: String,
    pub(super) user_id: String,
    /// The DPoP key the token is bound to, if it is.
    pub(super) jkt: Option<String>,
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
            jkt: entry.jkt.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches(REALM_PATH))
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> io::Result<Response<ResponseBody>> {
        let discovery = match self.config.openid_configuration {
            true => OPENID_CONFIGURATION_PATH,
            false => RFC8414_PATH,
        };
        let endpoint = match request.uri().path() {
            TOKEN_PATH => Endpoint::Token,
            REVOKE_PATH => Endpoint::Revocation,
            LOGOUT_PATH => Endpoint::Logout,
            path if path == discovery => {
                return Ok(self.discovery(request.method()).into_response());
            }
            _ => {
                return Ok(OAuthError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "Unable to find matching target resource method",
                )
                .into_answer()
                .into_response());
            }
        };
        let fault = {
            let mut state = self.lock();
            match endpoint {
                Endpoint::Token => {
                    state.stats.requests += 1;
                    let fault = match state.faults.pop_front() {
                        Some(fault) => Some(fault),
                        None => state.sticky_fault.clone(),
                    };
                    if fault.is_some() {
                        state.stats.faults_served += 1;
                    }
                    fault
                }
                Endpoint::Revocation | Endpoint::Logout => state.revocation_faults.pop_front(),
            }
        };
        if let Some(fault) = &fault {
            tracing::debug!(?fault, "fake identity provider: serving a fault");
        }
        self.serve(fault, request, endpoint).await
    }
}

impl State {
    fn new_session(&mut self, username: &str, user_id: &str, scope: &str) -> String {
        let sid = self.ids.uuid();
        self.sessions.insert(
            sid.clone(),
            Session {
                username: username.to_owned(),
                user_id: user_id.to_owned(),
                scope: scope.to_owned(),
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
