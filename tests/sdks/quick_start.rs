use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower_auth_refresh::oauth2::{OAuth2Refresher, https_client};
use tower_auth_refresh::{AuthLayer, BoxError};

/// `GET {api}/user/me` as the user whose credentials are in the environment.
async fn me(token_url: &str, api: &str) -> Result<StatusCode, BoxError> {
    let env = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let refresher = OAuth2Refresher::builder(token_url, env("MANGADEX_CLIENT_ID")?)
        .client_secret(env("MANGADEX_CLIENT_SECRET")?)
        .password(env("MANGADEX_USERNAME")?, env("MANGADEX_PASSWORD")?)
        .build_https()?; // feature `rustls`; or `.build(your_client)` over any tower HTTP client

    let layer = AuthLayer::new(refresher);
    layer.handle().token().await?; // optional: log in now, to fail fast on bad credentials

    // `https_client` takes any body type: `https_client::<ReplayBody<B>>()` under `BufferBody`.
    let client = ServiceBuilder::new()
        .layer(layer)
        .service(https_client::<Full<Bytes>>()?);
    let request = Request::get(format!("{api}/user/me")).body(Full::default())?;
    Ok(client.oneshot(request).await?.status())
}
