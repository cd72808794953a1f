//! The OS boundary: `iptables-restore`/`iptables-save`/`iptables -C/-I`, `nft -f -`, `conntrack -D` and
//! `ip route`, behind [`Dataplane`], with [`System`] running the real commands (optionally
//! inside a named network namespace, for simulated nodes and tests) and [`Recording`], a fake
//! that records every call for unit tests.
//!
//! Everything here is blocking (short-lived child processes); the sync loop calls it from a
//! blocking task.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::rules::JumpRule;

/// The `proto` number our host-gw routes carry, so only ours are ever changed or removed.
pub const ROUTE_PROTO: u8 = 17;

/// A command failed.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{cmd} exited with {status}: {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
}

/// One conntrack deletion (always UDP).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flow {
    /// Entries to `orig_dst` that were DNATed to `endpoint`.
    IpToEndpoint {
        orig_dst: Ipv4Addr,
        endpoint: Ipv4Addr,
    },
    /// Entries to node port `port` that were DNATed to `endpoint`.
    NodePortToEndpoint { port: u16, endpoint: Ipv4Addr },
    /// Every entry to `orig_dst` (a service that just got its first endpoint).
    AllToIp { orig_dst: Ipv4Addr },
    /// Every entry to node port `port`.
    AllToNodePort { port: u16 },
}

impl Flow {
    /// The `conntrack` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-D", "-p", "udp"].map(String::from).to_vec();
        match self {
            Flow::IpToEndpoint { orig_dst, endpoint } => a.extend([
                "--orig-dst".into(),
                orig_dst.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
            Flow::NodePortToEndpoint { port, endpoint } => a.extend([
                "--orig-port-dst".into(),
                port.to_string(),
                "--dst-nat".into(),
                endpoint.to_string(),
            ]),
            Flow::AllToIp { orig_dst } => a.extend(["--orig-dst".into(), orig_dst.to_string()]),
            Flow::AllToNodePort { port } => a.extend(["--orig-port-dst".into(), port.to_string()]),
        }
        a
    }
}

/// Route table of ours: destination CIDR (as text) → gateway.
pub type Routes = BTreeMap<String, Ipv4Addr>;

/// What the proxy does to the host.
pub trait Dataplane: Send + 'static {
    /// `iptables-restore --noflush --wait` with `text` on stdin.
    fn restore(&mut self, text: &str) -> Result<(), DataplaneError>;
    /// [`Dataplane::restore`] of each text, in any order, up to `workers` at a time: for
    /// restores that do not depend on each other. By default one after the other.
    fn restore_all(&mut self, texts: &[String], workers: usize) -> Result<(), DataplaneError> {
        let _ = workers;
        texts.iter().try_for_each(|t| self.restore(t))
    }
    /// `iptables-save` of tables filter and nat.
    fn save(&mut self) -> Result<String, DataplaneError>;
    /// The chains of tables filter and nat in `iptables-save`'s form (`*table`, then
    /// `:CHAIN …` lines; rule lines may follow). By default [`Dataplane::save`].
    fn chains(&mut self) -> Result<String, DataplaneError> {
        self.save()
    }
    /// `nft -f -` with `script` on stdin: one atomic nftables transaction.
    fn nft(&mut self, script: &str) -> Result<(), DataplaneError>;
    /// Insert `rule` at the top of its built-in chain unless it is there (`-C`, then `-I`).
    fn ensure_jump(&mut self, rule: &JumpRule) -> Result<(), DataplaneError>;
    /// Delete UDP conntrack entries; `Ok(false)` when the `conntrack` tool is not installed.
    fn conntrack_delete(&mut self, flow: &Flow) -> Result<bool, DataplaneError>;
    /// Our routes (`proto` [`ROUTE_PROTO`]).
    fn routes(&mut self) -> Result<Routes, DataplaneError>;
    /// `ip route replace <dst> via <gw> proto 17`.
    fn route_replace(&mut self, dst: &str, via: Ipv4Addr) -> Result<(), DataplaneError>;
    /// `ip route del <dst> proto 17`.
    fn route_delete(&mut self, dst: &str) -> Result<(), DataplaneError>;
}

