//! The conformance suite: the behaviour every [`Store`] implementation must have.
//!
//! An implementation provides a [`StoreFactory`] (which opens the store at one location and can
//! open it again there after `close`, to test persistence) and expands
//! [`store_conformance_tests!`](crate::store_conformance_tests) in an integration test:
//!
//! ```ignore
//! struct Sqlite { dir: tempfile::TempDir }
//! impl sluice_store::conformance::StoreFactory for Sqlite {
//!     type Store = SqliteStore;
//!     async fn open(&self) -> SqliteStore {
//!         SqliteStore::open(&self.dir.path().join("sluice.db"), Default::default()).unwrap()
//!     }
//! }
//! sluice_store::store_conformance_tests!(Sqlite { dir: tempfile::tempdir().unwrap() });
//! ```
//!
//! Each test is also a public `async fn` taking the factory, so a harness can run them its own
//! way (e.g. [`run_all`]). Tests panic on failure.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use crate::{Batch, KeyRange, Store, StoreError, Versioned};

/// Opens the store under test, always at the same location: the first call creates it empty,
/// a call after the previous store was closed reopens the same data.
pub trait StoreFactory: Send + Sync + 'static {
    /// The implementation under test.
    type Store: Store;
    /// Opens (or reopens) the store.
    fn open(&self) -> impl Future<Output = Self::Store> + Send;
}

/// Expands to one `#[tokio::test]` (multi-threaded runtime) per conformance test, each with a
/// fresh factory made by evaluating `$factory`.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr) => {
        $crate::store_conformance_tests!(@tests $factory;
            get_put_delete,
            namespaces_are_separate,
            versions_increase,
            empty_keys_and_values,
            scan_ranges,
            scan_binary_keys,
            expect_absent,
            expect_version,
            delete_at,
            failed_batch_writes_nothing,
            expect_sees_earlier_ops_of_the_batch,
            append_keys_and_order,
            batch_atomicity,
            mixed_group_outcomes,
            concurrent_appliers,
            conflicting_cas_one_winner,
            cas_counter,
            persistence_across_reopen,
            closed_store_errors,
            close_drains_pending,
            deferred_batches,
        );
    };
    (@tests $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::conformance::$name($factory).await;
            }
        )*
    };
}

/// Runs every test, each with a fresh factory from `make`.
pub async fn run_all<F: StoreFactory>(make: impl Fn() -> F) {
    get_put_delete(make()).await;
    namespaces_are_separate(make()).await;
    versions_increase(make()).await;
    empty_keys_and_values(make()).await;
    scan_ranges(make()).await;
    scan_binary_keys(make()).await;
    expect_absent(make()).await;
    expect_version(make()).await;
    delete_at(make()).await;
    failed_batch_writes_nothing(make()).await;
    expect_sees_earlier_ops_of_the_batch(make()).await;
    append_keys_and_order(make()).await;
    batch_atomicity(make()).await;
    mixed_group_outcomes(make()).await;
    concurrent_appliers(make()).await;
    conflicting_cas_one_winner(make()).await;
    cas_counter(make()).await;
    persistence_across_reopen(make()).await;
    closed_store_errors(make()).await;
    close_drains_pending(make()).await;
    deferred_batches(make()).await;
}

const NS: &str = "test.items";

async fn value_of<S: Store>(s: &S, ns: &str, key: &[u8]) -> Option<Vec<u8>> {
    s.get(ns, key).await.expect("get").map(|v| v.value)
}

