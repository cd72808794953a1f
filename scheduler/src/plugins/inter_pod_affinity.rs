//! InterPodAffinity: required pod affinity, required anti-affinity and existing pods' required
//! anti-affinity as a filter; preferred terms (both the incoming pod's and, symmetrically,
//! existing pods') as a score. Domains are (topologyKey, node label value) pairs.

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{Ctx, CycleState, Plugin, Status, MAX_NODE_SCORE};
use std::collections::HashMap;

pub const NAME: &str = "InterPodAffinity";
pub const REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// Upstream `hardPodAffinityWeight` default: existing pods' required affinity counts this much.
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub struct InterPodAffinity;

/// Summed preference weights per domain.
pub(crate) struct ScoreState(HashMap<Domain, i64>);

type Domain = (String, String);

#[derive(Default)]
pub(crate) struct FilterState {
    existing_anti: HashMap<Domain, i64>,
    affinity: HashMap<Domain, i64>,
    anti: HashMap<Domain, i64>,
}

fn domain_of(node: &NodeInfo, key: &str) -> Option<Domain> {
    node.labels.get(key).map(|v| (key.to_string(), v.clone()))
}

fn has_domain(map: &HashMap<Domain, i64>, node: &NodeInfo, key: &str) -> bool {
    node.labels.get(key).is_some_and(|v| {
        map.get(&(key.to_string(), v.clone()))
            .is_some_and(|c| *c > 0)
    })
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, ctx: &Ctx, state: &mut CycleState) -> Result<(), Status> {
        let pod = ctx.pod;
        if ctx.cache.num_affinity_pods() == 0
            && pod.required_affinity.is_empty()
            && pod.required_anti_affinity.is_empty()
        {
            return Ok(());
        }
        let mut st = FilterState::default();
        for n in ctx.cache.nodes().iter().filter(|n| n.present) {
            for e in &n.affinity_pods {
                for t in e
                    .required_anti_affinity
                    .iter()
                    .filter(|t| t.matches(&e.namespace, pod))
                {
                    if let Some(d) = domain_of(n, &t.topology_key) {
                        *st.existing_anti.entry(d).or_default() += 1;
                    }
                }
            }
            if pod.required_affinity.is_empty() && pod.required_anti_affinity.is_empty() {
                continue;
            }
            for e in n.pods.iter().filter(|e| !e.terminating) {
                if !pod.required_affinity.is_empty()
                    && pod
                        .required_affinity
                        .iter()
                        .all(|t| t.matches(&pod.namespace, e))
                {
                    for t in &pod.required_affinity {
                        if let Some(d) = domain_of(n, &t.topology_key) {
                            *st.affinity.entry(d).or_default() += 1;
                        }
                    }
                }
                for t in pod
                    .required_anti_affinity
                    .iter()
                    .filter(|t| t.matches(&pod.namespace, e))
                {
                    if let Some(d) = domain_of(n, &t.topology_key) {
                        *st.anti.entry(d).or_default() += 1;
                    }
                }
            }
        }
        state.affinity_filter = Some(st);
        Ok(())
    }

    fn filter(&self, ctx: &Ctx, state: &CycleState, node: &NodeInfo) -> Status {
        let Some(st) = &state.affinity_filter else {
            return Status::success();
        };
        let pod = ctx.pod;
        if st
            .existing_anti
            .iter()
            .any(|((k, v), c)| *c > 0 && node.labels.get(k) == Some(v))
        {
            return Status::unschedulable(NAME, REASON_EXISTING_ANTI_AFFINITY);
        }
        if pod
            .required_anti_affinity
            .iter()
            .any(|t| has_domain(&st.anti, node, &t.topology_key))
        {
            return Status::unschedulable(NAME, REASON_ANTI_AFFINITY);
        }
        if !pod.required_affinity.is_empty() {
            let all = pod
                .required_affinity
                .iter()
                .all(|t| has_domain(&st.affinity, node, &t.topology_key));
            // The first pod of a group that selects itself may go anywhere with the keys.
            let first_of_group = st.affinity.is_empty()
                && pod.required_affinity.iter().all(|t| {
                    t.matches(&pod.namespace, pod) && node.labels.contains_key(&t.topology_key)
                });
            if !all && !first_of_group {
                return Status::unresolvable(NAME, REASON_AFFINITY);
            }
        }
        Status::success()
    }

    fn pre_score(&self, ctx: &Ctx, state: &mut CycleState, _nodes: &[&NodeInfo]) {
        let pod = ctx.pod;
        let own_prefs =
            !(pod.preferred_affinity.is_empty() && pod.preferred_anti_affinity.is_empty());
        // Nothing to score without the pod's own preferences or placed pods with terms; this
        // skips a pass over every node in the common case.
        if !own_prefs && ctx.cache.num_affinity_pods() == 0 {
            return;
        }
        let mut scores: HashMap<Domain, i64> = HashMap::new();
        let mut add = |n: &NodeInfo, key: &str, w: i64| {
            if let Some(d) = domain_of(n, key) {
                *scores.entry(d).or_default() += w;
            }
        };
        for n in ctx.cache.nodes().iter().filter(|n| n.present) {
            if own_prefs {
                for e in &n.pods {
                    for t in pod
                        .preferred_affinity
                        .iter()
                        .filter(|t| t.matches(&pod.namespace, e))
                    {
                        add(n, &t.topology_key, t.weight as i64);
                    }
                    for t in pod
                        .preferred_anti_affinity
                        .iter()
                        .filter(|t| t.matches(&pod.namespace, e))
                    {
                        add(n, &t.topology_key, -(t.weight as i64));
                    }
                }
            }
            for e in &n.affinity_pods {
                for t in e
                    .required_affinity
                    .iter()
                    .filter(|t| t.matches(&e.namespace, pod))
                {
                    add(n, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                }
                for t in e
                    .preferred_affinity
                    .iter()
                    .filter(|t| t.matches(&e.namespace, pod))
                {
                    add(n, &t.topology_key, t.weight as i64);
                }
                for t in e
                    .preferred_anti_affinity
                    .iter()
                    .filter(|t| t.matches(&e.namespace, pod))
                {
                    add(n, &t.topology_key, -(t.weight as i64));
                }
            }
        }
        if !scores.is_empty() {
            state.affinity_score = Some(ScoreState(scores));
        }
    }

    fn score(&self, _: &Ctx, state: &CycleState, node: &NodeInfo) -> i64 {
        let Some(ScoreState(scores)) = &state.affinity_score else {
            return 0;
        };
        scores
            .iter()
            .filter(|((k, v), _)| node.labels.get(k) == Some(v))
            .map(|(_, s)| *s)
            .sum()
    }

    fn normalize(&self, _: &Ctx, state: &CycleState, scores: &mut [i64]) {
        if state.affinity_score.is_none() {
            return;
        }
        let (min, max) = scores
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        for s in scores.iter_mut() {
            *s = if max > min {
                MAX_NODE_SCORE * (*s - min) / (max - min)
            } else {
                0
            };
        }
    }
}

