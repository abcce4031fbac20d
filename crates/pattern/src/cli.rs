//! Functions behind the `sluice pattern ...` subcommands (the binary wires them to clap).
//!
//! * [`run_test`]: `sluice pattern test --pattern P --event E` — prints `match` or
//!   `no match` with the reason; returns the exit code (0 match, 1 no match, 2 invalid pattern or
//!   event).
//! * [`run_match`]: `sluice pattern match --rules RULES.json --events EVENTS.jsonl[.gz] [--json]`
//!   — matches every event once against all rules and prints per-rule match counts and the
//!   matching throughput (events/s of matching alone, excluding reading and decompressing).
//!
//! Arguments that start with `@` name a file to read (`@pattern.json`); others are JSON text.

use crate::eval::explain;
use crate::matcher::{Matcher, Scratch};
use crate::pattern::Pattern;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

fn load_arg(arg: &str) -> Result<String, String> {
    match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(arg.to_string()),
    }
}

/// `sluice pattern test`: is `event_arg` matched by `pattern_arg`? Both are JSON text or
/// `@file`. Writes `match` / `no match` and the reasons (which field and condition failed) to
/// `out`, and returns the process exit code: 0 match, 1 no match, 2 invalid pattern or event
/// (or an unreadable file).
pub fn run_test(pattern_arg: &str, event_arg: &str, out: &mut dyn Write) -> i32 {
    let result = (|| -> Result<i32, (i32, String)> {
        let pattern_text = load_arg(pattern_arg).map_err(|e| (2, e))?;
        let event_text = load_arg(event_arg).map_err(|e| (2, e))?;
        let pattern =
            Pattern::parse(&pattern_text).map_err(|e| (2, format!("invalid pattern: {e}")))?;
        let event: serde_json::Value = serde_json::from_str(&event_text)
            .map_err(|e| (2, format!("invalid event: not valid JSON: {e}")))?;
        if !event.is_object() {
            return Err((
                2,
                "invalid event: an event must be a JSON object".to_string(),
            ));
        }
        let matcher = Matcher::<u32>::new();
        matcher
            .add_pattern(0, &pattern_text)
            .map_err(|e| (2, format!("invalid pattern: {e}")))?;
        let matched = !matcher
            .matches_for_event(event_text.as_bytes())
            .map_err(|e| (2, format!("invalid event: {e}")))?
            .is_empty();
        let verdict = explain(&pattern, &event);
        let mut text = String::from(if matched { "match\n" } else { "no match\n" });
        if verdict.matched == matched {
            for r in &verdict.reasons {
                text.push_str(&format!("  {r}\n"));
            }
        } else {
            text.push_str("  internal error: the matcher and the reference evaluator disagree; please report\n");
        }
        let _ = out.write_all(text.as_bytes());
        Ok(if matched { 0 } else { 1 })
    })();
    match result {
        Ok(code) => code,
        Err((code, msg)) => {
            let _ = writeln!(out, "{msg}");
            code
        }
    }
}

/// Reads a rules file: a JSON object mapping rule names to one pattern (an object) or a list
/// of patterns. Returns `(name, pattern texts)` in file order.
pub fn read_rules(text: &str) -> Result<Vec<(String, Vec<String>)>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("rules file is not valid JSON: {e}"))?;
    let serde_json::Value::Object(map) = v else {
        return Err("rules file must be a JSON object of name -> pattern(s)".to_string());
    };
    let mut rules = Vec::new();
    for (name, val) in map {
        let pats = match val {
            serde_json::Value::Array(items) => items.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        };
        if pats.is_empty() {
            return Err(format!("rule {name}: empty pattern list"));
        }
        rules.push((name, pats));
    }
    Ok(rules)
}

/// Reads an events file (one JSON object per line; gzip-compressed when it starts with the gzip
/// magic bytes) into memory. Blank lines are skipped.
pub fn read_events(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let raw = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let data = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut d = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut d)
            .map_err(|e| format!("cannot decompress {}: {e}", path.display()))?;
        d
    } else {
        raw
    };
    Ok(data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .map(<[u8]>::to_vec)
        .collect())
}

/// `sluice pattern match`: loads named rules and an events file, matches every event once on
/// one thread, and prints each rule's match count plus the matching throughput. With `json`,
/// prints `{"counts": {"<rule>": n, ...}, "events": n, "events_per_second": x}`. Returns the exit
/// code (0) or an error message (bad rules file, invalid pattern, unreadable or invalid event).
pub fn run_match(
    rules_path: &Path,
    events_path: &Path,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, String> {
    let text = std::fs::read_to_string(rules_path)
        .map_err(|e| format!("cannot read {}: {e}", rules_path.display()))?;
    let rules = read_rules(&text)?;
    let matcher = Matcher::<String>::new();
    let items: Vec<(String, &str)> = rules
        .iter()
        .flat_map(|(name, ps)| ps.iter().map(move |p| (name.clone(), p.as_str())))
        .collect();
    matcher
        .add_patterns(items)
        .map_err(|e| format!("invalid pattern: {e}"))?;
    let events = read_events(events_path)?;
    let snap = matcher.snapshot();
    let mut counts = vec![0u64; snap.len()];
    let mut scratch = Scratch::new();
    let mut hits = Vec::new();
    let start = Instant::now();
    for (n, ev) in events.iter().enumerate() {
        snap.match_indices(ev, &mut scratch, &mut hits)
            .map_err(|e| format!("event on line {}: {e}", n + 1))?;
        for &r in &hits {
            counts[r as usize] += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let eps = if secs > 0.0 {
        events.len() as f64 / secs
    } else {
        0.0
    };
    let names: Vec<&String> = (0..snap.len() as u32).map(|i| snap.id(i)).collect();
    let res = if json {
        let mut map = serde_json::Map::new();
        for (name, c) in names.iter().zip(&counts) {
            map.insert((*name).clone(), serde_json::Value::from(*c));
        }
        let doc = serde_json::json!({"counts": map, "events": events.len(), "events_per_second": eps.round()});
        writeln!(out, "{doc}")
    } else {
        let mut s = String::new();
        for (name, c) in names.iter().zip(&counts) {
            s.push_str(&format!("{name}: {c}\n"));
        }
        s.push_str(&format!(
            "events: {}\nevents/s (matching only): {:.0}\n",
            events.len(),
            eps
        ));
        out.write_all(s.as_bytes())
    };
    res.map_err(|e| format!("cannot write output: {e}"))?;
    Ok(0)
}
