//! Calls the real MangaDex API as a personal client: logs in with the password grant, then
//! asks `GET /user/me` who we are. Refreshes and 401 retries happen inside the layer.
//!
//! ```sh
//! export MANGADEX_USERNAME=… MANGADEX_PASSWORD=… MANGADEX_CLIENT_ID=… MANGADEX_CLIENT_SECRET=…
//! cargo run --example mangadex --features rustls
//! ```

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http::header::USER_AGENT;
use http_body_util::{BodyExt, Full};
use tower::ServiceBuilder;
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::oauth2::{OAuth2Refresher, https_client};

const TOKEN_URL: &str = "https://auth.mangadex.org/realms/mangadex/protocol/openid-connect/token";
const API: &str = "https://api.mangadex.org";

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("set {name} (see the top of examples/mangadex.rs)"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = https_client()?;
    let refresher = OAuth2Refresher::builder(TOKEN_URL, env("MANGADEX_CLIENT_ID")?)
        .client_secret(env("MANGADEX_CLIENT_SECRET")?)
        .password(env("MANGADEX_USERNAME")?, env("MANGADEX_PASSWORD")?)
        .build(client.clone())?;
    let layer = AuthLayer::builder(refresher)
        .default_lifetime(Duration::from_secs(900))
        .build();
    let handle = layer.handle();

    // Fail fast on wrong credentials, before the first API call.
    let state = handle.token().await?;
    println!("logged in; token generation {}", state.generation());

    let api = ServiceBuilder::new().layer(layer).service(client);
    let request = Request::get(format!("{API}/user/me"))
        .header(USER_AGENT, "tower-auth-refresh example")
        .body(Full::<Bytes>::default())?;
    let response = api.oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET /user/me → {status}\n{}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}
