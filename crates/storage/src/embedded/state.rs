//! The embedded store's in-memory state: every current object, the global revision and a
//! bounded ring of recent events, all guarded by one lock.
//!
//! Each object is one immutable [`Node`] (key, revisions and value in one shared allocation); a
//! write replaces the node. The current nodes are indexed twice, by pointer: a hash set for
//! point lookups (one hash and one probe however many objects are stored) and an ordered set for
//! prefix ranges, pagination and counts. Events hold the nodes they wrote and replaced, so the ring shares keys
//! and values with the current objects and costs only its small fixed-size slots unless it holds
//! nodes that are no longer current.
//!
//! Guarantees: the ring holds *every* event with a revision in `oldest..=revision` (each write
//! bumps the revision by exactly one and produces exactly one event, so the ring is indexed by
//! `revision - oldest`); reads under one lock acquisition are a consistent snapshot; a list at an
//! older revision still covered by the ring is served exactly, by undoing the ring's newer events.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::ops::Bound;

pub(crate) use super::node::Node;
use crate::{Error, EventType, KeyValue, ListOptions, ListResult, Result, WatchEvent};

/// A current node, hashed, compared and looked up by its key.
#[derive(Debug, Clone)]
struct Obj(Node);

impl Obj {
    fn key(&self) -> &[u8] {
        self.0.key_bytes()
    }
}

impl Borrow<[u8]> for Obj {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

impl PartialEq for Obj {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Obj {}

// Consistent with `Borrow<[u8]>`: hashes and orders exactly as the key does.
impl Hash for Obj {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for Obj {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Obj {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(other.key())
    }
}

/// One change, with enough of the previous state to undo it (for lists at older revisions).
#[derive(Debug)]
pub(crate) struct Event {
    pub event_type: EventType,
    pub revision: i64,
    /// The object after the change; for a deletion, the deleted object (with its old revisions).
    pub node: Node,
    /// The object before the change, if it existed.
    pub prev: Option<Node>,
}

impl Event {
    pub fn key(&self) -> &str {
        self.node.key()
    }

    pub fn to_watch_event(&self) -> WatchEvent {
        WatchEvent {
            event_type: self.event_type,
            key: self.key().to_string(),
            value: self.node.value(),
            prev_value: self.prev.as_ref().map(Node::value),
            revision: self.revision,
        }
    }

    /// What retaining this event costs beyond the current objects: its ring slot and the node it
    /// replaced or deleted. (Its own node is either current or the next event's `prev`.)
    fn retained_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.prev.as_ref().map_or(0, |p| p.bytes())
    }
}

/// What a watcher gets from one look at the ring.
#[derive(Debug)]
pub(crate) struct Catchup {
    pub events: Vec<WatchEvent>,
    /// The next revision to look at.
    pub next: i64,
    /// Whether `next` is past the current revision (nothing more to read until a new write).
    pub caught_up: bool,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Every current object, for point lookups.
    objects: HashSet<Obj>,
    /// The same nodes, in key order, for ranges.
    ordered: BTreeSet<Obj>,
    /// How many keys lie under each "directory" (every key prefix ending in `/`), so that
    /// counting a resource or a namespace, and the first page's `remaining`, cost O(1).
    dirs: HashMap<String, usize>,
    pub revision: i64,
    history: VecDeque<Event>,
    /// Every event with a revision in `oldest..=revision` is in `history`.
    oldest: i64,
    history_limit: usize,
    /// Bytes kept alive only by `history` (slots, replaced and deleted nodes), bounded by the
    /// limit.
    history_bytes: usize,
    history_bytes_limit: usize,
}

/// The most ring slots allocated up front; a larger limit grows the ring as needed.
const MAX_PREALLOCATED_EVENTS: usize = 1 << 16;

impl State {
    /// A state holding `objects` (in any order) at `revision`, with an empty ring.
    pub fn new(
        objects: impl IntoIterator<Item = Node>,
        revision: i64,
        history_limit: usize,
        history_bytes_limit: usize,
    ) -> Self {
        let input = objects.into_iter();
        let mut objects = HashSet::with_capacity(input.size_hint().0);
        let mut ordered = Vec::with_capacity(input.size_hint().0);
        let mut dirs = HashMap::new();
        for node in input {
            count_dirs(&mut dirs, node.key(), true);
            let obj = Obj(node);
            objects.insert(obj.clone());
            ordered.push(obj);
        }
        Self {
            objects,
            // From sorted input (as loaded from the file) the set is bulk-built with full B-tree
            // nodes.
            ordered: ordered.into_iter().collect(),
            dirs,
            revision,
            // Sized for the limit up front: a ring grown by doubling would end up to twice the
            // limit, and leave the smaller buffers it outgrew behind in the allocator. Pages
            // are only touched as events arrive.
            history: VecDeque::with_capacity(history_limit.clamp(1, MAX_PREALLOCATED_EVENTS)),
            oldest: revision + 1,
            history_limit: history_limit.max(1),
            history_bytes: 0,
            history_bytes_limit,
        }
    }

