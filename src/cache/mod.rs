//! The token cache: one current token shared by every service, and at most one refresh at a
//! time.
//!
//! The hot path is [`TokenCache::current`]: one atomic load of the current [`Entry`] and one
//! relaxed load of its phase. Everything else (waiting, refreshing, after a 401) takes a short
//! lock on the flight slot and is off the hot path.
//!
//! A refresh ("flight") runs in a spawned task, detached from the request that started it, so
//! dropping that request never cancels it and never loses a rotated refresh token. Its outcome
//! is published on a `watch` channel that every waiter holds.
//!
//! A failed refresh is remembered ([`Failure`]): a terminal one stops further attempts until
//! the application acts; a transient one makes requests fail fast (or keep a still-valid
//! token) until its backoff ends.

mod entry;
mod failure;
mod windows;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::{ArcSwapOption, Guard};
use http::HeaderValue;
use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::time::Instant;
use tower::util::BoxService;
use tower::{Service, ServiceExt};

pub(crate) use self::entry::{Entry, Phase};
pub(crate) use self::failure::Retry;
use self::failure::{Class, Failure};
pub(crate) use self::windows::Windows;
use crate::refresh::{BoxError, RefreshError, RefreshErrorKind, RefreshReason, RefreshRequest};
use crate::token::TokenSet;

/// What a refresh gives every waiter.
pub(crate) type Outcome = Result<Arc<Entry>, RefreshError>;

type Refresher = BoxService<RefreshRequest, TokenSet, BoxError>;

/// A callback told of every new token set.
pub(crate) type TokensHook = Arc<dyn Fn(&TokenSet) + Send + Sync>;

/// A handle to the shared cache; clones share it.
#[derive(Clone)]
pub(crate) struct TokenCache {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwapOption<Entry>,
    slot: Mutex<Slot>,
    /// Only the flight task uses the refresher, and there is one flight at a time, so this
    /// lock is never contended; it makes any `Send` refresher shareable.
    refresher: tokio::sync::Mutex<Refresher>,
    config: Mutex<Config>,
    generations: AtomicU64,
    flights: AtomicU64,
    /// Told of every token set installed (`AuthLayer::on_tokens`).
    on_tokens: Mutex<Option<TokensHook>>,
    /// Bumped, under the flight lock, whenever the application sets or clears tokens: a
    /// refresh that started before does not install its result over the application's.
    epoch: AtomicU64,
}

/// The settings a layer's builder methods change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) windows: Windows,
    pub(crate) retry: Retry,
}

/// The running refresh and the last failure: changed together, under one lock.
#[derive(Default)]
struct Slot {
    running: Option<Flight>,
    failure: Option<Failure>,
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

#[derive(Clone)]
struct Flight {
    id: u64,
    outcome: watch::Receiver<Option<Outcome>>,
}

/// Either a token to use now, or a refresh to wait for.
enum Join {
    Ready(Arc<Entry>),
    Wait(watch::Receiver<Option<Outcome>>),
}

impl TokenCache {
    pub(crate) fn new<R>(refresher: R) -> Self
    where
        R: Service<RefreshRequest, Response = TokenSet> + Send + 'static,
        R::Error: Into<BoxError>,
        R::Future: Send + 'static,
    {
        Self {
            shared: Arc::new(Shared {
                current: ArcSwapOption::empty(),
                slot: Mutex::default(),
                refresher: tokio::sync::Mutex::new(boxed(refresher)),
                config: Mutex::default(),
                generations: AtomicU64::new(0),
                flights: AtomicU64::new(0),
                epoch: AtomicU64::new(0),
                on_tokens: Mutex::new(None),
            }),
        }
    }

    /// Changes the settings; tokens installed and refreshes started from now on follow them.
    pub(crate) fn configure(&self, change: impl FnOnce(&mut Config)) {
        change(&mut lock(&self.shared.config));
    }

