//! An in-memory file system that remembers what was synced, for crash tests.
//!
//! Model: files are inodes; a directory's entries are durable only after
//! [`FileSystem::sync_dir`] of that directory, and a file's bytes only after
//! [`WritableFile::sync`]. [`FaultyFs::crash`] reverts the namespace to its durable state
//! and every file to its synced bytes (or, in [`CrashMode::TornWrites`], to its synced
//! bytes plus a random, possibly garbled, part of the unsynced tail). Directories
//! themselves are durable as soon as they are created (a simplification: the stack
//! creates its directories once, at startup).
//!
//! Faults: fail the next N syncs or appends, lose power after N more mutating
//! operations (every later call fails until `crash`), flip bits, truncate files.
//! Handles opened before a crash fail afterwards, as they would in a new process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{parent_dir, FileBytes, FileSystem, RandomAccessFile, WritableFile};
use crate::rng::SplitMix64;

/// How a simulated crash treats bytes that were written but not synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced byte is lost.
    DropUnsynced,
    /// Each file keeps a random prefix of its unsynced bytes, sometimes with its last
    /// bytes garbled or zeroed: a write torn by power loss.
    TornWrites { seed: u64 },
}

/// Counters of operations that reached the file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    pub appends: u64,
    pub bytes_appended: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
}

/// The fault-injecting file system. Cloning shares the same state.
#[derive(Clone, Default)]
pub struct FaultyFs {
    state: Arc<Mutex<State>>,
    sync_gate: Arc<SyncGate>,
}

/// Lets a test stall every file sync (a slow disk) and release them later.
#[derive(Default)]
struct SyncGate {
    held: Mutex<GateState>,
    changed: parking_lot::Condvar,
}

#[derive(Default)]
struct GateState {
    closed: bool,
    waiting: usize,
    /// Syncs that reached the gate, ever.
    arrived: usize,
    /// Held syncs allowed through while the gate stays closed.
    permits: usize,
}

impl SyncGate {
    fn pass(&self) {
        let mut gate = self.held.lock();
        gate.waiting += 1;
        gate.arrived += 1;
        self.changed.notify_all();
        while gate.closed && gate.permits == 0 {
            self.changed.wait(&mut gate);
        }
        if gate.closed {
            gate.permits -= 1;
        }
        gate.waiting -= 1;
    }
}

#[derive(Default)]
struct State {
    generation: u64,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    live: BTreeMap<PathBuf, u64>,
    durable: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    faults: Faults,
    stats: FsStats,
}

#[derive(Default)]
struct Faults {
    failing_syncs: u32,
    failing_appends: u32,
    ops_until_power_loss: Option<u64>,
    powered_off: bool,
}

/// A file: its current bytes and what a crash would leave of them.
#[derive(Default)]
struct Inode {
    /// Written bytes; the file reads as zeros from here up to `allocated`.
    data: Vec<u8>,
    allocated: usize,
    /// The bytes and allocation as of the last sync.
    durable: Vec<u8>,
    durable_allocated: usize,
    /// The lowest offset changed since the last sync.
    dirty_from: Option<usize>,
}

impl Inode {
    fn size(&self) -> usize {
        self.data.len().max(self.allocated)
    }

    fn mark_dirty(&mut self, from: usize) {
        self.dirty_from = Some(self.dirty_from.map_or(from, |d| d.min(from)));
    }

    fn write_at(&mut self, offset: usize, bytes: &[u8]) {
        let end = offset + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[offset..end].copy_from_slice(bytes);
        self.mark_dirty(offset);
    }

    fn set_len(&mut self, len: usize) {
        let old = self.size();
        self.data.resize(len, 0);
        self.allocated = self.allocated.min(len);
        self.mark_dirty(len.min(old));
    }

    fn allocate(&mut self, size: usize) {
        if size > self.allocated {
            self.mark_dirty(self.size());
            self.allocated = size;
        }
    }

    /// Copies what changed since the last sync into the durable state.
    fn sync(&mut self) {
        if let Some(from) = self.dirty_from.take() {
            let from = from.min(self.durable.len()).min(self.data.len());
            self.durable.truncate(from);
            self.durable.extend_from_slice(&self.data[from..]);
        }
        self.durable_allocated = self.allocated;
    }

