//! Leader election through a `coordination.k8s.io/v1` Lease, as upstream's `leaderelection`
//! package with a `LeaseLock`: only the holder runs controllers.
//!
//! A candidate takes the lease when it is free or when its record has not changed for the lease
//! duration *as observed locally* (so clock skew between instances does not matter); the
//! holder renews every retry period and gives up leadership (cancelling its controllers) if it
//! cannot renew within the renew deadline. On graceful shutdown the holder releases the lease
//! (empty holder, 1 s duration) so a standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

/// Lease timing and identity.
#[derive(Clone, Debug)]
pub struct LeaderElectionConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leaderelection lost: could not renew lease {0} within the renew deadline")]
    Lost(String),
}

/// Runs `lead` while holding the lease; returns when `shutdown` is cancelled (after releasing
/// the lease) or with [`LeaderError::Lost`] when leadership is lost (upstream exits then).
pub async fn run<F, Fut>(
    client: Client,
    cfg: LeaderElectionConfig,
    shutdown: CancellationToken,
    metrics_leader: prometheus_client::metrics::gauge::Gauge,
    lead: F,
) -> Result<(), LeaderError>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut observed: Option<(LeaseSpec, Instant)> = None;
    // Acquire.
    loop {
        if try_acquire_or_renew(&api, &cfg, &mut observed).await {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(jitter(cfg.retry_period)) => {}
        }
    }
    tracing::info!(lease = %format!("{}/{}", cfg.namespace, cfg.name), identity = %cfg.identity, "successfully acquired lease");
    metrics_leader.set(1);
    let leading = shutdown.child_token();
    let task = tokio::spawn(lead(leading.clone()));
    let mut last_renew = Instant::now();
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = tokio::time::sleep(cfg.retry_period) => {}
        }
        if try_acquire_or_renew(&api, &cfg, &mut observed).await {
            last_renew = Instant::now();
        } else if last_renew.elapsed() > cfg.renew_deadline {
            break Err(LeaderError::Lost(format!("{}/{}", cfg.namespace, cfg.name)));
        }
    };
    leading.cancel();
    let _ = task.await;
    metrics_leader.set(0);
    if result.is_ok() {
        release(&api, &cfg).await;
    } else {
        tracing::error!(identity = %cfg.identity, "leaderelection lost");
    }
    result
}

fn jitter(d: Duration) -> Duration {
    d + d.mul_f64(rand::random::<f64>() * 1.2)
}

/// One round of upstream's `tryAcquireOrRenew`.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderElectionConfig,
    observed: &mut Option<(LeaseSpec, Instant)>,
) -> bool {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let fresh = LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs() as i32),
        acquire_time: Some(now.clone()),
        renew_time: Some(now.clone()),
        lease_transitions: Some(0),
        ..Default::default()
    };
    let current = match api.get_opt(&cfg.name).await {
        Ok(Some(l)) => l,
        Ok(None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    ..Default::default()
                },
                spec: Some(fresh.clone()),
            };
            return match api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    *observed = Some((fresh, Instant::now()));
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "creating lease failed");
                    false
                }
            };
        }
        Err(e) => {
            tracing::warn!(error = %e, "error retrieving lease");
            return false;
        }
    };
    let spec = current.spec.clone().unwrap_or_default();
    if observed.as_ref().map(|(s, _)| s) != Some(&spec) {
        *observed = Some((spec.clone(), Instant::now()));
    }
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let am_holder = holder == cfg.identity;
    let observed_at = observed
        .as_ref()
        .map(|(_, t)| *t)
        .unwrap_or_else(Instant::now);
    let duration = Duration::from_secs(
        spec.lease_duration_seconds
            .unwrap_or(cfg.lease_duration.as_secs() as i32)
            .max(0) as u64,
    );
    if !holder.is_empty() && !am_holder && observed_at.elapsed() < duration {
        return false;
    }
    let mut next = fresh;
    if am_holder {
        next.acquire_time = spec.acquire_time.clone();
        next.lease_transitions = spec.lease_transitions;
    } else {
        next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    let mut lease = current;
    lease.spec = Some(next.clone());
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => {
            *observed = Some((next, Instant::now()));
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, "updating lease failed");
            false
        }
    }
}

async fn release(api: &Api<Lease>, cfg: &LeaderElectionConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now.clone());
    spec.acquire_time = Some(now);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(identity = %cfg.identity, "released lease"),
        Err(e) => tracing::warn!(error = %e, "releasing lease failed"),
    }
}
