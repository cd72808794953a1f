//! The storage conformance suite: the behaviour the API server relies on, which every
//! [`Storage`] backend must show.
//!
//! Each check is a public async function taking the store and a key prefix of its own (ending
//! in `/`); it panics with a message on the first violation. Checks touch only keys under their
//! prefix, so they can share one store, but [`compaction_expires_old_revisions`] compacts the
//! whole store: run it alone, or after the others, as [`run_all`] does.
//!
//! ```ignore
//! #[tokio::test]
//! async fn my_backend_passes_the_storage_conformance_suite() {
//!     let store = MyStore::open(...).await.unwrap();
//!     storage::conformance::run_all(&store).await;
//! }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use crate::{Error, EventType, KeyValue, ListOptions, Result, Storage, UpdateError, WatchEvent};

/// How long a check waits for an expected watch event before failing.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

type Watch = BoxStream<'static, Result<WatchEvent>>;

/// Runs every check, one after the other, under a prefix unique to this run
/// (`/registry/conformance-<pid>-<nanos>/<check>/`). Panics naming the first failing check.
pub async fn run_all(store: &dyn Storage) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let base = format!("/registry/conformance-{}-{nanos}/", std::process::id());
    macro_rules! run {
        ($($check:ident),* $(,)?) => {$(
            run_one(stringify!($check), $check(store, &format!("{base}{}/", stringify!($check)))).await;
        )*};
    }
    run!(
        create_then_get_returns_value_and_revisions,
        create_existing_key_fails_with_already_exists,
        get_missing_key_returns_none,
        update_with_current_revision_replaces_value,
        update_with_stale_revision_conflicts_with_current_value,
        update_missing_key_is_not_found,
        delete_without_precondition_returns_last_value,
        delete_with_precondition_checks_revision,
        revisions_strictly_increase_across_writes,
        list_returns_keys_under_prefix_in_order,
        list_paginates_with_limit_and_start_after,
        list_revision_covers_every_item,
        list_at_past_revision_is_exact_or_expired,
        count_matches_list,
        watch_from_now_sees_only_later_changes,
        watch_is_isolated_to_its_prefix,
        watch_events_carry_values_and_previous_values,
        watch_from_revision_replays_history_then_live_changes,
        guaranteed_update_retries_concurrent_conflicts,
        guaranteed_update_creates_skips_and_aborts,
        dropping_watch_streams_is_clean,
        compaction_expires_old_revisions,
    );
}

