//! SSTables: immutable sorted files of internal keys and values. Layout in
//! `docs/sstable-format.md`.

pub mod block;
pub mod builder;
pub mod format;
pub mod index;
pub mod table;
mod zstd_context;

pub use builder::{TableBuilder, TableOptions};
pub use format::TableProperties;
pub use table::{Table, TableIter};
