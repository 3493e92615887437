//! One refresh ("flight"): runs on the layer's background runtime, detached from every caller.
//!
//! The exchange with the refresher runs in a task of its own. Its waiters are released after
//! the refresh timeout, but the exchange goes on (up to the longer exchange timeout): once a
//! token endpoint has processed a refresh grant the old refresh token may be spent, so its late
//! answer is worth more than anything a new attempt could get. While it runs, no other refresh
//! starts.
//!
//! For waiters that have no token to fall back on, a transient failure is retried inside the
//! flight a few times, quickly (about 150 ms, doubling), within their timeout; the longer
//! backoff applies between flights.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};
use tower::{Service, ServiceExt};
use tracing::instrument::{Instrument, WithSubscriber};

use super::failure::{self, Class, Failure, QUICK_RETRIES};
use super::metrics::{self, Ended};
use super::wait::Publisher;
use super::{Outcome, Shared, TokenEvent, lock};
use crate::refresh::{
    BoxError, Cached, RefreshError, RefreshErrorKind, RefreshReason, RefreshRequest,
};
use crate::store::session::Got;
use crate::token::{TokenSet, instant_after};

/// The spawned refresh. Dropping it before it settled (only a shutdown of the runtime it runs
/// on does that) frees the flight slot without counting a failure: a runtime that goes away is
/// not the refresher's fault.
pub(super) struct FlightTask {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
    /// The application's epoch when the flight started: a set or clear after it wins.
    pub(super) epoch: u64,
    pub(super) reason: RefreshReason,
    pub(super) publish: Publisher,
    pub(super) settled: bool,
}

/// The tokens, and whether they were found in the store rather than got from the refresher.
type Exchanged = Result<(TokenSet, bool), (RefreshError, Class)>;

impl FlightTask {
    pub(super) async fn run(mut self) {
        let retry = self.shared.settings.retry;
        let started = Instant::now();
        let waiters_until = instant_after(started, retry.timeout);
        let exchange_until = instant_after(started, retry.exchange_timeout.max(retry.timeout));
        tracing::debug!(reason = %self.reason, "token refresh started");
        // Quick retries only where waiters have nothing to send meanwhile.
        let quick_until = matches!(
            self.reason,
            RefreshReason::NoToken | RefreshReason::Expired | RefreshReason::Rejected
        )
        .then_some(waiters_until);
        let exchange = exchange(
            Arc::clone(&self.shared),
            self.reason,
            self.epoch,
            quick_until,
        )
        .in_current_span()
        .with_current_subscriber();
        let mut exchange = AbortOnDrop(tokio::spawn(exchange));
        let joined = match first(&mut exchange.0, sleep_until(waiters_until)).await {
            First::Left(joined) => joined,
            First::Right(()) => {
                self.release_waiters();
                match first(&mut exchange.0, sleep_until(exchange_until)).await {
                    First::Left(joined) => joined,
                    First::Right(()) => {
                        tracing::warn!(reason = %self.reason, "token refresh abandoned after the exchange timeout");
                        Ok(Err((
                            RefreshError::new(RefreshErrorKind::Timeout),
                            Class::TRANSIENT,
                        )))
                    }
                }
            }
        };
        let result = joined.unwrap_or_else(|error| {
            // The refresher panicked (a runtime shutdown drops this task too, so it never
            // gets here with a cancelled exchange).
            let _ = error;
            Err((
                RefreshError::new(RefreshErrorKind::Aborted),
                Class::TRANSIENT,
            ))
        });
        let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (outcome, installed) = self.settle(result);
        self.settled = true;
        let ended = match (&outcome, installed) {
            (Ok(_), Some((_, true))) => Ended::Adopted,
            (Ok(_), Some((_, false))) => Ended::Refreshed,
            (Ok(_), None) => Ended::Superseded,
            (Err(error), _) if error.kind() == RefreshErrorKind::Superseded => Ended::Superseded,
            (Err(_), _) => Ended::Failed,
        };
        metrics::refresh_ended(self.reason, ended, started.elapsed());
        match &outcome {
            Ok(entry) => tracing::debug!(
                reason = %self.reason,
                generation = entry.generation,
                elapsed_ms,
                "token refresh succeeded"
            ),
            Err(error) => {
                tracing::warn!(reason = %self.reason, elapsed_ms, %error, "token refresh failed");
            }
        }
        // Before the waiters are told: once a request or `AuthHandle::token` returns with the
        // new token, its hooks have run (a program that exits then loses no rotation).
        if let (Ok(entry), Some((change, adopted))) = (&outcome, installed) {
            let tokens = &entry.tokens;
            let event = if adopted {
                TokenEvent::Adopted { tokens }
            } else {
                TokenEvent::Refreshed {
                    tokens,
                    reason: self.reason,
                }
            };
            self.shared.notify(change, &event);
        } else {
            // A superseded refresh hands its waiters the application's token: not before the
            // hooks of that token ran.
            self.shared.hooks_done();
        }
        self.publish.publish_there(outcome).await;
    }

