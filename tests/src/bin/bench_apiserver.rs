//! `bench-apiserver`: the API server benchmark. One command that prints figures next to their
//! targets; it asserts nothing about speed.
//!
//! For the embedded store and for etcd it starts the `apiserver` binary built next to this one
//! as a child process on loopback and measures, over TLS with the admin client certificate:
//! creates/s with 32 clients, GETs/s with 10 and with many objects stored, LIST latency of
//! 3,000 pods, watch delivery latency to 100 watchers, mutation latency at a paced 100 req/s,
//! and (etcd) raw etcd-client puts/s in the same run, on a second etcd started for them alone
//! (identical flags, same machine) so neither measurement inherits the other's etcd state,
//! plus raw puts paced like the mutations. For the embedded store it also measures start-up
//! time to `/readyz` empty and loaded, and the server's RSS idle and loaded.
//!
//! `cargo build --release -p apiserver && cargo run --release -p tests --bin bench-apiserver`

#[path = "../bench/mod.rs"]
mod bench;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::{Parser, ValueEnum};
use http::StatusCode;

use bench::client::{Conn, Endpoint, Req};
use bench::report::{count, judged, mib, ms, summarize, Summary, Table};
use bench::server::{self, ApiServer, CpuMeter, ServerSpec};
use bench::workloads::{self, Paced, Throughput, Until, WatchResult};

/// Measures the API server on the embedded store and on etcd, and prints the figures.
#[derive(Parser, Debug)]
#[command(name = "bench-apiserver")]
struct Args {
    /// A quick look: 10,000 objects and shorter phases.
    #[arg(long)]
    quick: bool,
    /// ConfigMaps stored for the many-objects figures (GETs, RSS, restart). Default 100,000
    /// (10,000 with --quick).
    #[arg(long)]
    objects: Option<usize>,
    /// ConfigMaps to store on etcd; default: --objects. Loading stops early after
    /// --etcd-load-secs, and the output says how many were stored.
    #[arg(long)]
    etcd_objects: Option<usize>,
    /// The longest time spent loading ConfigMaps through the API server into etcd, in seconds.
    #[arg(long, default_value_t = 150)]
    etcd_load_secs: u64,
    /// Concurrent clients for creates, GETs and raw etcd puts.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds for each timed throughput phase (GETs, raw etcd puts). Default 5 (2 with --quick).
    #[arg(long)]
    phase_secs: Option<f64>,
    /// Rounds of 1 s per side for the embedded store's GETs with 10 against many objects (see
    /// `interleaved_gets`). Default 12 (4 with --quick): single rounds scatter by ±0.2× here.
    #[arg(long)]
    get_rounds: Option<u32>,
    /// Pods stored for the LIST latency figure.
    #[arg(long, default_value_t = 3000)]
    list_pods: usize,
    /// Timed LISTs of those pods (the p99 of 50 would be their maximum).
    #[arg(long, default_value_t = 200)]
    lists: usize,
    /// Concurrent watch streams for the watch delivery figure.
    #[arg(long, default_value_t = 100)]
    watchers: usize,
    /// Which stores to benchmark.
    #[arg(long, value_enum, default_value_t = Stores::Both)]
    store: Stores,
    /// The apiserver binary; default: `apiserver` in this binary's directory.
    #[arg(long)]
    apiserver: Option<PathBuf>,
    /// Keep the temporary directory (data dirs and server logs) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// An extra argument for every apiserver started, e.g. `--apiserver-arg=--watch-cache=false`
    /// (repeatable).
    #[arg(long = "apiserver-arg", allow_hyphen_values = true)]
    apiserver_args: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Stores {
    Both,
    Embedded,
    Etcd,
}

/// What one run does, derived from the flags.
struct Plan {
    binary: PathBuf,
    objects: usize,
    etcd_objects: usize,
    etcd_load: Duration,
    clients: usize,
    phase: Duration,
    get_rounds: u32,
    list_pods: usize,
    lists: usize,
    watchers: usize,
    watch_events: usize,
    watch_interval: Duration,
    mutating_rate: f64,
    mutating_for: Duration,
    apiserver_args: Vec<String>,
}

impl Plan {
    fn new(a: &Args) -> Result<Self> {
        let objects = a.objects.unwrap_or(if a.quick { 10_000 } else { 100_000 });
        if objects < 10 || a.clients == 0 || a.watchers == 0 || a.lists == 0 {
            bail!("--objects must be at least 10, --clients, --watchers and --lists at least 1");
        }
        let binary = match &a.apiserver {
            Some(p) => p.clone(),
            None => server::default_binary()?,
        };
        Ok(Self {
            binary,
            objects,
            etcd_objects: a.etcd_objects.unwrap_or(objects),
            etcd_load: Duration::from_secs(a.etcd_load_secs),
            clients: a.clients,
            phase: Duration::from_secs_f64(a.phase_secs.unwrap_or(if a.quick { 2.0 } else { 5.0 })),
            get_rounds: a.get_rounds.unwrap_or(if a.quick { 4 } else { 12 }).max(1),
            list_pods: a.list_pods,
            lists: a.lists,
            watchers: a.watchers,
            watch_events: if a.quick { 100 } else { 200 },
            watch_interval: Duration::from_millis(20),
            mutating_rate: 100.0,
            mutating_for: Duration::from_secs(if a.quick { 5 } else { 10 }),
            apiserver_args: a.apiserver_args.clone(),
        })
    }
}

/// Everything measured on one store; a phase that failed leaves its fields empty.
#[derive(Default)]
struct Figures {
    ready_fresh: Option<Duration>,
    ready_empty: Option<Duration>,
    ready_loaded: Option<Duration>,
    rss_idle: Option<u64>,
    rss_loaded: Option<(u64, u64)>,
    rss_restarted: Option<u64>,
    creates: Option<Throughput>,
    /// ConfigMaps the load phase tried to store (all of them unless etcd loading was cut short).
    stored: usize,
    get_few: Option<Throughput>,
    get_many: Option<Throughput>,
    list: Option<(Summary, usize, usize)>,
    /// The same LIST as one linearizable etcd range, straight from etcd (etcd runs only).
    raw_list: Option<Summary>,
    watch: Option<WatchResult>,
    mutating: Option<Paced>,
    raw_puts: Option<(Throughput, usize)>,
    raw_gets: Option<Throughput>,
    raw_txns: Option<Throughput>,
    raw_paced: Option<Paced>,
    log: Option<(usize, Vec<String>)>,
    /// Problems that did not stop the run (printed as they happen and again at the end).
    notes: Vec<String>,
    failure: Option<String>,
}

impl Figures {
    fn note(&mut self, msg: String) {
        println!("  PROBLEM: {msg}");
        self.notes.push(msg);
    }
}

const NS_GET: &str = "bench-get";
const NS_LOAD: &str = "bench-load";
const NS_LIST: &str = "bench-list";
/// The API server's `--etcd-prefix` in the etcd run.
const ETCD_PREFIX: &str = "/kubrs-bench";
const NS_WATCH: &str = "bench-watch";
const NS_MUT: &str = "bench-mut";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args)?;
    if !plan.binary.is_file() {
        bail!(
            "apiserver binary not found at {}: build it first with `cargo build --release -p apiserver` \
             (same profile and target dir as this benchmark), or pass --apiserver PATH",
            plan.binary.display()
        );
    }
    let tmp = tempfile::Builder::new().prefix("kubrs-bench-").tempdir()?;
    // Dropping the run on Ctrl-C drops the children's handles, which kills them.
    let outcome = tokio::select! {
        r = run(&args, &plan, tmp.path()) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    if args.keep {
        println!("kept {}", tmp.keep().display());
    }
    outcome
}

