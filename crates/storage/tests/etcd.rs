//! The etcd backend against a real etcd (`/usr/bin/etcd`, or `$ETCD_BIN`), one per test.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use storage::cache::CachedStore;
use storage::etcd::EtcdStore;
use storage::testing::{EtcdProcess, StartError};
use storage::{Error, EventType, ListOptions, Storage};
use tokio_util::sync::CancellationToken;

async fn etcd() -> EtcdProcess {
    EtcdProcess::start()
        .await
        .unwrap_or_else(|e| panic!("starting etcd for the storage tests: {e}"))
}

async fn connect(etcd: &EtcdProcess, prefix: &str) -> EtcdStore {
    EtcdStore::connect(&etcd.endpoints(), prefix)
        .await
        .expect("connect to etcd")
}

#[tokio::test]
async fn etcd_passes_the_storage_conformance_suite() {
    let etcd = etcd().await;
    let store = connect(&etcd, "").await;
    storage::conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_suite_behind_an_extra_key_prefix() {
    let etcd = etcd().await;
    let store = connect(&etcd, "/isolated").await;
    storage::conformance::run_all(&store).await;
}

#[tokio::test]
async fn extra_key_prefix_isolates_stores_sharing_one_etcd() {
    let etcd = etcd().await;
    let (a, b) = (connect(&etcd, "/a").await, connect(&etcd, "/b").await);
    let key = "/registry/pods/ns/p";
    let mut watch_b = b.watch("/registry/", 0).await.expect("watch");
    a.create(key, Bytes::from_static(b"in a"))
        .await
        .expect("create in a");
    assert_eq!(b.get(key).await, Ok(None));
    let rev_b = b
        .create(key, Bytes::from_static(b"in b"))
        .await
        .expect("create in b");
    assert_eq!(
        a.get(key).await.expect("get").expect("value in a").value,
        Bytes::from_static(b"in a")
    );

    // Keys come back without the extra prefix, and each store only sees its own.
    let listed = b
        .list("/registry/", &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(
        listed
            .items
            .iter()
            .map(|kv| (kv.key.as_str(), kv.value.clone()))
            .collect::<Vec<_>>(),
        [(key, Bytes::from_static(b"in b"))]
    );
    assert_eq!(a.count("").await, Ok(1));
    let event = watch_b.next().await.expect("an event").expect("no error");
    assert_eq!(
        (event.event_type, event.key.as_str(), event.revision),
        (EventType::Added, key, rev_b)
    );
}

#[tokio::test]
async fn etcd_serves_lists_at_past_revisions() {
    let etcd = etcd().await;
    let store = connect(&etcd, "").await;
    let r1 = store
        .create("/registry/a", Bytes::from_static(b"1"))
        .await
        .expect("create");
    let r2 = store
        .update("/registry/a", Bytes::from_static(b"2"), r1)
        .await
        .expect("update");
    let past = store
        .list(
            "/registry/",
            &ListOptions {
                revision: r1,
                ..Default::default()
            },
        )
        .await
        .expect("list at r1");
    assert_eq!(
        (
            past.revision,
            past.items[0].value.clone(),
            past.items[0].mod_revision
        ),
        (r1, Bytes::from_static(b"1"), r1)
    );
    let now = store
        .list("/registry/", &ListOptions::default())
        .await
        .expect("list");
    assert_eq!((now.revision, now.items[0].mod_revision), (r2, r2));
}

#[tokio::test]
async fn watch_reports_unavailable_then_ends_when_etcd_goes_away() {
    let mut etcd = etcd().await;
    let store = connect(&etcd, "").await;
    let mut watch = store.watch("/registry/", 0).await.expect("watch");
    let rev = store
        .create("/registry/a", Bytes::from_static(b"1"))
        .await
        .expect("create");
    assert_eq!(
        watch
            .next()
            .await
            .expect("event")
            .expect("no error")
            .revision,
        rev
    );
    etcd.kill();
    let item = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("watch noticed etcd going away");
    assert!(
        matches!(item, Some(Err(Error::Unavailable(_)))),
        "expected Unavailable, got {item:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("watch ended");
    assert!(end.is_none(), "expected the end of the watch, got {end:?}");
    let write = tokio::time::timeout(
        Duration::from_secs(30),
        store.create("/registry/b", Bytes::new()),
    )
    .await;
    assert!(
        matches!(write, Ok(Err(Error::Unavailable(_)))),
        "a write without etcd must fail Unavailable, got {write:?}"
    );
}

#[tokio::test]
async fn compactor_compacts_to_the_revision_seen_one_interval_earlier() {
    let etcd = etcd().await;
    let store = connect(&etcd, "/compactor").await;
    let first = store
        .create("/registry/a", Bytes::from_static(b"1"))
        .await
        .expect("create");
    store
        .update("/registry/a", Bytes::from_static(b"2"), first)
        .await
        .expect("update");
    let token = CancellationToken::new();
    let compactor = store.spawn_compactor(Duration::from_millis(200), token.clone());
    // The first tick records the revision, the second compacts to it.
    let expired = async {
        loop {
            match store
                .list(
                    "/registry/",
                    &ListOptions {
                        revision: first,
                        ..Default::default()
                    },
                )
                .await
            {
                Err(Error::Expired { .. }) => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => panic!("list at {first}: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), expired)
        .await
        .expect("the compactor compacted");
    // History since the previous tick is kept: the latest revision is still readable exactly.
    let latest = store.current_revision().await.expect("current revision");
    store
        .list(
            "/registry/",
            &ListOptions {
                revision: latest,
                ..Default::default()
            },
        )
        .await
        .expect("list at the latest revision");
    token.cancel();
    tokio::time::timeout(Duration::from_secs(10), compactor)
        .await
        .expect("compactor stops")
        .expect("compactor task");
}

#[tokio::test]
async fn connecting_to_an_absent_etcd_fails_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let result = EtcdStore::connect(&[format!("http://127.0.0.1:{port}")], "").await;
    assert!(
        matches!(result, Err(Error::Unavailable(_))),
        "expected Unavailable, got {result:?}"
    );
}

#[tokio::test]
async fn missing_etcd_binary_is_reported_clearly() {
    let err = EtcdProcess::start_with("/nonexistent/etcd".as_ref())
        .await
        .expect_err("no etcd there");
    assert!(matches!(err, StartError::MissingBinary(_)));
    assert!(err.to_string().contains("/nonexistent/etcd"), "{err}");
}

async fn cached(etcd: &EtcdProcess, prefix: &str, token: &CancellationToken) -> CachedStore {
    let store = CachedStore::start(connect(etcd, prefix).await, token.clone());
    assert!(
        store.wait_ready(Duration::from_secs(10)).await,
        "watch cache loaded"
    );
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_etcd_passes_the_storage_conformance_suite() {
    let etcd = etcd().await;
    let token = CancellationToken::new();
    let store = cached(&etcd, "", &token).await;
    storage::conformance::run_all(&store).await;
    assert!(
        store.cache().hits() > 0,
        "LISTs were served from the cache ({} misses)",
        store.cache().misses()
    );
    token.cancel();
}

/// Read-your-writes through the cache: every LIST right after a write sees it, and is served
/// from memory even when another store sharing the etcd wrote last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_lists_see_every_acknowledged_write_and_ignore_other_tenants() {
    let etcd = etcd().await;
    let token = CancellationToken::new();
    let (a, other) = (
        cached(&etcd, "/a", &token).await,
        connect(&etcd, "/b").await,
    );
    let prefix = "/registry/configmaps/ns/";
    let before = a.cache().hits();
    for i in 0..200 {
        let key = format!("{prefix}cm-{i:03}");
        let rev = a.create(&key, Bytes::from(format!("v{i}"))).await.unwrap();
        let listed = a.list(prefix, &ListOptions::default()).await.unwrap();
        assert_eq!(listed.items.len(), i + 1, "list after create {i}");
        assert!(listed.revision >= rev);
        assert_eq!(listed.items.last().unwrap().key, key);
        // Updates and deletes are seen as well.
        let rev = a.update(&key, Bytes::from("changed"), rev).await.unwrap();
        let listed = a.list(prefix, &ListOptions::default()).await.unwrap();
        let last = listed.items.last().unwrap();
        assert_eq!(
            (last.value.as_ref(), last.mod_revision),
            (&b"changed"[..], rev)
        );
        // Once a LIST has seen a write, so has the cached copy read-modify-writes start from.
        assert_eq!(a.cached(&key).map(|kv| kv.mod_revision), Some(rev));
        // Another tenant of the etcd writes last: its revision is seen through the watch.
        other
            .create(&format!("{prefix}x-{i}"), Bytes::from("other"))
            .await
            .unwrap();
        assert_eq!(
            a.list(prefix, &ListOptions::default())
                .await
                .unwrap()
                .items
                .len(),
            i + 1
        );
    }
    a.delete(&format!("{prefix}cm-000"), None).await.unwrap();
    let listed = a.list(prefix, &ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), 199);
    assert_eq!(
        a.cache().hits() - before,
        601,
        "misses: {}",
        a.cache().misses()
    );

    // Pages of one list: served from memory while nothing changed, by etcd after a change.
    let first = a
        .list(
            prefix,
            &ListOptions {
                limit: 50,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((first.items.len(), first.remaining), (50, 149));
    let next = ListOptions {
        limit: 50,
        start_after: Some(first.items[49].key.clone()),
        revision: first.revision,
    };
    a.create(&format!("{prefix}zz"), Bytes::from("late"))
        .await
        .unwrap();
    let second = a.list(prefix, &next).await.unwrap();
    assert_eq!(
        (second.items.len(), second.remaining, second.revision),
        (50, 99, first.revision)
    );
    assert_eq!(second.items[0].key, format!("{prefix}cm-051"));
    token.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_lists_fall_back_to_etcd_until_the_cache_is_reloaded() {
    let mut etcd = etcd().await;
    let token = CancellationToken::new();
    let store = cached(&etcd, "", &token).await;
    store
        .create("/registry/pods/ns/p", Bytes::from("v"))
        .await
        .unwrap();
    etcd.kill();
    let err = store
        .list("/registry/pods/", &ListOptions::default())
        .await
        .expect_err("etcd is gone");
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    // The cache's watch fails too: it stops answering rather than serving stale data.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.cache().revision().is_some() {
        assert!(std::time::Instant::now() < deadline, "cache invalidated");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
}

fn bench_value(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i:06}","namespace":"bench","uid":"00000000-0000-0000-0000-{i:012}"}},"data":{{"k":"v"}}}}"#
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3
}

/// Figures for the etcd backend against a local etcd (fsync on this machine's disk):
/// `cargo test -p storage --release --test etcd -- --ignored --nocapture bench_etcd_store`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints figures"]
async fn bench_etcd_store() {
    use std::time::Instant;
    const OBJECTS: usize = 20_000;
    const CLIENTS: usize = 32;
    let etcd = etcd().await;
    let store = connect(&etcd, "").await;

    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (c..OBJECTS).step_by(CLIENTS) {
                    let t = Instant::now();
                    store
                        .create(
                            &format!("/registry/configmaps/bench/cm-{i:06}"),
                            bench_value(i),
                        )
                        .await
                        .expect("create");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    println!(
        "creates: {OBJECTS} from {CLIENTS} clients in {:.2}s = {:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
        elapsed.as_secs_f64(),
        OBJECTS as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );

    let started = Instant::now();
    for i in 0..200 {
        store
            .create(&format!("/seq/{i}"), bench_value(i))
            .await
            .expect("create");
    }
    println!(
        "sequential creates: {:.0}/s",
        200.0 / started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let gets = 20_000;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (c..gets).step_by(CLIENTS) {
                    let key = format!("/registry/configmaps/bench/cm-{:06}", (i * 7919) % OBJECTS);
                    assert!(store.get(&key).await.expect("get").is_some());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    println!(
        "gets: {:.0}/s ({CLIENTS} clients)",
        gets as f64 / started.elapsed().as_secs_f64()
    );

    let lists = 20;
    let started = Instant::now();
    for _ in 0..lists {
        let opts = ListOptions {
            limit: 500,
            ..Default::default()
        };
        let page = store
            .list("/registry/configmaps/bench/", &opts)
            .await
            .expect("list");
        assert_eq!((page.items.len(), page.remaining), (500, OBJECTS - 500));
    }
    println!(
        "list page of 500 among {OBJECTS}: {:.2} ms each",
        started.elapsed().as_secs_f64() * 1e3 / lists as f64
    );
    let started = Instant::now();
    for _ in 0..lists {
        let all = store
            .list("/registry/configmaps/bench/", &ListOptions::default())
            .await
            .expect("list");
        assert_eq!(all.items.len(), OBJECTS);
    }
    println!(
        "list of all {OBJECTS}: {:.2} ms each",
        started.elapsed().as_secs_f64() * 1e3 / lists as f64
    );

    // Write-to-event latency for one watcher.
    let mut watch = store
        .watch("/registry/configmaps/watched/", 0)
        .await
        .expect("watch");
    let mut latencies = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        store
            .create(
                &format!("/registry/configmaps/watched/cm-{i}"),
                bench_value(i),
            )
            .await
            .expect("create");
        watch.next().await.expect("event").expect("no error");
        latencies.push(t.elapsed());
    }
    latencies.sort_unstable();
    println!(
        "create → watch event: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    // Replaying the whole history to a new watcher.
    let started = Instant::now();
    let mut replay = store
        .watch("/registry/configmaps/bench/", 1)
        .await
        .expect("watch");
    for _ in 0..OBJECTS {
        replay.next().await.expect("event").expect("no error");
    }
    println!(
        "watch replay of {OBJECTS} events: {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}
