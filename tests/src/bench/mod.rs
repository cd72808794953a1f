//! Building blocks of the API server benchmark (`bench-apiserver`): a cheap HTTPS load
//! generator, the apiserver child process, the workloads and the figures' arithmetic.
//!
//! The load generator keeps its own CPU use low so the server under test gets the machine:
//! one keep-alive HTTP/1.1 connection per worker over rustls, raw hyper, no kube-rs in hot
//! loops. Nothing here asserts timings; the benchmark only reports what it measured.

pub mod client;
pub mod report;
pub mod server;
pub mod workloads;