    /// The refresh timeout passed: every waiter gets a timeout error; requests that come while
    /// the exchange still runs get it at once (a still-valid token is served meanwhile).
    fn release_waiters(&mut self) {
        let error = RefreshError::new(RefreshErrorKind::Timeout);
        {
            let mut slot = lock(&self.shared.slot);
            if let Some(running) = slot.running.as_mut().filter(|r| r.id == self.id) {
                running.late = Some(error.clone().cached(Cached::UntilTheRunningRefreshEnds));
            }
        }
        tracing::warn!(reason = %self.reason, "token refresh timed out; its waiters are released and the exchange goes on");
        metrics::refresh_timed_out(self.reason);
        self.publish.publish(Err(error));
    }

    /// Installs the result (or records the failure) and frees the flight slot in one step
    /// under the slot lock: whoever sees the new token as current also sees no refresh
    /// running, so a 401 for that token starts a refresh of its own instead of joining this
    /// finished one.
    fn settle(&self, result: Exchanged) -> (Outcome, Option<(u64, bool)>) {
        let shared = &self.shared;
        let retry = &shared.settings.retry;
        let now = shared.now();
        let mut slot = lock(&shared.slot);
        slot.end_flight(self.id);
        if shared.epoch() != self.epoch {
            // The application set or cleared tokens meanwhile: theirs stand.
            let outcome = shared
                .current
                .load_full()
                .ok_or_else(|| RefreshError::new(RefreshErrorKind::Superseded));
            return (outcome, None);
        }
        let mut kept = None;
        let prepared = result.map(|(tokens, adopted)| {
            // Kept aside: `prepare` may refuse the access token, and the refresh token in
            // the same answer must not be lost with it.
            let issued = tokens
                .refresh_token()
                .cloned()
                .map(|token| (token, tokens.refresh_expires_at()));
            (
                shared.prepare(tokens, self.reason, now, !adopted),
                adopted,
                issued,
            )
        });
        let error = match prepared {
            Ok((Ok(entry), adopted, _)) if !entry.is_expired(now) => {
                shared.current.store(Some(Arc::clone(&entry)));
                slot.failure = None;
                return (Ok(entry), Some((shared.change(), adopted)));
            }
            // Clock skew, or a stale answer: installing it would make every request refresh.
            // Keep what it may have rotated, back off like any transient failure.
            Ok((Ok(_expired), _, issued)) => {
                if let Some((refresh_token, expires_at)) = issued {
                    kept = shared.keep_refresh_token(&slot, &refresh_token, expires_at);
                }
                (
                    RefreshError::new(RefreshErrorKind::AlreadyExpired),
                    Class::TRANSIENT,
                )
            }
            // A token that cannot be sent: back off rather than call the refresher again on
            // every request; keep the refresh token that came with it.
            Ok((Err(error), _, issued)) => {
                if let Some((refresh_token, expires_at)) = issued {
                    kept = shared.keep_refresh_token(&slot, &refresh_token, expires_at);
                }
                (error, Class::TRANSIENT)
            }
            Err(failed) => failed,
        };
        let (error, class) = error;
        let failure = Failure::after(slot.failure.as_ref(), error.clone(), class, retry, now);
        if let Some(current) = shared.current.load_full() {
            current.allow_background_at(failure.retry_at);
        }
        slot.failure = Some(failure);
        drop(slot);
        if let Some((change, entry)) = kept {
            shared.notify(
                change,
                &TokenEvent::RefreshTokenKept {
                    tokens: &entry.tokens,
                },
            );
        }
        (Err(error), None)
    }
}

