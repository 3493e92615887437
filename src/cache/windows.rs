//! When, before expiry, a layer refreshes a token in the background, and when its requests
//! wait. Windows belong to a layer value (clones can differ); the token they apply to is shared.

use std::time::Duration;

use std::fmt;

use super::clock::{Ticks, duration, ticks};

/// The refresh windows of a layer, in clock ticks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Windows {
    /// Inside this window before expiry, one background refresh starts while the token is
    /// still served (at most half the token's lifetime).
    pub(crate) soft: Ticks,
    /// Inside this window before expiry, requests wait for the refresh (at most a tenth of
    /// the token's lifetime, and at most the soft window).
    pub(crate) hard: Ticks,
}

impl Windows {
    pub(crate) const DEFAULT_SOFT: Duration = Duration::from_secs(60);
    pub(crate) const DEFAULT_HARD: Duration = Duration::from_secs(5);

    pub(crate) fn with_soft(self, window: Duration) -> Self {
        Self {
            soft: ticks(window),
            ..self
        }
    }

    pub(crate) fn with_hard(self, window: Duration) -> Self {
        Self {
            hard: ticks(window),
            ..self
        }
    }
}

impl Default for Windows {
    fn default() -> Self {
        Self {
            soft: ticks(Self::DEFAULT_SOFT),
            hard: ticks(Self::DEFAULT_HARD),
        }
    }
}

impl fmt::Debug for Windows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Windows")
            .field("soft", &duration(self.soft))
            .field("hard", &duration(self.hard))
            .finish()
    }
}
