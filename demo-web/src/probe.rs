//! Liveness and readiness toggles: what `/healthy` and `/ready` answer, and how requests change it.
//!
//! A probe is healthy until told otherwise. `?fail=1` makes it fail until `?ok=1`; `?failnext=N`
//! makes the next N plain checks fail and then recovers on its own, as kuard's "fail next N" does;
//! a POST without parameters flips it. A request that changes the state answers with the new
//! state but does not count as a check, so `failnext` is consumed only by real probes.

use std::collections::HashMap;

/// One change requested through the query string or the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Fail every check until [`Control::Ok`].
    Fail,
    /// Be healthy again (clears `failnext` too).
    Ok,
    /// Fail the next N checks, then recover.
    FailNext(u32),
    /// Flip between failing and healthy.
    Toggle,
}

/// A query string that asks for something impossible.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("failnext must be a non-negative integer, got {0:?}")]
pub struct BadControl(pub String);

fn truthy(v: &str) -> bool {
    !matches!(
        v.to_ascii_lowercase().as_str(),
        "0" | "false" | "no" | "off"
    )
}

/// The changes a request asks for, in the order they apply. A POST with none of the known
/// parameters is a toggle; a GET with none is a plain check (empty list).
pub fn controls(post: bool, query: &HashMap<String, String>) -> Result<Vec<Control>, BadControl> {
    let mut out = Vec::new();
    if let Some(v) = query.get("fail") {
        out.push(if truthy(v) {
            Control::Fail
        } else {
            Control::Ok
        });
    }
    if let Some(v) = query.get("ok") {
        out.push(if truthy(v) {
            Control::Ok
        } else {
            Control::Fail
        });
    }
    if let Some(v) = query.get("failnext") {
        let n = v.trim().parse().map_err(|_| BadControl(v.clone()))?;
        out.push(Control::FailNext(n));
    }
    if out.is_empty() && post {
        out.push(Control::Toggle);
    }
    Ok(out)
}

/// The state of one probe.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProbeState {
    failing: bool,
    fail_next: u32,
}

impl ProbeState {
    pub fn apply(&mut self, control: Control) {
        match control {
            Control::Fail => self.failing = true,
            Control::Ok => {
                self.failing = false;
                self.fail_next = 0;
            }
            Control::FailNext(n) => self.fail_next = n,
            Control::Toggle => {
                if self.is_failing() {
                    self.apply(Control::Ok);
                } else {
                    self.failing = true;
                }
            }
        }
    }

    /// Whether the next check would fail (does not consume `failnext`).
    pub fn is_failing(&self) -> bool {
        self.failing || self.fail_next > 0
    }

    /// One real probe: true when healthy. Consumes one pending `failnext`.
    pub fn check(&mut self) -> bool {
        if self.failing {
            return false;
        }
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (POST?, query, expected controls)
    type Case<'a> = (bool, &'a [(&'a str, &'a str)], Vec<Control>);

    #[test]
    fn requests_map_to_controls() {
        let cases: &[Case] = &[
            (false, &[], vec![]),
            (true, &[], vec![Control::Toggle]),
            (false, &[("fail", "1")], vec![Control::Fail]),
            (false, &[("fail", "")], vec![Control::Fail]),
            (false, &[("fail", "false")], vec![Control::Ok]),
            (false, &[("ok", "1")], vec![Control::Ok]),
            (false, &[("ok", "0")], vec![Control::Fail]),
            (true, &[("ok", "1")], vec![Control::Ok]),
            (false, &[("failnext", "3")], vec![Control::FailNext(3)]),
            (false, &[("other", "x")], vec![]),
        ];
        for (post, query, want) in cases {
            assert_eq!(
                &controls(*post, &q(query)).unwrap(),
                want,
                "{post} {query:?}"
            );
        }
        assert_eq!(
            controls(false, &q(&[("failnext", "-1")])),
            Err(BadControl("-1".into()))
        );
    }

    #[test]
    fn fail_sticks_until_ok() {
        let mut s = ProbeState::default();
        assert!(s.check());
        s.apply(Control::Fail);
        assert!(!s.check());
        assert!(!s.check());
        s.apply(Control::Ok);
        assert!(s.check());
    }

    #[test]
    fn failnext_fails_exactly_n_checks() {
        let mut s = ProbeState::default();
        s.apply(Control::FailNext(2));
        assert!(s.is_failing());
        assert_eq!([s.check(), s.check(), s.check()], [false, false, true]);
        assert!(!s.is_failing());
    }

    #[test]
    fn toggle_flips_and_clears_failnext() {
        let mut s = ProbeState::default();
        s.apply(Control::Toggle);
        assert!(s.is_failing());
        s.apply(Control::Toggle);
        assert!(!s.is_failing());
        s.apply(Control::FailNext(5));
        s.apply(Control::Toggle);
        assert_eq!(s, ProbeState::default());
    }
}
