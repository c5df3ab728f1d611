//! The manifest: which tables exist, their schemas, and which SSTables at which levels
//! form each table's state. It is a log of version edits (one record per atomic change)
//! written through the `wal` crate; a file `CURRENT` names the log generation in use.
//! When the log grows, a new generation starting with a snapshot of the whole state is
//! written and `CURRENT` is switched to it by an atomic rename. Layout in
//! `docs/sstable-format.md` ("Manifest").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::coding::{get_u32_le, get_u64_le, put_varint, Reader};
use crate::error::{corruption, io_error, Result};
use crate::key::SeqNo;
use crate::schema::{get_bytes, put_bytes, TableSchema};
use crate::tablet::TabletRange;
use wal::fs::SharedFs;
use wal::{SyncPolicy, Wal, WalOptions};

/// Identifies one table's LSM tree (and, later, one tablet).
pub type TreeId = u64;

const CURRENT: &str = "CURRENT";

/// An SSTable as the manifest knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub id: u64,
    pub size: u64,
    pub entries: u64,
    pub max_seq: SeqNo,
    /// The first and last rows it holds entries of.
    pub smallest_row: Vec<u8>,
    pub largest_row: Vec<u8>,
}

impl FileMeta {
    pub fn smallest_row(&self) -> &[u8] {
        &self.smallest_row
    }

    pub fn largest_row(&self) -> &[u8] {
        &self.largest_row
    }

    /// Whether the file may hold entries of rows in `[start, end]`.
    pub fn overlaps_rows(&self, start: &[u8], end: &[u8]) -> bool {
        self.smallest_row.as_slice() <= end && self.largest_row.as_slice() >= start
    }
}

/// One change to the state. A record is a list of edits applied together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    CreateTable {
        tree: TreeId,
        name: String,
        schema: TableSchema,
    },
    SetSchema {
        tree: TreeId,
        schema: TableSchema,
    },
    DropTable {
        tree: TreeId,
    },
    AddFile {
        tree: TreeId,
        level: u8,
        file: FileMeta,
    },
    RemoveFile {
        tree: TreeId,
        level: u8,
        id: u64,
    },
    /// Every write to `tree` with sequence number `<= seq` is in its SSTables.
    Flushed {
        tree: TreeId,
        seq: SeqNo,
    },
    /// Ids (of files and trees) below this are taken.
    NextId(u64),
    /// Sequence numbers up to this were used.
    LastSeq(SeqNo),
    /// The tablet `tree` holds rows `start <= row < end` (`end = None`: no bound).
    SetRange {
        tree: TreeId,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    },
    /// The tablet `parent` becomes `left` (its rows below `at`) and `right` (the rest),
    /// both holding the parent's SSTables until compactions rewrite them.
    SplitTablet {
        parent: TreeId,
        left: TreeId,
        right: TreeId,
        at: Vec<u8>,
    },
}

/// The state the manifest describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestState {
    pub trees: BTreeMap<TreeId, TreeMeta>,
    pub next_id: u64,
    pub last_seq: SeqNo,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeMeta {
    pub name: String,
    pub schema: TableSchema,
    pub flushed_seq: SeqNo,
    /// `levels[0]` may overlap (newest file last); deeper levels are sorted by row and
    /// never share a row between files.
    pub levels: Vec<Vec<FileMeta>>,
    /// The tablet's rows.
    pub range: TabletRange,
}

pub const MAX_LEVELS: usize = 7;

