//! etcd backend: see crate docs.
