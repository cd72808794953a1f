//! Preemption (upstream DefaultPreemption): when a pod fits nowhere, find a node where evicting
//! lower-priority pods makes it fit, evicting as few and as unimportant pods as possible and
//! sparing pods protected by a PodDisruptionBudget where another choice exists.
//!
//! [`find`] is pure; the caller deletes the victims and sets `status.nominatedNodeName`.

use crate::cache::{selector_matches, Cache, NodeInfo, PodInfo};
use crate::framework::{reasons_histogram, Code, Ctx, CycleState, FitError, Framework, Status};
use apimachinery::selectors::LabelSelector;
use std::sync::Arc;

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A PodDisruptionBudget as preemption sees it.
#[derive(Clone, Debug)]
pub struct Pdb {
    pub namespace: String,
    pub selector: LabelSelector,
    pub disruptions_allowed: i32,
}

impl Pdb {
    pub fn from_api(pdb: &k8s_openapi::api::policy::v1::PodDisruptionBudget) -> Self {
        // An empty PDB selector matches nothing in policy/v1 semantics for preemption purposes
        // only when absent; `{}` selects every pod of the namespace.
        let sel =
            crate::cache::compile_selector(pdb.spec.as_ref().and_then(|s| s.selector.as_ref()));
        Pdb {
            namespace: pdb.metadata.namespace.clone().unwrap_or_default(),
            selector: sel,
            disruptions_allowed: pdb
                .status
                .as_ref()
                .and_then(|s| s.disruptions_allowed)
                .unwrap_or(0),
        }
    }
}

/// The chosen node and the pods to evict there.
#[derive(Clone, Debug)]
pub struct Plan {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

/// Upstream `PodEligibleToPreemptOthers`.
pub fn eligible(pod: &PodInfo, cache: &Cache) -> Result<(), String> {
    if pod.preempt_never {
        return Err("not eligible due to preemptionPolicy=Never".into());
    }
    // A pod that already nominated a node waits while lower-priority victims there terminate.
    if let Some(n) = pod
        .nominated_node_name
        .as_deref()
        .and_then(|n| cache.node(n))
    {
        if n.pods
            .iter()
            .any(|p| p.terminating && p.priority < pod.priority)
        {
            return Err("not eligible due to a terminating pod on the nominated node".into());
        }
    }
    Ok(())
}

fn violates(pdbs: &mut [Pdb], p: &PodInfo) -> bool {
    let mut violated = false;
    for b in pdbs
        .iter_mut()
        .filter(|b| b.namespace == p.namespace && selector_matches(&b.selector, &p.labels))
    {
        b.disruptions_allowed -= 1;
        if b.disruptions_allowed < 0 {
            violated = true;
        }
    }
    violated
}

/// Victims on one node: remove all lower-priority pods, check the fit, then reprieve as many
/// as possible, highest priority first, PDB-protected pods before others.
fn select_victims(
    fw: &Framework,
    ctx: &Ctx,
    state: &CycleState,
    node: &NodeInfo,
    pdbs: &[Pdb],
) -> Option<(Vec<Arc<PodInfo>>, usize)> {
    let pod = ctx.pod;
    let mut trial = node.clone();
    let mut candidates: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if candidates.is_empty() {
        return None;
    }
    for c in &candidates {
        trial.remove_pod(&c.key);
    }
    if !fw.fits_on(ctx, state, &trial).is_success() {
        return None;
    }
    candidates.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.creation.cmp(&b.creation))
    });
    let mut budget = pdbs.to_vec();
    let (violating, ok): (Vec<_>, Vec<_>) = candidates
        .into_iter()
        .partition(|p| violates(&mut budget, p));
    let mut victims = Vec::new();
    let mut violations = 0;
    for (p, is_violating) in violating
        .into_iter()
        .map(|p| (p, true))
        .chain(ok.into_iter().map(|p| (p, false)))
    {
        trial.add_pod(p.clone());
        if !fw.fits_on(ctx, state, &trial).is_success() {
            trial.remove_pod(&p.key);
            violations += is_violating as usize;
            victims.push(p);
        }
    }
    Some((victims, violations))
}