async fn run_one(name: &str, check: impl Future<Output = ()>) {
    if let Err(panic) = AssertUnwindSafe(check).catch_unwind().await {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("storage conformance check `{name}` failed: {message}");
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn must_get(store: &dyn Storage, key: &str) -> KeyValue {
    match store.get(key).await {
        Ok(Some(kv)) => kv,
        other => panic!("get {key}: expected a value, got {other:?}"),
    }
}

async fn open_watch(store: &dyn Storage, prefix: &str, from: i64) -> Watch {
    store
        .watch(prefix, from)
        .await
        .unwrap_or_else(|e| panic!("watch {prefix} from {from}: {e}"))
}

async fn next_event(watch: &mut Watch) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended unexpectedly"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

fn event(
    event_type: EventType,
    key: &str,
    value: &str,
    prev: Option<&str>,
    revision: i64,
) -> WatchEvent {
    WatchEvent {
        event_type,
        key: key.to_string(),
        value: b(value),
        prev_value: prev.map(b),
        revision,
    }
}

pub async fn create_then_get_returns_value_and_revisions(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let rev = store.create(&key, b("v1")).await.expect("create");
    assert!(rev > 0, "create returned revision {rev}");
    let kv = must_get(store, &key).await;
    assert_eq!(
        kv,
        KeyValue {
            key: key.clone(),
            value: b("v1"),
            create_revision: rev,
            mod_revision: rev
        }
    );
    let current = store.current_revision().await.expect("current_revision");
    assert!(
        current >= rev,
        "current revision {current} is behind the create at {rev}"
    );
}

pub async fn create_existing_key_fails_with_already_exists(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let rev = store.create(&key, b("v1")).await.expect("create");
    match store.create(&key, b("v2")).await {
        Err(Error::AlreadyExists(k)) => assert_eq!(k, key),
        other => panic!("second create: expected AlreadyExists, got {other:?}"),
    }
    let kv = must_get(store, &key).await;
    assert_eq!(
        (kv.value, kv.mod_revision),
        (b("v1"), rev),
        "a failed create changed the stored value"
    );
}

pub async fn get_missing_key_returns_none(store: &dyn Storage, prefix: &str) {
    assert_eq!(store.get(&format!("{prefix}missing")).await, Ok(None));
}

pub async fn update_with_current_revision_replaces_value(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let created = store.create(&key, b("v1")).await.expect("create");
    let updated = store.update(&key, b("v2"), created).await.expect("update");
    assert!(
        updated > created,
        "update revision {updated} not after create revision {created}"
    );
    let kv = must_get(store, &key).await;
    assert_eq!(
        kv,
        KeyValue {
            key,
            value: b("v2"),
            create_revision: created,
            mod_revision: updated
        }
    );
}

pub async fn update_with_stale_revision_conflicts_with_current_value(
    store: &dyn Storage,
    prefix: &str,
) {
    let key = format!("{prefix}a");
    let created = store.create(&key, b("v1")).await.expect("create");
    let updated = store.update(&key, b("v2"), created).await.expect("update");
    match store.update(&key, b("v3"), created).await {
        Err(Error::Conflict {
            key: k,
            expected,
            current,
        }) => {
            assert_eq!((k.as_str(), expected), (key.as_str(), created));
            let current = current.expect("Conflict must carry the current value");
            assert_eq!(
                current,
                KeyValue {
                    key: key.clone(),
                    value: b("v2"),
                    create_revision: created,
                    mod_revision: updated
                }
            );
        }
        other => panic!("stale update: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        must_get(store, &key).await.value,
        b("v2"),
        "a conflicting update changed the value"
    );
}

pub async fn update_missing_key_is_not_found(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}missing");
    let current = store.current_revision().await.expect("current_revision");
    for expected in [0, current] {
        match store.update(&key, b("v"), expected).await {
            Err(Error::NotFound(k)) => assert_eq!(k, key),
            other => panic!(
                "update of a missing key expecting {expected}: expected NotFound, got {other:?}"
            ),
        }
    }
    assert_eq!(
        store.get(&key).await,
        Ok(None),
        "update of a missing key created it"
    );
}

pub async fn delete_without_precondition_returns_last_value(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let created = store.create(&key, b("v1")).await.expect("create");
    let updated = store.update(&key, b("v2"), created).await.expect("update");
    let (last, deleted) = store.delete(&key, None).await.expect("delete");
    assert_eq!(
        last,
        KeyValue {
            key: key.clone(),
            value: b("v2"),
            create_revision: created,
            mod_revision: updated
        }
    );
    assert!(
        deleted > updated,
        "delete revision {deleted} not after update revision {updated}"
    );
    assert_eq!(store.get(&key).await, Ok(None));
    match store.delete(&key, None).await {
        Err(Error::NotFound(k)) => assert_eq!(k, key),
        other => panic!("second delete: expected NotFound, got {other:?}"),
    }
    // The key can be created again, as a new object.
    let recreated = store.create(&key, b("v3")).await.expect("re-create");
    assert!(recreated > deleted);
    let kv = must_get(store, &key).await;
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (recreated, recreated)
    );
}

pub async fn delete_with_precondition_checks_revision(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let created = store.create(&key, b("v1")).await.expect("create");
    let updated = store.update(&key, b("v2"), created).await.expect("update");
    match store.delete(&key, Some(created)).await {
        Err(Error::Conflict {
            key: k,
            expected,
            current,
        }) => {
            assert_eq!((k.as_str(), expected), (key.as_str(), created));
            let current = current.expect("Conflict must carry the current value");
            assert_eq!((current.value, current.mod_revision), (b("v2"), updated));
        }
        other => panic!("delete with stale precondition: expected Conflict, got {other:?}"),
    }
    assert_eq!(
        must_get(store, &key).await.mod_revision,
        updated,
        "a conflicting delete changed the key"
    );
    let (last, deleted) = store
        .delete(&key, Some(updated))
        .await
        .expect("delete with current precondition");
    assert_eq!((last.value, last.mod_revision), (b("v2"), updated));
    assert!(deleted > updated);
    match store.delete(&key, Some(updated)).await {
        Err(Error::NotFound(k)) => assert_eq!(k, key),
        other => {
            panic!("delete of a missing key with precondition: expected NotFound, got {other:?}")
        }
    }
}

pub async fn revisions_strictly_increase_across_writes(store: &dyn Storage, prefix: &str) {
    let (a, bk) = (format!("{prefix}a"), format!("{prefix}b"));
    let mut last = store.current_revision().await.expect("current_revision");
    let mut check = |rev: i64, what: &str| {
        assert!(
            rev > last,
            "{what} returned revision {rev}, not after the previous {last}"
        );
        last = rev;
    };
    let r = store.create(&a, b("1")).await.expect("create a");
    check(r, "create a");
    assert_eq!(must_get(store, &a).await.mod_revision, r);
    let r = store.create(&bk, b("1")).await.expect("create b");
    check(r, "create b");
    let r = store
        .update(&a, b("2"), must_get(store, &a).await.mod_revision)
        .await
        .expect("update a");
    check(r, "update a");
    assert_eq!(must_get(store, &a).await.mod_revision, r);
    let (_, r) = store.delete(&bk, None).await.expect("delete b");
    check(r, "delete b");
    let r = store.create(&bk, b("2")).await.expect("re-create b");
    check(r, "re-create b");
    assert_eq!(must_get(store, &bk).await.mod_revision, r);
    let current = store.current_revision().await.expect("current_revision");
    assert!(
        current >= r,
        "current revision {current} is behind the last write at {r}"
    );
}

pub async fn list_returns_keys_under_prefix_in_order(store: &dyn Storage, prefix: &str) {
    let keys = ["pods/a/z", "pods/a/x", "pods/ab/y", "pods/b/w", "pods/a/y"];
    for k in keys {
        store
            .create(&format!("{prefix}{k}"), b(k))
            .await
            .expect("create");
    }
    let listed = |p: &'static str| async move {
        let res = store
            .list(&format!("{prefix}{p}"), &ListOptions::default())
            .await
            .expect("list");
        for item in &res.items {
            assert_eq!(
                item.value,
                b(&item.key[prefix.len()..]),
                "listed value does not belong to its key"
            );
        }
        (
            res.items
                .into_iter()
                .map(|kv| kv.key[prefix.len()..].to_string())
                .collect::<Vec<_>>(),
            res.remaining,
        )
    };
    // A namespace prefix ends in '/': "a" must not pick up "ab".
    assert_eq!(
        listed("pods/a/").await,
        (
            vec!["pods/a/x".to_string(), "pods/a/y".into(), "pods/a/z".into()],
            0
        )
    );
    // Prefixes are plain byte prefixes.
    assert_eq!(
        listed("pods/a").await.0,
        ["pods/a/x", "pods/a/y", "pods/a/z", "pods/ab/y"]
    );
    assert_eq!(
        listed("pods/").await.0,
        ["pods/a/x", "pods/a/y", "pods/a/z", "pods/ab/y", "pods/b/w"]
    );
    assert_eq!(listed("pods/c/").await, (vec![], 0));
}

