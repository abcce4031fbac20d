//! Reference semantics and diagnostics (`TestEventPattern`).
//!
//! This module is the *definition* of what a pattern matches, written for clarity over a parsed
//! `serde_json::Value`; the compiled [`crate::Matcher`] must give the same verdicts (the property
//! tests check it). It also explains non-matches: which field and which condition failed.
//!
//! ## Array-consistent matching
//! Every leaf value of the event carries a *trail*: for each array it sits in, the array's
//! identity and the element index. Two trails are *consistent* when they agree on the index of
//! every array they share. A conjunction matches when one satisfying value can be chosen per
//! positive predicate such that all chosen trails are pairwise consistent, and, for every
//! `exists: false` predicate, no value at its path is consistent with all chosen trails. So
//! fields under one array must match inside the same element, while fields outside it combine
//! freely.

use crate::cond::Scalar;
use crate::pattern::{Pattern, Predicate, PredicateKind};
use serde_json::Value;

/// One step of a trail: (array identity, element index).
pub(crate) type Step = (u32, u32);
/// A trail stored in an arena of steps: (start, len).
pub(crate) type Span = (u32, u32);

fn steps(arena: &[Step], s: Span) -> &[Step] {
    &arena[s.0 as usize..(s.0 + s.1) as usize]
}

/// Whether two trails agree on every array they share.
pub(crate) fn consistent(arena: &[Step], a: Span, b: Span) -> bool {
    if a.1 == 0 || b.1 == 0 {
        return true;
    }
    let (a, b) = (steps(arena, a), steps(arena, b));
    a.iter().all(|x| b.iter().all(|y| x.0 != y.0 || x.1 == y.1))
}

/// Backtracking search for one consistent choice (see the module docs). `chosen` is scratch.
///
/// Pruning keeps adversarial events polynomial: an `exists: false` value whose arrays none of
/// the positive candidates touch is consistent with every choice (fail at once), and a partial
/// choice that already fixes every array of some absent value, consistently, can never be
/// completed (prune that branch).
pub(crate) fn search(
    arena: &[Step],
    pos: &[&[Span]],
    absent: &[&[Span]],
    chosen: &mut Vec<Span>,
) -> bool {
    if chosen.is_empty() && !absent.is_empty() {
        let touched = |id: u32| {
            pos.iter()
                .any(|l| l.iter().any(|&c| steps(arena, c).iter().any(|s| s.0 == id)))
        };
        if absent.iter().any(|l| {
            l.iter()
                .any(|&a| steps(arena, a).iter().all(|s| !touched(s.0)))
        }) {
            return false;
        }
    }
    search_from(arena, pos, absent, chosen)
}

/// Whether absent value `a` is consistent with every completion of `chosen`: each of its arrays
/// is fixed by some chosen trail, and all agree with it.
fn dooms(arena: &[Step], a: Span, chosen: &[Span]) -> bool {
    steps(arena, a).iter().all(|s| {
        chosen
            .iter()
            .any(|&c| steps(arena, c).iter().any(|t| t.0 == s.0))
    }) && chosen.iter().all(|&c| consistent(arena, a, c))
}

fn search_from(
    arena: &[Step],
    pos: &[&[Span]],
    absent: &[&[Span]],
    chosen: &mut Vec<Span>,
) -> bool {
    let k = chosen.len();
    if k > 0
        && absent
            .iter()
            .any(|l| l.iter().any(|&a| dooms(arena, a, chosen)))
    {
        return false;
    }
    if k == pos.len() {
        return absent.iter().all(|list| {
            list.iter()
                .all(|&s| !chosen.iter().all(|&c| consistent(arena, s, c)))
        });
    }
    for &cand in pos[k] {
        if chosen.iter().all(|&c| consistent(arena, cand, c)) {
            chosen.push(cand);
            let ok = search_from(arena, pos, absent, chosen);
            chosen.pop();
            if ok {
                return true;
            }
        }
    }
    false
}

/// A leaf value of a parsed event.
struct Leaf<'v> {
    path: Vec<&'v str>,
    value: Scalar<'v>,
    trail: Span,
}

struct Flat<'v> {
    leaves: Vec<Leaf<'v>>,
    arena: Vec<Step>,
    arrays: u32,
}

