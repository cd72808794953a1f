//! Integration tests of the embedded (redb) store's public API: every guarantee of the
//! `Storage` trait, persistence across reopen, durability across `kill -9`, bounded file size
//! under churn, plus an ignored benchmark printing throughput, latency and memory figures:
//!
//! ```text
//! CARGO_TARGET_DIR=/root/target cargo test -p storage --test embedded \
//!     --config 'profile.dev.package.storage.opt-level=3' -- --ignored --nocapture bench_embedded_store
//! ```
//!
//! (Dependencies are already optimised in the dev profile; the `--config` optimises this crate
//! too without rebuilding everything as `--release` would.)

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use storage::embedded::{EmbeddedOptions, EmbeddedStore, FILE_NAME};
use storage::{Error, EventType, ListOptions, Storage, WatchEvent};

fn b(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(dir).expect("open store")
}

fn small_history(dir: &Path, history_events: usize) -> EmbeddedStore {
    EmbeddedStore::open_with(
        dir,
        EmbeddedOptions {
            history_events,
            ..Default::default()
        },
    )
    .expect("open store")
}

async fn next_event(
    stream: &mut futures::stream::BoxStream<'static, storage::Result<WatchEvent>>,
) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch event within 10s")
        .expect("stream still open")
        .expect("event, not error")
}

#[tokio::test]
async fn create_get_update_delete_enforce_existence_and_preconditions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let r1 = s
        .create("/registry/pods/ns/a", b("v1"))
        .await
        .expect("create");
    assert_eq!(
        s.create("/registry/pods/ns/a", b("again")).await,
        Err(Error::AlreadyExists("/registry/pods/ns/a".into()))
    );

    let kv = s
        .get("/registry/pods/ns/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b("v1"), r1, r1)
    );
    assert_eq!(s.get("/registry/pods/ns/missing").await, Ok(None));

    match s.update("/registry/pods/ns/a", b("v2"), r1 + 100).await {
        Err(Error::Conflict {
            key,
            expected,
            current: Some(cur),
        }) => {
            assert_eq!(
                (key.as_str(), expected, cur.mod_revision, cur.value),
                ("/registry/pods/ns/a", r1 + 100, r1, b("v1"))
            );
        }
        other => panic!("expected a conflict carrying the current value, got {other:?}"),
    }
    let r2 = s
        .update("/registry/pods/ns/a", b("v2"), r1)
        .await
        .expect("update");
    assert!(r2 > r1);
    let kv = s
        .get("/registry/pods/ns/a")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b("v2"), r1, r2)
    );
    assert_eq!(
        s.update("/registry/pods/ns/nope", b("x"), 1).await,
        Err(Error::NotFound("/registry/pods/ns/nope".into()))
    );

    assert!(
        matches!(s.delete("/registry/pods/ns/a", Some(r1)).await, Err(Error::Conflict { expected, .. }) if expected == r1)
    );
    let (deleted, r3) = s
        .delete("/registry/pods/ns/a", Some(r2))
        .await
        .expect("delete");
    assert!(r3 > r2);
    assert_eq!(
        (deleted.value, deleted.create_revision, deleted.mod_revision),
        (b("v2"), r1, r2)
    );
    assert_eq!(s.get("/registry/pods/ns/a").await, Ok(None));
    assert_eq!(
        s.delete("/registry/pods/ns/a", None).await,
        Err(Error::NotFound("/registry/pods/ns/a".into()))
    );

    // Re-creating starts a new life: a new create_revision.
    let r4 = s
        .create("/registry/pods/ns/a", b("v3"))
        .await
        .expect("re-create");
    assert_eq!(
        s.get("/registry/pods/ns/a")
            .await
            .expect("get")
            .expect("present")
            .create_revision,
        r4
    );
    let (_, r5) = s
        .delete("/registry/pods/ns/a", None)
        .await
        .expect("unconditional delete");
    assert_eq!(s.current_revision().await, Ok(r5));
}

