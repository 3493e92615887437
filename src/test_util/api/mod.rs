//! The fake protected API.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

#[cfg(feature = "dpop")]
mod dpop;

use super::ids::Ids;
use super::provider::{IdentityProvider, Owner, ProviderShared, Rejection};
use super::server::{self, BodyError, ResponseBody, Shutdown};

/// The `roles` that `GET /auth/check` reports.
const ROLES: [&str; 5] = [
    "ROLE_MEMBER",
    "IS_JWT_AUTHENTICATED",
    "IS_AUTHENTICATED_FULLY",
    "IS_AUTHENTICATED_ANONYMOUSLY",
    "IS_AUTHENTICATED_REMEMBERED",
];

/// What the API has seen: a snapshot from [`Api::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiStats {
    /// Every request, whatever the answer.
    pub requests: u64,
    /// Requests answered with a `2xx` status.
    pub ok: u64,
    /// Requests answered with `401 Unauthorized`.
    pub unauthorized: u64,
    /// Requests that came without an `Authorization` header.
    pub missing_token: u64,
    /// The body of every request that `/echo` accepted, in order (a request refused with
    /// `401` is not recorded).
    pub echo_bodies: Vec<Bytes>,
    /// Requests with a valid token whose [`EXPECTED_USER`] header named another user than the
    /// token's owner: a session leaked into another user's request.
    pub wrong_user: u64,
    /// Accepted requests by the username of the token's owner.
    pub by_user: std::collections::HashMap<String, u64>,
    /// Requests accepted with `Authorization: DPoP` and a valid proof (feature `dpop`).
    pub dpop_ok: u64,
    /// Requests answered with a nonce challenge: `401`, `WWW-Authenticate: DPoP
    /// error="use_dpop_nonce"` and a new `DPoP-Nonce` ([`Api::set_dpop_nonce`]).
    pub dpop_nonce_challenges: u64,
    /// Requests whose proof was refused: `401`, `WWW-Authenticate: DPoP
    /// error="invalid_dpop_proof"` (missing, signature, `htm`, `htu`, `iat`, `ath`, another
    /// key than the token's, a `jti` seen before).
    pub dpop_invalid_proofs: u64,
    /// DPoP-bound tokens sent as bearer tokens (`Authorization: Bearer`), refused (RFC 9449
    /// §7.2).
    pub dpop_bound_as_bearer: u64,
}

/// A request header naming the user a test meant the request for; the [`Api`] counts a
/// request whose token belongs to someone else in [`ApiStats::wrong_user`].
pub const EXPECTED_USER: &str = "x-expected-user";

