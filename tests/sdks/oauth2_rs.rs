//! A refresher built from the oauth2 crate (ramosbugs' `oauth2`, 5.x): a `service_fn` over its
//! `BasicClient` and its reqwest client. The whole recipe is `refresher` below; the tests run it
//! against the loopback identity provider.

use std::sync::Arc;

use oauth2_rs::basic::{BasicClient, BasicErrorResponseType, BasicTokenResponse};
use oauth2_rs::{
    ClientId, ClientSecret, EndpointNotSet, EndpointSet, RequestTokenError, ResourceOwnerPassword,
    ResourceOwnerUsername, TokenResponse, TokenUrl,
};
use tower::service_fn;
use tower_auth_refresh::test_util::IdentityProvider;
use tower_auth_refresh::{BoxError, RefreshErrorKind, RefreshRequest, TerminalError, TokenSet};

use super::{http_client, servers, status, user_me_succeeds};

type OAuthClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// What the refresher needs for every call: the client, its HTTP client, the user.
struct Login {
    client: OAuthClient,
    http: oauth2_rs::reqwest::Client,
    username: String,
    password: String,
}

/// The recipe: refresh with the refresh token when there is one, log in with the password
/// when there is none or the server refused it; a refused login is terminal.
fn refresher(
    login: Login,
) -> impl tower::Service<RefreshRequest, Response = TokenSet, Error = BoxError, Future: Send>
+ Send
+ 'static {
    let login = Arc::new(login);
    service_fn(move |request: RefreshRequest| {
        let login = Arc::clone(&login);
        async move {
            if let Some(refresh_token) = request.refresh_token() {
                let refresh_token = oauth2_rs::RefreshToken::new(refresh_token.secret().to_owned());
                match login
                    .client
                    .exchange_refresh_token(&refresh_token)
                    .request_async(&login.http)
                    .await
                {
                    Ok(response) => return Ok(token_set(&response)),
                    // The refresh token is spent or revoked: log in again, below.
                    Err(RequestTokenError::ServerResponse(refusal))
                        if *refusal.error() == BasicErrorResponseType::InvalidGrant => {}
                    Err(error) => return Err(error.into()),
                }
            }
            let username = ResourceOwnerUsername::new(login.username.clone());
            let password = ResourceOwnerPassword::new(login.password.clone());
            match login
                .client
                .exchange_password(&username, &password)
                .request_async(&login.http)
                .await
            {
                Ok(response) => Ok(token_set(&response)),
                // Wrong password or client: retrying will not help.
                Err(error @ RequestTokenError::ServerResponse(_)) => {
                    Err(TerminalError::new(error).into())
                }
                Err(error) => Err(error.into()),
            }
        }
    })
}

fn token_set(response: &BasicTokenResponse) -> TokenSet {
    let mut tokens = TokenSet::new(response.access_token().secret().as_str());
    if let Some(lifetime) = response.expires_in() {
        tokens = tokens.with_expires_in(lifetime);
    }
    if let Some(refresh_token) = response.refresh_token() {
        tokens = tokens.with_refresh_token(refresh_token.secret().as_str());
    }
    tokens
}

fn login(idp: &IdentityProvider, password: &str) -> Login {
    let config = idp.config();
    Login {
        client: BasicClient::new(ClientId::new(config.client_id().to_owned()))
            .set_client_secret(ClientSecret::new(config.client_secret().to_owned()))
            .set_token_uri(TokenUrl::new(idp.token_url()).unwrap()),
        // No redirects: a token endpoint that redirects is misconfigured (oauth2's advice).
        http: oauth2_rs::reqwest::Client::builder()
            .redirect(oauth2_rs::reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap(),
        username: config.username().to_owned(),
        password: password.to_owned(),
    }
}

// Log in, refresh after a revocation, and log in again when the session (so the refresh
// token) is gone: each costs one call of the oauth2 crate, and every request succeeds.
#[tokio::test]
async fn the_oauth2_crate_logs_in_refreshes_and_logs_in_again() {
    let (idp, api) = servers().await;
    let password = idp.config().password().to_owned();
    let client = http_client(refresher(login(&idp, &password)));

    user_me_succeeds(&client, &api).await;
    idp.revoke_access_tokens();
    user_me_succeeds(&client, &api).await;
    idp.revoke_sessions();
    user_me_succeeds(&client, &api).await;

    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (2, 1));
    assert_eq!(api.stats().unauthorized, 2, "one per revocation");
}

// A wrong password is a terminal error after one call: the layer does not hammer the server.
#[tokio::test]
async fn a_wrong_password_is_one_call_and_a_terminal_error() {
    let (idp, api) = servers().await;
    let client = http_client(refresher(login(&idp, "wrong")));

    for _ in 0..3 {
        let error = status(&client, api.url("/user/me")).await.unwrap_err();
        let refresh = tower_auth_refresh::refresh_error(&*error).expect("a refresh error");
        assert_eq!(refresh.kind(), RefreshErrorKind::Refresher);
    }
    assert_eq!(idp.stats().requests, 1);
    assert_eq!(api.stats().requests, 0);
}
