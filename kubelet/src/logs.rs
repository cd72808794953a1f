//! STUB (being written): reading CRI log files for `kubectl logs`.
