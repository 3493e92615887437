//! The token cache: one current token shared by every service, and at most one refresh at a
//! time.
//!
//! The hot path is [`TokenCache::current`] plus [`TokenCache::now`]: one atomic load of the
//! current [`Entry`] and one read of a coarse monotonic clock; the token's phase is a few integer
//! comparisons against the asking layer's windows. No lock, no timer to trust: a token is never
//! sent past its window because some task did not run. Everything else (waiting, refreshing,
//! after a 401) takes a short lock on the flight slot and is off the hot path.
//!
//! A refresh ("flight", see [`flight`]) runs on the layer's background runtime (see
//! [`background`]), detached from the request that started it and from that request's runtime,
//! so dropping the request or shutting its runtime down never cancels it and never loses a
//! rotated refresh token. Its outcome is published once to every waiter (see [`wait`]).
//!
//! A failed refresh is remembered ([`Failure`]): a terminal one stops further attempts until
//! the application acts; a transient one makes requests fail fast (or keep a still-valid
//! token) until its backoff ends.

mod background;
mod clock;
mod entry;
mod event;
mod failure;
mod flight;
pub(crate) mod metrics;
mod wait;
mod windows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tower::util::BoxService;
use tower::{Service, ServiceExt};
use tracing::instrument::{Instrument, WithSubscriber};

pub(crate) use self::background::Background;
#[cfg(feature = "keyed")]
pub(crate) use self::clock::ticks;
pub(crate) use self::clock::{Clock, Ticks};
pub(crate) use self::entry::{Entry, Phase};
pub use self::event::TokenEvent;
use self::failure::{Failure, Repeats};
pub(crate) use self::failure::{Retry, issued_refresh_token};
use self::flight::FlightTask;
pub(crate) use self::wait::Wait;
use self::wait::{Published, Waiter};
pub(crate) use self::windows::Windows;
use crate::refresh::{
    BoxError, RefreshError, RefreshErrorKind, RefreshReason, RefreshRequest, RevokeRequest,
};
use crate::store::session::Session;
use crate::store::{StoreError, StoreErrorKind};
use crate::token::{RefreshToken, TokenSet};

/// What a refresh gives every waiter.
pub(crate) type Outcome = Result<Arc<Entry>, RefreshError>;

pub(crate) type Refresher = BoxService<RefreshRequest, TokenSet, BoxError>;

/// A callback told of every change of the session's tokens.
pub(crate) type Hook = Arc<dyn Fn(&TokenEvent<'_>) + Send + Sync>;

pub(crate) type Revoker = BoxService<RevokeRequest, (), BoxError>;

/// The settings of one session (one cache), fixed when it is built.
pub(crate) struct Settings {
    pub(crate) default_lifetime: Duration,
    pub(crate) retry: Retry,
    pub(crate) hooks: Vec<Hook>,
    /// Where the session lives, if anywhere but here.
    pub(crate) store: Option<Arc<Session>>,
    pub(crate) revoker: Option<Revoker>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_lifetime: Duration::from_secs(300),
            retry: Retry::default(),
            hooks: Vec::new(),
            store: None,
            revoker: None,
        }
    }
}

/// A handle to the shared cache; clones share it.
#[derive(Clone)]
pub(crate) struct TokenCache {
    shared: Arc<Shared>,
}

/// A service's own view of the current token: while the token has not changed, reading it is
/// one relaxed load of a pointer and a comparison (arc-swap's `Cache`), where a load from the
/// shared slot costs some fifty instructions more.
pub(crate) type CurrentView = arc_swap::Cache<CurrentSlot, Option<Arc<Entry>>>;

/// The slot the current token is in, for a [`CurrentView`].
#[derive(Clone)]
pub(crate) struct CurrentSlot(Arc<Shared>);

impl std::ops::Deref for CurrentSlot {
    type Target = ArcSwapOption<Entry>;

    fn deref(&self) -> &Self::Target {
        &self.0.current
    }
}

