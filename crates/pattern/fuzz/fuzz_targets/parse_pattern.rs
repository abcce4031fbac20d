//! Fuzzes the pattern parser/validator: any input must be accepted or rejected without panic,
//! and an accepted pattern must compile into a matcher and evaluate against a fixed event with
//! the same verdict from the compiled matcher and the reference evaluator.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_pattern::{Matcher, Pattern, matches_value};

const EVENT: &str = r#"{"a":"x","b":[1,2.5,{"c":"10.0.0.1"}],"d":{"e":null,"f":true,"g":["Hello","wOrLd"]},"n":-3e2}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(pattern) = Pattern::parse(text) else {
        return;
    };
    let event: serde_json::Value = serde_json::from_str(EVENT).unwrap();
    let reference = matches_value(&pattern, &event);
    let m = Matcher::<u8>::new();
    m.add_pattern(1, text)
        .expect("a pattern that parses must compile");
    let compiled = !m.matches_for_event(EVENT.as_bytes()).unwrap().is_empty();
    assert_eq!(reference, compiled, "pattern {text}");
});
