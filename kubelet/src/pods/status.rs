//! The pod status the kubelet reports, computed from the spec, the runtime's view, probe
//! results and the last sync's waiting reasons — upstream's `generateAPIPodStatus` and
//! `getPhase`, as a pure function.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::actions::restart_policy;
use super::runtime_pod::{ContainerInfo, RuntimePod, State};
use crate::cgroups;

/// A container that is not running, and why (the last sync's `ErrImagePull`,
/// `CrashLoopBackOff`, `CreateContainerConfigError`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

pub struct Input<'a> {
    pub pod: &'a Pod,
    pub rp: &'a RuntimePod,
    pub waiting: &'a HashMap<String, Waiting>,
    pub ready: &'a dyn Fn(&str) -> bool,
    pub started: &'a dyn Fn(&str) -> bool,
    pub host_ip: &'a str,
    pub now: Timestamp,
    /// A failed init container with restartPolicy Never: the pod failed.
    pub init_failed: bool,
    /// Runtime name for container ids (`containerd://<id>`).
    pub runtime_name: &'a str,
}

fn ts(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| Timestamp::from_nanosecond(nanos as i128).ok())
        .flatten()
        .map(Time)
}

fn terminated(c: &ContainerInfo, runtime: &str) -> ContainerStateTerminated {
    let reason = if !c.reason.is_empty() {
        c.reason.clone()
    } else if c.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: c.exit_code,
        reason: Some(reason),
        message: (!c.message.is_empty()).then(|| c.message.clone()),
        started_at: ts(c.started_at),
        finished_at: ts(c.finished_at),
        container_id: Some(format!("{runtime}://{}", c.id)),
        signal: None,
    }
}

fn container_status(spec: &Container, inp: &Input, default_waiting: &str) -> ContainerStatus {
    let latest = inp.rp.latest(&spec.name);
    let waiting = inp.waiting.get(&spec.name);
    let runtime = inp.runtime_name;
    let mut st = ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id: latest.map(|c| c.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|c| format!("{runtime}://{}", c.id)),
        restart_count: latest.map(|c| c.restart_count).unwrap_or(0),
        ready: false,
        started: Some(false),
        ..Default::default()
    };
    let waiting_state = |reason: &str, message: Option<&str>| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message: message.map(str::to_string),
        }),
        ..Default::default()
    };
    match latest {
        Some(c) if c.state == State::Running => {
            st.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: ts(c.started_at),
                }),
                ..Default::default()
            });
            st.started = Some((inp.started)(&spec.name));
            st.ready = (inp.ready)(&spec.name);
            if let Some(prev) = inp.rp.previous(&spec.name) {
                if prev.state == State::Exited {
                    st.last_state = Some(ContainerState {
                        terminated: Some(terminated(prev, runtime)),
                        ..Default::default()
                    });
                }
            }
        }
        Some(c) if c.state == State::Exited => match waiting {
            Some(w) => {
                st.state = Some(waiting_state(&w.reason, Some(&w.message)));
                st.last_state = Some(ContainerState {
                    terminated: Some(terminated(c, runtime)),
                    ..Default::default()
                });
            }
            None => {
                st.state = Some(ContainerState {
                    terminated: Some(terminated(c, runtime)),
                    ..Default::default()
                });
                if let Some(prev) = inp.rp.previous(&spec.name) {
                    if prev.state == State::Exited {
                        st.last_state = Some(ContainerState {
                            terminated: Some(terminated(prev, runtime)),
                            ..Default::default()
                        });
                    }
                }
            }
        },
        other => {
            let (reason, message) = match waiting {
                Some(w) => (w.reason.as_str(), Some(w.message.as_str())),
                None => (default_waiting, None),
            };
            st.state = Some(waiting_state(reason, message));
            if let Some(c) = other {
                if c.state == State::Created {
                    st.container_id = Some(format!("{runtime}://{}", c.id));
                }
            }
            if let Some(prev) = inp.rp.previous(&spec.name) {
                if prev.state == State::Exited {
                    st.last_state = Some(ContainerState {
                        terminated: Some(terminated(prev, runtime)),
                        ..Default::default()
                    });
                }
            }
        }
    }
    if st.last_state.is_none() {
        st.last_state = Some(ContainerState::default());
    }
    st
}

