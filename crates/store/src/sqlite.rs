//! [`SqliteStore`]: the embedded default [`Store`], one SQLite database file.
//!
//! # On-disk format
//! One SQLite 3 database (conventionally `<data-dir>/sluice.db`) in WAL journal mode, so next to
//! it live `sluice.db-wal` (committed transactions not yet checkpointed into the main file) and
//! `sluice.db-shm` (the WAL index). All three belong to the store; copy them together, or close
//! the store first (closing checkpoints and truncates the WAL).
//!
//! The file is marked with `PRAGMA application_id = 0x736c7563` (`"sluc"`); a database with
//! another application id, or without one but with tables, is refused untouched. The schema
//! version is `PRAGMA user_version`: the number of [migrations](MIGRATIONS) applied. At open, the
//! missing migrations are applied in order inside one transaction (all or nothing); a file whose
//! `user_version` is larger than the number of migrations this binary knows was written by a
//! newer sluice and is refused (never touched) with [`StoreError::Backend`] saying so.
//!
//! Schema (migrations 1 and 2):
//! - `kv(ns TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, version INTEGER NOT NULL)`,
//!   a rowid table, with `UNIQUE INDEX kv_ns_key ON kv (ns, key)`: every namespace's entries
//!   (migration 1 made it a `WITHOUT ROWID` table keyed by `(ns, key)`; migration 2 copied it
//!   into this form, so that seeks compare small index cells instead of reading whole large
//!   rows). `ns` is the namespace
//!   name as UTF-8 text; `key` and `value` are the caller's bytes verbatim (an empty key or
//!   value is a zero-length blob, never NULL). SQLite orders blobs with `memcmp` and shorter
//!   first on a common prefix, which is exactly the byte order [`Store::scan`] promises, so
//!   scans are range scans of the `(ns, key)` index. `version` is the commit sequence number of the
//!   batch that last wrote the entry.
//! - `meta(name TEXT PRIMARY KEY, value INTEGER NOT NULL)`: the row `name = 'last_seq'` holds
//!   the last commit sequence number handed out (0 in a new store). Every group transaction reads
//!   it and writes it back in the same transaction as the data, so sequences stay monotonic
//!   across restarts and crashes (a sequence is never reused, even when the file is opened by
//!   two processes one after the other).
//! - Keys written by `Op::Append` are `seq.to_be_bytes()` (8 bytes) followed by the op's index in
//!   its batch as a big-endian `u16` (2 bytes): a batch holds at most 65,536 ops when it appends.
//!
//! # Concurrency
//! - **One writer thread** (`sluice-store-writer`) owns the only read-write connection.
//!   [`Store::apply`] sends its batch and a oneshot reply channel over an unbounded channel and
//!   awaits the reply. The writer takes the first queued batch, then everything else already
//!   queued (up to [`SqliteOptions::max_group`]), and runs the group as one `BEGIN IMMEDIATE`
//!   transaction: each batch runs inside its own `SAVEPOINT` (skipped when no op that can
//!   fail follows a write); a failed `Op::Expect` or `Op::DeleteAt` (a `DELETE ... AND
//!   version = ?` that removed no row) rolls back only that savepoint and answers that caller alone
//!   ([`StoreError::Conflict`]); each successful batch is released and gets the next commit
//!   sequence number, so numbers are distinct and increase in commit order (a rejected batch
//!   consumes none). Then `last_seq` is stored and the transaction commits
//!   once: **one sync for the whole group** (group commit). Only after the commit returns are the
//!   callers answered. If the commit itself fails, every batch of the group is answered
//!   [`StoreError::Backend`] and nothing of the group is visible.
//! - Within a batch, ops apply in order, and an `Op::Expect` sees the effect of the batch's
//!   earlier ops (a batch that puts a key and then expects it absent conflicts with itself).
//! - **Reads** use a pool of [`SqliteOptions::read_connections`] read-only connections, each
//!   query on a Tokio blocking thread (`spawn_blocking`), limited by a semaphore. WAL lets readers
//!   run while the writer writes; a read only sees committed data, and a read started after
//!   `apply` returned sees that write (the commit precedes the reply). A `scan` is one statement,
//!   hence one consistent snapshot.
//!
//! # Durability
//! [`SyncMode::Full`] (the default) runs `PRAGMA synchronous = FULL`: in WAL mode SQLite syncs
//! the WAL at every commit, so an acknowledged write survives `kill -9` *and* power loss / OS
//! crash. [`SyncMode::Normal`] runs `synchronous = NORMAL`: the WAL is synced only at checkpoints;
//! an acknowledged write still survives the process being killed (it is in the OS page cache) and
//! the database is never corrupted, but the last transactions before a power loss or kernel crash
//! may be rolled back. Normal trades that window for not paying an fsync per group.
//!
//! Deferred batches ([`Store::apply_deferred`]): a group made only of deferred batches commits
//! with `synchronous = NORMAL` (the writer switches the pragma only when the kind of group
//! changes); a group holding at least one ordinary batch commits as the sync mode says, and in
//! `Full` mode its WAL sync covers every earlier deferred commit too (one file, appended in
//! order). The first deferred commit after a sync arms a deadline of
//! [`SqliteOptions::deferred_sync`]; when it passes with deferred commits still unsynced, the
//! WAL thread fsyncs (`fdatasync`) the `-wal` file, so a deferred batch reaches stable storage
//! within that interval at most (plus the sync itself).
//!
//! # Checkpoints: the WAL thread
//! Checkpoints do not run on the writer: a checkpoint copies pages into the database file and
//! syncs both files, which took the writer (and every caller waiting on a group commit) away
//! for milliseconds at a time and was the whole tail of the KMS latency. The writer runs with
//! `wal_autocheckpoint = 0` and reads, after each commit, how many frames (pages) the WAL
//! holds (SQLite's WAL hook); every [`CHECKPOINT_FRAMES`] new frames (SQLite's own
//! autocheckpoint default) it wakes the WAL thread (`sluice-store-wal`, its own read-write
//! connection), which runs `PRAGMA wal_checkpoint(PASSIVE)` concurrently with the writer's
//! appends (WAL mode allows one checkpointer beside one writer), and also when the store has
//! been written but idle for a second. These copy the bulk of the pages.
//!
//! A background checkpoint alone never lets the WAL start over under sustained writes: SQLite
//! rewinds the WAL only when a transaction begins with every frame already copied, and the
//! writer appends while the WAL thread copies (measured: 765 MB of WAL after 8 s of PutEvents
//! load). So once the WAL holds [`RESTART_FRAMES`] the writer itself runs one passive checkpoint between
//! two groups: it copies only the tail the WAL thread has not reached yet (plus the two syncs),
//! and when it reports every frame copied, the writer's next transaction rewinds the WAL. If a
//! reader's snapshot keeps frames from being copied (or the WAL thread holds the checkpoint
//! lock), it tries again after another [`CHECKPOINT_FRAMES`]; past [`WAL_LIMIT_FRAMES`] it runs
//! `wal_checkpoint(RESTART)`, which waits for those readers. The WAL therefore stays near
//! 64 MiB under any load; `journal_size_limit` (64 MiB) truncates the file after a rewind if it
//! grew larger.
//!
//! # Recovery
//! Nothing of sluice's own: after a crash, the next open lets SQLite replay the WAL. A group
//! transaction is one WAL commit frame set with checksums; a group whose commit frame did not
//! reach the disk is discarded whole, so a batch is never half there, and every batch that was
//! acknowledged is (tested by killing a writer process with SIGKILL, `tests/crash.rs`).
//!
//! # Shutdown
//! [`Store::close`] refuses new calls, lets the writer finish every batch already queued, then
//! the writer checkpoints the WAL (`wal_checkpoint(TRUNCATE)`) and closes its connection; `close`
//! returns when that is done. Later `get`/`scan`/`apply` fail with [`StoreError::Closed`]; a
//! second `close` is a no-op. Dropping the store without `close` detaches the writer, which still
//! finishes the queued batches (each acknowledged write was committed before its reply anyway).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{Batch, KeyRange, Op, Store, StoreError, Versioned};