    /// The oldest revision whose event is still retained (`revision + 1` when none is).
    pub fn oldest(&self) -> i64 {
        self.oldest
    }

    /// The current node of `key`.
    pub fn node(&self, key: &str) -> Option<&Node> {
        self.objects.get(key.as_bytes()).map(|o| &o.0)
    }

    pub fn get(&self, key: &str) -> Option<KeyValue> {
        self.node(key).map(|n| n.key_value_for(key))
    }

    /// The retained events, oldest first.
    #[cfg(test)]
    pub fn events(&self) -> Vec<&Event> {
        self.history.iter().collect()
    }

    /// Publishes a committed batch: `events` carry consecutive revisions following `revision`.
    pub fn apply(&mut self, events: Vec<Event>) {
        for ev in events {
            debug_assert_eq!(
                ev.revision,
                self.revision + 1,
                "revisions must be consecutive"
            );
            match ev.event_type {
                EventType::Deleted => {
                    if self.objects.remove(ev.node.key_bytes()) {
                        self.ordered.remove(ev.node.key_bytes());
                        count_dirs(&mut self.dirs, ev.key(), false);
                    }
                }
                EventType::Added | EventType::Modified => {
                    let obj = Obj(ev.node.clone());
                    if self.objects.replace(obj.clone()).is_some() {
                        self.ordered.replace(obj);
                    } else {
                        self.ordered.insert(obj);
                        count_dirs(&mut self.dirs, ev.key(), true);
                    }
                }
            }
            // Make room first, so that the ring never outgrows the capacity it was given. The
            // result is the same as trimming once after the batch: the longest suffix of events
            // within both bounds.
            self.trim(|state, _| state.history.len() >= state.history_limit);
            let revision = ev.revision;
            self.history_bytes += ev.retained_bytes();
            self.history.push_back(ev);
            self.revision = revision;
            self.trim(|state, _| state.history_bytes > state.history_bytes_limit);
        }
    }

    /// Drops the oldest events while `drop` says so, then moves `oldest` past them.
    fn trim(&mut self, drop: impl Fn(&Self, &Event) -> bool) {
        while let Some(front) = self.history.front() {
            if !drop(self, front) {
                break;
            }
            let ev = self.history.pop_front().expect("front exists");
            self.history_bytes -= ev.retained_bytes();
            self.oldest = ev.revision + 1;
        }
        if self.history.is_empty() {
            self.oldest = self.revision + 1;
        }
    }

    /// Drops retained events older than `revision`.
    pub fn compact(&mut self, revision: i64) {
        let target = revision.min(self.revision + 1);
        self.trim(|_, ev| ev.revision < target);
        self.oldest = self.oldest.max(target);
    }

    /// Events under `prefix` with revision >= `next`, scanning at most `max_scan` events.
    pub fn events_since(&self, next: i64, prefix: &str, max_scan: usize) -> Result<Catchup> {
        if next < self.oldest {
            return Err(Error::Expired {
                requested: next - 1,
                oldest: self.oldest,
            });
        }
        // next >= oldest, so the offset is non-negative; it may point past the end.
        let start = usize::try_from(next - self.oldest).unwrap_or(usize::MAX);
        let mut events = Vec::new();
        let mut new_next = next.max(self.oldest);
        for ev in self.history.iter().skip(start).take(max_scan) {
            if ev.node.key_bytes().starts_with(prefix.as_bytes()) {
                events.push(ev.to_watch_event());
            }
            new_next = ev.revision + 1;
        }
        Ok(Catchup {
            events,
            next: new_next,
            caught_up: new_next > self.revision,
        })
    }

    pub fn count(&self, prefix: &str) -> usize {
        if prefix.is_empty() {
            return self.objects.len();
        }
        if prefix.ends_with('/') {
            return self.dirs.get(prefix).copied().unwrap_or(0);
        }
        let prefix = prefix.as_bytes();
        self.ordered
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|o| o.key().starts_with(prefix))
            .count()
    }