#[tokio::test]
async fn every_write_including_deletes_bumps_the_revision_by_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let start = s.current_revision().await.expect("revision");
    let mut revs = vec![s.create("/k", b("1")).await.expect("create")];
    revs.push(s.update("/k", b("2"), revs[0]).await.expect("update"));
    revs.push(s.delete("/k", None).await.expect("delete").1);
    revs.push(s.create("/k", b("3")).await.expect("create"));
    assert_eq!(revs, vec![start + 1, start + 2, start + 3, start + 4]);
    // Failed writes do not consume revisions.
    assert!(s.create("/k", b("x")).await.is_err());
    assert_eq!(s.current_revision().await, Ok(start + 4));
}

#[tokio::test]
async fn concurrent_writes_get_distinct_consecutive_revisions_and_one_winner_per_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for w in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..50 {
                revs.push(
                    s.create(&format!("/c/{w}/{i}"), b("v"))
                        .await
                        .expect("create"),
                );
                // Every writer races for the same shared key: exactly one create wins per round.
                if let Ok(r) = s.create(&format!("/shared/{i}"), b("v")).await {
                    revs.push(r);
                }
            }
            revs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort_unstable();
    assert_eq!(all.len(), 16 * 50 + 50, "one winner per shared key");
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>());
    assert_eq!(s.count("/shared/").await, Ok(50));
}

#[tokio::test]
async fn list_pages_through_a_prefix_with_remaining_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    for i in 0..10 {
        s.create(&format!("/registry/pods/ns/p{i:02}"), b("v"))
            .await
            .expect("create");
    }
    s.create("/registry/pods2/x", b("other prefix"))
        .await
        .expect("create");
    s.create("/registry/pod", b("shorter"))
        .await
        .expect("create");
    assert_eq!(s.count("/registry/pods/").await, Ok(10));

    let rev = s.current_revision().await.expect("revision");
    let mut keys = Vec::new();
    let mut opts = ListOptions {
        limit: 4,
        ..Default::default()
    };
    let mut remainings = Vec::new();
    loop {
        let page = s.list("/registry/pods/", &opts).await.expect("list");
        assert_eq!(page.revision, rev);
        keys.extend(page.items.iter().map(|kv| kv.key.clone()));
        remainings.push(page.remaining);
        if page.remaining == 0 {
            break;
        }
        opts.start_after = page.items.last().map(|kv| kv.key.clone());
        opts.revision = page.revision;
    }
    assert_eq!(remainings, vec![6, 2, 0]);
    assert_eq!(
        keys,
        (0..10)
            .map(|i| format!("/registry/pods/ns/p{i:02}"))
            .collect::<Vec<_>>()
    );

    let all = s
        .list("/registry/", &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(all.items.len(), 12);
    assert!(
        all.items.windows(2).all(|w| w[0].key < w[1].key),
        "key order"
    );
    assert_eq!(
        s.list("/nothing/", &ListOptions::default())
            .await
            .expect("list")
            .items,
        vec![]
    );
}

