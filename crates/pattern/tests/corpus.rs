//! Runs every case in `tests/corpus/*.json` through the parser, the compiled matcher and the
//! reference evaluator.
//!
//! Case format (one JSON array per file):
//! `{"name", "pattern", "event" | "event_text", "expect": "match"|"no-match"|"invalid", "origin"}`.
//! `pattern` is the pattern object, or a string holding the pattern's JSON text when the exact
//! spelling matters (e.g. `3.0e2`); `event_text` likewise keeps an event's exact spelling.
//! `origin` says where the verdict comes from (event-ruler runs, or a documented sluice choice).

use serde_json::Value;
use sluice_pattern::{Matcher, Pattern, explain, matches_value};

fn run_file(file: &str) -> usize {
    let path = manifest_dir().join("tests/corpus").join(file);
    let cases: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let pattern = match &case["pattern"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let event = match &case["event_text"] {
            Value::String(s) => s.clone(),
            _ => case["event"].to_string(),
        };
        let expect = case["expect"].as_str().unwrap();
        let parsed = Pattern::parse(&pattern);
        if expect == "invalid" {
            if parsed.is_ok() {
                failures.push(format!("{name}: expected invalid pattern, got valid"));
            }
            continue;
        }
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{name}: pattern rejected: {e}"));
                continue;
            }
        };
        let want = expect == "match";
        let value: Value = serde_json::from_str(&event).unwrap();
        let reference = matches_value(&parsed, &value);
        let verdict = explain(&parsed, &value);
        let m = Matcher::<u32>::new();
        m.add_pattern(7, &pattern).unwrap();
        let compiled = m.matches_for_event(event.as_bytes()).unwrap() == vec![7];
        if reference != want || compiled != want || verdict.matched != want {
            failures.push(format!(
                "{name}: expected {expect}, reference={reference} compiled={compiled} explain={verdict:?}"
            ));
        }
        if !want && verdict.reasons.is_empty() {
            failures.push(format!("{name}: no reason given for a non-match"));
        }
    }
    assert!(
        failures.is_empty(),
        "{file}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn ruler_labeled_cases() {
    assert_eq!(run_file("ruler-labeled.json"), 67);
}

#[test]
fn semantics_probe_cases() {
    assert_eq!(run_file("semantics-probe.json"), 27);
}

#[test]
fn sluice_operator_cases() {
    assert!(run_file("sluice-operators.json") >= 90);
}

/// All corpus cases at once in one shared matcher: each rule must fire exactly for its events.
#[test]
fn corpus_in_one_shared_matcher() {
    let mut all = Vec::new();
    for file in [
        "ruler-labeled.json",
        "semantics-probe.json",
        "sluice-operators.json",
    ] {
        let path = manifest_dir().join("tests/corpus").join(file);
        let cases: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        all.extend(cases.into_iter().filter(|c| c["expect"] != "invalid"));
    }
    let m = Matcher::<usize>::new();
    let patterns: Vec<String> = all
        .iter()
        .map(|c| match &c["pattern"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    m.add_patterns(patterns.iter().enumerate().map(|(i, p)| (i, p.as_str())))
        .unwrap();
    for (i, c) in all.iter().enumerate() {
        let event = match &c["event_text"] {
            Value::String(s) => s.clone(),
            _ => c["event"].to_string(),
        };
        let value: Value = serde_json::from_str(&event).unwrap();
        let mut got = m.matches_for_event(event.as_bytes()).unwrap();
        got.sort_unstable();
        let want: Vec<usize> = patterns
            .iter()
            .enumerate()
            .filter(|(_, p)| matches_value(&Pattern::parse(p).unwrap(), &value))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(got, want, "event of case {i} ({})", c["name"]);
        assert_eq!(
            got.contains(&i),
            c["expect"] == "match",
            "case {}",
            c["name"]
        );
    }
}

/// The scanner's documented event handling: first occurrence of a repeated key wins, keys no
/// rule references are skipped, malformed input inside what is read is an error.
#[test]
fn scanner_event_handling() {
    let m = Matcher::<u32>::new();
    m.add_pattern(1, r#"{"a":["x"],"b":{"c":[1]}}"#).unwrap();
    assert_eq!(
        m.matches_for_event(br#"{"a":"x","a":"y","b":{"c":1}}"#)
            .unwrap(),
        vec![1]
    );
    assert!(
        m.matches_for_event(br#"{"a":"y","a":"x","b":{"c":1}}"#)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        m.matches_for_event(
            br#" { "z" : [ {"q":"}"} , "]" ] , "b" : { "d":[1,2] , "c" : 1.0e0 } , "a" : "x" } "#
        )
        .unwrap(),
        vec![1]
    );
    for bad in [
        &br#"{"a":"x","b":{"c":01}}"#[..],
        br#"{"a":x}"#,
        br#"["a"]"#,
        br#"{"a":"x""#,
        b"",
        br#"{"a" "x"}"#,
    ] {
        assert!(
            m.matches_for_event(bad).is_err(),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // nothing referenced after "b": the tail is not read (documented), but a bad tail inside a
    // nested referenced object is still found
    assert!(m.matches_for_event(br#"{"b":{"c":1,"d":[}}"#).is_err());
}

/// The package directory at run time (`cargo test` sets it). The compile-time value can name
/// another checkout when a shared target directory is reused across clones.
fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