async fn keys<S: Store>(s: &S, range: KeyRange, limit: usize, reverse: bool) -> Vec<Vec<u8>> {
    s.scan(NS, range, limit, reverse)
        .await
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fn is_conflict(r: &Result<u64, StoreError>) -> bool {
    matches!(r, Err(StoreError::Conflict))
}

/// Put, get, overwrite, delete, delete of an absent key.
pub async fn get_put_delete<F: StoreFactory>(f: F) {
    let s = f.open().await;
    assert_eq!(s.get(NS, b"a").await.unwrap(), None);
    let v1 = s.apply(Batch::new().put(NS, "a", "one")).await.unwrap();
    assert!(v1 > 0, "versions are > 0");
    assert_eq!(
        s.get(NS, b"a").await.unwrap(),
        Some(Versioned {
            value: b"one".to_vec(),
            version: v1
        })
    );
    let v2 = s.apply(Batch::new().put(NS, "a", "two")).await.unwrap();
    assert_eq!(value_of(&s, NS, b"a").await.as_deref(), Some(&b"two"[..]));
    assert_eq!(s.get(NS, b"a").await.unwrap().unwrap().version, v2);
    s.apply(Batch::new().delete(NS, "a")).await.unwrap();
    assert_eq!(s.get(NS, b"a").await.unwrap(), None);
    // Deleting an absent key is not an error.
    s.apply(Batch::new().delete(NS, "a").delete(NS, "never"))
        .await
        .unwrap();
    assert_eq!(s.get(NS, b"a").await.unwrap(), None);
    s.close().await.unwrap();
}

/// The same key in two namespaces is two entries; scans stay in their namespace.
pub async fn namespaces_are_separate<F: StoreFactory>(f: F) {
    let s = f.open().await;
    s.apply(
        Batch::new()
            .put("ns.a", "k", "in a")
            .put("ns.b", "k", "in b")
            .put("ns.ab", "k", "in ab"),
    )
    .await
    .unwrap();
    assert_eq!(
        value_of(&s, "ns.a", b"k").await.as_deref(),
        Some(&b"in a"[..])
    );
    assert_eq!(
        value_of(&s, "ns.b", b"k").await.as_deref(),
        Some(&b"in b"[..])
    );
    assert_eq!(value_of(&s, "ns", b"k").await, None);
    s.apply(Batch::new().delete("ns.a", "k")).await.unwrap();
    assert_eq!(value_of(&s, "ns.a", b"k").await, None);
    assert!(value_of(&s, "ns.b", b"k").await.is_some());
    let all = s.scan("ns.b", KeyRange::all(), 100, false).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.value, b"in b");
    s.close().await.unwrap();
}

/// Every successful batch gets a larger sequence; entries carry the sequence of their last write.
pub async fn versions_increase<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let mut last = 0;
    let mut seqs = Vec::new();
    for i in 0..20u32 {
        let seq = s
            .apply(Batch::new().put(NS, format!("k{}", i % 3), i.to_be_bytes()))
            .await
            .unwrap();
        assert!(seq > last, "sequence {seq} after {last}");
        last = seq;
        seqs.push(seq);
    }
    // k0 was last written by i = 18, k1 by 19, k2 by 17.
    assert_eq!(s.get(NS, b"k0").await.unwrap().unwrap().version, seqs[18]);
    assert_eq!(s.get(NS, b"k1").await.unwrap().unwrap().version, seqs[19]);
    assert_eq!(s.get(NS, b"k2").await.unwrap().unwrap().version, seqs[17]);
    // Every entry written by one batch has that batch's version.
    let seq = s
        .apply(Batch::new().put(NS, "x", "1").put("other", "y", "2"))
        .await
        .unwrap();
    assert_eq!(s.get(NS, b"x").await.unwrap().unwrap().version, seq);
    assert_eq!(s.get("other", b"y").await.unwrap().unwrap().version, seq);
    // A batch of only an Expect or a Delete still commits with a new sequence.
    let seq2 = s
        .apply(Batch::new().expect(NS, "x", Some(seq)))
        .await
        .unwrap();
    assert!(seq2 > seq);
    s.close().await.unwrap();
}

/// The empty key and empty values are ordinary.
pub async fn empty_keys_and_values<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let seq = s
        .apply(Batch::new().put(NS, "", "empty key").put(NS, "k", ""))
        .await
        .unwrap();
    assert_eq!(
        value_of(&s, NS, b"").await.as_deref(),
        Some(&b"empty key"[..])
    );
    assert_eq!(
        s.get(NS, b"k").await.unwrap(),
        Some(Versioned {
            value: vec![],
            version: seq
        })
    );
    // The empty key sorts first.
    assert_eq!(
        keys(&s, KeyRange::all(), 10, false).await,
        vec![b"".to_vec(), b"k".to_vec()]
    );
    s.apply(Batch::new().expect(NS, "", Some(seq)).delete(NS, ""))
        .await
        .unwrap();
    assert_eq!(s.get(NS, b"").await.unwrap(), None);
    s.close().await.unwrap();
}

