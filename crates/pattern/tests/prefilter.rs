//! Property tests for the prefilter: on valid JSON events written in many textual forms
//! (escapes, unicode, number spellings, whitespace, nesting), running the prefilter on every
//! event gives exactly the verdicts of the full scan alone (and of the reference evaluator);
//! arbitrary and mutated bytes never panic.

use proptest::prelude::*;
use serde_json::{Value, json};
use sluice_pattern::{Compiled, Matcher, Pattern, Scratch, matches_value};
use std::fmt::Write as _;

/// Key names: plain ones, and ones whose quoted form also occurs between two strings of an
/// event (`","` in `"x",","`), or that need unicode.
const KEYS: &[&str] = &["a", "b", ",", "a,", "},", ":", ":{", "é", "x y"];
/// String values: ASCII and unicode (case folding, astral plane), characters that need
/// escapes, and the key names themselves.
const STRINGS: &[&str] = &[
    "",
    "x",
    "X",
    "xy",
    "ACME",
    "acme",
    "é",
    "É",
    "Straße",
    "STRASSE",
    "ǅ",
    "😀x",
    "a\"b",
    "back\\slash",
    "line\nbreak",
    "tab\t",
    "\u{1}",
    "10.0.0.1",
    ",",
    "a,",
    "},",
    ":",
    "x y",
    "1.5",
];
/// Number spellings: zeros of both signs, equal values written differently, exponents,
/// integers beyond 2^53, extremes.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "0e0",
    "-0E-5",
    "0.000",
    "1",
    "1.0",
    "1e0",
    "10E-1",
    "0.1e1",
    "1.5",
    "15e-1",
    "0.15E+1",
    "1.50000000000000000000001",
    "300",
    "3e2",
    "3.00e+2",
    "299.9999999999999999",
    "-2",
    "-2.0",
    "-20e-1",
    "1e9",
    "1000000000",
    "5000000000.000001",
    "9007199254740993",
    "12345678901234567890",
    "0.1",
    "0.30000000000000004",
    "1e-7",
    "1.7976931348623157e308",
    "5e-324",
    "1e400",
    "-1e400",
];

/// A JSON value plus the choices of how to write it.
#[derive(Debug, Clone)]
enum J {
    /// String and a bit mask choosing which characters to escape.
    S(String, u64),
    N(String),
    B(bool),
    Null,
    A(Vec<J>),
    /// Distinct keys (by value), each with an escape mask.
    O(Vec<(String, u64, J)>),
}

/// Writes `s` as a JSON string, escaping the characters selected by `mask` (and those that
/// must be escaped) in one of the allowed forms.
fn write_str(out: &mut String, s: &str, mask: u64) {
    out.push('"');
    for (n, c) in s.chars().enumerate() {
        let chosen = mask >> (n % 64) & 1 == 1;
        let must = matches!(c, '"' | '\\') || (c as u32) < 0x20;
        if !chosen && !must {
            out.push(c);
            continue;
        }
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\n' => Some("\\n"),
            '\t' => Some("\\t"),
            '\r' => Some("\\r"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        match short {
            Some(e) if mask >> 63 == 0 => out.push_str(e),
            _ => {
                let mut buf = [0u16; 2];
                for u in c.encode_utf16(&mut buf) {
                    if mask >> 62 & 1 == 1 {
                        write!(out, "\\u{u:04X}").unwrap();
                    } else {
                        write!(out, "\\u{u:04x}").unwrap();
                    }
                }
            }
        }
    }
    out.push('"');
}

/// Insignificant whitespace, chosen by the next bits of `ws`.
fn write_ws(out: &mut String, ws: &mut u64) {
    let w = *ws & 7;
    *ws = ws.rotate_right(3);
    out.push_str(match w {
        6 => " ",
        7 => ["\n\t ", "\r\n  "][usize::from(*ws & 1 == 1)],
        _ => "",
    });
}

/// Whitespace choices for [`write_ws`]: often none at all (compact events).
fn layout() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), any::<u64>()]
}

fn write_json(out: &mut String, v: &J, ws: &mut u64) {
    match v {
        J::S(s, mask) => write_str(out, s, *mask),
        J::N(n) => out.push_str(n),
        J::B(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Null => out.push_str("null"),
        J::A(items) => {
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write_ws(out, ws);
                write_json(out, item, ws);
                write_ws(out, ws);
            }
            out.push(']');
        }
        J::O(fields) => {
            out.push('{');
            for (k, (key, mask, item)) in fields.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write_ws(out, ws);
                write_str(out, key, *mask);
                write_ws(out, ws);
                out.push(':');
                write_ws(out, ws);
                write_json(out, item, ws);
                write_ws(out, ws);
            }
            out.push('}');
        }
    }
}

