//! Opening a log: replay its records, drop a torn tail, and continue appending.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::fs::SharedFs;
use crate::group_commit::Wal;
use crate::options::WalOptions;
use crate::reader::{LogEnd, LogReader, TailDamage};
use crate::segment::{list_segments, SEGMENT_HEADER_SIZE};
use crate::segment_writer::{SegmentDir, SegmentWriter};
use crate::{IoContext, Lsn, Result};

/// What opening the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Records handed to the caller while replaying.
    pub records_replayed: u64,
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// The torn tail that was cut off, if the log ended in one.
    pub torn_tail: Option<TailDamage>,
}

/// A log being opened. Iterate it to replay the records from the requested LSN on, then
/// call [`Recovery::finish`] to get the log ready for appends.
///
/// ```no_run
/// # fn main() -> wal::Result<()> {
/// use wal::{fs::RealFs, Wal, WalOptions};
/// let mut recovery = Wal::recover(RealFs::shared(), "log-dir", WalOptions::default(), 0)?;
/// while let Some((lsn, record)) = recovery.next_record()? {
///     println!("{lsn}: {} bytes", record.len());
/// }
/// let (wal, report) = recovery.finish()?;
/// wal.append(b"next record")?;
/// # Ok(()) }
/// ```
pub struct Recovery {
    fs: SharedFs,
    dir: PathBuf,
    options: WalOptions,
    reader: LogReader,
    replayed: u64,
}

impl Wal {
    /// Opens (or creates) the log in `dir`, replaying records with LSN `>= replay_from`.
    pub fn recover(
        fs: SharedFs,
        dir: impl AsRef<Path>,
        options: WalOptions,
        replay_from: Lsn,
    ) -> Result<Recovery> {
        options.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir)
            .context(|| format!("creating {}", dir.display()))?;
        let reader = LogReader::open(fs.clone(), &dir, replay_from)?;
        Ok(Recovery {
            fs,
            dir,
            options,
            reader,
            replayed: 0,
        })
    }

    /// Opens (or creates) the log in `dir` without replaying anything.
    pub fn open(
        fs: SharedFs,
        dir: impl AsRef<Path>,
        options: WalOptions,
    ) -> Result<(Wal, RecoveryReport)> {
        Wal::recover(fs, dir, options, Lsn::MAX)?.finish()
    }
}

impl Recovery {
    /// The next record to replay, or `None` once the log is exhausted.
    pub fn next_record(&mut self) -> Result<Option<(Lsn, Vec<u8>)>> {
        let record = self.reader.next_record()?;
        self.replayed += u64::from(record.is_some());
        Ok(record)
    }

    /// Reads whatever was not replayed (to find the end), cuts off a torn tail, and
    /// returns the log ready for appends.
    pub fn finish(mut self) -> Result<(Wal, RecoveryReport)> {
        while self.reader.next_record()?.is_some() {}
        let next_lsn = self.reader.next_lsn();
        let torn_tail = match self.reader.end() {
            Some(LogEnd::TornTail(damage)) => Some(damage.clone()),
            _ => None,
        };
        let writer = self.open_writer(next_lsn, torn_tail.as_ref())?;
        if let Some(damage) = &torn_tail {
            tracing::warn!(
                segment = %damage.segment.display(),
                offset = damage.offset,
                "dropped a torn log tail: {}",
                damage.reason
            );
        }
        let report = RecoveryReport {
            records_replayed: self.replayed,
            next_lsn,
            torn_tail,
        };
        Ok((
            Wal::start(writer, next_lsn, &self.dir, self.options)?,
            report,
        ))
    }

    fn open_writer(&self, next_lsn: Lsn, torn_tail: Option<&TailDamage>) -> Result<SegmentWriter> {
        let segments = SegmentDir {
            fs: self.fs.clone(),
            dir: self.dir.clone(),
            preallocate: self.options.segment_size,
        };
        let mut files: VecDeque<(Lsn, PathBuf)> =
            list_segments(self.fs.as_ref(), &self.dir)?.into();
        let resume_at = self.reader.append_position().map(|(_, offset)| offset);
        match (torn_tail, resume_at) {
            (Some(damage), _) if damage.offset < SEGMENT_HEADER_SIZE as u64 => {
                self.remove_torn_segment(&damage.segment)?;
                files.pop_back();
                SegmentWriter::create(segments, next_lsn, files)
            }
            (_, Some(offset)) => {
                if let Some(damage) = torn_tail {
                    self.fs
                        .truncate(&damage.segment, damage.offset)
                        .context(|| {
                            format!("truncating torn tail of {}", damage.segment.display())
                        })?;
                }
                let active = files.pop_back().ok_or_else(|| {
                    crate::segment::corruption(
                        &self.dir,
                        0,
                        "log segments vanished during recovery",
                    )
                })?;
                let mut writer = SegmentWriter::resume(segments, active, offset, files)?;
                if torn_tail.is_some() {
                    writer.sync()?;
                }
                Ok(writer)
            }
            (_, None) => SegmentWriter::create(segments, next_lsn, files),
        }
    }

    fn remove_torn_segment(&self, path: &Path) -> Result<()> {
        self.fs
            .remove(path)
            .context(|| format!("removing torn segment {}", path.display()))?;
        self.fs
            .sync_dir(&self.dir)
            .context(|| format!("syncing directory {}", self.dir.display()))
    }
}

impl Iterator for Recovery {
    type Item = Result<(Lsn, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}
