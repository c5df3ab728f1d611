//! The I/O side of the log: the open segment, rotation, sync, and removal of old segments.
//! Only the group-commit leader (or a caller holding its lock) touches it.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use crate::fs::{SharedFs, WritableFile};
use crate::segment::{encode_header, segment_file_name};
use crate::{IoContext, Lsn, Result};

/// Where segments live and how they are created.
#[derive(Clone)]
pub(crate) struct SegmentDir {
    pub fs: SharedFs,
    pub dir: PathBuf,
    /// Space reserved for each segment up front (see `WritableFile::preallocate`).
    pub preallocate: u64,
}

impl SegmentDir {
    /// Creates a segment with its header synced and its directory entry durable.
    fn create(&self, first_lsn: Lsn) -> Result<(Box<dyn WritableFile>, PathBuf)> {
        let path = self.dir.join(segment_file_name(first_lsn));
        let describe = || format!("creating segment {}", path.display());
        let mut file = self.fs.create(&path).context(describe)?;
        file.append(&encode_header(first_lsn)).context(describe)?;
        file.preallocate(self.preallocate).context(describe)?;
        file.sync().context(describe)?;
        self.sync_dir()?;
        Ok((file, path))
    }

    /// Opens an existing segment for appends at `offset`.
    fn open_at(&self, path: &Path, offset: u64) -> Result<Box<dyn WritableFile>> {
        let describe = || format!("opening {} for append", path.display());
        let mut file = self.fs.open_at(path, offset).context(describe)?;
        file.preallocate(self.preallocate).context(describe)?;
        Ok(file)
    }

    fn sync_dir(&self) -> Result<()> {
        self.fs
            .sync_dir(&self.dir)
            .context(|| format!("syncing directory {}", self.dir.display()))
    }
}

pub(crate) struct SegmentWriter {
    segments: SegmentDir,
    file: Box<dyn WritableFile>,
    active: (Lsn, PathBuf),
    closed: VecDeque<(Lsn, PathBuf)>,
}

impl SegmentWriter {
    /// Starts a new, empty segment whose first record will have `first_lsn`.
    pub fn create(
        segments: SegmentDir,
        first_lsn: Lsn,
        closed: VecDeque<(Lsn, PathBuf)>,
    ) -> Result<Self> {
        let (file, path) = segments.create(first_lsn)?;
        Ok(SegmentWriter {
            segments,
            file,
            active: (first_lsn, path),
            closed,
        })
    }

    /// Continues an existing segment at `offset`, the end of its last record.
    pub fn resume(
        segments: SegmentDir,
        active: (Lsn, PathBuf),
        offset: u64,
        closed: VecDeque<(Lsn, PathBuf)>,
    ) -> Result<Self> {
        let file = segments.open_at(&active.1, offset)?;
        Ok(SegmentWriter {
            segments,
            file,
            active,
            closed,
        })
    }

    /// Where the next byte goes in the active segment.
    pub fn active_len(&self) -> u64 {
        self.file.len()
    }

    /// Writes a batch of framed bytes; at each `(offset, lsn)` in `rotations` the bytes
    /// from `offset` on go to a new segment starting at `lsn`.
    pub fn write_batch(
        &mut self,
        bytes: &[u8],
        rotations: &[(usize, Lsn)],
        sync: bool,
    ) -> Result<()> {
        let mut written = 0;
        for &(offset, first_lsn) in rotations {
            self.append(&bytes[written..offset])?;
            self.rotate(first_lsn)?;
            written = offset;
        }
        self.append(&bytes[written..])?;
        if sync {
            self.sync()?;
        }
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let path = &self.active.1;
        self.file
            .append(bytes)
            .context(|| format!("appending to {}", path.display()))
    }

    pub fn sync(&mut self) -> Result<()> {
        let path = &self.active.1;
        self.file
            .sync()
            .context(|| format!("syncing {}", path.display()))
    }

    /// Closes the active segment (synced, so only the last segment can ever be torn) and
    /// starts a new one.
    fn rotate(&mut self, first_lsn: Lsn) -> Result<()> {
        self.sync()?;
        let (file, path) = self.segments.create(first_lsn)?;
        self.file = file;
        let previous = std::mem::replace(&mut self.active, (first_lsn, path));
        self.closed.push_back(previous);
        Ok(())
    }

    /// Deletes closed segments holding only records below `lsn`; returns how many.
    pub fn remove_segments_before(&mut self, lsn: Lsn) -> Result<usize> {
        let mut removed = 0;
        while let Some((_, path)) = self.closed.front() {
            let successor_first = self.closed.get(1).map_or(self.active.0, |s| s.0);
            if successor_first > lsn {
                break;
            }
            self.segments
                .fs
                .remove(path)
                .context(|| format!("removing {}", path.display()))?;
            self.closed.pop_front();
            removed += 1;
        }
        if removed > 0 {
            self.segments.sync_dir()?;
        }
        Ok(removed)
    }

    pub fn segment_count(&self) -> usize {
        self.closed.len() + 1
    }
}