/// Escape masks: with `escapes`, mostly raw strings with some escaped characters; without,
/// none (the prefilter only runs on events without a backslash).
fn escape_mask(escapes: bool) -> BoxedStrategy<u64> {
    if escapes {
        prop_oneof![2 => Just(0u64), 1 => any::<u64>()].boxed()
    } else {
        Just(0).boxed()
    }
}

fn number() -> impl Strategy<Value = String> {
    let composed = (
        any::<bool>(),
        prop_oneof![Just("0".to_string()), "[1-9][0-9]{0,19}"],
        prop::option::of("[0-9]{1,24}"),
        prop::option::of(("[eE]", "[+-]?", "[0-9]{1,3}")),
    )
        .prop_map(|(neg, int, frac, exp)| {
            let mut s = String::new();
            if neg {
                s.push('-');
            }
            s.push_str(&int);
            if let Some(f) = frac {
                s.push('.');
                s.push_str(&f);
            }
            if let Some((e, sign, digits)) = exp {
                s.push_str(&e);
                s.push_str(&sign);
                s.push_str(&digits);
            }
            s
        });
    prop_oneof![
        3 => prop::sample::select(NUMBERS).prop_map(String::from),
        1 => composed,
    ]
}

/// Strings that need no escape.
fn plain(s: &&str) -> bool {
    !s.chars()
        .any(|c| matches!(c, '"' | '\\') || (c as u32) < 0x20)
}

fn scalar(escapes: bool) -> impl Strategy<Value = J> {
    let strings: Vec<&str> = STRINGS
        .iter()
        .copied()
        .filter(|s| escapes || plain(s))
        .collect();
    prop_oneof![
        5 => (prop::sample::select(strings), escape_mask(escapes)).prop_map(|(s, m)| J::S(s.into(), m)),
        4 => number().prop_map(J::N),
        1 => any::<bool>().prop_map(J::B),
        1 => Just(J::Null),
    ]
}

fn object_of(
    inner: impl Strategy<Value = J> + 'static,
    n: std::ops::Range<usize>,
    escapes: bool,
) -> impl Strategy<Value = J> {
    // Distinct keys (however written), so no object repeats a key; in any order, so that any
    // key can follow any string.
    let entry = (escape_mask(escapes), inner).boxed();
    prop::sample::subsequence(KEYS, n)
        .prop_shuffle()
        .prop_flat_map(move |keys| {
            let values = prop::collection::vec(entry.clone(), keys.len());
            (Just(keys), values)
        })
        .prop_map(|(keys, values)| {
            J::O(
                keys.into_iter()
                    .zip(values)
                    .map(|(k, (mask, v))| (k.to_string(), mask, v))
                    .collect(),
            )
        })
}

/// An event object; without `escapes`, one the prefilter runs on (no backslash).
fn event_with(escapes: bool) -> impl Strategy<Value = J> {
    let value = scalar(escapes).prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(J::A),
            object_of(inner, 0..4, escapes),
        ]
    });
    object_of(value, 0..5, escapes)
}

fn event() -> impl Strategy<Value = J> {
    prop_oneof![event_with(false), event_with(true)]
}

