use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;
use tokio::time::Instant;

use zeroize::Zeroizing;

use super::{
    LockToken, LockWatch, StoreError, StoreErrorKind, StoreFuture, Stored, TokenStore, serde,
};
use crate::token::TokenSet;
use crate::token::instant_after;

/// A lock held longer than this is surely held by a dead process.
const LONGEST_LOCK: Duration = Duration::from_secs(24 * 3600);
/// Waiting for the lock is bounded by its lifetime, and by this.
const LONGEST_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Extends the lock only for its holder.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Takes the lock for `ARGV[1]`, or finds it ours already (an attempt that timed out here may
/// have run there after all).
const LOCK: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if holder then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1";

/// Releases the lock only for its holder.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Writes the value only if the stored version is `ARGV[2]` (a value that is not a stored
/// session counts as version 0, one of the format before versions as 1): a compare-and-swap on
/// the version. Returns the stored version on a conflict, as `-1 - version`.
const SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' then
    if type(decoded.version) == 'number' then
      version = decoded.version
    elseif type(decoded.access_token) == 'string' then
      version = 1
    end
  end
end
if version ~= tonumber(ARGV[2]) then
  return -1 - version
end
redis.call('SET', KEYS[1], ARGV[1])
return version + 1";

/// Keeps the session in Redis, shared by every process that uses the same key prefix: one
/// login and one refresh chain for a whole fleet.
///
/// - The session is one JSON value under `<prefix>tokens`, with its version; every save and
///   delete is a compare-and-swap on that version (a Lua script), so no writer overwrites a
///   newer set.
/// - The refresh lock is `<prefix>lock`, taken with a random value and an expiry, and
///   released only by its owner (a Lua compare-and-delete). While held it is renewed every
///   third of its lifetime; a renewal that fails (Redis stalled, unreachable) is tried again
///   until the lock's known expiry, and only then is the lock taken as lost. The holder checks
///   it still holds the lock right before it calls the token endpoint. A holder that dies frees
///   the lock by expiry: the lock lifetime, default 40 s (longer than the cache's default
///   refresh timeout of 30 s, plus a margin).
/// - Waiters poll every 50 ms, for at most the lock lifetime (and at most 2 minutes) plus one
///   second at a time; a Redis that stalls (a command timing out) is waited for the same way.
/// - Every command is bounded by a timeout (default 2 s): Redis unreachable is a typed
///   [`StoreError`] (`Unavailable` or `Timeout`), never a hang.
/// - The JSON read and written is wiped from memory when dropped.
///
/// Give it to a layer with [`AuthLayerBuilder::store`](crate::AuthLayerBuilder::store).
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
    prefix: Arc<str>,
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
            prefix: prefix.into(),
            tokens_key: format!("{prefix}tokens"),
            lock_key: format!("{prefix}lock"),
            lock_lifetime: Duration::from_secs(40),
            command_timeout: Duration::from_secs(2),
        })
    }

    /// How long the refresh lock lives if its holder neither renews nor releases it (default
    /// 40 s, at most a day): how long a dead holder keeps the fleet from refreshing. Make it
    /// longer than the layer's refresh timeout.
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
                    // Our own bound for every answer, not the client's default (500 ms).
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.command_timeout))
                        .set_response_timeout(Some(self.command_timeout));
                    let connection = self
                        .client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?;
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
                let kind = if error.is_timeout() {
                    StoreErrorKind::Timeout
                } else {
                    StoreErrorKind::Unavailable
                };
                Err(StoreError::new(kind, Some(error.into())))
            }
            Err(_) => {
                *self.connection.lock().await = None;
                Err(StoreError::new(StoreErrorKind::Timeout, None))
            }
        }
    }
}

impl RedisStore {
    /// The store of the session named `name` in a keyed layer: keys `<prefix><name>:tokens`
    /// and `<prefix><name>:lock`, on the same connection.
    pub(crate) fn named(&self, name: &str) -> Self {
        let prefix = &self.prefix;
        Self {
            client: self.client.clone(),
            connection: Arc::clone(&self.connection),
            prefix: Arc::clone(&self.prefix),
            tokens_key: format!("{prefix}{name}:tokens"),
            lock_key: format!("{prefix}{name}:lock"),
            lock_lifetime: self.lock_lifetime,
            command_timeout: self.command_timeout,
        }
    }
}