/// Upstream's `getPhase`.
pub fn phase(
    pod: &Pod,
    statuses: &[ContainerStatus],
    init_pending: bool,
    init_failed: bool,
) -> &'static str {
    let policy = restart_policy(pod);
    if init_failed && policy == "Never" {
        return "Failed";
    }
    if init_pending {
        return "Pending";
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut unknown) = (0, 0, 0, 0, 0);
    let spec_containers = pod.spec.as_ref().map(|s| s.containers.len()).unwrap_or(0);
    for s in statuses {
        let state = s.state.clone().unwrap_or_default();
        if state.running.is_some() {
            running += 1;
        } else if let Some(t) = &state.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if s.last_state
                .as_ref()
                .is_some_and(|l| l.terminated.is_some())
            {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }
    unknown += spec_containers.saturating_sub(statuses.len());
    if waiting > 0 {
        "Pending"
    } else if running > 0 && unknown == 0 {
        "Running"
    } else if running == 0 && stopped > 0 && unknown == 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn condition(
    prev: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let last = prev.iter().find(|c| c.type_ == type_);
    let last_transition_time = match last {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_transition_time,
        last_probe_time: None,
        observed_generation: None,
    }
}

/// The whole status. Fields the kubelet does not own (nominatedNodeName, the PodScheduled
/// condition, other components' conditions) are kept from the current status.
/// How long a container meant for one attach (`stdinOnce`, as `kubectl run -i`/`-it` creates)
/// must have been running before the kubelet reports it Running.
pub const ATTACH_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether to hold back the status report that would first show a `stdinOnce` container as
/// running, and for how long (nanosecond clock of the runtime's `started_at`).
///
/// `kubectl run -i` waits for the pod to be Running, then attaches; a container that printed
/// its output before the attach loses it (CRI attach does not replay; upstream
/// kubernetes#27264). Upstream's kubelet first reports a started container after its next
/// relist (up to 1 s later), so a command that ends within that second is reported
/// terminated, and kubectl prints its logs instead of attaching. This kubelet reports a
/// container the moment it starts, which would make that race the normal case; for these
/// containers only, the first Running report waits until the container has run for
/// [`ATTACH_HOLD`] (or has ended, which the relist reports as usual). Everything else is
/// reported at once.
pub fn attach_hold(pod: &Pod, rp: &RuntimePod, now_nanos: i64) -> Option<std::time::Duration> {
    let spec = pod.spec.as_ref()?;
    let reported_running = |name: &str| {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|v| v.iter().find(|c| c.name == name))
            .and_then(|c| c.state.as_ref())
            .is_some_and(|s| s.running.is_some())
    };
    let hold = ATTACH_HOLD.as_nanos() as i64;
    spec.containers
        .iter()
        .filter(|c| c.stdin_once == Some(true) && !reported_running(&c.name))
        .filter_map(|c| rp.latest(&c.name).filter(|i| i.state == State::Running))
        .map(|i| hold - (now_nanos - i.started_at))
        .filter(|left| *left > 0)
        .max()
        .map(|left| std::time::Duration::from_nanos(left.min(hold) as u64))
}