    /// Calls `hook` with every token set installed from now on.
    pub(crate) fn on_tokens(&self, hook: TokensHook) {
        *lock(&self.shared.on_tokens) = Some(hook);
    }

    pub(crate) fn config(&self) -> Config {
        *lock(&self.shared.config)
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

    /// The current token: the hot path.
    #[inline]
    pub(crate) fn current(&self) -> Guard<Option<Arc<Entry>>> {
        self.shared.current.load()
    }

    pub(crate) fn current_full(&self) -> Option<Arc<Entry>> {
        self.shared.current.load_full()
    }

    /// Starts the background refresh of a token in its soft window, once per token.
    pub(crate) fn refresh_in_background(&self, entry: &Entry) {
        // A load first: once started, every later request in the window stops here without
        // writing to the shared cache line.
        if entry.background_refresh.load(Ordering::Acquire)
            || entry.background_refresh.swap(true, Ordering::AcqRel)
        {
            return;
        }
        if Handle::try_current().is_err() {
            entry.background_refresh.store(false, Ordering::Release);
            return;
        }
        let _ = self.join(RefreshReason::Expiring, Some(entry.generation));
    }

    /// A token fit to be sent now, waiting for a refresh when there is none.
    pub(crate) async fn acquire(self) -> Outcome {
        let seen = self.current_full();
        let reason = match &seen {
            None => RefreshReason::NoToken,
            Some(entry) => match entry.phase_now() {
                Phase::Fresh => return Ok(Arc::clone(entry)),
                Phase::Soft => {
                    self.refresh_in_background(entry);
                    return Ok(Arc::clone(entry));
                }
                Phase::Hard | Phase::Unarmed if entry.is_expired() => RefreshReason::Expired,
                Phase::Hard | Phase::Unarmed => RefreshReason::Expiring,
            },
        };
        let outcome = self.wait(reason, seen.as_ref().map(|e| e.generation)).await;
        match (outcome, seen) {
            // A failed refresh does not stop a token that is still valid from being served.
            (Err(error), Some(seen))
                if !seen.is_expired() && error.kind() != RefreshErrorKind::Superseded =>
            {
                Ok(seen)
            }
            (outcome, _) => outcome,
        }
    }

    /// A token to retry with after the server rejected generation `rejected`: the newer
    /// token if one exists already, else the outcome of one refresh.
    pub(crate) async fn after_rejection(self, rejected: u64) -> Outcome {
        self.wait(RefreshReason::Rejected, Some(rejected)).await
    }

    /// Starts the refresh a rejection calls for, without waiting for it.
    pub(crate) fn refresh_after_rejection(&self, rejected: u64) {
        if Handle::try_current().is_ok() {
            let _ = self.join(RefreshReason::Rejected, Some(rejected));
        }
    }

    /// A refresh asked for by the application: joins the one running, else starts one.
    pub(crate) async fn force(self) -> Outcome {
        self.wait(RefreshReason::Forced, None).await
    }

    /// Installs a token set given by the application. A refresh running now will not
    /// replace it.
    pub(crate) fn set(&self, tokens: TokenSet) -> Outcome {
        let mut slot = lock(&self.shared.slot);
        let entry = self.shared.install(tokens)?;
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        slot.failure = None;
        drop(slot);
        self.shared.notify(&entry);
        Ok(entry)
    }

    /// Forgets the current token: the next request logs in. A refresh running now will not
    /// install its result.
    pub(crate) fn clear(&self) {
        let mut slot = lock(&self.shared.slot);
        self.shared.epoch.fetch_add(1, Ordering::Relaxed);
        self.shared.current.store(None);
        slot.failure = None;
        // The running refresh (if any) is superseded: the next request starts a fresh one
        // rather than wait for a result that will be discarded.
        slot.running = None;
    }

    async fn wait(&self, reason: RefreshReason, seen: Option<u64>) -> Outcome {
        match self.join(reason, seen)? {
            Join::Ready(entry) => Ok(entry),
            Join::Wait(mut outcome) => match outcome.wait_for(Option::is_some).await {
                Ok(outcome) => outcome.clone().unwrap_or_else(aborted),
                Err(_) => aborted(),
            },
        }
    }

    /// Joins the running refresh, uses a token newer than the one `seen`, or starts a
    /// refresh. `seen` is the generation the caller found wanting (`None`: it found no token,
    /// or wants a refresh whatever the current token is).
    fn join(&self, reason: RefreshReason, seen: Option<u64>) -> Result<Join, RefreshError> {
        let mut slot = lock(&self.shared.slot);
        if let Some(running) = &slot.running {
            return Ok(Join::Wait(running.outcome.clone()));
        }
        let current = self.current_full();
        if reason != RefreshReason::Forced {
            if let Some(entry) = &current {
                let newer = seen != Some(entry.generation);
                if newer && entry.phase_now() < Phase::Hard {
                    return Ok(Join::Ready(Arc::clone(entry)));
                }
            }
            // After a failure: no new attempt before its backoff ends (never, if terminal);
            // the application's forced refresh is the exception.
            if let Some(error) = slot.failure.as_ref().and_then(|f| f.blocks(Instant::now())) {
                return Err(error.clone());
            }
        }
        let runtime =
            Handle::try_current().map_err(|_| RefreshError::new(RefreshErrorKind::NoRuntime))?;
        let id = self.shared.flights.fetch_add(1, Ordering::Relaxed);
        let (publish, outcome) = watch::channel(None);
        slot.running = Some(Flight {
            id,
            outcome: outcome.clone(),
        });
        // Read under the lock, with `current`: a clear or set after this supersedes the flight.
        let epoch = self.shared.epoch.load(Ordering::Relaxed);
        drop(slot);
        let request = RefreshRequest::new(reason, current.map(|entry| entry.tokens.clone()));
        let task = FlightTask {
            shared: Arc::clone(&self.shared),
            id,
            epoch,
            publish,
            settled: false,
        };
        runtime.spawn(task.run(request));
        Ok(Join::Wait(outcome))
    }
}

impl Shared {
    /// Tells the application's hook, outside every lock (it may use the handle).
    fn notify(&self, entry: &Entry) {
        let hook = lock(&self.on_tokens).clone();
        if let Some(hook) = hook {
            hook(&entry.tokens);
        }
    }

