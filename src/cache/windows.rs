//! When, before expiry, a token is refreshed in the background, and when requests wait.

use std::time::Duration;

use tokio::time::Instant;

/// The soft window is at most this share of a token's lifetime: a 3 s token is refreshed
/// 1.5 s before expiry, not 60 s before (which would be at once, and forever).
const SOFT_SHARE: u32 = 2;
/// The hard window is at most this share of a token's lifetime.
const HARD_SHARE: u32 = 10;

/// The refresh windows and the lifetime assumed for tokens of unknown expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Inside this window before expiry, one background refresh starts while the token is
    /// still served.
    pub(crate) soft: Duration,
    /// Inside this window before expiry, requests wait for the refresh.
    pub(crate) hard: Duration,
    /// Lifetime of a token whose expiry is known neither from the refresher nor from its JWT.
    pub(crate) default_lifetime: Duration,
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            soft: Duration::from_secs(60),
            hard: Duration::from_secs(5),
            default_lifetime: Duration::from_secs(300),
        }
    }
}

/// The instants at which a token enters its soft and hard windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub(crate) soft_at: Instant,
    pub(crate) hard_at: Instant,
    pub(crate) expires_at: Instant,
}

impl Windows {
    /// Places the windows for a token issued at `now` that expires at `expires_at`.
    pub(crate) fn schedule(&self, now: Instant, expires_at: Instant) -> Schedule {
        let lifetime = expires_at.saturating_duration_since(now);
        let soft = self.soft.min(lifetime / SOFT_SHARE);
        let hard = self.hard.min(lifetime / HARD_SHARE).min(soft);
        let before = |window: Duration| expires_at.checked_sub(window).unwrap_or(expires_at);
        Schedule {
            soft_at: before(soft),
            hard_at: before(hard),
            expires_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lifetimes_use_the_configured_windows() {
        let now = Instant::now();
        let schedule = Windows::default().schedule(now, now + Duration::from_secs(900));
        assert_eq!(schedule.soft_at, now + Duration::from_secs(840));
        assert_eq!(schedule.hard_at, now + Duration::from_secs(895));
    }

    #[test]
    fn short_lifetimes_cap_the_windows() {
        let now = Instant::now();
        let schedule = Windows::default().schedule(now, now + Duration::from_secs(3));
        assert_eq!(schedule.soft_at, now + Duration::from_millis(1500));
        assert_eq!(schedule.hard_at, now + Duration::from_millis(2700));
    }

    #[test]
    fn expired_tokens_are_in_every_window() {
        let now = Instant::now();
        let schedule = Windows::default().schedule(now, now);
        assert_eq!((schedule.soft_at, schedule.hard_at), (now, now));
    }
}