impl ManifestState {
    /// Applies an edit; an edit that does not fit the state is reported, not applied.
    pub fn apply(&mut self, edit: &Edit) -> Result<(), String> {
        match edit {
            Edit::CreateTable { tree, name, schema } => {
                self.trees.insert(
                    *tree,
                    TreeMeta {
                        name: name.clone(),
                        schema: schema.clone(),
                        flushed_seq: 0,
                        levels: vec![Vec::new(); MAX_LEVELS],
                        range: TabletRange::all(),
                    },
                );
            }
            Edit::SetSchema { tree, schema } => self.tree(*tree)?.schema = schema.clone(),
            Edit::DropTable { tree } => {
                self.trees.remove(tree);
            }
            Edit::AddFile { tree, level, file } => {
                let files = self.level(*tree, *level)?;
                files.push(file.clone());
                if *level > 0 {
                    files.sort_by(|a, b| a.smallest_row.cmp(&b.smallest_row));
                }
            }
            Edit::RemoveFile { tree, level, id } => {
                let files = self.level(*tree, *level)?;
                let before = files.len();
                files.retain(|f| f.id != *id);
                if files.len() == before {
                    return Err(format!("file {id} is not at level {level}"));
                }
            }
            Edit::Flushed { tree, seq } => {
                let t = self.tree(*tree)?;
                t.flushed_seq = t.flushed_seq.max(*seq);
            }
            Edit::NextId(id) => self.next_id = self.next_id.max(*id),
            Edit::LastSeq(seq) => self.last_seq = self.last_seq.max(*seq),
            Edit::SetRange { tree, start, end } => {
                self.tree(*tree)?.range = TabletRange {
                    start: start.clone(),
                    end: end.clone(),
                }
            }
            Edit::SplitTablet {
                parent,
                left,
                right,
                at,
            } => {
                let meta = self.tree(*parent)?.clone();
                if !meta.range.contains(at) || meta.range.start == *at {
                    return Err(format!("split point outside tablet {parent}"));
                }
                self.trees.remove(parent);
                let (l, r) = meta.range.split(at);
                for (id, range) in [(*left, l), (*right, r)] {
                    let mut child = meta.clone();
                    child.range = range;
                    self.trees.insert(id, child);
                }
            }
        }
        Ok(())
    }

    fn tree(&mut self, tree: TreeId) -> Result<&mut TreeMeta, String> {
        self.trees
            .get_mut(&tree)
            .ok_or_else(|| format!("edit names unknown table {tree}"))
    }

    fn level(&mut self, tree: TreeId, level: u8) -> Result<&mut Vec<FileMeta>, String> {
        self.tree(tree)?
            .levels
            .get_mut(level as usize)
            .ok_or_else(|| format!("level {level} out of range"))
    }

    /// Edits that rebuild this state from nothing.
    pub fn snapshot(&self) -> Vec<Edit> {
        let mut edits = vec![Edit::NextId(self.next_id), Edit::LastSeq(self.last_seq)];
        for (&tree, meta) in &self.trees {
            edits.push(Edit::CreateTable {
                tree,
                name: meta.name.clone(),
                schema: meta.schema.clone(),
            });
            edits.push(Edit::Flushed {
                tree,
                seq: meta.flushed_seq,
            });
            if !meta.range.is_all() {
                edits.push(Edit::SetRange {
                    tree,
                    start: meta.range.start.clone(),
                    end: meta.range.end.clone(),
                });
            }
            for (level, files) in meta.levels.iter().enumerate() {
                for file in files {
                    edits.push(Edit::AddFile {
                        tree,
                        level: level as u8,
                        file: file.clone(),
                    });
                }
            }
        }
        edits
    }
}

pub fn encode_edits(edits: &[Edit]) -> Vec<u8> {
    let mut out = Vec::new();
    put_varint(&mut out, edits.len() as u64);
    for edit in edits {
        encode_edit(&mut out, edit);
    }
    out
}

fn encode_edit(out: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::CreateTable { tree, name, schema } => {
            out.push(1);
            put_varint(out, *tree);
            put_bytes(out, name.as_bytes());
            schema.encode_into(out);
        }
        Edit::SetSchema { tree, schema } => {
            out.push(2);
            put_varint(out, *tree);
            schema.encode_into(out);
        }
        Edit::DropTable { tree } => {
            out.push(3);
            put_varint(out, *tree);
        }
        Edit::AddFile { tree, level, file } => {
            out.push(4);
            put_varint(out, *tree);
            out.push(*level);
            for v in [file.id, file.size, file.entries, file.max_seq] {
                put_varint(out, v);
            }
            put_bytes(out, &file.smallest_row);
            put_bytes(out, &file.largest_row);
        }
        Edit::RemoveFile { tree, level, id } => {
            out.push(5);
            put_varint(out, *tree);
            out.push(*level);
            put_varint(out, *id);
        }
        Edit::Flushed { tree, seq } => {
            out.push(6);
            put_varint(out, *tree);
            put_varint(out, *seq);
        }
        Edit::NextId(id) => {
            out.push(7);
            put_varint(out, *id);
        }
        Edit::LastSeq(seq) => {
            out.push(8);
            put_varint(out, *seq);
        }
        Edit::SetRange { tree, start, end } => {
            out.push(9);
            put_varint(out, *tree);
            put_bytes(out, start);
            match end {
                None => out.push(0),
                Some(end) => {
                    out.push(1);
                    put_bytes(out, end);
                }
            }
        }
        Edit::SplitTablet {
            parent,
            left,
            right,
            at,
        } => {
            out.push(10);
            for id in [parent, left, right] {
                put_varint(out, *id);
            }
            put_bytes(out, at);
        }
    }
}

