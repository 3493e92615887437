//! Where the cache's background work runs: refreshes, their timeouts, their retries.
//!
//! Not on the caller's runtime. A caller's runtime may be made for one call and shut down after
//! it (a synchronous wrapper, a `#[tokio::test]` sharing a client in a static), which would drop
//! a refresh whose grant the server already processed; or it may be a current-thread runtime
//! that nobody drives between calls, which would hang every other caller waiting for that
//! refresh, and its timeout with it. So by default the work runs on the crate's own runtime: a
//! tokio runtime of two worker threads, started on first use and shared by every layer in the
//! process. It waits on I/O and timers almost all the time; the second thread is there so that
//! a refresher that blocks its thread does not stall every other layer, nor its own timeout.
//!
//! An application may pin a layer to a runtime of its own instead
//! ([`AuthLayerBuilder::runtime`](crate::AuthLayerBuilder::runtime)); the layer then also reads
//! tokio's clock, so tests that pause it see tokens expire when they say so. A layer built
//! inside a runtime whose clock is paused pins that runtime by itself.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::{Builder, Handle, Runtime};
use tracing::instrument::WithSubscriber;

use super::clock::Clock;

/// Where background work is spawned, and the clock that goes with it.
#[derive(Clone, Debug)]
pub(crate) struct Background {
    place: Place,
    clock: Clock,
}

#[derive(Clone, Debug)]
enum Place {
    /// The crate's own runtime thread.
    Own(Handle),
    /// A runtime the application chose.
    Pinned(Handle),
    /// The crate's thread could not be started: the runtime of whoever needs a refresh.
    Caller,
}

impl Background {
    /// The crate's own runtime, with the system clock; or, inside a runtime whose clock is
    /// paused, that runtime with its clock.
    pub(crate) fn default_here() -> Self {
        if let Some(paused) = paused_runtime() {
            tracing::debug!("tokio's clock is paused: the layer uses this runtime and its clock");
            return Self::pinned(paused);
        }
        match own_runtime() {
            Some(handle) => Self {
                place: Place::Own(handle.clone()),
                clock: Clock::System,
            },
            None => Self {
                place: Place::Caller,
                clock: Clock::System,
            },
        }
    }

    /// Everything on `handle`, with tokio's clock.
    pub(crate) fn pinned(handle: Handle) -> Self {
        let clock = {
            let _entered = handle.enter();
            Clock::tokio()
        };
        Self {
            place: Place::Pinned(handle),
            clock,
        }
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Where the waiters of a refresh starting now are best woken from: the runtime of the
    /// request that starts it, when the refresh runs on the crate's own runtime (a wake-up
    /// from another runtime's thread costs each woken task a lock and often a thread
    /// wake-up). `None`: from where the refresh runs.
    pub(crate) fn waking_place(&self) -> Option<Handle> {
        match &self.place {
            Place::Own(_) => Handle::try_current().ok(),
            Place::Pinned(_) | Place::Caller => None,
        }
    }

    /// Spawns `task`; `false` if there is nowhere to run it.
    pub(crate) fn spawn<F>(&self, task: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = match &self.place {
            Place::Own(handle) | Place::Pinned(handle) => handle.clone(),
            Place::Caller => match Handle::try_current() {
                Ok(handle) => handle,
                Err(_) => return false,
            },
        };
        drop(handle.spawn(task));
        true
    }
}

impl Background {
    /// Runs `task` here and waits for its output, at most `limit` (the task goes on after
    /// that): work the caller asked for that must not be cut short when the caller is dropped
    /// (a store write), nor depend on the caller's runtime. `None` if it could not run or did
    /// not end in time.
    pub(crate) async fn run_within<F>(&self, task: F, limit: Duration) -> Option<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let task = async move {
            let mut running = tokio::spawn(task.with_current_subscriber());
            let deadline = crate::token::instant_after(tokio::time::Instant::now(), limit);
            if let Ok(Ok(output)) = tokio::time::timeout_at(deadline, &mut running).await {
                let _ = sender.send(output);
            }
        };
        if !self.spawn(task.with_current_subscriber()) {
            return None;
        }
        receiver.await.ok()
    }
}

/// The crate's own runtime, started on first use and kept for the life of the process; `None`
/// if it cannot be started. Two workers: a refresher that blocks its thread (a synchronous
/// credential helper) holds one, and the other keeps the timeouts and every other layer going.
fn own_runtime() -> Option<&'static Handle> {
    static OWN: OnceLock<Option<Runtime>> = OnceLock::new();
    OWN.get_or_init(|| {
        match Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .thread_name("tower-auth-refresh")
            .build()
        {
            Ok(runtime) => Some(runtime),
            Err(error) => {
                tracing::error!(%error, "could not start the token refresh runtime");
                None
            }
        }
    })
    .as_ref()
    .map(Runtime::handle)
}

/// Worker threads of the crate's own runtime.
const WORKERS: usize = 2;

/// The current runtime, if its clock is paused (tokio's `test-util`): its clock stands still
/// while the system's moves.
fn paused_runtime() -> Option<Handle> {
    let handle = Handle::try_current().ok()?;
    let (tokio_start, start) = (tokio::time::Instant::now(), std::time::Instant::now());
    while start.elapsed() < Duration::from_micros(20) {
        std::hint::spin_loop();
    }
    (tokio::time::Instant::now() == tokio_start).then_some(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_paused_runtime_is_pinned() {
        assert!(matches!(Background::default_here().place, Place::Pinned(_)));
    }

    #[tokio::test]
    async fn a_running_runtime_is_not_used() {
        let background = Background::default_here();
        assert!(matches!(background.place, Place::Own(_)));
        let (sender, receiver) = tokio::sync::oneshot::channel();
        assert!(background.spawn(async move {
            let name = std::thread::current().name().map(str::to_owned);
            let _ = sender.send(name);
        }));
        assert_eq!(
            receiver.await.unwrap().as_deref(),
            Some("tower-auth-refresh")
        );
    }

    #[test]
    fn outside_any_runtime_the_own_one_is_used() {
        assert!(matches!(Background::default_here().place, Place::Own(_)));
    }
}
