//! The workloads: closed-loop request drivers (creates, GETs), repeated LISTs, watch fan-out,
//! paced mutations and raw etcd puts. Each returns what it measured and counts failures
//! instead of stopping, so one bad response shows up in the report rather than aborting the run.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::client::{Conn, Endpoint, Req};

/// A worker gives up after this many failed requests (a dead server, not a slow one).
const MAX_WORKER_ERRORS: u64 = 100;

/// The length of each ConfigMap's single data value: "small" objects.
pub const CONFIGMAP_VALUE_LEN: usize = 64;

/// The body creating ConfigMap `name` with one small data value.
pub fn configmap(name: &str) -> Bytes {
    let value = "v".repeat(CONFIGMAP_VALUE_LEN);
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"data":{{"key":"{value}"}}}}"#
    )
    .into()
}

/// The body creating Pod `name`: one container, everything else defaulted by the server.
pub fn pod(name: &str) -> Bytes {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"app":"bench"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.10"}}]}}}}"#
    )
    .into()
}

/// Creates namespace `ns` (an existing one is fine).
pub async fn ensure_namespace(conn: &mut Conn, ns: &str) -> Result<()> {
    let body = format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{ns}"}}}}"#);
    conn.expect(
        &Req::post_json("/api/v1/namespaces", body),
        &[StatusCode::CREATED, StatusCode::CONFLICT],
    )
    .await?;
    Ok(())
}

/// When a closed-loop drive stops.
#[derive(Clone, Copy, Debug)]
pub struct Until {
    /// Stop after this many requests (indices `0..count`).
    pub count: Option<usize>,
    /// Stop issuing new requests at this instant.
    pub deadline: Option<Instant>,
}

/// What a closed-loop drive measured.
#[derive(Debug, Default)]
pub struct Throughput {
    /// Requests answered with the expected status.
    pub ok: u64,
    /// Requests that failed (wrong status or transport error).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Wall time from the first request to the last response.
    pub elapsed: Duration,
    /// Sum of the bodies of the successful responses.
    pub body_bytes: u64,
    /// Per-request latencies of the successful requests.
    pub latencies: Vec<Duration>,
}

impl Throughput {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Adds `other`'s requests (not its elapsed time: that depends on how the runs overlapped).
    pub fn merge(&mut self, other: Throughput) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.body_bytes += other.body_bytes;
        self.latencies.extend(other.latencies);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Runs `workers` closed loops, each on its own keep-alive connection, sending `make(i)` for
/// consecutive global indices `i` until `until`. A response counts as successful when its
/// status is `expect`. With a `label`, progress goes to stderr every 10 seconds.
pub async fn drive<F>(
    ep: &Endpoint,
    workers: usize,
    until: Until,
    expect: StatusCode,
    label: Option<&str>,
    make: F,
) -> Result<Throughput>
where
    F: Fn(usize) -> Req + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::with_capacity(workers);
    for _ in 0..workers {
        conns.push(ep.connect().await?);
    }
    let t0 = Instant::now();
    let progress = label.map(|label| {
        let (done, label) = (done.clone(), label.to_string());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(
                tokio::time::Instant::now() + Duration::from_secs(10),
                Duration::from_secs(10),
            );
            loop {
                tick.tick().await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "    {label}: {n} after {:.0} s ({:.0}/s)",
                    t0.elapsed().as_secs_f64(),
                    n as f64 / t0.elapsed().as_secs_f64()
                );
            }
        })
    });
    let mut tasks = Vec::with_capacity(workers);
    for mut conn in conns {
        let (ep, make, next, done) = (ep.clone(), make.clone(), next.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Throughput::default();
            loop {
                if until.deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if until.count.is_some_and(|n| i >= n) {
                    break;
                }
                let req = make(i);
                let start = Instant::now();
                let failure = match conn.send(&req).await {
                    Ok(resp) if resp.status == expect => {
                        out.latencies.push(start.elapsed());
                        out.ok += 1;
                        out.body_bytes += resp.body.len() as u64;
                        done.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                    Ok(resp) => Some(format!("{} {}: {}", req.method, req.path, resp.describe())),
                    Err(e) => {
                        let msg = format!("{} {}: {e:#}", req.method, req.path);
                        match ep.connect().await {
                            Ok(c) => conn = c,
                            Err(e) => {
                                out.errors += 1;
                                out.first_error
                                    .get_or_insert(format!("{msg}; reconnect: {e:#}"));
                                break;
                            }
                        }
                        Some(msg)
                    }
                };
                if let Some(msg) = failure {
                    out.errors += 1;
                    out.first_error.get_or_insert(msg);
                    if out.errors >= MAX_WORKER_ERRORS {
                        break;
                    }
                }
            }
            out
        }));
    }
    let mut total = Throughput::default();
    for t in tasks {
        total.merge(t.await?);
    }
    total.elapsed = t0.elapsed();
    if let Some(p) = progress {
        p.abort();
    }
    Ok(total)
}

