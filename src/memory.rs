//! Memory a burst of work freed goes back to the operating system once the burst is over.
//!
//! glibc's malloc keeps what a process freed for reuse and hands back only the top of each
//! heap, so after a burst — start-up's lists (the caches briefly hold each object twice
//! while they are marked ready), onboarding a batch, every User touched at once — the
//! resident size stays at the burst's peak with the freed memory scattered between live
//! objects. `malloc_trim(0)` gives those free pages back (`madvise`), which is what makes
//! the settled size follow the objects cached rather than the largest burst seen.
//!
//! Work is counted where it happens (a cache change, a finished reconcile); a task trims
//! once the count has stood still for a moment after it moved, so an idle process does
//! nothing and a busy one is never interrupted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Units of work done since start: cache changes and reconciles.
static WORK: AtomicU64 = AtomicU64::new(0);

/// How long the work count must stand still before memory is trimmed.
const QUIET: Duration = Duration::from_secs(1);

/// Counts one unit of work (a cache change applied, a reconcile finished).
pub fn note_work() {
    WORK.fetch_add(1, Ordering::Relaxed);
}

/// Trims the allocator after each burst of work, until `shutdown`.
pub async fn release_after_bursts(shutdown: CancellationToken) {
    let mut seen = WORK.load(Ordering::Relaxed);
    let mut dirty = false;
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
        } else if dirty {
            dirty = false;
            // The walk over every arena takes milliseconds on a large heap: off the
            // runtime's workers.
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    }
}

/// Asks glibc to return its free pages to the operating system; elsewhere nothing (musl and
/// other allocators do not keep freed pages the same way).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and has no preconditions; it only locks and
    // walks the allocator's own arenas.
    let released = unsafe { libc::malloc_trim(0) } != 0;
    tracing::debug!(released, "returned free memory to the operating system");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}
