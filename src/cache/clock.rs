//! The cache's clock: what "now" is on the hot path.
//!
//! By default the system's coarse monotonic clock (`CLOCK_MONOTONIC_COARSE` on Linux): a read
//! costs a few nanoseconds and is a few milliseconds coarse, which is nothing against token
//! lifetimes of minutes. A layer pinned to a tokio runtime reads tokio's clock instead, so that
//! a test that pauses and advances tokio's clock moves the tokens' phases with it.
//!
//! Readings are [`Ticks`], 2⁻³² s since an arbitrary point; every conversion saturates, so no
//! duration, however large, can overflow.
//!
//! Both clocks are monotonic and, like every monotonic clock, do not advance while the machine
//! is suspended: after a resume, a token whose lifetime passed during the sleep is still seen
//! as valid until its server answers 401, which then refreshes it.

use std::time::Duration;

/// A reading of the clock, or a span of it: 2⁻³² s.
pub(crate) type Ticks = u64;

/// Ticks in one second.
const PER_SECOND: u64 = 1 << 32;

/// Where the cache reads the time.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Clock {
    /// The system's coarse monotonic clock.
    System,
    /// Tokio's clock (which tests can pause), measured from `base`.
    Tokio { base: tokio::time::Instant },
}

impl Clock {
    /// Tokio's clock, from now.
    pub(crate) fn tokio() -> Self {
        Self::Tokio {
            base: tokio::time::Instant::now(),
        }
    }

    /// Now.
    #[inline]
    pub(crate) fn now(&self) -> Ticks {
        match self {
            Self::System => coarsetime::Instant::now_without_cache_update().as_ticks(),
            Self::Tokio { base } => ticks(base.elapsed()),
        }
    }

    /// The reading at a tokio instant (as token sets carry them), by its distance from now.
    pub(crate) fn at(&self, instant: tokio::time::Instant) -> Ticks {
        let (now, tokio_now) = (self.now(), tokio::time::Instant::now());
        if instant >= tokio_now {
            now.saturating_add(ticks(instant - tokio_now))
        } else {
            now.saturating_sub(ticks(tokio_now - instant))
        }
    }
}

/// A duration in ticks, saturating.
pub(crate) fn ticks(duration: Duration) -> Ticks {
    let fraction = (u64::from(duration.subsec_nanos()) << 32) / 1_000_000_000;
    duration
        .as_secs()
        .saturating_mul(PER_SECOND)
        .saturating_add(fraction)
}

/// Ticks as a duration.
pub(crate) fn duration(ticks: Ticks) -> Duration {
    let nanos = ((ticks & (PER_SECOND - 1)) * 1_000_000_000) >> 32;
    Duration::new(ticks >> 32, nanos as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip_and_saturate() {
        for d in [
            Duration::ZERO,
            Duration::from_millis(1),
            Duration::from_secs(900),
            Duration::from_nanos(1_500_000_001),
        ] {
            let back = duration(ticks(d));
            assert!(
                d.saturating_sub(back) < Duration::from_nanos(2),
                "{d:?} {back:?}"
            );
        }
        assert_eq!(ticks(Duration::MAX), u64::MAX);
        assert!(duration(u64::MAX) > Duration::from_secs(100 * 365 * 24 * 3600));
    }

    #[test]
    fn the_system_clock_advances() {
        let clock = Clock::System;
        let start = clock.now();
        std::thread::sleep(Duration::from_millis(30));
        let waited = duration(clock.now() - start);
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_follows_a_paused_runtime() {
        let clock = Clock::tokio();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(duration(clock.now() - start), Duration::from_secs(600));
        let later = tokio::time::Instant::now() + Duration::from_secs(60);
        assert_eq!(
            duration(clock.at(later) - clock.now()),
            Duration::from_secs(60)
        );
    }
}