/// Range bounds, prefixes, limits and direction.
pub async fn scan_ranges<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let names = ["a", "ab", "abc", "abd", "ac", "b", "ba", "c"];
    let mut b = Batch::new();
    // Insert out of order: scans must sort.
    for n in names.iter().rev() {
        b = b.put(NS, *n, format!("v-{n}"));
    }
    s.apply(b).await.unwrap();
    let k = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();

    assert_eq!(keys(&s, KeyRange::all(), 100, false).await, k(&names));
    let mut rev = names.to_vec();
    rev.reverse();
    assert_eq!(keys(&s, KeyRange::all(), 100, true).await, k(&rev));
    assert_eq!(
        keys(&s, KeyRange::prefix(b"ab"), 100, false).await,
        k(&["ab", "abc", "abd"])
    );
    assert_eq!(
        keys(&s, KeyRange::prefix(b"ab"), 100, true).await,
        k(&["abd", "abc", "ab"])
    );
    assert_eq!(
        keys(&s, KeyRange::prefix(b"ab"), 2, true).await,
        k(&["abd", "abc"])
    );
    assert_eq!(
        keys(&s, KeyRange::from(b"abd"), 100, false).await,
        k(&["abd", "ac", "b", "ba", "c"])
    );
    assert_eq!(
        keys(&s, KeyRange::from(b"abca"), 2, false).await,
        k(&["abd", "ac"])
    );
    // start inclusive, end exclusive.
    let r = KeyRange {
        start: Some(b"abc".to_vec()),
        end: Some(b"b".to_vec()),
    };
    assert_eq!(
        keys(&s, r.clone(), 100, false).await,
        k(&["abc", "abd", "ac"])
    );
    assert_eq!(
        keys(&s, r.clone(), 100, true).await,
        k(&["ac", "abd", "abc"])
    );
    assert_eq!(keys(&s, r, 1, true).await, k(&["ac"]));
    // Only an end.
    let r = KeyRange {
        start: None,
        end: Some(b"ab".to_vec()),
    };
    assert_eq!(keys(&s, r.clone(), 100, false).await, k(&["a"]));
    assert_eq!(keys(&s, r, 100, true).await, k(&["a"]));
    // Limits.
    assert_eq!(
        keys(&s, KeyRange::all(), 3, false).await,
        k(&["a", "ab", "abc"])
    );
    assert_eq!(keys(&s, KeyRange::all(), 0, false).await, k(&[]));
    assert_eq!(keys(&s, KeyRange::all(), usize::MAX, false).await.len(), 8);
    // Empty ranges.
    assert!(
        keys(&s, KeyRange::prefix(b"zz"), 100, false)
            .await
            .is_empty()
    );
    let r = KeyRange {
        start: Some(b"b".to_vec()),
        end: Some(b"b".to_vec()),
    };
    assert!(keys(&s, r, 100, false).await.is_empty());
    let r = KeyRange {
        start: Some(b"c".to_vec()),
        end: Some(b"a".to_vec()),
    };
    assert!(keys(&s, r, 100, true).await.is_empty());
    // Values and versions come with the keys.
    let got = s
        .scan(NS, KeyRange::prefix(b"ba"), 10, false)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, b"ba");
    assert_eq!(got[0].1, s.get(NS, b"ba").await.unwrap().unwrap());
    s.close().await.unwrap();
}

/// Keys are compared as unsigned bytes, shorter first on a common prefix; 0x00 and 0xff work.
pub async fn scan_binary_keys<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let all: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x00, 0xff],
        vec![0x01],
        vec![0x7f, 0xff],
        vec![0x80],
        vec![0xfe, 0xff, 0xff],
        vec![0xff],
        vec![0xff, 0x00],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0xff],
    ];
    let mut b = Batch::new();
    for (i, key) in all.iter().enumerate().rev() {
        b = b.put(NS, key.clone(), vec![i as u8]);
    }
    s.apply(b).await.unwrap();
    assert_eq!(keys(&s, KeyRange::all(), 100, false).await, all);
    let mut rev = all.clone();
    rev.reverse();
    assert_eq!(keys(&s, KeyRange::all(), 100, true).await, rev);
    for (i, key) in all.iter().enumerate() {
        assert_eq!(value_of(&s, NS, key).await, Some(vec![i as u8]));
    }
    // Prefixes ending in 0xff have an open or carried upper bound.
    assert_eq!(
        keys(&s, KeyRange::prefix(&[0xff]), 100, false).await,
        all[8..].to_vec()
    );
    assert_eq!(
        keys(&s, KeyRange::prefix(&[0xff, 0xff]), 100, false).await,
        all[10..].to_vec()
    );
    assert_eq!(
        keys(&s, KeyRange::prefix(&[0xfe]), 100, false).await,
        vec![vec![0xfe, 0xff, 0xff]]
    );
    assert_eq!(
        keys(&s, KeyRange::prefix(&[0x00]), 100, true).await,
        vec![vec![0x00, 0xff], vec![0x00, 0x00], vec![0x00]]
    );
    assert_eq!(keys(&s, KeyRange::prefix(&[]), 100, false).await, all);
    assert_eq!(
        keys(&s, KeyRange::from(&[0x80]), 2, false).await,
        vec![vec![0x80], vec![0xfe, 0xff, 0xff]]
    );
    s.close().await.unwrap();
}

