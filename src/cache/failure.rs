//! What the cache remembers of a failed refresh: terminal failures stop further attempts until
//! the application acts; transient ones back off, exponentially with jitter, honouring the
//! server's `Retry-After`.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use super::clock::{Ticks, duration, ticks};
use crate::refresh::{BoxError, Cached, RefreshError, TerminalError};

/// How long waiters wait for a refresh, how long one exchange may run, and how long to wait
/// after failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Waiters get a timeout error after this; the exchange goes on.
    pub(crate) timeout: Duration,
    /// One exchange is abandoned after this (at least `timeout`).
    pub(crate) exchange_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            exchange_timeout: Duration::from_secs(120),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// Whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// Credentials or configuration refused: only the application can change that.
    Terminal,
    /// May pass: try again after a while (at least `retry_after`, if the server said).
    Transient { retry_after: Option<Duration> },
}

impl Class {
    pub(crate) const TRANSIENT: Self = Self::Transient { retry_after: None };
}

/// Classifies a refresher's error: [`TerminalError`] and the OAuth2 refresher's refusals are
/// terminal; everything else (network, 5xx, 429, timeouts, unknown errors) is transient.
pub(crate) fn classify(error: &BoxError) -> Class {
    // Walk the cause chain: a refresher wrapped in `map_err` keeps its classification.
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(error) = cause {
        if error.is::<TerminalError>() {
            return Class::Terminal;
        }
        #[cfg(feature = "oauth2")]
        if let Some(error) = error.downcast_ref::<crate::oauth2::Error>() {
            return if error.is_transient() {
                Class::Transient {
                    retry_after: error.retry_after(),
                }
            } else {
                Class::Terminal
            };
        }
        cause = error.source();
    }
    Class::TRANSIENT
}

/// A refresh token the server issued in an answer that failed otherwise (the OAuth2
/// refresher's [`Error::refresh_token`](crate::oauth2::Error::refresh_token)), anywhere in the
/// cause chain.
pub(crate) fn issued_refresh_token(error: &BoxError) -> Option<crate::token::RefreshToken> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
    while let Some(error) = cause {
        #[cfg(feature = "oauth2")]
        if let Some(error) = error.downcast_ref::<crate::oauth2::Error>() {
            return error.refresh_token().cloned();
        }
        cause = error.source();
    }
    None
}

/// The last failed refresh.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) error: RefreshError,
    /// `None`: terminal, no retry until the application acts.
    pub(crate) retry_at: Option<Ticks>,
    /// Consecutive transient failures.
    pub(crate) attempts: u32,
}

impl Failure {
    /// The failure after `previous`, for an error of class `class`, at `now`.
    pub(crate) fn after(
        previous: Option<&Failure>,
        error: RefreshError,
        class: Class,
        retry: &Retry,
        now: Ticks,
    ) -> Self {
        let attempts = previous
            .map_or(0, |failure| failure.attempts)
            .saturating_add(1);
        let retry_at = match class {
            Class::Terminal => None,
            Class::Transient { retry_after } => {
                let wait = backoff(attempts, retry.backoff_min, retry.backoff_max)
                    .max(retry_after.unwrap_or_default());
                Some(now.saturating_add(ticks(wait)))
            }
        };
        Self {
            error,
            retry_at,
            attempts,
        }
    }

    /// The error to give instead of trying, while this failure stands: marked as cached.
    pub(crate) fn blocks(&self, now: Ticks) -> Option<RefreshError> {
        match self.retry_at {
            Some(at) if now >= at => None,
            Some(at) => Some(self.error.clone().cached(Cached::For(duration(at - now)))),
            None => Some(self.error.clone().cached(Cached::UntilTheApplicationActs)),
        }
    }
}

/// The wait after the `attempts`-th consecutive failure: doubling from `min` up to `max`, the
/// upper half of it random ("equal jitter"), so that many clients that failed together do not
/// retry together.
pub(crate) fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let doubling = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    let ceiling = min.saturating_mul(doubling).min(max.max(min));
    let half = ceiling / 2;
    // A fresh `RandomState` is randomly keyed: enough randomness for jitter, no dependency.
    let random = RandomState::new().hash_one(attempts) % 10_000;
    // Integer arithmetic: no float conversion can overflow, whatever the durations.
    let jitter = (half / 10_000).saturating_mul(random as u32);
    half.saturating_add(jitter)
}