pub async fn list_paginates_with_limit_and_start_after(store: &dyn Storage, prefix: &str) {
    let keys: Vec<String> = (0..10).map(|i| format!("{prefix}k{i:02}")).collect();
    for k in &keys {
        store.create(k, b(k)).await.expect("create");
    }
    store
        .create(&format!("{prefix}other/k"), b("x"))
        .await
        .expect("create");
    let list = |start_after: Option<String>, limit: usize| {
        let opts = ListOptions {
            start_after,
            limit,
            revision: 0,
        };
        async move {
            store
                .list(&format!("{prefix}k"), &opts)
                .await
                .expect("list")
        }
    };
    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = list(after.clone(), 3).await;
        assert!(
            page.items.len() <= 3,
            "limit 3 returned {} items",
            page.items.len()
        );
        let seen: usize = pages.iter().map(Vec::len).sum::<usize>() + page.items.len();
        assert_eq!(
            page.remaining,
            keys.len() - seen,
            "remaining after {seen} of {} items",
            keys.len()
        );
        after = page.items.last().map(|kv| kv.key.clone());
        pages.push(page.items.into_iter().map(|kv| kv.key).collect::<Vec<_>>());
        if page.remaining == 0 {
            break;
        }
        assert!(pages.len() < 10, "pagination does not terminate");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
    assert_eq!(pages.concat(), keys);
    // No limit, a limit beyond the end, a start between keys, a start after the last key.
    let all = list(None, 0).await;
    assert_eq!((all.items.len(), all.remaining), (10, 0));
    let all = list(None, 100).await;
    assert_eq!((all.items.len(), all.remaining), (10, 0));
    let between = list(Some(format!("{prefix}k04x")), 2).await;
    assert_eq!(
        between
            .items
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        keys[5..7]
    );
    assert_eq!(between.remaining, 3);
    let past = list(Some(keys[9].clone()), 0).await;
    assert_eq!((past.items.len(), past.remaining), (0, 0));
    let beyond = list(Some(format!("{prefix}z")), 0).await;
    assert_eq!((beyond.items.len(), beyond.remaining), (0, 0));
    let before = list(Some(format!("{prefix}a")), 2).await;
    assert_eq!(
        before
            .items
            .iter()
            .map(|kv| kv.key.clone())
            .collect::<Vec<_>>(),
        keys[..2]
    );
}

