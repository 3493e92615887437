//! The SDKs people use, each fitted with the layer on loopback and tested as its users would
//! see it: tonic (gRPC), octocrab, a progenitor-generated OpenAPI client, and refreshers built
//! on the oauth2 and yup-oauth2 crates. Each module names the versions it was written against
//! in `Cargo.toml`'s dev-dependencies; README's "Works with" links here.

#[cfg(feature = "rustls-ring")]
mod https;
mod oauth2_rs;
mod octocrab;
#[cfg(feature = "reqwest")]
mod progenitor;
mod tonic;
mod yup;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthLayer, AuthService, BoxError, RefreshRequest, TokenSet};

/// The layer over a plain-HTTP hyper-util client: how the refresher recipes call the API.
type HttpClient = AuthService<Client<HttpConnector, Full<Bytes>>>;

fn http_client<R>(refresher: R) -> HttpClient
where
    R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    AuthLayer::new(refresher).layer(Client::builder(TokioExecutor::new()).build_http())
}

/// `GET url` through `client`: the status of the answer.
async fn status(client: &HttpClient, url: String) -> Result<StatusCode, BoxError> {
    let request = Request::get(url).body(Full::default())?;
    Ok(client.clone().oneshot(request).await?.status())
}

/// The loopback identity provider and the API it protects.
async fn servers() -> (IdentityProvider, Api) {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    (idp, api)
}

/// `GET /user/me` through `client` answers 200.
async fn user_me_succeeds(client: &HttpClient, api: &Api) {
    let status = status(client, api.url("/user/me")).await.unwrap();
    assert_eq!(status, StatusCode::OK);
}
