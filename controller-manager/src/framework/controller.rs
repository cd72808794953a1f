//! The reconcile loop: a [`Reconciler`] fed by a [`WorkQueue`] of keys, run by N workers.
//!
//! Guarantees: one key is never reconciled by two workers at once; a key changed during its
//! reconcile is reconciled again afterwards; errors are retried with the queue's rate-limited
//! backoff; `Action::requeue_after` schedules a later pass (e.g. for minReadySeconds or
//! progress deadlines). Workers stop when the token is cancelled, finishing the reconcile in
//! hand.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::metrics::Metrics;
use super::queue::{RateLimiter, WorkQueue};
use super::ObjectKey;

/// What to do with a key after a successful reconcile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Nothing more until the next change.
    pub fn done() -> Self {
        Self {
            requeue_after: None,
        }
    }

    /// Reconcile again after `d` (unless a change comes sooner).
    pub fn requeue_after(d: Duration) -> Self {
        Self {
            requeue_after: Some(d),
        }
    }

    pub fn requeue(&self) -> Option<Duration> {
        self.requeue_after
    }

    /// The sooner of two actions.
    pub fn min(self, other: Action) -> Action {
        match (self.requeue_after, other.requeue_after) {
            (Some(a), Some(b)) => Action::requeue_after(a.min(b)),
            (a, b) => Action {
                requeue_after: a.or(b),
            },
        }
    }
}

/// A reconcile failure; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Other(m.into())
    }

    /// A 409 (conflict or already exists): expected under concurrency, logged quietly.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 404)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a reconcile knows about its run.
#[derive(Clone, Debug)]
pub struct ReconcileContext {
    /// The controller's name (descriptor name).
    pub controller: &'static str,
    /// How many times this key has failed in a row.
    pub retries: u32,
    /// Cancelled when the controller-manager stops or loses leadership.
    pub token: CancellationToken,
}

/// Level-triggered reconciliation of one key: read the desired and observed state (from the
/// informer caches), make one step towards it, report what is next. Must be idempotent.
pub trait Reconciler: Send + Sync + 'static {
    fn reconcile(
        &self,
        key: &ObjectKey,
        ctx: &ReconcileContext,
    ) -> impl Future<Output = Result<Action>> + Send;
}

/// A queue and the reconciler that drains it.
pub struct Controller<R: Reconciler> {
    name: &'static str,
    queue: WorkQueue<ObjectKey>,
    reconciler: Arc<R>,
    metrics: Arc<Metrics>,
}

impl<R: Reconciler> Controller<R> {
    /// A controller named `name` (used in logs and metric labels).
    pub fn new(name: &'static str, reconciler: Arc<R>, metrics: Arc<Metrics>) -> Self {
        let queue = WorkQueue::with_limiter(RateLimiter::default(), Some(metrics.queue(name)));
        Self {
            name,
            queue,
            reconciler,
            metrics,
        }
    }

    /// The queue handle for watch handlers to add keys to.
    pub fn queue(&self) -> WorkQueue<ObjectKey> {
        self.queue.clone()
    }

    /// Wait for `synced` (the informers this controller reads), then run `workers` workers
    /// until `token` is cancelled.
    pub async fn run(
        self,
        workers: usize,
        synced: impl Future<Output = ()>,
        token: CancellationToken,
    ) {
        tokio::select! {
            _ = synced => {}
            _ = token.cancelled() => return,
        }
        tracing::info!(
            controller = self.name,
            workers,
            "caches synced; starting workers"
        );
        let rm = self.metrics.reconcile(self.name);
        let mut tasks = Vec::new();
        for _ in 0..workers.max(1) {
            let (queue, rec, token, rm, name) = (
                self.queue.clone(),
                self.reconciler.clone(),
                token.clone(),
                rm.clone(),
                self.name,
            );
            tasks.push(tokio::spawn(async move {
                while let Some(key) = queue.get().await {
                    let ctx = ReconcileContext { controller: name, retries: queue.num_requeues(&key), token: token.clone() };
                    let start = Instant::now();
                    let span = tracing::debug_span!("reconcile", controller = name, key = %key);
                    let res = rec.reconcile(&key, &ctx).instrument(span).await;
                    rm.duration.observe(start.elapsed().as_secs_f64());
                    rm.total.inc();
                    match res {
                        Ok(action) => {
                            queue.forget(&key);
                            if let Some(d) = action.requeue() {
                                queue.add_after(key.clone(), d);
                            }
                        }
                        Err(e) => {
                            rm.errors.inc();
                            if e.is_conflict() || e.is_not_found() {
                                tracing::debug!(controller = name, key = %key, error = %e, "reconcile conflict; retrying");
                            } else {
                                tracing::warn!(controller = name, key = %key, error = %e, "reconcile failed; retrying with backoff");
                            }
                            queue.add_rate_limited(key.clone());
                        }
                    }
                    queue.done(&key);
                }
            }));
        }
        token.cancelled().await;
        self.queue.shut_down();
        for t in tasks {
            let _ = t.await;
        }
        tracing::info!(controller = self.name, "stopped");
    }
}