/// `Expect { version: None }` holds only while the key is absent.
pub async fn expect_absent<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let create = || Batch::new().expect(NS, "k", None).put(NS, "k", "v");
    let seq = s.apply(create()).await.unwrap();
    assert!(is_conflict(&s.apply(create()).await));
    assert_eq!(s.get(NS, b"k").await.unwrap().unwrap().version, seq);
    s.apply(Batch::new().delete(NS, "k")).await.unwrap();
    s.apply(create()).await.unwrap();
    // An Expect on another namespace's key is independent.
    s.apply(Batch::new().expect("other", "k", None))
        .await
        .unwrap();
    s.close().await.unwrap();
}

/// `Expect { version: Some(v) }` holds only while the key is at exactly `v`.
pub async fn expect_version<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let v1 = s.apply(Batch::new().put(NS, "k", "1")).await.unwrap();
    let v2 = s
        .apply(Batch::new().expect(NS, "k", Some(v1)).put(NS, "k", "2"))
        .await
        .unwrap();
    // Stale version.
    let r = s
        .apply(Batch::new().expect(NS, "k", Some(v1)).put(NS, "k", "3"))
        .await;
    assert!(is_conflict(&r), "{r:?}");
    // Future version, version 0, and expecting a version of an absent key.
    for v in [v2 + 1000, 0] {
        let r = s
            .apply(Batch::new().expect(NS, "k", Some(v)).put(NS, "k", "3"))
            .await;
        assert!(is_conflict(&r), "{r:?}");
    }
    let r = s.apply(Batch::new().expect(NS, "absent", Some(v1))).await;
    assert!(is_conflict(&r), "{r:?}");
    // Expecting absence of a present key.
    let r = s.apply(Batch::new().expect(NS, "k", None)).await;
    assert!(is_conflict(&r), "{r:?}");
    assert_eq!(
        s.get(NS, b"k").await.unwrap(),
        Some(Versioned {
            value: b"2".to_vec(),
            version: v2
        })
    );
    // Conflicts do not disturb later sequences.
    let v3 = s
        .apply(Batch::new().expect(NS, "k", Some(v2)).delete(NS, "k"))
        .await
        .unwrap();
    assert!(v3 > v2);
    assert_eq!(s.get(NS, b"k").await.unwrap(), None);
    s.close().await.unwrap();
}

/// `DeleteAt` removes a key at exactly the given version; otherwise the whole batch fails,
/// undoing its earlier ops, also earlier `DeleteAt`s.
pub async fn delete_at<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let va = s.apply(Batch::new().put(NS, "a", "1")).await.unwrap();
    let vb = s
        .apply(Batch::new().put(NS, "b", "1").put(NS, "c", "1"))
        .await
        .unwrap();
    // Stale, future, zero and huge versions, and an absent key: conflicts.
    for (key, v) in [
        ("b", va),
        ("b", vb + 1000),
        ("b", 0),
        ("b", u64::MAX),
        ("absent", vb),
    ] {
        let r = s.apply(Batch::new().delete_at(NS, key, v)).await;
        assert!(is_conflict(&r), "{key} at {v}: {r:?}");
    }
    // One failing DeleteAt undoes the batch's earlier writes and DeleteAts.
    let r = s
        .apply(
            Batch::new()
                .delete_at(NS, "a", va)
                .put(NS, "new", "x")
                .delete_at(NS, "b", vb)
                .delete_at(NS, "c", va),
        )
        .await;
    assert!(is_conflict(&r), "{r:?}");
    assert_eq!(
        keys(&s, KeyRange::all(), 10, false).await,
        vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
    );
    // At their versions: removed, with the batch's other ops.
    s.apply(
        Batch::new()
            .delete_at(NS, "a", va)
            .delete_at(NS, "b", vb)
            .put(NS, "new", "x"),
    )
    .await
    .unwrap();
    assert_eq!(
        keys(&s, KeyRange::all(), 10, false).await,
        vec![b"c".to_vec(), b"new".to_vec()]
    );
    // Once removed, the same DeleteAt conflicts.
    let r = s.apply(Batch::new().delete_at(NS, "a", va)).await;
    assert!(is_conflict(&r), "{r:?}");
    s.close().await.unwrap();
}

