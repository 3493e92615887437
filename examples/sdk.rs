//! A small SDK generic over its transport, `S: Service<http::Request<B>>` (the shape
//! tower-based SDKs and generated tower clients take), given tokens by `AuthLayer` without
//! a line of it changing; then boxed as a `BoxCloneSyncService` so that the stack's type can
//! be named in a struct.
//!
//! With no network: the loopback identity provider and API play MangaDex.
//!
//! ```sh
//! cargo run --example sdk
//! ```
//!
//! Exits non-zero unless the SDK fails with 401 on its own, and succeeds through the layer
//! with one login for many concurrent calls and one refresh after the server revokes the
//! token. `tests/ecosystem.rs` runs the same scenario.

use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder};
use tower_auth_refresh::test_util::{Api, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AuthHandle, AuthLayer, BoxError};

/// The SDK: it knows its API and nothing of tokens.
pub mod mangadex {
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body::Body;
    use http_body_util::{BodyExt, Full};
    use serde::Deserialize;
    use serde::de::DeserializeOwned;
    use tower::{Service, ServiceExt};

    type BoxError = Box<dyn std::error::Error + Send + Sync>;

    /// A MangaDex client over any tower HTTP service.
    #[derive(Clone, Debug)]
    pub struct MangaDex<S> {
        inner: S,
        base: String,
    }

    /// The logged-in user.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct User {
        /// The user's id.
        pub id: String,
        /// The user's name.
        pub username: String,
    }

    /// What can go wrong.
    #[derive(Debug, thiserror::Error)]
    pub enum Error {
        /// The transport failed (with a `tower_auth_refresh::RefreshError` inside when
        /// the transport is wrapped in `AuthLayer` and a refresh failed).
        #[error("transport: {0}")]
        Transport(#[source] BoxError),
        /// The API answered with an error status.
        #[error("the API answered {0}")]
        Status(StatusCode),
        /// The API's answer is not what the SDK expected.
        #[error("unexpected answer: {0}")]
        Decode(#[from] serde_json::Error),
    }

    impl<S> MangaDex<S> {
        /// A client that sends its requests through `inner` to the API at `base`.
        pub fn new(inner: S, base: impl Into<String>) -> Self {
            Self {
                inner,
                base: base.into(),
            }
        }
    }

    impl<S, B> MangaDex<S>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>>,
        S::Error: Into<BoxError>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        /// `GET /user/me`.
        pub async fn me(&mut self) -> Result<User, Error> {
            #[derive(Deserialize)]
            struct Entity {
                data: Data,
            }
            #[derive(Deserialize)]
            struct Data {
                id: String,
                attributes: Attributes,
            }
            #[derive(Deserialize)]
            struct Attributes {
                username: String,
            }
            let entity: Entity = self.get("/user/me").await?;
            Ok(User {
                id: entity.data.id,
                username: entity.data.attributes.username,
            })
        }

        async fn get<T: DeserializeOwned>(&mut self, path: &str) -> Result<T, Error> {
            let request = Request::get(format!("{}{path}", self.base))
                .body(Full::default())
                .map_err(|error| Error::Transport(error.into()))?;
            let response = self
                .inner
                .ready()
                .await
                .map_err(|error| Error::Transport(error.into()))?
                .call(request)
                .await
                .map_err(|error| Error::Transport(error.into()))?;
            if !response.status().is_success() {
                return Err(Error::Status(response.status()));
            }
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|error| Error::Transport(error.into()))?
                .to_bytes();
            Ok(serde_json::from_slice(&body)?)
        }
    }
}

use mangadex::MangaDex;

/// The whole client stack, named: a boxed tower service, so that the application's types
/// do not spell out the layers.
pub type Transport = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// An application that keeps the SDK and the token handle side by side.
#[derive(Clone, Debug)]
pub struct App {
    /// The SDK, over the authenticated transport.
    pub mangadex: MangaDex<Transport>,
    /// The token cache's handle (log in eagerly, force a refresh, log out).
    pub auth: AuthHandle,
}