pub async fn list_revision_covers_every_item(store: &dyn Storage, prefix: &str) {
    for i in 0..5 {
        store
            .create(&format!("{prefix}k{i}"), b("v"))
            .await
            .expect("create");
    }
    let k2 = must_get(store, &format!("{prefix}k2")).await;
    let last = store
        .update(&k2.key, b("v2"), k2.mod_revision)
        .await
        .expect("update");
    let res = store
        .list(prefix, &ListOptions::default())
        .await
        .expect("list");
    assert!(
        res.revision >= last,
        "list revision {} is behind the last write at {last}",
        res.revision
    );
    for item in &res.items {
        assert!(
            item.mod_revision <= res.revision,
            "item {} at {} is newer than the list revision {}",
            item.key,
            item.mod_revision,
            res.revision
        );
        assert!(item.create_revision <= item.mod_revision);
    }
    let current = store.current_revision().await.expect("current_revision");
    assert!(
        res.revision <= current,
        "list revision {} is ahead of the store's {current}",
        res.revision
    );
}

pub async fn list_at_past_revision_is_exact_or_expired(store: &dyn Storage, prefix: &str) {
    let (a, bk) = (format!("{prefix}a"), format!("{prefix}b"));
    let ra = store.create(&a, b("a1")).await.expect("create a");
    let rb = store.create(&bk, b("b1")).await.expect("create b");
    let ru = store.update(&a, b("a2"), ra).await.expect("update a");
    store.delete(&bk, None).await.expect("delete b");
    // The latest revision can always be read exactly.
    let latest = store
        .list(prefix, &ListOptions::default())
        .await
        .expect("list");
    let again = store
        .list(
            prefix,
            &ListOptions {
                revision: latest.revision,
                ..Default::default()
            },
        )
        .await
        .expect("list at the latest revision");
    assert_eq!(again, latest);
    assert_eq!(
        latest.items,
        [KeyValue {
            key: a.clone(),
            value: b("a2"),
            create_revision: ra,
            mod_revision: ru
        }]
    );
    // An older one is served exactly, or refused with Expired by backends without history.
    match store
        .list(
            prefix,
            &ListOptions {
                revision: rb,
                ..Default::default()
            },
        )
        .await
    {
        Ok(res) => {
            assert_eq!(res.revision, rb);
            assert_eq!(
                res.items,
                [
                    KeyValue {
                        key: a,
                        value: b("a1"),
                        create_revision: ra,
                        mod_revision: ra
                    },
                    KeyValue {
                        key: bk,
                        value: b("b1"),
                        create_revision: rb,
                        mod_revision: rb
                    },
                ]
            );
        }
        Err(Error::Expired { requested, .. }) => assert_eq!(requested, rb),
        Err(e) => panic!("list at past revision {rb}: {e}"),
    }
}

