//! No secret in any log line, `Debug` or `Display`: a whole login / refresh / 401 / failure
//! cycle runs with a TRACE subscriber capturing everything, and every secret it used is looked
//! for in that output and in the `Debug` of every public type.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, ServiceExt, service_fn};
use tower_auth_refresh::oauth2::OAuth2Refresher;
use tower_auth_refresh::test_util::{Api, Fault, IdentityProvider, ProviderConfig};
use tower_auth_refresh::{AccessToken, AuthLayer, Origin, RefreshReason, RefreshRequest, TokenSet};

#[path = "support/captured_log.rs"]
mod captured_log;
use captured_log::Captured;

const PASSWORD: &str = "pw-S3cr3t&=+ é-1234";
const CLIENT_SECRET: &str = "cs-9f8e7d6c5b4a";

#[tokio::test]
async fn no_secret_in_logs_debug_or_display() {
    let (log, _guard) = Captured::trace();

    let idp = IdentityProvider::start(
        ProviderConfig::default()
            .user("reader", PASSWORD)
            .client("client", CLIENT_SECRET),
    )
    .await
    .unwrap();
    let api = Api::start(&idp).await.unwrap();

    // Every token the token endpoint hands out is recorded, to be looked for later.
    let issued = Arc::new(Mutex::new(Vec::<String>::new()));
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let recording = {
        let (http, issued) = (http.clone(), issued.clone());
        service_fn(move |request: Request<Full<Bytes>>| {
            let (http, issued) = (http.clone(), issued.clone());
            async move {
                let response = http.oneshot(request).await?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await?.to_bytes();
                if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                    for key in ["access_token", "refresh_token"] {
                        if let Some(token) = json.get(key).and_then(|t| t.as_str()) {
                            issued.lock().unwrap().push(token.to_owned());
                        }
                    }
                }
                Ok::<_, tower::BoxError>(Response::from_parts(parts, Full::new(body)))
            }
        })
    };
    let builder = idp.refresher_builder();
    let builder_debug = format!("{builder:?}");
    let refresher = builder.build(recording).unwrap();
    let refresher_debug = format!("{refresher:?}");
    let layer = AuthLayer::new(refresher).allow_origin(Origin::parse(&api.origin()).unwrap());
    let handle = layer.handle();
    let service = layer.layer(http.clone());
    let get = || {
        Request::get(api.url("/user/me"))
            .body(Full::default())
            .unwrap()
    };

    // Login, a 401 and its refresh, a forced refresh, a failed refresh, a wrong password.
    assert_eq!(
        service.clone().oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    idp.revoke_access_tokens();
    assert_eq!(
        service.clone().oneshot(get()).await.unwrap().status(),
        StatusCode::OK
    );
    let state = handle.refresh().await.unwrap();
    idp.push_fault(Fault::service_unavailable_html());
    let transient = handle.refresh().await.unwrap_err();
    let wrong = OAuth2Refresher::builder(idp.token_url(), "client")
        .client_secret(CLIENT_SECRET)
        .password("reader", "wrong-password-xyz")
        .build_http()
        .unwrap();
    let rejected = wrong.login().await.unwrap_err();
    let refused_handle = AuthLayer::new(wrong).handle();
    let refused = refused_handle.token().await.unwrap_err();

    let issued = issued.lock().unwrap().clone();
    assert!(issued.len() >= 6, "{} tokens issued", issued.len());
    let last = issued.last().unwrap().clone();
    let tokens = TokenSet::new(last.clone()).with_refresh_token(last.clone());
    let request = RefreshRequest::new(RefreshReason::Rejected, Some(tokens.clone()));
    let mut shown = vec![
        builder_debug,
        refresher_debug,
        format!("{handle:?}"),
        format!("{state:?}"),
        format!("{transient} {transient:?}"),
        format!("{rejected} {rejected:?}"),
        format!("{refused} {refused:?}"),
        format!("{tokens:?}"),
        format!("{request:?}"),
        format!("{:?}", AccessToken::new(last.clone())),
        format!("{service:?}"),
        format!("{idp:?} {:?}", idp.config()),
        format!("{api:?}"),
    ];
    shown.push(log.text());
    let everything = shown.join("\n");
    assert!(everything.contains("token refresh"), "the log was captured");

    let mut secrets = vec![
        PASSWORD.to_owned(),
        CLIENT_SECRET.to_owned(),
        "wrong-password-xyz".into(),
    ];
    secrets.extend(issued);
    for secret in &secrets {
        // Also the form-encoded spellings of the password and secret.
        let encoded = serde_urlencoded::to_string([("x", secret)]).unwrap();
        for needle in [secret.as_str(), &encoded[2..]] {
            assert!(
                !everything.contains(needle),
                "a secret ({} chars) appears in the output",
                needle.len()
            );
        }
    }
}

/// The capture sees an event whose line another thread, one without a subscriber, reached
/// first. `tracing` decides once per line, for the whole process, whether anyone listens; a
/// capture that the decision missed would search a log with the events left out.
#[test]
fn the_capture_sees_a_line_another_thread_reached_first() {
    fn line() {
        tracing::debug!("a line reached on two threads");
    }
    let (log, _guard) = Captured::trace();
    std::thread::spawn(line).join().unwrap();
    line();
    assert!(
        log.text().contains("a line reached on two threads"),
        "the capture missed the event: {:?}",
        log.text()
    );
}