impl RedisStore {
    /// Keeps the lock held by `token` alive, reporting to `watch`, until aborted or lost.
    fn renew(&self, token: String, watch: LockWatch) -> tokio::task::AbortHandle {
        let store = self.clone();
        let every = self.lock_lifetime / 3;
        // After a failed renewal, try again soon: the lock is still ours until it expires.
        let soon = (self.lock_lifetime / 20).max(Duration::from_millis(10));
        let millis = millis(self.lock_lifetime);
        tokio::spawn(async move {
            let mut wait = every;
            loop {
                tokio::time::sleep(wait).await;
                let sent = Instant::now();
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
                match renewed {
                    Ok(1) => {
                        watch.renewed_until(instant_after(sent, store.lock_lifetime));
                        wait = every;
                    }
                    Ok(_) => {
                        tracing::warn!("the token store's refresh lock was taken by another holder");
                        watch.lost();
                        return;
                    }
                    Err(error) => {
                        if watch.held_until().is_some_and(|until| Instant::now() >= until) {
                            tracing::warn!(%error, "the token store's refresh lock expired while it could not be renewed");
                            watch.lost();
                            return;
                        }
                        tracing::debug!(%error, "could not renew the token store's refresh lock; trying again");
                        wait = soon;
                    }
                }
            }
        })
        .abort_handle()
    }

    /// Writes `json` (the session at the version after `replaces`) if `replaces` is stored.
    async fn swap(&self, json: &[u8], replaces: u64) -> Result<u64, StoreError> {
        let written: i64 = self
            .run(|mut connection| async move {
                redis::Script::new(SWAP)
                    .key(&self.tokens_key)
                    .arg(json)
                    .arg(replaces)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        u64::try_from(written).map_err(|_| StoreError::new(StoreErrorKind::Conflict, None))
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
    fn load(&self) -> StoreFuture<'_, Stored> {
        Box::pin(async move {
            let json: Option<Vec<u8>> = self
                .run(|mut connection| async move {
                    redis::cmd("GET")
                        .arg(&self.tokens_key)
                        .query_async(&mut connection)
                        .await
                })
                .await?;
            let Some(json) = json.map(Zeroizing::new) else {
                return Ok(Stored::default());
            };
            Ok(serde::decode(&json).unwrap_or_else(|| {
                tracing::warn!(key = %self.tokens_key, "the stored token set is corrupt; ignoring it");
                Stored::default()
            }))
        })
    }

    fn save<'a>(&'a self, tokens: &'a TokenSet, replaces: u64) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let json = serde::encode(Some(tokens), replaces.saturating_add(1));
            self.swap(&json, replaces).await
        })
    }

    fn delete(&self, replaces: u64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let json = serde::encode(None, replaces.saturating_add(1));
            self.swap(&json, replaces).await
        })
    }

    fn lock(&self) -> StoreFuture<'_, Option<LockToken>> {
        Box::pin(async move {
            let token = format!(
                "{:016x}{:016x}",
                RandomState::new().hash_one(1u8),
                RandomState::new().hash_one(2u8)
            );
            // Past the lock's lifetime it is free (its holder renews it while alive); a lock of a
            // very long lifetime is not waited for longer than a bounded while.
            let give_up = instant_after(
                Instant::now(),
                self.lock_lifetime
                    .min(LONGEST_LOCK_WAIT)
                    .saturating_add(Duration::from_secs(1)),
            );
            let millis = millis(self.lock_lifetime);
            loop {
                let value = token.clone();
                let sent = Instant::now();
                let taken: Result<i64, StoreError> = self
                    .run(|mut connection| async move {
                        redis::Script::new(LOCK)
                            .key(&self.lock_key)
                            .arg(value)
                            .arg(millis)
                            .invoke_async(&mut connection)
                            .await
                    })
                    .await;
                let taken = match taken {
                    Ok(taken) => taken == 1,
                    // A stalled Redis (paused, busy) may answer soon: keep waiting, as for a
                    // lock held by another process. One that cannot be reached fails now.
                    Err(error) if error.kind() == StoreErrorKind::Timeout => false,
                    Err(error) => return Err(error),
                };
                if taken {
                    let lock = LockToken::new(token.clone())
                        .expiring_at(instant_after(sent, self.lock_lifetime));
                    let renewal = self.renew(token, lock.watch());
                    return Ok(Some(lock.renewed_by(renewal)));
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
