//! Property tests: the compiled streaming matcher against the reference evaluator (all
//! operators, `$or`, arrays), and against the `quamina` crate on the subset both support.

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_pattern::{Matcher, Pattern, matches_value};

const KEYS: &[&str] = &["a", "b", "c"];
/// Key names per nesting level for the quamina comparison: quamina-rs 0.7 confuses a key with
/// a same-named key of an object inside an array under it (`{"a":[{"a":"x"}]}` yields `a = "x"`
/// for it), so there a name never repeats along a path.
const LEVEL_KEYS: [&[&str]; 3] = [&["a", "b", "c"], &["d", "e", "f"], &["g", "h"]];
const STRINGS: &[&str] = &[
    "",
    "x",
    "xy",
    "Xy",
    "yx",
    "xyz",
    "10.0.0.1",
    "a*b",
    "2001:db8::1",
];
const NUMBERS: &[f64] = &[0.0, 1.0, 1.5, 300.0, -2.0, 1e9];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(STRINGS).prop_map(|s| json!(s)),
        3 => prop::sample::select(NUMBERS).prop_map(|n| json!(n)),
        1 => any::<bool>().prop_map(|b| json!(b)),
        1 => Just(Value::Null),
    ]
}

fn event_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(KEYS).prop_map(String::from),
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn event() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(String::from),
        event_value(),
        0..4,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Events whose key names depend on the nesting level (see [`LEVEL_KEYS`]).
fn leveled_value(level: usize) -> BoxedStrategy<Value> {
    if level >= LEVEL_KEYS.len() {
        return prop_oneof![3 => scalar(), 1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array)].boxed();
    }
    let obj = prop::collection::btree_map(
        prop::sample::select(LEVEL_KEYS[level]).prop_map(String::from),
        leveled_value(level + 1),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    if level == 0 {
        return obj.boxed();
    }
    prop_oneof![
        3 => scalar(),
        1 => prop::collection::vec(scalar(), 0..3).prop_map(Value::Array),
        2 => obj.clone(),
        1 => prop::collection::vec(obj, 0..3).prop_map(Value::Array),
    ]
    .boxed()
}

/// Conditions; `full` adds the operators quamina lacks or treats differently.
fn condition(full: bool) -> BoxedStrategy<Value> {
    let common = prop_oneof![
        prop::sample::select(STRINGS).prop_map(|s| json!(s)),
        prop::sample::select(NUMBERS).prop_map(|n| json!(n)),
        prop::sample::select(&["x", "X", "y", ""][..]).prop_map(|s| json!({"prefix": s})),
        prop::sample::select(&["x", "y", "yz"][..]).prop_map(|s| json!({"suffix": s})),
        prop::sample::select(&["xy", "XY", "x"][..]).prop_map(|s| json!({"equals-ignore-case": s})),
        prop::sample::select(&["x*", "*y", "x*y*", "*", "a\\*b"][..])
            .prop_map(|s| json!({"wildcard": s})),
        prop::collection::vec(prop::sample::select(STRINGS), 1..3)
            .prop_map(|v| json!({"anything-but": v})),
        (prop::sample::select(NUMBERS), any::<bool>())
            .prop_map(|(n, ge)| json!({"numeric": [if ge { ">=" } else { ">" }, n]})),
        (prop::sample::select(NUMBERS), prop::sample::select(NUMBERS))
            .prop_filter("lo < hi", |(a, b)| a < b)
            // quamina-rs 0.7 matches 0 against [">", 0, "<=", x]: keep that out of the comparison
            .prop_filter("quamina-rs zero lower bound", move |(a, _)| full
                || *a != 0.0)
            .prop_map(|(a, b)| json!({"numeric": [">", a, "<=", b]})),
    ];
    if !full {
        return common.boxed();
    }
    let common = prop_oneof![9 => common, 1 => Just(json!({"exists": true}))];
    prop_oneof![
        4 => common,
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(|b| json!(b)),
        1 => Just(json!({"exists": false})),
        1 => prop::sample::select(&["10.0.0.0/8", "10.0.0.1", "2001:db8::/32"][..]).prop_map(|s| json!({"cidr": s})),
        1 => prop::sample::select(&["x", "X"][..]).prop_map(|s| json!({"prefix": {"equals-ignore-case": s}})),
        1 => prop::sample::select(&["Y", "z"][..]).prop_map(|s| json!({"suffix": {"equals-ignore-case": s}})),
        1 => prop::sample::select(&["x", "y"][..]).prop_map(|s| json!({"anything-but": {"prefix": s}})),
        1 => prop::sample::select(&["y", "z"][..]).prop_map(|s| json!({"anything-but": {"suffix": [s, "q"]}})),
        1 => prop::sample::select(&["XY", "x"][..]).prop_map(|s| json!({"anything-but": {"equals-ignore-case": s}})),
        1 => prop::sample::select(&["x*", "*y"][..]).prop_map(|s| json!({"anything-but": {"wildcard": s}})),
        1 => prop::sample::select(NUMBERS).prop_map(|n| json!({"anything-but": n})),
    ]
    .boxed()
}

fn pattern_obj(full: bool, depth: u32) -> BoxedStrategy<Value> {
    pattern_at(full, depth, None)
}

