//! `bigtable`: the tablet server's storage engine (memtable, SSTables, compaction) and,
//! above it, tablets and the Cloud Bigtable v2 API. Built on [`wal`] for its commit log
//! and file-system boundary. Work in progress: see the project's open issues.

pub mod bloom;
pub mod cache;
pub mod clock;
pub mod coding;
pub mod commit;
pub mod compaction;
pub mod crash_check;
pub mod engine;
pub mod error;
pub mod filter;
pub mod gc_rule;
pub mod key;
pub mod manifest;
pub mod memtable;
pub mod merge;
pub mod model;
pub mod mutation;
pub mod row_reader;
pub mod schema;
pub mod server;
pub mod sstable;
pub mod tablet;
pub mod version;

pub use wal::fs;

pub use engine::{
    Durability, Engine, EngineOptions, EngineStats, ReadModifyWrite, ReadRequest, RowCheck,
    RowMutations, RowRange, RowRead, RowSet, RowStream, TableSnapshot,
};
pub use error::{Error, Result};
pub use filter::RowFilter;
pub use gc_rule::GcRule;
pub use mutation::{Mutation, TimestampRange};
pub use row_reader::{Cell, Row};
pub use schema::TableSchema;
