//! STUB (being written).