    /// What a crash leaves: the durable state, plus (torn) a random prefix of the changed
    /// bytes, whose last few may be garbled or zeroed.
    fn crash(&mut self, torn: Option<&mut SplitMix64>) {
        let Some(from) = self.dirty_from.take() else {
            return;
        };
        self.allocated = self.durable_allocated;
        let Some(rng) = torn else {
            self.data = self.durable.clone();
            return;
        };
        let from = from.min(self.durable.len()).min(self.data.len());
        let keep = rng.below((self.data.len() - from) as u64 + 1) as usize;
        let end = from + keep;
        self.data.truncate(end);
        if self.durable.len() > end {
            self.data.extend_from_slice(&self.durable[end..]);
        }
        let damaged = keep.min(16);
        match rng.below(3) {
            0 => rng.fill(&mut self.data[end - damaged..end]),
            1 => self.data[end - damaged..end].fill(0),
            _ => {}
        }
        self.durable = self.data.clone();
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.size().saturating_sub(offset));
        let written = self.data.len().saturating_sub(offset).min(n);
        if written > 0 {
            buf[..written].copy_from_slice(&self.data[offset..offset + written]);
        }
        buf[written..n].fill(0);
        n
    }

    fn contents(&self) -> Vec<u8> {
        let mut bytes = self.data.clone();
        bytes.resize(self.size(), 0);
        bytes
    }

    /// Media damage: changes the bytes whether synced or not.
    fn flip_bit(&mut self, offset: usize, bit: u8) {
        for bytes in [&mut self.data, &mut self.durable] {
            if bytes.len() <= offset {
                bytes.resize(offset + 1, 0);
            }
            bytes[offset] ^= 1 << (bit % 8);
        }
    }

    /// Media damage: the tail is gone whether synced or not.
    fn cut(&mut self, len: usize) {
        self.data.truncate(len);
        self.durable.truncate(len);
        self.allocated = self.allocated.min(len);
        self.durable_allocated = self.durable_allocated.min(len);
    }
}

fn power_loss() -> io::Error {
    io::Error::other("simulated power loss")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl State {
    /// Every mutating operation passes here: it may trigger the scheduled power loss.
    fn mutating_op(&mut self) -> io::Result<()> {
        self.check_power()?;
        if let Some(left) = self.faults.ops_until_power_loss.as_mut() {
            if *left == 0 {
                self.faults.powered_off = true;
                return Err(power_loss());
            }
            *left -= 1;
        }
        Ok(())
    }

    fn check_power(&self) -> io::Result<()> {
        if self.faults.powered_off {
            Err(power_loss())
        } else {
            Ok(())
        }
    }

    fn check_handle(&self, generation: u64) -> io::Result<()> {
        self.check_power()?;
        if generation != self.generation {
            return Err(io::Error::other(
                "stale file handle (opened before a crash)",
            ));
        }
        Ok(())
    }

    fn ino(&self, path: &Path) -> io::Result<u64> {
        self.live.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn inode_mut(&mut self, ino: u64) -> &mut Inode {
        self.inodes.entry(ino).or_default()
    }

    fn check_parent(&self, path: &Path) -> io::Result<()> {
        let dir = parent_dir(path);
        if self.dirs.contains(&dir) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such directory", dir.display()),
            ))
        }
    }
}

impl FaultyFs {
    pub fn new() -> Self {
        Self::default()
    }

    /// A shared handle to this file system (sharing its state with `self`).
    pub fn shared(&self) -> super::SharedFs {
        Arc::new(self.clone())
    }

