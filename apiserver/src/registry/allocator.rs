//! Service ClusterIP and NodePort allocation. One process-wide allocator per range, guarded by
//! a mutex, rebuilt from the stored Services at start: no double allocation under concurrency,
//! and what a failed or deleted Service held is released.

use apimachinery::errors::FieldError;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::Mutex;

#[derive(Debug)]
pub struct IpRange {
    base: u32,
    size: u32,
}

impl IpRange {
    /// Parse an IPv4 CIDR such as `10.96.0.0/12`.
    pub fn parse(cidr: &str) -> Result<Self, String> {
        let (ip, bits) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not a CIDR"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{cidr:?}: {e}"))?;
        let bits: u32 = bits.parse().map_err(|e| format!("{cidr:?}: {e}"))?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{cidr:?}: prefix length must be between 8 and 30"));
        }
        let size = 1u32 << (32 - bits);
        Ok(Self {
            base: u32::from(ip) & !(size - 1),
            size,
        })
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v >= self.base && v < self.base + self.size
    }
    /// The address the `kubernetes` Service gets: the first usable one.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
    /// The cluster DNS address by convention (`.10`).
    pub fn dns(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 10)
    }
}

#[derive(Debug)]
struct Pool {
    used: HashSet<u32>,
    next: u32,
}

/// Allocators for ClusterIPs and NodePorts.
#[derive(Debug)]
pub struct Allocators {
    range: IpRange,
    ips: Mutex<Pool>,
    port_range: (u16, u16),
    ports: Mutex<Pool>,
}

impl Allocators {
    pub fn new(range: IpRange, port_range: (u16, u16)) -> Self {
        Self {
            range,
            ips: Mutex::new(Pool {
                used: HashSet::new(),
                next: 11,
            }),
            port_range,
            ports: Mutex::new(Pool {
                used: HashSet::new(),
                next: 0,
            }),
        }
    }

    pub fn range(&self) -> &IpRange {
        &self.range
    }

    /// Record what a stored Service already holds (at start-up).
    pub fn mark_existing(&self, svc: &Value) {
        for ip in cluster_ips(svc) {
            if let Ok(ip) = ip.parse::<Ipv4Addr>() {
                if self.range.contains(ip) {
                    self.ips
                        .lock()
                        .expect("allocator lock")
                        .used
                        .insert(u32::from(ip) - self.range.base);
                }
            }
        }
        for p in node_ports(svc) {
            self.ports
                .lock()
                .expect("allocator lock")
                .used
                .insert(p as u32);
        }
    }

    fn alloc_ip(&self, requested: Option<Ipv4Addr>) -> Result<Ipv4Addr, String> {
        let mut pool = self.ips.lock().expect("allocator lock");
        if let Some(ip) = requested {
            if !self.range.contains(ip) {
                return Err(format!("failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}/{}", Ipv4Addr::from(self.range.base), 32 - self.range.size.trailing_zeros()));
            }
            let off = u32::from(ip) - self.range.base;
            if !pool.used.insert(off) {
                return Err(format!(
                    "failed to allocate IP {ip}: provided IP is already allocated"
                ));
            }
            return Ok(ip);
        }
        let usable = self.range.size - 2;
        for _ in 0..usable {
            let off = pool.next;
            pool.next = if pool.next + 1 >= self.range.size - 1 {
                1
            } else {
                pool.next + 1
            };
            if off == 0 || pool.used.contains(&off) {
                continue;
            }
            pool.used.insert(off);
            return Ok(Ipv4Addr::from(self.range.base + off));
        }
        Err("failed to allocate a serviceIP: range is full".into())
    }

