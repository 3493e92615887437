//! A progenitor-generated client (`generate_api!` over `openapi.json`) with the layer's
//! middleware as its `inner_type`: one-line hooks, one refresh after a revocation, a POST
//! retried with its body, and failed refreshes that reach the caller as errors, never as a
//! made-up 401.

use http::StatusCode;
use tower_auth_refresh::AuthLayer;
use tower_auth_refresh::test_util::{Fault, IdentityProvider, ProviderConfig};

use super::servers;

/// The generated client and the hooks an application writes for it.
// progenitor's `Error` is large; its hooks return it as they are declared to.
#[allow(clippy::result_large_err)]
mod mangadex {
    use tower_auth_refresh::reqwest::{AuthMiddleware, failed_refresh};

    progenitor::generate_api!(
        spec = "tests/sdks/openapi.json",
        inner_type = tower_auth_refresh::reqwest::AuthMiddleware,
        hooks = Expected,
    );

    impl ClientHooks<AuthMiddleware> for Client {
        // Log in or refresh before the request leaves: a failed refresh stops it here.
        async fn pre<E>(
            &self,
            _: &mut reqwest::Request,
            _: &OperationInfo,
        ) -> Result<(), Error<E>> {
            let token = self.inner().handle().token().await;
            token.map(drop).map_err(|e| Error::Custom(e.to_string()))
        }

        // The token, and one refresh and retry after a rejection.
        async fn exec(
            &self,
            request: reqwest::Request,
            _: &OperationInfo,
        ) -> reqwest::Result<reqwest::Response> {
            self.inner().execute(self.client(), request).await
        }

        // A refresh after a rejection that failed: an error, not the server's 401.
        async fn post<E>(
            &self,
            result: &reqwest::Result<reqwest::Response>,
            _: &OperationInfo,
        ) -> Result<(), Error<E>> {
            failed_refresh(result).map_or(Ok(()), |e| Err(Error::Custom(e.to_string())))
        }
    }
}

fn client(layer: &AuthLayer, base: &str) -> mangadex::Client {
    let reqwest = reqwest::Client::builder().no_proxy().build().unwrap();
    mangadex::Client::new_with_client(base, reqwest, layer.reqwest_middleware())
}

fn layer(idp: &IdentityProvider) -> AuthLayer {
    AuthLayer::new(idp.refresher_builder().build_http().unwrap())
}

#[tokio::test]
async fn a_revoked_token_costs_one_refresh_and_the_generated_call_succeeds() {
    let (idp, api) = servers().await;
    let client = client(&layer(&idp), &api.origin());

    let me = client.get_user_me().await.unwrap();
    assert_eq!(me.data.attributes.username, "reader");
    idp.revoke_access_tokens();
    let me = client.get_user_me().await.unwrap();
    assert_eq!(me.status(), StatusCode::OK);

    assert_eq!(api.stats().unauthorized, 1);
    let stats = idp.stats();
    assert_eq!((stats.password_grants, stats.refresh_grants), (1, 1));
}

#[tokio::test]
async fn a_rejected_post_is_retried_with_its_body() {
    let (idp, api) = servers().await;
    let client = client(&layer(&idp), &api.origin());
    client.get_user_me().await.unwrap();
    idp.revoke_access_tokens();

    let draft = mangadex::types::Draft {
        title: "Yotsuba&!".to_owned(),
    };
    let echoed = client.echo(&draft).await.unwrap().into_inner();
    assert_eq!(echoed.title, draft.title);
    let stats = api.stats();
    assert_eq!(stats.unauthorized, 1);
    assert_eq!(stats.echo_bodies, [r#"{"title":"Yotsuba&!"}"#]);
}

// Wrong credentials: the caller gets the refresher's error, and the API is never called
// (no request without a token, no 401 made up).
#[tokio::test]
async fn a_failed_login_is_an_error_and_nothing_is_sent() {
    let idp = IdentityProvider::start(ProviderConfig::default())
        .await
        .unwrap();
    let api = tower_auth_refresh::test_util::Api::start(&idp)
        .await
        .unwrap();
    let refresher = idp
        .refresher_builder()
        .password(idp.config().username(), "wrong password")
        .build_http()
        .unwrap();
    let client = client(&AuthLayer::new(refresher), &api.origin());

    let error = client.get_user_me().await.unwrap_err();
    let progenitor::progenitor_client::Error::Custom(message) = &error else {
        panic!("expected the refresh error, got {error:?}");
    };
    assert!(message.contains("Invalid user credentials"), "{message}");
    assert_eq!(api.stats().requests, 0);
}

// The server rejects the token, and the refresh it calls for fails: the caller gets that
// failure as an error, not the 401.
#[tokio::test]
async fn a_failed_refresh_after_a_rejection_is_an_error_not_the_401() {
    let (idp, api) = servers().await;
    let client = client(&layer(&idp), &api.origin());
    client.get_user_me().await.unwrap();

    idp.revoke_access_tokens();
    idp.set_fault(Some(Fault::json(
        StatusCode::UNAUTHORIZED,
        r#"{"error":"invalid_client","error_description":"Invalid client credentials"}"#,
    )));
    let error = client.get_user_me().await.unwrap_err();
    let progenitor::progenitor_client::Error::Custom(message) = &error else {
        panic!("expected the refresh error, got {error:?}");
    };
    assert!(message.contains("invalid_client"), "{message}");
    assert_eq!(api.stats().unauthorized, 1, "sent once, not retried");
}