/// A batch whose Expect fails writes none of its ops, before or after the Expect.
pub async fn failed_batch_writes_nothing<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let v = s
        .apply(
            Batch::new()
                .put(NS, "keep", "old")
                .put(NS, "gone?", "still here"),
        )
        .await
        .unwrap();
    let before = s.scan(NS, KeyRange::all(), 100, false).await.unwrap();
    let r = s
        .apply(
            Batch::new()
                .put(NS, "new1", "x")
                .put(NS, "keep", "new")
                .delete(NS, "gone?")
                .append(NS, "appended")
                .put("other.ns", "z", "x")
                .expect(NS, "guard", Some(v))
                .put(NS, "new2", "y"),
        )
        .await;
    assert!(is_conflict(&r), "{r:?}");
    assert_eq!(
        s.scan(NS, KeyRange::all(), 100, false).await.unwrap(),
        before
    );
    assert!(
        s.scan("other.ns", KeyRange::all(), 100, false)
            .await
            .unwrap()
            .is_empty()
    );
    s.close().await.unwrap();
}

/// Ops apply in order; an Expect sees the batch's own earlier writes.
pub async fn expect_sees_earlier_ops_of_the_batch<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let r = s
        .apply(Batch::new().put(NS, "k", "v").expect(NS, "k", None))
        .await;
    assert!(is_conflict(&r), "{r:?}");
    assert_eq!(s.get(NS, b"k").await.unwrap(), None);
    let v = s.apply(Batch::new().put(NS, "k", "v")).await.unwrap();
    s.apply(
        Batch::new()
            .delete(NS, "k")
            .expect(NS, "k", None)
            .put(NS, "k", "again"),
    )
    .await
    .unwrap();
    assert_eq!(value_of(&s, NS, b"k").await.as_deref(), Some(&b"again"[..]));
    assert!(s.get(NS, b"k").await.unwrap().unwrap().version > v);
    s.close().await.unwrap();
}

/// Appended keys are `seq (u64 BE) ++ op index (u16 BE)` and scan in commit order.
pub async fn append_keys_and_order<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let mut expected = BTreeMap::new();
    for round in 0..5u8 {
        let seq = s
            .apply(
                Batch::new()
                    .put("side", [round], "x")
                    .append(NS, [round, 1])
                    .append(NS, [round, 2])
                    .append("other.log", [round]),
            )
            .await
            .unwrap();
        let key = |index: u16| {
            let mut k = seq.to_be_bytes().to_vec();
            k.extend_from_slice(&index.to_be_bytes());
            k
        };
        expected.insert(key(1), vec![round, 1]);
        expected.insert(key(2), vec![round, 2]);
        let other = s.get("other.log", &key(3)).await.unwrap().unwrap();
        assert_eq!(
            other,
            Versioned {
                value: vec![round],
                version: seq
            }
        );
    }
    let got = s.scan(NS, KeyRange::all(), 100, false).await.unwrap();
    let got_kv: Vec<(Vec<u8>, Vec<u8>)> = got
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = expected.into_iter().collect();
    assert_eq!(got_kv, want);
    // Commit order: values were appended in round order.
    let values: Vec<Vec<u8>> = got.iter().map(|(_, v)| v.value.clone()).collect();
    let mut sorted = values.clone();
    sorted.sort();
    assert_eq!(values, sorted);
    for (key, v) in &got {
        assert_eq!(key.len(), 10);
        assert_eq!(u64::from_be_bytes(key[..8].try_into().unwrap()), v.version);
    }
    // Appends from concurrent batches also come out in commit (sequence) order.
    let s = Arc::new(s);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..16u8 {
        let s = Arc::clone(&s);
        tasks.spawn(async move { s.apply(Batch::new().append("log", [t])).await.unwrap() });
    }
    let mut seqs = tasks.join_all().await;
    seqs.sort();
    let log = s.scan("log", KeyRange::all(), 100, false).await.unwrap();
    let log_seqs: Vec<u64> = log.iter().map(|(_, v)| v.version).collect();
    assert_eq!(log_seqs, seqs);
    s.close().await.unwrap();
}

