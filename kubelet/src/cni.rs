//! The node's CNI network configuration, written from its podCIDR so the container runtime wires
//! pods without hand-made files.
//!
//! [`write_config`] renders one conflist — `bridge` (with `host-local` IPAM over the podCIDR)
//! followed by `portmap` — and replaces `10-kubrs.conflist` atomically (temporary file + rename)
//! only when its content changes, so containerd's directory watch sees one complete file and an
//! unchanged CIDR never touches the disk.
//!
//! There is deliberately no `loopback` plugin in the chain: containerd 1.6 brings `lo` up in
//! every pod itself (`cni.WithLoNetwork`), and a `loopback` entry in a chain would act on
//! `CNI_IFNAME=eth0` (see shared/reference/cri-containerd.md). `promiscMode` is left out too:
//! the bridge plugin refuses it together with `hairpinMode`, which hairpin Service traffic needs.

use std::io;
use std::net::IpAddr;
use std::path::Path;

use serde_json::json;

/// File name of the conflist in the CNI configuration directory. The `10-` prefix sorts it
/// before distribution defaults (`87-podman`, `99-loopback`) for runtimes reading only the
/// first file.
pub const CONFLIST_FILE: &str = "10-kubrs.conflist";
/// CNI network name (also the host-local sub-directory of the IPAM data dir).
pub const NETWORK_NAME: &str = "kubrs";
/// Bridge device created in the node's network namespace.
pub const BRIDGE: &str = "cni0";

/// A pod CIDR checked to be an IPv4 or IPv6 network address with a valid prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parse `10.244.1.0/24` or `fd00:10:244:1::/64`; host bits must be zero.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("pod CIDR {s:?} is not address/prefix (e.g. 10.244.1.0/24)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("pod CIDR {s:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("pod CIDR {s:?}: prefix must be 0..={max}"))?;
        let network = mask(addr, prefix);
        if network != addr {
            return Err(format!(
                "pod CIDR {s:?} is not a network address (host bits set; did you mean {network}/{prefix}?)"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            IpAddr::V6((bits & m).into())
        }
    }
}

/// The conflist for `cidr`: bridge + host-local + portmap, pretty-printed with a trailing
/// newline. `data_dir` is host-local's allocation directory; it lives under the kubelet's root
/// dir so several kubelets on one machine (simulated nodes) never share IP allocations.
/// Pods' outbound masquerade is not the bridge's (`ipMasq` is off): the kubelet installs one
/// rule set per node CIDR instead (see `masquerade.rs`), which costs nothing per sandbox.
pub fn render(cidr: &Cidr, data_dir: &Path) -> String {
    let default_route = if cidr.addr.is_ipv4() {
        "0.0.0.0/0"
    } else {
        "::/0"
    };
    let conf = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": cidr.to_string() }]],
                    "routes": [{ "dst": default_route }],
                    "dataDir": data_dir.display().to_string(),
                }
            },
            {
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "snat": true
            }
        ]
    });
    let mut s = serde_json::to_string_pretty(&conf).expect("JSON value serializes");
    s.push('\n');
    s
}

/// Write `<dir>/10-kubrs.conflist` for `pod_cidr` if its content differs from what is there.
/// Returns whether the file was (re)written. An invalid CIDR is an `InvalidInput` error naming
/// the problem; `dir` is created if missing.
pub fn write_config(dir: &Path, pod_cidr: &str, data_dir: &Path) -> io::Result<bool> {
    let cidr = Cidr::parse(pod_cidr).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let content = render(&cidr, data_dir);
    let path = dir.join(CONFLIST_FILE);
    match std::fs::read(&path) {
        Ok(old) if old == content.as_bytes() => return Ok(false),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(dir)?;
    // A dot-file that does not end in .conf/.conflist/.json, so a runtime scanning the directory
    // never loads a half-written temporary.
    let tmp = dir.join(format!(".{CONFLIST_FILE}.tmp-{}", std::process::id()));
    let res = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map(|_| true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn cidrs_are_validated() {
        let ok = [
            ("10.244.1.0/24", "10.244.1.0/24"),
            (" 10.0.0.0/8 ", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd00:10:244:1::/64", "fd00:10:244:1::/64"),
        ];
        for (input, want) in ok {
            assert_eq!(Cidr::parse(input).unwrap().to_string(), want, "{input}");
        }
        let bad = [
            ("10.244.1.0", "address/prefix"),
            ("10.244.1.5/24", "did you mean 10.244.1.0/24"),
            ("10.244.1.0/33", "prefix must be 0..=32"),
            ("fd00::1/64", "did you mean fd00::/64"),
            ("fd00::/129", "0..=128"),
            ("bogus/24", "not an IP address"),
            ("10.0.0.0/x", "prefix"),
        ];
        for (input, want) in bad {
            let e = Cidr::parse(input).unwrap_err();
            assert!(e.contains(want), "{input}: {e}");
        }
    }

    #[test]
    fn conflist_is_bridge_hostlocal_portmap_without_loopback_or_promisc() {
        let c = Cidr::parse("10.244.3.0/24").unwrap();
        let v: Value = serde_json::from_str(&render(&c, Path::new("/k/cni"))).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["name"], "kubrs");
        let plugins = v["plugins"].as_array().unwrap();
        let types: Vec<_> = plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap"]);
        let b = &plugins[0];
        assert_eq!(b["bridge"], "cni0");
        assert_eq!(b["isGateway"], true);
        assert_eq!(b["hairpinMode"], true);
        assert_eq!(b["ipMasq"], false);
        assert!(b.get("promiscMode").is_none());
        assert_eq!(b["ipam"]["type"], "host-local");
        assert_eq!(b["ipam"]["ranges"][0][0]["subnet"], "10.244.3.0/24");
        assert_eq!(b["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(b["ipam"]["dataDir"], "/k/cni");
        assert_eq!(plugins[1]["capabilities"]["portMappings"], true);
        assert_eq!(plugins[1]["snat"], true);

        let v6 = Cidr::parse("fd00:1::/64").unwrap();
        let v: Value = serde_json::from_str(&render(&v6, Path::new("/d"))).unwrap();
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        assert_eq!(v["plugins"][0]["ipam"]["routes"][0]["dst"], "::/0");
    }

    #[test]
    fn writes_only_when_content_changes() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("net.d");
        let data = dir.path().join("ipam");
        assert!(write_config(&conf, "10.244.1.0/24", &data).unwrap());
        assert!(!write_config(&conf, "10.244.1.0/24", &data).unwrap());
        assert!(write_config(&conf, "10.244.2.0/24", &data).unwrap());
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(conf.join(CONFLIST_FILE)).unwrap())
                .unwrap();
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.2.0/24"
        );
        assert_eq!(v["plugins"][0]["ipMasq"], false);
        // Only the conflist is left behind: no temporaries.
        let names: Vec<_> = std::fs::read_dir(&conf)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [CONFLIST_FILE]);
    }

    #[test]
    fn invalid_cidr_is_invalid_input_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_config(dir.path(), "10.244.1.1/24", dir.path()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("not a network address"), "{e}");
        assert!(!dir.path().join(CONFLIST_FILE).exists());
    }
}
