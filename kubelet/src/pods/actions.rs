//! What to do with a pod, decided from its spec and what the runtime has — upstream's
//! `computePodActions`, as a pure function so every case is a table-driven test.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::runtime_pod::{ContainerInfo, RuntimePod, State};

/// A running container to stop, with the reason recorded in its Killing event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kill {
    pub id: String,
    pub name: String,
    pub message: String,
    /// A failed probe's own terminationGracePeriodSeconds (else the pod's).
    pub grace_period: Option<i64>,
}

/// The actions of one sync, applied in this order: kill single containers (each with its
/// message), kill the pod (every container and the sandbox), create the sandbox, start the next init container or
/// else the app containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodActions {
    pub kill_pod: bool,
    pub create_sandbox: bool,
    pub sandbox_attempt: u32,
    pub next_init: Option<usize>,
    pub start: Vec<usize>,
    pub kill: Vec<Kill>,
    /// An init container failed and the pod's restartPolicy is Never: the pod has failed.
    pub init_failed: bool,
}

pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Upstream's `ShouldContainerBeRestarted` for a container whose newest instance is `c`.
pub fn should_restart(policy: &str, c: &ContainerInfo) -> bool {
    match c.state {
        State::Running => false,
        State::Created | State::Unknown => true,
        State::Exited => match policy {
            "Never" => false,
            "OnFailure" => c.exit_code != 0,
            _ => true,
        },
    }
}

fn succeeded(c: Option<&ContainerInfo>) -> bool {
    c.is_some_and(|c| c.state == State::Exited && c.exit_code == 0)
}

