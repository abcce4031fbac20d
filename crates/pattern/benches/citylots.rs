//! Throughput benchmark on (synthetic) citylots2, the method of event-ruler's own benchmark:
//! one fresh matcher per rule set holding its 5 rules, every event matched once per pass, one
//! warm-up pass, then timed passes; events/s is the median pass. The `quamina` crate runs the
//! same sets in the same process where it supports them, and its per-rule counts must equal ours.
//! A second part measures how cost scales with the number of EXACT rules (1 .. 100,000).
//!
//! Data: `bench-data/citylots2.json.gz` at the workspace root (git-ignored). If it is missing and
//! `../shared/bench/gen_citylots_synth.py` exists next to the workspace, it is generated
//! (about 30 s); otherwise generate it with any generator writing that file.
//!
//! Run: `cargo bench -p sluice-pattern --bench citylots`. Knobs (environment):
//! `SLUICE_BENCH_DATA` (another events file, one JSON per line, gzip), `SLUICE_BENCH_TOUCH=d`
//! (see below), `SLUICE_BENCH_PASSES` (timed passes, default 5), `SLUICE_BENCH_EVENTS` (use only the first N
//! events), `SLUICE_BENCH_SETS` (comma-separated rule-set names), `SLUICE_BENCH_SCALING=0` to
//! skip the scaling part, `SLUICE_BENCH_QUAMINA=0` to skip quamina.

use serde_json::Value;
use sluice_pattern::{Matcher, Scratch};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn data_file() -> PathBuf {
    if let Ok(p) = std::env::var("SLUICE_BENCH_DATA") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = root.join("bench-data");
    let file = dir.join("citylots2.json.gz");
    if !file.exists() {
        let gen_script = root.join("../shared/bench/gen_citylots_synth.py");
        if gen_script.exists() {
            eprintln!(
                "generating {} with {}",
                file.display(),
                gen_script.display()
            );
            let ok = std::process::Command::new("python3")
                .arg(&gen_script)
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "generator failed");
        } else {
            panic!(
                "{} is missing; generate synthetic citylots2 data there first",
                file.display()
            );
        }
    }
    file
}

fn load_events() -> Vec<Vec<u8>> {
    let raw = std::fs::read(data_file()).expect("read data");
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut text)
        .expect("gunzip");
    let limit = env_usize("SLUICE_BENCH_EVENTS", usize::MAX);
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .take(limit)
        .map(<[u8]>::to_vec)
        .collect()
}

/// CPU time this thread has run, in seconds (Linux `/proc/thread-self/schedstat`); `None`
/// elsewhere. On a shared machine this is steadier than wall time: other processes' time slices
/// are not counted against us.
fn thread_cpu() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

thread_local! {
    /// `SLUICE_BENCH_TOUCH=d`: before matching event k, read the first byte of event k+d (for
    /// both engines alike), so the event's first cache line is not a cold DRAM miss.
    static TOUCH_AHEAD: Option<usize> = std::env::var("SLUICE_BENCH_TOUCH").ok().and_then(|v| v.parse().ok()).filter(|&d| d > 0);
}

/// Median events/s of the timed passes: by thread CPU time and by wall time.
#[derive(Clone, Copy)]
struct Rate {
    cpu: f64,
    wall: f64,
}

/// Median rates and per-rule counts of one engine on one rule set.
type Measured = (Rate, Vec<u64>);

/// One timed pass over all events; returns (events/s by wall time, events/s by CPU time).
fn timed_pass(
    events: &[Vec<u8>],
    pass: &mut impl FnMut(&[u8], &mut Vec<u64>),
    counts: &mut Vec<u64>,
) -> (f64, f64) {
    let touch_ahead = TOUCH_AHEAD.with(|t| *t);
    counts.iter_mut().for_each(|c| *c = 0);
    let c0 = thread_cpu();
    let t = Instant::now();
    for (k, ev) in events.iter().enumerate() {
        if let Some(ahead) = touch_ahead.and_then(|d| events.get(k + d)) {
            std::hint::black_box(ahead[0]);
        }
        pass(ev, counts);
    }
    let w = t.elapsed().as_secs_f64();
    let c = match (c0, thread_cpu()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => w,
    };
    (events.len() as f64 / w, events.len() as f64 / c)
}

/// Warms up each engine with one pass, then runs `passes` timed passes, alternating the engines
/// pass by pass so that load changes on a shared machine hit both alike. Returns, per engine,
/// the median rates and the per-rule counts (checked equal across passes).
fn compare<A, B>(
    events: &[Vec<u8>],
    passes: usize,
    mut a: A,
    mut b: Option<B>,
) -> (Measured, Option<Measured>)
where
    A: FnMut(&[u8], &mut Vec<u64>),
    B: FnMut(&[u8], &mut Vec<u64>),
{
    let mut ca = Vec::new();
    let mut cb = Vec::new();
    timed_pass(events, &mut a, &mut ca);
    let warm_a = ca.clone();
    if let Some(b) = b.as_mut() {
        timed_pass(events, b, &mut cb);
    }
    let warm_b = cb.clone();
    let (mut wa, mut pa, mut wb, mut pb) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..passes {
        let (w, c) = timed_pass(events, &mut a, &mut ca);
        wa.push(w);
        pa.push(c);
        assert_eq!(ca, warm_a, "counts differ between passes");
        if let Some(b) = b.as_mut() {
            let (w, c) = timed_pass(events, b, &mut cb);
            wb.push(w);
            pb.push(c);
            assert_eq!(cb, warm_b, "counts differ between passes");
        }
    }
    let ra = (
        Rate {
            cpu: median(pa),
            wall: median(wa),
        },
        ca,
    );
    let rb = b.map(|_| {
        (
            Rate {
                cpu: median(pb),
                wall: median(wb),
            },
            cb,
        )
    });
    (ra, rb)
}