#[tokio::test]
async fn list_at_an_older_retained_revision_is_exact_and_older_ones_expire() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = small_history(dir.path(), 5);
    let r1 = s.create("/a/1", b("old")).await.expect("create");
    let r2 = s.create("/a/2", b("v")).await.expect("create");
    // A paginated list started at r2 keeps seeing r2 while writes continue.
    let page1 = s
        .list(
            "/a/",
            &ListOptions {
                limit: 1,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!((page1.revision, page1.remaining), (r2, 1));
    s.update("/a/1", b("new"), r1).await.expect("update");
    s.delete("/a/2", None).await.expect("delete");
    s.create("/a/3", b("v")).await.expect("create");
    let opts = ListOptions {
        limit: 1,
        start_after: Some("/a/1".into()),
        revision: r2,
    };
    let page2 = s.list("/a/", &opts).await.expect("list");
    assert_eq!(
        page2
            .items
            .iter()
            .map(|kv| kv.key.as_str())
            .collect::<Vec<_>>(),
        vec!["/a/2"]
    );
    assert_eq!((page2.revision, page2.remaining), (r2, 0));
    let at_r2 = s
        .list(
            "/a/",
            &ListOptions {
                revision: r2,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(at_r2.items[0].value, b("old"));

    for i in 0..10 {
        s.create(&format!("/b/{i}"), b("v")).await.expect("create");
    }
    match s
        .list(
            "/a/",
            &ListOptions {
                revision: r2,
                ..Default::default()
            },
        )
        .await
    {
        Err(Error::Expired { requested, oldest }) => {
            assert_eq!((requested, oldest), (r2, r2 + 3 + 10 - 5 + 1))
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    let future = s.current_revision().await.expect("revision") + 10;
    assert!(matches!(
        s.list(
            "/a/",
            &ListOptions {
                revision: future,
                ..Default::default()
            }
        )
        .await,
        Err(Error::Unavailable(_))
    ));
}

#[tokio::test]
async fn watch_replays_history_then_live_changes_with_prev_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    // Revision 0 means "from now", so make the first watched revision > 1.
    s.create("/other/first", b("x")).await.expect("create");
    let r1 = s.create("/w/a", b("1")).await.expect("create");
    let r2 = s.update("/w/a", b("2"), r1).await.expect("update");
    s.create("/other/x", b("x")).await.expect("create");

    let mut from_start = s.watch("/w/", r1 - 1).await.expect("watch");
    let mut live = s.watch("/w/", 0).await.expect("watch");
    let (_, r3) = s.delete("/w/a", None).await.expect("delete");

    let e = next_event(&mut from_start).await;
    assert_eq!(
        (
            e.event_type,
            e.key.as_str(),
            e.value.clone(),
            e.prev_value,
            e.revision
        ),
        (EventType::Added, "/w/a", b("1"), None, r1)
    );
    let e = next_event(&mut from_start).await;
    assert_eq!(
        (e.event_type, e.value, e.prev_value, e.revision),
        (EventType::Modified, b("2"), Some(b("1")), r2)
    );
    let e = next_event(&mut from_start).await;
    assert_eq!(
        (e.event_type, e.value, e.prev_value, e.revision),
        (EventType::Deleted, b("2"), Some(b("2")), r3)
    );

    let e = next_event(&mut live).await;
    assert_eq!(
        (e.event_type, e.revision),
        (EventType::Deleted, r3),
        "from 0 is live only"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(50), live.next())
            .await
            .is_err(),
        "nothing else"
    );
}

#[tokio::test]
async fn watch_started_mid_stream_sees_every_revision_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(open(dir.path()));
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 150;
    let total = (WRITERS * PER_WRITER) as i64;
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = s.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..PER_WRITER {
                let key = format!("/live/{w}/{}", i % 10);
                match s.get(&key).await.expect("get") {
                    Some(kv) => s.update(&key, b("u"), kv.mod_revision).await.map(|_| ()),
                    None => s.create(&key, b("c")).await.map(|_| ()),
                }
                .expect("write");
            }
        }));
    }
    // Start watchers while the writers run, each from whatever revision is current then.
    let mut watchers = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(3)).await;
        let from = s.current_revision().await.expect("revision");
        let mut stream = s.watch("/live/", from).await.expect("watch");
        watchers.push(tokio::spawn(async move {
            let mut expected = from + 1;
            while expected <= total {
                let e = next_event(&mut stream).await;
                assert_eq!(e.revision, expected, "no gap, no duplicate, in order");
                expected += 1;
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    for w in watchers {
        w.await.expect("watcher");
    }
}

#[tokio::test]
async fn watch_filters_by_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let mut stream = s.watch("/registry/pods/", 0).await.expect("watch");
    s.create("/registry/podsx/a", b("no"))
        .await
        .expect("create");
    s.create("/registry/secrets/a", b("no"))
        .await
        .expect("create");
    let r = s
        .create("/registry/pods/ns/a", b("yes"))
        .await
        .expect("create");
    let e = next_event(&mut stream).await;
    assert_eq!((e.key.as_str(), e.revision), ("/registry/pods/ns/a", r));
}

#[tokio::test]
async fn watch_from_a_revision_older_than_history_expires() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = small_history(dir.path(), 3);
    for i in 0..6 {
        s.create(&format!("/e/{i}"), b("v")).await.expect("create");
    }
    // Revisions 4..=6 are retained: watching from 3 works, from 2 does not.
    assert!(s.watch("/e/", 3).await.is_ok());
    assert_eq!(
        s.watch("/e/", 2).await.err(),
        Some(Error::Expired {
            requested: 2,
            oldest: 4
        })
    );

    s.compact(6).await.expect("compact");
    assert!(matches!(
        s.watch("/e/", 4).await.err(),
        Some(Error::Expired { oldest: 6, .. })
    ));
    assert!(s.watch("/e/", 5).await.is_ok());
}

#[tokio::test]
async fn a_watcher_that_falls_behind_history_gets_expired_and_its_stream_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = small_history(dir.path(), 10);
    let mut slow = s.watch("/s/", 0).await.expect("watch");
    for i in 0..30 {
        s.create(&format!("/s/{i}"), b("v")).await.expect("create");
    }
    let item = tokio::time::timeout(Duration::from_secs(10), slow.next())
        .await
        .expect("item")
        .expect("an item");
    assert!(
        matches!(
            item,
            Err(Error::Expired {
                requested: 0,
                oldest: 21
            })
        ),
        "got {item:?}"
    );
    assert!(slow.next().await.is_none(), "stream ends after Expired");
}

