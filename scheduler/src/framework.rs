//! The plugin framework: named plugins with pre-filter, filter, pre-score, score and
//! normalize extension points, run over a [`Cache`] for one pod at a time.
//!
//! [`Framework::schedule`] is a pure decision: it reads the cache and returns either the chosen
//! node or a [`FitError`] whose [`FitError::message`] is upstream's FailedScheduling summary.
//! Side effects (assume, bind, events) belong to the caller.

use crate::cache::{Cache, NodeInfo, PodInfo};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Highest score a plugin gives a node (upstream `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;

/// A plugin's verdict for one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Success,
    /// Might fit if something changes on the node (preemption can help).
    Unschedulable,
    /// Cannot fit on this node whatever is removed from it.
    UnschedulableAndUnresolvable,
    Error,
}

/// A [`Code`] with the reasons users see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub reasons: Vec<String>,
    pub plugin: &'static str,
}

impl Status {
    pub fn success() -> Self {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: "",
        }
    }
    pub fn new(code: Code, plugin: &'static str, reason: impl Into<String>) -> Self {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin,
        }
    }
    pub fn unschedulable(plugin: &'static str, reason: impl Into<String>) -> Self {
        Self::new(Code::Unschedulable, plugin, reason)
    }
    pub fn unresolvable(plugin: &'static str, reason: impl Into<String>) -> Self {
        Self::new(Code::UnschedulableAndUnresolvable, plugin, reason)
    }
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

/// Per-cycle data plugins compute in pre-filter/pre-score and read per node: one typed slot
/// per stateful plugin, so the per-node extension points read a field instead of hashing a
/// string key and downcasting a box (upstream's `CycleState` is a string-keyed map; its
/// per-node reads are what this avoids).
#[derive(Default)]
pub struct CycleState {
    pub(crate) volumes: Option<crate::plugins::volume_binding::VolumeState>,
    pub(crate) spread_filter: Option<crate::plugins::topology_spread::FilterState>,
    pub(crate) spread_score: Option<crate::plugins::topology_spread::ScoreState>,
    pub(crate) affinity_filter: Option<crate::plugins::inter_pod_affinity::FilterState>,
    pub(crate) affinity_score: Option<crate::plugins::inter_pod_affinity::ScoreState>,
}

/// What a plugin sees: the pod being scheduled and the cluster snapshot.
pub struct Ctx<'a> {
    pub pod: &'a PodInfo,
    pub cache: &'a Cache,
}

/// A named scheduling plugin. Every extension point has a no-op default.
pub trait Plugin: Send + Sync {
    fn name(&self) -> &'static str;
    /// Compute per-pod state once; an error status rejects every node.
    fn pre_filter(&self, _ctx: &Ctx, _state: &mut CycleState) -> Result<(), Status> {
        Ok(())
    }
    fn filter(&self, _ctx: &Ctx, _state: &CycleState, _node: &NodeInfo) -> Status {
        Status::success()
    }
    fn pre_score(&self, _ctx: &Ctx, _state: &mut CycleState, _nodes: &[&NodeInfo]) {}
    fn score(&self, _ctx: &Ctx, _state: &CycleState, _node: &NodeInfo) -> i64 {
        0
    }
    /// Score `nodes` (the ones pre-score saw, in the same order) into `out`; plugins that
    /// computed every candidate's score in pre-score override this to skip per-node lookups.
    fn score_nodes(&self, ctx: &Ctx, state: &CycleState, nodes: &[&NodeInfo], out: &mut [i64]) {
        for (o, n) in out.iter_mut().zip(nodes) {
            *o = self.score(ctx, state, n);
        }
    }
    /// Map raw scores onto 0..=MAX_NODE_SCORE.
    fn normalize(&self, _ctx: &Ctx, _state: &CycleState, _scores: &mut [i64]) {}
}

/// Upstream `DefaultNormalizeScore`: scale to 0..=max by the highest score, optionally reversed.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores.iter_mut() {
        *s = MAX_NODE_SCORE * *s / max;
        if reverse {
            *s = MAX_NODE_SCORE - *s;
        }
    }
}

/// Why no node fits: the per-node statuses, or one pre-filter status for all nodes.
#[derive(Clone, Debug)]
pub struct FitError {
    pub num_all_nodes: usize,
    pub pre_filter: Option<Status>,
    pub node_statuses: HashMap<String, Status>,
    /// Set after preemption ran without success.
    pub post_filter_msg: String,
}

/// Upstream's "count reason" histogram, sorted as strings.
pub fn reasons_histogram<'a>(statuses: impl Iterator<Item = &'a Status>) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in statuses {
        for r in &s.reasons {
            *counts.entry(r.as_str()).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts
        .into_iter()
        .map(|(r, n)| format!("{n} {r}"))
        .collect();
    parts.sort();
    parts.join(", ")
}

impl FitError {
    /// The FailedScheduling message, e.g. `0/3 nodes are available: 1 node(s) had untolerated
    /// taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is
    /// not helpful for scheduling.`
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_all_nodes);
        match &self.pre_filter {
            Some(s) => msg.push_str(&format!(" {}.", s.reasons.join(", "))),
            None => msg.push_str(&format!(
                " {}.",
                reasons_histogram(self.node_statuses.values())
            )),
        }
        if !self.post_filter_msg.is_empty() {
            msg.push_str(&format!(" {}.", self.post_filter_msg));
        }
        msg
    }

    /// Plugins that rejected the pod (to decide which cluster events may help).
    pub fn plugins(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self
            .pre_filter
            .iter()
            .chain(self.node_statuses.values())
            .map(|s| s.plugin)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// The outcome of a successful decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub node: String,
    pub evaluated: usize,
    pub feasible: usize,
}