fn condition() -> BoxedStrategy<Value> {
    let strs = || prop::sample::select(STRINGS);
    let nums = || prop::sample::select(&[0.0, -2.0, 0.1, 1.0, 1.5, 300.0, 1e9, 5e9][..]);
    prop_oneof![
        3 => strs().prop_map(|s| json!(s)),
        3 => nums().prop_map(|n| json!(n)),
        1 => Just(json!(-0.0)),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(|b| json!(b)),
        2 => strs().prop_map(|s| json!({"prefix": s})),
        2 => strs().prop_map(|s| json!({"suffix": s})),
        2 => strs().prop_map(|s| json!({"equals-ignore-case": s})),
        1 => strs().prop_map(|s| json!({"prefix": {"equals-ignore-case": s}})),
        1 => strs().prop_map(|s| json!({"suffix": {"equals-ignore-case": s}})),
        1 => prop::sample::select(&["x*", "*y", "*é*", "a*,"][..]).prop_map(|s| json!({"wildcard": s})),
        2 => (prop::sample::select(&[">", ">=", "<", "<=", "="][..]), nums())
            .prop_map(|(op, n)| json!({"numeric": [op, n]})),
        1 => (nums(), nums())
            .prop_filter("lo < hi", |(a, b)| a < b)
            .prop_map(|(a, b)| json!({"numeric": [">", a, "<=", b]})),
        1 => prop::collection::vec(strs(), 1..3).prop_map(|v| json!({"anything-but": v})),
        1 => nums().prop_map(|n| json!({"anything-but": n})),
        1 => strs().prop_map(|s| json!({"anything-but": {"prefix": s}})),
        // Conditions most values satisfy, so that many events match and a wrong early "no"
        // shows.
        4 => Just(json!({"exists": true})),
        2 => Just(json!({"prefix": ""})),
        1 => Just(json!({"numeric": [">=", -5e9]})),
        1 => Just(json!({"exists": false})),
        1 => Just(json!({"cidr": "10.0.0.0/8"})),
    ]
    .boxed()
}

/// A pattern over `fields` keys per object (nested up to `depth` levels).
fn pattern(depth: u32, fields: std::ops::Range<usize>) -> BoxedStrategy<Value> {
    let leaf = prop::collection::vec(condition(), 1..3).prop_map(Value::Array);
    let node = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![3 => leaf, 1 => pattern(depth - 1, fields.clone())].boxed()
    };
    prop::collection::btree_map(
        prop::sample::select(KEYS).prop_map(String::from),
        node,
        fields,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
    .boxed()
}

/// Compiles the patterns that parse; returns (index, pattern) of those.
fn compile(patterns: &[Value]) -> (Matcher<usize>, Vec<(usize, Pattern)>) {
    let m = Matcher::<usize>::new();
    let mut parsed = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let text = p.to_string();
        if let Ok(pat) = Pattern::parse(&text) {
            m.add_pattern(i, &text).unwrap();
            parsed.push((i, pat));
        }
    }
    (m, parsed)
}

fn run(c: &Compiled<usize>, s: &mut Scratch, ev: &[u8]) -> Result<Vec<usize>, String> {
    c.matches_for_event(ev, s)
        .map(|mut v| {
            v.sort_unstable();
            v
        })
        .map_err(|e| e.to_string())
}

/// Prefilter on every event, never, and adaptive (the default): on valid events all equal
/// the full scan.
fn scratches() -> [Scratch; 3] {
    let mut on = Scratch::new();
    on.set_prefilter(Some(true));
    let mut off = Scratch::new();
    off.set_prefilter(Some(false));
    [on, off, Scratch::new()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// With the prefilter, verdicts equal those of the full scan alone and of the reference
    /// evaluator on valid events.
    #[test]
    fn prefilter_equals_full_scan(
        patterns in prop::collection::vec(pattern(2, 1..3), 1..5),
        events in prop::collection::vec((event(), layout()), 1..8),
    ) {
        check_valid_events(&patterns, &events)?;
    }

    /// The same with a single one-field rule: the prefilter rejects most events, so a wrong
    /// rejection is more likely to show.
    #[test]
    fn prefilter_equals_full_scan_one_field(
        pattern in pattern(2, 1..2),
        events in prop::collection::vec((event(), layout()), 1..16),
    ) {
        check_valid_events(&[pattern], &events)?;
    }

    /// Arbitrary bytes, and valid events with bytes inserted, removed or replaced: never a
    /// panic; the prefilter only ever turns a verdict into "no match"; where the result is
    /// still a valid JSON object, all verdicts agree with the reference.
    #[test]
    fn arbitrary_bytes_never_panic(
        patterns in prop::collection::vec(pattern(2, 1..3), 1..5),
        raw in prop::collection::vec(any::<u8>(), 0..64),
        ev in event(),
        mut ws in any::<u64>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, any::<u8>()), 1..4),
    ) {
        let (m, parsed) = compile(&patterns);
        let c = m.snapshot();
        let [mut on, mut off, mut adaptive] = scratches();
        let mut text = String::new();
        write_json(&mut text, &ev, &mut ws);
        let mut mutated = text.into_bytes();
        for (at, op, b) in edits {
            let i = at.index(mutated.len() + 1);
            const SYNTAX: &[u8] = b"{}[]\",:\\ 0-.eE";
            let b = if b < 128 { SYNTAX[usize::from(b) % SYNTAX.len()] } else { b };
            match op {
                0 => mutated.insert(i, b),
                1 if i < mutated.len() => { mutated.remove(i); }
                _ if i < mutated.len() => mutated[i] = b,
                _ => mutated.push(b),
            }
        }
        for bytes in [&raw[..], &mutated[..]] {
            let full = run(&c, &mut off, bytes);
            let pre = run(&c, &mut on, bytes);
            let _ = run(&c, &mut adaptive, bytes);
            prop_assert!(pre == full || pre == Ok(Vec::new()), "{:?} vs {:?}", pre, full);
            let Ok(text) = std::str::from_utf8(bytes) else { continue };
            let Ok(value) = serde_json::from_str::<Value>(text) else { continue };
            if !value.is_object() || has_repeated_keys(&value, text) {
                continue;
            }
            let want: Vec<usize> = parsed
                .iter()
                .filter(|(_, p)| matches_value(p, &value))
                .map(|(i, _)| *i)
                .collect();
            prop_assert_eq!(&full, &Ok(want), "full scan: {}", text);
            prop_assert_eq!(&pre, &full, "prefilter: {}", text);
        }
    }
}