/// The conventional file name of the store in the data directory (`<data-dir>/sluice.db`).
pub const DEFAULT_FILE_NAME: &str = "sluice.db";

/// The value of `PRAGMA application_id` marking a sluice store ("sluc").
pub const APPLICATION_ID: i32 = 0x736c_7563;

/// The schema migrations, in order. `PRAGMA user_version` is how many were applied.
/// Never edit a released step: append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: the key-value table and the commit sequence.
    "CREATE TABLE kv (
         ns      TEXT    NOT NULL,
         key     BLOB    NOT NULL,
         value   BLOB    NOT NULL,
         version INTEGER NOT NULL,
         PRIMARY KEY (ns, key)
     ) WITHOUT ROWID;
     CREATE TABLE meta (
         name  TEXT PRIMARY KEY,
         value INTEGER NOT NULL
     );
     INSERT INTO meta (name, value) VALUES ('last_seq', 0);",
    // 2: `kv` as a rowid table with a unique index on (ns, key). In a WITHOUT ROWID table a
    // row is a cell of the primary-key b-tree, and SQLite compares a key against a cell whose
    // payload spills to overflow pages by reading the *whole* row: with values of hundreds of
    // KB (Firehose chunks) every insert and every range seek read megabytes. Here the index
    // cells hold only (ns, key, rowid), and the value is fetched once, by rowid.
    "CREATE TABLE kv_rowid (
         ns      TEXT    NOT NULL,
         key     BLOB    NOT NULL,
         value   BLOB    NOT NULL,
         version INTEGER NOT NULL
     );
     INSERT INTO kv_rowid (ns, key, value, version) SELECT ns, key, value, version FROM kv;
     DROP TABLE kv;
     ALTER TABLE kv_rowid RENAME TO kv;
     CREATE UNIQUE INDEX kv_ns_key ON kv (ns, key);",
];