    fn install(&self, tokens: TokenSet) -> Outcome {
        let mut header =
            HeaderValue::try_from(format!("Bearer {}", tokens.access_token().secret()))
                .map_err(|_| RefreshError::new(RefreshErrorKind::InvalidToken))?;
        header.set_sensitive(true);
        let windows = lock(&self.config).windows;
        let expires_at = tokens.expiry_or(windows.default_lifetime);
        let schedule = windows.schedule(Instant::now(), expires_at);
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(Entry::new(tokens, header, generation, schedule));
        self.current.store(Some(Arc::clone(&entry)));
        Ok(entry)
    }
}

/// The spawned refresh. Dropping it (the task ended, panicked or was aborted) frees the
/// flight slot, so a failed refresh never blocks the next one.
struct FlightTask {
    shared: Arc<Shared>,
    id: u64,
    epoch: u64,
    publish: watch::Sender<Option<Outcome>>,
    /// Whether the outcome was settled; a flight dropped before (the refresher panicked, the
    /// runtime shut down) counts as a transient failure.
    settled: bool,
}

impl FlightTask {
    async fn run(mut self, request: RefreshRequest) {
        let reason = request.reason();
        let started = Instant::now();
        let retry = lock(&self.shared.config).retry;
        tracing::debug!(%reason, "token refresh started");
        let call = async {
            let mut refresher = self.shared.refresher.lock().await;
            match refresher.ready().await {
                Ok(refresher) => refresher.call(request).await,
                Err(error) => Err(error),
            }
        };
        let result = match tokio::time::timeout(retry.timeout, call).await {
            Ok(Ok(tokens)) => Ok(tokens),
            Ok(Err(error)) => {
                let class = failure::classify(&error);
                Err((RefreshError::refresher(error), class))
            }
            Err(_elapsed) => Err(failure::timed_out()),
        };
        let elapsed_ms = millis(started.elapsed());
        let (outcome, installed) = self.settle(result, &retry);
        self.settled = true;
        if let (Ok(entry), true) = (&outcome, installed) {
            self.shared.notify(entry);
        }
        match &outcome {
            Ok(entry) => tracing::debug!(
                %reason,
                generation = entry.generation,
                elapsed_ms,
                expires_in_s = entry.schedule.expires_at.saturating_duration_since(Instant::now()).as_secs(),
                "token refresh succeeded"
            ),
            Err(error) => {
                tracing::warn!(%reason, elapsed_ms, error = %ErrorChain(error), "token refresh failed");
            }
        }
        self.publish.send_replace(Some(outcome));
    }

