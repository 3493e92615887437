//! Waiting for a token: a future with a name, so that a waiting request holds it inline (no
//! box of its own), and a flight's outcome published once to its waiters.
//!
//! A flight publishes into a [`Published`] cell and wakes every waiter through tokio
//! [`Notify`]s (a few lists, woken at once); each waiter holds the cell and its place in one
//! list, nothing more.
//! The wait borrows the cache it waits on when polled instead of holding a clone of it.

use std::future::poll_fn;
use std::pin::{Pin, pin};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

use super::entry::Phase;
use super::{Entry, Join, Outcome, TokenCache, Windows, aborted, metrics};
use crate::refresh::{RefreshError, RefreshErrorKind, RefreshReason};

/// One flight's outcome: set once (a timeout that releases the waiters, or the result), then
/// every waiter is woken. After a timeout, the late result is kept too: a waiter that looks
/// only after it came (its task was not polled meanwhile) gets it.
pub(super) struct Published {
    outcome: OnceLock<Outcome>,
    late: OnceLock<Outcome>,
    /// The waiters' lists: each waiter takes a place in the next one in turn.
    lists: [Arc<Notify>; LISTS],
    next: AtomicUsize,
}

/// How many lists a flight's waiters are in. Woken from the waiters' runtime, each list is
/// woken by a task of its own, so two workers wake a stampede's waiters at once instead of
/// one (in the stampede bench, `expired_token` 1.08–1.11 of the ideal single flight in four
/// runs, against 1.11–1.12 in four with one list).
const LISTS: usize = 2;

/// A place in the list of one flight's waiters.
pub(super) struct Waiter {
    published: Arc<Published>,
    notified: OwnedNotified,
}

impl Published {
    /// The cell a new flight publishes into, with its publisher, which wakes the waiters from
    /// the runtime `wake_from` if given.
    pub(super) fn new(wake_from: Option<Handle>) -> (Publisher, Arc<Published>) {
        let published = Arc::new(Published {
            outcome: OnceLock::new(),
            late: OnceLock::new(),
            lists: std::array::from_fn(|_| Arc::new(Notify::new())),
            next: AtomicUsize::new(0),
        });
        let publisher = Publisher {
            published: Arc::clone(&published),
            wake_from,
            woken: false,
        };
        (publisher, published)
    }

    /// The late result if there is one, else the first outcome.
    fn latest(&self) -> Option<&Outcome> {
        self.late.get().or_else(|| self.outcome.get())
    }

    /// A waiter for this outcome. Its place is taken now: an outcome published after this
    /// call wakes it, however late it is first polled.
    pub(super) fn waiter(self: &Arc<Self>) -> Waiter {
        Waiter {
            published: Arc::clone(self),
            notified: Arc::clone(&self.lists[self.next.fetch_add(1, Relaxed) % LISTS])
                .notified_owned(),
        }
    }
}

/// How long a flight lets the runtime it wakes its waiters from take before it wakes them
/// itself: that runtime may be idle (a current-thread runtime nobody drives) or gone.
const WAKE_THERE_WITHIN: Duration = Duration::from_millis(1);

/// What a flight publishes with. Dropped without publishing (its flight was dropped: the
/// runtime it ran on shut down), it gives its waiters an `Aborted` error; dropped before its
/// waiters were surely woken, it wakes them.
pub(super) struct Publisher {
    published: Arc<Published>,
    /// Where to wake the waiters from, if not from where the flight runs.
    wake_from: Option<Handle>,
    woken: bool,
}

impl Publisher {
    /// Gives `outcome` to every waiter. After an outcome was given already (the waiters were
    /// released at the refresh timeout), it is kept for those that have not looked yet.
    pub(super) fn publish(&mut self, outcome: Outcome) {
        if let Some(outcome) = self.first(outcome) {
            let _ = self.published.late.set(outcome);
            return;
        }
        self.wake();
    }

    /// Sets the first outcome; gives `outcome` back if there was one.
    fn first(&self, outcome: Outcome) -> Option<Outcome> {
        self.published.outcome.set(outcome).err()
    }

