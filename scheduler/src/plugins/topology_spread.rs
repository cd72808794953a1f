//! PodTopologySpread: `DoNotSchedule` constraints as a filter (skew after placing the pod must
//! stay within `maxSkew`), `ScheduleAnyway` constraints as a score, and — for pods without
//! constraints that have a controlling owner — upstream's system default spreading
//! (hostname maxSkew 3, zone maxSkew 5) over pods of the same owner.

use crate::cache::{
    compile_selector, selector_matches, FxHashMap, NodeInfo, PodInfo, LABEL_HOSTNAME as HOSTNAME,
    LABEL_ZONE as ZONE,
};
use crate::framework::{Ctx, CycleState, Plugin, Status, MAX_NODE_SCORE};
use crate::plugins::node_affinity::pod_matches_node;
use crate::plugins::taint_toleration::tolerates;
use apimachinery::selectors::LabelSelector;
use k8s_openapi::api::core::v1::TopologySpreadConstraint;

pub const NAME: &str = "PodTopologySpread";
pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const REASON_MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

pub struct PodTopologySpread;

/// Which pods a constraint counts.
#[derive(Clone, Debug)]
enum Matcher {
    Selector(LabelSelector),
    /// System default: pods with the same controlling owner (the cache's number for it;
    /// `None` when no placed pod has that owner).
    Owner(Option<u32>),
}

#[derive(Clone, Debug)]
struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: usize,
    matcher: Matcher,
    honor_affinity: bool,
    honor_taints: bool,
}

impl Constraint {
    fn from_api(pod: &PodInfo, c: &TopologySpreadConstraint) -> Self {
        let mut sel = c.label_selector.clone();
        // matchLabelKeys: AND in the incoming pod's values for those keys.
        if let (Some(keys), Some(s)) = (c.match_label_keys.as_ref(), sel.as_mut()) {
            for k in keys {
                if let Some(v) = pod.labels.get(k) {
                    s.match_expressions.get_or_insert_with(Vec::new).push(
                        k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement {
                            key: k.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        },
                    );
                }
            }
        }
        Constraint {
            key: c.topology_key.clone(),
            max_skew: c.max_skew as i64,
            min_domains: c.min_domains.unwrap_or(1).max(1) as usize,
            matcher: Matcher::Selector(compile_selector(sel.as_ref())),
            honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        }
    }

    fn counts_on(&self, ns: &str, node: &NodeInfo) -> i64 {
        match &self.matcher {
            Matcher::Owner(id) => id.map_or(0, |id| node.owner_count(id)) as i64,
            Matcher::Selector(sel) => node
                .pods
                .iter()
                .filter(|p| p.namespace == ns && !p.terminating && selector_matches(sel, &p.labels))
                .count() as i64,
        }
    }

    fn self_match(&self, pod: &PodInfo) -> i64 {
        match &self.matcher {
            Matcher::Owner(_) => 1,
            Matcher::Selector(sel) => selector_matches(sel, &pod.labels) as i64,
        }
    }

    fn node_eligible(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        (!self.honor_affinity || pod_matches_node(pod, node))
            && (!self.honor_taints
                || node
                    .taints
                    .iter()
                    .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
                    .all(|taint| pod.tolerations.iter().any(|t| tolerates(t, taint))))
    }
}

fn constraints(pod: &PodInfo, when: &str) -> Vec<Constraint> {
    pod.spread_constraints
        .iter()
        .filter(|c| c.when_unsatisfiable == when)
        .map(|c| Constraint::from_api(pod, c))
        .collect()
}

pub(crate) struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<FxHashMap<String, i64>>,
    min: Vec<i64>,
}

pub(crate) struct ScoreState {
    constraints: Vec<Constraint>,
    /// Matching pods per domain, for constraints whose key is not the hostname (hostname
    /// constraints count on the scored node itself, as upstream's Score does).
    counts: Vec<FxHashMap<String, i64>>,
    weights: Vec<f64>,
    /// Scores of the nodes pre-score saw, in their order (-1: a constraint's key is missing).
    raw: Vec<i64>,
}

/// Count matching pods per domain over eligible nodes that carry every constraint's key.
fn count_domains<'a>(
    pod: &PodInfo,
    cs: &[Constraint],
    nodes: impl Iterator<Item = &'a NodeInfo>,
) -> Vec<FxHashMap<String, i64>> {
    let mut counts = vec![FxHashMap::default(); cs.len()];
    for n in nodes.filter(|n| n.present) {
        if !cs.iter().all(|c| n.labels.contains_key(&c.key)) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if !c.node_eligible(pod, n) {
                continue;
            }
            let v = &n.labels[&c.key];
            let add = c.counts_on(&pod.namespace, n);
            // Clone the domain name only the first time it is seen.
            match counts[i].get_mut(v.as_str()) {
                Some(x) => *x += add,
                None => {
                    counts[i].insert(v.clone(), add);
                }
            }
        }
    }
    counts
}