/// Whether `pod` has terms this plugin evaluates (used to skip work in callers' fast paths).
pub fn relevant(pod: &PodInfo) -> bool {
    pod.has_affinity()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::*;
    use serde_json::json;

    fn nodes() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            labelled("a1", json!({"zone": "a", "host": "a1"})),
            labelled("a2", json!({"zone": "a", "host": "a2"})),
            labelled("b1", json!({"zone": "b", "host": "b1"})),
        ]
    }

    fn term(app: &str, key: &str) -> serde_json::Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    #[test]
    fn required_affinity_and_anti_affinity_filter() {
        let db = placed("db", "a1", json!({"app": "db"}));
        let cases = [
            (
                "affinity to db's zone",
                json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
                vec![db.clone()],
                vec!["a1", "a2"],
            ),
            (
                "affinity to db's host",
                json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "host")]}}),
                vec![db.clone()],
                vec!["a1"],
            ),
            (
                "affinity, no db anywhere",
                json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
                vec![],
                vec![],
            ),
            (
                "anti-affinity to db's zone",
                json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
                vec![db.clone()],
                vec!["b1"],
            ),
            (
                "anti-affinity to db's host",
                json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "host")]}}),
                vec![db.clone()],
                vec!["a2", "b1"],
            ),
            (
                "no terms",
                json!({}),
                vec![db.clone()],
                vec!["a1", "a2", "b1"],
            ),
        ];
        for (name, aff, pods, want) in cases {
            let c = cache(&nodes(), pods);
            let p = pod(json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": aff}}));
            assert_eq!(passing(&InterPodAffinity, &p, &c), want, "{name}");
        }
        // The first pod of a self-affine group may go anywhere.
        let c = cache(&nodes(), vec![]);
        let p = pod(
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}}}),
        );
        assert_eq!(passing(&InterPodAffinity, &p, &c), vec!["a1", "a2", "b1"]);
        let c = cache(&nodes(), vec![]);
        let p = pod(
            json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}}}),
        );
        assert_eq!(
            filter_all(&InterPodAffinity, &p, &c)[0].1,
            Status::unresolvable(NAME, REASON_AFFINITY)
        );
    }

    #[test]
    fn existing_pods_anti_affinity_is_symmetric() {
        let guard = pod(
            json!({"metadata": {"name": "g", "labels": {"app": "guard"}}, "spec": {"nodeName": "a1", "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("web", "zone")]}}}}),
        );
        let c = cache(&nodes(), vec![guard]);
        let web = pod(json!({"metadata": {"labels": {"app": "web"}}}));
        assert_eq!(passing(&InterPodAffinity, &web, &c), vec!["b1"]);
        assert_eq!(
            filter_all(&InterPodAffinity, &web, &c)[0].1,
            Status::unschedulable(NAME, REASON_EXISTING_ANTI_AFFINITY)
        );
        let other = pod(json!({"metadata": {"labels": {"app": "other"}}}));
        assert_eq!(
            passing(&InterPodAffinity, &other, &c),
            vec!["a1", "a2", "b1"]
        );
        // Another namespace is not selected by a term without namespaces.
        let web_elsewhere = pod(json!({"metadata": {"namespace": "x", "labels": {"app": "web"}}}));
        assert_eq!(
            passing(&InterPodAffinity, &web_elsewhere, &c),
            vec!["a1", "a2", "b1"]
        );
    }

    #[test]
    fn preferred_terms_score_domains() {
        let c = cache(&nodes(), vec![placed("db", "a1", json!({"app": "db"}))]);
        let pref = |kind: &str| {
            pod(
                json!({"spec": {"affinity": {kind: {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term("db", "zone")}]}}}}),
            )
        };
        assert_eq!(
            score_all(&InterPodAffinity, &pref("podAffinity"), &c),
            vec![("a1".into(), 100), ("a2".into(), 100), ("b1".into(), 0)]
        );
        assert_eq!(
            score_all(&InterPodAffinity, &pref("podAntiAffinity"), &c),
            vec![("a1".into(), 0), ("a2".into(), 0), ("b1".into(), 100)]
        );
        assert_eq!(
            score_all(&InterPodAffinity, &pod(json!({})), &c),
            vec![("a1".into(), 0), ("a2".into(), 0), ("b1".into(), 0)]
        );
    }
}
