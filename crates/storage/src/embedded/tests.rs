//! Unit tests of the in-memory state (history ring, lists at older revisions, directory counts).
//! The node layout and its file record are tested in `node.rs`.

use super::state::{Event, Node, State};
use crate::{Error, EventType, ListOptions};

fn no_objects() -> Vec<Node> {
    Vec::new()
}

/// Applies one write to `state` the way the writer does.
fn write(state: &mut State, key: &str, value: Option<&str>) {
    let revision = state.revision + 1;
    let prev = state.node(key).cloned();
    let (event_type, node) = match (value, &prev) {
        (Some(v), None) => (
            EventType::Added,
            Node::new(key, revision, revision, v.as_bytes()),
        ),
        (Some(v), Some(p)) => (
            EventType::Modified,
            Node::new(key, p.create_revision(), revision, v.as_bytes()),
        ),
        (None, Some(p)) => (EventType::Deleted, p.clone()),
        (None, None) => panic!("deleting missing key {key}"),
    };
    state.apply(vec![Event {
        event_type,
        revision,
        node,
        prev,
    }]);
}

fn keys_values(state: &State, prefix: &str, opts: &ListOptions) -> Vec<(String, String)> {
    state
        .list(prefix, opts)
        .expect("list")
        .items
        .into_iter()
        .map(|kv| (kv.key, String::from_utf8(kv.value.to_vec()).expect("utf8")))
        .collect()
}

#[test]
fn list_at_older_revision_undoes_newer_events() {
    let mut s = State::new(no_objects(), 0, 100, usize::MAX);
    write(&mut s, "/a/1", Some("v1")); // 1
    write(&mut s, "/a/2", Some("v1")); // 2
    write(&mut s, "/b/1", Some("v1")); // 3
    write(&mut s, "/a/1", Some("v2")); // 4
    write(&mut s, "/a/2", None); // 5
    write(&mut s, "/a/3", Some("v1")); // 6
    write(&mut s, "/a/1", Some("v3")); // 7

    let at = |rev| ListOptions {
        revision: rev,
        ..Default::default()
    };
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    assert_eq!(
        keys_values(&s, "/a/", &at(0)),
        vec![kv("/a/1", "v3"), kv("/a/3", "v1")]
    );
    assert_eq!(
        keys_values(&s, "/a/", &at(7)),
        vec![kv("/a/1", "v3"), kv("/a/3", "v1")]
    );
    assert_eq!(
        keys_values(&s, "/a/", &at(4)),
        vec![kv("/a/1", "v2"), kv("/a/2", "v1")]
    );
    assert_eq!(
        keys_values(&s, "/a/", &at(2)),
        vec![kv("/a/1", "v1"), kv("/a/2", "v1")]
    );
    assert_eq!(keys_values(&s, "/a/", &at(1)), vec![kv("/a/1", "v1")]);
    // Revision 0 is "latest", so the empty initial state is asked for as the oldest-1 bound.
    let r4 = s.list("/a/", &at(4)).expect("list");
    assert_eq!(r4.revision, 4);
    assert_eq!(r4.items[0].mod_revision, 4);
    assert_eq!(r4.items[0].create_revision, 1);
    assert_eq!(r4.items[1].mod_revision, 2);

    // Pagination at an older revision.
    let page1 = s
        .list(
            "/a/",
            &ListOptions {
                revision: 4,
                limit: 1,
                ..Default::default()
            },
        )
        .expect("list");
    assert_eq!(page1.items.len(), 1);
    assert_eq!(page1.remaining, 1);
    let page2 = s
        .list(
            "/a/",
            &ListOptions {
                revision: 4,
                limit: 1,
                start_after: Some(page1.items[0].key.clone()),
            },
        )
        .expect("list");
    assert_eq!(page2.items[0].key, "/a/2");
    assert_eq!(page2.remaining, 0);
}

#[test]
fn history_is_bounded_and_older_reads_expire() {
    let mut s = State::new(no_objects(), 10, 3, usize::MAX);
    assert_eq!(s.oldest(), 11);
    assert!(s
        .list(
            "/",
            &ListOptions {
                revision: 10,
                ..Default::default()
            }
        )
        .is_ok());
    for i in 0..5 {
        write(&mut s, &format!("/k{i}"), Some("v"));
    }
    // Revisions 11..=15 written, the last 3 (13..=15) retained.
    assert_eq!(s.oldest(), 13);
    assert!(s
        .list(
            "/",
            &ListOptions {
                revision: 12,
                ..Default::default()
            }
        )
        .is_ok());
    assert_eq!(
        s.list(
            "/",
            &ListOptions {
                revision: 11,
                ..Default::default()
            }
        ),
        Err(Error::Expired {
            requested: 11,
            oldest: 13
        })
    );
    assert!(matches!(
        s.list(
            "/",
            &ListOptions {
                revision: 16,
                ..Default::default()
            }
        ),
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        s.events_since(12, "/", 100),
        Err(Error::Expired {
            requested: 11,
            oldest: 13
        })
    ));
    let c = s.events_since(13, "/", 100).expect("events");
    assert_eq!(
        c.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![13, 14, 15]
    );
    assert!(c.caught_up);
    assert_eq!(c.next, 16);

    s.compact(15);
    assert_eq!(s.oldest(), 15);
    s.compact(100);
    assert_eq!(
        s.oldest(),
        16,
        "compacting past the head keeps the head watchable"
    );
    assert!(s
        .events_since(16, "/", 100)
        .expect("events")
        .events
        .is_empty());
}

