//! An axum gateway whose handlers call an upstream API through one shared client: a
//! hyper-util `Client` wrapped in `AuthLayer`, kept in the router's state (the pattern of
//! axum's reverse-proxy example). However many requests come in at once, they share one
//! token, one login and, when the upstream revokes the token, one refresh.
//!
//! With no network: the loopback identity provider and API play the upstream, the gateway
//! listens on 127.0.0.1, and a burst of concurrent requests is sent to the gateway itself,
//! twice, the upstream revoking every token in between.
//!
//! ```sh
//! cargo run --example axum_gateway
//! GATEWAY_REQUESTS=1000 cargo run --example axum_gateway
//! ```
//!
//! Prints what happened and exits non-zero unless every request succeeded with one login
//! and one refresh. `tests/ecosystem.rs` runs the same scenario.

use std::collections::BTreeMap;
use std::process::ExitCode;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthHandle, AuthLayer, AuthService, BoxError, Origin};

/// The one upstream client every handler uses: cheap to clone, every clone sharing the
/// connection pool and the token cache. Its bodies are `Full<Bytes>`, which the layer can
/// copy to send again after a 401.
type Upstream = AuthService<Client<HttpConnector, Full<Bytes>>>;

/// The largest request body the gateway forwards.
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
struct Gateway {
    upstream: Upstream,
    /// `http://host:port` of the upstream API.
    origin: String,
}

