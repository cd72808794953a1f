//! Expectations: what a controller has asked the API server to create or delete and not yet
//! seen come back through its informer (upstream's `UIDTrackingControllerExpectations`).
//!
//! A controller that creates children records the count before the requests go out and skips
//! further creates/deletes for that owner until the watch has delivered them (or the record is
//! older than 5 minutes, for watches that lost events), so a slow watch never makes it create
//! twice. Creations are counted; deletions are tracked by child key, so a delete observed twice
//! (watch re-list) is only counted once.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::ObjectKey;

/// How long an unfulfilled expectation blocks its owner (upstream `ExpectationsTimeout`).
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
struct Record {
    adds: i64,
    dels: HashSet<String>,
    at: Instant,
}

/// Per-owner pending creations and deletions.
#[derive(Debug, Default)]
pub struct Expectations {
    records: Mutex<HashMap<ObjectKey, Record>>,
}

impl Expectations {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `owner` may act: nothing pending, pending work all observed, or the record
    /// expired. An owner never seen is satisfied.
    pub fn satisfied(&self, owner: &ObjectKey) -> bool {
        match self.lock().get(owner) {
            None => true,
            Some(r) => (r.adds <= 0 && r.dels.is_empty()) || r.at.elapsed() > EXPECTATIONS_TIMEOUT,
        }
    }

    /// Replace `owner`'s record: `adds` creations about to be requested.
    pub fn expect_creations(&self, owner: &ObjectKey, adds: usize) {
        self.lock().insert(
            owner.clone(),
            Record {
                adds: adds as i64,
                dels: HashSet::new(),
                at: Instant::now(),
            },
        );
    }

    /// Replace `owner`'s record: the children named by `keys` are about to be deleted.
    pub fn expect_deletions(&self, owner: &ObjectKey, keys: impl IntoIterator<Item = String>) {
        self.lock().insert(
            owner.clone(),
            Record {
                adds: 0,
                dels: keys.into_iter().collect(),
                at: Instant::now(),
            },
        );
    }

    /// A child of `owner` appeared (or a create request failed and will not appear).
    pub fn creation_observed(&self, owner: &ObjectKey) {
        if let Some(r) = self.lock().get_mut(owner) {
            r.adds -= 1;
        }
    }

    /// A child of `owner` was seen deleted (or its delete request failed).
    pub fn deletion_observed(&self, owner: &ObjectKey, child_key: &str) {
        if let Some(r) = self.lock().get_mut(owner) {
            r.dels.remove(child_key);
        }
    }

    /// `count` creations will never be observed (their requests were skipped).
    pub fn lower_creations(&self, owner: &ObjectKey, count: usize) {
        if let Some(r) = self.lock().get_mut(owner) {
            r.adds -= count as i64;
        }
    }

    /// Forget `owner` (it was deleted).
    pub fn delete(&self, owner: &ObjectKey) {
        self.lock().remove(owner);
    }

    /// Pending (creations, deletions) for `owner`.
    pub fn pending(&self, owner: &ObjectKey) -> (i64, usize) {
        self.lock()
            .get(owner)
            .map(|r| (r.adds, r.dels.len()))
            .unwrap_or((0, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_block_until_observed() {
        let e = Expectations::new();
        let k = ObjectKey::namespaced("d", "rs");
        assert!(e.satisfied(&k));
        e.expect_creations(&k, 2);
        assert!(!e.satisfied(&k));
        e.creation_observed(&k);
        assert!(!e.satisfied(&k));
        e.creation_observed(&k);
        assert!(e.satisfied(&k));
    }

    #[test]
    fn deletions_are_tracked_by_key_so_duplicates_count_once() {
        let e = Expectations::new();
        let k = ObjectKey::namespaced("d", "rs");
        e.expect_deletions(&k, ["d/a".to_string(), "d/b".to_string()]);
        e.deletion_observed(&k, "d/a");
        e.deletion_observed(&k, "d/a");
        assert!(!e.satisfied(&k));
        e.deletion_observed(&k, "d/b");
        assert!(e.satisfied(&k));
        assert_eq!(e.pending(&k), (0, 0));
    }
}