/// A fake of the MangaDex API on `127.0.0.1`, protected by an [`IdentityProvider`]'s
/// access tokens.
///
/// Every request needs `Authorization: Bearer <token>` with an access token that the
/// provider issued, that has not expired or been revoked, and whose session has not
/// ended (the API asks the provider's state directly, not over HTTP). Otherwise it
/// answers `401` with `Content-Type: application/json` and a body like
///
/// ```json
/// {"result":"error","errors":[{"id":"…","status":401,"title":"unauthorized_http_exception",
///  "detail":"Token is invalid","context":null}]}
/// ```
///
/// and, after [`set_www_authenticate(true)`](Self::set_www_authenticate), the header
/// `WWW-Authenticate: Bearer error="invalid_token"` (just `Bearer` when the request had
/// no token, as RFC 6750 §3.1 says). With a good token:
///
/// | request | answer |
/// | --- | --- |
/// | `GET /auth/check` | `{"result":"ok","isAuthenticated":true,"roles":[…]}` |
/// | `GET /user/me` | `{"result":"ok","response":"entity","data":{"id":"…","type":"user","attributes":{"username":"…",…},…}}` |
/// | any method on `/echo` | `200`, the request body back with the request's `Content-Type`; the body is recorded in [`ApiStats::echo_bodies`] |
/// | `GET /redirect?to=<url>` | `302 Found` with `Location: <url>` |
/// | `GET /forbidden` | `403` with an error body like the one above |
/// | anything else | `404` with an error body like the one above |
///
/// A request body over 64 KiB gets `413`. Clones share the same server and state; it
/// runs until [`shutdown`](Self::shutdown) is called or the last clone is dropped.
///
/// **DPoP** (feature `dpop`, RFC 9449 §7). A token the provider bound to a DPoP key must come
/// as `Authorization: DPoP <token>` with a `DPoP` proof of this request, signed by that key:
/// its signature with the header's key, `typ`, `htm` the request's method, `htu` this API's
/// URL for the path (no query), `iat` within a minute, `ath` the token's SHA-256, each `jti`
/// once, and with [`set_dpop_nonce`](Self::set_dpop_nonce) the API's own nonce. A refused
/// proof is `401` with `WWW-Authenticate: DPoP error="invalid_dpop_proof"`, a missing or old
/// nonce `401` with `error="use_dpop_nonce"` and a `DPoP-Nonce`; a bound token sent as
/// `Bearer`, or an unbound one as `DPoP`, is refused as a bad token. [`ApiStats`] counts each.
#[derive(Clone)]
pub struct Api {
    shared: Arc<ApiShared>,
    shutdown: Arc<Shutdown>,
    addr: SocketAddr,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Api {
    /// Binds `127.0.0.1` on a free port and serves the API in a task of the current
    /// Tokio runtime, accepting the access tokens of `provider`.
    pub async fn start(provider: &IdentityProvider) -> io::Result<Api> {
        let (listener, addr) = server::bind().await?;
        let shared = Arc::new(ApiShared {
            provider: Arc::clone(provider.shared()),
            origin: format!("http://{addr}"),
            state: Mutex::new(ApiState {
                stats: ApiStats::default(),
                www_authenticate: false,
                bare_403: false,
                forced_unauthorized: 0,
                ids: Ids::new(),
                #[cfg(feature = "dpop")]
                dpop: dpop::DpopState::default(),
            }),
        });
        let handler_shared = Arc::clone(&shared);
        let shutdown = server::spawn(listener, move |request| {
            Arc::clone(&handler_shared).handle(request)
        });
        tracing::debug!(%addr, "fake API listening");
        Ok(Api {
            shared,
            shutdown: Arc::new(shutdown),
            addr,
        })
    }

    /// `http://127.0.0.1:PORT` followed by `path` (a `/` is put in between if `path`
    /// does not start with one).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with('/') {
            format!("{}{path}", self.origin())
        } else {
            format!("{}/{path}", self.origin())
        }
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the counters and recorded bodies.
    pub fn stats(&self) -> ApiStats {
        self.shared.lock().stats.clone()
    }

    /// Whether `401` answers carry a `WWW-Authenticate` header (default `false`).
    pub fn set_www_authenticate(&self, on: bool) {
        self.shared.lock().www_authenticate = on;
    }

    /// Answers a refused token with `403` and no `WWW-Authenticate` header instead of `401`,
    /// as django-oauth-toolkit's protected views do (default `false`). Counted in
    /// [`ApiStats::unauthorized`] all the same.
    pub fn set_bare_403(&self, on: bool) {
        self.shared.lock().bare_403 = on;
    }

    /// Answers the next `n` requests (in addition to any still pending) with `401`,
    /// whatever their token.
    pub fn push_unauthorized(&self, n: usize) {
        let mut state = self.shared.lock();
        state.forced_unauthorized = state.forced_unauthorized.saturating_add(n);
    }

    /// Stops the server: it closes its listener and every open connection.
    pub fn shutdown(&self) {
        self.shutdown.trigger();
    }
}

struct ApiShared {
    provider: Arc<ProviderShared>,
    /// `http://127.0.0.1:PORT`, what a proof's `htu` starts with.
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    origin: String,
    state: Mutex<ApiState>,
}

