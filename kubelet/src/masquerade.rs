//! Masquerade for traffic from this node's pods leaving the pod network: one chain per node
//! CIDR, jumped to from nat POSTROUTING for sources in the CIDR, as upstream's kubenet did with
//! its non-masquerade CIDR rule.
//!
//! The CNI bridge plugin's own `ipMasq` does the same per pod: on every sandbox ADD it creates a
//! chain, two rules and a POSTROUTING jump through separate `iptables` runs, each taking the
//! xtables lock and reloading the nat table, and removes them on DEL. Measured with
//! `bench-kubelet` (burst of 30 pods on 2 cores) that cost ~0.7–1.2 s of a ~5 s burst. The
//! rules here match what the plugin installs (traffic to the pod CIDR itself and to multicast
//! is left alone, everything else masqueraded), written once per CIDR with one
//! `iptables-restore`.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::cni::Cidr;

/// The chain for `cidr`: a stable name, so a restarted kubelet finds its own chain again and
/// kubelets of several simulated nodes on one host (distinct CIDRs) never share one.
pub fn chain(cidr: &Cidr) -> String {
    // FNV-1a: short, stable across builds and platforms.
    let mut h: u32 = 0x811c_9dc5;
    for b in cidr.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("KUBE-POD-MASQ-{h:08X}")
}

fn binaries(cidr: &Cidr) -> (&'static str, &'static str) {
    if cidr.addr.is_ipv4() {
        ("iptables", "iptables-restore")
    } else {
        ("ip6tables", "ip6tables-restore")
    }
}

/// The `iptables-restore --noflush` input that (re)creates the chain: declaring it flushes it.
pub fn restore_input(cidr: &Cidr) -> String {
    let chain = chain(cidr);
    let multicast = if cidr.addr.is_ipv4() {
        "224.0.0.0/4"
    } else {
        "ff00::/8"
    };
    format!(
        "*nat\n:{chain} - [0:0]\n\
         -A {chain} -d {cidr} -j RETURN\n\
         -A {chain} -d {multicast} -j RETURN\n\
         -A {chain} -j MASQUERADE\n\
         COMMIT\n"
    )
}

/// The POSTROUTING rule jumping to the chain (without the `-A`/`-C`/`-D` verb).
pub fn jump_rule(cidr: &Cidr) -> Vec<String> {
    [
        "-t",
        "nat",
        "POSTROUTING",
        "-s",
        &cidr.to_string(),
        "-m",
        "comment",
        "--comment",
        &format!("kubelet: masquerade pods of {cidr} leaving it"),
        "-j",
        &chain(cidr),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(bin: &str, verb: &str, rule: &[String]) -> std::io::Result<bool> {
    // `-t nat` first, then the verb with the chain, then the match.
    let mut args: Vec<&str> = vec!["-w", "5", &rule[0], &rule[1], verb];
    args.extend(rule[2..].iter().map(String::as_str));
    Ok(Command::new(bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success())
}

/// Install (or repair) the chain and its jump for `cidr`.
pub fn ensure(cidr: &Cidr) -> Result<(), String> {
    let (iptables, restore) = binaries(cidr);
    let mut child = Command::new(restore)
        .args(["--noflush", "-w", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{restore}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(restore_input(cidr).as_bytes())
        .map_err(|e| format!("{restore}: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{restore}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{restore}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let rule = jump_rule(cidr);
    let present = run(iptables, "-C", &rule).map_err(|e| format!("{iptables}: {e}"))?;
    if !present && !run(iptables, "-A", &rule).map_err(|e| format!("{iptables}: {e}"))? {
        return Err(format!(
            "{iptables}: cannot add the POSTROUTING jump to {}",
            chain(cidr)
        ));
    }
    Ok(())
}

/// Remove the jump and the chain for `cidr` (nothing to do when they are gone).
pub fn remove(cidr: &Cidr) {
    let (iptables, _) = binaries(cidr);
    let rule = jump_rule(cidr);
    while run(iptables, "-D", &rule).unwrap_or(false) {}
    let chain = chain(cidr);
    for verb in ["-F", "-X"] {
        let _ = Command::new(iptables)
            .args(["-w", "5", "-t", "nat", verb, &chain])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_the_bridge_plugins_per_pod_masquerade() {
        let cidr = Cidr::parse("10.244.3.0/24").unwrap();
        let c = chain(&cidr);
        assert!(c.starts_with("KUBE-POD-MASQ-") && c.len() <= 28, "{c}");
        assert_eq!(c, chain(&Cidr::parse("10.244.3.0/24").unwrap()), "stable");
        assert_ne!(c, chain(&Cidr::parse("10.244.4.0/24").unwrap()));
        assert_eq!(
            restore_input(&cidr),
            format!(
                "*nat\n:{c} - [0:0]\n-A {c} -d 10.244.3.0/24 -j RETURN\n\
                 -A {c} -d 224.0.0.0/4 -j RETURN\n-A {c} -j MASQUERADE\nCOMMIT\n"
            )
        );
        assert_eq!(
            jump_rule(&cidr).join(" "),
            format!(
                "-t nat POSTROUTING -s 10.244.3.0/24 -m comment --comment kubelet: masquerade \
                 pods of 10.244.3.0/24 leaving it -j {c}"
            )
        );
        let v6 = Cidr::parse("fd00:10:244:3::/64").unwrap();
        assert!(restore_input(&v6).contains("-d ff00::/8 -j RETURN"));
        assert_eq!(binaries(&v6).0, "ip6tables");
    }
}
