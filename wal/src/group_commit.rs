//! The log handle and its group commit.
//!
//! Appenders frame their record into a shared pending buffer under a short lock and get
//! an LSN. Whoever finds no write in progress becomes the leader: it takes everything
//! pending, writes it with one `write` and (under [`SyncPolicy::EveryCommit`]) one fsync,
//! then wakes the waiters it satisfied, and one of the others to lead the next batch.
//! Records queued while a leader is busy form that next batch, so under load one fsync
//! covers many records.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::format::RecordFramer;
use crate::options::{SyncPolicy, WalOptions};
use crate::segment::SEGMENT_HEADER_SIZE;
use crate::segment_writer::SegmentWriter;
use crate::wakeup::{self, Waiters};
use crate::{Error, IoContext, Lsn, Result};

/// Counters describing the log's work since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended.
    pub records: u64,
    /// Leader write batches.
    pub batches: u64,
    /// File syncs issued by batches and [`Wal::sync`] (not counting rotations).
    pub syncs: u64,
    /// Framed bytes written.
    pub bytes: u64,
}

/// An open log, shared by any number of appending threads.
pub struct Wal {
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
}

struct Shared {
    options: WalOptions,
    dir: PathBuf,
    queue: Mutex<Queue>,
    io: Mutex<SegmentWriter>,
    shutdown: Mutex<bool>,
    shutdown_signal: Condvar,
}

struct Queue {
    next_lsn: Lsn,
    framer: RecordFramer,
    /// Length of the active segment counting bytes still pending.
    segment_len: u64,
    pending: Vec<u8>,
    /// `(offset in pending, first lsn)`: a new segment starts there.
    rotations: Vec<(usize, Lsn)>,
    /// Every LSN below this was handed to the operating system.
    written: Lsn,
    /// Every LSN below this is durable.
    durable: Lsn,
    leader_active: bool,
    /// Appenders waiting for a batch: for their record to be written, or (`strict`)
    /// durable.
    waiters: Waiters,
    failure: Option<String>,
    spare: Vec<u8>,
    stats: WalStats,
}

impl Wal {
    pub(crate) fn start(
        writer: SegmentWriter,
        next_lsn: Lsn,
        dir: &Path,
        options: WalOptions,
    ) -> Result<Wal> {
        let segment_len = writer.active_len();
        let queue = Queue {
            next_lsn,
            framer: RecordFramer::at_file_offset(segment_len),
            segment_len,
            pending: Vec::new(),
            rotations: Vec::new(),
            written: next_lsn,
            durable: next_lsn,
            leader_active: false,
            waiters: Waiters::default(),
            failure: None,
            spare: Vec::new(),
            stats: WalStats::default(),
        };
        let shared = Arc::new(Shared {
            options,
            dir: dir.to_path_buf(),
            queue: Mutex::new(queue),
            io: Mutex::new(writer),
            shutdown: Mutex::new(false),
            shutdown_signal: Condvar::new(),
        });
        let syncer = match shared.options.sync {
            SyncPolicy::Interval(every) => Some(
                spawn_syncer(Arc::downgrade(&shared), every)
                    .context(|| "starting the log sync thread".to_string())?,
            ),
            _ => None,
        };
        Ok(Wal { shared, syncer })
    }

    /// Appends a record; returns its LSN once it is done under the sync policy.
    pub fn append(&self, payload: &[u8]) -> Result<Lsn> {
        let durable = self.shared.options.sync == SyncPolicy::EveryCommit;
        self.append_waiting(payload, durable)
    }

    /// Appends a record; returns its LSN once it is written to the file, before any
    /// fsync, whatever the sync policy. A crash may lose it, but recovery keeps a prefix
    /// of the log, so it is never lost while a later synced record survives.
    pub fn append_unsynced(&self, payload: &[u8]) -> Result<Lsn> {
        self.append_waiting(payload, false)
    }

    fn append_waiting(&self, payload: &[u8], durable: bool) -> Result<Lsn> {
        let limit = self.shared.options.max_record_size;
        if payload.len() > limit {
            return Err(Error::RecordTooLarge {
                size: payload.len(),
                limit,
            });
        }
        let mut queue = self.shared.queue.lock();
        if let Some(failure) = &queue.failure {
            return Err(Error::Poisoned(failure.clone()));
        }
        let lsn = queue.enqueue(payload, self.shared.options.segment_size);
        self.shared.wait_until(queue, lsn + 1, durable)?;
        Ok(lsn)
    }

    /// Makes every record appended so far durable, whatever the sync policy.
    pub fn sync(&self) -> Result<()> {
        self.shared.sync_all()
    }