pub fn compute(inp: &Input) -> PodStatus {
    let pod = inp.pod;
    let spec = pod.spec.clone().unwrap_or_default();
    let old = pod.status.clone().unwrap_or_default();
    let old_conditions = old.conditions.clone().unwrap_or_default();

    let init: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
    let mut init_pending = false;
    let mut incomplete_init = Vec::new();
    for c in &init {
        let done = inp
            .rp
            .latest(&c.name)
            .is_some_and(|s| s.state == State::Exited && s.exit_code == 0);
        if !done {
            init_pending = true;
            incomplete_init.push(c.name.clone());
        }
    }
    let init_statuses: Vec<ContainerStatus> = init
        .iter()
        .map(|c| container_status(c, inp, "PodInitializing"))
        .map(|mut s| {
            // Finished init containers count as ready, as upstream reports them.
            if s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
            {
                s.ready = true;
            }
            s
        })
        .collect();
    let app_default = if init_pending {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, inp, app_default))
        .collect();

    let phase = match old.phase.as_deref() {
        Some(p @ ("Succeeded" | "Failed")) => {
            if p == "Succeeded" {
                "Succeeded"
            } else {
                "Failed"
            }
        }
        _ => phase(pod, &statuses, init_pending, inp.init_failed),
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");

    let unready: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    let sandbox_ready = inp.rp.sandbox().is_some_and(|s| s.ready);
    let host_network = spec.host_network.unwrap_or(false);

    let mut conditions: Vec<PodCondition> = Vec::new();
    conditions.push(condition(
        &old_conditions,
        "PodReadyToStartContainers",
        sandbox_ready,
        None,
        None,
        inp.now,
    ));
    conditions.push(condition(
        &old_conditions,
        "Initialized",
        !init_pending,
        Some("ContainersNotInitialized".into()),
        Some(format!(
            "containers with incomplete status: [{}]",
            incomplete_init.join(" ")
        )),
        inp.now,
    ));
    let (reason, message) = if terminal {
        ("PodCompleted".to_string(), None)
    } else {
        (
            "ContainersNotReady".to_string(),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let containers_ready = unready.is_empty() && !terminal;
    conditions.push(condition(
        &old_conditions,
        "Ready",
        containers_ready,
        Some(reason.clone()),
        message.clone(),
        inp.now,
    ));
    conditions.push(condition(
        &old_conditions,
        "ContainersReady",
        containers_ready,
        Some(reason),
        message,
        inp.now,
    ));
    // Keep conditions owned by others (PodScheduled, DisruptionTarget, readiness gates...).
    for c in &old_conditions {
        if !conditions.iter().any(|n| n.type_ == c.type_) {
            conditions.push(c.clone());
        }
    }
    let order = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ];
    conditions.sort_by_key(|c| {
        order
            .iter()
            .position(|o| *o == c.type_)
            .unwrap_or(order.len())
    });

    let (pod_ip, pod_ips) = if host_network {
        (
            Some(inp.host_ip.to_string()).filter(|s| !s.is_empty()),
            vec![inp.host_ip.to_string()],
        )
    } else {
        match inp
            .rp
            .sandbox()
            .and_then(|s| s.ip.clone().map(|ip| (ip, s.additional_ips.clone())))
        {
            Some((ip, extra)) => (Some(ip.clone()), std::iter::once(ip).chain(extra).collect()),
            None => (
                old.pod_ip.clone(),
                old.pod_ips
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| p.ip)
                    .collect(),
            ),
        }
    };
    let pod_ips: Vec<PodIP> = pod_ips
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|ip| PodIP { ip })
        .collect();

    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: Some(inp.host_ip.to_string()).filter(|s| !s.is_empty()),
        host_ips: (!inp.host_ip.is_empty()).then(|| {
            vec![HostIP {
                ip: inp.host_ip.to_string(),
            }]
        }),
        pod_ip,
        pod_ips: (!pod_ips.is_empty()).then_some(pod_ips),
        start_time: old.start_time.clone().or(Some(Time(inp.now))),
        qos_class: Some(cgroups::qos_class(&spec).as_str().to_string()),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        nominated_node_name: old.nominated_node_name.clone(),
        message: old.message.clone(),
        reason: old.reason.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::runtime_pod::SandboxInfo;
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    fn pod(policy: &str, init: &[&str], containers: &[&str]) -> Pod {
        let c = |n: &&str| Container {
            name: n.to_string(),
            image: Some("busybox".into()),
            ..Default::default()
        };
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: (!init.is_empty()).then(|| init.iter().map(c).collect()),
                containers: containers.iter().map(c).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ctr(name: &str, state: State, exit: i32, restarts: i32) -> ContainerInfo {
        ContainerInfo {
            id: format!("{name}-{restarts}"),
            name: name.into(),
            state,
            exit_code: exit,
            restart_count: restarts,
            started_at: 1_000_000_000,
            finished_at: if state == State::Exited {
                2_000_000_000
            } else {
                0
            },
            ..Default::default()
        }
    }

    fn status(p: &Pod, cs: Vec<ContainerInfo>, waiting: &[(&str, &str)], ready: bool) -> PodStatus {
        let rp = RuntimePod {
            sandboxes: vec![SandboxInfo {
                id: "sb".into(),
                ready: true,
                ip: Some("10.244.0.5".into()),
                ..Default::default()
            }],
            containers: cs,
        };
        let waiting: HashMap<String, Waiting> = waiting
            .iter()
            .map(|(n, r)| {
                (
                    n.to_string(),
                    Waiting {
                        reason: r.to_string(),
                        message: format!("{r} message"),
                    },
                )
            })
            .collect();
        let ready_fn = move |_: &str| ready;
        let started = |_: &str| true;
        compute(&Input {
            pod: p,
            rp: &rp,
            waiting: &waiting,
            ready: &ready_fn,
            started: &started,
            host_ip: "192.168.1.10",
            now: Timestamp::from_second(1_700_000_000).unwrap(),
            init_failed: false,
            runtime_name: "containerd",
        })
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn running_and_ready() {
        let p = pod("Always", &[], &["web"]);
        let s = status(&p, vec![ctr("web", State::Running, 0, 0)], &[], true);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.5"));
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.10"));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(cond(&s, "Ready").status, "True");
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("containerd://web-0"));
    }

    #[test]
    fn not_ready_names_the_containers() {
        let p = pod("Always", &[], &["web", "side"]);
        let s = status(
            &p,
            vec![
                ctr("web", State::Running, 0, 0),
                ctr("side", State::Running, 0, 0),
            ],
            &[],
            false,
        );
        let r = cond(&s, "Ready");
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some("containers with unready status: [web side]")
        );
    }

    #[test]
    fn crash_loop_is_waiting_with_last_state() {
        let p = pod("Always", &[], &["app"]);
        let s = status(
            &p,
            vec![
                ctr("app", State::Exited, 1, 3),
                ctr("app", State::Exited, 1, 2),
            ],
            &[("app", "CrashLoopBackOff")],
            false,
        );
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 3);
        let w = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(w.reason.as_deref(), Some("CrashLoopBackOff"));
        let t = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (1, Some("Error")));
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn phases() {
        let cases = [
            ("Never", vec![ctr("a", State::Exited, 0, 0)], "Succeeded"),
            ("Never", vec![ctr("a", State::Exited, 2, 0)], "Failed"),
            (
                "OnFailure",
                vec![ctr("a", State::Exited, 0, 0)],
                "Succeeded",
            ),
            ("Always", vec![ctr("a", State::Exited, 0, 0)], "Running"),
            ("Always", vec![], "Pending"),
        ];
        for (policy, cs, want) in cases {
            let p = pod(policy, &[], &["a"]);
            let s = status(&p, cs.clone(), &[], false);
            assert_eq!(s.phase.as_deref(), Some(want), "{policy} {cs:?}");
        }
        let s = status(
            &pod("Always", &[], &["a"]),
            vec![],
            &[("a", "ErrImagePull")],
            false,
        );
        let w = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
    }

    #[test]
    fn init_containers_gate_initialized() {
        let p = pod("Always", &["setup"], &["app"]);
        let s = status(&p, vec![ctr("setup", State::Running, 0, 0)], &[], false);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let c = cond(&s, "Initialized");
        assert_eq!(c.status, "False");
        assert_eq!(
            c.message.as_deref(),
            Some("containers with incomplete status: [setup]")
        );
        let app = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            app.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("PodInitializing")
        );
        let s = status(
            &p,
            vec![
                ctr("app", State::Running, 0, 0),
                ctr("setup", State::Exited, 0, 0),
            ],
            &[],
            true,
        );
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn attach_hold_delays_only_a_fresh_stdin_once_container() {
        let mut p = pod("Never", &[], &["run"]);
        let started = 1_000_000_000;
        let rp = |state| RuntimePod {
            containers: vec![ctr("run", state, 0, 0)],
            ..Default::default()
        };
        // An ordinary container is reported at once.
        assert_eq!(attach_hold(&p, &rp(State::Running), started + 1), None);
        p.spec.as_mut().unwrap().containers[0].stdin = Some(true);
        p.spec.as_mut().unwrap().containers[0].stdin_once = Some(true);
        // Fresh: held for the rest of the second.
        assert_eq!(
            attach_hold(&p, &rp(State::Running), started + 300_000_000),
            Some(std::time::Duration::from_millis(700))
        );
        // Ran for the whole second, or already ended: reported.
        assert_eq!(
            attach_hold(
                &p,
                &rp(State::Running),
                started + ATTACH_HOLD.as_nanos() as i64
            ),
            None
        );
        assert_eq!(attach_hold(&p, &rp(State::Exited), started + 1), None);
        // Already reported running (e.g. a kubelet restart): never held again.
        p.status = Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "run".into(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(attach_hold(&p, &rp(State::Running), started + 1), None);
    }
}
