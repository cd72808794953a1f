//! Embedded backend (redb): see crate docs.