#[tokio::test]
async fn reopening_preserves_objects_and_revision_including_deletes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r_a, last) = {
        let s = open(dir.path());
        let r_a = s.create("/p/a", b("a")).await.expect("create");
        let r_b = s.create("/p/b", b("b")).await.expect("create");
        s.update("/p/a", b("a2"), r_a).await.expect("update");
        let (_, last) = s.delete("/p/b", Some(r_b)).await.expect("delete");
        (r_a, last)
    };
    let s = open(dir.path());
    assert_eq!(
        s.current_revision().await,
        Ok(last),
        "the deletion's revision survives"
    );
    let kv = s.get("/p/a").await.expect("get").expect("present");
    assert_eq!(
        (kv.value, kv.create_revision, kv.mod_revision),
        (b("a2"), r_a, r_a + 2)
    );
    assert_eq!(s.get("/p/b").await, Ok(None));
    // History is not persisted: watching can resume from the current revision only.
    assert!(s.watch("/p/", last).await.is_ok());
    assert!(matches!(
        s.watch("/p/", last - 1).await.err(),
        Some(Error::Expired { .. })
    ));
    assert_eq!(s.create("/p/c", b("c")).await, Ok(last + 1));
}

#[tokio::test]
async fn close_finishes_writes_ends_watches_and_releases_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    let mut stream = s.watch("/", 0).await.expect("watch");
    let r = s.create("/x", b("v")).await.expect("create");
    s.close().await;
    assert_eq!(
        next_event(&mut stream).await.revision,
        r,
        "published events are still delivered"
    );
    assert!(tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("ends")
        .is_none());
    // The writer thread has exited and closed the file: it can be opened again at once.
    let s = open(dir.path());
    assert_eq!(s.current_revision().await, Ok(r));
    drop(s);
    let s = open(dir.path());
    assert_eq!(
        s.get("/x").await.expect("get").map(|kv| kv.mod_revision),
        Some(r)
    );
}

#[tokio::test]
async fn a_store_directory_in_use_cannot_be_opened_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    assert!(matches!(
        EmbeddedStore::open(dir.path()),
        Err(Error::Unavailable(_))
    ));
    drop(s);
    assert!(EmbeddedStore::open(dir.path()).is_ok());
}

#[tokio::test]
async fn guaranteed_update_retries_concurrent_increments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(open(dir.path()));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                s.guaranteed_update("/counter", &|cur| {
                    let n: u64 = cur
                        .map(|kv| {
                            std::str::from_utf8(&kv.value)
                                .expect("utf8")
                                .parse()
                                .expect("number")
                        })
                        .unwrap_or(0);
                    Ok(Some(Bytes::from((n + 1).to_string())))
                })
                .await
                .expect("guaranteed update");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        s.get("/counter")
            .await
            .expect("get")
            .expect("present")
            .value,
        b("80")
    );
}