/// How hard a commit syncs (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `synchronous = FULL`: durable against process kill and power loss.
    #[default]
    Full,
    /// `synchronous = NORMAL`: durable against process kill; a power loss may roll back the last
    /// commits (never corrupts).
    Normal,
}

/// New WAL frames after which the writer asks the WAL thread for a checkpoint (SQLite's own
/// autocheckpoint default).
pub const CHECKPOINT_FRAMES: i64 = 1000;

/// WAL frames at which the writer runs the checkpoint that lets the WAL start over (64 MiB of
/// 4 KiB pages; see the module docs).
pub const RESTART_FRAMES: i64 = 16_384;

/// WAL frames past which the writer waits for readers (`wal_checkpoint(RESTART)`) to make the
/// WAL start over (256 MiB of 4 KiB pages).
pub const WAL_LIMIT_FRAMES: i64 = 65_536;

thread_local! {
    /// Frames in the WAL after the last commit on this thread's connection, as SQLite's WAL
    /// hook reports it (the hook runs on the committing thread: the writer).
    static WAL_FRAMES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn record_wal_frames(_: &rusqlite::hooks::Wal, frames: std::ffi::c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.with(|f| f.set(i64::from(frames)));
    Ok(())
}

/// How long the WAL thread waits without a checkpoint request before it checkpoints what was
/// written anyway.
const IDLE_CHECKPOINT: Duration = Duration::from_secs(1);

/// Options of [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Sync mode of commits.
    pub sync: SyncMode,
    /// Read-only connections in the read pool (at least 1).
    pub read_connections: usize,
    /// Most batches committed in one transaction (at least 1).
    pub max_group: usize,
    /// How long a connection waits on a lock held by another connection or process.
    pub busy_timeout: Duration,
    /// Page cache per connection, in KiB.
    pub cache_size_kib: u32,
    /// In [`SyncMode::Full`], the longest a batch committed with [`Store::apply_deferred`] stays
    /// unsynced (`Duration::ZERO`: deferred batches are synced like any other).
    pub deferred_sync: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            sync: SyncMode::Full,
            read_connections: 4,
            max_group: 256,
            busy_timeout: Duration::from_secs(5),
            cache_size_kib: 8 * 1024,
            deferred_sync: Duration::from_millis(50),
        }
    }
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// One `apply`/`apply_deferred` call queued for the writer.
struct Job {
    batch: Batch,
    reply: Reply,
    /// Committed by [`Store::apply_deferred`].
    deferred: bool,
}

/// Counters of the writer since open (for metrics and benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqliteStats {
    /// Group transactions committed (each one sync in [`SyncMode::Full`]).
    pub groups: u64,
    /// Batches committed.
    pub batches: u64,
    /// Batches rejected with [`StoreError::Conflict`].
    pub conflicts: u64,
    /// Checkpoints run by the WAL thread.
    pub checkpoints: u64,
    /// Syncs of the WAL file for deferred batches (not counting the syncs of ordinary commits).
    pub deferred_syncs: u64,
}

#[derive(Debug, Default)]
struct Counters {
    groups: AtomicU64,
    batches: AtomicU64,
    conflicts: AtomicU64,
    checkpoints: AtomicU64,
    deferred_syncs: AtomicU64,
}