// In the order written: what every request reads or writes (the current token, the newest
// accepted generation, the mark of use) shares the cache line of the reference count that
// every request takes; for a keyed layer's many sessions, one memory miss instead of three.
#[repr(C)]
pub(crate) struct Shared {
    current: ArcSwapOption<Entry>,
    /// The newest generation a response accepted (did not reject).
    accepted: AtomicU64,
    /// When a keyed layer last used this session (only a keyed layer with an idle timeout
    /// keeps it).
    used: AtomicU64,
    slot: Mutex<Slot>,
    /// Only the flight's exchange uses the refresher, and there is one at a time, so this lock
    /// is never contended; it makes any `Send` refresher shareable.
    refresher: tokio::sync::Mutex<Refresher>,
    settings: Settings,
    revoker: Option<tokio::sync::Mutex<Revoker>>,
    background: Background,
    clock: Clock,
    generations: AtomicU64,
    flights: AtomicU64,
    /// Numbers the changes of the session, under the slot lock, so hooks hear them in order.
    changes: AtomicU64,
    /// The newest change the hooks were told of; held while they run.
    notified: Mutex<u64>,
    /// Bumped, under the slot lock, whenever the application sets or clears tokens: a
    /// refresh that started before does not install its result over the application's.
    epoch: AtomicU64,
}

/// The running refresh, the last failure and the rejections: changed together, under one lock.
#[derive(Default)]
struct Slot {
    running: Option<Flight>,
    failure: Option<Failure>,
    repeats: Repeats,
}

impl Slot {
    /// Frees the slot if flight `id` still holds it.
    fn end_flight(&mut self, id: u64) {
        if self
            .running
            .as_ref()
            .is_some_and(|running| running.id == id)
        {
            self.running = None;
        }
    }
}

struct Flight {
    id: u64,
    outcome: Arc<Published>,
    /// Set when its waiters timed out while the exchange goes on: what later callers get.
    late: Option<RefreshError>,
}

/// Either a token to use now, or a refresh to wait for.
enum Join {
    Ready(Arc<Entry>),
    Wait(Waiter),
}