/// The real commands.
#[derive(Clone, Debug, Default)]
pub struct System {
    netns: Option<String>,
    conntrack: Option<bool>,
    /// Whether `iptables` is the nf_tables backend (its chains can be listed with `nft`).
    nf_tables: Option<bool>,
}

fn find_in_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

impl System {
    /// Commands in this process's network namespace, or in `netns` (`/run/netns/<name>`,
    /// through `ip netns exec`) when given.
    pub fn new(netns: Option<String>) -> Self {
        Self {
            netns,
            conntrack: None,
            nf_tables: None,
        }
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    fn describe(&self, program: &str, args: &[String]) -> String {
        let mut s = String::new();
        if let Some(ns) = &self.netns {
            s.push_str(&format!("ip netns exec {ns} "));
        }
        s.push_str(program);
        for a in args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }

    fn run(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<std::process::Output, DataplaneError> {
        let cmd = || self.describe(program, args);
        let mut c = self.command(program);
        c.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .map_err(|source| DataplaneError::Spawn { cmd: cmd(), source })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A write error shows up as the command's failure below.
            let _ = pipe.write_all(text.as_bytes());
        }
        child
            .wait_with_output()
            .map_err(|source| DataplaneError::Spawn { cmd: cmd(), source })
    }

    fn check(
        &self,
        program: &str,
        args: &[String],
        stdin: Option<&str>,
    ) -> Result<String, DataplaneError> {
        let out = self.run(program, args, stdin)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(DataplaneError::Failed {
                cmd: self.describe(program, args),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    fn ip_args(&self, args: &[&str]) -> Vec<String> {
        let mut v = Vec::new();
        if let Some(ns) = &self.netns {
            v.extend(["-n".to_string(), ns.clone()]);
        }
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    fn ip(&self, args: &[&str]) -> Result<String, DataplaneError> {
        let args = self.ip_args(args);
        let out = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| DataplaneError::Spawn {
                cmd: format!("ip {}", args.join(" ")),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(DataplaneError::Failed {
                cmd: format!("ip {}", args.join(" ")),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }
}

/// Parse `ip -4 route show proto N` output.
pub fn parse_routes(text: &str) -> Routes {
    let mut out = Routes::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(dst) = words.first() else { continue };
        let via = words
            .windows(2)
            .find(|w| w[0] == "via")
            .and_then(|w| w[1].parse::<Ipv4Addr>().ok());
        if let Some(via) = via {
            out.insert(dst.to_string(), via);
        }
    }
    out
}

impl System {
    /// `iptables-restore --noflush --wait` of `text` (through `&self`, for parallel restores).
    fn restore_text(&self, text: &str) -> Result<(), DataplaneError> {
        self.check(
            "iptables-restore",
            &["--noflush".into(), "--wait".into()],
            Some(text),
        )
        .map(|_| ())
    }
}

impl Dataplane for System {
    fn restore(&mut self, text: &str) -> Result<(), DataplaneError> {
        self.restore_text(text)
    }

    /// Several `iptables-restore` processes at once. With the nf_tables backend each commits
    /// its own transaction (the kernel serializes commits, and iptables-nft replays a batch
    /// whose cache went stale), so the parsing and rule building of one overlaps the others'.
    fn restore_all(&mut self, texts: &[String], workers: usize) -> Result<(), DataplaneError> {
        // The largest first, so no long restore starts last and runs alone.
        let mut order: Vec<&String> = texts.iter().collect();
        order.sort_by_key(|t| std::cmp::Reverse(t.len()));
        let texts = order;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let this = &*self;
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers.clamp(1, texts.len().max(1)))
                .map(|_| {
                    scope.spawn(|| loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(text) = texts.get(i) else {
                            return Ok(());
                        };
                        if let Err(e) = this.restore_text(text) {
                            // Stop handing out parts; the sync fails and the next is full.
                            next.store(texts.len(), std::sync::atomic::Ordering::Relaxed);
                            return Err(e);
                        }
                    })
                })
                .collect();
            // The scope joins every worker; the first error is the answer.
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("restore worker panicked"))
        })
    }

    fn save(&mut self) -> Result<String, DataplaneError> {
        let mut out = String::new();
        for t in ["filter", "nat"] {
            out.push_str(&self.check("iptables-save", &["-t".into(), t.into()], None)?);
        }
        Ok(out)
    }

    /// With the nf_tables backend, `nft list chains ip` (names only: 0.16 s with 34,000 chains
    /// where `iptables-save`, which translates every rule back, takes 7 s); else `iptables-save`.
    fn chains(&mut self) -> Result<String, DataplaneError> {
        if self.nf_tables.is_none() {
            let version = self.check("iptables", &["--version".into()], None);
            self.nf_tables = Some(version.is_ok_and(|v| v.contains("nf_tables")));
        }
        if self.nf_tables == Some(true) {
            let list = ["list", "chains", "ip"].map(String::from);
            match self.check("nft", &list, None) {
                Ok(out) => return Ok(nft_chains_as_save(&out)),
                Err(e) => {
                    tracing::debug!(error = %e, "nft list chains failed; using iptables-save")
                }
            }
        }
        self.save()
    }

    fn nft(&mut self, script: &str) -> Result<(), DataplaneError> {
        self.check("nft", &["-f".into(), "-".into()], Some(script))
            .map(|_| ())
    }

    fn ensure_jump(&mut self, rule: &JumpRule) -> Result<(), DataplaneError> {
        let args = |op: &str| {
            let mut a: Vec<String> = ["-w", "-t", rule.table, op, rule.chain]
                .map(String::from)
                .to_vec();
            a.extend(rule.args.iter().cloned());
            a
        };
        // Listing the built-in chain alone is cheap; `-C` also loads the rules of the chain it
        // jumps to (KUBE-SERVICES, one per service destination: ~1 s at 10,000 services with
        // the nf_tables backend), so it only confirms what the listing does not show.
        let list = ["-w", "-t", rule.table, "-S", rule.chain].map(String::from);
        if let Ok(listed) = self.check("iptables", &list, None) {
            let want = rule.save_line();
            if listed.lines().any(|l| l.trim_end() == want) {
                return Ok(());
            }
            // Nothing in the chain jumps to ours (in whatever form): insert, no check needed.
            let target = rule.args.last().map(String::as_str);
            let jumps_there = listed.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words
                    .windows(2)
                    .any(|w| w[0] == "-j" && Some(w[1]) == target)
            });
            if !jumps_there {
                return self.check("iptables", &args("-I"), None).map(|_| ());
            }
        }
        let present = self.run("iptables", &args("-C"), None)?;
        if present.status.success() {
            return Ok(());
        }
        self.check("iptables", &args("-I"), None).map(|_| ())
    }