/// The SQLite store. Cheap to clone (clones share the store).
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    options: SqliteOptions,
    closed: AtomicBool,
    /// `None` once closed: the writer exits when every sender is gone and the queue is empty.
    sender: RwLock<Option<mpsc::UnboundedSender<Job>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    read_permits: Semaphore,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("options", &self.inner.options)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Backend(format!("value {v} out of range")))
}

fn to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Backend(format!("negative version {v} in store")))
}

fn configure(conn: &Connection, options: &SqliteOptions) -> Result<(), StoreError> {
    conn.busy_timeout(options.busy_timeout).map_err(backend)?;
    // A plan that does not depend on bound values: without it, SQLite (built with STAT4)
    // re-prepares a cached range scan whenever its `LIMIT ?` or bounds change value, which
    // was a quarter of the cost of the dispatcher's queue scans.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(backend)?;
    let sync = match options.sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA cache_size = -{};",
        options.cache_size_kib
    ))
    .map_err(backend)
}

/// Checks that the file is a sluice store (or empty) whose schema this binary knows; returns the
/// number of migrations applied.
fn check_compatible(conn: &Connection) -> Result<usize, StoreError> {
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(backend)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend)?;
    if app_id != APPLICATION_ID {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(backend)?;
        if app_id != 0 || tables != 0 {
            return Err(StoreError::Backend(format!(
                "not a sluice store (application_id {app_id:#x}, {tables} schema objects)"
            )));
        }
    }
    let known = MIGRATIONS.len();
    let applied = usize::try_from(version)
        .map_err(|_| StoreError::Backend(format!("invalid schema version {version}")))?;
    if applied > known {
        return Err(StoreError::Backend(format!(
            "the store's schema version is {applied}, newer than this binary supports ({known}): \
             it was written by a newer sluice; upgrade sluice to open it"
        )));
    }
    Ok(applied)
}

/// Applies the missing migrations (one transaction) after checking the file is ours and not
/// newer than this binary.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    // Checked again under the write lock: another process may have migrated meanwhile.
    let applied = check_compatible(&tx)?;
    let known = MIGRATIONS.len();
    if applied == known {
        return Ok(()); // nothing to do; the transaction rolls back (no writes).
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.execute_batch(step)
            .map_err(|e| StoreError::Backend(format!("migration {}: {e}", i + 1)))?;
    }
    tx.execute_batch(&format!(
        "PRAGMA user_version = {known}; PRAGMA application_id = {APPLICATION_ID};"
    ))
    .map_err(backend)?;
    tx.commit().map_err(backend)
}

