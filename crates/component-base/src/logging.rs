//! Installs the process-wide tracing subscriber. Only binaries call this; libraries just emit
//! `tracing` events.

use tracing_subscriber::EnvFilter;

/// Installs a `fmt` subscriber writing to stderr, filtered by `RUST_LOG` when it is set and
/// valid, else by `default_filter` (e.g. `"info"` or `"info,apiserver=debug"`).
///
/// Calling it again (as in-process tests that start several components do) leaves the first
/// subscriber in place.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // An error only means a subscriber is already installed, which is fine.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
