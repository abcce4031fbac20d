//! `SqliteStore` reads: `get` of an existing key from 1 and 8 concurrent tasks, and a 100-entry
//! `scan`, on a store of 10,000 entries (16-byte keys, 100-byte values).
//!
//! Run: `cargo bench -p sluice-store --bench read`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use sluice_store::sqlite::{SqliteOptions, SqliteStore};
use sluice_store::{Batch, KeyRange, Store};

const ENTRIES: u64 = 10_000;

fn key(i: u64) -> Vec<u8> {
    let mut k = b"bench-00".to_vec();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

/// A cheap deterministic spread of key indices (no RNG dependency).
fn pick(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9_7f4a_7c15) % ENTRIES
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sluice.db");
    let store = Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    rt.block_on(async {
        for chunk in 0..ENTRIES / 500 {
            let mut b = Batch::new();
            for i in chunk * 500..(chunk + 1) * 500 {
                b = b.put("bench", key(i), vec![0x5a_u8; 100]);
            }
            store.apply(b).await.unwrap();
        }
    });

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("read");
    group.sample_size(20);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for readers in [1u64, 8] {
        group.throughput(Throughput::Elements(readers));
        group.bench_with_input(BenchmarkId::new("get", readers), &readers, |b, &readers| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for r in 0..readers {
                        let store = Arc::clone(&store);
                        tasks.spawn(async move {
                            for n in 0..iters {
                                let got = store.get("bench", &key(pick(n * 8 + r))).await;
                                assert!(got.unwrap().is_some());
                            }
                        });
                    }
                    tasks.join_all().await;
                    start.elapsed()
                })
            });
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("scan100", |b| {
        let mut n = 0u64;
        b.iter(|| {
            n += 1;
            let from = key(pick(n) % (ENTRIES - 100));
            let rows = rt
                .block_on(store.scan("bench", KeyRange::from(&from), 100, false))
                .unwrap();
            assert_eq!(rows.len(), 100);
        });
    });
    group.finish();
    rt.block_on(store.close()).unwrap();
    c.final_summary();
}