    fn release_ip(&self, ip: &str) {
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            if self.range.contains(ip) {
                self.ips
                    .lock()
                    .expect("allocator lock")
                    .used
                    .remove(&(u32::from(ip) - self.range.base));
            }
        }
    }

    fn alloc_port(&self, requested: Option<u16>) -> Result<u16, String> {
        let (lo, hi) = self.port_range;
        let mut pool = self.ports.lock().expect("allocator lock");
        if let Some(p) = requested {
            if p < lo || p > hi {
                return Err(format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}"));
            }
            if !pool.used.insert(p as u32) {
                return Err("provided port is already allocated".into());
            }
            return Ok(p);
        }
        let span = (hi - lo) as u32 + 1;
        for _ in 0..span {
            let p = lo as u32 + pool.next % span;
            pool.next = (pool.next + 1) % span;
            if pool.used.insert(p) {
                return Ok(p as u16);
            }
        }
        Err("range is full".into())
    }

    fn release_port(&self, p: u16) {
        self.ports
            .lock()
            .expect("allocator lock")
            .used
            .remove(&(p as u32));
    }

    /// Allocate what a new or updated Service needs. `old` is the stored Service on update.
    /// On error nothing stays allocated; on success call [`Allocation::commit`] after storing or
    /// [`Allocation::rollback`] if the write fails.
    pub fn allocate(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
    ) -> Result<Allocation<'_>, Vec<FieldError>> {
        let mut alloc = Allocation {
            owner: self,
            new_ips: vec![],
            new_ports: vec![],
            released_ips: vec![],
            released_ports: vec![],
        };
        let spec_type = svc
            .pointer("/spec/type")
            .and_then(Value::as_str)
            .unwrap_or("ClusterIP")
            .to_string();
        let old_ips = old.map(cluster_ips).unwrap_or_default();
        let mut errs = vec![];
        if spec_type != "ExternalName" {
            let requested = svc
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !old_ips.is_empty() && (requested.is_empty() || requested == old_ips[0]) {
                svc["spec"]["clusterIP"] = json!(old_ips[0]);
                svc["spec"]["clusterIPs"] = json!(old_ips);
            } else if requested == "None" {
                svc["spec"]["clusterIPs"] = json!(["None"]);
            } else if old.is_none() {
                let req_ip = if requested.is_empty() {
                    None
                } else {
                    requested.parse::<Ipv4Addr>().ok()
                };
                if !requested.is_empty() && req_ip.is_none() {
                    errs.push(FieldError::invalid(
                        "spec.clusterIPs",
                        json!([requested]),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                    ));
                } else {
                    match self.alloc_ip(req_ip) {
                        Ok(ip) => {
                            alloc.new_ips.push(ip.to_string());
                            svc["spec"]["clusterIP"] = json!(ip.to_string());
                            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
                        }
                        Err(e) => errs.push(FieldError::invalid(
                            "spec.clusterIPs",
                            json!([requested]),
                            e,
                        )),
                    }
                }
            }
            let spec = svc["spec"].as_object_mut().expect("spec is an object");
            spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
            spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
        } else {
            for ip in &old_ips {
                alloc.released_ips.push(ip.clone());
            }
        }
        let wants_node_ports = spec_type == "NodePort" || spec_type == "LoadBalancer";
        let old_ports = old.map(node_ports).unwrap_or_default();
        let mut kept = vec![];
        if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
            for (i, p) in ports.iter_mut().enumerate() {
                let requested = p
                    .get("nodePort")
                    .and_then(Value::as_u64)
                    .filter(|n| *n > 0)
                    .map(|n| n as u16);
                if !wants_node_ports {
                    if let Some(o) = p.as_object_mut() {
                        o.remove("nodePort");
                    }
                    continue;
                }
                let reuse = match requested {
                    Some(r) if old_ports.contains(&r) => Some(r),
                    None => old
                        .and_then(|o| o.pointer(&format!("/spec/ports/{i}/nodePort")))
                        .and_then(Value::as_u64)
                        .map(|n| n as u16)
                        .filter(|n| old_ports.contains(n) && !kept.contains(n)),
                    _ => None,
                };
                if let Some(r) = reuse {
                    kept.push(r);
                    p["nodePort"] = json!(r);
                    continue;
                }
                match self.alloc_port(requested) {
                    Ok(n) => {
                        alloc.new_ports.push(n);
                        p["nodePort"] = json!(n);
                    }
                    Err(e) => errs.push(FieldError::invalid(
                        format!("spec.ports[{i}].nodePort"),
                        json!(requested.unwrap_or(0)),
                        e,
                    )),
                }
            }
        }
        for p in old_ports {
            if !kept.contains(&p) {
                alloc.released_ports.push(p);
            }
        }
        if errs.is_empty() {
            Ok(alloc)
        } else {
            alloc.rollback();
            Err(errs)
        }
    }

    /// Release everything a deleted Service held.
    pub fn release(&self, svc: &Value) {
        for ip in cluster_ips(svc) {
            self.release_ip(&ip);
        }
        for p in node_ports(svc) {
            self.release_port(p);
        }
    }
}