/// A successful batch is all visible at once: with concurrent readers, never half of it.
pub async fn batch_atomicity<F: StoreFactory>(f: F) {
    let s = Arc::new(f.open().await);
    let width = 20usize;
    let mut init = Batch::new();
    for i in 0..width {
        init = init.put(NS, format!("k{i:02}"), 0u32.to_be_bytes());
    }
    s.apply(init).await.unwrap();
    let writer = {
        let s = Arc::clone(&s);
        tokio::spawn(async move {
            for round in 1..=30u32 {
                let mut b = Batch::new();
                for i in 0..width {
                    b = b.put(NS, format!("k{i:02}"), round.to_be_bytes());
                }
                s.apply(b).await.unwrap();
            }
        })
    };
    let mut reads = 0;
    loop {
        let done = writer.is_finished();
        let rows = s.scan(NS, KeyRange::all(), 100, false).await.unwrap();
        assert_eq!(rows.len(), width);
        let first = &rows[0].1;
        for (_, v) in &rows {
            assert_eq!(v, first, "a scan saw a partly applied batch");
        }
        reads += 1;
        if done {
            break;
        }
    }
    writer.await.unwrap();
    assert!(reads > 0);
    let rows = s.scan(NS, KeyRange::all(), 100, false).await.unwrap();
    assert!(rows.iter().all(|(_, v)| v.value == 30u32.to_be_bytes()));
    s.close().await.unwrap();
}

/// Conflicting and succeeding batches submitted together each get their own outcome.
pub async fn mixed_group_outcomes<F: StoreFactory>(f: F) {
    let s = Arc::new(f.open().await);
    let base = s.apply(Batch::new().put(NS, "base", "b")).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64u32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let key = format!("k{i}");
            let b = if i % 2 == 0 {
                Batch::new()
                    .expect(NS, "base", Some(base))
                    .put(NS, key.as_str(), "ok")
            } else {
                Batch::new()
                    .put(NS, key.as_str(), "bad")
                    .expect(NS, "base", None)
            };
            (i, s.apply(b).await)
        });
    }
    let mut seen = HashSet::new();
    for (i, r) in tasks.join_all().await {
        let got = value_of(&*s, NS, format!("k{i}").as_bytes()).await;
        if i % 2 == 0 {
            let seq = r.unwrap();
            assert!(seq > base);
            assert!(seen.insert(seq), "sequence {seq} given twice");
            assert_eq!(got.as_deref(), Some(&b"ok"[..]));
        } else {
            assert!(is_conflict(&r), "{r:?}");
            assert_eq!(got, None);
        }
    }
    s.close().await.unwrap();
}

/// Many tasks applying at once: all succeed, sequences are distinct, every write is visible.
pub async fn concurrent_appliers<F: StoreFactory>(f: F) {
    let s = Arc::new(f.open().await);
    let tasks_n = 64u32;
    let per_task = 10u32;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..tasks_n {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let mut out = Vec::new();
            let mut last = 0;
            for i in 0..per_task {
                let key = format!("t{t:03}-{i:03}");
                let seq = s
                    .apply(
                        Batch::new()
                            .put(NS, key.as_str(), key.clone())
                            .append("log", key.clone()),
                    )
                    .await
                    .unwrap();
                assert!(seq > last, "one task's sequences increase");
                last = seq;
                // Read-your-writes right after apply returns.
                let got = s.get(NS, key.as_bytes()).await.unwrap().unwrap();
                assert_eq!(got.version, seq);
                out.push((key, seq));
            }
            out
        });
    }
    let written: Vec<(String, u64)> = tasks.join_all().await.into_iter().flatten().collect();
    assert_eq!(written.len(), (tasks_n * per_task) as usize);
    let seqs: HashSet<u64> = written.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs.len(), written.len(), "sequences are distinct");
    let rows = s
        .scan(NS, KeyRange::all(), usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(rows.len(), written.len());
    let by_key: BTreeMap<Vec<u8>, Versioned> = rows.into_iter().collect();
    for (key, seq) in &written {
        let v = &by_key[key.as_bytes()];
        assert_eq!(v.value, key.as_bytes());
        assert_eq!(v.version, *seq);
    }
    let log = s
        .scan("log", KeyRange::all(), usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(log.len(), written.len());
    s.close().await.unwrap();
}

/// Many tasks compare-and-set the same key from the same version: exactly one wins.
pub async fn conflicting_cas_one_winner<F: StoreFactory>(f: F) {
    let s = Arc::new(f.open().await);
    for round in 0..5u32 {
        let v0 = s
            .apply(Batch::new().put(NS, "cell", "start"))
            .await
            .unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..32u32 {
            let s = Arc::clone(&s);
            tasks.spawn(async move {
                let r = s
                    .apply(Batch::new().expect(NS, "cell", Some(v0)).put(
                        NS,
                        "cell",
                        format!("{round}-{t}"),
                    ))
                    .await;
                (t, r)
            });
        }
        let results = tasks.join_all().await;
        let winners: Vec<(u32, u64)> = results
            .iter()
            .filter_map(|(t, r)| r.as_ref().ok().map(|seq| (*t, *seq)))
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|(_, r)| r.is_ok() || is_conflict(r)));
        let (t, seq) = winners[0];
        assert_eq!(
            s.get(NS, b"cell").await.unwrap(),
            Some(Versioned {
                value: format!("{round}-{t}").into_bytes(),
                version: seq
            })
        );
    }
    // Create-if-absent races the same way.
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32u32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            s.apply(
                Batch::new()
                    .expect(NS, "once", None)
                    .put(NS, "once", t.to_be_bytes()),
            )
            .await
        });
    }
    let results = tasks.join_all().await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results.iter().all(|r| r.is_ok() || is_conflict(r)));
    s.close().await.unwrap();
}