fn open_reader(path: &Path, options: &SqliteOptions) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    configure(&conn, options)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the database file `path`, applies pending
    /// migrations and starts the writer thread. Blocking (file I/O): call it at startup or from
    /// a blocking context.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let mut options = options;
        options.read_connections = options.read_connections.max(1);
        options.max_group = options.max_group.max(1);

        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        conn.busy_timeout(options.busy_timeout).map_err(backend)?;
        // Before anything changes the file (switching to WAL writes its header).
        check_compatible(&conn)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "could not enable WAL mode (journal_mode is {mode})"
            )));
        }
        configure(&conn, &options)?;
        // Checkpoints run on the WAL thread, not on the writer (see the module docs); after a
        // WAL restart, a WAL file larger than this is truncated back to it.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA journal_size_limit = 67108864;")
            .map_err(backend)?;
        migrate(&mut conn)?;
        let wal_conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        configure(&wal_conn, &options)?;
        wal_conn
            .execute_batch("PRAGMA wal_autocheckpoint = 0;")
            .map_err(backend)?;

        let mut readers = Vec::with_capacity(options.read_connections);
        for _ in 0..options.read_connections {
            readers.push(open_reader(path, &options)?);
        }

        let (tx, rx) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters::default());
        let (wal_tx, wal_rx) = std::sync::mpsc::channel();
        let wal = WalShared {
            counters: Arc::clone(&counters),
            unsynced: AtomicBool::new(false),
            dirty: AtomicBool::new(false),
        };
        let wal = Arc::new(wal);
        let wal_path = {
            let mut p = path.as_os_str().to_owned();
            p.push("-wal");
            PathBuf::from(p)
        };
        let wal_thread = {
            let wal = Arc::clone(&wal);
            let deferred_sync = options.deferred_sync;
            std::thread::Builder::new()
                .name("sluice-store-wal".into())
                .spawn(move || wal_loop(wal_conn, &wal_path, wal_rx, &wal, deferred_sync))
                .map_err(backend)?
        };
        let writer = Writer {
            conn,
            max_group: options.max_group,
            // Deferred groups commit with NORMAL only where ordinary ones would sync.
            relax_deferred: options.sync == SyncMode::Full && !options.deferred_sync.is_zero(),
            full_now: options.sync == SyncMode::Full,
            wal,
            wal_tx: Some(wal_tx),
            wal_thread: Some(wal_thread),
            frames: 0,
            next_checkpoint: CHECKPOINT_FRAMES,
            next_restart: RESTART_FRAMES,
        };
        let writer = std::thread::Builder::new()
            .name("sluice-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(backend)?;

        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                read_permits: Semaphore::new(options.read_connections),
                options,
                closed: AtomicBool::new(false),
                sender: RwLock::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
                readers: Arc::new(Mutex::new(readers)),
                counters,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer's counters since open.
    pub fn stats(&self) -> SqliteStats {
        let c = &self.inner.counters;
        SqliteStats {
            groups: c.groups.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            deferred_syncs: c.deferred_syncs.load(Ordering::Relaxed),
        }
    }

    /// Queues `batch` for the writer and waits for its commit.
    async fn submit(&self, batch: Batch, deferred: bool) -> Result<u64, StoreError> {
        let (reply, reply_rx) = oneshot::channel();
        {
            let sender = self.inner.sender.read().map_err(backend)?;
            let sender = sender.as_ref().ok_or(StoreError::Closed)?;
            sender
                .send(Job {
                    batch,
                    reply,
                    deferred,
                })
                .map_err(|_| {
                    StoreError::Backend("the store writer stopped (see earlier errors)".into())
                })?;
        }
        reply_rx
            .await
            .map_err(|_| StoreError::Backend("the store writer stopped before answering".into()))?
    }

    /// Runs `f` on a pooled read connection on a blocking thread.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let _permit = self
            .inner
            .read_permits
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(&self.inner.readers);
        let path = self.inner.path.clone();
        let options = self.inner.options.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = pool.lock().map_err(backend)?.pop();
            // A connection is missing only if a query panicked while holding it: replace it.
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&path, &options)?,
            };
            let result = f(&conn);
            pool.lock().map_err(backend)?.push(conn);
            result
        })
        .await
        .map_err(backend)?
    }
}

/// State the writer shares with the WAL thread.
struct WalShared {
    counters: Arc<Counters>,
    /// A deferred group committed since the last sync of the WAL.
    unsynced: AtomicBool,
    /// A group committed since the WAL thread's last checkpoint.
    dirty: AtomicBool,
}

