//! One stored object as one event wrote it, in a single allocation.
//!
//! Layout: `key length (u32 LE) | key | create_revision (i64 LE) | mod_revision (i64 LE) |
//! value`. The part from `create_revision` on (the *record*) is exactly what the file stores
//! under the key, so a write stores a slice of the node and a load builds the node from the
//! file's bytes with one copy.
//!
//! Why one allocation: with 100,000 objects the nodes are far out of cache, and a GET pays for
//! every separate block it reads (hash slot, then node, key, value's reference count, value:
//! five dependent misses, each ~150 ns on this VM with its page walk). Here the reference
//! count, the key compared by the lookup, the revisions and the start of the value share the
//! first cache lines of one block, and the rest of the value follows them; a read shares the
//! value with [`Bytes::from_owner`], whose small header is allocated (hot) by the reader.
//!
//! Why a thin pointer ([`triomphe::ThinArc`], length inside the block): the index's slots hold
//! one word per node instead of `Arc<[u8]>`'s two, so the hash set's slot array for 100,000
//! objects is 1 MiB instead of 2 and stays mostly in the core's cache, and the ordered set's
//! nodes shrink alike. A GET's lookup had three dependent misses (control bytes 12%, slot 29%,
//! node 56% of its samples in `perf annotate`); bench-apiserver's GETs with 100,000 objects
//! against 10 went from 0.87-0.90× to 0.95-0.96× (A/B, same run pairs), and RSS with 100,000
//! ConfigMaps from 95.2-95.5 to 91.9 MiB. (Its block also has no weak count: one word fewer.)

use std::fmt;

use bytes::Bytes;
use triomphe::ThinArc;

use crate::KeyValue;

const KEY_LEN: usize = 4;
/// The record's revisions, before the value.
pub(crate) const RECORD_HEADER: usize = 16;

/// See the module documentation. Cloning shares the allocation.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Node(ThinArc<(), u8>);

impl Node {
    pub fn new(key: &str, create_revision: i64, mod_revision: i64, value: &[u8]) -> Self {
        let mut buf = Self::key_part(key, RECORD_HEADER + value.len());
        buf.extend_from_slice(&create_revision.to_le_bytes());
        buf.extend_from_slice(&mod_revision.to_le_bytes());
        buf.extend_from_slice(value);
        Self(ThinArc::from_header_and_slice((), &buf))
    }

    /// The node for `key` from its record as the file stores it; None if the record is shorter
    /// than its header.
    pub fn from_record(key: &str, record: &[u8]) -> Option<Self> {
        if record.len() < RECORD_HEADER {
            return None;
        }
        let mut buf = Self::key_part(key, record.len());
        buf.extend_from_slice(record);
        Some(Self(ThinArc::from_header_and_slice((), &buf)))
    }

    /// The key's part of the layout, with room for `rest` more bytes.
    fn key_part(key: &str, rest: usize) -> Vec<u8> {
        // Keys come from request paths, far below 4 GiB.
        let len = u32::try_from(key.len()).expect("a key shorter than 4 GiB");
        let mut buf = Vec::with_capacity(KEY_LEN + key.len() + rest);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(key.as_bytes());
        buf
    }

    /// The whole layout.
    fn bytes_all(&self) -> &[u8] {
        &self.0.slice
    }

    fn record_start(&self) -> usize {
        let len: [u8; KEY_LEN] = self.bytes_all()[..KEY_LEN].try_into().expect("4 bytes");
        KEY_LEN + u32::from_le_bytes(len) as usize
    }

    pub fn key_bytes(&self) -> &[u8] {
        &self.bytes_all()[KEY_LEN..self.record_start()]
    }

    pub fn key(&self) -> &str {
        std::str::from_utf8(self.key_bytes()).expect("nodes are built from a str key")
    }

    /// What the file stores under the key.
    pub fn record(&self) -> &[u8] {
        &self.bytes_all()[self.record_start()..]
    }

    fn revision_at(&self, offset: usize) -> i64 {
        let at = self.record_start() + offset;
        i64::from_le_bytes(self.bytes_all()[at..at + 8].try_into().expect("8 bytes"))
    }

    pub fn create_revision(&self) -> i64 {
        self.revision_at(0)
    }

    pub fn mod_revision(&self) -> i64 {
        self.revision_at(8)
    }

    pub fn value_bytes(&self) -> &[u8] {
        &self.record()[RECORD_HEADER..]
    }

    /// The value, sharing this node's allocation.
    pub fn value(&self) -> Bytes {
        Bytes::from_owner(Value(self.clone()))
    }

    /// The object as read, with `key` (equal to this node's: the caller has it at hand, which
    /// saves checking the stored key's UTF-8).
    pub fn key_value_for(&self, key: &str) -> KeyValue {
        debug_assert_eq!(key.as_bytes(), self.key_bytes());
        KeyValue {
            key: key.to_string(),
            value: self.value(),
            create_revision: self.create_revision(),
            mod_revision: self.mod_revision(),
        }
    }

    /// Whether both are the same node, not merely equal ones.
    #[cfg(test)]
    pub fn shares_allocation(&self, other: &Self) -> bool {
        std::ptr::eq(self.bytes_all(), other.bytes_all())
    }

    /// What keeping this node alive costs: its block (with the reference count and length) and
    /// the pointer that holds it.
    pub fn bytes(&self) -> usize {
        16 + self.bytes_all().len() + std::mem::size_of::<Self>()
    }
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("key", &String::from_utf8_lossy(self.key_bytes()))
            .field("create_revision", &self.create_revision())
            .field("mod_revision", &self.mod_revision())
            .field("value", &String::from_utf8_lossy(self.value_bytes()))
            .finish()
    }
}

/// A node seen as its value, the owner behind [`Node::value`].
struct Value(Node);

impl AsRef<[u8]> for Value {
    fn as_ref(&self) -> &[u8] {
        self.0.value_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_and_record_round_trip() {
        let n = Node::new("/registry/a/b", 3, i64::MAX, b"{\"a\":1}");
        assert_eq!(n.key(), "/registry/a/b");
        assert_eq!(n.create_revision(), 3);
        assert_eq!(n.mod_revision(), i64::MAX);
        assert_eq!(n.value(), Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(Node::from_record(n.key(), n.record()), Some(n.clone()));
        assert_eq!(n.record().len(), RECORD_HEADER + 7);
        assert_eq!(Node::from_record("k", &n.record()[..10]), None);
        let empty = Node::new("", 1, 2, b"");
        assert_eq!((empty.key(), empty.value_bytes()), ("", &b""[..]));
        let kv = n.key_value_for(n.key());
        assert_eq!((kv.key.as_str(), kv.create_revision), ("/registry/a/b", 3));
        // The value outlives the node it was read from.
        let v = n.value();
        drop(n);
        assert_eq!(&v[..], b"{\"a\":1}");
    }
}