async fn run(args: &Args, plan: &Plan, tmp: &Path) -> Result<()> {
    let started = Instant::now();
    println!(
        "bench-apiserver: {} CPUs, {} clients, {} objects (etcd: up to {} within {} s), apiserver {} {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        plan.clients,
        count(plan.objects as f64),
        count(plan.etcd_objects as f64),
        plan.etcd_load.as_secs(),
        plan.binary.display(),
        plan.apiserver_args.join(" ")
    );
    let mut embedded = None;
    if args.store != Stores::Etcd {
        println!("\n== embedded store ==");
        let mut f = Figures::default();
        if let Err(e) = bench_embedded(plan, tmp, &mut f).await {
            println!("  FAILED: {e:#}");
            f.failure = Some(format!("{e:#}"));
        }
        f.log = Some(server::log_findings(&tmp.join("embedded.log")));
        embedded = Some(f);
    }
    let mut etcd = None;
    if args.store != Stores::Embedded {
        println!("\n== etcd ==");
        let mut f = Figures::default();
        if let Err(e) = bench_etcd(plan, tmp, &mut f).await {
            println!("  FAILED: {e:#}");
            f.failure = Some(format!("{e:#}"));
        }
        f.log = Some(server::log_findings(&tmp.join("etcd.log")));
        etcd = Some(f);
    }
    print_summary(plan, embedded.as_ref(), etcd.as_ref());
    println!("\ntotal time {:.0} s", started.elapsed().as_secs_f64());
    let failed = [&embedded, &etcd]
        .iter()
        .any(|f| f.as_ref().is_some_and(|f| f.failure.is_some()));
    if failed {
        bail!("some phases failed (see above)");
    }
    Ok(())
}

