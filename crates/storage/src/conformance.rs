//! The storage conformance suite: every backend must pass it (filled in by the storage work).
