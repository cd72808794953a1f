//! Leader election through a coordination.k8s.io Lease, as client-go's leaderelection: acquire
//! when the lease is free or expired, renew every retry period, and report the loss when a
//! renewal has not succeeded within the renew deadline. Several schedulers with different
//! lease names can run side by side.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Lease parameters (upstream defaults 15 s / 10 s / 2 s).
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("lost the lease {0}")]
    Lost(String),
}

/// One acquire-or-renew round: true if we hold the lease afterwards.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderConfig,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let secs = cfg.lease_duration.as_secs() as i32;
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == cfg.identity;
    let expires = spec
        .renew_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .saturating_add(SignedDuration::from_secs(
            spec.lease_duration_seconds.unwrap_or(secs) as i64,
        ))
        .unwrap_or(Timestamp::MAX);
    if !ours && !holder.is_empty() && expires > now {
        return Ok(false);
    }
    if !ours {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.holder_identity = Some(cfg.identity.clone());
    spec.lease_duration_seconds = Some(secs);
    spec.renew_time = Some(MicroTime(now));
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Wait until we lead; `false` if cancelled first.
pub async fn acquire(client: &Client, cfg: &LeaderConfig, cancel: &CancellationToken) -> bool {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut logged = false;
    loop {
        match try_acquire_or_renew(&api, cfg).await {
            Ok(true) => {
                tracing::info!(lease = %cfg.name, identity = %cfg.identity, "acquired leadership");
                return true;
            }
            Ok(false) if !logged => {
                tracing::info!(lease = %cfg.name, "waiting for leadership");
                logged = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "leader election round failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(cfg.retry_period) => {}
        }
    }
}

/// Renew until cancelled (Ok) or until renewals fail for the renew deadline (Err).
pub async fn hold(
    client: &Client,
    cfg: &LeaderConfig,
    cancel: &CancellationToken,
) -> Result<(), LeaderError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(cfg.retry_period) => {}
        }
        match try_acquire_or_renew(&api, cfg).await {
            Ok(true) => last_ok = tokio::time::Instant::now(),
            Ok(false) => return Err(LeaderError::Lost(cfg.name.clone())),
            Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "lease renewal failed"),
        }
        if last_ok.elapsed() > cfg.renew_deadline {
            return Err(LeaderError::Lost(cfg.name.clone()));
        }
    }
}
