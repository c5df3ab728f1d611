//! `megastore`: schemas, entity groups with serializable transactions, and each group's
//! write-ahead log kept in its root row. Built so far, on one replica: the schema
//! language (`schema`), row keys (`keys`), the catalog of schema versions (`catalog`),
//! and transactions, reads and indexes (`database`). Layout on the tablet server:
//! `docs/megastore-layout.md`.

pub mod api;
mod apply;
pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod coordinator;
pub mod database;
pub mod deployment;
pub mod entity;
pub mod etcd;
pub mod examples;
pub mod footprint;
mod global;
pub mod index;
pub mod keys;
pub mod layout;
pub mod log;
pub mod node;
pub mod paxos;
pub mod prepared;
pub mod queue;
pub mod read;
pub mod remote;
pub mod replica;
pub mod replicas;
pub mod replication;
pub mod schema;
pub mod sim;
pub mod tls;
pub mod txn;

pub use database::detached::{Mutation, ReadSet, ReadToken};
pub use database::{
    Committed, Database, DatabaseOptions, DatabaseStats, GroupKey, MultiCommitted,
    MultiTransaction, PreparedMulti, Stale,
};
pub use entity::{Entity, Prop};
pub use index::{merge_join, IndexHit};
pub use keys::Value;
pub use layout::ValueRange;
pub use queue::{Message, MessageId};
pub use read::ReadMode;
pub use txn::{Snapshot, Transaction};

/// What can go wrong in a Megastore operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another transaction took the log position this one wanted; retrying from a fresh
    /// read may succeed.
    #[error("conflict: another transaction committed at position {0} first")]
    Conflict(u64),
    #[error(
        "gave up after {attempts} attempts, each lost its log position to another transaction"
    )]
    TooManyConflicts { attempts: u32 },
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Too few replicas answered to choose a value.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// An entity the transaction writes (or, for a two-phase transaction, reads) is
    /// locked by a prepared two-phase transaction until it is resolved.
    #[error("locked by the prepared two-phase transaction {txid:016x} until it is resolved")]
    Locked { txid: u64 },
    #[error("index {0} is still being back-filled")]
    IndexNotReady(String),
    /// A snapshot (or a detached transaction) read after the version retention: the
    /// versions it needs may be collected. Reading again from a fresh one works.
    #[error("snapshot taken {0:?} ago, longer than the version retention: read again")]
    SnapshotTooOld(std::time::Duration),
    #[error("stored data is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error(transparent)]
    Catalog(#[from] catalog::CatalogError),
    #[error(transparent)]
    Storage(#[from] bigtable::Error),
}