impl TokenCache {
    pub(crate) fn new(refresher: Refresher, settings: Settings, background: Background) -> Self {
        let clock = *background.clock();
        let mut settings = settings;
        let revoker = settings.revoker.take().map(tokio::sync::Mutex::new);
        Self {
            shared: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                slot: Mutex::default(),
                refresher: tokio::sync::Mutex::new(refresher),
                settings,
                revoker,
                background,
                clock,
                generations: AtomicU64::new(0),
                flights: AtomicU64::new(0),
                accepted: AtomicU64::new(0),
                changes: AtomicU64::new(0),
                notified: Mutex::new(0),
                epoch: AtomicU64::new(0),
                used: AtomicU64::new(clock.now()),
            }),
        }
    }

    /// Replaces the refresher (new credentials): the next refresh uses it, and a terminal
    /// failure of the old one no longer stands.
    pub(crate) async fn set_refresher<R>(&self, refresher: R)
    where
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        *self.shared.refresher.lock().await = boxed(refresher);
        lock(&self.shared.slot).failure = None;
    }

    /// Whether anything holds this session but the one reference given: a request in flight, a
    /// refresh, a handle's call. A keyed layer never evicts a session in use, so there is
    /// never a second session of one key in memory.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    pub(crate) fn in_use(&self) -> bool {
        Arc::strong_count(&self.shared) > 1
    }

    /// Marks the session used now; writes only when the last mark is `grain` old or older.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    #[inline]
    pub(crate) fn touch(&self, grain: Ticks) {
        let now = self.now();
        if now.saturating_sub(self.shared.used.load(Ordering::Relaxed)) >= grain {
            self.shared.used.store(now, Ordering::Relaxed);
        }
    }

    /// How long ago the session was last marked used.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    pub(crate) fn idle_for(&self) -> Duration {
        clock::duration(
            self.now()
                .saturating_sub(self.shared.used.load(Ordering::Relaxed)),
        )
    }

    /// A view of the current token for one service: the hot path.
    pub(crate) fn view(&self) -> CurrentView {
        CurrentView::new(CurrentSlot(Arc::clone(&self.shared)))
    }

    /// The time now, by this cache's clock: the hot path.
    #[inline]
    pub(crate) fn now(&self) -> Ticks {
        self.shared.clock.now()
    }

    pub(crate) fn current_full(&self) -> Option<Arc<Entry>> {
        self.shared.current.load_full()
    }

    /// The current token, borrowed for a moment (no reference count while the token is not
    /// changing): for a read on the hot path of a service that has no [`view`](Self::view).
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    #[inline]
    pub(crate) fn current(&self) -> arc_swap::Guard<Option<Arc<Entry>>> {
        self.shared.current.load()
    }

    /// Starts the background refresh of a token in its soft window, once per token (and once
    /// more after each failed one's backoff).
    #[inline]
    pub(crate) fn refresh_in_background(&self, entry: &Entry, now: Ticks, windows: &Windows) {
        if !entry.claim_background(now) {
            return;
        }
        if self
            .join(RefreshReason::Expiring, Some(entry.generation), windows)
            .is_err()
        {
            // Blocked by a failure's backoff: try again when it ends.
            let retry_at = lock(&self.shared.slot)
                .failure
                .as_ref()
                .and_then(|failure| failure.retry_at);
            entry.allow_background_at(retry_at);
        }
    }

    /// A response to a request sent with generation `generation` was not a rejection: the
    /// server takes that token. One relaxed load per response; a write once per generation.
    #[inline]
    pub(crate) fn accepted(&self, generation: u64) {
        if self.shared.accepted.load(Ordering::Relaxed) < generation {
            self.shared
                .accepted
                .fetch_max(generation, Ordering::Relaxed);
        }
    }

    /// The server rejected generation `rejected`: whether the request may be retried (and a
    /// refresh started). `false` when the rejected token was got because of a rejection and no
    /// response ever accepted it, and until the backoff that follows: an API that answers 401
    /// for another reason than the token must not cost a refresh per request.
    pub(crate) fn rejected(&self, rejected: u64) -> bool {
        let now = self.now();
        let mut slot = lock(&self.shared.slot);
        let Some(current) = self
            .current_full()
            .filter(|current| current.generation == rejected)
        else {
            // A newer token exists already: retry with it.
            metrics::rejected(true);
            return true;
        };
        if self.never_accepted(&current) {
            self.record_repeat(&mut slot, rejected, now);
            metrics::rejected(false);
            return false;
        }
        if self.shared.accepted.load(Ordering::Relaxed) >= current.generation {
            // Responses took this token: its rejection now is news (revoked, expired early),
            // whatever happened to tokens before it.
            slot.repeats = Repeats::default();
            metrics::rejected(true);
            return true;
        }
        let allowed = slot.repeats.allow(now);
        metrics::rejected(allowed);
        allowed
    }

    /// The retry of a rejected request was rejected too.
    pub(crate) fn retry_rejected(&self, generation: u64) {
        let now = self.now();
        let mut slot = lock(&self.shared.slot);
        let current = self
            .current_full()
            .filter(|current| current.generation == generation);
        if current.is_some_and(|current| self.never_accepted(&current)) {
            self.record_repeat(&mut slot, generation, now);
        }
    }

    fn never_accepted(&self, entry: &Entry) -> bool {
        entry.after_rejection && self.shared.accepted.load(Ordering::Relaxed) < entry.generation
    }

    fn record_repeat(&self, slot: &mut Slot, generation: u64, now: Ticks) {
        if slot.repeats.allow(now) {
            tracing::warn!(
                generation,
                "a token got because of a rejection was rejected before any request \
                 succeeded with it: the server refuses requests for another reason; rejected \
                 responses go back as they are until a backoff ends"
            );
        }
        slot.repeats.record(now, &self.shared.settings.retry);
    }

    /// Starts the refresh a rejection calls for, without waiting for it.
    pub(crate) fn refresh_after_rejection(&self, rejected: u64, windows: &Windows) {
        let _ = self.join(RefreshReason::Rejected, Some(rejected), windows);
    }

    /// Installs a token set given by the application, in the store first if there is one. A
    /// refresh running now will not replace it.
    pub(crate) async fn set(&self, tokens: TokenSet) -> Outcome {
        // Refused before anything is written: a token that cannot be sent.
        Shared::header(&tokens)?;
        if let Some(session) = self.shared.settings.store.clone() {
            let write = {
                let tokens = tokens.clone();
                async move { session.set(&tokens).await }
            };
            self.shared
                .background
                .run_within(write, self.shared.settings.retry.timeout)
                .await
                .unwrap_or_else(|| Err(StoreError::new(StoreErrorKind::Timeout, None)))
                .map_err(RefreshError::store)?;
        }
        let now = self.now();
        // Held from before the token is visible until its hooks ran: a refresh this set
        // supersedes gives its waiters the token only after that (see `FlightTask::run`).
        let mut told = lock(&self.shared.notified);
        let mut slot = lock(&self.shared.slot);
        let entry = self
            .shared
            .prepare(tokens, RefreshReason::Forced, now, false)?;
        self.shared.current.store(Some(Arc::clone(&entry)));
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        slot.failure = None;
        slot.repeats = Repeats::default();
        let change = self.shared.change();
        drop(slot);
        self.shared.tell(
            &mut told,
            change,
            &TokenEvent::Set {
                tokens: &entry.tokens,
            },
        );
        Ok(entry)
    }

    /// Forgets the current token, and the stored session: the next request logs in. A refresh
    /// running now will not install its result. The tokens here are gone even when the store
    /// fails (its error is returned; the stored session is void for this process anyway).
    pub(crate) async fn clear(&self) -> Result<(), RefreshError> {
        let deleted = match self.shared.settings.store.clone() {
            Some(session) => self
                .shared
                .background
                .run_within(
                    async move { session.clear().await },
                    self.shared.settings.retry.timeout,
                )
                .await
                .unwrap_or_else(|| Err(StoreError::new(StoreErrorKind::Timeout, None))),
            None => Ok(()),
        };
        let mut slot = lock(&self.shared.slot);
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        self.shared.current.store(None);
        slot.failure = None;
        slot.repeats = Repeats::default();
        // The running refresh (if any) is superseded: the next request starts a fresh one
        // rather than wait for a result that will be discarded.
        slot.running = None;
        let change = self.shared.change();
        drop(slot);
        self.shared.notify(change, &TokenEvent::Cleared);
        deleted.map_err(RefreshError::store)
    }

    /// Revokes the session at the identity provider (when a revoker is configured and there
    /// is a session), then clears it here and in the store, whatever the revocation did. The
    /// first error is returned.
    pub(crate) async fn logout(&self) -> Result<(), RefreshError> {
        let tokens = self.current_full().map(|entry| entry.tokens.clone());
        let revoked = match (&self.shared.revoker, tokens) {
            (Some(_), Some(tokens)) => {
                let shared = Arc::clone(&self.shared);
                let revoke = async move {
                    let Some(revoker) = &shared.revoker else {
                        return Ok(());
                    };
                    let mut revoker = revoker.lock().await;
                    match revoker.ready().await {
                        Ok(revoker) => revoker.call(RevokeRequest::new(tokens)).await,
                        Err(error) => Err(error),
                    }
                };
                self.shared
                    .background
                    .run_within(revoke, self.shared.settings.retry.timeout)
                    .await
                    .unwrap_or_else(|| Err("the revocation did not answer in time".into()))
                    .map_err(RefreshError::revoke)
            }
            _ => Ok(()),
        };
        if let Err(error) = &revoked {
            tracing::warn!(%error, "the identity provider did not revoke the session; clearing it here all the same");
        }
        let cleared = self.clear().await;
        revoked.and(cleared)
    }

    /// Joins the running refresh, uses a token newer than the one `seen`, or starts a
    /// refresh. `seen` is the generation the caller found wanting (`None`: it found no token,
    /// or wants a refresh whatever the current token is).
    fn join(
        &self,
        reason: RefreshReason,
        seen: Option<u64>,
        windows: &Windows,
    ) -> Result<Join, RefreshError> {
        let now = self.now();
        let mut slot = lock(&self.shared.slot);
        if let Some(running) = slot.running.as_ref().filter(|r| r.late.is_none()) {
            return Ok(Join::Wait(running.outcome.waiter()));
        }
        let current = self.current_full();
        if reason != RefreshReason::Forced {
            if let Some(entry) = &current {
                let newer = seen != Some(entry.generation);
                if newer && entry.phase(now, windows) < Phase::Hard {
                    return Ok(Join::Ready(Arc::clone(entry)));
                }
            }
            // After a failure: no new attempt before its backoff ends (never, if terminal);
            // the application's forced refresh is the exception.
            if let Some(error) = slot.failure.as_ref().and_then(|f| f.blocks(now)) {
                return Err(error);
            }
        }
        // An exchange past its timeout still runs: a second one could spend the refresh
        // token the first is about to replace.
        if let Some(late) = slot.running.as_ref().and_then(|r| r.late.clone()) {
            return Err(late);
        }
        let id = self.shared.flights.fetch_add(1, Ordering::Relaxed);
        let (publish, outcome) = Published::new(self.shared.background.waking_place());
        let waiter = outcome.waiter();
        slot.running = Some(Flight {
            id,
            outcome,
            late: None,
        });
        // Read under the lock, with `current`: a clear or set after this supersedes the flight.
        let epoch = self.shared.epoch();
        drop(slot);
        let task = FlightTask {
            shared: Arc::clone(&self.shared),
            id,
            epoch,
            reason,
            publish,
            settled: false,
        };
        // Its logs go where the caller's would, in a span of its own that follows from the
        // caller's.
        let span = tracing::debug_span!("token_refresh", %reason);
        span.follows_from(tracing::Span::current());
        let run = task.run().instrument(span).with_current_subscriber();
        // Spawned outside the lock: a task that cannot be spawned is dropped at once, and its
        // `Drop` frees the slot.
        if self.shared.background.spawn(run) {
            Ok(Join::Wait(waiter))
        } else {
            Err(RefreshError::new(RefreshErrorKind::NoRuntime))
        }
    }
}

