//! Crash test: a child process applies batches from concurrent tasks and prints every
//! acknowledged commit; the parent SIGKILLs it mid-stream, reopens the store and checks that every
//! acknowledged write is there, and that no batch survived in part. Half the writers commit
//! with `apply_deferred`, whose batches must survive the kill the same way.
//!
//! The child is this same test binary running the ignored `crash_child` test with
//! `SLUICE_STORE_CRASH_DB` set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;

use sluice_store::sqlite::{SqliteOptions, SqliteStore, SyncMode, append_key};
use sluice_store::{Batch, KeyRange, Store};

const ENV_DB: &str = "SLUICE_STORE_CRASH_DB";
const ENV_SYNC: &str = "SLUICE_STORE_CRASH_SYNC";
const DATA: &str = "crash.data";
const LOG: &str = "crash.log";
const WRITERS: usize = 16;
/// The child stops by itself after this many commits per writer (the parent kills it long before).
const MAX_PER_WRITER: usize = 5_000;
/// The parent kills the child after this many acknowledgements.
const KILL_AFTER: usize = 400;

#[test]
#[ignore = "child process of kill_9_loses_no_acknowledged_write"]
fn crash_child() {
    let db = std::env::var(ENV_DB).expect("run by kill_9_loses_no_acknowledged_write only");
    let options = SqliteOptions {
        sync: sync_mode(&std::env::var(ENV_SYNC).unwrap()),
        ..SqliteOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = Arc::new(SqliteStore::open(db.as_ref(), options).unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            tasks.spawn(async move {
                for i in 0..MAX_PER_WRITER {
                    let key = format!("w{w:02}-{i:05}");
                    // Each batch: a put, an overwrite of the writer's cursor, and an append.
                    let batch = Batch::new()
                        .put(DATA, key.as_str(), vec![w as u8; 100])
                        .put("crash.cursor", format!("w{w:02}"), key.as_str())
                        .append(LOG, key.as_str());
                    // Odd writers use the deferred commit: it too must survive `kill -9`.
                    let seq = if w % 2 == 1 {
                        store.apply_deferred(batch).await.unwrap()
                    } else {
                        store.apply(batch).await.unwrap()
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key} {seq}").unwrap();
                    out.flush().unwrap();
                }
            });
        }
        tasks.join_all().await;
        store.close().await.unwrap();
    });
}

fn sync_mode(name: &str) -> SyncMode {
    match name {
        "full" => SyncMode::Full,
        "normal" => SyncMode::Normal,
        other => panic!("unknown sync mode {other}"),
    }
}

#[test]
fn kill_9_loses_no_acknowledged_write() {
    kill_9_mid_stream("full");
}

/// `synchronous = NORMAL` only risks the last commits on power loss: a killed process loses
/// nothing acknowledged either.
#[test]
fn kill_9_loses_no_acknowledged_write_with_normal_sync() {
    kill_9_mid_stream("normal");
}

fn kill_9_mid_stream(sync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sluice.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ENV_DB, &db)
        .env(ENV_SYNC, sync)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked: BTreeMap<String, u64> = BTreeMap::new();
    let mut killed = false;
    let mut line = String::new();
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break; // EOF: the child is dead (killed, or finished/failed on its own).
        }
        // A line cut by the kill has no newline: it was not a complete acknowledgement.
        let Some(rest) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ACK ")) else {
            continue;
        };
        let (key, seq) = rest.split_once(' ').unwrap();
        assert!(
            acked
                .insert(key.to_string(), seq.parse().unwrap())
                .is_none()
        );
        if acked.len() == KILL_AFTER && !killed {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        killed && status.signal() == Some(9),
        "the child ended on its own ({status:?}) after {} acks: {stderr}",
        acked.len()
    );
    assert!(acked.len() >= KILL_AFTER);

    // Sequences are distinct.
    let mut seqs: Vec<u64> = acked.values().copied().collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), acked.len());
    let max_acked = *seqs.last().unwrap();

    // Reopen after the crash (WAL recovery) and check.
    let integrity: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = SqliteOptions {
            sync: sync_mode(sync),
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&db, options).unwrap();
        for (key, seq) in &acked {
            let got = store.get(DATA, key.as_bytes()).await.unwrap();
            assert_eq!(
                got.map(|v| v.version),
                Some(*seq),
                "acknowledged write {key} (seq {seq}) lost"
            );
            let log = store.get(LOG, &append_key(*seq, 2)).await.unwrap().unwrap();
            assert_eq!(log.value, key.as_bytes());
        }
        // Every batch that survived (acknowledged or not) survived whole.
        let data = store
            .scan(DATA, KeyRange::all(), usize::MAX, false)
            .await
            .unwrap();
        let log = store
            .scan(LOG, KeyRange::all(), usize::MAX, false)
            .await
            .unwrap();
        assert_eq!(data.len(), log.len());
        assert!(data.len() >= acked.len());
        for (key, v) in &data {
            let entry = store
                .get(LOG, &append_key(v.version, 2))
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("batch {} survived in part", v.version));
            assert_eq!(&entry.value, key);
        }
        // Each writer's cursor is its last surviving write.
        for w in 0..WRITERS {
            let prefix = format!("w{w:02}-");
            let last = store
                .scan(DATA, KeyRange::prefix(prefix.as_bytes()), 1, true)
                .await
                .unwrap();
            let cursor = store
                .get("crash.cursor", format!("w{w:02}").as_bytes())
                .await
                .unwrap();
            assert_eq!(
                last.first().map(|(k, _)| k.clone()),
                cursor.map(|c| c.value)
            );
        }
        // The sequence carries on above everything acknowledged.
        let next = store
            .apply(Batch::new().put("after", "crash", "x"))
            .await
            .unwrap();
        assert!(next > max_acked);
        store.close().await.unwrap();
    });
}
