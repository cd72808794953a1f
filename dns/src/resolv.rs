//! The upstream resolvers: `--upstream` as a list of addresses, or a resolv.conf whose
//! nameservers are used (the node's, with `dnsPolicy: Default`).
//!
//! A loopback nameserver on port 53 is dropped when this server itself listens there (on the
//! wildcard address or that very address): forwarding to it would be a loop. When that leaves
//! nothing and the file was systemd-resolved's stub, resolved's real upstream list is used,
//! as the kubelet does.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// Where the upstream resolvers come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upstream {
    ResolvConf(PathBuf),
    Servers(Vec<SocketAddr>),
}

/// systemd-resolved's list of real upstreams, behind its 127.0.0.53 stub.
pub const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

impl std::str::FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.starts_with('/') {
            return Ok(Upstream::ResolvConf(PathBuf::from(s)));
        }
        let servers = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<SocketAddr>()
                    .or_else(|_| p.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("{p:?} is neither ip, ip:port nor [ipv6]:port"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if servers.is_empty() {
            return Err("no upstream given".into());
        }
        Ok(Upstream::Servers(servers))
    }
}

/// The nameserver addresses of a resolv.conf (IPv6 zone suffixes dropped).
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut f = line.split_whitespace();
            (f.next() == Some("nameserver")).then(|| f.next()).flatten()
        })
        .filter_map(|s| s.split('%').next().and_then(|s| s.parse().ok()))
        .collect()
}

/// Whether asking `server` would ask ourselves, listening on `listen`.
pub fn is_self(server: SocketAddr, listen: SocketAddr) -> bool {
    server.port() == listen.port()
        && server.ip().is_loopback()
        && (listen.ip().is_unspecified() || listen.ip() == server.ip())
}

/// The upstreams from `servers` (port 53), without the ones that are ourselves.
pub fn choose(servers: &[IpAddr], listen: SocketAddr) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    servers
        .iter()
        .map(|ip| SocketAddr::new(*ip, 53))
        .partition(|s| !is_self(*s, listen))
}

/// Resolve `upstream` to addresses (reads files).
pub fn load(upstream: &Upstream, listen: SocketAddr) -> std::io::Result<Vec<SocketAddr>> {
    let path = match upstream {
        Upstream::Servers(s) => return Ok(s.clone()),
        Upstream::ResolvConf(p) => p,
    };
    let (mut chosen, skipped) = choose(&nameservers(&std::fs::read_to_string(path)?), listen);
    for s in &skipped {
        tracing::warn!(path = %path.display(), server = %s, "skipping upstream that points at this server");
    }
    if chosen.is_empty() && !skipped.is_empty() && Path::new(RESOLVED_UPSTREAMS).exists() {
        let text = std::fs::read_to_string(RESOLVED_UPSTREAMS)?;
        chosen = choose(&nameservers(&text), listen).0;
        tracing::info!(
            path = RESOLVED_UPSTREAMS,
            "using systemd-resolved's upstreams"
        );
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_flag_forms() {
        assert_eq!(
            "/etc/resolv.conf".parse::<Upstream>(),
            Ok(Upstream::ResolvConf("/etc/resolv.conf".into()))
        );
        assert_eq!(
            "10.0.0.2, 127.0.0.1:5300,[fd00::1]:53,fd00::2".parse::<Upstream>(),
            Ok(Upstream::Servers(vec![
                "10.0.0.2:53".parse().unwrap(),
                "127.0.0.1:5300".parse().unwrap(),
                "[fd00::1]:53".parse().unwrap(),
                "[fd00::2]:53".parse().unwrap(),
            ]))
        );
        assert!("dns.example".parse::<Upstream>().is_err());
        assert!("".parse::<Upstream>().is_err());
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch example.com\nnameserver 10.255.255.53\nnameserver fe80::1%eth0 ; link-local\nnameserver bogus\noptions ndots:1\n nameserver 127.0.0.53\n";
        assert_eq!(
            nameservers(text),
            vec![
                "10.255.255.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap(),
                "127.0.0.53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn loopback_upstreams_that_are_ourselves_are_skipped() {
        let servers: Vec<IpAddr> = ["127.0.0.53", "10.0.0.2", "::1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        // In a pod (0.0.0.0:53): every loopback :53 is us.
        let (keep, skip) = choose(&servers, "0.0.0.0:53".parse().unwrap());
        assert_eq!(keep, vec!["10.0.0.2:53".parse().unwrap()]);
        assert_eq!(skip.len(), 2);
        // On another address or port, loopback resolvers are someone else.
        let (keep, _) = choose(&servers, "127.0.0.1:53".parse().unwrap());
        assert_eq!(keep.len(), 3);
        let (keep, _) = choose(&servers, "0.0.0.0:5353".parse().unwrap());
        assert_eq!(keep.len(), 3);
        let (keep, _) = choose(&servers, "127.0.0.53:53".parse().unwrap());
        assert_eq!(keep.len(), 2);
    }

    #[test]
    fn load_reads_the_file() {
        let dir = std::env::temp_dir().join(format!("kubrs-dns-resolv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("resolv.conf");
        std::fs::write(&p, "nameserver 192.0.2.1\nnameserver 127.0.0.1\n").unwrap();
        let got = load(
            &Upstream::ResolvConf(p.clone()),
            "0.0.0.0:53".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(got, vec!["192.0.2.1:53".parse().unwrap()]);
        assert!(load(
            &Upstream::ResolvConf(dir.join("missing")),
            "0.0.0.0:53".parse().unwrap()
        )
        .is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
