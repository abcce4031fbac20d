//! `SqliteStore::apply` throughput and latency with 1, 8 and 64 concurrent writers.
//!
//! Two parts:
//! 1. A latency table printed first: `SLUICE_BENCH_RUNS` (default 5) rounds; each round runs
//!    every configuration once (`COMMITS` commits spread over its writers, on a fresh store) and
//!    a raw `fdatasync` loop for the disk's own sync cost. Per run: commits/s, p50/p99 latency of
//!    one `apply`, and the mean group size (batches per transaction, i.e. per sync). The medians
//!    over the rounds are printed.
//! 2. Criterion throughput benchmarks (`apply/<config>`; one iteration = one commit per writer,
//!    elements = commits, so criterion's `thrpt` is commits/s).
//!
//! Each writer applies small batches: one put of a fresh 16-byte key with a 100-byte value.
//! The database lives in a temporary directory under `SLUICE_BENCH_DIR` (default: the system
//! temporary directory; point it at the disk you want to measure).
//!
//! Run: `cargo bench -p sluice-store --bench apply` (add `-- --quick` for a shorter criterion
//! pass; `SLUICE_BENCH_RUNS=N` sets the latency rounds; `SLUICE_BENCH_SKIP_CRITERION=1` prints
//! only the latency table).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sluice_store::sqlite::{SqliteOptions, SqliteStore, SyncMode};
use sluice_store::{Batch, Store};

#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    writers: usize,
    sync: SyncMode,
    max_group: usize,
}

const CONFIGS: &[Config] = &[
    Config {
        name: "full/1",
        writers: 1,
        sync: SyncMode::Full,
        max_group: 256,
    },
    Config {
        name: "full/8",
        writers: 8,
        sync: SyncMode::Full,
        max_group: 256,
    },
    Config {
        name: "full/64",
        writers: 64,
        sync: SyncMode::Full,
        max_group: 256,
    },
    // Group commit disabled: 64 writers, one transaction (one sync) per batch.
    Config {
        name: "full/64/no-group",
        writers: 64,
        sync: SyncMode::Full,
        max_group: 1,
    },
    Config {
        name: "normal/64",
        writers: 64,
        sync: SyncMode::Normal,
        max_group: 256,
    },
];

const COMMITS: usize = 4_000;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<SqliteStore>,
    next_key: Arc<AtomicU64>,
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("SLUICE_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .unwrap()
}

fn fixture(rt: &tokio::runtime::Runtime, config: Config) -> Fixture {
    let dir = bench_dir();
    let options = SqliteOptions {
        sync: config.sync,
        max_group: config.max_group,
        ..SqliteOptions::default()
    };
    let path = dir.path().join("sluice.db");
    let store = rt.block_on(async move {
        tokio::task::spawn_blocking(move || SqliteStore::open(&path, options))
            .await
            .unwrap()
            .unwrap()
    });
    Fixture {
        _dir: dir,
        store: Arc::new(store),
        next_key: Arc::new(AtomicU64::new(0)),
    }
}

