//! The keyed layer: a session per key, each with its own token, refreshes and handle, bounded
//! in memory, read back from a store after an eviction. Here with refreshers that are closures
//! and an API that checks whose token each request carries; `tests/keyed_provider.rs` runs the
//! same against the loopback identity provider, and `tests/redis.rs` a fleet of processes.
#![cfg(feature = "keyed")]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_auth_refresh::keyed::{KeyedAuthLayer, KeyedAuthService, MissingSessionKey, RequestHead};
use tower_auth_refresh::store::KeyedFileStore;
use tower_auth_refresh::{RefreshReason, RefreshRequest, RevokeRequest, TokenSet};

#[path = "support/strict_service.rs"]
mod strict_service;
use strict_service::{Strict, served_by};

type Body = Full<Bytes>;

/// The application's user id: the session key, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct User(u32);

impl std::fmt::Display for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user-{}", self.0)
    }
}

/// What the refreshers and the API saw.
#[derive(Default)]
struct Seen {
    /// Each refresher call: the user, why, and the access token it replaced.
    refreshes: Mutex<Vec<(u32, RefreshReason, Option<String>)>>,
    /// Requests the API answered, and those whose token was another user's.
    sent: AtomicU64,
    cross_user: AtomicU64,
    /// Tokens the API rejects.
    revoked: Mutex<HashSet<String>>,
    /// Revocations asked for, by user.
    revocations: Mutex<Vec<(u32, String)>>,
}

impl Seen {
    fn calls(&self, user: u32) -> Vec<RefreshReason> {
        let refreshes = self.refreshes.lock().unwrap();
        refreshes
            .iter()
            .filter(|(of, ..)| *of == user)
            .map(|(_, reason, _)| *reason)
            .collect()
    }

    fn total_calls(&self) -> usize {
        self.refreshes.lock().unwrap().len()
    }
}

/// The token of `user`'s `n`th refresh: it names its user, as a real token's subject does.
fn token_of(user: u32, n: usize) -> String {
    format!("u{user}-t{n}")
}

/// A builder whose refresher for `user` returns that user's next token after `delay`.
fn layer_of(
    seen: &Arc<Seen>,
    delay: Duration,
) -> tower_auth_refresh::keyed::KeyedAuthLayerBuilder<User> {
    let seen = Arc::clone(seen);
    KeyedAuthLayer::builder(move |user: &User| {
        let (seen, user) = (Arc::clone(&seen), user.0);
        service_fn(move |request: RefreshRequest| {
            let n = {
                let mut refreshes = seen.refreshes.lock().unwrap();
                let current = request
                    .current()
                    .map(|tokens| tokens.access_token().secret().to_owned());
                refreshes.push((user, request.reason(), current));
                refreshes.iter().filter(|(of, ..)| *of == user).count()
            };
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(
                    TokenSet::new(token_of(user, n))
                        .with_refresh_token(format!("refresh-{user}-{n}"))
                        .with_expires_in(Duration::from_secs(900)),
                )
            }
        })
    })
}

/// An API that answers 401 to revoked tokens and checks that each request's token belongs to
/// the user its `x-user` header names.
fn api(
    seen: &Arc<Seen>,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future = impl Send>
+ Clone
+ Send
+ 'static {
    let seen = Arc::clone(seen);
    service_fn(move |request: Request<Body>| {
        seen.sent.fetch_add(1, Ordering::Relaxed);
        let token = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::to_owned);
        let user = request
            .headers()
            .get("x-user")
            .map(|value| value.to_str().unwrap().to_owned());
        if let (Some(token), Some(user)) = (&token, &user)
            && !token.starts_with(&format!("u{user}-"))
        {
            seen.cross_user.fetch_add(1, Ordering::Relaxed);
        }
        let status = match &token {
            Some(token) if !seen.revoked.lock().unwrap().contains(token) => StatusCode::OK,
            _ => StatusCode::UNAUTHORIZED,
        };
        let mut response = Response::new(Body::default());
        *response.status_mut() = status;
        if let Some(token) = token {
            response
                .headers_mut()
                .insert("x-token", token.parse().unwrap());
        }
        std::future::ready(Ok(response))
    })
}

/// A request for `user`'s session: the key as an extension, and a header the API checks.
fn request_for(user: u32) -> Request<Body> {
    let mut request = Request::get("http://127.0.0.1/user/me")
        .header("x-user", user.to_string())
        .body(Body::default())
        .unwrap();
    request.extensions_mut().insert(User(user));
    request
}

