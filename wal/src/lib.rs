//! `wal`: a checksummed, segmented, append-only log with group commit and torn-tail
//! recovery; and [`fs`], the file-system boundary the whole storage stack writes through.
//!
//! The byte layout and recovery rules are in `docs/wal-format.md`.

pub mod crash_check;
mod error;
pub mod format;
pub mod fs;
mod group_commit;
mod options;
mod reader;
mod recovery;
pub mod rng;
pub mod segment;
mod segment_writer;
pub mod wakeup;

pub(crate) use error::IoContext;
pub use error::{Error, Result};
pub use group_commit::{Wal, WalStats};
pub use options::{SyncPolicy, WalOptions};
pub use reader::{LogEnd, LogReader, TailDamage};
pub use recovery::{Recovery, RecoveryReport};

/// Log sequence number: records are numbered consecutively from 1.
pub type Lsn = u64;
