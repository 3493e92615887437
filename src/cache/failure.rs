//! What the cache remembers of a failed refresh: terminal failures stop further attempts until
//! the application acts; transient ones back off, exponentially with jitter, honouring the
//! server's `Retry-After`.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use tokio::time::Instant;

use crate::refresh::{BoxError, RefreshError, RefreshErrorKind, TerminalError};

/// How long a refresh may take, and how long to wait after failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Retry {
    pub(crate) timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
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
            use crate::oauth2::ErrorKind;
            return match error.kind() {
                ErrorKind::Transient | ErrorKind::InvalidResponse => Class::Transient {
                    retry_after: error.retry_after(),
                },
                _ => Class::Terminal,
            };
        }
        cause = error.source();
    }
    Class::Transient { retry_after: None }
}

/// The last failed refresh.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    pub(crate) error: RefreshError,
    /// `None`: terminal, no retry until the application acts.
    pub(crate) retry_at: Option<Instant>,
    /// Consecutive transient failures.
    pub(crate) attempts: u32,
}

impl Failure {
    /// The failure after `previous`, for an error of class `class`.
    pub(crate) fn after(
        previous: Option<&Failure>,
        error: RefreshError,
        class: Class,
        retry: &Retry,
    ) -> Self {
        let attempts = previous
            .map_or(0, |failure| failure.attempts)
            .saturating_add(1);
        let retry_at = match class {
            Class::Terminal => None,
            Class::Transient { retry_after } => {
                let wait = backoff(attempts, retry).max(retry_after.unwrap_or_default());
                Some(Instant::now() + wait)
            }
        };
        Self {
            error,
            retry_at,
            attempts,
        }
    }

    /// The error to give instead of trying, while this failure stands.
    pub(crate) fn blocks(&self, now: Instant) -> Option<&RefreshError> {
        match self.retry_at {
            Some(at) if now >= at => None,
            _ => Some(&self.error),
        }
    }
}

/// The wait after the `attempts`-th consecutive failure: doubling from the minimum up to the
/// maximum, the upper half of it random ("equal jitter"), so that many clients that failed
/// together do not retry together.
fn backoff(attempts: u32, retry: &Retry) -> Duration {
    let doubling = 2u32.saturating_pow(attempts.saturating_sub(1).min(30));
    let ceiling = retry
        .backoff_min
        .saturating_mul(doubling)
        .min(retry.backoff_max);
    let half = ceiling / 2;
    // A fresh `RandomState` is randomly keyed: enough randomness for jitter, no dependency.
    let random = RandomState::new().hash_one(attempts);
    let jitter = half.mul_f64((random % 10_000) as f64 / 10_000.0);
    half + jitter
}

/// The error for a refresh that ran out of time.
pub(crate) fn timed_out() -> (RefreshError, Class) {
    (
        RefreshError::new(RefreshErrorKind::Timeout),
        Class::Transient { retry_after: None },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds_with_jitter() {
        let retry = Retry::default();
        for (attempts, ceiling) in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (40, 60)] {
            let ceiling = Duration::from_secs(ceiling);
            for _ in 0..50 {
                let wait = backoff(attempts, &retry);
                assert!(
                    wait >= ceiling / 2 && wait <= ceiling,
                    "{attempts}: {wait:?}"
                );
            }
        }
        let waits: std::collections::HashSet<_> = (0..20).map(|_| backoff(5, &retry)).collect();
        assert!(waits.len() > 1, "jitter varies");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_floor() {
        let error = RefreshError::new(RefreshErrorKind::Timeout);
        let class = Class::Transient {
            retry_after: Some(Duration::from_secs(120)),
        };
        let failure = Failure::after(None, error, class, &Retry::default());
        let now = Instant::now();
        assert!(failure.blocks(now + Duration::from_secs(119)).is_some());
        assert!(failure.blocks(now + Duration::from_secs(120)).is_none());
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
        assert_eq!(classify(&other), Class::Transient { retry_after: None });
    }
}
