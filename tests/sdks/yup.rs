//! A refresher built from yup-oauth2 (12.x): its `Authenticator` does the refresh-token
//! exchange with the token endpoint of an `ApplicationSecret`, here the loopback identity
//! provider; the layer decides when, and asks for a forced refresh after a rejection.
//!
//! yup-oauth2 logs in only through flows that need a person (a browser, a device code) or
//! Google's own endpoints (service accounts, authorized users: `https://accounts.google.com`
//! is fixed). So the session comes from an earlier login, as an application that stores
//! yup's tokens would have it; the delegate refuses to ask a person, so that a refused
//! refresh is an error rather than a prompt on the terminal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tower::{Service, service_fn};
use tower_auth_refresh::test_util::IdentityProvider;
use tower_auth_refresh::{BoxError, RefreshReason, RefreshRequest, TokenSet};
use yup_oauth2::authenticator_delegate::InstalledFlowDelegate;
use yup_oauth2::storage::{TokenInfo, TokenStorage, TokenStorageError};
use yup_oauth2::{ApplicationSecret, InstalledFlowAuthenticator, InstalledFlowReturnMethod};

use super::{http_client, servers, status, user_me_succeeds};

const SCOPES: &[&str] = &["profile"];

/// The recipe: yup-oauth2's cached token for a first request, a refresh it is made to do for
/// every other reason (the layer's windows decide when, not yup's one minute).
fn refresher<C>(
    authenticator: yup_oauth2::authenticator::Authenticator<C>,
) -> impl Service<RefreshRequest, Response = TokenSet, Error = BoxError, Future: Send> + Send + 'static
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    service_fn(move |request: RefreshRequest| {
        let authenticator = authenticator.clone();
        async move {
            let token = match request.reason() {
                RefreshReason::NoToken => authenticator.token(SCOPES).await?,
                _ => authenticator.force_refreshed_token(SCOPES).await?,
            };
            let access = token.token().ok_or("yup-oauth2 gave no access token")?;
            let mut tokens = TokenSet::new(access);
            if let Some(at) = token.expiration_time() {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                let left = u64::try_from(at.unix_timestamp())
                    .unwrap_or(0)
                    .saturating_sub(now);
                tokens = tokens.with_expires_in(Duration::from_secs(left));
            }
            Ok(tokens)
        }
    })
}

/// yup's token store, here in memory, with the session an earlier login left.
struct Stored(Mutex<Option<TokenInfo>>);

#[async_trait::async_trait]
impl TokenStorage for Stored {
    async fn set(&self, _: &[&str], token: TokenInfo) -> Result<(), TokenStorageError> {
        *self.0.lock().unwrap() = Some(token);
        Ok(())
    }

    async fn get(&self, _: &[&str]) -> Option<TokenInfo> {
        self.0.lock().unwrap().clone()
    }
}

/// Never asks a person: a server has nobody to ask.
struct Unattended;

impl InstalledFlowDelegate for Unattended {
    fn present_user_url<'a>(
        &'a self,
        _: &'a str,
        _: bool,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + 'a>> {
        Box::pin(async { Err("no one to log in: the stored session is gone".to_owned()) })
    }
}

/// A session as an earlier login left it: a refresh token, and an access token long expired.
async fn earlier_session(idp: &IdentityProvider) -> TokenInfo {
    let mut login = idp.refresher_builder().build_http().unwrap();
    let tokens = tower::ServiceExt::ready(&mut login)
        .await
        .unwrap()
        .call(RefreshRequest::new(RefreshReason::NoToken, None))
        .await
        .unwrap();
    TokenInfo {
        access_token: Some("expired".to_owned()),
        refresh_token: Some(tokens.refresh_token().unwrap().secret().to_owned()),
        expires_at: Some(time::OffsetDateTime::now_utc() - time::Duration::hours(1)),
        id_token: None,
    }
}

async fn authenticator(
    idp: &IdentityProvider,
) -> yup_oauth2::authenticator::Authenticator<
    yup_oauth2::hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
> {
    let config = idp.config();
    let secret = ApplicationSecret {
        client_id: config.client_id().to_owned(),
        client_secret: config.client_secret().to_owned(),
        token_uri: idp.token_url(),
        auth_uri: format!("http://{}/auth", idp.addr()),
        ..ApplicationSecret::default()
    };
    let session = earlier_session(idp).await;
    InstalledFlowAuthenticator::builder(secret, InstalledFlowReturnMethod::Interactive)
        .flow_delegate(Box::new(Unattended))
        .with_storage(Box::new(Stored(Mutex::new(Some(session)))))
        .build()
        .await
        .unwrap()
}

// The stored session's expired token is refreshed by yup-oauth2 once; after the server revokes
// the new one, the layer makes yup refresh again, once; every request succeeds.
#[tokio::test]
async fn yup_oauth2_refreshes_when_the_layer_says() {
    let (idp, api) = servers().await;
    let client = http_client(refresher(authenticator(&idp).await));

    user_me_succeeds(&client, &api).await;
    idp.revoke_access_tokens();
    user_me_succeeds(&client, &api).await;

    let stats = idp.stats();
    assert_eq!(
        (stats.password_grants, stats.refresh_grants),
        (1, 2),
        "the earlier login, then two refreshes"
    );
    assert_eq!(api.stats().unauthorized, 1);
}

// The session ended at the server: yup's refresh is refused, its fallback asks the delegate,
// which refuses; the caller gets the error, and no prompt waits for a person.
#[tokio::test]
async fn an_ended_session_is_an_error_not_a_prompt() {
    let (idp, api) = servers().await;
    let client = http_client(refresher(authenticator(&idp).await));
    idp.revoke_sessions();

    let error = status(&client, api.url("/user/me")).await.unwrap_err();
    assert!(
        tower_auth_refresh::refresh_error(&*error).is_some(),
        "{error}"
    );
    assert_eq!(api.stats().requests, 0);
}