/// The sluice engine as a per-event closure (counts indexed by pattern number).
fn sluice_engine(patterns: &[String]) -> impl FnMut(&[u8], &mut Vec<u64>) {
    let m = Matcher::<usize>::new();
    m.add_patterns(patterns.iter().enumerate().map(|(i, p)| (i, p.as_str())))
        .expect("valid patterns");
    let snap = m.snapshot();
    let mut scratch = Scratch::new();
    let mut hits = Vec::new();
    let n = patterns.len();
    move |ev, counts| {
        if counts.len() != n {
            counts.resize(n, 0);
        }
        snap.match_indices(ev, &mut scratch, &mut hits)
            .expect("valid event");
        for &r in &hits {
            counts[*snap.id(r)] += 1;
        }
    }
}

/// The quamina crate as a per-event closure, or `None` if it rejects a pattern.
fn quamina_engine(patterns: &[String]) -> Option<impl FnMut(&[u8], &mut Vec<u64>)> {
    let mut q = quamina::Quamina::<usize>::new();
    for (i, p) in patterns.iter().enumerate() {
        if q.add_pattern(i, p).is_err() {
            return None;
        }
    }
    let n = patterns.len();
    Some(move |ev: &[u8], counts: &mut Vec<u64>| {
        if counts.len() != n {
            counts.resize(n, 0);
        }
        for r in q.matches_for_event(ev).expect("quamina match") {
            counts[r] += 1;
        }
    })
}

fn sluice_run(events: &[Vec<u8>], patterns: &[String], passes: usize) -> Measured {
    compare(
        events,
        passes,
        sluice_engine(patterns),
        None::<fn(&[u8], &mut Vec<u64>)>,
    )
    .0
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing useful: run only
    // under `cargo bench` to keep test runs fast.
    if !std::env::args().any(|a| a == "--bench") {
        println!("citylots bench: run with `cargo bench -p sluice-pattern --bench citylots`");
        return;
    }
    let passes = env_usize("SLUICE_BENCH_PASSES", 5).max(1);
    let with_quamina = std::env::var("SLUICE_BENCH_QUAMINA")
        .map(|v| v != "0")
        .unwrap_or(true);
    let events = load_events();
    let bytes: usize = events.iter().map(Vec::len).sum();
    println!(
        "events: {} (avg {} B), timed passes: {passes}",
        events.len(),
        bytes / events.len().max(1)
    );

    let sets: Value = serde_json::from_str(include_str!("ruler-rule-sets.json"))
        .expect("rule sets are valid JSON");
    let only: Option<Vec<String>> = std::env::var("SLUICE_BENCH_SETS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    println!(
        "events/s: median pass, by thread CPU time (wall-clock in parentheses); ratio = sluice/quamina (CPU)"
    );
    println!(
        "{:<26} {:>22} {:>22} {:>6}  counts",
        "rule set", "sluice ev/s", "quamina ev/s", "ratio"
    );
    for (name, pats) in sets.as_object().expect("object") {
        if only.as_ref().is_some_and(|o| !o.contains(name)) {
            continue;
        }
        let patterns: Vec<String> = pats
            .as_array()
            .expect("array")
            .iter()
            .map(Value::to_string)
            .collect();
        let q = if with_quamina {
            quamina_engine(&patterns)
        } else {
            None
        };
        let ((ours, counts), theirs) = compare(&events, passes, sluice_engine(&patterns), q);
        let (q, ratio, agree) = match &theirs {
            Some((r, qc)) => (
                format!("{:.0} ({:.0})", r.cpu, r.wall),
                format!("{:.2}", ours.cpu / r.cpu),
                if *qc == counts { "" } else { " COUNTS DIFFER" },
            ),
            None => ("unsupported".to_string(), "-".to_string(), ""),
        };
        let o = format!("{:.0} ({:.0})", ours.cpu, ours.wall);
        println!("{name:<26} {o:>22} {q:>22} {ratio:>6}  {counts:?}{agree}");
        if let Some((_, qc)) = &theirs
            && *qc != counts
        {
            println!("    quamina counts: {qc:?}");
        }
    }

    if std::env::var("SLUICE_BENCH_SCALING")
        .map(|v| v != "0")
        .unwrap_or(true)
    {
        // Distinct MAPBLKLOT values from the data, so rules are real and some match.
        let mut lots: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for ev in &events {
            let v: Value = serde_json::from_slice(ev).expect("json");
            if let Some(s) = v["properties"]["MAPBLKLOT"].as_str()
                && seen.insert(s.to_string())
            {
                lots.push(s.to_string());
            }
            if lots.len() >= 100_000 {
                break;
            }
        }
        println!("\nEXACT scaling (rules on properties.MAPBLKLOT, distinct values):");
        let mut base = None;
        for n in [1usize, 5, 100, 10_000, 100_000] {
            let n = n.min(lots.len());
            let patterns: Vec<String> = lots[..n]
                .iter()
                .map(|l| format!(r#"{{"properties":{{"MAPBLKLOT":["{l}"]}}}}"#))
                .collect();
            let (rate, counts) = sluice_run(&events, &patterns, passes);
            let total: u64 = counts.iter().sum();
            let ns = 1e9 / rate.cpu;
            if n == 5 {
                base = Some(ns);
            }
            let rel = base
                .map(|b| format!("{:.2}x the 5-rule cost", ns / b))
                .unwrap_or_default();
            println!(
                "  {n:>7} rules: {:>10.0} ev/s (wall {:>10.0})  {ns:>6.0} ns/event  matches {total:>8}  {rel}",
                rate.cpu, rate.wall
            );
        }
    }
}
