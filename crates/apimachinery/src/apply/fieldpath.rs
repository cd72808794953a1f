//! Field paths and sets of them, the vocabulary of managedFields (structured-merge-diff's
//! `fieldpath` package): `f:<name>` for a field, `k:{...}` for a list item found by its keys,
//! `v:<json>` for a set item, `i:<n>` for an item of a list without keys, and `.` for "the
//! node itself" when a set also holds paths below it.

use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum PathElement {
    /// A field of an object or a key of a map.
    Field(String),
    /// An item of a map-list, identified by its key fields (sorted by name).
    Key(Vec<(String, Value)>),
    /// An item of a set-list, identified by its value.
    Value(Value),
    /// An item of a list without keys, by position.
    Index(usize),
}

impl Eq for PathElement {}

impl Ord for PathElement {
    fn cmp(&self, other: &Self) -> Ordering {
        use PathElement::*;
        fn rank(p: &PathElement) -> u8 {
            match p {
                Field(_) => 0,
                Key(_) => 1,
                Value(_) => 2,
                Index(_) => 3,
            }
        }
        match (self, other) {
            (Field(a), Field(b)) => a.cmp(b),
            (Key(a), Key(b)) => {
                for ((an, av), (bn, bv)) in a.iter().zip(b.iter()) {
                    let c = an.cmp(bn).then_with(|| compare_values(av, bv));
                    if c != Ordering::Equal {
                        return c;
                    }
                }
                a.len().cmp(&b.len())
            }
            (Value(a), Value(b)) => compare_values(a, b),
            (Index(a), Index(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }
}

impl PartialOrd for PathElement {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A total order on JSON values: numbers numerically, then strings, booleans, lists, maps and
/// null, close to structured-merge-diff's `value.Compare`.
pub(crate) fn compare_values(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Number(_) => 0,
            Value::String(_) => 1,
            Value::Bool(_) => 2,
            Value::Array(_) => 3,
            Value::Object(_) => 4,
            Value::Null => 5,
        }
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (p, q) in x.iter().zip(y.iter()) {
                let c = compare_values(p, q);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((kp, vp), (kq, vq)) in x.iter().zip(y.iter()) {
                let c = kp.cmp(kq).then_with(|| compare_values(vp, vq));
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

/// structured-merge-diff's `value.ToString`: strings quoted, everything else as JSON-ish text.
fn value_string(v: &Value) -> String {
    match v {
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(value_string).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => {
            format!(
                "{{{}}}",
                m.iter()
                    .map(|(k, x)| format!("{k}={}", value_string(x)))
                    .collect::<Vec<_>>()
                    .join(";")
            )
        }
        other => other.to_string(),
    }
}

impl PathElement {
    /// The FieldsV1 key of this element (`f:name`, `k:{"name":"c"}`, `v:"x"`, `i:0`).
    pub fn to_fields_key(&self) -> String {
        match self {
            Self::Field(name) => format!("f:{name}"),
            Self::Key(keys) => {
                let m: Map<String, Value> = keys.iter().cloned().collect();
                format!("k:{}", Value::Object(m))
            }
            Self::Value(v) => format!("v:{v}"),
            Self::Index(i) => format!("i:{i}"),
        }
    }

    /// Parses a FieldsV1 key.
    pub fn from_fields_key(s: &str) -> Option<Self> {
        let (prefix, rest) = s.split_once(':')?;
        match prefix {
            "f" => Some(Self::Field(rest.to_string())),
            "k" => match serde_json::from_str::<Value>(rest).ok()? {
                Value::Object(m) => Some(Self::Key(m.into_iter().collect())),
                _ => None,
            },
            "v" => serde_json::from_str(rest).ok().map(Self::Value),
            "i" => rest.parse().ok().map(Self::Index),
            _ => None,
        }
    }
}

impl fmt::Display for PathElement {
    /// The form conflict messages use: `.name`, `[name="c"]`, `[=value]`, `[0]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Field(name) => write!(f, ".{name}"),
            Self::Key(keys) => {
                let parts: Vec<String> = keys
                    .iter()
                    .map(|(k, v)| format!("{k}={}", value_string(v)))
                    .collect();
                write!(f, "[{}]", parts.join(","))
            }
            Self::Value(v) => write!(f, "[={}]", value_string(v)),
            Self::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path from the object root.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Path(pub Vec<PathElement>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in &self.0 {
            write!(f, "{pe}")?;
        }
        Ok(())
    }
}

/// A set of paths stored as a tree: `members` are paths ending at this level, `children` hold
/// the paths that continue below an element. Empty children are never kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    members: BTreeSet<PathElement>,
    children: BTreeMap<PathElement, FieldSet>,
}

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    /// Adds `path`; the empty path (the root) is never a member.
    pub fn insert(&mut self, path: &[PathElement]) {
        match path {
            [] => {}
            [last] => {
                if !self.members.contains(last) {
                    self.members.insert(last.clone());
                }
            }
            // Walks insert many paths below the same few parents: clone a parent's element
            // only the first time.
            [first, rest @ ..] => match self.children.get_mut(first) {
                Some(child) => child.insert(rest),
                None => self.children.entry(first.clone()).or_default().insert(rest),
            },
        }
    }

    /// `self ∪ other`, consuming both (no copies of either's elements).
    pub fn into_union(mut self, other: FieldSet) -> FieldSet {
        if self.is_empty() {
            return other;
        }
        self.members.extend(other.members);
        for (pe, child) in other.children {
            match self.children.remove(&pe) {
                Some(mine) => self.children.insert(pe, mine.into_union(child)),
                None => self.children.insert(pe, child),
            };
        }
        self
    }

    /// Removes from `self` the paths `other` holds exactly, in place: the same result as
    /// [`FieldSet::difference`].
    pub fn remove_all(&mut self, other: &FieldSet) {
        if !other.members.is_empty() {
            self.members.retain(|m| !other.members.contains(m));
        }
        for (pe, o) in &other.children {
            if let Some(child) = self.children.get_mut(pe) {
                child.remove_all(o);
                if child.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
    }

    pub fn contains(&self, path: &[PathElement]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.contains(rest)),
        }
    }

    /// The subset below `path` (paths relative to it), if any.
    pub fn descend(&self, path: &[PathElement]) -> Option<&FieldSet> {
        match path {
            [] => Some(self),
            [first, rest @ ..] => self.children.get(first)?.descend(rest),
        }
    }

    /// Whether the set holds `path` or anything below it.
    pub fn touches(&self, path: &[PathElement]) -> bool {
        self.contains(path) || self.descend(path).is_some_and(|s| !s.is_empty())
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, child) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(child),
                None => child.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// The paths of `self` that `other` does not hold exactly (a member of `other` does not
    /// remove the paths below it).
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        out.members = self.members.difference(&other.members).cloned().collect();
        for (pe, child) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => child.difference(o),
                None => child.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        out.members = self.members.intersection(&other.members).cloned().collect();
        for (pe, child) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = child.intersection(o);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// Every path, members of a level before the paths below it, each group in element order
    /// (structured-merge-diff's `Set.Iterate`).
    pub fn paths(&self) -> Vec<Path> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<PathElement>, out: &mut Vec<Path>) {
        for m in &self.members {
            prefix.push(m.clone());
            out.push(Path(prefix.clone()));
            prefix.pop();
        }
        for (pe, child) in &self.children {
            prefix.push(pe.clone());
            child.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `fieldsV1` JSON form.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        // Members and children's elements, each once (both are sorted: merge them).
        let mut members = self.members.iter().peekable();
        let mut children = self.children.keys().peekable();
        let elements = std::iter::from_fn(|| match (members.peek(), children.peek()) {
            (Some(a), Some(b)) => match a.cmp(b) {
                Ordering::Less => members.next(),
                Ordering::Greater => children.next(),
                Ordering::Equal => {
                    children.next();
                    members.next()
                }
            },
            (Some(_), None) => members.next(),
            (None, _) => children.next(),
        });
        for pe in elements {
            let mut node = match self.children.get(pe) {
                Some(child) => match child.to_fields_v1() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                },
                None => Map::new(),
            };
            if self.members.contains(pe) && self.children.contains_key(pe) {
                node.insert(".".into(), Value::Object(Map::new()));
            }
            m.insert(pe.to_fields_key(), Value::Object(node));
        }
        Value::Object(m)
    }

    /// Parses a `fieldsV1` JSON object; unparsable keys are skipped.
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = FieldSet::new();
        let Some(m) = v.as_object() else {
            return set;
        };
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let Some(pe) = PathElement::from_fields_key(k) else {
                continue;
            };
            let cm = child.as_object();
            let is_leaf = cm.is_none_or(|c| c.is_empty());
            let has_self = cm.is_some_and(|c| c.contains_key("."));
            if is_leaf || has_self {
                set.members.insert(pe.clone());
            }
            let sub = FieldSet::from_fields_v1(child);
            if !sub.is_empty() {
                set.children.insert(pe, sub);
            }
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_round_trips_with_self_markers() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}}},
                       "f:finalizers": {"v:\"a\"": {}}, "f:replicas": {}}
        });
        let set = FieldSet::from_fields_v1(&v);
        assert!(set.contains(&[
            PathElement::Field("metadata".into()),
            PathElement::Field("labels".into())
        ]));
        assert!(!set.contains(&[PathElement::Field("metadata".into())]));
        assert_eq!(set.to_fields_v1(), v);
    }

    #[test]
    fn paths_print_like_upstream() {
        let p = Path(vec![
            PathElement::Field("spec".into()),
            PathElement::Field("containers".into()),
            PathElement::Key(vec![("name".into(), json!("c"))]),
            PathElement::Field("image".into()),
        ]);
        assert_eq!(p.to_string(), ".spec.containers[name=\"c\"].image");
        let ports = PathElement::Key(vec![
            ("containerPort".into(), json!(80)),
            ("protocol".into(), json!("TCP")),
        ]);
        assert_eq!(ports.to_string(), "[containerPort=80,protocol=\"TCP\"]");
        assert_eq!(
            ports.to_fields_key(),
            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}"
        );
        assert_eq!(PathElement::Value(json!("a")).to_string(), "[=\"a\"]");
    }

    #[test]
    fn set_algebra() {
        let f = |s: &str| PathElement::Field(s.into());
        let mut a = FieldSet::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        let mut b = FieldSet::new();
        b.insert(&[f("spec"), f("replicas")]);
        assert_eq!(a.intersection(&b), b);
        let d = a.difference(&b);
        assert!(d.contains(&[f("spec"), f("paused")]) && !d.contains(&[f("spec"), f("replicas")]));
        assert_eq!(d.union(&b), a);
        assert!(a.touches(&[f("spec")]));
        assert_eq!(d.clone().into_union(b.clone()), a);
        assert_eq!(FieldSet::new().into_union(b.clone()), b);
        let mut c = a.clone();
        c.insert(&[f("kind")]);
        c.insert(&[f("spec"), f("template"), f("x")]);
        let mut e = b.clone();
        e.insert(&[f("kind")]);
        e.insert(&[f("spec"), f("template")]);
        e.insert(&[f("status"), f("y")]);
        let mut in_place = c.clone();
        in_place.remove_all(&e);
        assert_eq!(in_place, c.difference(&e));
        let mut all = a.clone();
        all.remove_all(&a);
        assert!(all.is_empty() && all == FieldSet::new());
    }
}