    fn conntrack_delete(&mut self, flow: &Flow) -> Result<bool, DataplaneError> {
        let have = *self
            .conntrack
            .get_or_insert_with(|| find_in_path("conntrack").is_some());
        if !have {
            return Ok(false);
        }
        let args = flow.args();
        let out = self.run("conntrack", &args, None)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit 1 with "0 flow entries have been deleted" just means there was nothing to do.
        if out.status.success() || stderr.contains("0 flow entries") {
            Ok(true)
        } else {
            Err(DataplaneError::Failed {
                cmd: self.describe("conntrack", &args),
                status: out.status.to_string(),
                stderr: stderr.trim().to_string(),
            })
        }
    }

    fn routes(&mut self) -> Result<Routes, DataplaneError> {
        let proto = ROUTE_PROTO.to_string();
        Ok(parse_routes(
            &self.ip(&["-4", "route", "show", "proto", &proto])?,
        ))
    }

    fn route_replace(&mut self, dst: &str, via: Ipv4Addr) -> Result<(), DataplaneError> {
        let (via, proto) = (via.to_string(), ROUTE_PROTO.to_string());
        self.ip(&["route", "replace", dst, "via", &via, "proto", &proto])
            .map(|_| ())
    }

    fn route_delete(&mut self, dst: &str) -> Result<(), DataplaneError> {
        let proto = ROUTE_PROTO.to_string();
        self.ip(&["route", "del", dst, "proto", &proto]).map(|_| ())
    }
}