#[tokio::test]
async fn file_stays_bounded_under_create_update_delete_churn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(open(dir.path()));
    let file = dir.path().join(FILE_NAME);
    let value = Bytes::from(vec![b'x'; 512]);
    let churn = |cycles: usize| {
        let mut tasks = Vec::new();
        for w in 0..64 {
            let (s, value) = (s.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                for i in (w..cycles).step_by(64) {
                    let key = format!("/churn/{w}/{}", i % 8);
                    let r = s.create(&key, value.clone()).await.expect("create");
                    let r = s.update(&key, value.clone(), r).await.expect("update");
                    s.delete(&key, Some(r)).await.expect("delete");
                }
            }));
        }
        tasks
    };
    for t in churn(5_000) {
        t.await.expect("task");
    }
    let warm = std::fs::metadata(&file).expect("stat").len();
    for t in churn(15_000) {
        t.await.expect("task");
    }
    let after = std::fs::metadata(&file).expect("stat").len();
    println!("file size after 5k churn cycles: {warm} bytes, after 15k more: {after} bytes");
    assert!(
        after <= warm.max(1 << 20) * 2,
        "file grew from {warm} to {after} bytes under churn"
    );
    assert_eq!(s.count("/churn/").await, Ok(0));
}

#[tokio::test]
async fn embedded_store_passes_the_storage_conformance_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path());
    storage::conformance::run_all(&s).await;
}

// --- Durability across kill -9 -------------------------------------------------------------

const CRASH_DIR_ENV: &str = "EMBEDDED_STORE_CRASH_DIR";
const CRASH_ROUND_ENV: &str = "EMBEDDED_STORE_CRASH_ROUND";

/// The child half of `acknowledged_writes_survive_sigkill`: writes from 32 tasks forever,
/// printing each acknowledged write, until the parent kills it.
#[test]
#[ignore = "run as a child process by acknowledged_writes_survive_sigkill"]
fn crash_child_writes_until_killed() {
    let (Some(dir), Some(round)) = (
        std::env::var_os(CRASH_DIR_ENV),
        std::env::var(CRASH_ROUND_ENV).ok(),
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let s = Arc::new(EmbeddedStore::open(Path::new(&dir)).expect("open"));
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..32 {
            let (s, out, round) = (s.clone(), out.clone(), round.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{round}/{w}/{i}");
                    let r = s
                        .create(&key, Bytes::from(format!("{round}-{w}-{i}")))
                        .await
                        .expect("create");
                    let r2 = s
                        .update(&key, Bytes::from(format!("{round}-{w}-{i}-u")), r)
                        .await
                        .expect("update");
                    let mut out = out.lock().expect("stdout");
                    writeln!(out, "ACK {key} {r} {r2}").expect("write ack");
                    out.flush().expect("flush ack");
                }
            }));
        }
        // A safety net in case the parent died: never outlive it by much.
        tokio::time::sleep(Duration::from_secs(60)).await;
        std::process::exit(3);
    });
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acked: HashMap<String, (i64, i64)> = HashMap::new();
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child_writes_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .env(CRASH_ROUND_ENV, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let mut round_acks = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read child output");
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let mut parts = rest.split(' ');
            let key = parts.next().expect("key").to_string();
            let r: i64 = parts.next().expect("rev").parse().expect("rev");
            let r2: i64 = parts.next().expect("rev2").parse().expect("rev2");
            acked.insert(key, (r, r2));
            round_acks += 1;
            // Vary the kill point between rounds; writes are in flight at that moment.
            if round_acks == 300 + 400 * round {
                child.kill().expect("SIGKILL child");
                break;
            }
        }
        let status = child.wait().expect("wait child");
        assert!(
            !status.success(),
            "the child must have been killed, got {status}"
        );
        assert_eq!(
            round_acks,
            300 + 400 * round,
            "child stopped early ({status})"
        );
    }

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let s = open(dir.path());
        let max = acked.values().map(|(_, r2)| *r2).max().expect("acks");
        assert!(s.current_revision().await.expect("revision") >= max);
        for (key, (r, r2)) in &acked {
            let kv = s
                .get(key)
                .await
                .expect("get")
                .unwrap_or_else(|| panic!("acknowledged {key} lost"));
            assert_eq!((kv.create_revision, kv.mod_revision), (*r, *r2), "{key}");
            assert!(kv.value.ends_with(b"-u"), "{key}");
        }
        // Revisions stay unique across crashes: nothing acknowledged before was reused.
        let r = s.create("/after-crash", b("v")).await.expect("create");
        assert!(r > max);
    });
}