    pub fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let at = if opts.revision == 0 {
            self.revision
        } else {
            opts.revision
        };
        if at > self.revision {
            // Upstream answers "too large resource version" (retryable); there is no dedicated
            // variant, and the revision may simply not have been written yet.
            return Err(Error::Unavailable(format!(
                "revision {at} is newer than the current revision {}",
                self.revision
            )));
        }
        if at < self.oldest - 1 {
            return Err(Error::Expired {
                requested: at,
                oldest: self.oldest,
            });
        }
        let lower = opts.start(prefix);
        let current = self
            .ordered
            .range::<[u8], _>((lower.map(str::as_bytes), Bound::Unbounded))
            .take_while(|o| o.key().starts_with(prefix.as_bytes()))
            .map(|o| (o.0.key(), Some(&o.0)));
        let limit = opts.max_items();

        if at == self.revision {
            let first_page = matches!(lower, Bound::Included(_));
            if first_page && (prefix.is_empty() || prefix.ends_with('/')) {
                // The total is known: no need to walk the keys after the page.
                let items: Vec<KeyValue> = current
                    .take(limit)
                    .filter_map(|(k, n)| n.map(|n| n.key_value_for(k)))
                    .collect();
                let remaining = self.count(prefix).saturating_sub(items.len());
                return Ok(ListResult {
                    items,
                    revision: at,
                    remaining,
                });
            }
            return Ok(page(current, limit, at));
        }
        // Undo, newest first, every retained event newer than `at`: for each key the last
        // undo written is the state before its oldest newer event, i.e. its state at `at`.
        let mut overlay: BTreeMap<&str, Option<&Node>> = BTreeMap::new();
        let skip = usize::try_from(at + 1 - self.oldest).unwrap_or(0);
        let after = |k: &str| match lower {
            Bound::Excluded(s) => k > s,
            _ => true,
        };
        for ev in self.history.iter().skip(skip).rev() {
            if ev.key().starts_with(prefix) && after(ev.key()) {
                overlay.insert(ev.key(), ev.prev.as_ref());
            }
        }
        Ok(page(
            Merge {
                current: current.peekable(),
                overlay: overlay.into_iter().peekable(),
            },
            limit,
            at,
        ))
    }
}

/// Adds (or removes) `key` to the count of every directory prefix it lies under.
fn count_dirs(dirs: &mut HashMap<String, usize>, key: &str, add: bool) {
    for (i, _) in key.match_indices('/') {
        let dir = &key[..=i];
        if add {
            match dirs.get_mut(dir) {
                Some(n) => *n += 1,
                None => {
                    dirs.insert(dir.to_string(), 1);
                }
            }
        } else if let Some(n) = dirs.get_mut(dir) {
            *n -= 1;
            if *n == 0 {
                dirs.remove(dir);
            }
        }
    }
}

fn page<'a>(
    mut items: impl Iterator<Item = (&'a str, Option<&'a Node>)>,
    limit: usize,
    revision: i64,
) -> ListResult {
    let mut out = Vec::new();
    for (k, n) in items.by_ref() {
        if let Some(n) = n {
            out.push(n.key_value_for(k));
            if out.len() == limit {
                break;
            }
        }
    }
    let remaining = items.filter(|(_, e)| e.is_some()).count();
    ListResult {
        items: out,
        revision,
        remaining,
    }
}

/// Merges the current map with an overlay of older states; the overlay wins on equal keys.
struct Merge<
    'a,
    C: Iterator<Item = (&'a str, Option<&'a Node>)>,
    O: Iterator<Item = (&'a str, Option<&'a Node>)>,
> {
    current: std::iter::Peekable<C>,
    overlay: std::iter::Peekable<O>,
}

impl<'a, C, O> Iterator for Merge<'a, C, O>
where
    C: Iterator<Item = (&'a str, Option<&'a Node>)>,
    O: Iterator<Item = (&'a str, Option<&'a Node>)>,
{
    type Item = (&'a str, Option<&'a Node>);

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.current.peek(), self.overlay.peek()) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((c, _)), Some((o, _))) => c.cmp(o),
        };
        match order {
            Ordering::Less => self.current.next(),
            Ordering::Greater => self.overlay.next(),
            Ordering::Equal => {
                self.current.next();
                self.overlay.next()
            }
        }
    }
}