    /// [`publish`](Self::publish), waking the waiters from the runtime of the request that
    /// started the flight if there is one (each wake-up is then a push on that runtime's own
    /// queue); after [`WAKE_THERE_WITHIN`] without news from there, or if that runtime is
    /// gone, from here.
    pub(super) async fn publish_there(&mut self, outcome: Outcome) {
        if let Some(outcome) = self.first(outcome) {
            let _ = self.published.late.set(outcome);
            return;
        }
        let Some(there) = self.wake_from.take() else {
            return self.wake();
        };
        let wakers = self
            .published
            .lists
            .clone()
            .map(|list| there.spawn(async move { list.notify_waiters() }));
        let woken = async move {
            for waker in wakers {
                waker.await?;
            }
            Ok::<_, tokio::task::JoinError>(())
        };
        if let Ok(Ok(())) = tokio::time::timeout(WAKE_THERE_WITHIN, woken).await {
            self.woken = true;
        } else {
            self.wake();
        }
    }

    fn wake(&mut self) {
        for list in &self.published.lists {
            list.notify_waiters();
        }
        self.woken = true;
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.published.outcome.set(aborted()).is_ok() || !self.woken {
            self.wake();
        }
    }
}

/// What a [`Wait`] waits for.
#[derive(Clone, Copy)]
enum Goal {
    /// A token fit to be sent now.
    Acquire,
    /// A token newer than the rejected generation.
    AfterRejection(u64),
    /// The application's refresh: joins the one running, else starts one.
    Forced,
}

pin_project! {
    /// Waits for a token. Nothing happens until it is first polled (as with an `async fn`):
    /// a request future dropped unpolled starts no refresh.
    pub(crate) struct Wait {
        windows: Windows,
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Start { goal: Goal },
        Flight {
            // The token found wanting, served if the refresh fails while it is still valid.
            seen: Option<Arc<Entry>>,
            published: Arc<Published>,
            #[pin]
            notified: OwnedNotified,
            // Whether `notified` took its place in the list (was polled and pending).
            listed: bool,
        },
        // Known without waiting.
        Known { outcome: Outcome },
    }
}

impl Wait {
    /// A token fit to be sent now, waiting for a refresh when there is none.
    pub(crate) fn acquire(windows: Windows) -> Self {
        Self::new(Goal::Acquire, windows)
    }

    /// A token to retry with after the server rejected generation `rejected`: the newer
    /// token if one exists already, else the outcome of one refresh.
    pub(crate) fn after_rejection(rejected: u64, windows: Windows) -> Self {
        Self::new(Goal::AfterRejection(rejected), windows)
    }

    fn new(goal: Goal, windows: Windows) -> Self {
        Self {
            windows,
            state: State::Start { goal },
        }
    }

    /// Polls the wait on `cache`, which must be the cache of every earlier poll.
    pub(crate) fn poll_on(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        cache: &TokenCache,
    ) -> Poll<Outcome> {
        self.poll_entry(cx, cache).map_ok(Arc::clone)
    }

    /// [`poll_on`](Self::poll_on), the token lent by the wait: the waiters of a flight take
    /// no reference count of the token they all get (one cache line written by each of
    /// thousands of waiters at once, on every thread). Polled again once ready, it answers
    /// from what is there then: the late result after a timeout, a fallback token only while
    /// it is valid.
    pub(crate) fn poll_entry<'a>(
        self: Pin<&'a mut Self>,
        cx: &mut Context<'_>,
        cache: &TokenCache,
    ) -> Poll<Result<&'a Arc<Entry>, RefreshError>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Start { goal } => {
                    let goal = *goal;
                    match start(cache, goal, this.windows) {
                        Started::Done(outcome) => this.state.set(State::Known { outcome }),
                        Started::Wait(
                            seen,
                            Waiter {
                                published,
                                notified,
                            },
                        ) => this.state.set(State::Flight {
                            seen,
                            published,
                            notified,
                            listed: false,
                        }),
                    }
                }
                StateProj::Flight {
                    published,
                    mut notified,
                    listed,
                    ..
                } => {
                    // Woken once published (or dropped, which publishes too). A place taken
                    // in the list is polled once more even when the outcome is there: tokio
                    // lets a woken one go without a lock then, where its drop would take the
                    // lock of the list that every waiter of the flight is in, all of them
                    // ending at once. One never listed is left as it is (its drop takes no
                    // lock).
                    if published.latest().is_some() {
                        if *listed {
                            let _ = notified.poll(cx);
                        }
                        break;
                    }
                    if notified.as_mut().poll(cx).is_pending() {
                        *listed = true;
                        if published.latest().is_none() {
                            return Poll::Pending;
                        }
                    }
                    break;
                }
                StateProj::Known { .. } => break,
            }
        }
        Poll::Ready(match this.state.project() {
            StateProj::Known { outcome } => outcome.as_ref().map_err(Clone::clone),
            StateProj::Flight {
                seen, published, ..
            } => match published.latest() {
                Some(Ok(entry)) => Ok(entry),
                Some(Err(error)) => fall_back(error, seen.as_ref(), cache),
                None => fall_back(
                    &RefreshError::new(RefreshErrorKind::Aborted),
                    seen.as_ref(),
                    cache,
                ),
            },
            StateProj::Start { .. } => unreachable!("a wait's start is left before it is ready"),
        })
    }
}