/// What the writer tells the WAL thread.
enum WalMsg {
    /// [`CHECKPOINT_FRAMES`] frames were added since the last request.
    Checkpoint,
    /// A deferred group committed without a sync: arm the deferred-sync deadline.
    Deferred,
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    max_group: usize,
    /// Commit all-deferred groups with `synchronous = NORMAL`.
    relax_deferred: bool,
    /// The connection's current `synchronous` setting is FULL.
    full_now: bool,
    wal: Arc<WalShared>,
    wal_tx: Option<std::sync::mpsc::Sender<WalMsg>>,
    wal_thread: Option<JoinHandle<()>>,
    /// Frames in the WAL after the last commit.
    frames: i64,
    /// Frame count at which to wake the WAL thread next.
    next_checkpoint: i64,
    /// Frame count at which to try rewinding the WAL next.
    next_restart: i64,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Job>) {
        // After `wal_autocheckpoint = 0` (which replaces any WAL hook).
        self.conn.wal_hook(Some(record_wal_frames));
        let mut group = Vec::with_capacity(self.max_group);
        while let Some(first) = rx.blocking_recv() {
            group.push(first);
            while group.len() < self.max_group {
                match rx.try_recv() {
                    Ok(item) => group.push(item),
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
        }
        // Every sender is gone and the queue is drained: stop the WAL thread (it syncs what
        // is pending), then fold the WAL into the main file.
        self.wal_tx.take();
        if let Some(t) = self.wal_thread.take()
            && t.join().is_err()
        {
            tracing::warn!("store: the WAL thread panicked");
        }
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::warn!(error = %e, "store: WAL checkpoint at close failed");
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "store: closing the write connection failed");
        }
    }

    /// Commits one group with the right `synchronous` setting and tells the WAL thread what
    /// it needs to know.
    fn commit(&mut self, group: &mut Vec<Job>) {
        let relaxed = self.relax_deferred && group.iter().all(|j| j.deferred);
        if self.relax_deferred && relaxed == self.full_now {
            let pragma = if relaxed {
                "PRAGMA synchronous = NORMAL"
            } else {
                "PRAGMA synchronous = FULL"
            };
            match self.conn.execute_batch(pragma) {
                Ok(()) => self.full_now = !relaxed,
                Err(e) => tracing::warn!(error = %e, "store: switching synchronous failed"),
            }
        }
        let committed = commit_group(&mut self.conn, group, &self.wal.counters);
        if !committed {
            return;
        }
        let Some(wal_tx) = &self.wal_tx else { return };
        if self.full_now {
            // This commit synced the WAL, earlier deferred commits included.
            self.wal.unsynced.store(false, Ordering::Release);
        } else if relaxed && !self.wal.unsynced.swap(true, Ordering::AcqRel) {
            let _ = wal_tx.send(WalMsg::Deferred);
        }
        self.wal.dirty.store(true, Ordering::Release);
        let frames = WAL_FRAMES.with(std::cell::Cell::get);
        if frames < self.frames {
            // The WAL started over.
            self.next_checkpoint = CHECKPOINT_FRAMES;
            self.next_restart = RESTART_FRAMES;
        }
        self.frames = frames;
        if frames >= self.next_checkpoint {
            self.next_checkpoint = frames + CHECKPOINT_FRAMES;
            let _ = wal_tx.send(WalMsg::Checkpoint);
        }
        if frames >= self.next_restart {
            self.next_restart = frames + CHECKPOINT_FRAMES;
            self.restart_wal();
        }
    }

    /// Copies the WAL's remaining frames so the next transaction rewinds it (module docs).
    fn restart_wal(&mut self) {
        let mode = if self.frames >= WAL_LIMIT_FRAMES {
            "PRAGMA wal_checkpoint(RESTART)"
        } else {
            "PRAGMA wal_checkpoint(PASSIVE)"
        };
        let result = self.conn.query_row(mode, [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match result {
            // Every frame copied and no checkpointer in the way: the WAL starts over.
            Ok((0, log, done)) if log == done => {
                self.wal
                    .counters
                    .checkpoints
                    .fetch_add(1, Ordering::Relaxed);
            }
            // A reader still needs old frames, or the WAL thread holds the checkpoint lock:
            // try again later.
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "store: checkpoint on the writer failed"),
        }
    }
}

/// The WAL thread: checkpoints and deferred syncs (see the module docs). Exits when the
/// writer drops its sender, after syncing what is still pending.
fn wal_loop(
    conn: Connection,
    wal_path: &Path,
    rx: std::sync::mpsc::Receiver<WalMsg>,
    shared: &WalShared,
    deferred_sync: Duration,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut deadline: Option<std::time::Instant> = None;
    loop {
        let now = std::time::Instant::now();
        let wait = deadline.map_or(IDLE_CHECKPOINT, |d| d.saturating_duration_since(now));
        match rx.recv_timeout(wait) {
            Ok(WalMsg::Deferred) => {
                deadline.get_or_insert(now + deferred_sync);
            }
            Ok(WalMsg::Checkpoint) => checkpoint(&conn, shared),
            Err(RecvTimeoutError::Timeout) => {
                if deadline.is_none() && shared.dirty.load(Ordering::Acquire) {
                    checkpoint(&conn, shared);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                sync_wal(wal_path, shared);
                break;
            }
        }
        if deadline.is_some_and(|d| d <= std::time::Instant::now()) {
            deadline = None;
            sync_wal(wal_path, shared);
        }
    }
    drop(conn);
}

/// Syncs the WAL file if a deferred commit is unsynced. `fdatasync` through any descriptor of
/// the file flushes what every connection wrote to it.
fn sync_wal(wal_path: &Path, shared: &WalShared) {
    if !shared.unsynced.swap(false, Ordering::AcqRel) {
        return;
    }
    match std::fs::File::open(wal_path).and_then(|f| f.sync_data()) {
        Ok(()) => {
            shared
                .counters
                .deferred_syncs
                .fetch_add(1, Ordering::Relaxed);
        }
        // No WAL file: every commit was checkpointed and the file removed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            // Keep it pending: the next deferred commit re-arms the deadline.
            shared.unsynced.store(true, Ordering::Release);
            tracing::error!(error = %e, "store: syncing the WAL failed");
        }
    }
}