/// A handler that calls the upstream API and answers with a piece of its answer.
async fn whoami(State(gateway): State<Gateway>) -> Result<String, StatusCode> {
    let request = http::Request::get(format!("{}/user/me", gateway.origin))
        .body(Full::default())
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let response = gateway
        .upstream
        .oneshot(request)
        .await
        .map_err(bad_gateway)?;
    if !response.status().is_success() {
        return Err(response.status());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(bad_gateway)?
        .to_bytes();
    let me: serde_json::Value = serde_json::from_slice(&body).map_err(bad_gateway)?;
    me["data"]["attributes"]["username"]
        .as_str()
        .map(str::to_owned)
        .ok_or(StatusCode::BAD_GATEWAY)
}

/// Everything else is forwarded: method, path, query, headers and body.
async fn proxy(State(gateway): State<Gateway>, request: Request) -> Result<Response, StatusCode> {
    let (mut parts, body) = request.into_parts();
    // Read whole (up to a cap) so that a request the upstream rejects can be sent again.
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?;
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri =
        Uri::try_from(format!("{}{path}", gateway.origin)).map_err(|_| StatusCode::BAD_REQUEST)?;
    // The caller's credentials are for the gateway, not for the upstream (and the layer
    // sends a request that already has `Authorization` untouched). `Host` names the gateway.
    parts.headers.remove(AUTHORIZATION);
    parts.headers.remove(HOST);
    let request = http::Request::from_parts(parts, Full::new(body));
    let response = gateway
        .upstream
        .oneshot(request)
        .await
        .map_err(bad_gateway)?;
    Ok(response.into_response())
}

fn bad_gateway(error: impl Into<BoxError>) -> StatusCode {
    eprintln!("upstream: {}", error.into());
    StatusCode::BAD_GATEWAY
}

/// The gateway's router, calling `upstream` (the API at `origin`) with tokens from `auth`.
fn gateway(auth: AuthLayer, origin: String) -> Router {
    let upstream = ServiceBuilder::new()
        // `.layer(auth)`: there is no `.auth(…)` builder extension. Unlike tower-http's
        // layers, an `AuthLayer` cannot be made from plain arguments (it needs a refresher and
        // is where its settings and handle come from), so an extension would only rename
        // `.layer`, cost an import, and clash with `tower_http::ServiceBuilderExt`.
        .layer(auth)
        .service(Client::builder(TokioExecutor::new()).build_http());
    Router::new()
        .route("/whoami", get(whoami))
        .fallback(proxy)
        .with_state(Gateway { upstream, origin })
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Requests sent to the gateway.
    pub requests: usize,
    /// The gateway's answers, by status code (0: the request failed).
    pub statuses: BTreeMap<u16, usize>,
    /// `POST /echo` answers that carried back exactly the body sent.
    pub echoes_intact: usize,
    /// Password grants at the identity provider.
    pub logins: u64,
    /// Refresh-token grants at the identity provider.
    pub refreshes: u64,
    /// Upstream 401s (each answered by the layer with a retry).
    pub upstream_unauthorized: u64,
    /// Requests that reached the upstream without a token.
    pub upstream_without_token: u64,
}

impl Outcome {
    /// Every request answered 200 with its body intact, after one login and one refresh,
    /// and at least one upstream 401 recovered.
    pub fn is_success(&self) -> bool {
        self.statuses.get(&200) == Some(&self.requests)
            && self.echoes_intact == self.requests / 2
            && self.logins == 1
            && self.refreshes == 1
            && self.upstream_unauthorized >= 1
            && self.upstream_without_token == 0
    }
}

/// Starts the upstream and the gateway on 127.0.0.1, sends `burst` concurrent
/// `GET /whoami`, makes the upstream revoke every token, sends `burst` concurrent
/// `POST /echo`, and reports.
pub async fn run(burst: usize) -> Result<Outcome, BoxError> {
    let idp = IdentityProvider::start(ProviderConfig::default()).await?;
    let api = Api::start(&idp).await?;
    let auth = AuthLayer::new(idp.refresher_builder().build_http()?)
        .allow_origin(Origin::parse(&api.origin())?);
    let handle: AuthHandle = auth.handle();

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, gateway(auth, api.origin()))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    println!("gateway http://{address} → upstream {}", api.origin());

    // The gateway's own callers: a plain client, no token.
    let callers = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut outcome = Outcome::default();

    let first = (0..burst).map(|_| {
        let request = http::Request::get(format!("http://{address}/whoami")).body(Full::default());
        send(callers.clone(), request, None)
    });
    let first = tally(&mut outcome, first).await;
    println!("burst 1: {burst} concurrent GET /whoami     → {first:?}");

    idp.revoke_access_tokens();
    println!("the upstream revoked every access token");

    let second = (0..burst).map(|i| {
        let body = Bytes::from(format!(r#"{{"request":{i}}}"#));
        let request = http::Request::post(format!("http://{address}/echo"))
            .header("content-type", "application/json")
            .body(Full::new(body.clone()));
        send(callers.clone(), request, Some(body))
    });
    let second = tally(&mut outcome, second).await;
    println!("burst 2: {burst} concurrent POST /echo      → {second:?}");

    let _ = stop.send(());
    server.await??;

    let (provider, upstream) = (idp.stats(), api.stats());
    outcome.logins = provider.password_grants;
    outcome.refreshes = provider.refresh_grants;
    outcome.upstream_unauthorized = upstream.unauthorized;
    outcome.upstream_without_token = upstream.missing_token;
    let generation = handle.state().map_or(0, |state| state.generation());
    println!("logins                          {:>6}", outcome.logins);
    println!("refreshes                       {:>6}", outcome.refreshes);
    println!(
        "upstream 401s, retried          {:>6}",
        outcome.upstream_unauthorized
    );
    println!(
        "upstream requests without token {:>6}",
        outcome.upstream_without_token
    );
    println!(
        "echoed bodies intact            {:>6}",
        outcome.echoes_intact
    );
    println!("token generation                {generation:>6}");
    Ok(outcome)
}

type Callers = Client<HttpConnector, Full<Bytes>>;

/// Sends one request to the gateway: its status (0 if it failed) and whether its answer is
/// `expected`, when given.
async fn send(
    callers: Callers,
    request: Result<http::Request<Full<Bytes>>, http::Error>,
    expected: Option<Bytes>,
) -> (u16, bool) {
    let Ok(request) = request else {
        return (0, false);
    };
    let Ok(response) = callers.request(request).await else {
        return (0, false);
    };
    let status = response.status().as_u16();
    let body = match response.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return (0, false),
    };
    (status, expected.is_some_and(|expected| body == expected))
}

async fn tally<F>(outcome: &mut Outcome, sends: impl Iterator<Item = F>) -> BTreeMap<u16, usize>
where
    F: Future<Output = (u16, bool)> + Send + 'static,
{
    // Spawned first, awaited after: the requests are in flight together.
    let tasks: Vec<_> = sends.map(tokio::spawn).collect();
    let mut statuses = BTreeMap::new();
    for task in tasks {
        let (status, intact) = task.await.unwrap_or((0, false));
        *statuses.entry(status).or_default() += 1;
        *outcome.statuses.entry(status).or_default() += 1;
        outcome.requests += 1;
        outcome.echoes_intact += usize::from(intact);
    }
    statuses
}

#[tokio::main]
async fn main() -> ExitCode {
    let burst = std::env::var("GATEWAY_REQUESTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(200);
    match run(burst).await {
        Ok(outcome) if outcome.is_success() => ExitCode::SUCCESS,
        Ok(outcome) => {
            eprintln!("FAILED: {outcome:?}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}