impl Plugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, ctx: &Ctx, state: &mut CycleState) -> Result<(), Status> {
        let cs = constraints(ctx.pod, "DoNotSchedule");
        if cs.is_empty() {
            return Ok(());
        }
        let counts = count_domains(ctx.pod, &cs, ctx.cache.nodes().iter());
        let min = cs
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                if m.len() < c.min_domains {
                    0
                } else {
                    m.values().copied().min().unwrap_or(0)
                }
            })
            .collect();
        state.spread_filter = Some(FilterState {
            constraints: cs,
            counts,
            min,
        });
        Ok(())
    }

    fn filter(&self, ctx: &Ctx, state: &CycleState, node: &NodeInfo) -> Status {
        let Some(st) = &state.spread_filter else {
            return Status::success();
        };
        for (i, c) in st.constraints.iter().enumerate() {
            let Some(value) = node.labels.get(&c.key) else {
                return Status::unresolvable(NAME, REASON_MISSING_LABEL);
            };
            let skew = st.counts[i].get(value.as_str()).copied().unwrap_or(0)
                + c.self_match(ctx.pod)
                - st.min[i];
            if skew > c.max_skew {
                return Status::unschedulable(NAME, REASON);
            }
        }
        Status::success()
    }

    fn pre_score(&self, ctx: &Ctx, state: &mut CycleState, nodes: &[&NodeInfo]) {
        let mut cs = constraints(ctx.pod, "ScheduleAnyway");
        if ctx.pod.spread_constraints.is_empty() {
            if let Some(uid) = &ctx.pod.owner_uid {
                let owner = ctx.cache.owner_id(uid);
                let default = |key: &str, skew| Constraint {
                    key: key.into(),
                    max_skew: skew,
                    min_domains: 1,
                    matcher: Matcher::Owner(owner),
                    honor_affinity: true,
                    honor_taints: false,
                };
                cs.push(default(HOSTNAME, 3));
                // The zone constraint only applies when nodes carry zones.
                if nodes.iter().any(|n| n.zone.is_some()) {
                    cs.push(default(ZONE, 5));
                }
            }
        }
        if cs.is_empty() {
            return;
        }
        // Hostname domains are the candidate nodes themselves (counted on the node, as
        // upstream's Score does). Wider domains count every node, except for the system default
        // (owner) constraints, which count over the candidate nodes only: a full pass over every
        // node per pod would dominate the cycle at thousands of nodes, and the candidates are a
        // rotating sample of all of them.
        let sampled = |c: &Constraint| c.key != HOSTNAME && matches!(c.matcher, Matcher::Owner(_));
        let mut counts = vec![FxHashMap::default(); cs.len()];
        for (i, c) in cs.iter().enumerate() {
            if c.key != HOSTNAME && !sampled(c) {
                counts[i] =
                    count_domains(ctx.pod, std::slice::from_ref(c), ctx.cache.nodes().iter())
                        .pop()
                        .unwrap_or_default();
            }
        }
        // One pass over the candidates looks each node's labels and matching pods up once, for
        // both the sampled domain counts and the scores (per node, per constraint: the count for
        // hostname and all-node constraints, a domain index for sampled ones).
        let k = cs.len();
        let mut cells: Vec<i64> = Vec::with_capacity(nodes.len() * k);
        let mut missing = vec![false; nodes.len()];
        // (zone number, count, counted on an eligible node) per sampled constraint: sampled
        // constraints are the system default zone constraint, whose domain is the node's
        // zone number (see `NodeInfo::zone`), compared without reading label strings.
        let mut domains: Vec<Vec<(u32, i64, bool)>> = vec![Vec::new(); k];
        let ns = ctx.pod.namespace.as_str();
        let hostname: Vec<bool> = cs.iter().map(|c| c.key == HOSTNAME).collect();
        let is_sampled: Vec<bool> = cs.iter().map(sampled).collect();
        for (j, n) in nodes.iter().enumerate() {
            let mut owned: Option<i64> = None;
            for (i, c) in cs.iter().enumerate() {
                // The default constraints read the node's precomputed hostname and zone.
                let value = match (&c.matcher, hostname[i]) {
                    (Matcher::Owner(_), true) => n.has_hostname.then_some(""),
                    (Matcher::Owner(_), false) => n.zone.map(|_| ""),
                    (Matcher::Selector(_), _) => n.labels.get(&c.key).map(String::as_str),
                };
                let Some(v) = value else {
                    missing[j] = true;
                    cells.push(0);
                    continue;
                };
                let mut count = || match &c.matcher {
                    Matcher::Owner(_) => *owned.get_or_insert_with(|| c.counts_on(ns, n)),
                    Matcher::Selector(_) => c.counts_on(ns, n),
                };
                if hostname[i] {
                    cells.push(count());
                } else if is_sampled[i] {
                    let zone = n.zone.expect("sampled constraints are zone constraints");
                    let d = match domains[i].iter().position(|(z, _, _)| *z == zone) {
                        Some(d) => d,
                        None => {
                            domains[i].push((zone, 0, false));
                            domains[i].len() - 1
                        }
                    };
                    if c.node_eligible(ctx.pod, n) {
                        let add = count();
                        let dom = &mut domains[i][d];
                        dom.1 += add;
                        dom.2 = true;
                    }
                    cells.push(d as i64);
                } else {
                    cells.push(counts[i].get(v).copied().unwrap_or(0));
                }
            }
        }
        for (i, c) in cs.iter().enumerate() {
            if sampled(c) {
                counts[i] = domains[i]
                    .iter()
                    .filter(|(_, _, counted)| *counted)
                    .map(|(z, n, _)| (ctx.cache.zone_name(*z).to_string(), *n))
                    .collect();
            }
        }
        let weights: Vec<f64> = cs
            .iter()
            .zip(&counts)
            .map(|(c, m)| {
                if c.key == HOSTNAME {
                    (nodes.len() as f64 + 2.0).ln()
                } else {
                    (m.len() as f64 + 2.0).ln()
                }
            })
            .collect();
        let raw = cells
            .chunks(k)
            .zip(&missing)
            .map(|(row, missing)| {
                if *missing {
                    return -1;
                }
                let mut score = 0.0;
                for (i, c) in cs.iter().enumerate() {
                    let cnt = if sampled(c) {
                        let (_, n, counted) = domains[i][row[i] as usize];
                        if counted {
                            n
                        } else {
                            0
                        }
                    } else {
                        row[i]
                    };
                    score += cnt as f64 * weights[i] + (c.max_skew - 1) as f64;
                }
                score.round() as i64
            })
            .collect();
        state.spread_score = Some(ScoreState {
            constraints: cs,
            counts,
            weights,
            raw,
        });
    }

    fn score_nodes(&self, ctx: &Ctx, state: &CycleState, nodes: &[&NodeInfo], out: &mut [i64]) {
        match &state.spread_score {
            Some(st) if st.raw.len() == nodes.len() => out.copy_from_slice(&st.raw),
            _ => {
                for (o, n) in out.iter_mut().zip(nodes) {
                    *o = self.score(ctx, state, n);
                }
            }
        }
    }

    fn score(&self, ctx: &Ctx, state: &CycleState, node: &NodeInfo) -> i64 {
        let Some(st) = &state.spread_score else {
            return 0;
        };
        let mut score = 0.0;
        for (i, c) in st.constraints.iter().enumerate() {
            let Some(v) = node.labels.get(&c.key) else {
                return -1;
            };
            let cnt = if c.key == HOSTNAME {
                c.counts_on(&ctx.pod.namespace, node)
            } else {
                st.counts[i].get(v.as_str()).copied().unwrap_or(0)
            } as f64;
            score += cnt * st.weights[i] + (c.max_skew - 1) as f64;
        }
        score.round() as i64
    }

    fn normalize(&self, _: &Ctx, state: &CycleState, scores: &mut [i64]) {
        if state.spread_score.is_none() {
            return;
        }
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let (min, max) = valid.fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    fn spread(key: &str, skew: i32, when: &str) -> serde_json::Value {
        json!({"metadata": {"labels": {"app": "web"}}, "spec": {"topologySpreadConstraints": [{"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}})
    }

    fn zoned() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            labelled("a1", json!({"zone": "a", "kubernetes.io/hostname": "a1"})),
            labelled("a2", json!({"zone": "a", "kubernetes.io/hostname": "a2"})),
            labelled("b1", json!({"zone": "b", "kubernetes.io/hostname": "b1"})),
            labelled("nozone", json!({"kubernetes.io/hostname": "nozone"})),
        ]
    }

    #[test]
    fn do_not_schedule_keeps_skew_within_max() {
        let web = |n: &str, node: &str| placed(n, node, json!({"app": "web"}));
        let cases = [
            (
                "empty cluster: any zoned node",
                vec![],
                1,
                vec!["a1", "a2", "b1"],
            ),
            (
                "zone a has 2, b has 0: only b",
                vec![web("w1", "a1"), web("w2", "a2")],
                1,
                vec!["b1"],
            ),
            (
                "balanced 1/1: both",
                vec![web("w1", "a1"), web("w2", "b1")],
                1,
                vec!["a1", "a2", "b1"],
            ),
            (
                "skew 2 allows a again",
                vec![web("w1", "a1")],
                2,
                vec!["a1", "a2", "b1"],
            ),
            (
                "other labels do not count",
                vec![
                    placed("o1", "a1", json!({"app": "db"})),
                    placed("o2", "a1", json!({"app": "db"})),
                ],
                1,
                vec!["a1", "a2", "b1"],
            ),
        ];
        for (name, pods, skew, want) in cases {
            let c = cache(&zoned(), pods);
            assert_eq!(
                passing(
                    &PodTopologySpread,
                    &pod(spread("zone", skew, "DoNotSchedule")),
                    &c
                ),
                want,
                "{name}"
            );
        }
        let c = cache(&zoned(), vec![web("w1", "a1"), web("w2", "a2")]);
        let st = filter_all(
            &PodTopologySpread,
            &pod(spread("zone", 1, "DoNotSchedule")),
            &c,
        );
        assert_eq!(st[0].1, Status::unschedulable(NAME, REASON));
        assert_eq!(st[3].1, Status::unresolvable(NAME, REASON_MISSING_LABEL));
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let c = cache(
            &zoned(),
            vec![
                placed("w1", "a1", json!({"app": "web"})),
                placed("w2", "a1", json!({"app": "web"})),
            ],
        );
        let s = score_all(
            &PodTopologySpread,
            &pod(spread("kubernetes.io/hostname", 1, "ScheduleAnyway")),
            &c,
        );
        let get = |n: &str| s.iter().find(|(x, _)| x == n).unwrap().1;
        assert!(get("a2") > get("a1"), "{s:?}");
        assert_eq!(get("a2"), get("b1"));
        assert_eq!(get("a2"), 100);
    }

    #[test]
    fn pods_of_one_owner_spread_by_default() {
        let owned = |name: &str, node: Option<&str>| {
            pod(
                json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "rs-1", "controller": true}]}, "spec": {"nodeName": node}}),
            )
        };
        let nodes = vec![
            labelled("a", json!({"kubernetes.io/hostname": "a"})),
            labelled("b", json!({"kubernetes.io/hostname": "b"})),
        ];
        let c = cache(&nodes, vec![owned("x", Some("a")), owned("y", Some("a"))]);
        let s = score_all(&PodTopologySpread, &owned("p", None), &c);
        assert!(s[1].1 > s[0].1, "{s:?}");
        // Without an owner there is no default spreading.
        let s = score_all(&PodTopologySpread, &pod(json!({})), &c);
        assert_eq!(s, vec![("a".into(), 0), ("b".into(), 0)]);
    }

    #[test]
    fn default_spreading_counts_zones_and_other_owners_apart() {
        let owned = |name: &str, uid: &str, node: Option<&str>| {
            pod(
                json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": uid, "controller": true}]}, "spec": {"nodeName": node}}),
            )
        };
        let node = |name: &str, zone: &str| {
            labelled(
                name,
                json!({"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}),
            )
        };
        let nodes = vec![node("a1", "a"), node("a2", "a"), node("b1", "b")];
        // rs-1 has two pods in zone a (none on a2 itself); rs-2's pods must not count.
        let c = cache(
            &nodes,
            vec![
                owned("x", "rs-1", Some("a1")),
                owned("y", "rs-1", Some("a1")),
                owned("o1", "rs-2", Some("b1")),
                owned("o2", "rs-2", Some("b1")),
                owned("o3", "rs-2", Some("b1")),
            ],
        );
        let s = score_all(&PodTopologySpread, &owned("p", "rs-1", None), &c);
        let score = |n: &str| s.iter().find(|(m, _)| m == n).unwrap().1;
        assert!(
            score("b1") > score("a2"),
            "zone b is emptier for rs-1: {s:?}"
        );
        assert!(score("a2") > score("a1"), "a2 holds no rs-1 pod: {s:?}");
        assert_eq!(score("b1"), MAX_NODE_SCORE, "{s:?}");
        // An owner with no placed pod sees every node as empty.
        let s = score_all(&PodTopologySpread, &owned("q", "rs-3", None), &c);
        assert!(s.iter().all(|(_, v)| *v == MAX_NODE_SCORE), "{s:?}");
    }
}