async fn send<S>(
    client: &S,
    request: Request<Body>,
) -> Result<Response<Body>, tower_auth_refresh::BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = tower_auth_refresh::BoxError>
        + Clone,
{
    client.clone().oneshot(request).await
}

/// The token the API saw with the request `response` answers.
fn token_sent(response: &Response<Body>) -> &str {
    response.headers()["x-token"].to_str().unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tower-auth-refresh-keyed-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_carries_its_own_users_token() {
    let seen = Arc::new(Seen::default());
    let client = layer_of(&seen, Duration::from_millis(5))
        .build()
        .layer(api(&seen));
    let tasks: Vec<_> = (0..50u32)
        .flat_map(|user| (0..20).map(move |_| user))
        .map(|user| {
            let client = client.clone();
            tokio::spawn(async move {
                let response = send(&client, request_for(user)).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(seen.sent.load(Ordering::Relaxed), 1000);
    assert_eq!(seen.cross_user.load(Ordering::Relaxed), 0);
    for user in 0..50 {
        assert_eq!(seen.calls(user), [RefreshReason::NoToken], "user {user}");
    }
}

#[tokio::test]
async fn a_request_without_a_key_is_not_sent() {
    let seen = Arc::new(Seen::default());
    let client = layer_of(&seen, Duration::ZERO).build().layer(api(&seen));
    let request = Request::get("http://127.0.0.1/user/me")
        .body(Body::default())
        .unwrap();
    let error = send(&client, request).await.unwrap_err();
    let missing = error.downcast_ref::<MissingSessionKey>().unwrap();
    assert!(
        missing.key_type().ends_with("User"),
        "{}",
        missing.key_type()
    );
    assert!(error.to_string().contains("was not sent"), "{error}");
    assert_eq!(seen.sent.load(Ordering::Relaxed), 0);
    assert_eq!(seen.total_calls(), 0);
}

#[tokio::test]
async fn requests_the_layer_sends_without_a_token_need_no_key() {
    let seen = Arc::new(Seen::default());
    let client = layer_of(&seen, Duration::ZERO).build().layer(api(&seen));
    // Plain http to another machine never gets a token, and its own Authorization is kept.
    let foreign = Request::get("http://api.example.com/")
        .body(Body::default())
        .unwrap();
    assert_eq!(
        send(&client, foreign).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let own = Request::get("http://127.0.0.1/")
        .header(AUTHORIZATION, "Bearer u9-own")
        .body(Body::default())
        .unwrap();
    let response = send(&client, own).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(seen.sent.load(Ordering::Relaxed), 2);
    assert_eq!(seen.total_calls(), 0);
}

#[tokio::test]
async fn a_rejection_refreshes_only_the_rejected_users_session() {
    let seen = Arc::new(Seen::default());
    let client = layer_of(&seen, Duration::ZERO).build().layer(api(&seen));
    for user in [1, 2] {
        send(&client, request_for(user)).await.unwrap();
    }
    seen.revoked.lock().unwrap().insert(token_of(1, 1));
    let response = send(&client, request_for(1)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = send(&client, request_for(2)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        seen.calls(1),
        [RefreshReason::NoToken, RefreshReason::Rejected]
    );
    assert_eq!(seen.calls(2), [RefreshReason::NoToken]);
    assert_eq!(seen.cross_user.load(Ordering::Relaxed), 0);
}

// 10,000 requests at once over 1,000 users none of whom has a token: one login each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stampede_over_cold_users_calls_each_users_refresher_once() {
    let seen = Arc::new(Seen::default());
    let client = layer_of(&seen, Duration::from_millis(20))
        .build()
        .layer(api(&seen));
    let tasks: Vec<_> = (0..10_000u32)
        .map(|n| {
            let client = client.clone();
            tokio::spawn(async move {
                let response = send(&client, request_for(n % 1000)).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(seen.total_calls(), 1000);
    for user in (0..1000).step_by(97) {
        assert_eq!(seen.calls(user), [RefreshReason::NoToken]);
    }
    assert_eq!(seen.sent.load(Ordering::Relaxed), 10_000);
    assert_eq!(seen.cross_user.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_handle_acts_on_one_users_session() {
    let seen = Arc::new(Seen::default());
    let revoker_seen = Arc::clone(&seen);
    let layer = layer_of(&seen, Duration::ZERO)
        .revoker(move |user: &User| {
            let (seen, user) = (Arc::clone(&revoker_seen), user.0);
            service_fn(move |request: RevokeRequest| {
                let token = request.tokens().access_token().secret().to_owned();
                seen.revocations.lock().unwrap().push((user, token));
                async { Ok::<_, Infallible>(()) }
            })
        })
        .build();
    let handle = layer.handle();
    let client = layer.layer(api(&seen));

    // Tokens from an interactive login elsewhere: used as they are.
    handle
        .set_tokens(
            &User(1),
            TokenSet::new("u1-linked").with_expires_in(Duration::from_secs(900)),
        )
        .await
        .unwrap();
    let response = send(&client, request_for(1)).await.unwrap();
    assert_eq!(token_sent(&response), "u1-linked");
    assert!(seen.calls(1).is_empty());
    assert!(handle.state(&User(2)).is_none());

    // Eagerly, for another user only.
    let state = handle.token(&User(2)).await.unwrap();
    assert_eq!(state.generation(), 1);
    assert_eq!(
        handle.access_token(&User(2)).unwrap().secret(),
        token_of(2, 1)
    );
    assert_eq!(seen.calls(2), [RefreshReason::NoToken]);
    handle.refresh(&User(2)).await.unwrap();
    assert_eq!(
        seen.calls(2),
        [RefreshReason::NoToken, RefreshReason::Forced]
    );

    // Logging user 2 out revokes user 2's tokens, and no one else's.
    handle.logout(&User(2)).await.unwrap();
    assert_eq!(*seen.revocations.lock().unwrap(), [(2, token_of(2, 2))]);
    assert!(handle.state(&User(2)).is_none());
    assert_eq!(handle.access_token(&User(1)).unwrap().secret(), "u1-linked");

    // Cleared: user 1's next request logs in.
    handle.clear(&User(1)).await.unwrap();
    send(&client, request_for(1)).await.unwrap();
    assert_eq!(seen.calls(1), [RefreshReason::NoToken]);
    assert_eq!(seen.cross_user.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_key_may_come_from_a_closure_or_a_default() {
    let seen = Arc::new(Seen::default());
    let layer = layer_of(&seen, Duration::ZERO)
        .build()
        .key_from(|head: &RequestHead<'_>| {
            let user = head.headers().get("x-user")?.to_str().ok()?;
            Some(User(user.parse().ok()?))
        });
    let client = layer.clone().layer(api(&seen));
    let request = Request::get("http://127.0.0.1/")
        .header("x-user", "5")
        .body(Body::default())
        .unwrap();
    assert_eq!(
        token_sent(&send(&client, request).await.unwrap()),
        token_of(5, 1)
    );
    let unnamed = Request::get("http://127.0.0.1/")
        .body(Body::default())
        .unwrap();
    assert!(
        send(&client, unnamed)
            .await
            .unwrap_err()
            .is::<MissingSessionKey>()
    );

    // A default only for the value it was given to.
    let defaulted = layer.clone().default_key(User(0)).layer(api(&seen));
    let unnamed = Request::get("http://127.0.0.1/")
        .body(Body::default())
        .unwrap();
    assert_eq!(
        token_sent(&send(&defaulted, unnamed).await.unwrap()),
        token_of(0, 1)
    );
    let unnamed = Request::get("http://127.0.0.1/")
        .body(Body::default())
        .unwrap();
    assert!(
        send(&client, unnamed)
            .await
            .unwrap_err()
            .is::<MissingSessionKey>()
    );
}

// 1,000 users, at most 100 sessions in memory: every user logs in once; after the evictions,
// a second round of requests reads each session back from the store, with no login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evicted_sessions_are_read_back_from_the_store_without_a_login() {
    let seen = Arc::new(Seen::default());
    let dir = temp_dir("evicted");
    let layer = layer_of(&seen, Duration::ZERO)
        .store(KeyedFileStore::new(&dir))
        .max_sessions(100)
        .build();
    let handle = layer.handle();
    let client = layer.layer(api(&seen));
    let mut most = 0;
    for round in 0..2 {
        for user in 0..1000 {
            let response = send(&client, request_for(user)).await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "round {round}, user {user}"
            );
            // Each user's own first token, whether just made or read back.
            assert_eq!(token_sent(&response), token_of(user, 1));
            if user % 50 == 0 {
                most = most.max(handle.live_sessions());
            }
        }
    }
    assert_eq!(
        seen.total_calls(),
        1000,
        "one login per user, none after an eviction"
    );
    assert!(most <= 110, "{most} sessions in memory, bound 100");
    assert!(handle.live_sessions() <= 100);
    assert_eq!(
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|ext| ext == "json")
            })
            .count(),
        1000
    );
    assert_eq!(seen.cross_user.load(Ordering::Relaxed), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_leaves_memory_and_comes_back_from_the_store() {
    let seen = Arc::new(Seen::default());
    let dir = temp_dir("idle");
    let layer = layer_of(&seen, Duration::ZERO)
        .store(KeyedFileStore::new(&dir))
        .idle_timeout(Duration::from_millis(200))
        .build();
    let handle = layer.handle();
    let client = layer.layer(api(&seen));
    send(&client, request_for(3)).await.unwrap();
    assert_eq!(handle.live_sessions(), 1);
    // Gone between the timeout and about 1.4 times it (a sweep every quarter, a use marked to
    // an eighth).
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(handle.live_sessions(), 0);
    assert!(handle.state(&User(3)).is_none());
    let response = send(&client, request_for(3)).await.unwrap();
    assert_eq!(token_sent(&response), token_of(3, 1));
    assert_eq!(seen.calls(3), [RefreshReason::NoToken]);
    std::fs::remove_dir_all(&dir).unwrap();
}

// Never before the timeout: a use that came too soon after the last one to be marked (within
// an eighth of the timeout) still counts. Five users, each used twice 15 ms apart at
// staggered times, are each checked while their last use is younger than the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_stays_until_its_timeout() {
    let idle = Duration::from_millis(200);
    let seen = Arc::new(Seen::default());
    let layer = layer_of(&seen, Duration::ZERO).idle_timeout(idle).build();
    let handle = layer.handle();
    let client = layer.layer(api(&seen));
    let mut last_uses = Vec::new();
    for user in 0..5 {
        send(&client, request_for(user)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
        send(&client, request_for(user)).await.unwrap();
        last_uses.push((user, tokio::time::Instant::now()));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut checked = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(5)).await;
        for (user, used) in &last_uses {
            // Read before the clock, so a drop seen here happened before `elapsed`.
            let live = handle.state(&User(*user)).is_some();
            if used.elapsed() < idle {
                assert!(
                    live,
                    "user {user} dropped {:?} after its last use",
                    used.elapsed()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "nothing checked: the machine was too slow");
}

// What the docs say of a bound without a store: an evicted session is gone, and its next
// request logs in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_store_an_evicted_session_logs_in_again() {
    let seen = Arc::new(Seen::default());
    let client = layer_of(&seen, Duration::ZERO)
        .max_sessions(10)
        .build()
        .layer(api(&seen));
    for _ in 0..2 {
        for user in 0..200 {
            send(&client, request_for(user)).await.unwrap();
        }
    }
    assert!(seen.total_calls() > 200, "{} calls", seen.total_calls());
    let reasons: HashMap<_, usize> =
        seen.refreshes
            .lock()
            .unwrap()
            .iter()
            .fold(HashMap::new(), |mut counts, (_, reason, _)| {
                *counts.entry(*reason).or_default() += 1;
                counts
            });
    assert_eq!(
        reasons.keys().collect::<Vec<_>>(),
        [&RefreshReason::NoToken]
    );
    assert_eq!(seen.cross_user.load(Ordering::Relaxed), 0);
}

#[test]
fn a_keyed_service_is_a_tower_service_of_the_usual_shape() {
    fn assert_service<S>(_: &S)
    where
        S: Service<Request<Body>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
    }
    let seen = Arc::new(Seen::default());
    let client: KeyedAuthService<_, User> =
        layer_of(&seen, Duration::ZERO).build().layer(api(&seen));
    assert_service(&client);
}

// The bound meets a session whose login is running: it is in use, so it is not evicted (no
// store here to save it); the next request for that user joins the same login. One login, and
// one session over the bound while it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_not_evicted_while_its_refresh_runs() {
    let seen = Arc::new(Seen::default());
    let slow = Arc::clone(&seen);
    let layer = KeyedAuthLayer::builder(move |user: &User| {
        let (seen, user) = (Arc::clone(&slow), user.0);
        service_fn(move |request: RefreshRequest| {
            seen.refreshes
                .lock()
                .unwrap()
                .push((user, request.reason(), None));
            async move {
                if user == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Ok::<_, Infallible>(
                    TokenSet::new(token_of(user, 1)).with_expires_in(Duration::from_secs(900)),
                )
            }
        })
    })
    .max_sessions(5)
    .build();
    let handle = layer.handle();
    let client = layer.layer(api(&seen));
    let first = tokio::spawn({
        let client = client.clone();
        async move { send(&client, request_for(0)).await.unwrap() }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    for user in 1..50 {
        send(&client, request_for(user)).await.unwrap();
    }
    assert!(handle.live_sessions() <= 6, "{}", handle.live_sessions());
    assert!(handle.state(&User(1)).is_none(), "user 1 was evicted");
    assert!(handle.state(&User(49)).is_some());
    let second = send(&client, request_for(0)).await.unwrap();
    let first = first.await.unwrap();
    assert_eq!(token_sent(&first), token_of(0, 1));
    assert_eq!(token_sent(&second), token_of(0, 1));
    assert_eq!(seen.calls(0), [RefreshReason::NoToken]);
    assert!(handle.state(&User(0)).is_some());
}

// A request's response future holds no clone of the inner service, as with one session: 100
// requests for two users clone it not once; a user's retry goes through a clone of the one the
// service kept, polled ready first.
#[tokio::test]
async fn keyed_requests_clone_the_inner_service_only_to_retry() {
    let seen = Arc::new(Seen::default());
    let inner = Strict::rejecting([]);
    let (clones, rejected) = (Arc::clone(&inner.clones), Arc::clone(&inner.rejected));
    let mut client = layer_of(&seen, Duration::ZERO).build().layer(inner);
    for user in [1, 2] {
        let response = client.ready().await.unwrap();
        let response = response.call(request_for(user)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    let before = clones.load(Ordering::SeqCst);
    for n in 0..100 {
        let ready = client.ready().await.unwrap();
        let response = ready.call(request_for(1 + n % 2)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        before,
        "clones for 100 requests"
    );

    rejected
        .lock()
        .unwrap()
        .push(format!("Bearer {}", token_of(1, 1)));
    let ready = client.ready().await.unwrap();
    let response = ready.call(request_for(1)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        clones.load(Ordering::SeqCst),
        before + 1,
        "clones for one retry"
    );
    assert_eq!(
        seen.calls(1),
        [RefreshReason::NoToken, RefreshReason::Rejected]
    );
    assert_eq!(seen.calls(2), [RefreshReason::NoToken]);
}

// As for one session: a keyed retry goes through the inner service of the value that sent
// the request, and a value changed through `get_mut` sends its next retry through the change.
#[tokio::test]
async fn a_keyed_retry_goes_through_the_inner_service_of_the_value_that_sent_it() {
    let seen = Arc::new(Seen::default());
    let mut inner = Strict::rejecting([]);
    inner.name = "a".to_owned();
    let rejected = Arc::clone(&inner.rejected);
    let mut original = layer_of(&seen, Duration::ZERO).build().layer(inner);
    let mut clone = original.clone();
    clone.get_mut().name = "b".to_owned();
    // Who answered user 1, with which token.
    async fn send(service: &mut KeyedAuthService<Strict, User>) -> (String, String) {
        let ready = service.ready().await.unwrap();
        let response = ready.call(request_for(1)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let name = served_by(&response).to_owned();
        let token = response.into_body().collect().await.unwrap().to_bytes();
        (name, String::from_utf8(token.to_vec()).unwrap())
    }
    let reject = |n| {
        rejected
            .lock()
            .unwrap()
            .push(format!("Bearer {}", token_of(1, n)))
    };
    let answer = |name: &str, n| (name.to_owned(), format!("Bearer {}", token_of(1, n)));

    assert_eq!(send(&mut clone).await, answer("b", 1));
    assert_eq!(send(&mut original).await, answer("a", 1));
    reject(1);
    assert_eq!(send(&mut original).await, answer("a", 2));
    original.get_mut().name = "c".to_owned();
    reject(2);
    assert_eq!(send(&mut original).await, answer("c", 3));
    reject(3);
    assert_eq!(send(&mut clone).await, answer("b", 4));
}