impl TokenCache {
    /// A token fit to be sent now, waiting for a refresh when there is none.
    pub(crate) async fn acquire(&self, windows: Windows) -> Outcome {
        self.wait_for(Wait::acquire(windows)).await
    }

    /// A token to retry with after the server rejected generation `rejected`.
    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(crate) async fn after_rejection(&self, rejected: u64, windows: Windows) -> Outcome {
        self.wait_for(Wait::after_rejection(rejected, windows))
            .await
    }

    /// A refresh asked for by the application: joins the one running, else starts one.
    pub(crate) async fn force(&self, windows: Windows) -> Outcome {
        self.wait_for(Wait::new(Goal::Forced, windows)).await
    }

    async fn wait_for(&self, wait: Wait) -> Outcome {
        let mut wait = pin!(wait);
        poll_fn(|cx| wait.as_mut().poll_on(cx, self)).await
    }
}

enum Started {
    Done(Outcome),
    Wait(Option<Arc<Entry>>, Waiter),
}

/// The part of a wait that does not wait: a token fit now, a failure, or a flight to join.
fn start(cache: &TokenCache, goal: Goal, windows: &Windows) -> Started {
    let (reason, seen) = match goal {
        Goal::Acquire => {
            let now = cache.now();
            let seen = cache.current_full();
            let reason = match &seen {
                None => RefreshReason::NoToken,
                Some(entry) => match entry.phase(now, windows) {
                    Phase::Fresh => return Started::Done(Ok(Arc::clone(entry))),
                    Phase::Soft => {
                        cache.refresh_in_background(entry, now, windows);
                        return Started::Done(Ok(Arc::clone(entry)));
                    }
                    Phase::Hard if entry.is_expired(now) => RefreshReason::Expired,
                    Phase::Hard => RefreshReason::Expiring,
                },
            };
            metrics::waited();
            (reason, seen)
        }
        Goal::AfterRejection(rejected) => {
            metrics::retried();
            return match cache.join(RefreshReason::Rejected, Some(rejected), windows) {
                Ok(Join::Ready(entry)) => Started::Done(Ok(entry)),
                Ok(Join::Wait(waiter)) => Started::Wait(None, waiter),
                Err(error) => Started::Done(Err(error)),
            };
        }
        Goal::Forced => (RefreshReason::Forced, None),
    };
    match cache.join(reason, seen.as_ref().map(|e| e.generation), windows) {
        Ok(Join::Ready(entry)) => Started::Done(Ok(entry)),
        Ok(Join::Wait(waiter)) => Started::Wait(seen, waiter),
        Err(error) => {
            let outcome = fall_back(&error, seen.as_ref(), cache).map(Arc::clone);
            Started::Done(outcome)
        }
    }
}