/// Read-modify-write with retry on conflict never loses an increment.
pub async fn cas_counter<F: StoreFactory>(f: F) {
    let s = Arc::new(f.open().await);
    let tasks_n = 8u64;
    let per_task = 15u64;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..tasks_n {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let mut conflicts = 0u64;
            for _ in 0..per_task {
                loop {
                    let cur = s.get(NS, b"counter").await.unwrap();
                    let (n, expect) = match &cur {
                        Some(v) => (
                            u64::from_be_bytes(v.value.as_slice().try_into().unwrap()),
                            Some(v.version),
                        ),
                        None => (0, None),
                    };
                    let b = Batch::new().expect(NS, "counter", expect).put(
                        NS,
                        "counter",
                        (n + 1).to_be_bytes(),
                    );
                    match s.apply(b).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict) => conflicts += 1,
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            conflicts
        });
    }
    tasks.join_all().await;
    let v = s.get(NS, b"counter").await.unwrap().unwrap();
    assert_eq!(
        u64::from_be_bytes(v.value.as_slice().try_into().unwrap()),
        tasks_n * per_task
    );
    s.close().await.unwrap();
}

/// Data, versions and the sequence survive close and reopen.
pub async fn persistence_across_reopen<F: StoreFactory>(f: F) {
    let s = f.open().await;
    let v1 = s
        .apply(Batch::new().put(NS, "a", "1").put(NS, [0xff, 0x00], "bin"))
        .await
        .unwrap();
    let v2 = s
        .apply(Batch::new().put(NS, "b", "2").append("log", "entry"))
        .await
        .unwrap();
    s.apply(Batch::new().put(NS, "gone", "x")).await.unwrap();
    let v3 = s.apply(Batch::new().delete(NS, "gone")).await.unwrap();
    let before = s.scan(NS, KeyRange::all(), 100, false).await.unwrap();
    s.close().await.unwrap();
    drop(s);

    let s = f.open().await;
    assert_eq!(
        s.scan(NS, KeyRange::all(), 100, false).await.unwrap(),
        before
    );
    assert_eq!(s.get(NS, b"a").await.unwrap().unwrap().version, v1);
    assert_eq!(s.get(NS, b"gone").await.unwrap(), None);
    let log = s.scan("log", KeyRange::all(), 10, false).await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].1.version, v2);
    // Sequences stay monotonic across restarts.
    let v4 = s
        .apply(Batch::new().expect(NS, "b", Some(v2)).put(NS, "c", "3"))
        .await
        .unwrap();
    assert!(v4 > v3, "sequence {v4} after restart, last was {v3}");
    s.close().await.unwrap();
    drop(s);

    let s = f.open().await;
    assert_eq!(s.get(NS, b"c").await.unwrap().unwrap().version, v4);
    s.close().await.unwrap();
}

