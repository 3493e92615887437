//! A token installed in the cache, and where it stands by the clock.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;

use super::clock::Ticks;
use super::windows::Windows;
use crate::token::TokenSet;

/// Where a token stands, by the clock and the windows of the layer asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    /// Valid and not yet in any window.
    Fresh,
    /// In the soft window: still served, refreshed in the background.
    Soft,
    /// In the hard window or expired: requests wait for a refresh.
    Hard,
}

/// `next_background` once a background refresh started for the token: none other starts.
const STARTED: Ticks = Ticks::MAX;

/// A token installed in the cache.
///
/// In the order written: what every request reads comes first, beside the reference count,
/// so that a keyed layer's request for a session out of the processor's caches misses once or
/// twice here, not once per field.
#[repr(C)]
pub(crate) struct Entry {
    /// `Bearer <token>`, marked sensitive; cloning it is a reference count.
    pub(crate) header: HeaderValue,
    pub(crate) expires_at: Ticks,
    /// The soft window of a short-lived token is at most half its lifetime: a 3 s token is
    /// refreshed 1.5 s before expiry, not 60 s before (which would be at once, and forever).
    soft_cap: Ticks,
    /// The hard window is at most a tenth of its lifetime.
    hard_cap: Ticks,
    pub(crate) generation: u64,
    /// Whether the token is a Bearer token (no proof to make).
    pub(crate) bearer: bool,
    /// Whether a rejection of the previous token is why this one was got.
    pub(crate) after_rejection: bool,
    pub(crate) tokens: TokenSet,
    /// The same instant on tokio's clock, for reports to the application.
    pub(crate) expires_at_instant: tokio::time::Instant,
    pub(crate) installed_at: Ticks,
    /// When a background refresh may start (after a failed one, once its backoff ends);
    /// [`STARTED`] once one has.
    next_background: AtomicU64,
}

impl Entry {
    pub(crate) fn new(
        tokens: TokenSet,
        header: HeaderValue,
        generation: u64,
        installed_at: Ticks,
        expires_at: (Ticks, tokio::time::Instant),
        after_rejection: bool,
    ) -> Self {
        let (expires_at, expires_at_instant) = expires_at;
        let lifetime = expires_at.saturating_sub(installed_at);
        Self {
            bearer: tokens.token_type() == crate::token::TokenType::Bearer,
            tokens,
            header,
            generation,
            expires_at,
            expires_at_instant,
            installed_at,
            after_rejection,
            soft_cap: lifetime / 2,
            hard_cap: lifetime / 10,
            next_background: AtomicU64::new(0),
        }
    }

    /// The same token with other token-set details (a refresh token issued later): same
    /// header, generation and expiry.
    pub(crate) fn with_tokens(&self, tokens: TokenSet) -> Self {
        Self {
            bearer: tokens.token_type() == crate::token::TokenType::Bearer,
            tokens,
            header: self.header.clone(),
            generation: self.generation,
            expires_at: self.expires_at,
            expires_at_instant: self.expires_at_instant,
            installed_at: self.installed_at,
            after_rejection: self.after_rejection,
            soft_cap: self.soft_cap,
            hard_cap: self.hard_cap,
            next_background: AtomicU64::new(self.next_background.load(Ordering::Relaxed)),
        }
    }

    /// The token's phase at `now` for a layer with these windows: a few integer operations,
    /// for the hot path.
    #[inline]
    pub(crate) fn phase(&self, now: Ticks, windows: &Windows) -> Phase {
        let soft = windows.soft.min(self.soft_cap);
        let hard = windows.hard.min(self.hard_cap).min(soft);
        let left = self.expires_at.saturating_sub(now);
        if left <= hard {
            Phase::Hard
        } else if left <= soft {
            Phase::Soft
        } else {
            Phase::Fresh
        }
    }

    pub(crate) fn is_expired(&self, now: Ticks) -> bool {
        now >= self.expires_at
    }

    /// Claims the background refresh of this token: `true` once per token, and again only
    /// after [`allow_background_at`](Self::allow_background_at).
    #[inline]
    pub(crate) fn claim_background(&self, now: Ticks) -> bool {
        // A load first: once claimed, every later request in the window stops here without
        // writing to the shared cache line.
        let at = self.next_background.load(Ordering::Relaxed);
        now >= at
            && self
                .next_background
                .compare_exchange(at, STARTED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// Lets a background refresh start again at `at` (`None`: never, after a terminal failure).
    pub(crate) fn allow_background_at(&self, at: Option<Ticks>) {
        self.next_background
            .store(at.unwrap_or(STARTED), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::clock::ticks;
    use std::time::Duration;

    fn entry(lifetime: Duration) -> Entry {
        Entry::new(
            TokenSet::new("t"),
            HeaderValue::from_static("Bearer t"),
            1,
            0,
            (ticks(lifetime), tokio::time::Instant::now()),
            false,
        )
    }

    fn at(secs: u64) -> Ticks {
        ticks(Duration::from_secs(secs))
    }

    #[test]
    fn long_lifetimes_use_the_windows() {
        let entry = entry(Duration::from_secs(900));
        let windows = Windows::default();
        assert_eq!(entry.phase(at(839), &windows), Phase::Fresh);
        assert_eq!(entry.phase(at(840), &windows), Phase::Soft);
        assert_eq!(entry.phase(at(894), &windows), Phase::Soft);
        assert_eq!(entry.phase(at(895), &windows), Phase::Hard);
        assert!(!entry.is_expired(at(899)));
        assert!(entry.is_expired(at(900)));
        assert_eq!(entry.phase(at(10_000), &windows), Phase::Hard);
    }

    #[test]
    fn short_lifetimes_cap_the_windows() {
        let entry = entry(Duration::from_secs(3));
        let windows = Windows::default();
        let ms = |ms| ticks(Duration::from_millis(ms));
        assert_eq!(entry.phase(ms(1499), &windows), Phase::Fresh);
        assert_eq!(entry.phase(ms(1500), &windows), Phase::Soft);
        assert_eq!(entry.phase(ms(2699), &windows), Phase::Soft);
        assert_eq!(entry.phase(ms(2701), &windows), Phase::Hard);
    }

    #[test]
    fn a_token_of_no_lifetime_is_in_every_window() {
        let entry = entry(Duration::ZERO);
        assert_eq!(entry.phase(0, &Windows::default()), Phase::Hard);
    }

    #[test]
    fn the_background_refresh_is_claimed_once_until_allowed_again() {
        let entry = entry(Duration::from_secs(900));
        assert!(entry.claim_background(at(850)));
        assert!(!entry.claim_background(at(851)));
        entry.allow_background_at(Some(at(860)));
        assert!(!entry.claim_background(at(859)));
        assert!(entry.claim_background(at(860)));
        entry.allow_background_at(None);
        assert!(!entry.claim_background(at(10_000)));
    }
}