/// Inside one flight, for waiters that have no token to fall back on: this many quick
/// retries of a transient failure before they get the error.
pub(crate) const QUICK_RETRIES: u32 = 4;
/// The first quick retry waits about this long, each next one twice as long.
const QUICK_BACKOFF: Duration = Duration::from_millis(150);

/// The wait before the `attempt`-th quick retry (1-based).
pub(crate) fn quick_backoff(attempt: u32) -> Duration {
    backoff(attempt, QUICK_BACKOFF, Duration::from_secs(5))
}

/// Rejections of tokens got because of a rejection: an API that answers 401 for another reason
/// than the token must not cost a refresh per request.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Repeats {
    count: u32,
    blocked_until: Ticks,
}

impl Repeats {
    /// Whether a rejection at `now` may refresh.
    pub(crate) fn allow(&self, now: Ticks) -> bool {
        now >= self.blocked_until
    }

    /// A token got because of a rejection was rejected before any response accepted it: no
    /// refresh because of a rejection before the backoff, which doubles with each repeat.
    pub(crate) fn record(&mut self, now: Ticks, retry: &Retry) {
        self.count = self.count.saturating_add(1);
        let wait = backoff(self.count, retry.backoff_min, retry.backoff_max);
        self.blocked_until = now.saturating_add(ticks(wait));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refresh::RefreshErrorKind;

    #[test]
    fn backoff_doubles_within_bounds_with_jitter() {
        let retry = Retry::default();
        for (attempts, ceiling) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let ceiling = Duration::from_secs(ceiling);
            for _ in 0..50 {
                let wait = backoff(attempts, retry.backoff_min, retry.backoff_max);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{attempts}: {wait:?}"
                );
            }
        }
        let waits: std::collections::HashSet<_> = (0..20)
            .map(|_| backoff(5, retry.backoff_min, retry.backoff_max))
            .collect();
        assert!(waits.len() > 1, "jitter varies");
        assert!(backoff(u32::MAX, Duration::MAX, Duration::MAX) >= Duration::MAX / 2);
    }

    #[test]
    fn retry_after_is_a_floor_and_cached_errors_say_so() {
        let error = RefreshError::new(RefreshErrorKind::Timeout);
        let class = Class::Transient {
            retry_after: Some(Duration::from_secs(120)),
        };
        let failure = Failure::after(None, error, class, &Retry::default(), 0);
        let cached = failure.blocks(ticks(Duration::from_secs(119))).unwrap();
        assert!(cached.is_cached());
        assert!(
            cached.to_string().contains("not retried for another 1"),
            "{cached}"
        );
        assert!(failure.blocks(ticks(Duration::from_secs(120))).is_none());
    }

    #[test]
    fn extreme_durations_saturate() {
        let retry = Retry {
            backoff_min: Duration::MAX,
            backoff_max: Duration::MAX,
            ..Retry::default()
        };
        let error = RefreshError::new(RefreshErrorKind::Timeout);
        let failure = Failure::after(None, error, Class::TRANSIENT, &retry, u64::MAX - 1);
        assert_eq!(failure.retry_at, Some(u64::MAX));
        let mut repeats = Repeats::default();
        repeats.record(u64::MAX, &retry);
        assert!(!repeats.allow(u64::MAX - 1));
    }

    #[test]
    fn terminal_errors_are_recognised() {
        let terminal: BoxError = Box::new(TerminalError::new("credentials revoked"));
        assert_eq!(classify(&terminal), Class::Terminal);
        #[derive(Debug)]
        struct Wrapped(TerminalError);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("wrapped")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let wrapped: BoxError = Box::new(Wrapped(TerminalError::new("revoked")));
        assert_eq!(classify(&wrapped), Class::Terminal);
        let other: BoxError = "connection reset".into();
        assert_eq!(classify(&other), Class::TRANSIENT);
    }
}