/// A cheap, well-mixed hash of `i` (splitmix64), to pick objects at random but reproducibly.
pub fn mix(i: usize) -> u64 {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Lists `path` `times` times on one connection; returns each list's latency (request sent to
/// last body byte), the size of the first body and its item count.
pub async fn list_latency(ep: &Endpoint, path: &str, times: usize) -> Result<ListLatency> {
    let mut conn = ep.connect().await?;
    let req = Req::get(path);
    // One untimed list to warm caches and to count the items.
    let first = conn.expect(&req, &[StatusCode::OK]).await?;
    let items = serde_json::from_slice::<serde_json::Value>(&first.body)
        .context("list body is not JSON")?["items"]
        .as_array()
        .map_or(0, Vec::len);
    let mut out = ListLatency {
        latencies: Vec::with_capacity(times),
        heads: Vec::with_capacity(times),
        bytes: first.body.len(),
        items,
    };
    for _ in 0..times {
        let start = Instant::now();
        let (status, head, len) = conn.receive(&req).await?;
        out.latencies.push(start.elapsed());
        if status != StatusCode::OK || len != out.bytes {
            bail!(
                "GET {path}: {status}, {len} bytes (the first list had {})",
                out.bytes
            );
        }
        out.heads.push(head);
    }
    Ok(out)
}

/// What the LIST phase measured.
#[derive(Debug, Default)]
pub struct ListLatency {
    /// Request sent → last byte of the body received.
    pub latencies: Vec<Duration>,
    /// Request sent → response head received.
    pub heads: Vec<Duration>,
    /// Body length of the untimed first list.
    pub bytes: usize,
    /// Items in the untimed first list.
    pub items: usize,
}

/// What the watch fan-out measured.
#[derive(Debug, Default)]
pub struct WatchResult {
    /// One latency per (watcher, created object) delivery.
    pub latencies: Vec<Duration>,
    pub expected: usize,
    /// Watchers whose response headers arrived before the first create.
    pub ready_watchers: usize,
    pub errors: Vec<String>,
    /// Objects created per second, as paced.
    pub rate: f64,
}

/// Opens `watchers` watches on ConfigMaps in `ns`, then creates `events` ConfigMaps one every
/// `interval`, and measures, for every watcher and object, the time from just before the create
/// request was sent to the watcher receiving its ADDED event.
pub async fn watch_fanout(
    ep: &Endpoint,
    ns: &str,
    watchers: usize,
    events: usize,
    interval: Duration,
) -> Result<WatchResult> {
    let base = Instant::now();
    // Nanoseconds after `base` at which object `i` was sent, plus one (0: not yet sent).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..events).map(|_| AtomicU64::new(0)).collect());
    let stop = CancellationToken::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<()>>(watchers);
    let path = format!("/api/v1/namespaces/{ns}/configmaps?watch=true");
    let mut tasks = Vec::with_capacity(watchers);
    for _ in 0..watchers {
        let (ep, sent, stop, ready_tx, path) = (
            ep.clone(),
            sent.clone(),
            stop.clone(),
            ready_tx.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let opened = async {
                let mut conn = ep.connect().await?;
                let (status, body) = conn.stream(&Req::get(path)).await?;
                if status != StatusCode::OK {
                    let bytes = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    bail!("watch: {status}: {}", String::from_utf8_lossy(&bytes));
                }
                Ok::<_, anyhow::Error>((conn, body))
            };
            let (_conn, mut body) = match opened.await {
                Ok(x) => x,
                Err(e) => {
                    let msg = format!("{e:#}");
                    let _ = ready_tx.send(Err(e)).await;
                    return (Vec::new(), Some(msg));
                }
            };
            let _ = ready_tx.send(Ok(())).await;
            let mut latencies = Vec::with_capacity(events);
            let mut buf: Vec<u8> = Vec::new();
            let mut error = None;
            while latencies.len() < events {
                let frame = tokio::select! {
                    _ = stop.cancelled() => break,
                    f = body.frame() => f,
                };
                let now = Instant::now();
                let data = match frame {
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Some(Err(e)) => {
                        error = Some(format!("watch stream: {e}"));
                        break;
                    }
                    None => {
                        error = Some("watch stream ended early".to_string());
                        break;
                    }
                };
                buf.extend_from_slice(&data);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if let Some(i) = added_index(&line) {
                        let at = sent.get(i).map_or(0, |s| s.load(Ordering::SeqCst));
                        if at > 0 {
                            latencies.push(
                                now.saturating_duration_since(base + Duration::from_nanos(at - 1)),
                            );
                        }
                    }
                }
            }
            (latencies, error)
        }));
    }
    drop(ready_tx);
    let mut result = WatchResult {
        expected: watchers * events,
        ..Default::default()
    };
    // Watches should answer with headers at once; if they only do so with the first event,
    // stop waiting and measure anyway.
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = ready_rx.recv().await {
            match r {
                Ok(()) => result.ready_watchers += 1,
                Err(e) => result.errors.push(format!("{e:#}")),
            }
            if result.ready_watchers + result.errors.len() == watchers {
                break;
            }
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut conn = ep.connect().await?;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let t0 = Instant::now();
    for (i, slot) in sent.iter().enumerate() {
        tick.tick().await;
        let req = Req::post_json(
            format!("/api/v1/namespaces/{ns}/configmaps"),
            configmap(&format!("w-{i}")),
        );
        slot.store(base.elapsed().as_nanos() as u64 + 1, Ordering::SeqCst);
        let resp = conn.send(&req).await?;
        if resp.status != StatusCode::CREATED {
            result
                .errors
                .push(format!("create w-{i}: {}", resp.describe()));
        }
    }
    result.rate = events as f64 / t0.elapsed().as_secs_f64();
    let canceller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        })
    };
    for t in tasks {
        let (latencies, error) = t.await?;
        result.latencies.extend(latencies);
        if let Some(e) = error {
            if result.errors.len() < 5 {
                result.errors.push(e);
            }
        }
    }
    canceller.abort();
    Ok(result)
}