pub async fn count_matches_list(store: &dyn Storage, prefix: &str) {
    for k in ["a/1", "a/2", "ab/1", "b/1"] {
        store
            .create(&format!("{prefix}{k}"), b("v"))
            .await
            .expect("create");
    }
    store
        .delete(&format!("{prefix}a/2"), None)
        .await
        .expect("delete");
    assert_eq!(store.count(&format!("{prefix}a/")).await, Ok(1));
    assert_eq!(store.count(prefix).await, Ok(3));
    assert_eq!(store.count(&format!("{prefix}none/")).await, Ok(0));
}

pub async fn watch_from_now_sees_only_later_changes(store: &dyn Storage, prefix: &str) {
    let (a, bk) = (format!("{prefix}a"), format!("{prefix}b"));
    let ra = store.create(&a, b("before")).await.expect("create a");
    let mut watch = open_watch(store, prefix, 0).await;
    let ru = store.update(&a, b("after"), ra).await.expect("update a");
    let rb = store.create(&bk, b("new")).await.expect("create b");
    // Had the earlier create been delivered, it would come first.
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Modified, &a, "after", Some("before"), ru)
    );
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Added, &bk, "new", None, rb)
    );
}

pub async fn watch_is_isolated_to_its_prefix(store: &dyn Storage, prefix: &str) {
    let mut watch = open_watch(store, &format!("{prefix}pods/a/"), 0).await;
    store
        .create(&format!("{prefix}pods/ab/x"), b("no"))
        .await
        .expect("create");
    store
        .create(&format!("{prefix}pods/b"), b("no"))
        .await
        .expect("create");
    store
        .create(&format!("{prefix}pods/a"), b("no"))
        .await
        .expect("create");
    let key = format!("{prefix}pods/a/x");
    let rev = store.create(&key, b("yes")).await.expect("create");
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Added, &key, "yes", None, rev)
    );
}

pub async fn watch_events_carry_values_and_previous_values(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let mut watch = open_watch(store, prefix, 0).await;
    let r1 = store.create(&key, b("v1")).await.expect("create");
    let r2 = store.update(&key, b("v2"), r1).await.expect("update");
    let (_, r3) = store.delete(&key, Some(r2)).await.expect("delete");
    let r4 = store.create(&key, b("v3")).await.expect("re-create");
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Added, &key, "v1", None, r1)
    );
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Modified, &key, "v2", Some("v1"), r2)
    );
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Deleted, &key, "v2", Some("v2"), r3)
    );
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Added, &key, "v3", None, r4)
    );
}

/// One object's life (create, two updates, delete, create), recording the event each write
/// must produce.
async fn churn(store: &dyn Storage, key: String) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    let r = store.create(&key, b("1")).await.expect("create");
    events.push(event(EventType::Added, &key, "1", None, r));
    let r = store.update(&key, b("2"), r).await.expect("update");
    events.push(event(EventType::Modified, &key, "2", Some("1"), r));
    tokio::task::yield_now().await;
    let r = store.update(&key, b("3"), r).await.expect("update");
    events.push(event(EventType::Modified, &key, "3", Some("2"), r));
    let (_, r) = store.delete(&key, Some(r)).await.expect("delete");
    events.push(event(EventType::Deleted, &key, "3", Some("3"), r));
    let r = store.create(&key, b("4")).await.expect("re-create");
    events.push(event(EventType::Added, &key, "4", None, r));
    events
}

