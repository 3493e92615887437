//! A stampede: 10,000 concurrent requests find no token, or an expired one, while the
//! refresher takes 20 ms. The refresher is called exactly once and every request is sent
//! with the new token, once. Counts only: how long it takes is measured in
//! `benches/refresh.rs`.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::watch;
use tower::{Layer, service_fn};
use tower_auth_refresh::{AuthLayer, RefreshReason, RefreshRequest, TokenSet};

type Body = Full<Bytes>;

const REQUESTS: usize = 10_000;
const REFRESH_TIME: Duration = Duration::from_millis(20);
const NEW_TOKEN: &str = "token-1";

/// What the refresher and the API saw.
#[derive(Default)]
struct Seen {
    /// Why the refresher was called, and with which access token, once per call.
    refreshes: Mutex<Vec<(RefreshReason, Option<String>)>>,
    /// Requests polled once, and of those, the ones that had to wait.
    arrived: AtomicUsize,
    waited: AtomicUsize,
    /// Requests that reached the API, and of those, the ones with the new token.
    sent: AtomicUsize,
    sent_with_new_token: AtomicUsize,
}

/// Sends `REQUESTS` requests at once, each in its own task, through one layer whose cache
/// holds `initial` (or nothing), and returns what happened.
async fn stampede(initial: Option<TokenSet>) -> (Arc<Seen>, Vec<StatusCode>, u64) {
    let seen = Arc::new(Seen::default());
    // The refresher holds its answer until every request has been polled once, so all of
    // them meet the refresh in flight however slowly the tasks are scheduled; then it takes
    // its 20 ms.
    let (open, gate) = watch::channel(false);
    let refresher = service_fn({
        let seen = Arc::clone(&seen);
        move |request: RefreshRequest| {
            let current = request
                .current()
                .map(|tokens| tokens.access_token().secret().to_owned());
            seen.refreshes
                .lock()
                .unwrap()
                .push((request.reason(), current));
            let mut gate = gate.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                tokio::time::sleep(REFRESH_TIME).await;
                Ok::<_, Infallible>(
                    TokenSet::new(NEW_TOKEN).with_expires_in(Duration::from_secs(900)),
                )
            }
        }
    });
    let api = service_fn({
        let seen = Arc::clone(&seen);
        move |request: Request<Body>| {
            seen.sent.fetch_add(1, Ordering::Relaxed);
            let authorized = request
                .headers()
                .get(AUTHORIZATION)
                .is_some_and(|value| value == format!("Bearer {NEW_TOKEN}").as_str());
            let mut response = Response::new(Body::default());
            if authorized {
                seen.sent_with_new_token.fetch_add(1, Ordering::Relaxed);
            } else {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            std::future::ready(Ok::<_, Infallible>(response))
        }
    });

    let layer = AuthLayer::new(refresher);
    let handle = layer.handle();
    if let Some(tokens) = initial {
        handle.set_tokens(tokens).await.unwrap();
    }
    let client = layer.layer(api);

    let tasks: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let (client, seen, open) = (client.clone(), Arc::clone(&seen), open.clone());
            let request = Request::get("http://127.0.0.1/user/me")
                .body(Body::default())
                .unwrap();
            tokio::spawn(async move {
                let mut response = std::pin::pin!(client.oneshot(request));
                let mut first_poll = true;
                poll_fn(|cx| {
                    let poll = response.as_mut().poll(cx);
                    if std::mem::take(&mut first_poll) {
                        if poll.is_pending() {
                            seen.waited.fetch_add(1, Ordering::Relaxed);
                        }
                        if seen.arrived.fetch_add(1, Ordering::AcqRel) + 1 == REQUESTS {
                            open.send_replace(true);
                        }
                    }
                    poll
                })
                .await
            })
        })
        .collect();

    let mut statuses = Vec::with_capacity(REQUESTS);
    for task in tasks {
        statuses.push(task.await.unwrap().unwrap().status());
    }
    let generation = handle.state().unwrap().generation();
    (seen, statuses, generation)
}

fn assert_one_refresh_for_all(
    seen: &Seen,
    statuses: &[StatusCode],
    expected: (RefreshReason, Option<&str>),
) {
    let refreshes = seen.refreshes.lock().unwrap();
    let refreshes: Vec<_> = refreshes
        .iter()
        .map(|(reason, current)| (*reason, current.as_deref()))
        .collect();
    assert_eq!(
        refreshes,
        [expected],
        "the refresher is called exactly once"
    );
    assert_eq!(seen.arrived.load(Ordering::Relaxed), REQUESTS);
    assert_eq!(
        seen.waited.load(Ordering::Relaxed),
        REQUESTS,
        "every request waits for the one refresh"
    );
    assert_eq!(statuses.len(), REQUESTS);
    assert!(
        statuses.iter().all(|status| *status == StatusCode::OK),
        "{} requests failed",
        statuses.iter().filter(|s| **s != StatusCode::OK).count()
    );
    assert_eq!(seen.sent.load(Ordering::Relaxed), REQUESTS, "no retries");
    assert_eq!(
        seen.sent_with_new_token.load(Ordering::Relaxed),
        REQUESTS,
        "every request carries the new token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_without_a_token_cause_one_login() {
    let (seen, statuses, generation) = stampede(None).await;
    assert_one_refresh_for_all(&seen, &statuses, (RefreshReason::NoToken, None));
    assert_eq!(generation, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_at_an_expired_token_cause_one_refresh() {
    let expired = TokenSet::new("token-0")
        .with_refresh_token("refresh-0")
        .with_expires_in(Duration::ZERO);
    let (seen, statuses, generation) = stampede(Some(expired)).await;
    assert_one_refresh_for_all(&seen, &statuses, (RefreshReason::Expired, Some("token-0")));
    assert_eq!(generation, 2);
}