impl<'v> Flat<'v> {
    fn walk(&mut self, v: &'v Value, path: &mut Vec<&'v str>, trail: &mut Vec<Step>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    path.push(k);
                    self.walk(child, path, trail);
                    path.pop();
                }
            }
            Value::Array(items) => {
                let id = self.arrays;
                self.arrays += 1;
                for (i, item) in items.iter().enumerate() {
                    trail.push((id, i as u32));
                    self.walk(item, path, trail);
                    trail.pop();
                }
            }
            scalar => {
                let value = match scalar {
                    Value::String(s) => Scalar::Str(s),
                    Value::Number(n) => Scalar::Num(n.as_f64().unwrap_or(f64::NAN)),
                    Value::Bool(b) => Scalar::Bool(*b),
                    _ => Scalar::Null,
                };
                let span = (self.arena.len() as u32, trail.len() as u32);
                self.arena.extend_from_slice(trail);
                self.leaves.push(Leaf {
                    path: path.clone(),
                    value,
                    trail: span,
                });
            }
        }
    }

    fn at<'s>(&'s self, path: &'s [String]) -> impl Iterator<Item = &'s Leaf<'v>> + 's {
        self.leaves.iter().filter(move |l| {
            l.path.len() == path.len() && l.path.iter().zip(path).all(|(a, b)| *a == b)
        })
    }
}

fn flatten(event: &Value) -> Flat<'_> {
    let mut flat = Flat {
        leaves: Vec::new(),
        arena: Vec::new(),
        arrays: 0,
    };
    flat.walk(event, &mut Vec::new(), &mut Vec::new());
    flat
}

/// The verdict of [`explain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the pattern matches the event.
    pub matched: bool,
    /// For a non-match, why: one line per alternative of the pattern (its `$or` expansion),
    /// naming the field and the condition that failed. For a match, which alternative matched.
    pub reasons: Vec<String>,
}

/// Whether `pattern` matches `event` (reference semantics).
pub fn matches_value(pattern: &Pattern, event: &Value) -> bool {
    let flat = flatten(event);
    pattern.conjunctions.iter().any(|c| conj_matches(&flat, c))
}

fn conj_lists(flat: &Flat<'_>, conj: &[Predicate]) -> (Vec<Vec<Span>>, Vec<Vec<Span>>) {
    let mut pos = Vec::new();
    let mut absent = Vec::new();
    for p in conj {
        match &p.kind {
            PredicateKind::Any(conds) => pos.push(
                flat.at(&p.path)
                    .filter(|l| conds.iter().any(|c| c.matches(&l.value)))
                    .map(|l| l.trail)
                    .collect(),
            ),
            PredicateKind::Absent => absent.push(flat.at(&p.path).map(|l| l.trail).collect()),
        }
    }
    (pos, absent)
}

fn conj_matches(flat: &Flat<'_>, conj: &[Predicate]) -> bool {
    let (pos, absent) = conj_lists(flat, conj);
    let pos: Vec<&[Span]> = pos.iter().map(Vec::as_slice).collect();
    let absent: Vec<&[Span]> = absent.iter().map(Vec::as_slice).collect();
    search(&flat.arena, &pos, &absent, &mut Vec::new())
}

fn show(v: &Scalar<'_>) -> String {
    match v {
        Scalar::Str(s) => Value::String((*s).to_string()).to_string(),
        Scalar::Num(x) => format!("{x}"),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Null => "null".to_string(),
    }
}

fn why_not(flat: &Flat<'_>, conj: &[Predicate]) -> String {
    for p in conj {
        let field = p.path.join(".");
        let values: Vec<&Leaf<'_>> = flat.at(&p.path).collect();
        match &p.kind {
            PredicateKind::Any(conds) => {
                if values.is_empty() {
                    return format!(
                        "field \"{field}\" is absent from the event (or is not a leaf value)"
                    );
                }
                if !values
                    .iter()
                    .any(|l| conds.iter().any(|c| c.matches(&l.value)))
                {
                    let mut shown: Vec<String> =
                        values.iter().take(5).map(|l| show(&l.value)).collect();
                    if values.len() > 5 {
                        shown.push(format!("... ({} values)", values.len()));
                    }
                    let wanted: Vec<String> = conds.iter().map(|c| c.describe()).collect();
                    return format!(
                        "field \"{field}\": value {} matches none of [{}]",
                        shown.join(", "),
                        wanted.join("; ")
                    );
                }
            }
            PredicateKind::Absent => {
                let has_positive = conj.iter().any(|q| matches!(q.kind, PredicateKind::Any(_)));
                if !values.is_empty() && !has_positive {
                    return format!(
                        "field \"{field}\" exists (value {}) but the pattern requires it absent (exists: false)",
                        show(&values[0].value)
                    );
                }
            }
        }
    }
    let has_absent = conj.iter().any(|q| q.kind == PredicateKind::Absent);
    let fields: Vec<String> = conj
        .iter()
        .map(|p| format!("\"{}\"", p.path.join(".")))
        .collect();
    if has_absent {
        format!(
            "fields {} each match somewhere, but no choice of array elements satisfies them together with the exists: false field(s)",
            fields.join(", ")
        )
    } else {
        format!(
            "fields {} each match, but only in different elements of the same array (array-consistent matching)",
            fields.join(", ")
        )
    }
}