/// Runs a passive checkpoint.
fn checkpoint(conn: &Connection, shared: &WalShared) {
    shared.dirty.store(false, Ordering::Release);
    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        Ok(()) => {
            shared.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "store: checkpoint failed"),
    }
}

/// Commits `group` (drained) as one transaction; answers every caller. Returns whether the
/// transaction committed.
fn commit_group(conn: &mut Connection, group: &mut Vec<Job>, counters: &Counters) -> bool {
    let mut results: Vec<Result<u64, StoreError>> = Vec::with_capacity(group.len());
    let outcome = (|| -> Result<(), StoreError> {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(backend)?;
        let mut last_seq = to_u64(
            tx.prepare_cached("SELECT value FROM meta WHERE name = 'last_seq'")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
                .map_err(backend)?,
        )?;
        let run = |sql: &str| {
            tx.prepare_cached(sql)
                .and_then(|mut s| s.execute([]))
                .map_err(backend)
        };
        for Job { batch, .. } in group.iter() {
            let seq = last_seq + 1;
            // A batch can fail half-way only on an `Expect` that follows a write; only such a
            // batch needs a savepoint to undo its earlier ops. (Backend errors fail the whole
            // group.) Most batches (audit appends, puts guarded by leading expectations) skip
            // the two extra statements.
            if batch.ops.len() > usize::from(u16::MAX) + 1
                && batch.ops.iter().any(|o| matches!(o, Op::Append { .. }))
            {
                results.push(Err(StoreError::Backend(
                    "a batch with appends holds at most 65536 ops".into(),
                )));
                continue;
            }
            let savepoint = needs_savepoint(batch);
            if savepoint {
                run("SAVEPOINT batch")?;
            }
            match apply_batch(&tx, batch, seq) {
                Ok(()) => {
                    if savepoint {
                        run("RELEASE batch")?;
                    }
                    last_seq = seq;
                    results.push(Ok(seq));
                }
                Err(StoreError::Conflict) => {
                    if savepoint {
                        run("ROLLBACK TO batch")?;
                        run("RELEASE batch")?;
                    }
                    results.push(Err(StoreError::Conflict));
                }
                Err(e) => return Err(e),
            }
        }
        let last = to_i64(last_seq)?;
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'last_seq'")
            .and_then(|mut s| s.execute(params![last]))
            .map_err(backend)?;
        tx.commit().map_err(backend)
    })();
    let committed = outcome.is_ok();
    if committed {
        let ok = results.iter().filter(|r| r.is_ok()).count() as u64;
        let conflicts = results
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict)))
            .count() as u64;
        counters.groups.fetch_add(1, Ordering::Relaxed);
        counters.batches.fetch_add(ok, Ordering::Relaxed);
        counters.conflicts.fetch_add(conflicts, Ordering::Relaxed);
    }
    if let Err(e) = outcome {
        tracing::error!(error = %e, batches = group.len(), "store: group commit failed");
        let text = e.to_string();
        results.clear();
        results.extend(group.iter().map(|_| Err(StoreError::Backend(text.clone()))));
    }
    for (job, result) in group.drain(..).zip(results) {
        // The caller may have gone away (its future dropped); the write stands regardless.
        let _ = job.reply.send(result);
    }
    committed
}

/// Whether an op that can fail (`Expect`, `DeleteAt`) of `batch` comes after one of its
/// writes (so a conflict would have to undo writes already made).
fn needs_savepoint(batch: &Batch) -> bool {
    let mut wrote = false;
    for op in &batch.ops {
        match op {
            Op::Expect { .. } | Op::DeleteAt { .. } if wrote => return true,
            Op::Expect { .. } => {}
            _ => wrote = true,
        }
    }
    false
}

const UPSERT: &str = "INSERT INTO kv (ns, key, value, version) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, version = excluded.version";