#[test]
fn events_since_scans_in_chunks_and_filters_by_prefix() {
    let mut s = State::new(no_objects(), 0, 100, usize::MAX);
    for i in 0..10 {
        write(
            &mut s,
            &format!("/{}/{i}", if i % 2 == 0 { "even" } else { "odd" }),
            Some("v"),
        );
    }
    let c = s.events_since(1, "/even/", 4).expect("events");
    assert_eq!(
        c.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(c.next, 5);
    assert!(!c.caught_up);
    let c = s.events_since(5, "/even/", 100).expect("events");
    assert_eq!(
        c.events.iter().map(|e| e.revision).collect::<Vec<_>>(),
        vec![5, 7, 9]
    );
    assert!(c.caught_up);
}

#[test]
fn directory_counts_match_a_scan_through_creates_and_deletes() {
    let mut s = State::new(no_objects(), 0, 100, usize::MAX);
    let keys = [
        "/r/pods/a/1",
        "/r/pods/a/2",
        "/r/pods/b/1",
        "/r/podsx/a/1",
        "/r/svc/1",
    ];
    for k in keys {
        write(&mut s, k, Some("v"));
    }
    write(&mut s, "/r/pods/a/1", Some("v2"));
    write(&mut s, "/r/pods/b/1", None);
    // Reloading builds the same counts from the map.
    let reloaded = State::new(
        keys.iter()
            .filter_map(|k| s.node(k).cloned())
            .collect::<Vec<_>>(),
        s.revision,
        10,
        usize::MAX,
    );
    let scan = |prefix: &str| {
        keys.iter()
            .filter(|k| k.starts_with(prefix) && s.node(k).is_some())
            .count()
    };
    for prefix in [
        "",
        "/",
        "/r/",
        "/r/pods/",
        "/r/pods/a/",
        "/r/pods/b/",
        "/r/pods",
        "/r/p",
        "/x/",
    ] {
        assert_eq!(s.count(prefix), scan(prefix), "{prefix:?}");
        assert_eq!(reloaded.count(prefix), scan(prefix), "reloaded {prefix:?}");
        let page = s
            .list(
                prefix,
                &ListOptions {
                    limit: 1,
                    ..Default::default()
                },
            )
            .expect("list");
        assert_eq!(
            page.items.len() + page.remaining,
            scan(prefix),
            "first page of {prefix:?}"
        );
    }
}

#[test]
fn history_is_bounded_by_the_bytes_of_superseded_values() {
    let mut s = State::new(no_objects(), 0, 1_000, 4 * 1024);
    let big = "x".repeat(1024);
    write(&mut s, "/k", Some(&big)); // 1: its value is current, not counted
    for _ in 0..10 {
        write(&mut s, "/k", Some(&big)); // each update retains the 1 KiB it superseded
    }
    assert_eq!(s.revision, 11);
    let retained = s.revision + 1 - s.oldest();
    assert!(
        (2..=4).contains(&retained),
        "{retained} events retained within 4 KiB"
    );
    assert!(s.events_since(s.oldest(), "/", 100).is_ok());
    assert!(s.events_since(s.oldest() - 1, "/", 100).is_err());
}

#[test]
fn the_ring_shares_nodes_with_the_current_objects() {
    let mut s = State::new(no_objects(), 0, 100, usize::MAX);
    write(&mut s, "/a", Some("v1")); // 1
    write(&mut s, "/a", Some("v2")); // 2
    write(&mut s, "/b", Some("v1")); // 3
    write(&mut s, "/b", None); // 4
    let ring = s.events();
    assert_eq!(ring.len(), 4);
    let current = s.node("/a").expect("current");
    assert!(
        ring[1].node.shares_allocation(current),
        "the current object is not copied into the ring"
    );
    assert!(
        ring[1]
            .prev
            .as_ref()
            .expect("prev")
            .shares_allocation(&ring[0].node),
        "a replaced object is shared by the events that wrote and replaced it"
    );
    // A deleted object lives on in the ring only, as the node its events already shared.
    assert!(s.node("/b").is_none());
    assert!(ring[2].node.shares_allocation(&ring[3].node));
    assert!(ring[2]
        .node
        .shares_allocation(ring[3].prev.as_ref().expect("prev")));
    assert!(
        std::mem::size_of::<Event>() <= 48,
        "a ring slot costs {} bytes",
        std::mem::size_of::<Event>()
    );
}