struct ApiState {
    stats: ApiStats,
    www_authenticate: bool,
    bare_403: bool,
    forced_unauthorized: usize,
    ids: Ids,
    #[cfg(feature = "dpop")]
    dpop: dpop::DpopState,
}

/// Why a request is refused with `401`.
enum Denial {
    Missing,
    Rejected(Rejection),
    Forced,
    /// A DPoP-bound token sent as a bearer token.
    BoundAsBearer,
    /// Refused under the DPoP scheme: its `error` and `error_description`.
    #[cfg_attr(not(feature = "dpop"), allow(dead_code))]
    Dpop(&'static str, &'static str),
}

/// How a request presents its token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Bearer,
    DPoP,
}

impl Denial {
    fn detail(&self) -> &'static str {
        match self {
            Denial::Missing => "No token provided",
            Denial::Rejected(Rejection::Unknown) | Denial::Forced => "Token is invalid",
            Denial::Rejected(Rejection::Expired) => "Token has expired",
            Denial::Rejected(Rejection::SessionEnded) => "Session is not active",
            Denial::BoundAsBearer => "A DPoP-bound token must be sent with the DPoP scheme",
            Denial::Dpop(_, description) => description,
        }
    }
}

impl ApiShared {
    fn lock(&self) -> MutexGuard<'_, ApiState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> io::Result<Response<ResponseBody>> {
        let (parts, body) = request.into_parts();
        let body = server::read_body(&parts.headers, body).await;
        let had_token = parts.headers.contains_key(header::AUTHORIZATION);
        let credentials = credentials(&parts.headers);
        let mut state = self.lock();
        let verdict = match credentials {
            Some((Scheme::Bearer, token)) => match self.provider.authorize(token) {
                Ok(owner) if owner.jkt.is_some() => {
                    state.stats.dpop_bound_as_bearer += 1;
                    Err(Denial::BoundAsBearer)
                }
                verdict => verdict.map_err(Denial::Rejected),
            },
            Some((Scheme::DPoP, token)) => self.dpop_verdict(&mut state, &parts, token),
            None => Err(Denial::Missing),
        };
        state.stats.requests += 1;
        if !had_token {
            state.stats.missing_token += 1;
        }
        let body = match body {
            Ok(body) => body,
            Err(BodyError::TooLarge) => {
                return Ok(state.error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large_http_exception",
                    "Request body too large",
                ));
            }
            Err(BodyError::Broken) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "incomplete request body",
                ));
            }
        };
        let verdict = if state.forced_unauthorized > 0 {
            state.forced_unauthorized -= 1;
            Err(Denial::Forced)
        } else {
            verdict
        };
        let dpop_scheme = credentials.is_some_and(|(scheme, _)| scheme == Scheme::DPoP);
        let owner = match verdict {
            Ok(owner) => owner,
            Err(denial) => {
                state.stats.unauthorized += 1;
                let response = state.unauthorized(&denial);
                return Ok(state.with_dpop_nonce(dpop_scheme, response));
            }
        };
        if dpop_scheme {
            state.stats.dpop_ok += 1;
        }
        let expected = parts
            .headers
            .get(EXPECTED_USER)
            .and_then(|value| value.to_str().ok());
        if expected.is_some_and(|expected| expected != owner.username) {
            state.stats.wrong_user += 1;
        }
        *state
            .stats
            .by_user
            .entry(owner.username.clone())
            .or_default() += 1;
        let path = parts.uri.path();
        let response = match (&parts.method, path) {
            (&Method::GET, "/auth/check") => server::json(
                StatusCode::OK,
                &json!({"result": "ok", "isAuthenticated": true, "roles": ROLES}),
            ),
            (&Method::GET, "/user/me") => server::json(
                StatusCode::OK,
                &json!({
                    "result": "ok",
                    "response": "entity",
                    "data": {
                        "id": owner.user_id,
                        "type": "user",
                        "attributes": {
                            "username": owner.username,
                            "roles": ["ROLE_MEMBER"],
                            "version": 1,
                        },
                        "relationships": [],
                    },
                }),
            ),
            (&Method::GET, "/redirect") => {
                // `/redirect?to=<url>`: a 302 to anywhere, for redirect tests.
                let to = parts
                    .uri
                    .query()
                    .and_then(|query| {
                        serde_urlencoded::from_str::<Vec<(String, String)>>(query).ok()
                    })
                    .and_then(|pairs| pairs.into_iter().find(|(key, _)| key == "to"))
                    .and_then(|(_, to)| HeaderValue::from_str(&to).ok());
                match to {
                    Some(to) => {
                        let mut response = server::response(
                            StatusCode::FOUND,
                            HeaderValue::from_static("text/plain"),
                            Bytes::new(),
                        );
                        response.headers_mut().insert(header::LOCATION, to);
                        response
                    }
                    None => state.error(
                        StatusCode::BAD_REQUEST,
                        "bad_request_http_exception",
                        "Missing or invalid `to`",
                    ),
                }
            }
            (&Method::GET, "/forbidden") => state.error(
                StatusCode::FORBIDDEN,
                "forbidden_http_exception",
                "You are not allowed to do this",
            ),
            (_, "/echo") => {
                state.stats.echo_bodies.push(body.clone());
                let content_type = parts
                    .headers
                    .get(header::CONTENT_TYPE)
                    .cloned()
                    .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
                server::response(StatusCode::OK, content_type, body)
            }
            (method, path) => state.error(
                StatusCode::NOT_FOUND,
                "not_found_http_exception",
                &format!("No route found for \"{method} {path}\""),
            ),
        };
        if response.status().is_success() {
            state.stats.ok += 1;
        }
        Ok(state.with_dpop_nonce(dpop_scheme, response))
    }
}