/// Find the best node to preempt on, or the post-filter message explaining why none exists.
pub fn find(fw: &Framework, pod: &PodInfo, cache: &Cache, fit: &FitError) -> Result<Plan, String> {
    let n = cache.num_nodes();
    let summary = |statuses: Vec<Status>| {
        format!(
            "preemption: 0/{n} nodes are available: {}",
            reasons_histogram(statuses.iter())
        )
    };
    let not_helpful = || Status::unresolvable("Preemption", NOT_HELPFUL);
    if fit.pre_filter.is_some() {
        return Err(summary(vec![not_helpful(); n]));
    }
    eligible(pod, cache).map_err(|m| format!("preemption: {m}"))?;
    let ctx = Ctx { pod, cache };
    let state = fw
        .pre_filter(&ctx)
        .map_err(|_| summary(vec![not_helpful(); n]))?;
    let pdbs: Vec<Pdb> = cache.pdbs.values().cloned().collect();
    let mut statuses = Vec::new();
    let mut best: Option<(Plan, (usize, i32, i64, usize))> = None;
    let mut names: Vec<&String> = fit.node_statuses.keys().collect();
    names.sort();
    for name in names {
        let s = &fit.node_statuses[name];
        let node = match cache.node(name) {
            Some(node) if s.code == Code::Unschedulable => node,
            _ => {
                statuses.push(not_helpful());
                continue;
            }
        };
        let Some((victims, violations)) = select_victims(fw, &ctx, &state, node, &pdbs) else {
            statuses.push(Status::unschedulable("Preemption", NO_VICTIMS));
            continue;
        };
        // Upstream pickOneNodeForPreemption: fewest PDB violations, lowest highest-victim
        // priority, smallest priority sum, fewest victims.
        let rank = (
            violations,
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims
                .iter()
                .map(|v| v.priority as i64 + (1i64 << 31))
                .sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(_, r)| rank < *r) {
            best = Some((
                Plan {
                    node: name.clone(),
                    victims,
                    pdb_violations: violations,
                },
                rank,
            ));
        }
    }
    // Nodes that were never evaluated (the filter stopped early) are not candidates.
    match best {
        Some((plan, _)) => Ok(plan),
        None => {
            statuses.resize(n.max(statuses.len()), not_helpful());
            Err(summary(statuses))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Rotor;
    use crate::plugins::{default_framework, testing::*};
    use serde_json::json;

    fn p(
        name: &str,
        node: Option<&str>,
        prio: i32,
        cpu: &str,
        labels: serde_json::Value,
    ) -> PodInfo {
        pod(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"nodeName": node, "priority": prio, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    fn two_nodes() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![serde_json::from_value(json!({"metadata": {"name": "a"}, "status": {"allocatable": {"cpu": "2", "pods": "10"}}})).unwrap(), serde_json::from_value(json!({"metadata": {"name": "b"}, "status": {"allocatable": {"cpu": "2", "pods": "10"}}})).unwrap()]
    }

    fn run(c: &Cache, pod: &PodInfo) -> Result<Plan, String> {
        let fw = default_framework();
        let fit = fw
            .schedule(pod, c, &mut Rotor::default())
            .expect_err("pod must not fit");
        find(&fw, pod, c, &fit)
    }

    #[test]
    fn evicts_the_fewest_lowest_priority_pods() {
        let existing = vec![
            p("a-low", Some("a"), 10, "1", json!({})),
            p("a-low2", Some("a"), 10, "1", json!({})),
            p("b-mid", Some("b"), 50, "1", json!({})),
            p("b-low", Some("b"), 5, "1", json!({})),
        ];
        let c = cache(&two_nodes(), existing);
        let plan = run(&c, &p("high", None, 100, "1", json!({}))).unwrap();
        assert_eq!(plan.node, "b", "b's lowest victim has priority 5");
        assert_eq!(
            plan.victims
                .iter()
                .map(|v| v.name.as_str())
                .collect::<Vec<_>>(),
            ["b-low"]
        );
        let plan = run(&c, &p("high", None, 100, "2", json!({}))).unwrap();
        assert_eq!(
            plan.node, "a",
            "on a the highest victim has priority 10, on b 50"
        );
        assert_eq!(plan.victims.len(), 2);
    }

    #[test]
    fn spares_pdb_protected_pods_where_possible() {
        let existing = vec![
            p("a-guarded", Some("a"), 10, "2", json!({"app": "db"})),
            p("b-free", Some("b"), 20, "2", json!({"app": "web"})),
        ];
        let mut c = cache(&two_nodes(), existing);
        c.pdbs.insert(
            "d/db".into(),
            Pdb {
                namespace: "d".into(),
                selector: LabelSelector::parse("app=db").unwrap(),
                disruptions_allowed: 0,
            },
        );
        let plan = run(&c, &p("high", None, 100, "1", json!({}))).unwrap();
        assert_eq!((plan.node.as_str(), plan.pdb_violations), ("b", 0));
    }

    #[test]
    fn reports_why_preemption_cannot_help() {
        let c = cache(
            &two_nodes(),
            vec![
                p("a-high", Some("a"), 1000, "2", json!({})),
                p("b-high", Some("b"), 1000, "2", json!({})),
            ],
        );
        assert_eq!(
            run(&c, &p("p", None, 100, "1", json!({}))).unwrap_err(),
            format!("preemption: 0/2 nodes are available: 2 {NO_VICTIMS}")
        );
        let sel = pod(json!({"spec": {"nodeSelector": {"x": "y"}, "priority": 100}}));
        assert_eq!(
            run(&c, &sel).unwrap_err(),
            format!("preemption: 0/2 nodes are available: 2 {NOT_HELPFUL}")
        );
        let mut never = p("p", None, 2000, "1", json!({}));
        never.preempt_never = true;
        assert_eq!(
            run(&c, &never).unwrap_err(),
            "preemption: not eligible due to preemptionPolicy=Never"
        );
    }
}