impl Drop for FlightTask {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut slot = lock(&self.shared.slot);
        slot.end_flight(self.id);
        if std::thread::panicking() && self.shared.epoch() == self.epoch {
            let error = RefreshError::new(RefreshErrorKind::Aborted);
            let retry = &self.shared.settings.retry;
            let failure = Failure::after(
                slot.failure.as_ref(),
                error,
                Class::TRANSIENT,
                retry,
                self.shared.now(),
            );
            slot.failure = Some(failure);
        }
    }
}

/// Aborts the exchange if the flight is dropped, so no exchange outlives its flight slot.
struct AbortOnDrop(JoinHandle<Exchanged>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Calls the refresher (through the store, if there is one), with quick retries of transient
/// failures until `quick_until`.
async fn exchange(
    shared: Arc<Shared>,
    reason: RefreshReason,
    epoch: u64,
    quick_until: Option<Instant>,
) -> Exchanged {
    let mut attempt = 0;
    loop {
        let result = match shared.settings.store.clone() {
            None => {
                // Each attempt starts from the cache's state now: an earlier attempt may have
                // left a rotated refresh token in it.
                let current = shared.current.load_full().map(|entry| entry.tokens.clone());
                call(&shared, RefreshRequest::new(reason, current))
                    .await
                    .map(|tokens| (tokens, false))
            }
            // The store is the truth: it says which tokens to refresh from (or this process's,
            // if the store lost writes).
            Some(session) => {
                let current = shared.current.load_full().map(|entry| entry.tokens.clone());
                session
                    .refresh(
                        reason,
                        current,
                        || shared.epoch() == epoch,
                        |request| call(&shared, request),
                    )
                    .await
                    .map(|got| match got {
                        Got::Refreshed(tokens) => (tokens, false),
                        Got::Adopted(tokens) => (tokens, true),
                    })
            }
        };
        let error = match result {
            Ok(got) => return Ok(got),
            Err(error) => error,
        };
        if let Some(refresh_token) = failure::issued_refresh_token(&error) {
            // The server may count the old one as spent: the next attempt must present this.
            let slot = lock(&shared.slot);
            let kept = (shared.epoch() == epoch)
                .then(|| shared.keep_refresh_token(&slot, &refresh_token, None))
                .flatten();
            drop(slot);
            if let Some((change, entry)) = kept {
                shared.notify(
                    change,
                    &TokenEvent::RefreshTokenKept {
                        tokens: &entry.tokens,
                    },
                );
            }
        }
        let class = failure::classify(&error);
        attempt += 1;
        if let (Some(until), Class::Transient { retry_after }) = (quick_until, class) {
            let wait = failure::quick_backoff(attempt).max(retry_after.unwrap_or_default());
            if attempt <= QUICK_RETRIES && instant_after(Instant::now(), wait) < until {
                tracing::debug!(
                    %reason,
                    attempt,
                    wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                    error = %error,
                    "token refresh failed; retrying at once for the requests that wait"
                );
                sleep(wait).await;
                continue;
            }
        }
        return Err((RefreshError::refresher(error), class));
    }
}

/// One call of the refresher.
async fn call(shared: &Shared, request: RefreshRequest) -> Result<TokenSet, BoxError> {
    let mut refresher = shared.refresher.lock().await;
    match refresher.ready().await {
        Ok(refresher) => refresher.call(request).await,
        Err(error) => Err(error),
    }
}

enum First<L, R> {
    Left(L),
    Right(R),
}

/// Whichever of `left` (kept for another race) and `right` is ready first, `left` first.
async fn first<L, R>(left: &mut L, right: R) -> First<L::Output, R::Output>
where
    L: Future + Unpin,
    R: Future,
{
    let mut right = std::pin::pin!(right);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = Pin::new(&mut *left).poll(cx) {
            return Poll::Ready(First::Left(output));
        }
        right.as_mut().poll(cx).map(First::Right)
    })
    .await
}