pub fn decode_edits(bytes: &[u8]) -> Option<Vec<Edit>> {
    let mut r = Reader::new(bytes);
    let n = r.varint_usize()?;
    let mut edits = Vec::new();
    for _ in 0..n {
        edits.push(decode_edit(&mut r)?);
    }
    r.is_empty().then_some(edits)
}

fn decode_edit(r: &mut Reader<'_>) -> Option<Edit> {
    Some(match r.u8()? {
        1 => Edit::CreateTable {
            tree: r.varint()?,
            name: String::from_utf8(get_bytes(r)?.to_vec()).ok()?,
            schema: TableSchema::decode(r)?,
        },
        2 => Edit::SetSchema {
            tree: r.varint()?,
            schema: TableSchema::decode(r)?,
        },
        3 => Edit::DropTable { tree: r.varint()? },
        4 => {
            let tree = r.varint()?;
            let level = r.u8().filter(|&l| (l as usize) < MAX_LEVELS)?;
            let file = FileMeta {
                id: r.varint()?,
                size: r.varint()?,
                entries: r.varint()?,
                max_seq: r.varint()?,
                smallest_row: get_bytes(r)?.to_vec(),
                largest_row: get_bytes(r)?.to_vec(),
            };
            Edit::AddFile { tree, level, file }
        }
        5 => Edit::RemoveFile {
            tree: r.varint()?,
            level: r.u8()?,
            id: r.varint()?,
        },
        6 => Edit::Flushed {
            tree: r.varint()?,
            seq: r.varint()?,
        },
        7 => Edit::NextId(r.varint()?),
        8 => Edit::LastSeq(r.varint()?),
        9 => Edit::SetRange {
            tree: r.varint()?,
            start: get_bytes(r)?.to_vec(),
            end: match r.u8()? {
                0 => None,
                1 => Some(get_bytes(r)?.to_vec()),
                _ => return None,
            },
        },
        10 => Edit::SplitTablet {
            parent: r.varint()?,
            left: r.varint()?,
            right: r.varint()?,
            at: get_bytes(r)?.to_vec(),
        },
        _ => return None,
    })
}

/// The open manifest log.
pub struct Manifest {
    fs: SharedFs,
    dir: PathBuf,
    generation: u64,
    log: Wal,
    records: u64,
    /// Start a new generation after this many records.
    records_per_generation: u64,
}

fn log_options() -> WalOptions {
    WalOptions::default()
        .with_sync(SyncPolicy::EveryCommit)
        .with_segment_size(4 << 20)
}

impl Manifest {
    /// Opens the manifest in `dir` (creating an empty one if there is none) and returns
    /// the state it describes.
    /// A new generation starts after `records_per_generation` records.
    pub fn open(
        fs: SharedFs,
        dir: &Path,
        records_per_generation: u64,
    ) -> Result<(Manifest, ManifestState)> {
        let current = dir.join(CURRENT);
        if !fs.exists(&current) {
            let state = ManifestState {
                next_id: 1,
                ..ManifestState::default()
            };
            let mut manifest = Manifest::start_generation(fs, dir, 1, &state)?;
            manifest.records_per_generation = records_per_generation;
            return Ok((manifest, state));
        }
        let generation = read_current(&fs, &current)?;
        let log_dir = generation_dir(dir, generation);
        let mut recovery = Wal::recover(fs.clone(), &log_dir, log_options(), 0)?;
        let mut state = ManifestState::default();
        let mut records = 0;
        while let Some((lsn, payload)) = recovery.next_record()? {
            let bad = |detail: String| corruption(&log_dir, format!("record {lsn}: {detail}"));
            let edits = decode_edits(&payload).ok_or_else(|| bad("malformed edit".into()))?;
            for edit in &edits {
                state.apply(edit).map_err(bad)?;
            }
            records += 1;
        }
        if records == 0 {
            return Err(corruption(&log_dir, "manifest log holds no records"));
        }
        let (log, _) = recovery.finish()?;
        remove_other_generations(&fs, dir, generation)?;
        let manifest = Manifest {
            fs,
            dir: dir.to_path_buf(),
            generation,
            log,
            records,
            records_per_generation,
        };
        Ok((manifest, state))
    }

