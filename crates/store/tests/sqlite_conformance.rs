//! The conformance suite against [`SqliteStore`], plus SQLite-specific checks.

use std::path::PathBuf;

use sluice_store::conformance::StoreFactory;
use sluice_store::sqlite::{MIGRATIONS, SqliteOptions, SqliteStore, SyncMode};
use sluice_store::{Batch, KeyRange, Store, StoreError};

struct Sqlite {
    dir: tempfile::TempDir,
    options: SqliteOptions,
}

impl Sqlite {
    fn new() -> Self {
        Self::with(SqliteOptions::default())
    }

    fn with(options: SqliteOptions) -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            options,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("sluice.db")
    }
}

impl StoreFactory for Sqlite {
    type Store = SqliteStore;

    async fn open(&self) -> SqliteStore {
        let path = self.path();
        let options = self.options.clone();
        tokio::task::spawn_blocking(move || SqliteStore::open(&path, options))
            .await
            .unwrap()
            .expect("open")
    }
}

sluice_store::store_conformance_tests!(Sqlite::new());

/// The suite again with the other knobs: NORMAL sync, one read connection, groups of 2.
mod small_pool_normal_sync {
    use super::*;
    sluice_store::store_conformance_tests!(Sqlite::with(SqliteOptions {
        sync: SyncMode::Normal,
        read_connections: 1,
        max_group: 2,
        ..SqliteOptions::default()
    }));
}

fn raw(path: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

#[tokio::test]
async fn newer_schema_is_refused_untouched() {
    let f = Sqlite::new();
    let s = f.open().await;
    s.apply(Batch::new().put("ns", "k", "v")).await.unwrap();
    s.close().await.unwrap();
    let newer = MIGRATIONS.len() + 1;
    raw(&f.path())
        .execute_batch(&format!("PRAGMA user_version = {newer};"))
        .unwrap();
    let err = SqliteStore::open(&f.path(), SqliteOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Backend(_)));
    assert!(text.contains("newer"), "{text}");
    let version: i64 = raw(&f.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, newer);
    // Back to the version this binary knows: opens with the data intact.
    raw(&f.path())
        .execute_batch(&format!("PRAGMA user_version = {};", MIGRATIONS.len()))
        .unwrap();
    let s = f.open().await;
    assert_eq!(s.get("ns", b"k").await.unwrap().unwrap().value, b"v");
    s.close().await.unwrap();
}

#[tokio::test]
async fn a_store_of_schema_version_1_is_migrated_with_its_data() {
    let f = Sqlite::new();
    let conn = raw(&f.path());
    conn.execute_batch(MIGRATIONS[0]).unwrap();
    conn.execute_batch(&format!(
        "INSERT INTO kv VALUES ('ns', x'01', x'aa', 3), ('ns', x'02', zeroblob(300000), 4),
                              ('other', x'01', x'bb', 5);
         UPDATE meta SET value = 5 WHERE name = 'last_seq';
         PRAGMA user_version = 1; PRAGMA application_id = {};",
        sluice_store::sqlite::APPLICATION_ID
    ))
    .unwrap();
    drop(conn);
    let s = f.open().await;
    let got = s.get("ns", &[1]).await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (vec![0xaa], 3));
    let all = s.scan("ns", KeyRange::all(), 10, false).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].1.value.len(), 300_000);
    // Upserts still find the existing row, and sequences continue after the old last one.
    let seq = s.apply(Batch::new().put("ns", [1u8], "new")).await.unwrap();
    assert!(seq > 5);
    assert_eq!(s.get("ns", &[1]).await.unwrap().unwrap().value, b"new");
    assert_eq!(
        s.scan("ns", KeyRange::all(), 10, false)
            .await
            .unwrap()
            .len(),
        2
    );
    s.close().await.unwrap();
    let version: i64 = raw(&f.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version as usize, MIGRATIONS.len());
    // Range scans walk the (ns, key) index in order, without sorting the rows.
    let plan: Vec<String> = raw(&f.path())
        .prepare(
            "EXPLAIN QUERY PLAN SELECT key, value, version FROM kv WHERE ns = 'ns' \
             AND key >= x'01' ORDER BY key DESC LIMIT 10",
        )
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let plan = plan.join("; ");
    assert!(
        plan.contains("kv_ns_key") && !plan.contains("TEMP B-TREE"),
        "{plan}"
    );
}

#[tokio::test]
async fn foreign_database_is_refused() {
    let f = Sqlite::new();
    raw(&f.path())
        .execute_batch("PRAGMA application_id = 42; CREATE TABLE t(x);")
        .unwrap();
    let err = SqliteStore::open(&f.path(), SqliteOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a sluice store"), "{err}");

    // No application id but tables of its own: refused too, and left as it was (not WAL).
    let other = f.dir.path().join("other.db");
    raw(&other)
        .execute_batch("CREATE TABLE kv(x); INSERT INTO kv VALUES (1);")
        .unwrap();
    let err = SqliteStore::open(&other, SqliteOptions::default()).unwrap_err();
    assert!(err.to_string().contains("not a sluice store"), "{err}");
    let mode: String = raw(&other)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "delete");
}

