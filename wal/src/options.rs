use std::time::Duration;

use crate::{Error, Result};

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// An append returns once its record is fsynced (batched with its neighbours).
    EveryCommit,
    /// An append returns once its record is written to the operating system; a background
    /// thread fsyncs at this interval, so a machine crash loses at most that much.
    Interval(Duration),
    /// An append returns once written to the operating system; never fsynced except at
    /// segment rotation and [`crate::Wal::sync`]. For tests and benchmarks.
    Never,
}

/// Settings of a log.
#[derive(Debug, Clone)]
pub struct WalOptions {
    pub sync: SyncPolicy,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_size: u64,
    /// Larger records are refused with [`Error::RecordTooLarge`].
    pub max_record_size: usize,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            sync: SyncPolicy::EveryCommit,
            segment_size: 64 << 20,
            max_record_size: 64 << 20,
        }
    }
}

impl WalOptions {
    pub fn with_sync(mut self, sync: SyncPolicy) -> Self {
        self.sync = sync;
        self
    }

    pub fn with_segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.segment_size < crate::format::BLOCK_SIZE as u64 / 32 {
            return Err(Error::InvalidOptions(format!(
                "segment_size {} is below the minimum of 1024 bytes",
                self.segment_size
            )));
        }
        if let SyncPolicy::Interval(d) = self.sync {
            if d.is_zero() {
                return Err(Error::InvalidOptions(
                    "sync interval must be positive".into(),
                ));
            }
        }
        Ok(())
    }
}