    /// Deletes whole segments that hold only records below `lsn` (a checkpoint).
    /// The active segment is never deleted. Returns how many segments were removed.
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        self.shared.io.lock().remove_segments_before(lsn)
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.shared.queue.lock().next_lsn
    }

    /// Every record below this LSN is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.queue.lock().durable
    }

    pub fn stats(&self) -> WalStats {
        self.shared.queue.lock().stats
    }

    /// Segment files currently making up the log.
    pub fn segment_count(&self) -> usize {
        self.shared.io.lock().segment_count()
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Syncs and closes the log.
    pub fn close(mut self) -> Result<()> {
        self.stop_syncer();
        self.shared.sync_all()
    }

    fn stop_syncer(&mut self) {
        if let Some(handle) = self.syncer.take() {
            *self.shared.shutdown.lock() = true;
            self.shared.shutdown_signal.notify_all();
            let _ = handle.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop_syncer();
        if let SyncPolicy::Interval(_) = self.shared.options.sync {
            if let Err(e) = self.shared.sync_all() {
                tracing::warn!(dir = %self.shared.dir.display(), "final log sync failed: {e}");
            }
        }
    }
}

impl Queue {
    /// Frames `payload` into the pending buffer and assigns its LSN.
    fn enqueue(&mut self, payload: &[u8], segment_size: u64) -> Lsn {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        if self.segment_len >= segment_size {
            self.rotations.push((self.pending.len(), lsn));
            self.framer = RecordFramer::at_file_offset(SEGMENT_HEADER_SIZE as u64);
            self.segment_len = SEGMENT_HEADER_SIZE as u64;
        }
        let framed = self.framer.frame(payload, &mut self.pending);
        self.segment_len += framed as u64;
        self.stats.records += 1;
        lsn
    }

    fn reached(&self, target: Lsn, durable: bool) -> bool {
        if durable {
            self.durable >= target
        } else {
            self.written >= target
        }
    }

    /// Once a batch ended: the waiters it satisfied, and one other to lead the next
    /// batch (or, if the log failed, every waiter, to report it).
    fn woken_after_batch(&mut self) -> Vec<std::thread::Thread> {
        if self.failure.is_some() {
            return self.waiters.take_all();
        }
        let (written, durable) = (self.written, self.durable);
        let mut woken = self
            .waiters
            .take_reached(|target, strict| target <= if strict { durable } else { written });
        woken.extend(self.waiters.take_first());
        woken
    }
}

impl Shared {
    /// Blocks until every LSN below `target` is written (or durable), leading batches
    /// whenever no one else is.
    fn wait_until<'a>(
        &'a self,
        mut queue: MutexGuard<'a, Queue>,
        target: Lsn,
        durable: bool,
    ) -> Result<()> {
        loop {
            if queue.reached(target, durable) {
                return Ok(());
            }
            if let Some(failure) = &queue.failure {
                return Err(Error::Poisoned(failure.clone()));
            }
            if queue.leader_active {
                wakeup::sleep(&mut queue, |q| &mut q.waiters, target, durable);
            } else {
                queue = self.lead_batch(queue, durable);
            }
        }
    }

    fn sync_all(&self) -> Result<()> {
        let queue = self.queue.lock();
        let target = queue.next_lsn;
        self.wait_until(queue, target, true)
    }

    /// Writes everything pending as one batch, syncing it if the leader waits for
    /// durability (under `EveryCommit`, or in `sync`).
    fn lead_batch<'a>(
        &'a self,
        mut queue: MutexGuard<'a, Queue>,
        sync: bool,
    ) -> MutexGuard<'a, Queue> {
        queue.leader_active = true;
        let spare = std::mem::take(&mut queue.spare);
        let mut bytes = std::mem::replace(&mut queue.pending, spare);
        let rotations = std::mem::take(&mut queue.rotations);
        let end = queue.next_lsn;
        drop(queue);

        let result = self.io.lock().write_batch(&bytes, &rotations, sync);

        let mut queue = self.queue.lock();
        queue.leader_active = false;
        match result {
            Ok(()) => {
                queue.written = end;
                queue.stats.batches += 1;
                queue.stats.bytes += bytes.len() as u64;
                if sync {
                    queue.durable = end;
                    queue.stats.syncs += 1;
                }
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "log write failed, refusing further writes: {e}");
                queue.failure = Some(e.to_string());
            }
        }
        bytes.clear();
        if bytes.capacity() > queue.spare.capacity() {
            queue.spare = bytes;
        }
        let woken = queue.woken_after_batch();
        MutexGuard::unlocked(&mut queue, || wakeup::wake(woken));
        queue
    }
}

fn spawn_syncer(shared: Weak<Shared>, every: Duration) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("wal-syncer".into())
        .spawn(move || loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            {
                let mut stop = shared.shutdown.lock();
                if *stop {
                    return;
                }
                shared.shutdown_signal.wait_for(&mut stop, every);
                if *stop {
                    return;
                }
            }
            let behind = {
                let queue = shared.queue.lock();
                queue.durable < queue.written && queue.failure.is_none()
            };
            if behind {
                if let Err(e) = shared.sync_all() {
                    tracing::warn!("periodic log sync failed: {e}");
                }
            }
        })
}