    /// Durably appends one record of edits.
    pub fn append(&mut self, edits: &[Edit]) -> Result<()> {
        self.log.append(&encode_edits(edits))?;
        self.records += 1;
        Ok(())
    }

    /// Whether the log is long enough that [`Manifest::rotate`] should be called.
    pub fn wants_rotation(&self) -> bool {
        self.records >= self.records_per_generation
    }

    /// Starts a new generation holding `state` and switches `CURRENT` to it.
    pub fn rotate(&mut self, state: &ManifestState) -> Result<()> {
        // Never reuse a generation number: a switch lost in a crash may have left that
        // directory behind with a stale snapshot in it, whose removal may not be durable.
        let newest_seen = generations(&self.fs, &self.dir)?
            .into_iter()
            .max()
            .unwrap_or(0);
        let generation = self.generation.max(newest_seen) + 1;
        let next = Manifest::start_generation(self.fs.clone(), &self.dir, generation, state)?;
        let records_per_generation = self.records_per_generation;
        let old = std::mem::replace(self, next);
        self.records_per_generation = records_per_generation;
        let old_generation = old.generation;
        drop(old.log);
        remove_generation(&self.fs, &self.dir, old_generation)
    }

    fn start_generation(
        fs: SharedFs,
        dir: &Path,
        generation: u64,
        state: &ManifestState,
    ) -> Result<Manifest> {
        let log_dir = generation_dir(dir, generation);
        if fs.exists(&log_dir) {
            remove_generation(&fs, dir, generation)?;
        }
        let (log, _) = Wal::open(fs.clone(), &log_dir, log_options())?;
        log.append(&encode_edits(&state.snapshot()))?;
        write_current(&fs, dir, generation)?;
        Ok(Manifest {
            fs,
            dir: dir.to_path_buf(),
            generation,
            log,
            records: 1,
            records_per_generation: u64::MAX,
        })
    }
}

fn generation_dir(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("manifest-{generation:06}"))
}

/// `CURRENT`: generation (u64 LE) and a CRC32 of those 8 bytes (u32 LE).
fn write_current(fs: &SharedFs, dir: &Path, generation: u64) -> Result<()> {
    let mut bytes = generation.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
    let tmp = dir.join("CURRENT.tmp");
    let context = || format!("writing {}", tmp.display());
    let mut file = fs.create(&tmp).map_err(io_error(context()))?;
    file.append(&bytes).map_err(io_error(context()))?;
    file.sync().map_err(io_error(context()))?;
    fs.rename(&tmp, &dir.join(CURRENT))
        .map_err(io_error(context()))?;
    fs.sync_dir(dir).map_err(io_error(context()))
}

fn read_current(fs: &SharedFs, path: &Path) -> Result<u64> {
    let bytes = wal::fs::read_file(fs.as_ref(), path)
        .map_err(io_error(format!("reading {}", path.display())))?;
    let generation = get_u64_le(&bytes, 0);
    let crc = get_u32_le(&bytes, 8);
    match (generation, crc) {
        (Some(g), Some(c)) if bytes.len() == 12 && crc32fast::hash(&bytes[..8]) == c => Ok(g),
        _ => Err(corruption(path, "CURRENT is damaged")),
    }
}

