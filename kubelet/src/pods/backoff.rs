//! Container restart back-off (CrashLoopBackOff): 10 s doubling to 5 min per container, reset
//! when a container ran for 10 minutes, as upstream's kubelet does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts over at [`INITIAL`].
pub const RESET_AFTER: Duration = Duration::from_secs(600);

/// Back-off state keyed by `<pod uid>/<container name>`. Times are unix nanoseconds, the
/// runtime's clock, so a kubelet restart does not lose the rhythm for long.
#[derive(Default)]
pub struct RestartBackoff {
    entries: Mutex<HashMap<String, Duration>>,
}

impl RestartBackoff {
    /// Remaining wait before the container that finished at `finished_at` (after starting at
    /// `started_at`) may restart; `None` when it may restart now.
    pub fn remaining(
        &self,
        key: &str,
        started_at: i64,
        finished_at: i64,
        now: i64,
    ) -> Option<Duration> {
        let mut e = self.entries.lock().unwrap();
        let ran = Duration::from_nanos((finished_at - started_at).max(0) as u64);
        if ran >= RESET_AFTER {
            e.remove(key);
        }
        let d = *e.get(key)?;
        let until = finished_at.saturating_add(d.as_nanos() as i64);
        (now < until).then(|| Duration::from_nanos((until - now) as u64))
    }

    /// The current back-off period of the key (for the `back-off 10s restarting ...` message).
    pub fn current(&self, key: &str) -> Duration {
        self.entries
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(INITIAL)
    }

    /// A restart happens now: the next one waits twice as long.
    pub fn restarted(&self, key: &str) {
        let mut e = self.entries.lock().unwrap();
        let next = match e.get(key) {
            Some(d) => (*d * 2).min(MAX),
            None => INITIAL,
        };
        e.insert(key.to_string(), next);
    }

    /// Forget every key of a pod.
    pub fn forget_pod(&self, uid: &str) {
        let prefix = format!("{uid}/");
        self.entries
            .lock()
            .unwrap()
            .retain(|k, _| !k.starts_with(&prefix));
    }
}

/// Upstream's duration format for messages (`10s`, `1m20s`, `5m0s`).
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn doubles_to_five_minutes_and_resets_after_long_runs() {
        let b = RestartBackoff::default();
        let k = "u/c";
        assert_eq!(
            b.remaining(k, 0, 5 * S, 6 * S),
            None,
            "first restart is immediate"
        );
        b.restarted(k);
        assert_eq!(
            b.remaining(k, 6 * S, 7 * S, 8 * S),
            Some(Duration::from_secs(9))
        );
        assert_eq!(b.remaining(k, 6 * S, 7 * S, 17 * S), None);
        let mut want = 10;
        for _ in 0..8 {
            b.restarted(k);
            want = (want * 2).min(300);
        }
        assert_eq!(b.current(k), Duration::from_secs(300));
        assert!(want == 300);
        assert_eq!(
            b.remaining(k, 0, 601 * S, 602 * S),
            None,
            "ran 10 minutes: reset"
        );
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