pub async fn watch_from_revision_replays_history_then_live_changes(
    store: &dyn Storage,
    prefix: &str,
) {
    // History: two objects' lives, the watch starts in the middle of the first.
    let history = churn(store, format!("{prefix}h0")).await;
    let from = history[1].revision;
    let mut expected: Vec<WatchEvent> = history[2..].to_vec();
    expected.extend(churn(store, format!("{prefix}h1")).await);
    // Writers keep going while the watch is being set up and replayed.
    let writers = futures::future::join_all((0..4).map(|i| churn(store, format!("{prefix}w{i}"))));
    let (written, watch) = tokio::join!(writers, store.watch(prefix, from));
    let mut watch = watch.unwrap_or_else(|e| panic!("watch from {from}: {e}"));
    expected.extend(written.into_iter().flatten());
    expected.sort_by_key(|e| e.revision);
    let revisions: BTreeSet<i64> = expected.iter().map(|e| e.revision).collect();
    assert_eq!(
        revisions.len(),
        expected.len(),
        "two writes share a revision"
    );
    for (i, want) in expected.iter().enumerate() {
        let got = next_event(&mut watch).await;
        assert_eq!(
            &got,
            want,
            "event {i} of {} from revision {from}",
            expected.len()
        );
    }
    // Nothing extra was queued before the next live change.
    let key = format!("{prefix}live");
    let rev = store.create(&key, b("live")).await.expect("create");
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Added, &key, "live", None, rev)
    );
}

pub async fn guaranteed_update_retries_concurrent_conflicts(store: &dyn Storage, prefix: &str) {
    const WRITERS: usize = 16;
    let key = format!("{prefix}counter");
    let increment = |current: Option<&KeyValue>| {
        let n: usize = match current {
            Some(kv) => std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("counter is not a number")?,
            None => 0,
        };
        Ok(Some(b(&(n + 1).to_string())))
    };
    let results =
        futures::future::join_all((0..WRITERS).map(|_| store.guaranteed_update(&key, &increment)))
            .await;
    let mut values = BTreeSet::new();
    let mut revisions = BTreeSet::new();
    for result in results {
        let kv = result
            .expect("guaranteed_update")
            .expect("guaranteed_update stored a value");
        values.insert(
            std::str::from_utf8(&kv.value)
                .expect("utf-8")
                .parse::<usize>()
                .expect("number"),
        );
        revisions.insert(kv.mod_revision);
    }
    assert_eq!(
        values,
        (1..=WRITERS).collect(),
        "every increment must be applied exactly once"
    );
    assert_eq!(
        revisions.len(),
        WRITERS,
        "every increment must be its own write"
    );
    let stored = must_get(store, &key).await;
    assert_eq!(stored.value, b(&WRITERS.to_string()));
    assert_eq!(Some(&stored.mod_revision), revisions.last());
}

pub async fn guaranteed_update_creates_skips_and_aborts(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let created = store.guaranteed_update(&key, &|cur| {
        assert!(cur.is_none());
        Ok(Some(b("v1")))
    });
    let created = created
        .await
        .expect("create through guaranteed_update")
        .expect("a value");
    assert_eq!(created, must_get(store, &key).await);
    assert_eq!(created.create_revision, created.mod_revision);
    // No change: nothing is written, the current value comes back.
    let unchanged = store
        .guaranteed_update(&key, &|_| Ok(None))
        .await
        .expect("no-op update");
    assert_eq!(unchanged.as_ref(), Some(&created));
    assert_eq!(
        must_get(store, &key).await.mod_revision,
        created.mod_revision,
        "a no-op update wrote"
    );
    // An abort is returned as such and writes nothing.
    match store
        .guaranteed_update(&key, &|_| Err("invalid".into()))
        .await
    {
        Err(UpdateError::Aborted(e)) => assert_eq!(e.to_string(), "invalid"),
        other => panic!("aborted update: expected Aborted, got {other:?}"),
    }
    assert_eq!(
        must_get(store, &key).await,
        created,
        "an aborted update wrote"
    );
    let updated = store.guaranteed_update(&key, &|cur| {
        Ok(Some(b(&format!(
            "{}+",
            std::str::from_utf8(&cur.expect("current").value).unwrap()
        ))))
    });
    let updated = updated.await.expect("update").expect("a value");
    assert_eq!(
        (updated.value.clone(), updated.create_revision),
        (b("v1+"), created.create_revision)
    );
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(must_get(store, &key).await, updated);
}