/// Whether `/run/netns/<name>` (a named network namespace) exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// One recorded call of [`Recording`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    Restore(String),
    Nft(String),
    Save,
    EnsureJump(String),
    Conntrack(Flow),
    Routes,
    RouteReplace(String, Ipv4Addr),
    RouteDelete(String),
}

#[derive(Debug, Default)]
struct RecordingState {
    calls: Vec<Call>,
    fail_restores: usize,
    save_output: String,
    routes: Routes,
    conntrack_installed: bool,
}

/// The first line of [`nft_chains_as_save`]'s text (a comment, as `iptables-save` writes them).
const NFT_LISTING: &str = "# nft list chains ip\n";

/// `nft list chains ip` output as `iptables-save` would declare the chains of tables filter and
/// nat (`*filter`, `:CHAIN - [0:0]`, …); other tables (such as the nftables mode's) are named in
/// comments only (`# table ip kube-proxy`), which restore and the save parsers skip.
pub fn nft_chains_as_save(listing: &str) -> String {
    let mut out = String::from(NFT_LISTING);
    let mut keep = false;
    for line in listing.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ip ") {
            let table = rest.trim_end_matches('{').trim();
            keep = matches!(table, "filter" | "nat");
            if keep {
                out.push_str(&format!("*{table}\n"));
            } else {
                out.push_str(&format!("# table ip {table}\n"));
            }
        } else if let Some(rest) = line.strip_prefix("chain ") {
            let chain = rest.trim_end_matches('{').trim();
            if keep && !chain.is_empty() {
                out.push_str(&format!(":{chain} - [0:0]\n"));
            }
        }
    }
    out
}

/// Whether `chains` ([`Dataplane::chains`]' text) is nft's listing of every `ip` table and
/// `table` is not among them (with `iptables-save`'s text, nothing is known about nft tables).
pub fn nft_listing_lacks_table(chains: &str, table: &str) -> bool {
    chains.starts_with(NFT_LISTING)
        && !chains
            .lines()
            .any(|l| l.strip_prefix("# table ip ") == Some(table))
}

/// A fake [`Dataplane`] that records calls; restores can be made to fail, `iptables-save`
/// output and the route table are kept in memory. Clones share state.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    state: Arc<Mutex<RecordingState>>,
}

impl Recording {
    pub fn new() -> Self {
        let r = Self::default();
        r.lock().conntrack_installed = true;
        r
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecordingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far, and forget them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.lock().calls)
    }

    /// The next `n` restores (iptables-restore or nft) fail.
    pub fn fail_next_restores(&self, n: usize) {
        self.lock().fail_restores = n;
    }

    /// What `save` returns.
    pub fn set_save_output(&self, text: &str) {
        self.lock().save_output = text.to_string();
    }

    /// Pretend the `conntrack` tool is (not) installed.
    pub fn set_conntrack_installed(&self, yes: bool) {
        self.lock().conntrack_installed = yes;
    }

    /// Pre-existing routes of ours.
    pub fn set_routes(&self, routes: Routes) {
        self.lock().routes = routes;
    }

    pub fn current_routes(&self) -> Routes {
        self.lock().routes.clone()
    }
}