#[tokio::test]
async fn fresh_store_has_the_documented_format() {
    let f = Sqlite::new();
    let s = f.open().await;
    let seq = s
        .apply(Batch::new().put("ns", [0xffu8, 0], "v").append("log", "e"))
        .await
        .unwrap();
    // Read through a second connection while the store is open (WAL allows it).
    let conn = raw(&f.path());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .unwrap();
    assert_eq!(app, sluice_store::sqlite::APPLICATION_ID);
    let last: i64 = conn
        .query_row("SELECT value FROM meta WHERE name = 'last_seq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(last as u64, seq);
    let (key, version): (Vec<u8>, i64) = conn
        .query_row("SELECT key, version FROM kv WHERE ns = 'log'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(key, sluice_store::sqlite::append_key(seq, 1));
    assert_eq!(version as u64, seq);
    drop(conn);
    s.close().await.unwrap();
    // Close checkpoints: the WAL is empty afterwards.
    let wal = f.dir.path().join("sluice.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}

#[tokio::test]
async fn drop_without_close_keeps_acknowledged_writes() {
    let f = Sqlite::new();
    let s = f.open().await;
    let seq = s.apply(Batch::new().put("ns", "k", "v")).await.unwrap();
    drop(s);
    let s = f.open().await;
    assert_eq!(s.get("ns", b"k").await.unwrap().unwrap().version, seq);
    s.close().await.unwrap();
}

/// The WAL thread syncs deferred commits within the interval and checkpoints the WAL as it
/// grows, so the writer never has to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_thread_syncs_deferred_commits_and_checkpoints() {
    let f = Sqlite::with(SqliteOptions {
        deferred_sync: std::time::Duration::from_millis(20),
        ..SqliteOptions::default()
    });
    let s = f.open().await;
    s.apply_deferred(Batch::new().append("audit", "read"))
        .await
        .unwrap();
    // The deferred sync comes by itself (bounded wait, no timing claim beyond "eventually").
    let mut waited = 0;
    while s.stats().deferred_syncs == 0 && waited < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(s.stats().deferred_syncs, 1, "{:?}", s.stats());

    // 24 MiB through both kinds of commit: the writer asks for checkpoints on the way.
    let blob = vec![7u8; 256 * 1024];
    for i in 0..96u32 {
        let batch = Batch::new().put("blobs", i.to_be_bytes(), blob.clone());
        if i % 2 == 0 {
            s.apply_deferred(batch).await.unwrap();
        } else {
            s.apply(batch).await.unwrap();
        }
    }
    let mut waited = 0;
    while s.stats().checkpoints < 3 && waited < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        waited += 1;
    }
    assert!(s.stats().checkpoints >= 3, "{:?}", s.stats());
    let wal = std::fs::metadata(f.path().with_extension("db-wal")).unwrap();
    assert!(
        wal.len() < 80 * 1024 * 1024,
        "WAL of {} bytes after checkpoints",
        wal.len()
    );
    s.close().await.unwrap();
    let s = f.open().await;
    assert_eq!(
        s.scan("blobs", sluice_store::KeyRange::all(), 200, false)
            .await
            .unwrap()
            .len(),
        96
    );
    s.close().await.unwrap();
}

/// Under sustained writes from several tasks (the writer never idle) the WAL still starts over:
/// the file stays far below what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wal_stays_bounded_under_sustained_writes() {
    // NORMAL sync: no fsync per group, so the writer commits back to back.
    let f = Sqlite::with(SqliteOptions {
        sync: SyncMode::Normal,
        ..SqliteOptions::default()
    });
    let s = std::sync::Arc::new(f.open().await);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8u8 {
        let s = std::sync::Arc::clone(&s);
        tasks.spawn(async move {
            let blob = vec![t; 8 * 1024];
            for i in 0..4096u32 {
                // Overwrites, so the database itself stays small: what grows is the WAL.
                let batch = Batch::new().put("blobs", [t, (i % 8) as u8], blob.clone());
                s.apply(batch).await.unwrap();
            }
        });
    }
    tasks.join_all().await;
    // 256 MiB went through the WAL; it starts over near 64 MiB (`RESTART_FRAMES`).
    let wal = std::fs::metadata(f.path().with_extension("db-wal")).unwrap();
    assert!(
        wal.len() < 100 * 1024 * 1024,
        "WAL of {} MiB after 256 MiB of writes",
        wal.len() >> 20
    );
    std::sync::Arc::try_unwrap(s)
        .unwrap()
        .close()
        .await
        .unwrap();
}