/// Decide. `expected_hash` gives the hash a container's current spec has (a running container
/// created from another spec is restarted); `restart_request` returns a message when a probe
/// asked for the container instance to be restarted.
pub fn compute(
    pod: &Pod,
    rp: &RuntimePod,
    expected_hash: impl Fn(&Container) -> String,
    restart_request: impl Fn(&str) -> Option<String>,
) -> PodActions {
    let mut a = PodActions::default();
    let Some(spec) = pod.spec.as_ref() else {
        return a;
    };
    let policy = restart_policy(pod);
    let init: &[Container] = spec.init_containers.as_deref().unwrap_or(&[]);
    let sandbox = rp.sandbox();

    if sandbox.is_none_or(|s| !s.ready) {
        a.kill_pod = sandbox.is_some();
        a.sandbox_attempt = sandbox.map(|s| s.attempt + 1).unwrap_or(0);
        // A pod that must never restart does not get a second sandbox once it has run.
        if policy == "Never" && sandbox.is_some() && !rp.containers.is_empty() {
            return a;
        }
        a.create_sandbox = true;
        if !init.is_empty() {
            a.next_init = Some(0);
            return a;
        }
        for (i, c) in spec.containers.iter().enumerate() {
            if policy == "OnFailure" && succeeded(rp.latest(&c.name)) {
                continue;
            }
            a.start.push(i);
        }
        return a;
    }

    // Init containers run one at a time, in order, before any app container.
    let mut init_done = true;
    for (i, c) in init.iter().enumerate() {
        match rp.latest(&c.name) {
            None => {
                a.next_init = Some(i);
                init_done = false;
                break;
            }
            Some(s) if s.state == State::Running => {
                init_done = false;
                break;
            }
            Some(s) if s.state == State::Exited && s.exit_code == 0 => continue,
            Some(s) => {
                init_done = false;
                if s.state == State::Exited && policy == "Never" {
                    a.init_failed = true;
                    a.kill_pod = true;
                } else {
                    a.next_init = Some(i);
                }
                break;
            }
        }
    }
    if !init_done {
        return a;
    }

    let mut keep = 0;
    for (i, c) in spec.containers.iter().enumerate() {
        let Some(s) = rp.latest(&c.name) else {
            a.start.push(i);
            continue;
        };
        if s.state != State::Running {
            if should_restart(policy, s) {
                a.start.push(i);
            }
            continue;
        }
        let message = if s.hash != expected_hash(c) {
            Some(format!(
                "Container {} definition changed, will be restarted",
                c.name
            ))
        } else {
            restart_request(&s.id)
        };
        match message {
            Some(message) => {
                a.kill.push(Kill {
                    id: s.id.clone(),
                    name: c.name.clone(),
                    message,
                    grace_period: None,
                });
                if policy != "Never" {
                    a.start.push(i);
                }
            }
            None => keep += 1,
        }
    }
    if keep == 0 && a.start.is_empty() {
        // Everything has finished for good: the sandbox is not needed any more.
        a.kill_pod = true;
    }
    a
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

    fn sandbox(ready: bool, attempt: u32) -> SandboxInfo {
        SandboxInfo {
            id: format!("sb{attempt}"),
            attempt,
            ready,
            ..Default::default()
        }
    }

    fn ctr(name: &str, state: State, exit: i32) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{name}"),
            name: name.into(),
            state,
            exit_code: exit,
            hash: "h".into(),
            ..Default::default()
        }
    }

    fn rp(sb: Option<SandboxInfo>, cs: Vec<ContainerInfo>) -> RuntimePod {
        RuntimePod {
            sandboxes: sb.into_iter().collect(),
            containers: cs,
        }
    }

    fn run(p: &Pod, r: &RuntimePod) -> PodActions {
        compute(p, r, |_| "h".into(), |_| None)
    }

    #[test]
    fn decisions() {
        use State::*;
        struct Case {
            name: &'static str,
            pod: Pod,
            rp: RuntimePod,
            want: PodActions,
        }
        let cases = vec![
            Case {
                name: "new pod: sandbox then all containers",
                pod: pod("Always", &[], &["a", "b"]),
                rp: rp(None, vec![]),
                want: PodActions {
                    create_sandbox: true,
                    start: vec![0, 1],
                    ..Default::default()
                },
            },
            Case {
                name: "new pod with init containers: first init only",
                pod: pod("Always", &["i1", "i2"], &["a"]),
                rp: rp(None, vec![]),
                want: PodActions {
                    create_sandbox: true,
                    next_init: Some(0),
                    ..Default::default()
                },
            },
            Case {
                name: "init 1 done: init 2 next",
                pod: pod("Always", &["i1", "i2"], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("i1", Exited, 0)]),
                want: PodActions {
                    next_init: Some(1),
                    ..Default::default()
                },
            },
            Case {
                name: "init running: wait",
                pod: pod("Always", &["i1"], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("i1", Running, 0)]),
                want: PodActions::default(),
            },
            Case {
                name: "init failed, Never: pod failed",
                pod: pod("Never", &["i1"], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("i1", Exited, 1)]),
                want: PodActions {
                    init_failed: true,
                    kill_pod: true,
                    ..Default::default()
                },
            },
            Case {
                name: "init failed, OnFailure: retried",
                pod: pod("OnFailure", &["i1"], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("i1", Exited, 1)]),
                want: PodActions {
                    next_init: Some(0),
                    ..Default::default()
                },
            },
            Case {
                name: "init done: app containers",
                pod: pod("Always", &["i1"], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("i1", Exited, 0)]),
                want: PodActions {
                    start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "running pod: nothing",
                pod: pod("Always", &[], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("a", Running, 0)]),
                want: PodActions::default(),
            },
            Case {
                name: "exited, Always: restart",
                pod: pod("Always", &[], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("a", Exited, 0)]),
                want: PodActions {
                    start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "exited 0, OnFailure: done, sandbox stopped",
                pod: pod("OnFailure", &[], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("a", Exited, 0)]),
                want: PodActions {
                    kill_pod: true,
                    ..Default::default()
                },
            },
            Case {
                name: "exited 1, OnFailure: restart",
                pod: pod("OnFailure", &[], &["a"]),
                rp: rp(Some(sandbox(true, 0)), vec![ctr("a", Exited, 1)]),
                want: PodActions {
                    start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "exited, Never, other still running: keep",
                pod: pod("Never", &[], &["a", "b"]),
                rp: rp(
                    Some(sandbox(true, 0)),
                    vec![ctr("a", Exited, 1), ctr("b", Running, 0)],
                ),
                want: PodActions::default(),
            },
            Case {
                name: "sandbox died: new sandbox, attempt+1, restart all",
                pod: pod("Always", &[], &["a"]),
                rp: rp(Some(sandbox(false, 2)), vec![ctr("a", Exited, 137)]),
                want: PodActions {
                    kill_pod: true,
                    create_sandbox: true,
                    sandbox_attempt: 3,
                    start: vec![0],
                    ..Default::default()
                },
            },
            Case {
                name: "sandbox died, Never, after running: no new sandbox",
                pod: pod("Never", &[], &["a"]),
                rp: rp(Some(sandbox(false, 0)), vec![ctr("a", Exited, 137)]),
                want: PodActions {
                    kill_pod: true,
                    sandbox_attempt: 1,
                    ..Default::default()
                },
            },
            Case {
                name: "sandbox died, OnFailure: succeeded containers not restarted",
                pod: pod("OnFailure", &[], &["a", "b"]),
                rp: rp(
                    Some(sandbox(false, 0)),
                    vec![ctr("a", Exited, 0), ctr("b", Exited, 2)],
                ),
                want: PodActions {
                    kill_pod: true,
                    create_sandbox: true,
                    sandbox_attempt: 1,
                    start: vec![1],
                    ..Default::default()
                },
            },
        ];
        for c in cases {
            assert_eq!(run(&c.pod, &c.rp), c.want, "{}", c.name);
        }
    }

    #[test]
    fn changed_spec_and_failed_liveness_restart_the_container() {
        let p = pod("Always", &[], &["a", "b"]);
        let r = rp(
            Some(sandbox(true, 0)),
            vec![ctr("a", State::Running, 0), ctr("b", State::Running, 0)],
        );
        let got = compute(
            &p,
            &r,
            |c| {
                if c.name == "a" {
                    "new".into()
                } else {
                    "h".into()
                }
            },
            |id| {
                (id == "id-b")
                    .then(|| "Container b failed liveness probe, will be restarted".into())
            },
        );
        assert_eq!(got.start, vec![0, 1]);
        assert_eq!(got.kill.len(), 2);
        assert_eq!(
            got.kill[0].message,
            "Container a definition changed, will be restarted"
        );
        assert!(got.kill[1].message.contains("liveness"));

        let never = pod("Never", &[], &["b"]);
        let r = rp(Some(sandbox(true, 0)), vec![ctr("b", State::Running, 0)]);
        let got = compute(&never, &r, |_| "h".into(), |_| Some("liveness".into()));
        assert_eq!(got.kill.len(), 1);
        assert!(got.start.is_empty());
        assert!(got.kill_pod, "nothing left to run: the sandbox goes too");
    }
}
