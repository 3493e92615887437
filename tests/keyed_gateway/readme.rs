use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceExt, service_fn};
use tower_auth_refresh::keyed::{KeyedAuthLayer, KeyedAuthService, KeyedHandle};
use tower_auth_refresh::oauth2::{HttpClient, OAuth2Refresher};
use tower_auth_refresh::{BoxError, RefreshRequest, TerminalError};

/// The application's user id: the session key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserId(pub String);

/// A MangaDex personal client that a user linked: the application's database (a map here).
#[derive(Clone)]
pub struct Account {
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
}
pub type Accounts = Arc<HashMap<UserId, Account>>;

#[derive(Clone)]
struct Gateway {
    /// One client for every user; each user has a session of their own.
    upstream: KeyedAuthService<HttpClient, UserId>,
    api: String,
}

/// The gateway, and the handle on its sessions (`set_tokens`, `logout`, `clear` per user).
/// `http` is the client to the identity provider and the API: `https_client()` in production.
pub fn gateway(
    token_url: &str,
    api: &str,
    accounts: Accounts,
    http: HttpClient,
) -> (Router, KeyedHandle<UserId>) {
    let (token_url, client): (Arc<str>, _) = (token_url.into(), http.clone());
    let layer = KeyedAuthLayer::builder(move |user: &UserId| {
        // This user's refresher: finds the account (an async query), then logs in or refreshes.
        let (user, accounts, token_url, client) = (
            user.clone(),
            accounts.clone(),
            token_url.clone(),
            client.clone(),
        );
        service_fn(move |request: RefreshRequest| {
            let (account, token_url, client) = (
                accounts.get(&user).cloned(),
                token_url.clone(),
                client.clone(),
            );
            async move {
                // Terminal: not retried until the application acts (`clear(user)`).
                let account = account.ok_or_else(|| TerminalError::new("no linked account"))?;
                let refresher = OAuth2Refresher::builder(&*token_url, account.client_id)
                    .client_secret(account.client_secret)
                    .password(account.username, account.password)
                    .build(client)?;
                Ok::<_, BoxError>(refresher.oneshot(request).await?)
            }
        })
    })
    // Bounded: an evicted user logs in again on their next request. With a keyed store
    // (`.store(RedisStore::new(…)?)`) the session is read back instead, and a fleet shares it.
    .max_sessions(100_000)
    .idle_timeout(Duration::from_secs(24 * 60 * 60))
    .build();
    let handle = layer.handle();
    let state = Gateway {
        upstream: layer.layer(http),
        api: api.to_owned(),
    };
    let router = Router::new()
        .route("/users/{user}/me", get(me))
        .with_state(state);
    (router, handle)
}

/// `GET /users/{user}/me` calls the API's `GET /user/me` as that user. A real application
/// takes the user from its own session (a cookie, its auth middleware), not from the path.
async fn me(
    State(gateway): State<Gateway>,
    Path(user): Path<String>,
) -> Result<String, StatusCode> {
    let mut request = http::Request::get(format!("{}/user/me", gateway.api))
        .body(Full::default())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    request.extensions_mut().insert(UserId(user)); // whose session the request goes out with
    let response = gateway
        .upstream
        .oneshot(request)
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    if !response.status().is_success() {
        return Err(response.status());
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    let me: serde_json::Value =
        serde_json::from_slice(&body.to_bytes()).map_err(|_| StatusCode::BAD_GATEWAY)?;
    Ok(me["data"]["attributes"]["username"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}
