//! STUB (being written): liveness, readiness and startup probes; lifecycle hooks.