/// After close every call fails with `Closed`; closing twice is harmless.
pub async fn closed_store_errors<F: StoreFactory>(f: F) {
    let s = f.open().await;
    s.apply(Batch::new().put(NS, "k", "v")).await.unwrap();
    s.close().await.unwrap();
    assert!(matches!(s.get(NS, b"k").await, Err(StoreError::Closed)));
    assert!(matches!(
        s.scan(NS, KeyRange::all(), 10, false).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        s.scan(NS, KeyRange::all(), 0, false).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        s.apply(Batch::new().put(NS, "k2", "v")).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        s.apply(Batch::new()).await,
        Err(StoreError::Closed)
    ));
    s.close().await.unwrap();
    drop(s);
    // The refused write did not happen.
    let s = f.open().await;
    assert_eq!(s.get(NS, b"k2").await.unwrap(), None);
    assert!(s.get(NS, b"k").await.unwrap().is_some());
    s.close().await.unwrap();
}

/// `close` racing with writers: every write acknowledged `Ok` is durable, the rest get `Closed`.
pub async fn close_drains_pending<F: StoreFactory>(f: F) {
    let s = Arc::new(f.open().await);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..32u32 {
        let s = Arc::clone(&s);
        tasks.spawn(async move {
            let mut acked = Vec::new();
            for i in 0..1000u32 {
                let key = format!("t{t:02}-{i:04}");
                match s.apply(Batch::new().put(NS, key.as_str(), "v")).await {
                    Ok(seq) => acked.push((key, seq)),
                    Err(StoreError::Closed) => return (acked, true),
                    Err(e) => panic!("{e}"),
                }
                tokio::task::yield_now().await;
            }
            (acked, false)
        });
    }
    // Let some writes through, then close underneath the writers.
    loop {
        let n = s.scan(NS, KeyRange::all(), 200, false).await.unwrap().len();
        if n >= 200 {
            break;
        }
        tokio::task::yield_now().await;
    }
    s.close().await.unwrap();
    let results = tasks.join_all().await;
    let s2 = f.open().await;
    let mut total = 0;
    for (acked, _) in &results {
        for (key, seq) in acked {
            let v = s2.get(NS, key.as_bytes()).await.unwrap();
            assert_eq!(v.map(|v| v.version), Some(*seq), "acknowledged {key} lost");
            total += 1;
        }
    }
    assert!(total >= 200);
    // Each writer stopped at its first refused write: it saw no gap.
    let stored = s2
        .scan(NS, KeyRange::all(), usize::MAX, false)
        .await
        .unwrap();
    assert_eq!(stored.len(), total, "only acknowledged writes are stored");
    s2.close().await.unwrap();
}

/// `apply_deferred` keeps every promise but the sync: its batches are atomic, conditional,
/// visible when it returns, ordered with ordinary batches (one sequence), and still there after
/// a reopen.
pub async fn deferred_batches<F: StoreFactory>(f: F) {
    let s = std::sync::Arc::new(f.open().await);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u8 {
        let s = std::sync::Arc::clone(&s);
        tasks.spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..50u8 {
                let batch = Batch::new().put(NS, [t, i], [i]).append("log", [t, i]);
                // Half the tasks defer, the others alternate: groups mix both kinds.
                let deferred = t % 2 == 0 || i % 2 == 0;
                let seq = if deferred {
                    s.apply_deferred(batch).await.unwrap()
                } else {
                    s.apply(batch).await.unwrap()
                };
                // Visible at once.
                assert_eq!(value_of(&*s, NS, &[t, i]).await, Some(vec![i]));
                seqs.push(seq);
            }
            seqs
        });
    }
    let mut all = Vec::new();
    for seqs in tasks.join_all().await {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "per-task order");
        all.extend(seqs);
    }
    let distinct: std::collections::BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 400, "one distinct sequence per batch");
    // A deferred batch's expectations are checked like any other.
    s.apply_deferred(Batch::new().expect(NS, "absent", None).put(NS, "d", "1"))
        .await
        .unwrap();
    assert!(is_conflict(
        &s.apply_deferred(Batch::new().expect(NS, "d", None).put(NS, "e", "1"))
            .await
    ));
    assert_eq!(value_of(&*s, NS, b"e").await, None);
    let log = s.scan("log", KeyRange::all(), 1000, false).await.unwrap();
    assert_eq!(log.len(), 400);
    assert!(log.windows(2).all(|w| w[0].1.version < w[1].1.version));
    s.close().await.unwrap();
    drop(s);

    let s = f.open().await;
    assert_eq!(
        s.scan("log", KeyRange::all(), 1000, false)
            .await
            .unwrap()
            .len(),
        400
    );
    assert_eq!(value_of(&s, NS, b"d").await, Some(b"1".to_vec()));
    s.close().await.unwrap();
}
