//! Memory a burst of work freed goes back to the operating system once the burst is over.
//!
//! glibc's malloc keeps what a process freed for reuse and hands back only the top of each
//! heap, so after a burst — start-up's lists, onboarding a batch, every User touched at
//! once — the resident size stays at the burst's peak with the freed memory scattered
//! between live objects. `malloc_trim(0)` gives those free pages back (`madvise`), which is
//! what makes the settled size follow the objects cached rather than the largest burst seen.
//!
//! Work is counted where it happens (a cache change, a finished reconcile); a task trims
//! once the count has stood still for a moment after it moved, and not more often than
//! every few seconds (a trim locks each arena in turn, and a freed password hash's memory
//! would be faulted in again), so an idle process does nothing and a busy one is not
//! interrupted. The call itself is the binary's (`main.rs`): this library has no unsafe code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Units of work done since start: cache changes, reconciles and password checks.
static WORK: AtomicU64 = AtomicU64::new(0);

/// How long the work count must stand still before memory is trimmed.
const QUIET: Duration = Duration::from_secs(1);

/// Least time between two trims.
const SPACING: Duration = Duration::from_secs(5);

/// Counts one unit of work (a cache change applied, a reconcile finished, a password
/// checked).
pub fn note_work() {
    WORK.fetch_add(1, Ordering::Relaxed);
}

/// Calls `release` (which gives the allocator's free memory back) after each burst of
/// work, until `shutdown`.
pub async fn release_after_bursts(release: fn(), shutdown: CancellationToken) {
    let mut seen = WORK.load(Ordering::Relaxed);
    let mut dirty = false;
    let mut last: Option<Instant> = None;
    let mut ticks = tokio::time::interval(QUIET);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let now = WORK.load(Ordering::Relaxed);
        if now != seen {
            (seen, dirty) = (now, true);
        } else if dirty && last.is_none_or(|at| at.elapsed() >= SPACING) {
            dirty = false;
            let started = Instant::now();
            last = Some(started);
            // The walk over every arena takes milliseconds on a large heap: off the
            // runtime's workers.
            let _ = tokio::task::spawn_blocking(release).await;
            tracing::debug!(took = ?started.elapsed(), "returned free memory to the operating system");
        }
    }
}
