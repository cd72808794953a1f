//! Prints time and memory (RSS, peak RSS) for each lazily built piece of the `openapi` crate.
//!
//! `cargo bench -p openapi --bench memory` (or `cargo run --release`-like via `cargo bench`).
//! With `OPENAPI_DUMP=<dir>`, also writes the generated documents there for inspection with
//! real clients.

use openapi::OpenApi;
use std::time::Instant;

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn report(step: &str, started: Instant) {
    println!(
        "{step:<40} {:>8.1} ms   rss {:>7.1} MiB   peak {:>7.1} MiB",
        started.elapsed().as_secs_f64() * 1e3,
        status_kib("VmRSS:") as f64 / 1024.0,
        status_kib("VmHWM:") as f64 / 1024.0,
    );
}

fn main() {
    let dump = std::env::var_os("OPENAPI_DUMP").map(std::path::PathBuf::from);
    let write = |name: &str, bytes: &[u8]| {
        if let Some(dir) = &dump {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    report("start", Instant::now());
    let api = OpenApi::global();

    let t = Instant::now();
    let dep = api.kind_schema("apps", "v1", "Deployment").unwrap();
    report("compact schema (first kind_schema)", t);

    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(dep.field(&["spec", "template", "spec", "containers"]));
    }
    report("1000 field lookups", t);

    let t = Instant::now();
    let root = api.v3_root(&["api/v1", "apis/apps/v1", "apis/batch/v1"]);
    write("v3-root.json", root.to_string().as_bytes());
    report("v3 root", t);

    for gv in ["apis/apps/v1", "api/v1", "apis/batch/v1"] {
        let t = Instant::now();
        let doc = api.v3_group_version(gv).unwrap();
        let gz = api.v3_group_version_gzip(gv).unwrap();
        write(&format!("v3-{}.json", gv.replace('/', "_")), &doc);
        report(
            &format!(
                "v3 {gv} ({} KiB, {} KiB gz)",
                doc.len() / 1024,
                gz.len() / 1024
            ),
            t,
        );
    }
    let t = Instant::now();
    let doc = api.v3_group_version("apis/apps/v1").unwrap();
    report(
        &format!("v3 apis/apps/v1 cached ({} KiB)", doc.len() / 1024),
        t,
    );
    drop(doc);

    let t = Instant::now();
    let v2 = api.v2_json();
    write("v2.json", &v2);
    report(&format!("v2 json ({} KiB)", v2.len() / 1024), t);
    drop(v2);

    let t = Instant::now();
    let pb = api.v2_protobuf();
    write("v2.pb", &pb);
    report(&format!("v2 protobuf ({} KiB)", pb.len() / 1024), t);
    drop(pb);

    let served = ["api/v1", "apis/apps/v1"];
    let t = Instant::now();
    let pb = api.v2_protobuf_served(&served);
    report(&format!("v2 protobuf served ({} KiB)", pb.len() / 1024), t);
    drop(pb);

    let t = Instant::now();
    report("steady state (all documents dropped)", t);
}
