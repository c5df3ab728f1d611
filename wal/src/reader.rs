//! Reading the log back: every intact record in order, then either a clean end, a torn
//! tail (damage at the end of the last segment with nothing valid after it), or a
//! [`Error::Corruption`] (damage followed by valid data, or in any earlier segment).

use std::io;
use std::path::{Path, PathBuf};

use crate::format::{fragment_crc, FragmentHeader, FragmentType, BLOCK_SIZE, FRAGMENT_HEADER_SIZE};
use crate::fs::{RandomAccessFile, SharedFs};
use crate::segment::{corruption, decode_header, list_segments, SEGMENT_HEADER_SIZE};
use crate::{IoContext, Lsn, Result};

/// Damage at the end of the log: bytes a crash left half-written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailDamage {
    /// The last segment, where the damage is.
    pub segment: PathBuf,
    /// Where the first incomplete record starts; everything from here on is dropped.
    pub offset: u64,
    /// What was wrong with the bytes there.
    pub reason: String,
}

/// How a fully read log ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEnd {
    Clean,
    TornTail(TailDamage),
}

/// Reads the records of a log directory in LSN order.
pub struct LogReader {
    fs: SharedFs,
    segments: Vec<(Lsn, PathBuf)>,
    next_segment: usize,
    current: Option<SegmentReader>,
    next_lsn: Lsn,
    start_lsn: Lsn,
    end: Option<LogEnd>,
    /// The segment being read last and the offset after its last intact record.
    append_position: Option<(PathBuf, u64)>,
    failed: bool,
}

impl LogReader {
    /// Reads records with LSN `>= start_lsn` from the segments in `dir`.
    pub fn open(fs: SharedFs, dir: &Path, start_lsn: Lsn) -> Result<Self> {
        let mut segments = list_segments(fs.as_ref(), dir)?;
        let first_needed = segments
            .windows(2)
            .position(|w| w[1].0 > start_lsn)
            .unwrap_or(segments.len().saturating_sub(1));
        segments.drain(..first_needed);
        Ok(LogReader {
            fs,
            segments,
            next_segment: 0,
            current: None,
            next_lsn: 0,
            start_lsn,
            end: None,
            append_position: None,
            failed: false,
        })
    }

    /// How the log ended; `None` until [`Self::next_record`] has returned `Ok(None)`.
    pub fn end(&self) -> Option<&LogEnd> {
        self.end.as_ref()
    }

    /// Where appending continues once the log has been read to its end: the last segment
    /// and the offset after its last intact record (`None` without segments).
    pub fn append_position(&self) -> Option<(&Path, u64)> {
        self.append_position
            .as_ref()
            .map(|(p, o)| (p.as_path(), *o))
    }

    /// The LSN the next record appended after the end of this log would get.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// The segments this reader covers, by first LSN.
    pub fn segments(&self) -> &[(Lsn, PathBuf)] {
        &self.segments
    }