/// Rotates the start node between cycles and breaks score ties, as upstream does.
#[derive(Debug)]
pub struct Rotor {
    next_start: usize,
    rng: u64,
}

impl Default for Rotor {
    fn default() -> Self {
        Rotor {
            next_start: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }
}

impl Rotor {
    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// An ordered set of filter plugins and weighted score plugins.
#[derive(Clone)]
pub struct Framework {
    pub filters: Vec<Arc<dyn Plugin>>,
    pub scorers: Vec<(Arc<dyn Plugin>, i64)>,
    /// Upstream `percentageOfNodesToScore`; 0 means adaptive.
    pub percentage_of_nodes_to_score: u32,
}

/// Upstream `numFeasibleNodesToFind`.
pub fn num_feasible_nodes_to_find(num_all: usize, percentage: u32) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if num_all < MIN_FEASIBLE || percentage >= 100 {
        return num_all;
    }
    let pct = if percentage == 0 {
        (50 - num_all as i64 / 125).max(5) as usize
    } else {
        percentage as usize
    };
    (num_all * pct / 100).max(MIN_FEASIBLE)
}

impl Framework {
    /// Run pre-filter and filter on `node` only (preemption's what-if check).
    pub fn fits_on(&self, ctx: &Ctx, state: &CycleState, node: &NodeInfo) -> Status {
        for p in &self.filters {
            let s = p.filter(ctx, state, node);
            if !s.is_success() {
                return s;
            }
        }
        Status::success()
    }

    pub fn pre_filter(&self, ctx: &Ctx) -> Result<CycleState, Status> {
        let mut state = CycleState::default();
        for p in &self.filters {
            p.pre_filter(ctx, &mut state)?;
        }
        Ok(state)
    }