impl Dataplane for Recording {
    fn restore(&mut self, text: &str) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::Restore(text.to_string()));
        if s.fail_restores > 0 {
            s.fail_restores -= 1;
            return Err(DataplaneError::Failed {
                cmd: "iptables-restore --noflush --wait".into(),
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        Ok(())
    }

    /// In reverse order: parallel restores may finish in any order, so a test that replays
    /// the recorded texts sees a part run before the ones listed ahead of it.
    fn restore_all(&mut self, texts: &[String], workers: usize) -> Result<(), DataplaneError> {
        let _ = workers;
        texts.iter().rev().try_for_each(|t| self.restore(t))
    }

    fn nft(&mut self, script: &str) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::Nft(script.to_string()));
        if s.fail_restores > 0 {
            s.fail_restores -= 1;
            return Err(DataplaneError::Failed {
                cmd: "nft -f -".into(),
                status: "exit status: 1".into(),
                stderr: "injected failure".into(),
            });
        }
        Ok(())
    }

    fn save(&mut self) -> Result<String, DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::Save);
        Ok(s.save_output.clone())
    }

    fn ensure_jump(&mut self, rule: &JumpRule) -> Result<(), DataplaneError> {
        self.lock().calls.push(Call::EnsureJump(format!(
            "{} {} {}",
            rule.table,
            rule.chain,
            rule.args.join(" ")
        )));
        Ok(())
    }

    fn conntrack_delete(&mut self, flow: &Flow) -> Result<bool, DataplaneError> {
        let mut s = self.lock();
        if !s.conntrack_installed {
            return Ok(false);
        }
        s.calls.push(Call::Conntrack(flow.clone()));
        Ok(true)
    }

    fn routes(&mut self) -> Result<Routes, DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::Routes);
        Ok(s.routes.clone())
    }

    fn route_replace(&mut self, dst: &str, via: Ipv4Addr) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::RouteReplace(dst.to_string(), via));
        s.routes.insert(dst.to_string(), via);
        Ok(())
    }

    fn route_delete(&mut self, dst: &str) -> Result<(), DataplaneError> {
        let mut s = self.lock();
        s.calls.push(Call::RouteDelete(dst.to_string()));
        s.routes.remove(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_chain_listing_reads_as_save_declarations_of_filter_and_nat() {
        let listing = "table ip nat {\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t}\n\tchain KUBE-SVC-ABC {\n\t}\n}\ntable ip filter {\n\tchain KUBE-FORWARD {\n\t}\n}\ntable ip kube-proxy {\n\tchain services {\n\t}\n}\ntable ip mangle {\n\tchain KUBE-X {\n\t}\n}\n";
        assert_eq!(
            nft_chains_as_save(listing),
            "# nft list chains ip\n*nat\n:PREROUTING - [0:0]\n:KUBE-SVC-ABC - [0:0]\n*filter\n:KUBE-FORWARD - [0:0]\n# table ip kube-proxy\n# table ip mangle\n"
        );
        assert_eq!(
            crate::rules::owned_chains_in_save(&nft_chains_as_save(listing)),
            [("nat".to_string(), "KUBE-SVC-ABC".to_string())]
        );
        // The nftables mode's table is seen, or known to be absent; iptables-save says nothing.
        let as_save = nft_chains_as_save(listing);
        assert!(!nft_listing_lacks_table(&as_save, "kube-proxy"));
        assert!(nft_listing_lacks_table(&as_save, "kube-prox"));
        assert!(nft_listing_lacks_table(
            &nft_chains_as_save("table ip nat {\n}\n"),
            "kube-proxy"
        ));
        assert!(!nft_listing_lacks_table(
            "*nat\n:KUBE-SVC-ABC - [0:0]\nCOMMIT\n",
            "kube-proxy"
        ));
    }

    #[test]
    fn route_listing_is_parsed() {
        let text = "10.244.2.0/24 via 192.168.77.12 dev eth0 \n10.244.3.0/24 via 192.168.77.13 dev eth0 onlink\nblackhole 10.1.0.0/16\n";
        let r = parse_routes(text);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r["10.244.2.0/24"],
            "192.168.77.12".parse::<Ipv4Addr>().unwrap()
        );
    }

    #[test]
    fn conntrack_arguments() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let f = Flow::IpToEndpoint {
            orig_dst: ip("10.96.0.10"),
            endpoint: ip("10.244.1.5"),
        };
        assert_eq!(
            f.args().join(" "),
            "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.5"
        );
        let f = Flow::NodePortToEndpoint {
            port: 30053,
            endpoint: ip("10.244.1.5"),
        };
        assert_eq!(
            f.args().join(" "),
            "-D -p udp --orig-port-dst 30053 --dst-nat 10.244.1.5"
        );
        assert_eq!(
            Flow::AllToIp {
                orig_dst: ip("10.96.0.10")
            }
            .args()
            .join(" "),
            "-D -p udp --orig-dst 10.96.0.10"
        );
    }
}