fn apply_batch(conn: &Connection, batch: &Batch, seq: u64) -> Result<(), StoreError> {
    let version = to_i64(seq)?;
    for (index, op) in batch.ops.iter().enumerate() {
        match op {
            Op::Put { ns, key, value } => {
                conn.prepare_cached(UPSERT)
                    .and_then(|mut s| s.execute(params![ns, key, value, version]))
                    .map_err(backend)?;
            }
            Op::Delete { ns, key } => {
                conn.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")
                    .and_then(|mut s| s.execute(params![ns, key]))
                    .map_err(backend)?;
            }
            Op::DeleteAt {
                ns,
                key,
                version: expected,
            } => {
                // A version past i64::MAX was never written.
                let Ok(expected) = i64::try_from(*expected) else {
                    return Err(StoreError::Conflict);
                };
                let removed = conn
                    .prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2 AND version = ?3")
                    .and_then(|mut s| s.execute(params![ns, key, expected]))
                    .map_err(backend)?;
                if removed != 1 {
                    return Err(StoreError::Conflict);
                }
            }
            Op::Expect {
                ns,
                key,
                version: expected,
            } => {
                let current: Option<i64> = conn
                    .prepare_cached("SELECT version FROM kv WHERE ns = ?1 AND key = ?2")
                    .and_then(|mut s| s.query_row(params![ns, key], |r| r.get(0)).optional())
                    .map_err(backend)?;
                let current = current.map(to_u64).transpose()?;
                if current != *expected {
                    return Err(StoreError::Conflict);
                }
            }
            Op::Append { ns, value } => {
                let index = u16::try_from(index).map_err(|_| {
                    StoreError::Backend("a batch with appends holds at most 65536 ops".into())
                })?;
                let key = append_key(seq, index);
                conn.prepare_cached(UPSERT)
                    .and_then(|mut s| s.execute(params![ns, &key[..], value, version]))
                    .map_err(backend)?;
            }
        }
    }
    Ok(())
}

/// The key `Op::Append` number `index` of the batch committed as `seq` is stored under.
pub fn append_key(seq: u64, index: u16) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[..8].copy_from_slice(&seq.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn scan_sql(range: &KeyRange, reverse: bool) -> String {
    let mut sql = String::from("SELECT key, value, version FROM kv WHERE ns = ?1");
    if range.start.is_some() {
        sql.push_str(" AND key >= ?2");
    }
    if range.end.is_some() {
        sql.push_str(" AND key < ?3");
    }
    sql.push_str(if reverse {
        " ORDER BY key DESC LIMIT ?4"
    } else {
        " ORDER BY key ASC LIMIT ?4"
    });
    sql
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let ns = ns.to_string();
        let key = key.to_vec();
        self.read(move |conn| {
            let row: Option<(Vec<u8>, i64)> = conn
                .prepare_cached("SELECT value, version FROM kv WHERE ns = ?1 AND key = ?2")
                .and_then(|mut s| {
                    s.query_row(params![ns, key], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()
                })
                .map_err(backend)?;
            row.map(|(value, version)| {
                Ok(Versioned {
                    value,
                    version: to_u64(version)?,
                })
            })
            .transpose()
        })
        .await
    }

    async fn scan(
        &self,
        ns: &str,
        range: KeyRange,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StoreError> {
        if limit == 0 {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(StoreError::Closed);
            }
            return Ok(Vec::new());
        }
        let ns = ns.to_string();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let sql = scan_sql(&range, reverse);
            let mut stmt = conn.prepare_cached(&sql).map_err(backend)?;
            // Unused parameter numbers are simply absent from the SQL; bind by index.
            stmt.raw_bind_parameter(1, &ns).map_err(backend)?;
            if let Some(start) = &range.start {
                stmt.raw_bind_parameter(2, start).map_err(backend)?;
            }
            if let Some(end) = &range.end {
                stmt.raw_bind_parameter(3, end).map_err(backend)?;
            }
            stmt.raw_bind_parameter(4, limit).map_err(backend)?;
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(backend)? {
                let key: Vec<u8> = row.get(0).map_err(backend)?;
                let value: Vec<u8> = row.get(1).map_err(backend)?;
                let version = to_u64(row.get(2).map_err(backend)?)?;
                out.push((key, Versioned { value, version }));
            }
            Ok(out)
        })
        .await
    }

    async fn apply(&self, batch: Batch) -> Result<u64, StoreError> {
        self.submit(batch, false).await
    }

    async fn apply_deferred(&self, batch: Batch) -> Result<u64, StoreError> {
        self.submit(batch, true).await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.inner.closed.store(true, Ordering::Release);
        // Reads waiting for a connection fail with `Closed`.
        self.inner.read_permits.close();
        // Dropping the last sender lets the writer drain the queue and exit.
        self.inner.sender.write().map_err(backend)?.take();
        let handle = self.inner.writer.lock().map_err(backend)?.take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(backend)?
                .map_err(|_| StoreError::Backend("the store writer panicked".into()))?;
        }
        // Release the read connections (no new reads start once `closed` is set).
        self.inner.readers.lock().map_err(backend)?.clear();
        Ok(())
    }
}
