//! The store: the one way sluice's services keep state.
//!
//! # Model
//! The store is a set of *namespaces* (one per kind of record: `kms.keys`, `kms.aliases`,
//! `audit`, ...), each an ordered map from byte keys to byte values. Every stored value carries
//! a `version`: the store-wide commit sequence number of the batch that last wrote it. Services
//! serialize their own records; the store never interprets values.
//!
//! Writes are [`Batch`]es of [`Op`]s applied atomically: either every op is applied or none.
//! `Op::Expect` makes a batch conditional (optimistic concurrency: "this key is absent", or
//! "this key is still at version v"); if any expectation fails the batch is rejected with
//! [`StoreError::Conflict`] and nothing is written. `Op::DeleteAt` is an expectation and a
//! delete in one ("remove this key if it is still at version v"). `Op::Append` adds a value
//! under a key the store assigns: the 8-byte big-endian commit sequence number followed by the
//! op's index in its batch (2 bytes, big-endian), so appended records scan in commit order.
//!
//! # Durability
//! [`Store::apply`] returns only once the batch is durable (committed and synced as configured:
//! a caller may acknowledge its client the moment `apply` returns; `kill -9` right after loses
//! nothing). Implementations batch concurrent `apply` calls into one transaction and one sync
//! (group commit), each batch still atomic and isolated from the others in the group.
//!
//! [`Store::apply_deferred`] is the one relaxation, for records of calls that changed nothing
//! (the audit records of reads such as KMS `Decrypt`): the batch is committed and survives
//! `kill -9` when the call returns, but its sync to stable storage may trail by a bounded
//! interval, so a read-heavy load does not pay an fsync per request. (PostgreSQL's
//! `synchronous_commit = off` per transaction is the same promise, and what a PostgreSQL store
//! would use.) Anything committed with `apply` is synced with, and after, every earlier
//! deferred batch.
//!
//! # Implementations
//! - [`sqlite::SqliteStore`]: the embedded default (WAL mode, one writer thread doing group
//!   commit, a pool of read connections).
//! - PostgreSQL: planned; it must pass [`conformance`] unchanged.

pub mod conformance;
pub mod sqlite;

use async_trait::async_trait;

/// An error from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An `Op::Expect` of the batch did not hold; nothing was written.
    #[error("conflict: a precondition of the batch failed")]
    Conflict,
    /// The store is closed (shutting down).
    #[error("the store is closed")]
    Closed,
    /// An I/O or engine failure. The text is for logs, never for clients.
    #[error("store backend error: {0}")]
    Backend(String),
}

/// A stored value and the commit sequence number that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The value bytes.
    pub value: Vec<u8>,
    /// The store-wide commit sequence number of the batch that last wrote this value (> 0).
    pub version: u64,
}

/// One operation of a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Insert or replace `key` in `ns`.
    Put {
        /// Namespace.
        ns: String,
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` from `ns` (no error if absent).
    Delete {
        /// Namespace.
        ns: String,
        /// Key.
        key: Vec<u8>,
    },
    /// Precondition: `key` in `ns` is absent (`version: None`) or is at exactly `version`.
    /// Like every op it is evaluated in batch order: it sees the batch's earlier ops.
    Expect {
        /// Namespace.
        ns: String,
        /// Key.
        key: Vec<u8>,
        /// Expected version, or `None` for "absent".
        version: Option<u64>,
    },
    /// `Expect(ns, key, Some(version))` and `Delete(ns, key)` in one: removes `key` if it is at
    /// exactly `version`, else the batch fails with [`StoreError::Conflict`] (a queue's "take
    /// this entry if it is still the one I read", with one lookup instead of two).
    DeleteAt {
        /// Namespace.
        ns: String,
        /// Key.
        key: Vec<u8>,
        /// The version the key must be at.
        version: u64,
    },
    /// Insert `value` under a store-assigned key: commit sequence (u64 BE) ++ op index (u16 BE).
    Append {
        /// Namespace.
        ns: String,
        /// Value.
        value: Vec<u8>,
    },
}

/// An atomic group of operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The operations, applied in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(mut self, ns: &str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Put {
            ns: ns.to_string(),
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(mut self, ns: &str, key: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Delete {
            ns: ns.to_string(),
            key: key.into(),
        });
        self
    }

    /// Adds a precondition.
    pub fn expect(mut self, ns: &str, key: impl Into<Vec<u8>>, version: Option<u64>) -> Self {
        self.ops.push(Op::Expect {
            ns: ns.to_string(),
            key: key.into(),
            version,
        });
        self
    }

    /// Adds a conditional delete ([`Op::DeleteAt`]).
    pub fn delete_at(mut self, ns: &str, key: impl Into<Vec<u8>>, version: u64) -> Self {
        self.ops.push(Op::DeleteAt {
            ns: ns.to_string(),
            key: key.into(),
            version,
        });
        self
    }

    /// Adds an append.
    pub fn append(mut self, ns: &str, value: impl Into<Vec<u8>>) -> Self {
        self.ops.push(Op::Append {
            ns: ns.to_string(),
            value: value.into(),
        });
        self
    }
}

/// Which keys a scan visits: `start` inclusive, `end` exclusive (`None` = unbounded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRange {
    /// Inclusive lower bound.
    pub start: Option<Vec<u8>>,
    /// Exclusive upper bound.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        Self::default()
    }

    /// Every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let mut end = prefix.to_vec();
        // The smallest key greater than every key with this prefix.
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return Self {
                    start: Some(prefix.to_vec()),
                    end: Some(end),
                };
            }
        }
        Self {
            start: Some(prefix.to_vec()),
            end: None,
        }
    }

    /// Keys from `start` (inclusive) on.
    pub fn from(start: &[u8]) -> Self {
        Self {
            start: Some(start.to_vec()),
            end: None,
        }
    }
}

/// The store interface every service uses.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Reads one key.
    async fn get(&self, ns: &str, key: &[u8]) -> Result<Option<Versioned>, StoreError>;

    /// Reads up to `limit` entries of `range`, in ascending key order (descending if `reverse`).
    async fn scan(
        &self,
        ns: &str,
        range: KeyRange,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Vec<u8>, Versioned)>, StoreError>;

    /// Applies `batch` atomically and durably; returns the batch's commit sequence number.
    async fn apply(&self, batch: Batch) -> Result<u64, StoreError>;

    /// Applies `batch` atomically like [`Store::apply`], with a relaxed promise for records
    /// of calls that changed nothing (audit records of reads and denials): when this returns
    /// the batch is committed, visible, ordered with every other batch, and survives the
    /// process being killed; its sync to stable storage may come later, within the store's
    /// deferred-sync interval, or with the next batch committed by [`Store::apply`] (whichever
    /// comes first). A power loss or kernel crash inside that window may lose it; it never
    /// loses or reorders anything committed by [`Store::apply`].
    ///
    /// Never use it for state a client is told was stored. The default implementation is
    /// [`Store::apply`] (a store without a cheaper relaxed commit keeps the full promise).
    async fn apply_deferred(&self, batch: Batch) -> Result<u64, StoreError> {
        self.apply(batch).await
    }

    /// Flushes and closes; later calls fail with [`StoreError::Closed`]. Batches already
    /// submitted when `close` is called are still committed and answered; closing a closed
    /// store is a no-op.
    async fn close(&self) -> Result<(), StoreError>;
}
