//! No configuration value can crash the process: every duration a builder method takes, from
//! zero to `Duration::MAX`, meets failures, successes, forced refreshes and token sets of any
//! lifetime without a panic or a hang.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use proptest::prelude::*;
use tower::{Layer, service_fn};
use tower_auth_refresh::{AuthLayer, RefreshRequest, TerminalError, TokenSet};

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(100 * 365 * 24 * 3600)),
        Just(Duration::from_secs(u64::MAX)),
        Just(Duration::MAX),
        any::<u64>().prop_map(Duration::from_nanos),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Fails transiently, then terminally, then succeeds, with tokens of the given lifetimes.
fn refresher(
    lifetime: Duration,
    refresh_lifetime: Duration,
) -> impl tower::Service<
    RefreshRequest,
    Response = TokenSet,
    Error = tower_auth_refresh::BoxError,
    Future = impl Future<Output = Result<TokenSet, tower_auth_refresh::BoxError>> + Send,
> + Send
+ 'static {
    let calls = Arc::new(AtomicUsize::new(0));
    service_fn(move |_: RefreshRequest| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            match n % 3 {
                0 => Err("transient".into()),
                1 => Err(TerminalError::new("terminal").into()),
                _ => Ok(TokenSet::new(format!("t{n}"))
                    .with_refresh_token("r")
                    .with_expires_in(lifetime)
                    .with_refresh_expires_in(refresh_lifetime)),
            }
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn extreme_durations_never_panic_or_hang(
        soft in duration(), hard in duration(), lifetime in duration(),
        timeout in duration(), exchange in duration(),
        backoff_min in duration(), backoff_max in duration(),
        token_lifetime in duration(), refresh_lifetime in duration(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let layer = AuthLayer::builder(refresher(token_lifetime, refresh_lifetime))
                .refresh_before(soft)
                .wait_before(hard)
                .default_lifetime(lifetime)
                .refresh_timeout(timeout)
                .exchange_timeout(exchange)
                .retry_backoff(backoff_min, backoff_max)
                .build()
                .refresh_before(hard)
                .wait_before(soft);
            let handle = layer.handle();
            let api = service_fn(|_: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            });
            let service = layer.layer(api);
            let run = async {
                for _ in 0..3 {
                    let request = Request::get("http://127.0.0.1/x").body(Full::default()).unwrap();
                    let _ = service.clone().oneshot(request).await;
                    let _ = handle.refresh().await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let tokens = TokenSet::new("set")
                    .with_expires_in(token_lifetime)
                    .with_refresh_expires_in(refresh_lifetime);
                let state = handle.set_tokens(tokens).await.unwrap();
                let _ = format!("{state:?} {:?} {:?}", state.expires_in(), handle);
                let _ = handle.token().await;
            };
            // Virtual time: a hang would run into this instead of stalling the test.
            let outcome = tokio::time::timeout(Duration::from_secs(24 * 3600), run).await;
            assert!(outcome.is_ok(), "hung");
        });
    }
}

// `RedisStore::lock_lifetime(Duration::MAX)` once panicked on its first lock attempt.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_redis_lock_of_any_lifetime_does_not_panic() {
    use tower_auth_refresh::store::{RedisStore, TokenStore};
    for lifetime in [Duration::ZERO, Duration::MAX] {
        let store = RedisStore::new("redis://127.0.0.1:1/", "durations:")
            .unwrap()
            .lock_lifetime(lifetime)
            .command_timeout(Duration::from_millis(200));
        assert!(store.lock().await.is_err(), "nothing listens on port 1");
    }
}