/// Checks events written from `events` against `patterns`: the prefilter on every event, the
/// adaptive default, the full scan alone and the reference evaluator all agree.
fn check_valid_events(patterns: &[Value], events: &[(J, u64)]) -> Result<(), TestCaseError> {
    let (m, parsed) = compile(patterns);
    let c = m.snapshot();
    let [mut on, mut off, mut adaptive] = scratches();
    for &(ref ev, mut ws) in events {
        let mut text = String::new();
        write_ws(&mut text, &mut ws);
        write_json(&mut text, ev, &mut ws);
        write_ws(&mut text, &mut ws);
        let full = run(&c, &mut off, text.as_bytes());
        prop_assert!(full.is_ok(), "valid event rejected: {} {:?}", text, full);
        prop_assert_eq!(
            &run(&c, &mut on, text.as_bytes()),
            &full,
            "prefilter on: {} {:?}",
            text,
            patterns
        );
        prop_assert_eq!(
            &run(&c, &mut adaptive, text.as_bytes()),
            &full,
            "adaptive: {} {:?}",
            text,
            patterns
        );
        // serde_json rejects numbers out of f64 range (1e400), which are valid JSON.
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            let want: Vec<usize> = parsed
                .iter()
                .filter(|(_, p)| matches_value(p, &value))
                .map(|(i, _)| *i)
                .collect();
            prop_assert_eq!(full.unwrap(), want, "reference: {} {:?}", text, patterns);
        }
    }
    Ok(())
}

/// Whether `text` has more keys than the parsed `value` (a repeated key was merged).
fn has_repeated_keys(value: &Value, text: &str) -> bool {
    fn count(v: &Value) -> usize {
        match v {
            Value::Object(m) => m.len() + m.values().map(count).sum::<usize>(),
            Value::Array(a) => a.iter().map(count).sum(),
            _ => 0,
        }
    }
    let (mut colons, mut in_str, mut esc) = (0usize, false, false);
    for c in text.chars() {
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
    colons != count(value)
}

/// A key's quoted form can also occur across two strings (`"x",","` holds `","`) and overlap
/// the real key: every occurrence must be considered, overlapping ones included.
#[test]
fn key_overlapping_a_false_occurrence() {
    let cases: &[(&str, &str)] = &[
        (r#"{",":[1]}"#, r#"{"a":"x",",":1}"#),
        (r#"{",":[1]}"#, r#"{"a":"x" , ",":1}"#),
        (r#"{"},":["y"]}"#, r#"{"a":{"b":"x"},"},":"y"}"#),
        (r#"{"a":{":{":[{"prefix":"q"}]}}"#, r#"{"a":{":{":"qq"}}"#),
        (
            r#"{"a,":[{"prefix":"q"}]}"#,
            r#"{"b":["a,","a,"],"a,":"qq"}"#,
        ),
    ];
    for (pattern, event) in cases {
        let m = Matcher::<usize>::new();
        m.add_pattern(0, pattern).unwrap();
        let c = m.snapshot();
        let [mut on, mut off, _] = scratches();
        assert_eq!(run(&c, &mut off, event.as_bytes()), Ok(vec![0]), "{event}");
        assert_eq!(run(&c, &mut on, event.as_bytes()), Ok(vec![0]), "{event}");
    }
}