    /// Simulates a crash and restart: see the module documentation.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.state.lock();
        let mut rng = match mode {
            CrashMode::DropUnsynced => None,
            CrashMode::TornWrites { seed } => Some(SplitMix64::new(seed)),
        };
        state.live = state.durable.clone();
        let reachable: BTreeSet<u64> = state.live.values().copied().collect();
        state.inodes.retain(|ino, _| reachable.contains(ino));
        let mut inos: Vec<u64> = state.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            state.inode_mut(ino).crash(rng.as_mut());
        }
        state.generation += 1;
        state.faults = Faults::default();
    }

    /// The next `n` file syncs fail (and make nothing durable).
    pub fn fail_next_syncs(&self, n: u32) {
        self.state.lock().faults.failing_syncs = n;
    }

    /// The next `n` appends fail (and write nothing).
    pub fn fail_next_appends(&self, n: u32) {
        self.state.lock().faults.failing_appends = n;
    }

    /// After `n` more mutating operations (create, append, sync, rename, remove,
    /// sync_dir, truncate) the power goes out: that operation and every later call
    /// fails until [`Self::crash`].
    pub fn power_loss_after(&self, n: u64) {
        self.state.lock().faults.ops_until_power_loss = Some(n);
    }

    /// Every file sync from now on blocks until [`Self::release_syncs`].
    pub fn hold_syncs(&self) {
        self.sync_gate.held.lock().closed = true;
    }

    /// Lets held syncs (and later ones) proceed.
    pub fn release_syncs(&self) {
        self.sync_gate.held.lock().closed = false;
        self.sync_gate.changed.notify_all();
    }

    /// Lets one held sync (the next to arrive, if none waits) proceed; the gate stays
    /// closed to the others.
    pub fn release_one_sync(&self) {
        self.sync_gate.held.lock().permits += 1;
        self.sync_gate.changed.notify_all();
    }

    /// Blocks until at least `n` syncs have reached the gate since the file system was
    /// made (held or not).
    pub fn wait_for_sync_arrivals(&self, n: usize) {
        let mut gate = self.sync_gate.held.lock();
        while gate.arrived < n {
            self.sync_gate.changed.wait(&mut gate);
        }
    }

    /// Blocks until at least `n` syncs are waiting at the held gate.
    pub fn wait_for_held_syncs(&self, n: usize) {
        let mut gate = self.sync_gate.held.lock();
        while gate.waiting < n {
            self.sync_gate.changed.wait(&mut gate);
        }
    }

    /// Whether a scheduled power loss has happened.
    pub fn is_powered_off(&self) -> bool {
        self.state.lock().faults.powered_off
    }

    /// Flips bit `bit` (0..8) of the byte at `offset`: media corruption, synced or not.
    pub fn flip_bit(&self, path: &Path, offset: usize, bit: u8) -> io::Result<()> {
        let mut state = self.state.lock();
        let ino = state.ino(path)?;
        let inode = state.inode_mut(ino);
        if offset >= inode.size() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "flip_bit offset past end of file",
            ));
        }
        inode.flip_bit(offset, bit);
        Ok(())
    }

    /// Cuts a file to `len` bytes, synced or not: a lost tail on the medium.
    pub fn truncate_file(&self, path: &Path, len: usize) -> io::Result<()> {
        let mut state = self.state.lock();
        let ino = state.ino(path)?;
        state.inode_mut(ino).cut(len);
        Ok(())
    }

    /// The current (not necessarily durable) bytes of a file.
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.state.lock();
        let ino = state.ino(path)?;
        Ok(state
            .inodes
            .get(&ino)
            .map(Inode::contents)
            .unwrap_or_default())
    }

    /// Replaces a file's bytes (durably): for tests that plant crafted content.
    pub fn write_file_durably(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.create(path)?;
        file.append(bytes)?;
        file.sync()?;
        self.sync_dir(&parent_dir(path))
    }

    pub fn stats(&self) -> FsStats {
        self.state.lock().stats
    }

    fn writable(&self, ino: u64, pos: usize, generation: u64) -> Box<dyn WritableFile> {
        Box::new(FaultyWritable {
            state: self.state.clone(),
            sync_gate: self.sync_gate.clone(),
            ino,
            generation,
            pos,
        })
    }
}

struct FaultyWritable {
    state: Arc<Mutex<State>>,
    sync_gate: Arc<SyncGate>,
    ino: u64,
    generation: u64,
    pos: usize,
}