/// A failed refresh does not stop a token that is still valid from being served.
fn fall_back<'a>(
    error: &RefreshError,
    seen: Option<&'a Arc<Entry>>,
    cache: &TokenCache,
) -> Result<&'a Arc<Entry>, RefreshError> {
    match seen {
        Some(seen)
            if !seen.is_expired(cache.now()) && error.kind() != RefreshErrorKind::Superseded =>
        {
            Ok(seen)
        }
        _ => Err(error.clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::refresh::RefreshError;

    fn failed(kind: RefreshErrorKind) -> Outcome {
        Err(RefreshError::new(kind))
    }

    /// Waits for `waiter` on the current runtime: its outcome's error kind, or `None` after
    /// `limit`.
    async fn kind_within(waiter: Waiter, limit: Duration) -> Option<RefreshErrorKind> {
        let Waiter {
            published,
            notified,
        } = waiter;
        // What is there, else what comes once woken.
        if published.latest().is_none() {
            tokio::time::timeout(limit, notified).await.ok()?;
        }
        let outcome = published.latest().cloned().expect("woken after publishing");
        Some(outcome.err().expect("an error was published").kind())
    }

    #[tokio::test]
    async fn a_waiter_gets_the_latest_outcome_when_it_looks() {
        let (mut publisher, published) = Published::new(None);
        let (prompt, slow) = (published.waiter(), published.waiter());
        publisher.publish(failed(RefreshErrorKind::Timeout));
        assert_eq!(
            kind_within(prompt, Duration::from_secs(5)).await,
            Some(RefreshErrorKind::Timeout)
        );
        // The late result: for the waiter that had not looked yet, and for later ones.
        publisher.publish(failed(RefreshErrorKind::Superseded));
        let late = published.waiter();
        for waiter in [slow, late] {
            assert_eq!(
                kind_within(waiter, Duration::from_secs(5)).await,
                Some(RefreshErrorKind::Superseded)
            );
        }
        // Dropped after both: nothing changes.
        drop(publisher);
        assert_eq!(
            published.latest().unwrap().as_ref().err().unwrap().kind(),
            RefreshErrorKind::Superseded
        );
    }

    #[tokio::test]
    async fn a_publisher_dropped_unpublished_aborts_its_waiters() {
        let (publisher, published) = Published::new(None);
        let waiter = published.waiter();
        drop(publisher);
        assert_eq!(
            kind_within(waiter, Duration::from_secs(5)).await,
            Some(RefreshErrorKind::Aborted)
        );
    }

    /// The runtime to wake from is alive but nobody drives it: the waiters of other runtimes
    /// are woken from where the flight runs, a moment later.
    #[test]
    fn an_idle_runtime_to_wake_from_delays_the_wake_up_a_moment() {
        let idle = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let flight = tokio::runtime::Runtime::new().unwrap();
        let (mut publisher, published) = Published::new(Some(idle.handle().clone()));
        let waiter = published.waiter();
        let woken = flight.spawn(kind_within(waiter, Duration::from_secs(5)));
        let started = Instant::now();
        flight.block_on(publisher.publish_there(failed(RefreshErrorKind::Timeout)));
        let kind = flight.block_on(woken).unwrap();
        assert_eq!(kind, Some(RefreshErrorKind::Timeout));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    /// Waiters in every list are woken: none is left in a list that only its own wake-up
    /// task would reach.
    #[test]
    fn every_list_is_woken() {
        let there = tokio::runtime::Runtime::new().unwrap();
        let flight = tokio::runtime::Runtime::new().unwrap();
        let (mut publisher, published) = Published::new(Some(there.handle().clone()));
        let woken: Vec<_> = (0..LISTS * 3)
            .map(|_| there.spawn(kind_within(published.waiter(), Duration::from_secs(5))))
            .collect();
        flight.block_on(publisher.publish_there(failed(RefreshErrorKind::Timeout)));
        for waiter in woken {
            assert_eq!(
                there.block_on(waiter).unwrap(),
                Some(RefreshErrorKind::Timeout)
            );
        }
    }

    /// The runtime to wake from shut down (the request that started the flight had a runtime
    /// of its own): the waiters are woken from where the flight runs.
    #[test]
    fn a_runtime_to_wake_from_that_is_gone_wakes_nobody_late() {
        let gone = tokio::runtime::Runtime::new().unwrap();
        let there = gone.handle().clone();
        drop(gone);
        let flight = tokio::runtime::Runtime::new().unwrap();
        let (mut publisher, published) = Published::new(Some(there));
        let woken = flight.spawn(kind_within(published.waiter(), Duration::from_secs(5)));
        flight.block_on(publisher.publish_there(failed(RefreshErrorKind::Timeout)));
        assert_eq!(
            flight.block_on(woken).unwrap(),
            Some(RefreshErrorKind::Timeout)
        );
    }

    /// The flight is dropped while it waits for the wake-up over there (its own runtime shuts
    /// down): the waiters are still woken.
    #[test]
    fn a_publisher_dropped_before_the_wake_up_there_wakes_here() {
        let idle = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (mut publisher, published) = Published::new(Some(idle.handle().clone()));
        let waiter = published.waiter();
        let flight = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        {
            let mut publish =
                std::pin::pin!(publisher.publish_there(failed(RefreshErrorKind::Timeout)));
            // Polled once: published, the wake-up sent over there, now waiting for it.
            let polled = flight.block_on(async {
                std::future::poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await
            });
            assert!(polled.is_pending());
        }
        drop(publisher);
        let other = tokio::runtime::Runtime::new().unwrap();
        assert_eq!(
            other.block_on(kind_within(waiter, Duration::from_secs(1))),
            Some(RefreshErrorKind::Timeout)
        );
    }
}