/// Matches `pattern` against `event` and explains the verdict.
pub fn explain(pattern: &Pattern, event: &Value) -> Verdict {
    let flat = flatten(event);
    let many = pattern.conjunctions.len() > 1;
    for (i, conj) in pattern.conjunctions.iter().enumerate() {
        if conj_matches(&flat, conj) {
            let fields: Vec<String> = conj
                .iter()
                .map(|p| format!("\"{}\"", p.path.join(".")))
                .collect();
            let which = if many {
                format!("alternative {} ", i + 1)
            } else {
                String::new()
            };
            return Verdict {
                matched: true,
                reasons: vec![format!("{which}matched on fields {}", fields.join(", "))],
            };
        }
    }
    let reasons = pattern
        .conjunctions
        .iter()
        .enumerate()
        .map(|(i, conj)| {
            let why = why_not(&flat, conj);
            if many {
                format!("alternative {}: {why}", i + 1)
            } else {
                why
            }
        })
        .collect();
    Verdict {
        matched: false,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(p: &str, e: &str) -> Verdict {
        explain(
            &Pattern::parse(p).unwrap(),
            &serde_json::from_str(e).unwrap(),
        )
    }

    #[test]
    fn explains_failures() {
        let v = ex(
            r#"{"detail":{"state":["ALARM"]}}"#,
            r#"{"detail":{"state":"OK"}}"#,
        );
        assert!(!v.matched);
        assert!(
            v.reasons[0].contains("detail.state") && v.reasons[0].contains("\"OK\""),
            "{v:?}"
        );
        let v = ex(r#"{"a":["x"]}"#, r#"{"b":1}"#);
        assert!(v.reasons[0].contains("absent"), "{v:?}");
        let v = ex(
            r#"{"d":{"a":["1"],"b":["2"]}}"#,
            r#"{"d":[{"a":"1"},{"b":"2"}]}"#,
        );
        assert!(v.reasons[0].contains("different elements"), "{v:?}");
        let v = ex(r#"{"a":[{"exists":false}]}"#, r#"{"a":3}"#);
        assert!(v.reasons[0].contains("requires it absent"), "{v:?}");
        let v = ex(r#"{"$or":[{"a":["1"]},{"b":["2"]}]}"#, r#"{"b":"2"}"#);
        assert!(v.matched && v.reasons[0].contains("alternative 2"), "{v:?}");
    }

    #[test]
    fn absent_pruning_keeps_adversarial_events_fast() {
        // Five fields in five different arrays of 30 elements each (30^5 combinations) plus an
        // exists:false field present outside any array: must fail without enumerating.
        let p = Pattern::parse(
            r#"{"a":{"x":["1"]},"b":{"x":["1"]},"c":{"x":["1"]},"d":{"x":["1"]},"e":{"x":["1"]},"z":[{"exists":false}]}"#,
        )
        .unwrap();
        let arr: Vec<Value> = (0..30).map(|_| serde_json::json!({"x":"1"})).collect();
        let mut ev = serde_json::json!({"z": [0]});
        for k in ["a", "b", "c", "d", "e"] {
            ev[k] = Value::Array(arr.clone());
        }
        assert!(!matches_value(&p, &ev));
        // The absent field inside array "a", present in every element: pruned per element.
        let p = Pattern::parse(
            r#"{"a":{"x":["1"],"z":[{"exists":false}]},"b":{"x":["1"]},"c":{"x":["1"]},"d":{"x":["1"]},"e":{"x":["1"]}}"#,
        )
        .unwrap();
        let arr_z: Vec<Value> = (0..30)
            .map(|_| serde_json::json!({"x":"1","z":2}))
            .collect();
        ev["a"] = Value::Array(arr_z.clone());
        assert!(!matches_value(&p, &ev));
        let mut ok = arr_z;
        ok[29] = serde_json::json!({"x":"1"});
        ev["a"] = Value::Array(ok);
        assert!(matches_value(&p, &ev));
    }

    #[test]
    fn absent_respects_array_elements() {
        let p = Pattern::parse(r#"{"d":{"a":[{"exists":true}],"b":[{"exists":false}]}}"#).unwrap();
        let m = |e: &str| matches_value(&p, &serde_json::from_str(e).unwrap());
        assert!(m(r#"{"d":[{"a":1}]}"#));
        assert!(!m(r#"{"d":[{"a":1,"b":2}]}"#));
        assert!(m(r#"{"d":[{"a":1,"b":2},{"a":3}]}"#));
        assert!(!m(r#"{"d":{"a":1,"b":2}}"#));
    }
}