/// What one Service write allocated (to undo if the write fails) and gave up (to release once
/// it succeeds).
#[must_use]
pub struct Allocation<'a> {
    owner: &'a Allocators,
    new_ips: Vec<String>,
    new_ports: Vec<u16>,
    released_ips: Vec<String>,
    released_ports: Vec<u16>,
}

impl Allocation<'_> {
    pub fn commit(self) {
        for ip in &self.released_ips {
            self.owner.release_ip(ip);
        }
        for p in &self.released_ports {
            self.owner.release_port(*p);
        }
    }
    pub fn rollback(self) {
        for ip in &self.new_ips {
            self.owner.release_ip(ip);
        }
        for p in &self.new_ports {
            self.owner.release_port(*p);
        }
    }
}

fn cluster_ips(svc: &Value) -> Vec<String> {
    let ips: Vec<String> = svc
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let ips = if ips.is_empty() {
        svc.pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .map(|s| vec![s.to_string()])
            .unwrap_or_default()
    } else {
        ips
    };
    ips.into_iter()
        .filter(|i| !i.is_empty() && i != "None")
        .collect()
}

fn node_ports(svc: &Value) -> Vec<u16> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                .filter(|n| *n > 0)
                .map(|n| n as u16)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocs() -> Allocators {
        Allocators::new(IpRange::parse("10.96.0.0/28").unwrap(), (30000, 30002))
    }

    #[test]
    fn allocates_distinct_ips_until_full_and_releases() {
        let a = allocs();
        let mut seen = HashSet::new();
        let mut svcs = vec![];
        loop {
            let mut s = json!({"spec":{"ports":[{"port":80}]}});
            match a.allocate(&mut s, None) {
                Ok(al) => {
                    al.commit();
                    assert!(seen.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string()));
                    svcs.push(s);
                }
                Err(e) => {
                    assert!(e[0].message().contains("range is full"), "{}", e[0]);
                    break;
                }
            }
        }
        assert_eq!(seen.len(), 14);
        a.release(&svcs[0]);
        let mut s = json!({"spec":{}});
        a.allocate(&mut s, None).unwrap().commit();
        assert_eq!(s["spec"]["clusterIP"], svcs[0]["spec"]["clusterIP"]);
    }

    #[test]
    fn requested_ip_and_node_ports_conflict() {
        let a = allocs();
        let mut s1 = json!({"spec":{"clusterIP":"10.96.0.5","type":"NodePort","ports":[{"port":80,"nodePort":30001}]}});
        a.allocate(&mut s1, None).unwrap().commit();
        let mut s2 = json!({"spec":{"clusterIP":"10.96.0.5"}});
        let e = a.allocate(&mut s2, None).err().unwrap();
        assert_eq!(e[0].field, "spec.clusterIPs");
        assert!(e[0].message().contains("provided IP is already allocated"));
        let mut s3 = json!({"spec":{"type":"NodePort","ports":[{"port":80,"nodePort":30001}]}});
        let e = a.allocate(&mut s3, None).err().unwrap();
        assert_eq!(e[0].field, "spec.ports[0].nodePort");
        // the failed request released the IP it took
        let mut s4 = json!({"spec":{"type":"NodePort","ports":[{"port":1},{"port":2}]}});
        a.allocate(&mut s4, None).unwrap().commit();
        assert_ne!(
            s4["spec"]["ports"][0]["nodePort"],
            s4["spec"]["ports"][1]["nodePort"]
        );
    }

    #[test]
    fn update_keeps_ip_and_ports() {
        let a = allocs();
        let mut s = json!({"spec":{"type":"NodePort","ports":[{"port":80}]}});
        a.allocate(&mut s, None).unwrap().commit();
        let mut upd = json!({"spec":{"type":"NodePort","ports":[{"port":80}]}});
        a.allocate(&mut upd, Some(&s)).unwrap().commit();
        assert_eq!(upd["spec"]["clusterIP"], s["spec"]["clusterIP"]);
        assert_eq!(
            upd["spec"]["ports"][0]["nodePort"],
            s["spec"]["ports"][0]["nodePort"]
        );
        let mut to_cluster =
            json!({"spec":{"type":"ClusterIP","ports":[{"port":80,"nodePort":30000}]}});
        a.allocate(&mut to_cluster, Some(&upd)).unwrap().commit();
        assert!(to_cluster["spec"]["ports"][0].get("nodePort").is_none());
    }
}