impl Shared {
    fn now(&self) -> Ticks {
        self.clock.now()
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// The number of a change of the session; taken under the slot lock.
    fn change(&self) -> u64 {
        self.changes.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Tells the application's hooks of change number `change`, outside the slot lock (they
    /// may use the handle), in the order of the changes: a hook never hears of a token set
    /// older than one it was told of (a store it feeds never goes back to a spent refresh
    /// token).
    fn notify(&self, change: u64, event: &TokenEvent<'_>) {
        if self.settings.hooks.is_empty() {
            return;
        }
        self.tell(&mut lock(&self.notified), change, event);
    }

    /// [`notify`](Self::notify), with the hooks' lock held already.
    fn tell(&self, last: &mut u64, change: u64, event: &TokenEvent<'_>) {
        if change <= *last {
            return;
        }
        *last = change;
        for hook in &self.settings.hooks {
            hook(event);
        }
    }

    /// Waits until no hook is running: what a waiter gets next has been told to the hooks.
    fn hooks_done(&self) {
        drop(lock(&self.notified));
    }

    /// The `Authorization` header for `tokens` (`Bearer …` or `DPoP …`), built once per token and
    /// marked sensitive.
    fn header(tokens: &TokenSet) -> Result<HeaderValue, RefreshError> {
        let scheme = tokens.token_type().as_str();
        let mut header =
            HeaderValue::try_from(format!("{scheme} {}", tokens.access_token().secret()))
                .map_err(|_| RefreshError::new(RefreshErrorKind::InvalidToken))?;
        header.set_sensitive(true);
        Ok(header)
    }

    /// The entry for `tokens`, got for `reason`, not installed yet. `fresh`: a token endpoint
    /// just issued them (rather than the application or a store keeping them for a while).
    fn prepare(&self, tokens: TokenSet, reason: RefreshReason, now: Ticks, fresh: bool) -> Outcome {
        let header = Self::header(&tokens)?;
        let lifetime = self.settings.default_lifetime;
        let expires_at = if fresh {
            tokens.fresh_expiry_or(lifetime)
        } else {
            tokens.expiry_or(lifetime)
        };
        let expires_at = (self.clock.at(expires_at), expires_at);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(Entry::new(
            tokens,
            header,
            generation,
            now,
            expires_at,
            reason == RefreshReason::Rejected,
        )))
    }

    /// A refresh token the server issued in an answer the cache could not use otherwise: put
    /// it into the current token set, so the next refresh presents it instead of the one it
    /// replaced (which the server may count as spent). The caller holds the slot lock.
    /// Returns the change to tell the hooks of, if the session changed.
    fn keep_refresh_token(
        &self,
        _slot: &Slot,
        refresh_token: &RefreshToken,
        expires_at: Option<tokio::time::Instant>,
    ) -> Option<(u64, Arc<Entry>)> {
        let Some(current) = self.current.load_full() else {
            // Only a login has no session to keep it in: losing it leaves an unused session
            // at the server, and spends nothing this cache needs.
            tracing::warn!(
                "a refresh token came with an unusable answer and no session to keep it in"
            );
            return None;
        };
        if current.tokens.refresh_token() == Some(refresh_token) {
            return None;
        }
        let mut tokens = current.tokens.clone();
        tokens.set_refresh_token(Some(refresh_token.clone()));
        tokens.set_refresh_expires_at(expires_at);
        tracing::info!(
            generation = current.generation,
            "kept the refresh token of an answer that could not be used otherwise"
        );
        let entry = Arc::new(current.with_tokens(tokens));
        self.current.store(Some(Arc::clone(&entry)));
        Some((self.change(), entry))
    }
}

fn boxed<R>(refresher: R) -> Refresher
where
    R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    BoxService::new(refresher.map_err(Into::into))
}

fn aborted() -> Outcome {
    Err(RefreshError::new(RefreshErrorKind::Aborted))
}

/// Locks a mutex that no code panics while holding; a poisoned one is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
