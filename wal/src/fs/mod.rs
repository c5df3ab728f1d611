//! The file-system boundary (LevelDB's `Env`): everything the storage stack does to disk
//! goes through [`FileSystem`], so tests can swap the real one ([`RealFs`]) for
//! [`FaultyFs`], which can lose unsynced data, fail an fsync, or corrupt bytes.

mod faulty;
mod real;

use std::io;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use faulty::{CrashMode, FaultyFs, FsStats};
pub use real::RealFs;

/// A shared handle to a file system implementation.
pub type SharedFs = Arc<dyn FileSystem>;

/// The operations the storage engine needs from a file system.
///
/// Paths are used as given; implementations do not resolve them against a working
/// directory of their own.
pub trait FileSystem: Send + Sync + 'static {
    /// Creates `path` (truncating it if it exists) and opens it for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for appending at its current end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for appending at `offset`, which becomes its logical end:
    /// appends overwrite whatever follows (the zeros of preallocated space).
    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn WritableFile>>;
    /// Opens an existing file for positional reads.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn RandomAccessFile>>;
    /// Maps an immutable file into memory. The caller promises nobody writes it meanwhile.
    fn map(&self, path: &Path) -> io::Result<FileBytes>;
    /// Atomically renames `from` to `to`, replacing `to`. Durable after [`Self::sync_dir`].
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file. Durable after [`Self::sync_dir`].
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of `dir`, sorted.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates `dir` and its missing parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Cuts `path` to `len` bytes (used to drop a torn tail). Durable after a sync of the file.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
}

/// A file open for appending at a logical end that only moves forward.
pub trait WritableFile: Send {
    /// Appends all of `data` at the logical end (it may reach the disk only at the next
    /// [`Self::sync`]).
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// Makes everything appended so far durable (fdatasync).
    fn sync(&mut self) -> io::Result<()>;
    /// The logical end: where the next append goes.
    fn len(&self) -> u64;
    /// Reserves disk space up to `size` bytes, which read as zeros until written. On
    /// ext4 an fdatasync after writing into reserved space skips the journal commit that
    /// growing a file costs. Durable after [`Self::sync`]. A no-op where unsupported.
    fn preallocate(&mut self, size: u64) -> io::Result<()>;
    /// Whether the file is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file open for positional reads.
pub trait RandomAccessFile: Send + Sync {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// The file's current length.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, mut offset: u64, mut buf: &mut [u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(offset, buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            offset += n as u64;
            buf = &mut buf[n..];
        }
        Ok(())
    }
}

/// The bytes of an immutable file: memory-mapped on a real disk, owned in tests.
pub struct FileBytes(Bytes);

enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Arc<[u8]>),
}

impl FileBytes {
    pub(crate) fn mapped(map: memmap2::Mmap) -> Self {
        FileBytes(Bytes::Mapped(map))
    }

    pub(crate) fn owned(bytes: Arc<[u8]>) -> Self {
        FileBytes(Bytes::Owned(bytes))
    }
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Mapped(map) => map,
            Bytes::Owned(bytes) => bytes,
        }
    }
}

impl std::fmt::Debug for FileBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileBytes({} bytes)", self.len())
    }
}

/// Reads a whole file through `fs`.
pub fn read_file(fs: &dyn FileSystem, path: &Path) -> io::Result<Vec<u8>> {
    let file = fs.open_read(path)?;
    let len = usize::try_from(file.len()?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large for memory"))?;
    let mut buf = vec![0; len];
    file.read_exact_at(0, &mut buf)?;
    Ok(buf)
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
