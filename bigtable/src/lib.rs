//! `bigtable`: the tablet server's storage engine (memtable, SSTables, compaction) and,
//! above it, tablets and the Cloud Bigtable v2 API. Built on [`wal`] for its commit log
//! and file-system boundary. Work in progress: see the project's open issues.

pub mod cache;
pub mod coding;
pub mod error;
pub mod gc_rule;
pub mod key;
pub mod memtable;
pub mod merge;
pub mod mutation;
pub mod row_reader;
pub mod sstable;

pub use wal::fs;

pub use error::{Error, Result};