fn remove_generation(fs: &SharedFs, dir: &Path, generation: u64) -> Result<()> {
    let log_dir = generation_dir(dir, generation);
    let context = || format!("removing {}", log_dir.display());
    for name in fs.list(&log_dir).map_err(io_error(context()))? {
        fs.remove(&log_dir.join(name))
            .map_err(io_error(context()))?;
    }
    // The removals must be durable before the directory goes: otherwise a crash can
    // bring its old files back into a later generation of the same number.
    fs.sync_dir(&log_dir).map_err(io_error(context()))?;
    fs.remove_dir(&log_dir).map_err(io_error(context()))?;
    fs.sync_dir(dir).map_err(io_error(context()))
}

/// The generations that have a directory.
fn generations(fs: &SharedFs, dir: &Path) -> Result<Vec<u64>> {
    let names = fs
        .list(dir)
        .map_err(io_error(format!("listing {}", dir.display())))?;
    Ok(names
        .iter()
        .filter_map(|name| name.strip_prefix("manifest-")?.parse::<u64>().ok())
        .collect())
}

/// Generations left behind by a crash during a switch.
fn remove_other_generations(fs: &SharedFs, dir: &Path, keep: u64) -> Result<()> {
    for g in generations(fs, dir)? {
        if g != keep {
            remove_generation(fs, dir, g)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wal::fs::{CrashMode, FaultyFs, FileSystem};

    fn file(id: u64) -> FileMeta {
        FileMeta {
            id,
            size: 100 * id,
            entries: id,
            max_seq: id,
            smallest_row: b"a".to_vec(),
            largest_row: b"z".to_vec(),
        }
    }

    #[test]
    fn state_survives_reopen_rotation_and_crash() {
        let fs = FaultyFs::new();
        let dir = Path::new("/db");
        let (mut m, mut state) = Manifest::open(fs.shared(), dir, 100).unwrap();
        let mut apply = |m: &mut Manifest, edits: Vec<Edit>| {
            m.append(&edits).unwrap();
            for e in &edits {
                state.apply(e).unwrap();
            }
            state.clone()
        };
        let schema = TableSchema::with_families(["cf"]);
        apply(
            &mut m,
            vec![Edit::CreateTable {
                tree: 1,
                name: "t".into(),
                schema,
            }],
        );
        let expected = apply(
            &mut m,
            vec![
                Edit::AddFile {
                    tree: 1,
                    level: 0,
                    file: file(2),
                },
                Edit::Flushed { tree: 1, seq: 9 },
                Edit::NextId(3),
                Edit::LastSeq(9),
            ],
        );
        fs.crash(CrashMode::DropUnsynced);
        let (mut m, got) = Manifest::open(fs.shared(), dir, 100).unwrap();
        assert_eq!(got, expected);
        m.rotate(&got).unwrap();
        fs.crash(CrashMode::DropUnsynced);
        let (_, got) = Manifest::open(fs.shared(), dir, 100).unwrap();
        assert_eq!(got, expected);
        assert_eq!(
            fs.list(dir).unwrap(),
            vec!["CURRENT".to_string(), "manifest-000002".to_string()]
        );
    }

    #[test]
    fn damaged_current_is_a_corruption_error() {
        let fs = FaultyFs::new();
        let dir = Path::new("/db");
        drop(Manifest::open(fs.shared(), dir, 100).unwrap());
        fs.flip_bit(&dir.join(CURRENT), 0, 3).unwrap();
        let err = Manifest::open(fs.shared(), dir, 100).err().unwrap();
        assert!(err.to_string().contains("CURRENT"), "{err}");
    }

    #[test]
    fn edits_round_trip_and_truncations_are_rejected() {
        let edits = vec![
            Edit::CreateTable {
                tree: 1,
                name: "t".into(),
                schema: TableSchema::with_families(["a"]),
            },
            Edit::AddFile {
                tree: 1,
                level: 2,
                file: file(5),
            },
            Edit::RemoveFile {
                tree: 1,
                level: 2,
                id: 5,
            },
            Edit::SetSchema {
                tree: 1,
                schema: TableSchema::default(),
            },
            Edit::DropTable { tree: 1 },
        ];
        let bytes = encode_edits(&edits);
        assert_eq!(decode_edits(&bytes), Some(edits));
        for cut in 0..bytes.len() {
            assert_eq!(decode_edits(&bytes[..cut]), None);
        }
    }
}