impl App {
    /// The SDK over a hyper-util client wrapped in `auth`.
    pub fn new(auth: AuthLayer, base: impl Into<String>) -> Self {
        let handle = auth.handle();
        let stack = ServiceBuilder::new()
            .layer(auth)
            .service(Client::builder(TokioExecutor::new()).build_http());
        Self {
            mangadex: MangaDex::new(Transport::new(stack), base),
            auth: handle,
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// What the SDK got without the layer.
    pub without_auth: Option<String>,
    /// Calls that returned the user, out of `calls`.
    pub users: usize,
    /// Calls made through the layer.
    pub calls: usize,
    /// Password grants at the identity provider.
    pub logins: u64,
    /// Refresh-token grants at the identity provider.
    pub refreshes: u64,
    /// 401s the API answered.
    pub unauthorized: u64,
}

impl Outcome {
    /// The SDK alone was refused; through the layer every call succeeded, with one login,
    /// one refresh, and one 401 (before the single refresh) per call sent with the revoked
    /// token.
    pub fn is_success(&self) -> bool {
        self.without_auth.as_deref() == Some("the API answered 401 Unauthorized")
            && self.users == self.calls
            && self.logins == 1
            && self.refreshes == 1
            && self.unauthorized >= 2
    }
}

/// The SDK without the layer, then `concurrency` concurrent calls through the layer (typed
/// stack and boxed stack alike), then a call after the server revoked every token.
pub async fn run(concurrency: usize) -> Result<Outcome, BoxError> {
    let idp = IdentityProvider::start(ProviderConfig::default()).await?;
    let api = Api::start(&idp).await?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut outcome = Outcome::default();

    // The SDK as it comes: no token, 401.
    let mut plain = MangaDex::new(client.clone(), api.origin());
    outcome.without_auth = plain.me().await.err().map(|error| error.to_string());
    println!(
        "without the layer: {}",
        outcome.without_auth.as_deref().unwrap_or("ok?")
    );

    // The same SDK type over the layered client: `MangaDex<AuthService<Client<…>>>`, and the
    // boxed stack in `App`, from one layer, so one token.
    let auth = AuthLayer::new(idp.refresher_builder().build_http()?);
    let typed = MangaDex::new(auth.layer(client), api.origin());
    let app = App::new(auth, api.origin());

    let mut tasks = Vec::new();
    for i in 0..concurrency {
        if i % 2 == 0 {
            let mut sdk = typed.clone();
            tasks.push(tokio::spawn(async move { sdk.me().await }));
        } else {
            let mut sdk = app.mangadex.clone();
            tasks.push(tokio::spawn(async move { sdk.me().await }));
        }
    }
    let mut user = None;
    for task in tasks {
        outcome.calls += 1;
        if let Ok(me) = task.await? {
            outcome.users += 1;
            user = Some(me);
        }
    }
    println!(
        "{concurrency} concurrent calls through the layer: {} returned {:?}",
        outcome.users,
        user.map(|user| user.username)
    );

    idp.revoke_access_tokens();
    let (mut typed, mut boxed) = (typed, app.mangadex.clone());
    let (a, b) = tokio::join!(typed.me(), boxed.me());
    outcome.calls += 2;
    outcome.users += usize::from(a.is_ok()) + usize::from(b.is_ok());
    println!(
        "after the server revoked the token: {}, {}",
        a.map_or_else(|e| e.to_string(), |u| u.username),
        b.map_or_else(|e| e.to_string(), |u| u.username)
    );

    let (provider, upstream) = (idp.stats(), api.stats());
    outcome.logins = provider.password_grants;
    outcome.refreshes = provider.refresh_grants;
    outcome.unauthorized = upstream.unauthorized;
    println!(
        "logins {}, refreshes {}, 401s {} (one without the layer), token generation {}",
        outcome.logins,
        outcome.refreshes,
        outcome.unauthorized,
        app.auth.state().map_or(0, |state| state.generation())
    );
    Ok(outcome)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(64).await {
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
