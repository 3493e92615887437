//! One token as the cache serves it: the header built once, the generation, and the phase
//! that a timer moves through the refresh windows.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use tokio::runtime::Handle;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::windows::Schedule;
use crate::token::TokenSet;

/// Where a token stands: moved forward by a timer, read on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub(crate) enum Phase {
    /// Valid and not yet in any window.
    Fresh = 0,
    /// In the soft window: still served, refreshed in the background.
    Soft = 1,
    /// In the hard window or expired: requests wait for a refresh.
    Hard = 2,
    /// No timer runs for this token yet (it was installed outside a runtime): ask the clock.
    Unarmed = 3,
}

impl Phase {
    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Fresh,
            1 => Self::Soft,
            2 => Self::Hard,
            _ => Self::Unarmed,
        }
    }
}

/// A token installed in the cache.
pub(crate) struct Entry {
    pub(crate) tokens: TokenSet,
    /// `Bearer <token>`, marked sensitive; cloning it is a reference count.
    pub(crate) header: HeaderValue,
    pub(crate) generation: u64,
    pub(crate) schedule: Schedule,
    phase: Arc<AtomicU8>,
    timer: OnceLock<AbortHandle>,
    /// Set once a request has started the background refresh for this token.
    pub(crate) background_refresh: AtomicBool,
}

impl Entry {
    pub(crate) fn new(
        tokens: TokenSet,
        header: HeaderValue,
        generation: u64,
        schedule: Schedule,
    ) -> Self {
        let entry = Self {
            tokens,
            header,
            generation,
            schedule,
            phase: Arc::new(AtomicU8::new(Phase::Unarmed as u8)),
            timer: OnceLock::new(),
            background_refresh: AtomicBool::new(false),
        };
        entry.arm();
        entry
    }

    /// The phase as last set by the timer: one relaxed load, for the hot path. A late timer
    /// only means a token is sent a little longer, and a 401 then refreshes it. A timer that
    /// ended early (its runtime shut down) no longer moves the phase: the clock decides.
    #[inline]
    pub(crate) fn phase(&self) -> Phase {
        match Phase::from_u8(self.phase.load(Ordering::Relaxed)) {
            phase @ (Phase::Fresh | Phase::Soft) if self.timer_ended() => {
                phase.max(self.phase_at(Instant::now()))
            }
            phase => phase,
        }
    }

    fn timer_ended(&self) -> bool {
        self.timer.get().is_some_and(AbortHandle::is_finished)
    }

    /// The phase by the clock, arming the timer if none runs yet.
    pub(crate) fn phase_now(&self) -> Phase {
        self.arm();
        self.phase_at(Instant::now())
    }

    fn phase_at(&self, now: Instant) -> Phase {
        if now >= self.schedule.hard_at {
            Phase::Hard
        } else if now >= self.schedule.soft_at {
            Phase::Soft
        } else {
            Phase::Fresh
        }
    }

    /// Whether the token has expired.
    pub(crate) fn is_expired(&self) -> bool {
        Instant::now() >= self.schedule.expires_at
    }

    /// Starts the timer that moves the phase at the window edges, when a runtime is there.
    fn arm(&self) {
        if self.timer.get().is_some() {
            return;
        }
        let Ok(runtime) = Handle::try_current() else {
            return;
        };
        let phase = Arc::clone(&self.phase);
        let schedule = self.schedule;
        self.timer.get_or_init(|| {
            let now = Instant::now();
            phase.store(self.phase_at(now) as u8, Ordering::Relaxed);
            runtime
                .spawn(async move {
                    for (at, next) in [
                        (schedule.soft_at, Phase::Soft),
                        (schedule.hard_at, Phase::Hard),
                    ] {
                        tokio::time::sleep_until(at).await;
                        phase.fetch_max(next as u8, Ordering::Relaxed);
                    }
                })
                .abort_handle()
        });
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(timer) = self.timer.get() {
            timer.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::windows::Windows;
    use std::time::Duration;

    fn entry(lifetime: Duration) -> Entry {
        let now = Instant::now();
        let schedule = Windows::default().schedule(now, now + lifetime);
        Entry::new(
            TokenSet::new("t"),
            HeaderValue::from_static("Bearer t"),
            1,
            schedule,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_moves_the_phase_through_the_windows() {
        let entry = entry(Duration::from_secs(900));
        assert_eq!(entry.phase(), Phase::Fresh);
        tokio::time::sleep(Duration::from_secs(841)).await;
        assert_eq!(entry.phase(), Phase::Soft);
        tokio::time::sleep(Duration::from_secs(55)).await;
        assert_eq!(entry.phase(), Phase::Hard);
        assert!(!entry.is_expired());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(entry.is_expired());
    }

    #[test]
    fn without_a_runtime_the_clock_decides() {
        let entry = entry(Duration::from_secs(900));
        assert_eq!(entry.phase(), Phase::Unarmed);
        assert_eq!(entry.phase_now(), Phase::Fresh);
    }
}