    /// Choose a node for `pod`.
    pub fn schedule(
        &self,
        pod: &PodInfo,
        cache: &Cache,
        rotor: &mut Rotor,
    ) -> Result<Decision, Box<FitError>> {
        let ctx = Ctx { pod, cache };
        let num_all = cache.num_nodes();
        let fail = |pre_filter, node_statuses| {
            Box::new(FitError {
                num_all_nodes: num_all,
                pre_filter,
                node_statuses,
                post_filter_msg: String::new(),
            })
        };
        if num_all == 0 {
            return Err(fail(None, HashMap::new()));
        }
        let state = match self.pre_filter(&ctx) {
            Ok(s) => s,
            Err(s) => return Err(fail(Some(s), HashMap::new())),
        };
        // A nominated node (after preemption) is tried first.
        if let Some(n) = pod
            .nominated_node_name
            .as_deref()
            .and_then(|n| cache.node(n))
        {
            if self.fits_on(&ctx, &state, n).is_success() {
                return Ok(Decision {
                    node: n.name.clone(),
                    evaluated: 1,
                    feasible: 1,
                });
            }
        }
        let nodes = cache.nodes();
        let want = num_feasible_nodes_to_find(num_all, self.percentage_of_nodes_to_score);
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(nodes.len()));
        let mut statuses = HashMap::new();
        let start = rotor.next_start % nodes.len().max(1);
        let mut evaluated = 0;
        for i in 0..nodes.len() {
            let n = &nodes[(start + i) % nodes.len()];
            if !n.present {
                continue;
            }
            evaluated += 1;
            let s = self.fits_on(&ctx, &state, n);
            if s.is_success() {
                feasible.push(n);
                if feasible.len() >= want {
                    break;
                }
            } else {
                statuses.insert(n.name.clone(), s);
            }
        }
        rotor.next_start = (start + evaluated) % nodes.len().max(1);
        if feasible.is_empty() {
            return Err(fail(None, statuses));
        }
        let n_feasible = feasible.len();
        if feasible.len() == 1 {
            return Ok(Decision {
                node: feasible[0].name.clone(),
                evaluated,
                feasible: 1,
            });
        }
        let totals = self.score(&ctx, state, &feasible);
        let mut best = 0;
        let mut ties = 0u64;
        for (i, t) in totals.iter().enumerate() {
            if *t > totals[best] {
                best = i;
                ties = 1;
            } else if *t == totals[best] {
                ties += 1;
                if rotor.next_rand().is_multiple_of(ties) {
                    best = i;
                }
            }
        }
        Ok(Decision {
            node: feasible[best].name.clone(),
            evaluated,
            feasible: n_feasible,
        })
    }

    /// Weighted, normalized score totals in the order of `nodes`.
    pub fn score(&self, ctx: &Ctx, mut state: CycleState, nodes: &[&NodeInfo]) -> Vec<i64> {
        let mut totals = vec![0i64; nodes.len()];
        for (p, _) in &self.scorers {
            p.pre_score(ctx, &mut state, nodes);
        }
        let mut scores = vec![0i64; nodes.len()];
        for (p, weight) in &self.scorers {
            p.score_nodes(ctx, &state, nodes, &mut scores);
            p.normalize(ctx, &state, &mut scores);
            for (t, s) in totals.iter_mut().zip(&scores) {
                *t += s * weight;
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_message_is_upstreams_summary() {
        let taint = Status::unresolvable("TaintToleration", "node(s) had untolerated taint {k: v}");
        let cpu = Status::unschedulable("NodeResourcesFit", "Insufficient cpu");
        let e = FitError {
            num_all_nodes: 3,
            pre_filter: None,
            node_statuses: [
                ("a".to_string(), taint),
                ("b".to_string(), cpu.clone()),
                ("c".to_string(), cpu),
            ]
            .into_iter()
            .collect(),
            post_filter_msg:
                "preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling"
                    .into(),
        };
        assert_eq!(e.message(), "0/3 nodes are available: 1 node(s) had untolerated taint {k: v}, 2 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.");
        let pre = FitError {
            num_all_nodes: 2,
            pre_filter: Some(Status::unresolvable(
                "VolumeBinding",
                "persistentvolumeclaim \"x\" not found",
            )),
            node_statuses: HashMap::new(),
            post_filter_msg: String::new(),
        };
        assert_eq!(
            pre.message(),
            "0/2 nodes are available: persistentvolumeclaim \"x\" not found."
        );
        let none = FitError {
            num_all_nodes: 0,
            pre_filter: None,
            node_statuses: HashMap::new(),
            post_filter_msg: String::new(),
        };
        assert_eq!(none.message(), "no nodes available to schedule pods");
    }

    #[test]
    fn feasible_nodes_to_find_is_adaptive() {
        for (n, pct, want) in [
            (50, 0, 50),
            (100, 0, 100),
            (1000, 0, 420),
            (5000, 0, 500),
            (20000, 0, 1000),
            (5000, 100, 5000),
            (1000, 5, 100),
        ] {
            assert_eq!(
                num_feasible_nodes_to_find(n, pct),
                want,
                "{n} nodes at {pct}%"
            );
        }
    }

    #[test]
    fn default_normalize_scales_and_reverses() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut r = vec![0, 5, 10];
        default_normalize(&mut r, true);
        assert_eq!(r, vec![100, 50, 0]);
        let mut z = vec![0, 0];
        default_normalize(&mut z, true);
        assert_eq!(z, vec![100, 100]);
    }
}