/// Applies `commits` batches from `writers` concurrent tasks; returns the wall time and every
/// apply's latency.
async fn run(f: &Fixture, writers: usize, commits: usize) -> (Duration, Vec<Duration>) {
    let value = vec![0x5a_u8; 100];
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let n = commits / writers + usize::from(w < commits % writers);
        let store = Arc::clone(&f.store);
        let next_key = Arc::clone(&f.next_key);
        let value = value.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(n);
            for _ in 0..n {
                let k = next_key.fetch_add(1, Ordering::Relaxed);
                let mut key = b"bench-00".to_vec();
                key.extend_from_slice(&k.to_be_bytes());
                let t = Instant::now();
                store
                    .apply(Batch::new().put("bench", key, value.clone()))
                    .await
                    .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        });
    }
    let latencies: Vec<Duration> = tasks.join_all().await.into_iter().flatten().collect();
    (start.elapsed(), latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The disk's own sync cost, for context: `FSYNCS` rewrites of one 4 KiB block, each followed by
/// `fdatasync`; returns the sorted latencies.
fn raw_fsync() -> Vec<Duration> {
    use std::io::{Seek, SeekFrom, Write};
    const FSYNCS: usize = 300;
    let dir = bench_dir();
    let mut file = std::fs::File::create(dir.path().join("fsync.bin")).unwrap();
    let block = vec![0xa5_u8; 4096];
    let mut lat = Vec::with_capacity(FSYNCS);
    for _ in 0..FSYNCS {
        let t = Instant::now();
        file.seek(SeekFrom::Start(0)).unwrap();
        file.write_all(&block).unwrap();
        file.sync_data().unwrap();
        lat.push(t.elapsed());
    }
    lat.sort_unstable();
    lat
}

#[derive(Default)]
struct Samples {
    rates: Vec<f64>,
    p50s: Vec<f64>,
    p99s: Vec<f64>,
    groups: Vec<f64>,
}

impl Samples {
    fn push(&mut self, wall: Duration, sorted: &[Duration], group: f64) {
        self.rates.push(sorted.len() as f64 / wall.as_secs_f64());
        self.p50s.push(percentile(sorted, 0.50).as_secs_f64() * 1e3);
        self.p99s.push(percentile(sorted, 0.99).as_secs_f64() * 1e3);
        self.groups.push(group);
    }

    fn print(self, name: &str) {
        println!(
            "{:<18} {:>10.0} {:>10.3} {:>10.3} {:>10.1}",
            name,
            median(self.rates),
            median(self.p50s),
            median(self.p99s),
            median(self.groups)
        );
    }
}

/// Runs every configuration once per round, `runs` rounds (interleaved, so a burst of load on the
/// machine hits every configuration alike), and prints the medians.
fn latency_report(rt: &tokio::runtime::Runtime) {
    let runs: usize = std::env::var("SLUICE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut fsync = Samples::default();
    let mut samples: Vec<Samples> = CONFIGS.iter().map(|_| Samples::default()).collect();
    for _ in 0..runs {
        let lat = raw_fsync();
        let wall = lat.iter().sum();
        fsync.push(wall, &lat, 1.0);
        for (config, samples) in CONFIGS.iter().zip(&mut samples) {
            let f = fixture(rt, *config);
            let (wall, mut lat) = rt.block_on(run(&f, config.writers, COMMITS));
            let stats = f.store.stats();
            rt.block_on(f.store.close()).unwrap();
            lat.sort_unstable();
            samples.push(wall, &lat, stats.batches as f64 / stats.groups as f64);
        }
    }
    println!(
        "apply latency: {runs} rounds x {COMMITS} commits per configuration; medians of the rounds"
    );
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>10}",
        "config", "commits/s", "p50 ms", "p99 ms", "batch/grp"
    );
    fsync.print("raw 4KiB fdatasync");
    for (config, samples) in CONFIGS.iter().zip(samples) {
        samples.print(config.name);
    }
}

fn criterion_benches(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let mut group = c.benchmark_group("apply");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for config in CONFIGS {
        let f = fixture(rt, *config);
        // One iteration = every writer commits once (so a sample never has fewer commits than
        // writers); elements = commits.
        group.throughput(Throughput::Elements(config.writers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(config.name),
            config,
            |b, config| {
                b.iter_custom(|iters| {
                    let commits = usize::try_from(iters).unwrap().max(1) * config.writers;
                    rt.block_on(run(&f, config.writers, commits)).0
                });
            },
        );
        rt.block_on(f.store.close()).unwrap();
    }
    group.finish();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut c = Criterion::default().configure_from_args();
    // `cargo test --benches` runs this binary in test mode: keep it short.
    let test_mode = std::env::args().any(|a| a == "--test");
    if !test_mode {
        latency_report(&rt);
    }
    if std::env::var_os("SLUICE_BENCH_SKIP_CRITERION").is_none() {
        criterion_benches(&mut c, &rt);
        c.final_summary();
    }
}
