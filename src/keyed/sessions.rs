//! The live sessions of a keyed layer: one token cache per key, made when first needed, in a
//! sharded concurrent cache (`quick_cache`): a lookup takes one shard's read lock, never a
//! global one.
//!
//! A session in use (a request in flight, a refresh, a handle's call holds it) is pinned: the
//! bound never evicts it, so a key never has two sessions in memory, and a refresh always
//! installs its tokens where the next request looks. The idle timeout is a sweep on the
//! layer's background runtime, a few times per timeout, over sessions not in use.

use std::convert::Infallible;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Weak};
use std::time::Duration;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, OptionsBuilder, UnitWeighter};

use crate::cache::{
    Background, Hook, Refresher, Retry, Revoker, Settings, Ticks, TokenCache, TokenEvent,
};
use crate::store::session::Session;

/// Makes what one key's session needs.
pub(crate) type Make<K, T> = Arc<dyn Fn(&K) -> T + Send + Sync>;

/// A hook of a keyed layer: told the key with each event.
pub(crate) type KeyedHook<K> = Arc<dyn Fn(&K, &TokenEvent<'_>) + Send + Sync>;

/// What every key's session is made of.
pub(crate) struct Recipe<K> {
    pub(crate) refresher: Make<K, Refresher>,
    pub(crate) revoker: Option<Make<K, Revoker>>,
    pub(crate) store: Option<Make<K, Session>>,
    pub(crate) hooks: Vec<KeyedHook<K>>,
    pub(crate) default_lifetime: Duration,
    pub(crate) retry: Retry,
    pub(crate) background: Background,
}

impl<K: Clone + Send + Sync + 'static> Recipe<K> {
    fn session(&self, key: &K) -> TokenCache {
        let hooks = self
            .hooks
            .iter()
            .map(|hook| {
                let (hook, key) = (Arc::clone(hook), key.clone());
                Arc::new(move |event: &TokenEvent<'_>| hook(&key, event)) as Hook
            })
            .collect();
        let settings = Settings {
            default_lifetime: self.default_lifetime,
            retry: self.retry,
            hooks,
            store: self.store.as_ref().map(|store| Arc::new(store(key))),
            revoker: self.revoker.as_ref().map(|revoker| revoker(key)),
        };
        TokenCache::new((self.refresher)(key), settings, self.background.clone())
    }
}

/// Sessions in use are never evicted; evicted ones are dropped after the shard's lock is
/// released.
#[derive(Clone, Copy, Debug, Default)]
struct Pins;

impl<K> Lifecycle<K, TokenCache> for Pins {
    type RequestState = Vec<TokenCache>;

    fn begin_request(&self) -> Self::RequestState {
        Vec::new()
    }

    fn is_pinned(&self, _: &K, session: &TokenCache) -> bool {
        session.in_use()
    }

    fn on_evict(&self, evicted: &mut Self::RequestState, _: K, session: TokenCache) {
        evicted.push(session);
    }
}

type Live<K> = Cache<K, TokenCache, UnitWeighter, DefaultHashBuilder, Pins>;

/// The live sessions, by key.
pub(crate) struct Sessions<K> {
    live: Live<K>,
    recipe: Recipe<K>,
    max: Option<u64>,
    /// The idle timeout, and how stale a session's mark of use may be (an eighth of it).
    idle: Option<(Duration, Ticks)>,
}

/// Sessions expected when there is no bound: sizes the shards, not a limit.
const UNBOUNDED_ESTIMATE: usize = 4096;

impl<K> Sessions<K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    pub(crate) fn new(
        recipe: Recipe<K>,
        max_sessions: Option<u64>,
        idle_timeout: Option<Duration>,
    ) -> Arc<Self> {
        let estimate = max_sessions.map_or(UNBOUNDED_ESTIMATE, |max| {
            usize::try_from(max).unwrap_or(usize::MAX).max(1)
        });
        // No room kept for "hot" sessions: quick_cache's default (97%) keeps the first sessions
        // made and turns each newcomer out first, where users expect the least recently used
        // to go. With none, its CLOCK gives a second chance to sessions used since the last
        // sweep of the hand: measured, of 1,000 users used once each in turn with a bound of
        // 100, the last 100 hold 87 of the places (3 with the default), and one session used
        // all along keeps its place.
        let options = OptionsBuilder::new()
            .hot_allocation(0.0)
            .estimated_items_capacity(estimate)
            .weight_capacity(max_sessions.unwrap_or(u64::MAX))
            .build()
            .expect("both capacities are set");
        let live = Cache::with_options(options, UnitWeighter, DefaultHashBuilder::default(), Pins);
        let idle = idle_timeout.map(|idle| (idle, crate::cache::ticks(idle / 8)));
        let sessions = Arc::new(Self {
            live,
            recipe,
            max: max_sessions,
            idle,
        });
        if let Some((idle, _)) = idle {
            sweep(Arc::downgrade(&sessions), &sessions.recipe.background, idle);
        }
        sessions
    }

    /// The session of `key`, made now if it is not live.
    #[inline]
    pub(crate) fn get(&self, key: &K) -> TokenCache {
        let session = match self.live.get(key) {
            Some(session) => session,
            // One maker per key, even when many requests find it missing at once.
            None => self
                .live
                .get_or_insert_with(key, || Ok::<_, Infallible>(self.recipe.session(key)))
                .unwrap_or_else(|never| match never {}),
        };
        if let Some((_, grain)) = self.idle {
            session.touch(grain);
        }
        session
    }

    /// The session of `key` if it is live, without counting as a use.
    pub(crate) fn live(&self, key: &K) -> Option<TokenCache> {
        self.live.peek(key)
    }

    /// How many sessions are live.
    pub(crate) fn count(&self) -> u64 {
        self.live.len() as u64
    }

    /// Drops the sessions idle for `idle` or longer that nothing holds. A session's mark of
    /// use may be up to a grain old, so one counts as idle only once its mark is `idle` plus
    /// a grain old: never dropped before `idle`. The last references go after the shard's
    /// lock is released (a refresher's or a store's `Drop` may be slow).
    fn drop_idle(&self, idle: Duration, grain: Duration) {
        let dropped = std::sync::Mutex::new(Vec::new());
        let idle = idle.saturating_add(grain);
        self.live.retain(|_, session| {
            let keep = session.in_use() || session.idle_for() < idle;
            if !keep {
                if let Ok(mut dropped) = dropped.lock() {
                    dropped.push(session.clone());
                }
            }
            keep
        });
        drop(dropped);
    }
}

/// Sweeps idle sessions out a few times per timeout, until the sessions are dropped.
fn sweep<K>(sessions: Weak<Sessions<K>>, background: &Background, idle: Duration)
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    let every = (idle / 4).max(Duration::from_millis(10));
    let spawned = background.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(sessions) = sessions.upgrade() else {
                return;
            };
            sessions.drop_idle(idle, idle / 8);
        }
    });
    if !spawned {
        tracing::warn!("no runtime to sweep idle sessions on: they stay in memory");
    }
}

impl<K> fmt::Debug for Sessions<K>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.live.len())
            .field("max", &self.max)
            .field("idle_timeout", &self.idle.map(|(idle, _)| idle))
            .field("store", &self.recipe.store.is_some())
            .finish_non_exhaustive()
    }
}