async fn bench_embedded(plan: &Plan, tmp: &Path, f: &mut Figures) -> Result<()> {
    // Start-up on an empty store: a first start (which also creates the PKI), then a restart.
    let empty = ServerSpec {
        binary: plan.binary.clone(),
        data_dir: tmp.join("embedded-empty"),
        etcd: None,
        log: tmp.join("embedded.log"),
        extra_args: plan.apiserver_args.clone(),
    };
    let s = ApiServer::start(&empty).await?;
    f.ready_fresh = Some(s.ready_after);
    s.stop().await?;
    match ApiServer::start(&empty).await {
        Ok(s) => {
            f.ready_empty = Some(s.ready_after);
            s.stop().await?;
        }
        Err(e) => f.note(format!("restart on an empty store failed: {e:#}")),
    }
    println!(
        "  /readyz, empty store: first start (creates the PKI) {}, restart {}",
        f.ready_fresh.map_or("-".into(), ms),
        f.ready_empty.map_or("FAILED".into(), ms)
    );

    let spec = ServerSpec {
        data_dir: tmp.join("embedded"),
        ..empty
    };
    let s = ApiServer::start(&spec).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, _) = s.memory()?;
    f.rss_idle = Some(rss);
    println!("  RSS idle after start: {}", mib(rss));
    // The twin holding only the 10 objects, for GETs measured alternately with the loaded
    // server's (see `interleaved_gets`).
    let twin = ApiServer::start(&ServerSpec {
        data_dir: tmp.join("embedded-10"),
        log: tmp.join("embedded-10.log"),
        ..spec.clone()
    })
    .await?;
    let pids = [("apiserver", s.pid()), ("bench", std::process::id())];
    load_phases(plan, &s, &pids, f, None, None, Some(&twin)).await?;
    twin.stop().await?;
    s.stop().await?;

    match ApiServer::start(&spec).await {
        Ok(s) => {
            f.ready_loaded = Some(s.ready_after);
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (rss, _) = s.memory()?;
            f.rss_restarted = Some(rss);
            println!(
                "  /readyz after restart with {} ConfigMaps (+{} pods) stored: {}; RSS 1 s later: {}",
                count(f.stored as f64),
                count(plan.list_pods as f64),
                ms(s.ready_after),
                mib(rss)
            );
            s.stop().await?;
        }
        Err(e) => f.note(format!(
            "restart with {} objects stored failed: {e:#}",
            count(f.stored as f64)
        )),
    }
    Ok(())
}

async fn bench_etcd(plan: &Plan, tmp: &Path, f: &mut Figures) -> Result<()> {
    let etcd = storage::testing::EtcdProcess::start().await?;
    let spec = ServerSpec {
        binary: plan.binary.clone(),
        data_dir: tmp.join("etcd-apiserver"),
        etcd: Some((etcd.endpoint.clone(), ETCD_PREFIX.into())),
        log: tmp.join("etcd.log"),
        extra_args: plan.apiserver_args.clone(),
    };
    let s = ApiServer::start(&spec).await?;
    f.ready_empty = Some(s.ready_after);
    println!(
        "  etcd at {}; /readyz after first start: {}",
        etcd.endpoint,
        ms(s.ready_after)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, _) = s.memory()?;
    f.rss_idle = Some(rss);

    // Raw puts use values the size of a stored ConfigMap, measured on a real one.
    let mut conn = s.endpoint.connect().await?;
    workloads::ensure_namespace(&mut conn, NS_GET).await?;
    let probe = conn
        .expect(
            &Req::post_json(
                format!("/api/v1/namespaces/{NS_GET}/configmaps"),
                workloads::configmap("probe"),
            ),
            &[StatusCode::CREATED],
        )
        .await?;
    let value_len = probe.body.len();
    let etcd_pid = server::child_pid("etcd");
    let mut pids = vec![("apiserver", s.pid())];
    pids.extend(etcd_pid.map(|pid| ("etcd", pid)));
    pids.push(("bench", std::process::id()));

    // Raw etcd-client figures come from a second, identical etcd of their own, thrown away
    // afterwards, so that nothing the raw phase leaves behind (its keys, the state of etcd's
    // write buffers) weighs on the API server's etcd, and the API server's etcd on them.
    let raw_etcd = storage::testing::EtcdProcess::start().await?;
    let mut raw_pids = vec![("bench", std::process::id())];
    raw_pids.extend(
        server::child_pids("etcd")
            .into_iter()
            .filter(|&pid| Some(pid) != etcd_pid)
            .map(|pid| ("etcd", pid)),
    );
    let raw_client = workloads::RawEtcd::connect(&raw_etcd.endpoint).await?;
    let cpu = CpuMeter::start(&raw_pids);
    let raw = raw_client
        .puts("/rawbench/", value_len, plan.clients, plan.phase)
        .await?;
    println!(
        "  raw etcd puts ({value_len} B values, {} clients): {}; {}; {}",
        plan.clients,
        describe_rate(&raw),
        cpu.report(),
        cpu.per_request(raw.ok)
    );
    let cpu = CpuMeter::start(&raw_pids);
    // Every worker wrote at least keys 0..per_worker.
    let per_worker = raw.ok / plan.clients as u64;
    let raw_gets = raw_client
        .gets("/rawbench/", per_worker, plan.clients, plan.phase)
        .await?;
    println!(
        "  raw etcd gets (linearizable, same keys): {}; {}; {}",
        describe_rate(&raw_gets),
        cpu.report(),
        cpu.per_request(raw_gets.ok)
    );
    let cpu = CpuMeter::start(&raw_pids);
    let raw_txns = raw_client
        .create_txns("/rawtxn/", value_len, plan.clients, plan.phase)
        .await?;
    println!(
        "  raw etcd create transactions (put if absent, as the API server's creates): {}; {}; {}",
        describe_rate(&raw_txns),
        cpu.report(),
        cpu.per_request(raw_txns.ok)
    );
    let cpu = CpuMeter::start(&raw_pids);
    let raw_paced = raw_client
        .paced_puts(
            "/rawpaced/",
            value_len,
            plan.mutating_rate,
            plan.mutating_for,
        )
        .await?;
    println!(
        "  raw etcd puts paced at {:.0}/s for {} s: {}; {} errors; {}",
        raw_paced.achieved_rate,
        plan.mutating_for.as_secs(),
        summarize(&raw_paced.latencies).map_or("-".into(), |s| s.to_string()),
        raw_paced.errors,
        cpu.report()
    );
    drop(raw_etcd);
    f.raw_paced = Some(raw_paced);
    f.raw_puts = Some((raw, value_len));
    f.raw_gets = Some(raw_gets);
    f.raw_txns = Some(raw_txns);

    let api_etcd = workloads::RawEtcd::connect(&etcd.endpoint).await?;
    load_phases(
        plan,
        &s,
        &pids,
        f,
        Some(Instant::now() + plan.etcd_load),
        Some(&api_etcd),
        None,
    )
    .await?;
    s.stop().await?;
    drop(etcd);
    Ok(())
}