impl WritableFile for FaultyWritable {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check_handle(self.generation)?;
        state.mutating_op()?;
        if state.faults.failing_appends > 0 {
            state.faults.failing_appends -= 1;
            return Err(io::Error::other("injected append failure"));
        }
        state.stats.appends += 1;
        state.stats.bytes_appended += data.len() as u64;
        state.inode_mut(self.ino).write_at(self.pos, data);
        self.pos += data.len();
        Ok(())
    }

    fn preallocate(&mut self, size: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.check_handle(self.generation)?;
        state.mutating_op()?;
        let size = usize::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
        state.inode_mut(self.ino).allocate(size);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_gate.pass();
        let mut state = self.state.lock();
        state.check_handle(self.generation)?;
        state.mutating_op()?;
        if state.faults.failing_syncs > 0 {
            state.faults.failing_syncs -= 1;
            return Err(io::Error::other("injected fsync failure"));
        }
        state.stats.syncs += 1;
        state.inode_mut(self.ino).sync();
        Ok(())
    }

    fn len(&self) -> u64 {
        self.pos as u64
    }
}

struct FaultyReadable {
    state: Arc<Mutex<State>>,
    ino: u64,
    generation: u64,
}

impl RandomAccessFile for FaultyReadable {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut state = self.state.lock();
        state.check_handle(self.generation)?;
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        Ok(state.inode_mut(self.ino).read_at(offset, buf))
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.state.lock();
        state.check_handle(self.generation)?;
        Ok(state.inode_mut(self.ino).size() as u64)
    }
}

impl FileSystem for FaultyFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.state.lock();
        state.mutating_op()?;
        state.check_parent(path)?;
        let ino = match state.live.get(path) {
            Some(&ino) => {
                state.inode_mut(ino).set_len(0);
                ino
            }
            None => {
                state.next_ino += 1;
                let ino = state.next_ino;
                state.inodes.insert(ino, Inode::default());
                state.live.insert(path.to_path_buf(), ino);
                ino
            }
        };
        Ok(self.writable(ino, 0, state.generation))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut state = self.state.lock();
        state.check_power()?;
        let ino = state.ino(path)?;
        let end = state.inode_mut(ino).size();
        Ok(self.writable(ino, end, state.generation))
    }

    fn open_at(&self, path: &Path, offset: u64) -> io::Result<Box<dyn WritableFile>> {
        let state = self.state.lock();
        state.check_power()?;
        let offset = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        Ok(self.writable(state.ino(path)?, offset, state.generation))
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn RandomAccessFile>> {
        let state = self.state.lock();
        state.check_power()?;
        Ok(Box::new(FaultyReadable {
            state: self.state.clone(),
            ino: state.ino(path)?,
            generation: state.generation,
        }))
    }

    fn map(&self, path: &Path) -> io::Result<FileBytes> {
        let mut state = self.state.lock();
        state.check_power()?;
        let ino = state.ino(path)?;
        Ok(FileBytes::owned(Arc::from(state.inode_mut(ino).contents())))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutating_op()?;
        state.check_parent(to)?;
        let ino = state.live.remove(from).ok_or_else(|| not_found(from))?;
        state.live.insert(to.to_path_buf(), ino);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutating_op()?;
        state
            .live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.state.lock();
        state.check_power()?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let files = state.live.keys().filter(|p| parent_dir(p) == dir);
        let subdirs = state.dirs.iter().filter(|d| d.parent() == Some(dir));
        let mut names: Vec<String> = files
            .chain(subdirs)
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutating_op()?;
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                state.dirs.insert(ancestor.to_path_buf());
            }
        }
        state.dirs.insert(PathBuf::from("."));
        Ok(())
    }

    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutating_op()?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let has_files = state.live.keys().any(|p| parent_dir(p) == dir);
        let has_dirs = state.dirs.iter().any(|d| d.parent() == Some(dir));
        if has_files || has_dirs {
            return Err(io::Error::other(format!("{} is not empty", dir.display())));
        }
        state.dirs.remove(dir);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutating_op()?;
        if !state.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        state.stats.dir_syncs += 1;
        state.durable.retain(|p, _| parent_dir(p) != dir);
        let entries: Vec<(PathBuf, u64)> = state
            .live
            .iter()
            .filter(|(p, _)| parent_dir(p) == dir)
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        state.durable.extend(entries);
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let state = self.state.lock();
        state.live.contains_key(path) || state.dirs.contains(path)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.state.lock();
        state.mutating_op()?;
        let ino = state.ino(path)?;
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        state.inode_mut(ino).set_len(len);
        Ok(())
    }
}
