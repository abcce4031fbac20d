//! Fuzzes the streaming event scanner and matcher: arbitrary bytes as an event against a rule set
//! using every operator. Must never panic; when the bytes are a JSON object that serde_json
//! accepts and that has no repeated keys, the compiled matcher must agree with the reference
//! evaluator rule by rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_pattern::{Matcher, Pattern, matches_value};
use std::sync::OnceLock;

const PATTERNS: &[&str] = &[
    r#"{"a":["x", 1, null, true]}"#,
    r#"{"a":[{"prefix":"x"}], "b":[{"numeric":[">",0,"<=",5]}]}"#,
    r#"{"a":[{"suffix":{"equals-ignore-case":"Y"}}]}"#,
    r#"{"a":[{"wildcard":"x*y*z"}]}"#,
    r#"{"a":[{"anything-but":{"prefix":"x"}}]}"#,
    r#"{"a":[{"anything-but":[1, "x"]}]}"#,
    r#"{"b":{"c":[{"cidr":"10.0.0.0/8"}], "d":[{"exists":false}]}}"#,
    r#"{"b":{"c":[{"exists":true}], "e":[{"equals-ignore-case":"q"}]}}"#,
    r#"{"$or":[{"a":[{"exists":false}]},{"b":{"c":[2]}}]}"#,
    r#"{"d":{"e":{"f":[{"prefix":{"equals-ignore-case":"AB"}}]}}}"#,
    // Keys whose quoted form also occurs between two strings (`"x",",":1` holds `","` twice,
    // overlapping): the prefilter must not miss the real key.
    r#"{",":[{"prefix":"x"}], "},":[1]}"#,
];

fn matcher() -> &'static (Matcher<usize>, Vec<Pattern>) {
    static M: OnceLock<(Matcher<usize>, Vec<Pattern>)> = OnceLock::new();
    M.get_or_init(|| {
        let m = Matcher::new();
        for (i, p) in PATTERNS.iter().enumerate() {
            m.add_pattern(i, p).unwrap();
        }
        (
            m,
            PATTERNS
                .iter()
                .map(|p| Pattern::parse(p).unwrap())
                .collect(),
        )
    })
}

fn has_repeated_keys(v: &str) -> bool {
    // Conservative: a re-serialisation with fewer keys than the text mentions means repeats.
    let Ok(value) = serde_json::from_str::<serde_json::Value>(v) else {
        return true;
    };
    fn count(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Object(m) => m.len() + m.values().map(count).sum::<usize>(),
            serde_json::Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }
    let mut colons = 0usize;
    let mut in_str = false;
    let mut esc = false;
    for c in v.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ':' {
            colons += 1;
        }
    }
    colons != count(&value)
}

fuzz_target!(|data: &[u8]| {
    let (m, patterns) = matcher();
    let got = m.matches_for_event(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    if !value.is_object() || has_repeated_keys(text) {
        return;
    }
    let mut got = got.expect("valid JSON object must be accepted");
    got.sort_unstable();
    let want: Vec<usize> = patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| matches_value(p, &value))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(got, want, "event {text}");
});
