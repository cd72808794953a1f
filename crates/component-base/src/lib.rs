//! Shared plumbing for every binary of the cluster: the cluster PKI and the TLS configurations
//! built on it, kubeconfig files, static token files, logging setup and signal handling.
//!
//! Apart from the event recorder ([`events`], shared by every component that records core/v1
//! Events), nothing here knows about the Kubernetes API itself; it is the layer every component
//! (`apiserver`, `kubelet`, controllers, `ctl`, the test harness) needs before it can talk to
//! another one. Libraries never install a tracing subscriber: only binaries call
//! [`logging::init`].

pub mod client;
pub mod events;
pub mod kubeconfig;
pub mod logging;
pub mod pki;
pub mod signals;
pub mod tls;
pub mod tokenfile;
mod user;

pub use user::UserInfo;
