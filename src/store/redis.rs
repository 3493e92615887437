use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{LockToken, StoreError, StoreErrorKind, StoreFuture, TokenStore, serde};
use crate::token::TokenSet;

/// A lock held longer than this is surely held by a dead process.
const LONGEST_LOCK: Duration = Duration::from_secs(24 * 3600);

/// Extends the lock only for its holder.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Releases the lock only for its holder.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Writes the token set only if the stored one still has the refresh token the refresh
/// started from (or there is none): a compare-and-swap keyed by the old refresh token.
const SAVE: &str = r"
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  -- A value that is not a token set counts as none, as `load` reads it.
  if ok and type(decoded) == 'table' and type(decoded.access_token) == 'string' then
    local stored = ''
    if type(decoded.refresh_token) == 'string' then
      stored = decoded.refresh_token
    end
    if stored ~= ARGV[2] then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
return 1";

/// Keeps the token set in Redis, shared by every process that uses the same key prefix: one
/// login and one refresh chain for a whole fleet.
///
/// - The token set is one JSON value under `<prefix>tokens`.
/// - The refresh lock is `<prefix>lock`, taken with `SET NX PX` and a random value, renewed
///   every third of its lifetime while its holder refreshes (a slow token endpoint does not
///   let a second process in), and released only by its owner (a Lua compare-and-delete). A
///   holder that dies frees it by expiry (the lock lifetime, default 10 s). Waiters poll every
///   50 ms, for at most the lock lifetime plus one second at a time.
/// - A save is a compare-and-swap keyed by the refresh token the refresh started from.
/// - Every command is bounded by a timeout (default 2 s): Redis unreachable is a typed
///   [`StoreError`] (`Unavailable` or `Timeout`), never a hang.
///
/// Use it through [`StoredRefresher`](super::StoredRefresher).
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
    tokens_key: String,
    lock_key: String,
    lock_lifetime: Duration,
    command_timeout: Duration,
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://127.0.0.1:6379/`), under keys starting with
    /// `prefix` (e.g. `"myapp:mangadex:"`). Connects lazily.
    pub fn new(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|error| StoreError::new(StoreErrorKind::Unavailable, Some(error.into())))?;
        Ok(Self {
            client,
            connection: Arc::new(Mutex::new(None)),
            tokens_key: format!("{prefix}tokens"),
            lock_key: format!("{prefix}lock"),
            lock_lifetime: Duration::from_secs(10),
            command_timeout: Duration::from_secs(2),
        })
    }

    /// How long the refresh lock lives if its holder never releases it (default 10 s, at most
    /// a day). Make it longer than a refresh takes.
    pub fn lock_lifetime(mut self, lifetime: Duration) -> Self {
        self.lock_lifetime = lifetime.clamp(Duration::from_millis(3), LONGEST_LOCK);
        self
    }

    /// The bound on each Redis command, connecting included (default 2 s).
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Runs `command` on the (re)connected connection, within the command timeout.
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, StoreError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let attempt = async {
            let mut slot = self.connection.lock().await;
            let connection = match &*slot {
                Some(connection) => connection.clone(),
                None => {
                    let connection = self.client.get_multiplexed_async_connection().await?;
                    *slot = Some(connection.clone());
                    connection
                }
            };
            drop(slot);
            command(connection).await
        };
        match tokio::time::timeout(self.command_timeout, attempt).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                // Reconnect next time.
                *self.connection.lock().await = None;
                Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    Some(error.into()),
                ))
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(StoreError::new(StoreErrorKind::Timeout, None))
            }
        }
    }
}

impl RedisStore {
    /// Keeps the lock held by `token` alive until aborted or lost.
    fn renew(&self, token: String) -> tokio::task::AbortHandle {
        let store = self.clone();
        let every = self.lock_lifetime / 3;
        let millis = u64::try_from(self.lock_lifetime.as_millis()).unwrap_or(u64::MAX);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (token, key) = (token.clone(), store.lock_key.clone());
                let renewed: Result<i64, _> = store
                    .run(|mut connection| async move {
                        redis::Script::new(RENEW)
                            .key(key)
                            .arg(token)
                            .arg(millis)
                            .invoke_async(&mut connection)
                            .await
                    })
                    .await;
                if !matches!(renewed, Ok(1)) {
                    tracing::warn!("the token store's refresh lock was lost while refreshing");
                    return;
                }
            }
        })
        .abort_handle()
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("tokens_key", &self.tokens_key)
            .field("lock_lifetime", &self.lock_lifetime)
            .finish_non_exhaustive()
    }
}

impl TokenStore for RedisStore {
    fn load(&self) -> StoreFuture<'_, Option<TokenSet>> {
        Box::pin(async move {
            let json: Option<Vec<u8>> = self
                .run(|mut connection| async move {
                    redis::cmd("GET")
                        .arg(&self.tokens_key)
                        .query_async(&mut connection)
                        .await
                })
                .await?;
            let tokens = json.as_deref().and_then(serde::decode);
            if json.is_some() && tokens.is_none() {
                tracing::warn!(key = %self.tokens_key, "the stored token set is corrupt; ignoring it");
            }
            Ok(tokens)
        })
    }

    fn save<'a>(
        &'a self,
        tokens: &'a TokenSet,
        replaced: Option<&'a TokenSet>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let json = zeroize::Zeroizing::new(serde::encode(tokens));
            let expected = serde::refresh_token_of(replaced);
            let written: i64 = self
                .run(|mut connection| async move {
                    redis::Script::new(SAVE)
                        .key(&self.tokens_key)
                        .arg(json.as_str())
                        .arg(expected)
                        .invoke_async(&mut connection)
                        .await
                })
                .await?;
            if written == 1 {
                Ok(())
            } else {
                Err(StoreError::new(StoreErrorKind::Conflict, None))
            }
        })
    }

    fn lock(&self) -> StoreFuture<'_, Option<LockToken>> {
        Box::pin(async move {
            let token = format!(
                "{:016x}{:016x}",
                RandomState::new().hash_one(1u8),
                RandomState::new().hash_one(2u8)
            );
            let give_up = crate::token::instant_after(
                Instant::now(),
                self.lock_lifetime.saturating_add(Duration::from_secs(1)),
            );
            let millis = u64::try_from(self.lock_lifetime.as_millis()).unwrap_or(u64::MAX);
            loop {
                let value = token.clone();
                let taken: Option<String> = self
                    .run(|mut connection| async move {
                        redis::cmd("SET")
                            .arg(&self.lock_key)
                            .arg(value)
                            .arg("NX")
                            .arg("PX")
                            .arg(millis)
                            .query_async(&mut connection)
                            .await
                    })
                    .await?;
                if taken.is_some() {
                    return Ok(Some(
                        LockToken::new(token.clone()).renewed_by(self.renew(token)),
                    ));
                }
                if Instant::now() >= give_up {
                    return Err(StoreError::new(StoreErrorKind::LockTimeout, None));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    fn unlock(&self, token: LockToken) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let _: i64 = self
                .run(|mut connection| async move {
                    redis::Script::new(UNLOCK)
                        .key(&self.lock_key)
                        .arg(token.value())
                        .invoke_async(&mut connection)
                        .await
                })
                .await?;
            Ok(())
        })
    }
}