// --- Benchmark -----------------------------------------------------------------------------

const BENCH_OPEN_DIR_ENV: &str = "EMBEDDED_STORE_BENCH_OPEN_DIR";

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn bench_value(i: usize) -> Bytes {
    // A small object, roughly a ConfigMap with one entry.
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i:06}","namespace":"bench","uid":"00000000-0000-0000-0000-{i:012}"}},"data":{{"k":"v"}}}}"#
    ))
}

/// The child half of the benchmark: opens a populated store in a fresh process and reports
/// open time and RSS (a fresh process, so the figures exclude the populating allocations).
#[test]
#[ignore = "run as a child process by bench_embedded_store"]
fn bench_open_child() {
    let Some(dir) = std::env::var_os(BENCH_OPEN_DIR_ENV) else {
        return;
    };
    let before = rss_bytes();
    let started = Instant::now();
    let s = EmbeddedStore::open(Path::new(&dir)).expect("open");
    let elapsed = started.elapsed();
    let after = rss_bytes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n = rt.block_on(s.count("/")).expect("count");
    println!(
        "OPEN objects={n} open_ms={:.1} rss_before_mib={:.1} rss_after_mib={:.1}",
        elapsed.as_secs_f64() * 1e3,
        mib(before),
        mib(after)
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: prints figures"]
async fn bench_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Arc::new(open(dir.path()));
    const OBJECTS: usize = 100_000;
    const CLIENTS: usize = 32;

    // Durable creates from 32 concurrent clients.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (c..OBJECTS).step_by(CLIENTS) {
                let t = Instant::now();
                s.create(
                    &format!("/registry/configmaps/bench/cm-{i:06}"),
                    bench_value(i),
                )
                .await
                .expect("create");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "creates: {OBJECTS} from {CLIENTS} clients in {:.2}s = {:.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
        elapsed.as_secs_f64(),
        OBJECTS as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99)
    );

    // Sequential durable writes (one fsync each): the latency floor.
    let started = Instant::now();
    for i in 0..200 {
        s.create(&format!("/seq/{i}"), bench_value(i))
            .await
            .expect("create");
    }
    println!(
        "sequential creates: {:.0}/s",
        200.0 / started.elapsed().as_secs_f64()
    );

    // Single-threaded GET cost at 10 and at 100,000 keys (random order): a point lookup should
    // cost the same whatever the store's size.
    let small_dir = tempfile::tempdir().expect("tempdir");
    let small = open(small_dir.path());
    let key = |i: usize| format!("/registry/configmaps/bench/cm-{i:06}");
    for i in 0..10 {
        small.create(&key(i), bench_value(i)).await.expect("create");
    }
    // Warm up both, then measure.
    get_ns_per_op(&small, 10, 100_000).await;
    get_ns_per_op(&s, OBJECTS, 100_000).await;
    let ns_small = get_ns_per_op(&small, 10, 1_000_000).await;
    let ns_large = get_ns_per_op(&s, OBJECTS, 1_000_000).await;
    println!(
        "get, 1 task: {ns_small:.0} ns/op with 10 keys, {ns_large:.0} ns/op with {OBJECTS} keys (ratio {:.2})",
        ns_large / ns_small
    );
    drop(small);

    // GETs from memory.
    let started = Instant::now();
    let gets = 400_000;
    let mut tasks = Vec::new();
    for c in 0..2 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..gets).step_by(2) {
                let key = format!("/registry/configmaps/bench/cm-{:06}", (i * 7919) % OBJECTS);
                assert!(s.get(&key).await.expect("get").is_some());
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    println!(
        "gets: {:.0}/s (2 tasks, {OBJECTS} objects)",
        gets as f64 / started.elapsed().as_secs_f64()
    );

    // LIST of 3,000 objects (a namespace) among 100,000.
    for i in 0..3_000 {
        s.create(
            &format!("/registry/configmaps/ns3k/cm-{i:06}"),
            bench_value(i),
        )
        .await
        .ok();
    }
    let started = Instant::now();
    let lists = 200;
    for _ in 0..lists {
        let r = s
            .list("/registry/configmaps/ns3k/", &ListOptions::default())
            .await
            .expect("list");
        assert_eq!(r.items.len(), 3_000);
    }
    println!(
        "list of 3,000: {:.2} ms each",
        started.elapsed().as_secs_f64() * 1e3 / lists as f64
    );
    let started = Instant::now();
    for _ in 0..lists {
        let r = s
            .list(
                "/registry/configmaps/",
                &ListOptions {
                    limit: 500,
                    ..Default::default()
                },
            )
            .await
            .expect("list");
        assert_eq!(r.remaining, OBJECTS + 3_000 - 500);
    }
    println!(
        "list page of 500 of {} (with remaining count): {:.2} ms each",
        OBJECTS + 3_000,
        started.elapsed().as_secs_f64() * 1e3 / lists as f64
    );
    let started = Instant::now();
    for _ in 0..lists {
        assert_eq!(
            s.count("/registry/configmaps/bench/").await.expect("count"),
            OBJECTS
        );
    }
    println!(
        "count of {OBJECTS}: {:.2} ms each",
        started.elapsed().as_secs_f64() * 1e3 / lists as f64
    );

    // Churn: file size stays bounded.
    let file = dir.path().join(FILE_NAME);
    let before_churn = std::fs::metadata(&file).expect("stat").len();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..50_000).step_by(CLIENTS) {
                let key = format!("/churn/{c}/{}", i % 16);
                let r = s.create(&key, bench_value(i)).await.expect("create");
                let r = s.update(&key, bench_value(i + 1), r).await.expect("update");
                s.delete(&key, Some(r)).await.expect("delete");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let after_churn = std::fs::metadata(&file).expect("stat").len();
    println!(
        "churn: 50,000 create+update+delete cycles ({:.0} writes/s); file {:.1} MiB before, {:.1} MiB after",
        150_000.0 / started.elapsed().as_secs_f64(),
        mib(before_churn),
        mib(after_churn)
    );

    let encoded: usize = s
        .list("/", &ListOptions::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|kv| kv.key.len() + kv.value.len() + 16)
        .sum();
    let objects = s.count("/").await.expect("count");
    println!(
        "in-process RSS after all of the above: {:.1} MiB",
        mib(rss_bytes())
    );
    drop(s);

    // Open time and RSS in a fresh process, after a clean close and after a SIGKILL (redb
    // then repairs the file: it walks the trees to rebuild its allocator state).
    let open_in_child = || {
        let out = Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "bench_open_child", "--ignored", "--nocapture"])
            .env(BENCH_OPEN_DIR_ENV, dir.path())
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        stdout
            .lines()
            .find(|l| l.starts_with("OPEN "))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no figures from child: {stdout}"))
    };
    println!(
        "reopen in a fresh process: {}; encoded data {:.1} MiB in {objects} objects, file {:.1} MiB",
        open_in_child(),
        mib(encoded as u64),
        mib(std::fs::metadata(&file).expect("stat").len())
    );
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "crash_child_writes_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(CRASH_DIR_ENV, dir.path())
        .env(CRASH_ROUND_ENV, "bench")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let acks = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(|l| l.ok())
        .filter(|l| l.starts_with("ACK "))
        .take(2_000)
        .count();
    child.kill().expect("SIGKILL child");
    child.wait().expect("wait child");
    println!(
        "reopen after SIGKILL during writes ({acks} acks): {}",
        open_in_child()
    );

    // What the store itself costs per object after 100,000 creates of ConfigMap-sized values
    // (each in a fresh process): with the default options, with (almost) no history ring, and
    // with a smaller redb cache, so the ring's and the cache's shares are visible.
    let defaults = EmbeddedOptions::default();
    for (label, history_events, cache_bytes) in [
        (
            "default options",
            defaults.history_events,
            defaults.cache_bytes,
        ),
        ("history_events=1", 1, defaults.cache_bytes),
        ("cache_bytes=1MiB", defaults.history_events, 1 << 20),
    ] {
        let out = Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "bench_memory_child", "--ignored", "--nocapture"])
            .env(BENCH_MEMORY_ENV, format!("{history_events},{cache_bytes}"))
            .output()
            .expect("run child");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let figures = stdout
            .lines()
            .find(|l| l.starts_with("MEMORY "))
            .unwrap_or_else(|| panic!("no figures from child: {stdout}"));
        println!("memory after {OBJECTS} creates, {label}: {figures}");
    }
}