    /// The next record at or after the start LSN, or `None` at the end of the log.
    pub fn next_record(&mut self) -> Result<Option<(Lsn, Vec<u8>)>> {
        if self.failed {
            return Ok(None);
        }
        let result = self.advance();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn advance(&mut self) -> Result<Option<(Lsn, Vec<u8>)>> {
        loop {
            if self.end.is_some() {
                return Ok(None);
            }
            let Some(segment) = self.current.as_mut() else {
                self.open_next_segment()?;
                continue;
            };
            match segment.next_record().context(|| segment.describe())? {
                SegmentEvent::Record(payload) => {
                    let lsn = self.next_lsn;
                    self.next_lsn += 1;
                    if lsn >= self.start_lsn {
                        return Ok(Some((lsn, payload)));
                    }
                }
                SegmentEvent::End(offset) => {
                    self.append_position = Some((segment.path.clone(), offset));
                    self.current = None;
                }
                SegmentEvent::Damage(damage) => self.classify_damage(damage)?,
            }
        }
    }

    fn is_last_segment(&self) -> bool {
        self.next_segment == self.segments.len()
    }

    fn open_next_segment(&mut self) -> Result<()> {
        let Some((name_lsn, path)) = self.segments.get(self.next_segment).cloned() else {
            self.end = Some(LogEnd::Clean);
            if self.next_lsn == 0 {
                self.next_lsn = 1;
            }
            return Ok(());
        };
        self.next_segment += 1;
        let file = self
            .fs
            .open_read(&path)
            .context(|| format!("opening {}", path.display()))?;
        let segment =
            SegmentReader::new(path.clone(), file).context(|| path.display().to_string())?;
        let first_lsn = match segment.header() {
            Ok(lsn) => lsn,
            Err(reason) => {
                if self.next_lsn == 0 {
                    self.next_lsn = name_lsn;
                }
                let damage = Damage {
                    offset: 0,
                    reason,
                    resume_at: Some(0),
                };
                self.current = Some(segment);
                return self.classify_damage(damage);
            }
        };
        if first_lsn != name_lsn {
            let why = format!("header says first LSN {first_lsn}, file name says {name_lsn}");
            return Err(corruption(&path, 0, why));
        }
        if self.next_lsn != 0 && first_lsn != self.next_lsn {
            let why = format!(
                "segment starts at LSN {first_lsn}, expected {}",
                self.next_lsn
            );
            return Err(corruption(&path, 0, why));
        }
        self.next_lsn = first_lsn;
        self.current = Some(segment);
        Ok(())
    }

    /// Damage is a torn tail only in the last segment and only with nothing valid after it.
    fn classify_damage(&mut self, damage: Damage) -> Result<()> {
        let Some(segment) = self.current.take() else {
            return Ok(());
        };
        let valid_after = match damage.resume_at {
            Some(from) => segment
                .first_valid_fragment_from(from)
                .context(|| segment.describe())?,
            None => None,
        };
        let at = format!("{} at offset {}", damage.reason, damage.offset);
        if !self.is_last_segment() {
            return Err(corruption(
                &segment.path,
                damage.offset,
                format!("{at}, in a segment that is not the last"),
            ));
        }
        if let Some(valid) = valid_after {
            let why = format!("{at}, followed by a valid fragment at offset {valid}");
            return Err(corruption(&segment.path, damage.offset, why));
        }
        self.append_position = Some((segment.path.clone(), damage.offset));
        self.end = Some(LogEnd::TornTail(TailDamage {
            segment: segment.path,
            offset: damage.offset,
            reason: damage.reason,
        }));
        Ok(())
    }
}

impl Iterator for LogReader {
    type Item = Result<(Lsn, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Something wrong in a segment: where the incomplete record starts, why, and from where
/// to look for valid data after it.
struct Damage {
    offset: u64,
    reason: String,
    resume_at: Option<u64>,
}

enum SegmentEvent {
    Record(Vec<u8>),
    /// The segment ended cleanly; the offset is the end of its last record.
    End(u64),
    Damage(Damage),
}

enum Fragment {
    Data {
        offset: u64,
        ty: FragmentType,
        start: usize,
        len: usize,
    },
    Eof,
    Bad {
        offset: u64,
        reason: String,
        resume_at: Option<u64>,
    },
}

/// Reads one segment file block by block.
struct SegmentReader {
    path: PathBuf,
    file: Box<dyn RandomAccessFile>,
    file_len: u64,
    block: Vec<u8>,
    block_start: u64,
    pos: usize,
    /// The end of the last complete record.
    record_end: u64,
}

impl SegmentReader {
    fn new(path: PathBuf, file: Box<dyn RandomAccessFile>) -> io::Result<Self> {
        let file_len = file.len()?;
        let mut reader = SegmentReader {
            path,
            file,
            file_len,
            block: Vec::with_capacity(BLOCK_SIZE),
            block_start: 0,
            pos: SEGMENT_HEADER_SIZE,
            record_end: SEGMENT_HEADER_SIZE as u64,
        };
        reader.load_block()?;
        Ok(reader)
    }

    fn describe(&self) -> String {
        format!("reading {}", self.path.display())
    }

    fn header(&self) -> Result<Lsn, String> {
        decode_header(&self.block)
    }

    fn load_block(&mut self) -> io::Result<()> {
        let len = (self.file_len.saturating_sub(self.block_start)).min(BLOCK_SIZE as u64);
        self.block.resize(len as usize, 0);
        self.file.read_exact_at(self.block_start, &mut self.block)
    }

    fn is_final_block(&self) -> bool {
        self.block_start + BLOCK_SIZE as u64 >= self.file_len
    }

    fn next_record(&mut self) -> io::Result<SegmentEvent> {
        let mut partial: Option<(u64, Vec<u8>)> = None;
        loop {
            let (offset, ty, start, len) = match self.next_fragment()? {
                Fragment::Data {
                    offset,
                    ty,
                    start,
                    len,
                } => (offset, ty, start, len),
                Fragment::Eof => {
                    return Ok(match partial {
                        None => SegmentEvent::End(self.record_end),
                        Some((start, _)) => damage(start, "record incomplete at end of file", None),
                    });
                }
                Fragment::Bad {
                    offset,
                    reason,
                    resume_at,
                } => {
                    let start = partial.map_or(offset, |(start, _)| start);
                    return Ok(damage(start, &reason, resume_at));
                }
            };
            let payload = &self.block[start..start + len];
            let position = self.block_start + self.pos as u64;
            match (ty, partial.as_mut()) {
                (FragmentType::Full, None) => {
                    self.record_end = position;
                    return Ok(SegmentEvent::Record(payload.to_vec()));
                }
                (FragmentType::First, None) => partial = Some((offset, payload.to_vec())),
                (FragmentType::Middle, Some((_, buf))) => buf.extend_from_slice(payload),
                (FragmentType::Last, Some((_, buf))) => {
                    buf.extend_from_slice(payload);
                    let (_, record) = partial.take().unwrap_or_default();
                    self.record_end = position;
                    return Ok(SegmentEvent::Record(record));
                }
                (_, Some((start, _))) => {
                    return Ok(damage(
                        *start,
                        &format!("{ty:?} fragment inside a record"),
                        Some(offset),
                    ));
                }
                (_, None) => {
                    return Ok(damage(
                        offset,
                        &format!("{ty:?} fragment without a FIRST"),
                        Some(offset),
                    ));
                }
            }
        }
    }

    fn next_fragment(&mut self) -> io::Result<Fragment> {
        loop {
            let left = self.block.len() - self.pos;
            if left >= FRAGMENT_HEADER_SIZE {
                return self.parse_fragment_here();
            }
            if !self.is_final_block() {
                // Fewer bytes than a header at the end of a full block: zero padding.
                if self.block[self.pos..].iter().any(|&b| b != 0) {
                    return Ok(Fragment::Bad {
                        offset: self.block_start + self.pos as u64,
                        reason: "non-zero block padding".into(),
                        resume_at: Some(self.block_start + BLOCK_SIZE as u64),
                    });
                }
                self.block_start += BLOCK_SIZE as u64;
                self.pos = 0;
                self.load_block()?;
                continue;
            }
            if left == 0 || self.zeros_to_eof()? {
                return Ok(Fragment::Eof);
            }
            return Ok(Fragment::Bad {
                offset: self.block_start + self.pos as u64,
                reason: "fragment header cut short by end of file".into(),
                resume_at: None,
            });
        }
    }

    fn parse_fragment_here(&mut self) -> io::Result<Fragment> {
        let offset = self.block_start + self.pos as u64;
        let header_bytes: [u8; FRAGMENT_HEADER_SIZE] = self.block
            [self.pos..self.pos + FRAGMENT_HEADER_SIZE]
            .try_into()
            .unwrap_or([0; FRAGMENT_HEADER_SIZE]);
        if header_bytes == [0; FRAGMENT_HEADER_SIZE] && self.zeros_to_eof()? {
            // Preallocated space that was never written: the end of the segment.
            return Ok(Fragment::Eof);
        }
        let header = FragmentHeader::decode(&header_bytes);
        let bad = |reason: &str, resume_at| Fragment::Bad {
            offset,
            reason: reason.into(),
            resume_at,
        };
        let next_block = Some(self.block_start + BLOCK_SIZE as u64);
        let Some(ty) = FragmentType::from_byte(header.ty) else {
            return Ok(bad(
                &format!("invalid fragment type {}", header.ty),
                next_block,
            ));
        };
        let start = self.pos + FRAGMENT_HEADER_SIZE;
        let room = self.block.len() - start;
        if header.len > room {
            if self.is_final_block() && self.block.len() < BLOCK_SIZE {
                return Ok(bad("fragment cut short by end of file", None));
            }
            return Ok(bad("fragment length runs past its block", next_block));
        }
        if fragment_crc(ty, &self.block[start..start + header.len]) != header.crc {
            let after = offset + (FRAGMENT_HEADER_SIZE + header.len) as u64;
            return Ok(bad("checksum mismatch", Some(after)));
        }
        self.pos = start + header.len;
        Ok(Fragment::Data {
            offset,
            ty,
            start,
            len: header.len,
        })
    }

    /// Whether every byte from the current position to the end of the file is zero.
    fn zeros_to_eof(&self) -> io::Result<bool> {
        if self.block[self.pos..].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        let mut buf = vec![0u8; BLOCK_SIZE];
        let mut at = self.block_start + BLOCK_SIZE as u64;
        while at < self.file_len {
            let n = (self.file_len - at).min(BLOCK_SIZE as u64) as usize;
            self.file.read_exact_at(at, &mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    }

    /// The offset of the first intact fragment at `from` or at any later block start.
    fn first_valid_fragment_from(&self, from: u64) -> io::Result<Option<u64>> {
        let block = BLOCK_SIZE as u64;
        let next_block_start = from.div_ceil(block) * block;
        let candidates = std::iter::once(from)
            .chain((next_block_start..self.file_len).step_by(BLOCK_SIZE))
            .map(|at| {
                if at == 0 {
                    SEGMENT_HEADER_SIZE as u64
                } else {
                    at
                }
            });
        for at in candidates {
            if self.is_valid_fragment_at(at)? {
                return Ok(Some(at));
            }
        }
        Ok(None)
    }

    fn is_valid_fragment_at(&self, at: u64) -> io::Result<bool> {
        let in_block = (at % BLOCK_SIZE as u64) as usize;
        if at + FRAGMENT_HEADER_SIZE as u64 > self.file_len
            || in_block + FRAGMENT_HEADER_SIZE > BLOCK_SIZE
        {
            return Ok(false);
        }
        let mut header_bytes = [0u8; FRAGMENT_HEADER_SIZE];
        self.file.read_exact_at(at, &mut header_bytes)?;
        let header = FragmentHeader::decode(&header_bytes);
        let Some(ty) = FragmentType::from_byte(header.ty) else {
            return Ok(false);
        };
        let payload_at = at + FRAGMENT_HEADER_SIZE as u64;
        if in_block + FRAGMENT_HEADER_SIZE + header.len > BLOCK_SIZE
            || payload_at + header.len as u64 > self.file_len
        {
            return Ok(false);
        }
        let mut payload = vec![0u8; header.len];
        self.file.read_exact_at(payload_at, &mut payload)?;
        Ok(fragment_crc(ty, &payload) == header.crc)
    }
}

fn damage(offset: u64, reason: &str, resume_at: Option<u64>) -> SegmentEvent {
    SegmentEvent::Damage(Damage {
        offset,
        reason: reason.to_string(),
        resume_at,
    })
}