/// `level`: use [`LEVEL_KEYS`] for that nesting level (and below); `None`: [`KEYS`] everywhere.
fn pattern_at(full: bool, depth: u32, level: Option<usize>) -> BoxedStrategy<Value> {
    // quamina-rs 0.7 ignores `exists` mixed with other conditions in one list, so for the
    // comparison `exists: true` only appears alone.
    let leaf = if full {
        prop::collection::vec(condition(full), 1..3)
            .prop_map(Value::Array)
            .boxed()
    } else {
        prop_oneof![
            6 => prop::collection::vec(condition(full), 1..3).prop_map(Value::Array),
            1 => Just(json!([{"exists": true}])),
        ]
        .boxed()
    };
    let node = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![3 => leaf, 1 => pattern_at(full, depth - 1, level.map(|l| l + 1))].boxed()
    };
    let keys = match level {
        Some(l) => LEVEL_KEYS[l.min(LEVEL_KEYS.len() - 1)],
        None => KEYS,
    };
    let fields = prop::collection::btree_map(
        prop::sample::select(keys).prop_map(String::from),
        node,
        1..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()));
    if full && depth > 0 {
        (
            fields,
            prop::option::of(prop::collection::vec(pattern_obj(full, depth - 1), 2..3)),
        )
            .prop_map(|(mut f, or)| {
                if let Some(alts) = or {
                    f.as_object_mut()
                        .unwrap()
                        .insert("$or".into(), Value::Array(alts));
                }
                f
            })
            .boxed()
    } else {
        fields.boxed()
    }
}

/// Whether a pattern contains a number literal anywhere (exact or inside an operator).
fn has_number_literal(v: &Value) -> bool {
    match v {
        Value::Number(_) => true,
        Value::Array(a) => a.iter().any(has_number_literal),
        Value::Object(o) => o.values().any(has_number_literal),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// The compiled matcher (one shared structure for all patterns) gives the reference verdict
    /// for every pattern on every event.
    #[test]
    fn compiled_equals_reference(
        patterns in prop::collection::vec(pattern_obj(true, 2), 1..6),
        events in prop::collection::vec(event(), 1..6),
    ) {
        let parsed: Vec<(usize, String, Pattern)> = patterns
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let text = p.to_string();
                Pattern::parse(&text).ok().map(|pat| (i, text, pat))
            })
            .collect();
        let m = Matcher::<usize>::new();
        m.add_patterns(parsed.iter().map(|(i, t, _)| (*i, t.as_str()))).unwrap();
        for ev in &events {
            let text = ev.to_string();
            let mut got = m.matches_for_event(text.as_bytes()).unwrap();
            got.sort_unstable();
            let want: Vec<usize> = parsed.iter().filter(|(_, _, p)| matches_value(p, ev)).map(|(i, _, _)| *i).collect();
            prop_assert_eq!(got, want, "event {}", text);
        }
    }

    /// Same verdicts as the quamina crate on patterns both engines support.
    #[test]
    fn agrees_with_quamina(
        patterns in prop::collection::vec(pattern_at(false, 2, Some(0)), 1..5),
        events in prop::collection::vec(leveled_value(0), 1..6),
    ) {
        let mut q = quamina::Quamina::<usize>::new();
        let m = Matcher::<usize>::new();
        let mut used = Vec::new();
        let mut parsed = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let text = p.to_string();
            if let Ok(pat) = Pattern::parse(&text)
                && q.add_pattern(i, &text).is_ok()
            {
                m.add_pattern(i, &text).unwrap();
                parsed.push((i, pat, has_number_literal(p)));
                used.push(text);
            }
        }
        for ev in &events {
            let text = ev.to_string();
            let mut ours = m.matches_for_event(text.as_bytes()).unwrap();
            ours.sort_unstable();
            let mut theirs = q.matches_for_event(text.as_bytes()).unwrap();
            theirs.sort_unstable();
            theirs.dedup();
            // Known quamina-rs 0.7 bug: an exact number literal sometimes matches a different
            // value when the field also has other (numeric-range, anything-but, ...) patterns,
            // e.g. `{"b":[-2.0]}` matching `{"b":0}` next to `{"b":[{"numeric":[">=",-2.0]}]}`.
            // Where ours equals the reference semantics and quamina differs only on rules with a
            // number literal, the difference is quamina's.
            let reference: Vec<usize> = parsed
                .iter()
                .filter(|(_, p, _)| matches_value(p, ev))
                .map(|(i, _, _)| *i)
                .collect();
            let quamina_numeric_bug = ours == reference
                && parsed
                    .iter()
                    .filter(|(i, _, _)| ours.contains(i) != theirs.contains(i))
                    .all(|(_, _, number)| *number);
            if !quamina_numeric_bug {
                prop_assert_eq!(ours, theirs, "event {} patterns {:?}", text, used);
            }
        }
    }
}

/// Rules can be added and removed while other threads match; readers see either the old or
/// the new rule set, never a torn one.
#[test]
fn concurrent_add_remove_while_matching() {
    use std::sync::Arc;
    let m = Arc::new(Matcher::<u32>::new());
    m.add_pattern(0, r#"{"a":["x"]}"#).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (m, stop) = (m.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || n == 0 {
                let got = m.matches_for_event(br#"{"a":"x","b":"y"}"#).unwrap();
                assert!(got.contains(&0), "rule 0 is never removed");
                assert!(got.iter().all(|&r| r == 0 || r == 1), "{got:?}");
                n += 1;
            }
            n
        })
    };
    for _ in 0..200 {
        m.add_pattern(1, r#"{"b":["y"]}"#).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.remove_rule(&1));
        assert_eq!(m.len(), 1);
    }
    assert!(!m.remove_rule(&1));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}