/// The index `i` of an ADDED event for ConfigMap `w-i`.
fn added_index(line: &[u8]) -> Option<usize> {
    #[derive(serde::Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        object: Object,
    }
    #[derive(serde::Deserialize)]
    struct Object {
        metadata: Meta,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        name: String,
    }
    let ev: Event = serde_json::from_slice(line).ok()?;
    if ev.kind != "ADDED" {
        return None;
    }
    ev.object.metadata.name.strip_prefix("w-")?.parse().ok()
}

/// What the paced mutations measured.
#[derive(Debug, Default)]
pub struct Paced {
    /// Per-request latency from the request's *scheduled* send time to its response, so a
    /// slow response also charges the requests queued behind it.
    pub latencies: Vec<Duration>,
    /// The same latencies by step: creates, patches, deletes.
    pub by_step: [Vec<Duration>; 3],
    pub errors: u64,
    pub first_error: Option<String>,
    pub achieved_rate: f64,
}

/// Sends mutations at a fixed `rate` for `duration`: for each object a create, a merge patch and
/// a delete, each in its own slot of the schedule.
pub async fn paced_mutations(
    ep: &Endpoint,
    ns: &str,
    rate: f64,
    duration: Duration,
) -> Result<Paced> {
    let period = Duration::from_secs_f64(1.0 / rate);
    let objects = ((duration.as_secs_f64() * rate) as usize / 3).max(1);
    let pool: Arc<Mutex<Vec<Conn>>> = Arc::new(Mutex::new(Vec::new()));
    for _ in 0..8 {
        let c = ep.connect().await?;
        pool.lock().expect("pool lock").push(c);
    }
    let t0 = Instant::now() + Duration::from_millis(50);
    let mut alarms = alarms((0..objects * 3).map(|i| t0 + period * i as u32)).into_iter();
    let mut tasks = Vec::with_capacity(objects);
    for j in 0..objects {
        let (ep, pool, ns) = (ep.clone(), pool.clone(), ns.to_string());
        let steps_due: Vec<_> = alarms.by_ref().take(3).collect();
        tasks.push(tokio::spawn(async move {
            let first = t0 + period * (3 * j as u32);
            let mut due = steps_due.into_iter();
            let _ = due.next().expect("three alarms per object").await;
            let pooled = pool.lock().expect("pool lock").pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => ep.connect().await?,
            };
            let name = format!("m-{j}");
            let item = format!("/api/v1/namespaces/{ns}/configmaps/{name}");
            let steps = [
                (
                    Req::post_json(
                        format!("/api/v1/namespaces/{ns}/configmaps"),
                        configmap(&name),
                    ),
                    StatusCode::CREATED,
                ),
                (
                    Req::merge_patch(item.clone(), r#"{"data":{"key":"patched"}}"#),
                    StatusCode::OK,
                ),
                (Req::delete(item), StatusCode::OK),
            ];
            let mut out = Vec::with_capacity(3);
            let mut healthy = true;
            for (k, (req, want)) in steps.iter().enumerate() {
                let scheduled = first + period * k as u32;
                if k > 0 {
                    let _ = due.next().expect("three alarms per object").await;
                }
                let result = conn.send(req).await;
                let latency = scheduled.elapsed();
                out.push(match result {
                    Ok(r) if r.status == *want => Ok((k, latency)),
                    Ok(r) => Err(format!("{} {}: {}", req.method, req.path, r.describe())),
                    Err(e) => {
                        healthy = false;
                        Err(format!("{} {}: {e:#}", req.method, req.path))
                    }
                });
                if !healthy {
                    break;
                }
            }
            if healthy {
                pool.lock().expect("pool lock").push(conn);
            }
            anyhow::Ok(out)
        }));
    }
    let mut paced = Paced::default();
    for t in tasks {
        for r in t.await?? {
            match r {
                Ok((step, l)) => {
                    paced.latencies.push(l);
                    paced.by_step[step].push(l);
                }
                Err(e) => {
                    paced.errors += 1;
                    paced.first_error.get_or_insert(e);
                }
            }
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    paced.achieved_rate = (paced.latencies.len() as u64 + paced.errors) as f64 / wall.max(1e-9);
    Ok(paced)
}

/// One receiver per instant in `at` (in order), each completed at its instant, to within
/// about 0.1 ms, by one OS thread sleeping from one to the next.
///
/// Paced latencies are measured from each request's scheduled time, and tokio's timer fires up
/// to ~2 ms late (a 1 ms wheel, then epoll's whole-millisecond timeout): awaiting
/// `sleep_until` would add that lateness to every figure as if the server had taken it.
pub fn alarms(at: impl Iterator<Item = Instant>) -> Vec<tokio::sync::oneshot::Receiver<()>> {
    let (due, receivers): (Vec<_>, Vec<_>) = at
        .map(|t| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            ((t, tx), rx)
        })
        .unzip();
    std::thread::spawn(move || {
        for (t, tx) in due {
            let now = Instant::now();
            if t > now {
                std::thread::sleep(t - now);
            }
            let _ = tx.send(());
        }
    });
    receivers
}

/// Raw etcd-client load on one connection, the yardstick for the API server's etcd figures.
///
/// Run it against an etcd of its own and throw that etcd away; its keys are left in place.
/// Removing them with one range delete writes that many tombstones in one batch, which grows
/// etcd 3.4's buffer of uncommitted writes for good (it is never shrunk while its bucket keeps
/// being written), and etcd 3.4 copies that whole buffer for every read: on the same etcd,
/// linearizable gets fell from 5,961/s to 2,473/s right after such a delete, and the API
/// server's GETs and creates measured after it ran at 40% of their figures on a fresh etcd.
pub struct RawEtcd {
    client: etcd_client::Client,
}

impl RawEtcd {
    pub async fn connect(endpoint: &str) -> Result<Self> {
        let client = etcd_client::Client::connect([endpoint], None)
            .await
            .with_context(|| format!("connecting to etcd at {endpoint}"))?;
        Ok(Self { client })
    }

    /// Latencies of `times` sequential linearizable ranges over every key under `prefix`
    /// (what an API server without a watch cache asks etcd for a LIST), and the keys returned.
    pub async fn range_latency(
        &self,
        prefix: &str,
        times: usize,
    ) -> Result<(Vec<Duration>, usize)> {
        // A LIST of thousands of pods is larger than gRPC's default 4 MiB message limit.
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(i32::MAX as usize);
        let options = || etcd_client::GetOptions::new().with_prefix();
        let keys = kv.get(prefix, Some(options())).await?.kvs().len();
        let mut latencies = Vec::with_capacity(times);
        for _ in 0..times {
            let start = Instant::now();
            let resp = kv.get(prefix, Some(options())).await?;
            latencies.push(start.elapsed());
            if resp.kvs().len() != keys {
                bail!(
                    "etcd range {prefix}: {keys} keys, then {}",
                    resp.kvs().len()
                );
            }
        }
        Ok((latencies, keys))
    }

    /// `workers` closed loops of puts of `value_len`-byte values to `{prefix}{worker}/{i}`.
    pub async fn puts(
        &self,
        prefix: &str,
        value_len: usize,
        workers: usize,
        duration: Duration,
    ) -> Result<Throughput> {
        let (value, prefix) = (vec![b'v'; value_len], prefix.to_string());
        raw_phase(&self.client, workers, duration, move |kv, w, i| {
            let (mut kv, value, key) = (kv, value.clone(), format!("{prefix}{w}/{i}"));
            async move { kv.put(key, value, None).await.map(drop) }
        })
        .await
    }

    /// Like [`RawEtcd::puts`], but each write is the transaction the API server's etcd store
    /// sends for a create: put only if the key does not exist (`create_revision == 0`).
    pub async fn create_txns(
        &self,
        prefix: &str,
        value_len: usize,
        workers: usize,
        duration: Duration,
    ) -> Result<Throughput> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let (value, prefix) = (vec![b'v'; value_len], prefix.to_string());
        raw_phase(&self.client, workers, duration, move |kv, w, i| {
            let (mut kv, key) = (kv, format!("{prefix}{w}/{i}"));
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value.clone(), None)]);
            async move {
                match kv.txn(txn).await {
                    Ok(r) if r.succeeded() => Ok(()),
                    Ok(_) => Err(etcd_client::Error::Internal("key exists".into())),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// `workers` closed loops of linearizable gets of `{prefix}{worker}/{0..keys_per_worker}`.
    pub async fn gets(
        &self,
        prefix: &str,
        keys_per_worker: u64,
        workers: usize,
        duration: Duration,
    ) -> Result<Throughput> {
        let (prefix, n) = (prefix.to_string(), keys_per_worker.max(1));
        raw_phase(&self.client, workers, duration, move |kv, w, i| {
            let key = format!("{prefix}{w}/{}", mix(i as usize) % n);
            let mut kv = kv;
            async move { kv.get(key, None).await.map(drop) }
        })
        .await
    }

    /// Puts sent at a fixed `rate` for `duration`, each at its scheduled time whatever the
    /// previous ones are doing, with latency measured as for [`paced_mutations`]: the floor
    /// under any API server mutation at that rate, since each needs at least one etcd write
    /// (one raft commit, one WAL fsync).
    pub async fn paced_puts(
        &self,
        prefix: &str,
        value_len: usize,
        rate: f64,
        duration: Duration,
    ) -> Result<Paced> {
        let period = Duration::from_secs_f64(1.0 / rate);
        let n = ((duration.as_secs_f64() * rate) as usize).max(1);
        let value = Bytes::from(vec![b'v'; value_len]);
        let t0 = Instant::now() + Duration::from_millis(50);
        let due = alarms((0..n).map(|i| t0 + period * i as u32));
        let mut tasks = Vec::with_capacity(n);
        for (i, due) in due.into_iter().enumerate() {
            let (mut kv, value) = (self.client.kv_client(), value.clone());
            let key = format!("{prefix}{i}");
            tasks.push(tokio::spawn(async move {
                let scheduled = t0 + period * i as u32;
                let _ = due.await;
                let result = kv.put(key, value.to_vec(), None).await;
                result
                    .map(|_| scheduled.elapsed())
                    .map_err(|e| e.to_string())
            }));
        }
        let mut paced = Paced::default();
        for t in tasks {
            match t.await? {
                Ok(l) => paced.latencies.push(l),
                Err(e) => {
                    paced.errors += 1;
                    paced.first_error.get_or_insert(e);
                }
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        paced.achieved_rate = (paced.latencies.len() as u64 + paced.errors) as f64 / wall.max(1e-9);
        Ok(paced)
    }
}

/// `workers` closed loops of `op(kv, worker, i)` until `duration` has passed.
async fn raw_phase<F, Fut>(
    client: &etcd_client::Client,
    workers: usize,
    duration: Duration,
    op: F,
) -> Result<Throughput>
where
    F: Fn(etcd_client::KvClient, usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), etcd_client::Error>> + Send,
{
    let deadline = Instant::now() + duration;
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let (kv, op) = (client.kv_client(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Throughput::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let start = Instant::now();
                match op(kv.clone(), w, i).await {
                    Ok(()) => {
                        out.ok += 1;
                        out.latencies.push(start.elapsed());
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert(e.to_string());
                        if out.errors >= MAX_WORKER_ERRORS {
                            break;
                        }
                    }
                }
                i += 1;
            }
            out
        }));
    }
    let mut total = Throughput::default();
    for t in tasks {
        total.merge(t.await?);
    }
    total.elapsed = t0.elapsed();
    Ok(total)
}