    /// Installs the result (or records the failure) and frees the flight slot in one step
    /// under the slot lock: whoever sees the new token as current also sees no refresh
    /// running, so a 401 for that token starts a refresh of its own instead of joining this
    /// finished one.
    fn settle(
        &self,
        result: Result<TokenSet, (RefreshError, Class)>,
        retry: &Retry,
    ) -> (Outcome, bool) {
        let mut slot = lock(&self.shared.slot);
        slot.end_flight(self.id);
        let superseded = self.shared.epoch.load(Ordering::Relaxed) != self.epoch;
        match result {
            // The application set or cleared tokens meanwhile: theirs stand.
            Ok(_) if superseded => {
                let current = self.shared.current.load_full();
                let outcome =
                    current.ok_or_else(|| RefreshError::new(RefreshErrorKind::Superseded));
                (outcome, false)
            }
            Ok(tokens) => match self.shared.install(tokens) {
                Ok(entry) => {
                    slot.failure = None;
                    (Ok(entry), true)
                }
                // A token that cannot be sent: back off like any transient failure rather
                // than call the refresher again on every request.
                Err(error) => {
                    let class = Class::Transient { retry_after: None };
                    let failure =
                        Failure::after(slot.failure.as_ref(), error.clone(), class, retry);
                    slot.failure = Some(failure);
                    (Err(error), false)
                }
            },
            Err((error, class)) => {
                let failure = Failure::after(slot.failure.as_ref(), error.clone(), class, retry);
                self.allow_background_refresh_at(failure.retry_at);
                if !superseded {
                    slot.failure = Some(failure);
                }
                (Err(error), false)
            }
        }
    }

    /// A soft-window token whose background refresh failed gets another one once the backoff
    /// ends (never, after a terminal failure).
    fn allow_background_refresh_at(&self, at: Option<Instant>) {
        let (Some(at), Some(current)) = (at, self.shared.current.load_full()) else {
            return;
        };
        let current = Arc::downgrade(&current);
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            if let Some(current) = current.upgrade() {
                current.background_refresh.store(false, Ordering::Release);
            }
        });
    }
}

impl Drop for FlightTask {
    fn drop(&mut self) {
        let mut slot = lock(&self.shared.slot);
        slot.end_flight(self.id);
        if !self.settled && self.shared.epoch.load(Ordering::Relaxed) == self.epoch {
            let retry = lock(&self.shared.config).retry;
            let error = RefreshError::new(RefreshErrorKind::Aborted);
            let class = Class::Transient { retry_after: None };
            slot.failure = Some(Failure::after(slot.failure.as_ref(), error, class, &retry));
        }
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

/// Displays an error with its causes, `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(error) = source {
            write!(f, ": {error}")?;
            source = error.source();
        }
        Ok(())
    }
}

fn aborted() -> Outcome {
    Err(RefreshError::new(RefreshErrorKind::Aborted))
}

fn millis(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
}

/// Locks a mutex that no code panics while holding; a poisoned one is still consistent.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
