//! The SDKs people use, each fitted with the layer on loopback and tested as its users would
//! see it: tonic (gRPC), octocrab, a progenitor-generated OpenAPI client, and refreshers built
//! on the oauth2 and yup-oauth2 crates. Each module names the versions it was written against
//! in `Cargo.toml`'s dev-dependencies; README's "Works with" links here.

#[cfg(feature = "rustls-ring")]
mod https;
mod octocrab;
#[cfg(feature = "reqwest")]
mod progenitor;
mod tonic;

use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};

/// The loopback identity provider and the API it protects.
async fn servers() -> (IdentityProvider, Api) {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = Api::start(&idp).await.unwrap();
    (idp, api)
}
