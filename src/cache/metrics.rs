//! What the cache counts, through the `metrics` facade (feature `metrics`): nothing without it.
//!
//! | name | kind | labels | what |
//! | --- | --- | --- | --- |
//! | `tower_auth_refresh_refreshes_total` | counter | `reason`, `outcome` | refreshes that ended: `outcome` is `refreshed`, `adopted` (from the store), `failed` or `superseded` |
//! | `tower_auth_refresh_refresh_seconds` | histogram | `reason`, `outcome` | how long each took, from start to end (a late answer included) |
//! | `tower_auth_refresh_refresh_timeouts_total` | counter | `reason` | refreshes whose waiters timed out while the exchange went on |
//! | `tower_auth_refresh_rejections_total` | counter | `refreshed` (`true`/`false`) | responses that rejected the token; `false`: no refresh allowed (the API refused a token got because of a rejection) |
//! | `tower_auth_refresh_retries_total` | counter | | requests sent again after a rejection |
//! | `tower_auth_refresh_waits_total` | counter | | requests that waited for a refresh (no token, or one in its hard window) |

use std::time::Duration;

use crate::refresh::RefreshReason;

#[cfg(feature = "metrics")]
fn reason(reason: RefreshReason) -> &'static str {
    match reason {
        RefreshReason::NoToken => "no_token",
        RefreshReason::Expiring => "expiring",
        RefreshReason::Expired => "expired",
        RefreshReason::Rejected => "rejected",
        RefreshReason::Forced => "forced",
    }
}

/// How a refresh ended.
#[derive(Clone, Copy)]
pub(super) enum Ended {
    Refreshed,
    Adopted,
    Failed,
    Superseded,
}

pub(super) fn refresh_ended(why: RefreshReason, ended: Ended, took: Duration) {
    #[cfg(feature = "metrics")]
    {
        let outcome = match ended {
            Ended::Refreshed => "refreshed",
            Ended::Adopted => "adopted",
            Ended::Failed => "failed",
            Ended::Superseded => "superseded",
        };
        let labels = [("reason", reason(why)), ("outcome", outcome)];
        metrics::counter!("tower_auth_refresh_refreshes_total", &labels).increment(1);
        metrics::histogram!("tower_auth_refresh_refresh_seconds", &labels)
            .record(took.as_secs_f64());
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (why, ended, took);
}

pub(super) fn refresh_timed_out(why: RefreshReason) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_auth_refresh_refresh_timeouts_total", "reason" => reason(why))
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = why;
}

pub(super) fn rejected(refreshed: bool) {
    #[cfg(feature = "metrics")]
    metrics::counter!(
        "tower_auth_refresh_rejections_total",
        "refreshed" => if refreshed { "true" } else { "false" }
    )
    .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = refreshed;
}

pub(super) fn retried() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_auth_refresh_retries_total").increment(1);
}

pub(super) fn waited() {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_auth_refresh_waits_total").increment(1);
}

/// A request was sent again after a DPoP nonce challenge, at the token endpoint or at a
/// resource server.
#[cfg_attr(not(feature = "dpop"), allow(dead_code))]
pub(crate) fn dpop_nonce_retried(server: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_auth_refresh_dpop_nonce_retries_total", "server" => server)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = server;
}

/// A resource server's DPoP challenge went back to the caller as it came: a refused proof, or
/// a nonce challenge to a request already sent again (or that cannot be).
#[cfg_attr(not(feature = "dpop"), allow(dead_code))]
pub(crate) fn dpop_challenge_returned(challenge: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("tower_auth_refresh_dpop_challenges_returned_total", "challenge" => challenge)
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = challenge;
}