impl ApiState {
    /// An error in the MangaDex format.
    fn error(&mut self, status: StatusCode, title: &str, detail: &str) -> Response<ResponseBody> {
        server::json(
            status,
            &json!({
                "result": "error",
                "errors": [{
                    "id": self.ids.uuid(),
                    "status": status.as_u16(),
                    "title": title,
                    "detail": detail,
                    "context": null,
                }],
            }),
        )
    }

    fn unauthorized(&mut self, denial: &Denial) -> Response<ResponseBody> {
        if let Denial::Dpop(error, description) = denial {
            let mut response = self.error(
                StatusCode::UNAUTHORIZED,
                "unauthorized_http_exception",
                description,
            );
            // RFC 9449 §7.1: the challenge is the protocol, whatever `www_authenticate` says.
            let challenge = format!(
                r#"DPoP algs="ES256 EdDSA", error="{error}", error_description="{description}""#
            );
            if let Ok(challenge) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge);
            }
            return response;
        }
        if self.bare_403 {
            return self.error(
                StatusCode::FORBIDDEN,
                "forbidden_http_exception",
                "You do not have permission to perform this action.",
            );
        }
        let mut response = self.error(
            StatusCode::UNAUTHORIZED,
            "unauthorized_http_exception",
            denial.detail(),
        );
        if self.www_authenticate {
            let challenge = match denial {
                Denial::Missing => HeaderValue::from_static("Bearer"),
                _ => HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

/// The scheme and token of an `Authorization: Bearer <token>` or `DPoP <token>` header.
fn credentials(headers: &HeaderMap) -> Option<(Scheme, &str)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::DPoP
    } else {
        return None;
    };
    (!token.is_empty()).then_some((scheme, token))
}

#[cfg(not(feature = "dpop"))]
impl ApiShared {
    /// Without the feature `dpop`, the DPoP scheme is one the API does not know.
    fn dpop_verdict(
        &self,
        _: &mut ApiState,
        _: &http::request::Parts,
        _: &str,
    ) -> Result<Owner, Denial> {
        Err(Denial::Missing)
    }
}

#[cfg(not(feature = "dpop"))]
impl ApiState {
    fn with_dpop_nonce(&self, _: bool, response: Response<ResponseBody>) -> Response<ResponseBody> {
        response
    }
}
