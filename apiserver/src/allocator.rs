//! The API server's memory allocator: mimalloc (v3), set as the global allocator in `main.rs`.
//!
//! Why: decoding, defaulting, validating and encoding an object allocates many small blocks, and
//! glibc's malloc spent ~22% of the API server's CPU during creates on etcd (perf: `_int_malloc`,
//! `malloc_consolidate`, `unlink_chunk`, `free`). With mimalloc, bench-apiserver measured CPU per
//! create 0.12–0.13 ms against 0.155–0.17 ms on etcd (creates 50–53% of raw etcd puts against
//! 41–47%) and 0.088 against 0.106 ms on the embedded store.
//!
//! mimalloc returns freed memory to the OS only after a delay (1 s in v3), and only when a later
//! free looks at it: an idle server kept its start-up garbage, 18.5 MiB RSS against glibc's
//! 13.5. Returning memory at once instead (delay 0) brought idle RSS to 13.6 MiB but made every
//! 7 MiB LIST response fault its buffer in again (CPU per LIST of 3,000 pods 11.8 against 7.6
//! ms). So [`return_freed_memory`] sets a short delay, which a burst of requests still reuses
//! memory within, and twice a second purges what has waited longer, idle or not: idle RSS
//! 16.0–16.4 MiB, CPU per LIST 5.1 ms. (A plain `mi_collect(false)` left it at 17 MiB: without
//! force, mimalloc purges only when a page is freed after the delay.) mimalloc's pages belong to
//! the thread that allocated them, and that purge reached only the timer's own thread's pages:
//! so all work runs on the runtime's workers, and each also collects when it parks
//! ([`on_thread_park`]).

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long mimalloc itself keeps freed memory for reuse before returning it (when a later free
/// looks).
const PURGE_DELAY_MS: i64 = 100;
/// How often all freed memory is returned, whatever its delay, and whether or not anything
/// else happens.
const PURGE_EVERY: Duration = Duration::from_millis(500);

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the option after
/// `mi_option_eager_commit_delay`); libmimalloc-sys does not export it. The test below checks it
/// against the option's default, so that a mimalloc upgrade that moves it fails the build's tests.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_eager_commit_delay + 1;

/// Sets mimalloc's purge delay to [`PURGE_DELAY_MS`], then returns all freed memory to the OS
/// every [`PURGE_EVERY`], for as long as the future runs (spawn it once, early).
pub async fn return_freed_memory() {
    set_purge_delay(PURGE_DELAY_MS);
    let mut tick = tokio::time::interval(PURGE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        collect();
    }
}

/// Runs on a worker thread each time it parks (`on_thread_park` in `main.rs`): [`collect`]s
/// unless this thread did within [`PURGE_EVERY`]. mimalloc keeps pages per thread and
/// `mi_collect` only frees the calling thread's, so the timer task of [`return_freed_memory`]
/// alone left whatever the other worker had freed (bench-kubelet: API server idle in a cluster
/// 18.6 MiB, 7.3 anonymous; with this 16.4, 5.3). Forced, as a plain collect here kept it at
/// 18.1 MiB.
pub fn on_thread_park() {
    if LAST_COLLECT
        .get()
        .is_none_or(|t| t.elapsed() >= PURGE_EVERY)
    {
        collect();
    }
}

thread_local! {
    /// When this thread last ran [`collect`]: the timer's worker, which parks right after its
    /// tick, then has nothing to collect again.
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

#[allow(unsafe_code)]
fn set_purge_delay(ms: i64) {
    // SAFETY: mi_option_set stores a number in mimalloc's option table; any non-negative number
    // of milliseconds is a valid purge delay, and the option may be changed at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms as _) }
}

#[allow(unsafe_code)]
fn collect() {
    LAST_COLLECT.set(Some(Instant::now()));
    // SAFETY: mi_collect(true) frees this thread's empty pages and purges every freed range
    // waiting for its delay (the delay only saves work); it takes no pointers and may be called
    // from any thread at any time.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_where_we_set_it() {
        // SAFETY: reads a number from mimalloc's option table.
        let default = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(
                default, 1000,
                "mimalloc v3's default purge delay is 1000 ms"
            );
        }
    }
}