/// Single-threaded GETs of the first `n` bench keys in a scattered order; nanoseconds per GET.
/// Each key is formatted into one reused buffer, so that the loop itself costs the same
/// (no cache misses of its own) whatever `n` is.
async fn get_ns_per_op(s: &EmbeddedStore, n: usize, ops: usize) -> f64 {
    use std::fmt::Write as _;
    let mut key = String::new();
    let started = Instant::now();
    for i in 0..ops {
        key.clear();
        write!(key, "/registry/configmaps/bench/cm-{:06}", (i * 7919) % n).expect("format");
        let kv = s.get(&key).await.expect("get");
        assert!(kv.is_some());
    }
    started.elapsed().as_nanos() as f64 / ops as f64
}

const BENCH_MEMORY_ENV: &str = "EMBEDDED_STORE_BENCH_MEMORY";

/// A value the size of the ConfigMaps in the API server benchmark (539 bytes), in an exactly
/// sized buffer as the API server stores them.
fn configmap_value(i: usize) -> Bytes {
    let mut s = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"cm-{i:06}","namespace":"bench","uid":"00000000-0000-0000-0000-{i:012}","resourceVersion":"{i}","creationTimestamp":"2024-01-01T00:00:00Z"}},"data":{{"k":""#
    );
    while s.len() < 539 - 3 {
        s.push('v');
    }
    s.push_str(r#""}}"#);
    let mut v = s.into_bytes();
    v.shrink_to_fit();
    Bytes::from(v)
}

/// The child half of the memory figures: RSS growth over 100,000 creates into a fresh store
/// opened with the `history_events,cache_bytes` given in the environment.
#[test]
#[ignore = "run as a child process by bench_embedded_store"]
fn bench_memory_child() {
    let Ok(spec) = std::env::var(BENCH_MEMORY_ENV) else {
        return;
    };
    let (history_events, cache_bytes) = spec
        .split_once(',')
        .and_then(|(h, c)| Some((h.parse().ok()?, c.parse().ok()?)))
        .expect("history_events,cache_bytes");
    const OBJECTS: usize = 100_000;
    const CLIENTS: usize = 32;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let before = rss_bytes();
    let started = Instant::now();
    let s = Arc::new(
        EmbeddedStore::open_with(
            dir.path(),
            EmbeddedOptions {
                history_events,
                cache_bytes,
                ..Default::default()
            },
        )
        .expect("open"),
    );
    let encoded: usize = rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut encoded = 0;
                for i in (c..OBJECTS).step_by(CLIENTS) {
                    let key = format!("/registry/configmaps/bench/cm-{i:06}");
                    let value = configmap_value(i);
                    encoded += key.len() + value.len();
                    s.create(&key, value).await.expect("create");
                }
                encoded
            }));
        }
        let mut encoded = 0;
        for t in tasks {
            encoded += t.await.expect("task");
        }
        encoded
    });
    let elapsed = started.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "MEMORY creates/s={:.0} rss_growth_mib={:.1} encoded_mib={:.1} per_object: rss={} encoded={} overhead={}",
        OBJECTS as f64 / elapsed.as_secs_f64(),
        mib(grown),
        mib(encoded as u64),
        grown as usize / OBJECTS,
        encoded / OBJECTS,
        (grown as usize).saturating_sub(encoded) / OBJECTS
    );
}