/// The phases both stores share, in order: GETs with few objects, the bulk load (creates/s),
/// RSS, GETs with many objects, LIST, watch fan-out, paced mutations.
async fn load_phases(
    plan: &Plan,
    s: &ApiServer,
    pids: &[(&'static str, u32)],
    f: &mut Figures,
    load_deadline: Option<Instant>,
    etcd: Option<&workloads::RawEtcd>,
    twin: Option<&ApiServer>,
) -> Result<()> {
    let ep = &s.endpoint;
    let mut conn = ep.connect().await?;
    for ns in [NS_GET, NS_LOAD, NS_LIST, NS_WATCH, NS_MUT] {
        workloads::ensure_namespace(&mut conn, ns).await?;
    }
    // The 10 objects go to the twin when there is one (their GETs then alternate with the
    // loaded server's, below), else here, measured before the load.
    if let Some(twin) = twin {
        let mut conn = twin.endpoint.connect().await?;
        workloads::ensure_namespace(&mut conn, NS_GET).await?;
        create_get_objects(&mut conn).await?;
    } else {
        create_get_objects(&mut conn).await?;
        f.get_few = Some(timed_gets(plan, ep, pids, NS_GET, "g-", 10).await?);
    }

    let target = if load_deadline.is_some() {
        plan.etcd_objects
    } else {
        plan.objects
    };
    let cpu = CpuMeter::start(pids);
    let creates = workloads::drive(
        ep,
        plan.clients,
        Until {
            count: Some(target),
            deadline: load_deadline,
        },
        StatusCode::CREATED,
        Some("creates"),
        |i| {
            Req::post_json(
                format!("/api/v1/namespaces/{NS_LOAD}/configmaps"),
                workloads::configmap(&format!("cm-{i}")),
            )
        },
    )
    .await?;
    f.stored = (creates.ok + creates.errors) as usize;
    println!(
        "  creates ({} ConfigMaps{}): {}; encoded {} ({} B each); {}; {}",
        count(f.stored as f64),
        if f.stored < target {
            ", cut short by --etcd-load-secs"
        } else {
            ""
        },
        describe_rate(&creates),
        mib(creates.body_bytes),
        creates.body_bytes / creates.ok.max(1),
        cpu.report(),
        cpu.per_request(creates.ok)
    );
    f.creates = Some(creates);

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, hwm) = s.memory()?;
    f.rss_loaded = Some((rss, hwm));
    println!(
        "  RSS with {} ConfigMaps: {} (peak {})",
        count(f.stored as f64),
        mib(rss),
        mib(hwm)
    );

    if let Some(twin) = twin {
        let (few, many) = interleaved_gets(plan, s, twin, f.stored).await?;
        f.get_few = Some(few);
        f.get_many = Some(many);
    } else {
        f.get_many = Some(timed_gets(plan, ep, pids, NS_LOAD, "cm-", f.stored).await?);
    }

    let cpu = CpuMeter::start(pids);
    let pods = workloads::drive(
        ep,
        plan.clients,
        Until {
            count: Some(plan.list_pods),
            deadline: None,
        },
        StatusCode::CREATED,
        None,
        |i| {
            Req::post_json(
                format!("/api/v1/namespaces/{NS_LIST}/pods"),
                workloads::pod(&format!("p-{i}")),
            )
        },
    )
    .await?;
    println!(
        "  pod creates ({}): {}; {}; {}",
        count(plan.list_pods as f64),
        describe_rate(&pods),
        cpu.report(),
        cpu.per_request(pods.ok)
    );
    let cpu = CpuMeter::start(pids);
    let lists = workloads::list_latency(
        ep,
        &format!("/api/v1/namespaces/{NS_LIST}/pods"),
        plan.lists,
    )
    .await?;
    let (bytes, items) = (lists.bytes, lists.items);
    let list = summarize(&lists.latencies).ok_or_else(|| anyhow!("no LIST samples"))?;
    let head = summarize(&lists.heads).ok_or_else(|| anyhow!("no LIST samples"))?;
    println!(
        "  LIST {} pods ({} each): {list}; response head after p50 {} / p99 {}; {}; {}",
        count(items as f64),
        mib(bytes as u64),
        ms(head.p50),
        ms(head.p99),
        cpu.report(),
        cpu.per_request(plan.lists as u64 + 1)
    );
    if items != plan.list_pods {
        f.note(format!(
            "LIST returned {items} pods, {} were created",
            plan.list_pods
        ));
    }
    f.list = Some((list, items, bytes));
    if let Some(etcd) = etcd {
        // The physical limit without a cache: etcd reading the same pods, no API server.
        let cpu = CpuMeter::start(pids);
        let (latencies, keys) = etcd
            .range_latency(
                &format!("{ETCD_PREFIX}/registry/pods/{NS_LIST}/"),
                plan.lists,
            )
            .await?;
        let raw = summarize(&latencies).ok_or_else(|| anyhow!("no etcd range samples"))?;
        println!(
            "  raw etcd range of the same {} pods (linearizable, no API server): {raw}; {}; {}",
            count(keys as f64),
            cpu.report(),
            cpu.per_request(plan.lists as u64 + 1)
        );
        f.raw_list = Some(raw);
    }

    let cpu = CpuMeter::start(pids);
    let watch = workloads::watch_fanout(
        ep,
        NS_WATCH,
        plan.watchers,
        plan.watch_events,
        plan.watch_interval,
    )
    .await?;
    println!(
        "  watch, {} watchers, {} creates at {:.0}/s: {} delivered of {}; {}; {}",
        plan.watchers,
        plan.watch_events,
        watch.rate,
        count(watch.latencies.len() as f64),
        count(watch.expected as f64),
        summarize(&watch.latencies).map_or("-".into(), |s| s.to_string()),
        cpu.report()
    );
    if watch.ready_watchers < plan.watchers {
        f.note(format!(
            "only {} of {} watch responses started (headers) within 10 s, before the first create",
            watch.ready_watchers, plan.watchers
        ));
    }
    for e in watch.errors.iter().take(3) {
        f.note(format!("watch: {e}"));
    }
    f.watch = Some(watch);

    if let Some(etcd) = etcd {
        // The yardstick on the etcd the API server uses, holding everything stored so far.
        let cpu = CpuMeter::start(pids);
        let raw = etcd
            .paced_puts("/rawpaced/", 533, plan.mutating_rate, plan.mutating_for)
            .await?;
        println!(
            "  raw etcd puts paced at {:.0}/s for {} s on the API server's etcd: {}; {} errors; {}",
            raw.achieved_rate,
            plan.mutating_for.as_secs(),
            summarize(&raw.latencies).map_or("-".into(), |s| s.to_string()),
            raw.errors,
            cpu.report()
        );
    }

    let cpu = CpuMeter::start(pids);
    let paced =
        workloads::paced_mutations(ep, NS_MUT, plan.mutating_rate, plan.mutating_for).await?;
    println!(
        "  mutations (create/patch/delete) paced at {:.0}/s for {} s: {}; {} errors{}; {}",
        paced.achieved_rate,
        plan.mutating_for.as_secs(),
        summarize(&paced.latencies).map_or("-".into(), |s| s.to_string()),
        paced.errors,
        paced
            .first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        cpu.report()
    );
    let p99 = |l: &[Duration]| summarize(l).map_or("-".into(), |s| ms(s.p99));
    println!(
        "    p99 by step: create {}, merge patch {}, delete {}",
        p99(&paced.by_step[0]),
        p99(&paced.by_step[1]),
        p99(&paced.by_step[2])
    );
    f.mutating = Some(paced);
    Ok(())
}

/// The 10 ConfigMaps `g-0..g-9` in [`NS_GET`] that the few-objects GETs read.
async fn create_get_objects(conn: &mut Conn) -> Result<()> {
    for i in 0..10 {
        let req = Req::post_json(
            format!("/api/v1/namespaces/{NS_GET}/configmaps"),
            workloads::configmap(&format!("g-{i}")),
        );
        conn.expect(&req, &[StatusCode::CREATED]).await?;
    }
    Ok(())
}

/// GETs with 10 objects stored and with `stored` objects stored, compared on the same machine:
/// short rounds alternate between `twin` (a server of its own holding only the 10 objects) and
/// the loaded server `s` (random objects of all it stores), in the order ABBA… so that a drift
/// of the machine's speed falls on both alike. (This VM's speed moves by tens of percent within
/// seconds, so two phases run a minute apart cannot show a 5% difference.) Each side gets
/// `plan.get_rounds` rounds of 1 s.
async fn interleaved_gets(
    plan: &Plan,
    s: &ApiServer,
    twin: &ApiServer,
    stored: usize,
) -> Result<(Throughput, Throughput)> {
    let rounds = plan.get_rounds;
    let round = Duration::from_secs(1);
    let mut few = Throughput::default();
    let mut many = Throughput::default();
    let pids = [
        ("apiserver (10)", twin.pid()),
        ("apiserver", s.pid()),
        ("bench", std::process::id()),
    ];
    let cpu = CpuMeter::start(&pids);
    // Each round's ratio (many ÷ few), to show how much the rounds themselves scatter.
    let mut ratios = Vec::with_capacity(rounds as usize);
    for r in 0..rounds {
        let (mut few_rate, mut many_rate) = (0.0, 0.0);
        for twin_turn in [r % 2 == 0, r % 2 == 1] {
            if twin_turn {
                let t = get_phase(plan, &twin.endpoint, NS_GET, "g-", 10, round).await?;
                few_rate = t.per_sec();
                few.elapsed += t.elapsed;
                few.merge(t);
            } else {
                let t = get_phase(plan, &s.endpoint, NS_LOAD, "cm-", stored, round).await?;
                many_rate = t.per_sec();
                many.elapsed += t.elapsed;
                many.merge(t);
            }
        }
        ratios.push(many_rate / few_rate.max(1e-9));
    }
    ratios.sort_by(f64::total_cmp);
    let used = cpu.used_secs();
    let per_request = |name: &str, n: u64| {
        used.iter()
            .find(|(p, _)| *p == name)
            .map_or("-".into(), |(_, secs)| {
                format!("{:.3} ms", secs * 1000.0 / n.max(1) as f64)
            })
    };
    println!(
        "  GETs, alternating {rounds} rounds of {:.1} s between a server with 10 objects and this one; {}",
        round.as_secs_f64(),
        cpu.report()
    );
    println!(
        "    10 objects: {}; apiserver cpu per request {}",
        describe_rate(&few),
        per_request("apiserver (10)", few.ok)
    );
    println!(
        "    {} objects: {}; apiserver cpu per request {}",
        count(stored as f64),
        describe_rate(&many),
        per_request("apiserver", many.ok)
    );
    println!(
        "    ratio per round: median {:.2}× (lowest {:.2}×, highest {:.2}×); the summary uses the totals",
        (ratios[(ratios.len() - 1) / 2] + ratios[ratios.len() / 2]) / 2.0,
        ratios[0],
        ratios[ratios.len() - 1]
    );
    Ok((few, many))
}

/// [`get_phase`] for `plan.phase`, printed with the CPU the processes in `pids` used.
async fn timed_gets(
    plan: &Plan,
    ep: &Endpoint,
    pids: &[(&'static str, u32)],
    ns: &'static str,
    prefix: &'static str,
    n: usize,
) -> Result<Throughput> {
    let cpu = CpuMeter::start(pids);
    let gets = get_phase(plan, ep, ns, prefix, n, plan.phase).await?;
    println!(
        "  GETs, {} objects: {}; {}; {}",
        count(n as f64),
        describe_rate(&gets),
        cpu.report(),
        cpu.per_request(gets.ok)
    );
    Ok(gets)
}

/// GETs of random objects `{prefix}0..{prefix}{n-1}` in `ns` for `length`.
async fn get_phase(
    plan: &Plan,
    ep: &Endpoint,
    ns: &'static str,
    prefix: &'static str,
    n: usize,
    length: Duration,
) -> Result<Throughput> {
    workloads::drive(
        ep,
        plan.clients,
        Until {
            count: None,
            deadline: Some(Instant::now() + length),
        },
        StatusCode::OK,
        None,
        move |i| {
            Req::get(format!(
                "/api/v1/namespaces/{ns}/configmaps/{prefix}{}",
                workloads::mix(i) % n as u64
            ))
        },
    )
    .await
}

fn describe_rate(t: &Throughput) -> String {
    let mut s = format!(
        "{} in {:.1} s = {}/s, {}",
        count(t.ok as f64),
        t.elapsed.as_secs_f64(),
        count(t.per_sec()),
        summarize(&t.latencies).map_or("-".into(), |s| s.to_string())
    );
    if t.errors > 0 {
        s.push_str(&format!(
            "; {} ERRORS, first: {}",
            t.errors,
            t.first_error.as_deref().unwrap_or("")
        ));
    }
    s
}

fn print_summary(plan: &Plan, emb: Option<&Figures>, etcd: Option<&Figures>) {
    const NA: &str = "-";
    // A missing figure of a store that had problems is marked, not just left blank.
    let cell = |f: Option<&Figures>, pick: &dyn Fn(&Figures) -> Option<String>| match f {
        Some(f) => pick(f).unwrap_or_else(|| {
            if f.failure.is_some() || !f.notes.is_empty() {
                "FAILED (below)".into()
            } else {
                NA.into()
            }
        }),
        None => NA.into(),
    };
    let many = count(plan.objects as f64);
    let mut t = Table::default();
    t.row(["figure", "embedded", "etcd", "target"]);

    let raw_rate = etcd
        .and_then(|f| f.raw_puts.as_ref())
        .map(|(r, _)| r.per_sec());
    t.row([
        format!("creates/s ({} clients, TLS, durable)", plan.clients),
        cell(emb, &|f| {
            f.creates
                .as_ref()
                .map(|c| judged(count(c.per_sec()), c.per_sec() >= 3000.0))
        }),
        cell(etcd, &|f| f.creates.as_ref().map(|c| count(c.per_sec()))),
        "embedded ≥ 3,000".into(),
    ]);
    t.row([
        "raw etcd puts/s (same clients, value size)".to_string(),
        NA.into(),
        cell(etcd, &|f| {
            f.raw_puts
                .as_ref()
                .map(|(r, len)| format!("{} ({len} B)", count(r.per_sec())))
        }),
        String::new(),
    ]);
    t.row([
        "etcd creates/s ÷ raw etcd puts/s".to_string(),
        NA.into(),
        cell(etcd, &|f| {
            let ratio = f.creates.as_ref()?.per_sec() / raw_rate?;
            Some(judged(format!("{:.0}%", ratio * 100.0), ratio >= 0.4))
        }),
        "≥ 40%".into(),
    ]);
    t.row([
        "raw etcd create txns/s (same clients)".to_string(),
        NA.into(),
        cell(etcd, &|f| f.raw_txns.as_ref().map(|r| count(r.per_sec()))),
        String::new(),
    ]);
    t.row([
        "raw etcd linearizable gets/s (same clients)".to_string(),
        NA.into(),
        cell(etcd, &|f| f.raw_gets.as_ref().map(|g| count(g.per_sec()))),
        String::new(),
    ]);
    t.row([
        "GETs/s, 10 objects".to_string(),
        cell(emb, &|f| {
            f.get_few
                .as_ref()
                .map(|g| judged(count(g.per_sec()), g.per_sec() >= 20_000.0))
        }),
        cell(etcd, &|f| f.get_few.as_ref().map(|g| count(g.per_sec()))),
        "≥ 20,000".into(),
    ]);
    let get_many = |f: &Figures, judge: bool| {
        let (few, lots) = (f.get_few.as_ref()?, f.get_many.as_ref()?);
        let ratio = lots.per_sec() / few.per_sec().max(1e-9);
        let mut s = format!("{} ({ratio:.2}× of 10)", count(lots.per_sec()));
        if f.stored != plan.objects {
            s.push_str(&format!(" @ {} objects", count(f.stored as f64)));
        }
        Some(if judge {
            judged(s, lots.per_sec() >= 20_000.0 && ratio >= 0.95)
        } else {
            s
        })
    };
    t.row([
        format!("GETs/s, {many} objects"),
        cell(emb, &|f| get_many(f, true)),
        cell(etcd, &|f| get_many(f, false)),
        "≥ 20,000 and no slower (≥ 0.95×)".into(),
    ]);
    let list = |f: &Figures| {
        f.list.as_ref().map(|(s, items, _)| {
            let mut c = judged(
                format!("{} / {}", ms(s.p50), ms(s.p99)),
                s.p99 <= Duration::from_millis(20),
            );
            if *items != plan.list_pods {
                c.push_str(&format!(" ({items} items!)"));
            }
            c
        })
    };
    t.row([
        format!("LIST {} pods p50 / p99", count(plan.list_pods as f64)),
        cell(emb, &list),
        cell(etcd, &list),
        "p99 ≤ 20 ms".into(),
    ]);
    let raw_list = |f: &Figures| {
        let s = f.raw_list.as_ref()?;
        Some(format!("{} / {}", ms(s.p50), ms(s.p99)))
    };
    t.row([
        "raw etcd range of the same pods p50 / p99".to_string(),
        "-".into(),
        cell(etcd, &raw_list),
        String::new(),
    ]);
    let watch = |f: &Figures| {
        let w = f.watch.as_ref()?;
        let s = summarize(&w.latencies)?;
        let mut c = format!("{} / {}", ms(s.p50), ms(s.p99));
        if w.latencies.len() < w.expected {
            c.push_str(&format!(" ({} missed!)", w.expected - w.latencies.len()));
        }
        Some(c)
    };
    t.row([
        format!("watch delivery, {} watchers p50 / p99", plan.watchers),
        cell(emb, &watch),
        cell(etcd, &watch),
        String::new(),
    ]);
    let mutating = |f: &Figures| {
        let p = f.mutating.as_ref()?;
        let s = summarize(&p.latencies)?;
        let mut c = judged(ms(s.p99), s.p99 <= Duration::from_millis(10));
        if p.errors > 0 {
            c.push_str(&format!(" ({} errors!)", p.errors));
        }
        Some(c)
    };
    t.row([
        format!("mutating p99 at {:.0} req/s", plan.mutating_rate),
        cell(emb, &mutating),
        cell(etcd, &mutating),
        "≤ 10 ms".into(),
    ]);
    t.row([
        format!("raw etcd put p99 at {:.0} req/s", plan.mutating_rate),
        NA.into(),
        cell(etcd, &|f| {
            let s = summarize(&f.raw_paced.as_ref()?.latencies)?;
            Some(ms(s.p99))
        }),
        String::new(),
    ]);
    t.row([
        "/readyz after restart, empty store".to_string(),
        cell(emb, &|f| {
            let fresh = f
                .ready_fresh
                .map_or(String::new(), |d| format!(" (1st start {})", ms(d)));
            f.ready_empty
                .map(|d| judged(ms(d), d <= Duration::from_millis(100)) + &fresh)
        }),
        cell(etcd, &|f| f.ready_empty.map(ms)),
        "≤ 100 ms".into(),
    ]);
    t.row([
        format!("/readyz after restart, {many} objects"),
        cell(emb, &|f| {
            f.ready_loaded
                .map(|d| judged(ms(d), d <= Duration::from_secs(1)))
        }),
        NA.into(),
        "≤ 1 s".into(),
    ]);
    t.row([
        "RSS idle after start".to_string(),
        cell(emb, &|f| f.rss_idle.map(|r| judged(mib(r), r <= 20 << 20))),
        cell(etcd, &|f| f.rss_idle.map(mib)),
        "≤ 20 MiB".into(),
    ]);
    let encoded = emb.and_then(|f| f.creates.as_ref()).map(|c| c.body_bytes);
    t.row([
        format!("RSS with {many} ConfigMaps"),
        cell(emb, &|f| {
            let (rss, _) = f.rss_loaded?;
            let enc = f.creates.as_ref()?.body_bytes;
            Some(judged(mib(rss), rss <= 2 * enc + (20 << 20)))
        }),
        cell(etcd, &|f| f.rss_loaded.map(|(r, _)| mib(r))),
        match encoded {
            Some(e) => format!(
                "≤ 2× encoded ({}) + 20 MiB = {}",
                mib(e),
                mib(2 * e + (20 << 20))
            ),
            None => "≤ 2× encoded + 20 MiB".into(),
        },
    ]);
    println!("\n== summary ==\n{}", t.render());
    println!(
        "creates/s: the {} ConfigMaps loaded through the API ({} clients, one keep-alive TLS connection each); \
         encoded = sum of the created objects' JSON as returned.",
        many, plan.clients
    );
    if let Some(f) = etcd {
        if f.raw_puts.is_some() {
            println!(
                "raw etcd: etcd-client puts, linearizable gets, then create transactions (put if absent), {} clients on one connection, on an etcd of their own (same flags) discarded before the API server phases.",
                plan.clients
            );
        }
        if f.stored > 0 && f.stored < plan.etcd_objects {
            println!(
                "etcd: only {} of {} ConfigMaps were loaded within --etcd-load-secs {}; its many-object figures are for that count.",
                count(f.stored as f64),
                count(plan.etcd_objects as f64),
                plan.etcd_load.as_secs()
            );
        }
    }
    println!(
        "watch: latency from just before each create is sent to each watcher's receipt of its ADDED event. \
         mutating: latency from each request's scheduled send time."
    );
    for (name, f) in [("embedded", emb), ("etcd", etcd)] {
        let Some(f) = f else { continue };
        if let Some(e) = &f.failure {
            println!("\n{name}: FAILED: {e}");
        }
        for n in &f.notes {
            println!("\n{name}: PROBLEM: {n}");
        }
        if let Some((n, examples)) = &f.log {
            if *n > 0 {
                println!("\n{name} apiserver log: {n} warning/error lines, e.g.:");
                for e in examples {
                    println!("  {e}");
                }
            }
        }
    }
}