pub async fn dropping_watch_streams_is_clean(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let rev = store.create(&key, b("v1")).await.expect("create");
    for i in 0..50 {
        let mut watch = open_watch(store, prefix, if i % 2 == 0 { 0 } else { rev - 1 }).await;
        if i % 5 == 0 {
            // Drop some with undelivered events, some after reading.
            store
                .update(
                    &key,
                    b(&i.to_string()),
                    must_get(store, &key).await.mod_revision,
                )
                .await
                .expect("update");
            let _ = next_event(&mut watch).await;
        }
    }
    // The store still works, and a new watch sees new changes.
    let mut watch = open_watch(store, prefix, 0).await;
    let current = must_get(store, &key).await;
    let rev = store
        .update(&key, b("last"), current.mod_revision)
        .await
        .expect("update");
    let got = next_event(&mut watch).await;
    assert_eq!(
        (got.event_type, got.value, got.revision),
        (EventType::Modified, b("last"), rev)
    );
}

/// Compacts the whole store (to the current revision): history other checks rely on is lost.
pub async fn compaction_expires_old_revisions(store: &dyn Storage, prefix: &str) {
    let key = format!("{prefix}a");
    let r1 = store.create(&key, b("v1")).await.expect("create");
    let r2 = store.update(&key, b("v2"), r1).await.expect("update");
    let r3 = store.update(&key, b("v3"), r2).await.expect("update");
    store.compact(r3).await.expect("compact");
    // Compacting again, or to an older revision, is harmless.
    store.compact(r3).await.expect("compact again");
    store
        .compact(r1)
        .await
        .expect("compact to an older revision");

    // Watching from r1 needs the change at r2, which is gone.
    match store.watch(prefix, r1).await {
        Err(Error::Expired { .. }) => {}
        Err(e) => panic!("watch from compacted revision {r1}: expected Expired, got {e}"),
        Ok(mut watch) => match tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await {
            Ok(Some(Err(Error::Expired { .. }))) => {
                let rest = tokio::time::timeout(EVENT_TIMEOUT, watch.next()).await;
                assert!(
                    matches!(rest, Ok(None)),
                    "a watch must end after Expired, got {rest:?}"
                );
            }
            other => panic!(
                "watch from compacted revision {r1}: expected an Expired item, got {other:?}"
            ),
        },
    }
    match store
        .list(
            prefix,
            &ListOptions {
                revision: r1,
                ..Default::default()
            },
        )
        .await
    {
        Err(Error::Expired { requested, oldest }) => {
            assert_eq!(requested, r1);
            assert!(
                oldest > r1,
                "Expired reports oldest revision {oldest}, not after the requested {r1}"
            );
        }
        other => panic!("list at compacted revision {r1}: expected Expired, got {other:?}"),
    }
    // Everything after the compaction point is still there.
    let mut watch = open_watch(store, prefix, r3).await;
    let r4 = store.update(&key, b("v4"), r3).await.expect("update");
    assert_eq!(
        next_event(&mut watch).await,
        event(EventType::Modified, &key, "v4", Some("v3"), r4)
    );
    let latest = store
        .list(prefix, &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(
        latest.items,
        [KeyValue {
            key,
            value: b("v4"),
            create_revision: r1,
            mod_revision: r4
        }]
    );
}
