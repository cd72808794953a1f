//! The controller framework every controller in this crate is written against. Its API is
//! stable; controllers live one per file in `crate::controllers` and are listed in
//! `crate::controllers::DESCRIPTORS`.
//!
//! # Writing a controller
//!
//! ```ignore
//! use crate::framework::*;
//!
//! pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
//!     // 1. Shared informers: one watch per kind for the whole process.
//!     let services = ctx.informers.informer::<Service>();
//!     let pods = ctx.informers.informer::<Pod>();
//!     // 2. The reconciler holds what it needs (client, caches, recorder, expectations).
//!     let rec = Arc::new(MyReconciler {
//!         client: ctx.client.clone(),
//!         services: services.clone(),
//!         recorder: ctx.recorder("endpoint-controller"),
//!     });
//!     let controller = Controller::new("endpoint", rec, ctx.metrics.clone());
//!     // 3. Watch handlers only map objects to keys.
//!     let q = controller.queue();
//!     services.subscribe(move |c: &Change<Service>| q.add(ObjectKey::of(&**c.object())));
//!     let q = controller.queue();
//!     pods.subscribe(move |c: &Change<Pod>| { /* map the pod to service keys, q.add(..) */ });
//!     // 4. Run N workers once the caches are synced, until the token is cancelled.
//!     let workers = ctx.config.concurrent_endpoint_syncs;
//!     let synced = async move { services.wait_synced().await; pods.wait_synced().await };
//!     Ok(Box::pin(controller.run(workers, synced, ctx.token.clone())))
//! }
//!
//! struct MyReconciler { /* … */ }
//! impl Reconciler for MyReconciler {
//!     async fn reconcile(&self, key: &ObjectKey, ctx: &ReconcileContext) -> Result<Action> {
//!         let Some(svc) = self.services.get(key.namespace.as_deref(), &key.name) else {
//!             return Ok(Action::done()); // deleted: clean up, done
//!         };
//!         // compute desired state (pure fn, unit-tested), apply the difference via the client
//!         Ok(Action::done())
//!     }
//! }
//! ```
//! and add `ControllerDescriptor { name: "endpoint", enabled_by_default: true, start: endpoint::start }`
//! to `crate::controllers::DESCRIPTORS`.
//!
//! # Pieces
//! - [`InformerFactory`] / [`Informer`] / [`Change`]: shared caches (`kube` reflector stores) with
//!   ordered change fan-out; one watch per kind, re-listing after 410s and API server restarts.
//!   Handlers run on the informer task: keep them to key mapping and `queue.add`. Never call
//!   `subscribe` from inside a handler.
//! - [`WorkQueue`]: de-duplicating, rate-limited queue (5 ms → 1000 s per key, 10 qps/100 burst
//!   globally), `add`, `add_after`, `add_rate_limited`.
//! - [`Reconciler`] + [`Controller`]: `async fn reconcile(&self, key, ctx) -> Result<Action>`;
//!   errors retry with backoff, [`Action::requeue_after`] schedules a later pass.
//! - [`Expectations`]: for controllers that create/delete children (never double-create on a
//!   slow watch).
//! - [`EventRecorder`] (from [`ControllerContext::recorder`]): core/v1 Events with upstream's
//!   `source.component` and count aggregation.
//! - [`ControllerDescriptor`]: name, on-by-default, start fn; `--controllers=*,-name` selects.
//! - Leader election ([`leader`]), `/healthz` and `/metrics` ([`Metrics`]) are run by
//!   [`crate::run`]; controllers only see [`ControllerContext::token`] cancelled when the
//!   process stops or leadership is lost.
//! - [`object`]: [`ObjectKey`], owner references ([`controller_of`], [`new_controller_ref`]),
//!   label [`Selector`]s.

pub mod controller;
pub use component_base::events;
pub mod expectations;
pub mod informer;
pub mod leader;
pub mod metrics;
pub mod object;
pub mod queue;

use std::sync::Arc;

pub use controller::{Action, Controller, Error, ReconcileContext, Reconciler, Result};
pub use events::{EventRecorder, EventSink, EventType};
pub use expectations::Expectations;
pub use futures::future::BoxFuture;
pub use informer::{Change, Informer, InformerFactory, InformerKind};
pub use metrics::Metrics;
pub use object::{controller_key, controller_of, new_controller_ref, ObjectKey, Selector};
pub use queue::WorkQueue;

use kube::Client;
use tokio_util::sync::CancellationToken;

use crate::Config;

/// What a controller's start fn gets: shared for the whole leadership term.
#[derive(Clone)]
pub struct ControllerContext {
    /// Authenticated client to the API server.
    pub client: Client,
    /// The shared informers (one watch per kind).
    pub informers: InformerFactory,
    /// The validated process configuration (flags).
    pub config: Arc<Config>,
    /// Process metrics; pass to [`Controller::new`].
    pub metrics: Arc<Metrics>,
    /// Cancelled on shutdown or loss of leadership.
    pub token: CancellationToken,
    events: EventSink,
}

impl ControllerContext {
    pub fn new(
        client: Client,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        token: CancellationToken,
    ) -> Self {
        let informers = InformerFactory::new(client.clone(), token.clone());
        let host = config.identity.clone();
        let events = EventSink::start(client.clone(), host, token.clone());
        Self {
            client,
            informers,
            config,
            metrics,
            token,
            events,
        }
    }

    /// An event recorder with `source.component` = `component` (e.g. `"replicaset-controller"`).
    pub fn recorder(&self, component: &'static str) -> EventRecorder {
        self.events.recorder(component)
    }
}

/// Starts one controller: registers its informer handlers and returns the future that runs
/// its workers until [`ControllerContext::token`] is cancelled.
pub type StartFn = fn(&ControllerContext) -> Result<BoxFuture<'static, ()>>;

/// One row of the controller table.
#[derive(Clone, Copy)]
pub struct ControllerDescriptor {
    /// The name `--controllers` uses (upstream's, e.g. `replicaset`, `garbagecollector`).
    pub name: &'static str,
    /// Whether `*` includes it.
    pub enabled_by_default: bool,
    pub start: StartFn,
}

/// Upstream's `IsControllerEnabled`: `-name` disables, `name` enables, `*` means the defaults.
pub fn is_enabled(name: &str, enabled_by_default: bool, selection: &[String]) -> bool {
    let mut star = false;
    for s in selection {
        if s == name {
            return true;
        }
        if s.strip_prefix('-') == Some(name) {
            return false;
        }
        if s == "*" {
            star = true;
        }
    }
    star && enabled_by_default
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_selection_follows_upstream() {
        let sel = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        let cases = [
            ("*", "deployment", true, true),
            ("*", "bootstrapsigner", false, false),
            ("*,bootstrapsigner", "bootstrapsigner", false, true),
            ("*,-deployment", "deployment", true, false),
            ("replicaset", "deployment", true, false),
            ("replicaset", "replicaset", true, true),
        ];
        for (s, name, default, want) in cases {
            assert_eq!(is_enabled(name, default, &sel(s)), want, "{s} {name}");
        }
    }
}
