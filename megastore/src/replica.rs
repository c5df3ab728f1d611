//! What one replica can do to an entity group's replication state, each step a
//! single-row operation on its tablet server: read the root row's log and state cells,
//! accept a value at a position (compare-and-set on that position's cell), advance the
//! group's state, and drop old log cells. The next part of the work reaches remote
//! replicas with the same operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use bigtable::{Durability, Engine, Mutation, RowCheck, RowFilter, RowMutations, TimestampRange};

use crate::layout::{column, family_at, log_qualifier, GroupMeta, LOG, META, META_STATE};
use crate::paxos::acceptor::{AcceptorState, Refusal};
use crate::Error;

/// What an acceptor accepted: the ballot and the value.
pub type Accepted = (u64, Vec<u8>);

/// An accept request: group, position, ballot, value.
pub type AcceptRequest = (RootRow, u64, u64, Vec<u8>);

/// How an acceptor rule judges a position's cell as it stands.
enum Judged {
    /// The answer, with nothing to write.
    Done(Result<AcceptorState, Refusal>),
    /// The cell must go from `current` to `next`.
    Write {
        current: Option<Vec<u8>>,
        next: AcceptorState,
    },
}

/// An entity group's root row, as the replica addresses it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RootRow {
    /// The Bigtable table.
    pub table: String,
    pub row: Vec<u8>,
}

/// What a replica's root row says about the group.
#[derive(Debug, Clone, Default)]
pub struct GroupState {
    pub meta: GroupMeta,
    /// The state cell's bytes, for compare-and-set (`None`: never written).
    pub meta_cell: Option<Vec<u8>>,
    /// The acceptor state of every retained log position.
    pub log: BTreeMap<u64, AcceptorState>,
}

impl GroupState {
    /// The highest position holding an accepted value. With one replica, accepted is
    /// chosen, and positions are filled in order.
    pub fn last_accepted(&self) -> u64 {
        self.log
            .iter()
            .rev()
            .find(|(_, s)| s.accepted.is_some())
            .map_or(self.meta.applied, |(p, _)| (*p).max(self.meta.applied))
    }

    /// The value of `position` if it is known to be chosen: marked chosen, or (with
    /// `sole_voter`, where accepting is choosing) accepted.
    pub fn chosen_at(&self, position: u64, sole_voter: bool) -> Option<&[u8]> {
        let state = self.log.get(&position)?;
        match (state.chosen_value(), &state.accepted) {
            (Some(v), _) => Some(v),
            (None, Some((_, v))) if sole_voter => Some(v),
            _ => None,
        }
    }

    pub fn value_at(&self, position: u64) -> Option<&[u8]> {
        self.log
            .get(&position)?
            .accepted
            .as_ref()
            .map(|(_, v)| v.as_slice())
    }
}

pub struct Replica {
    engine: Arc<Engine>,
}

impl Replica {
    pub fn new(engine: Arc<Engine>) -> Self {
        Replica { engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reads the group's state, and the log positions from the applied one on, from its
    /// root row. Two reads of one snapshot, each seeking straight to its columns: the
    /// retained older positions (kept for catch-up and the global indexes, which read
    /// them with [`Replica::log_range`]) are never walked.
    pub fn group_state(&self, root: &RootRow) -> Result<GroupState, Error> {
        let snapshot = self.engine.snapshot(&root.table)?;
        let newest = |filter| -> Result<Option<bigtable::Row>, Error> {
            let compiled = bigtable::RowFilter::compile(&filter)?;
            Ok(snapshot.read_row(&root.row, Some(&compiled))?)
        };
        let mut state = GroupState::default();
        let meta = newest(RowFilter::Chain(vec![
            column(META, META_STATE),
            RowFilter::CellsPerColumnLimit(1),
        ]))?;
        if let Some(cell) = meta.and_then(|r| r.cells.into_iter().next()) {
            state.meta = GroupMeta::decode(&cell.value)?;
            state.meta_cell = Some(cell.value);
        }
        let log = newest(log_range_filter(state.meta.applied, None))?;
        state.log = decode_log(log)?;
        Ok(state)
    }

    /// The acceptor states of the positions `from..=to` the root row still holds.
    pub fn log_range(
        &self,
        root: &RootRow,
        from: u64,
        to: u64,
    ) -> Result<BTreeMap<u64, AcceptorState>, Error> {
        let filter = log_range_filter(from, Some(to));
        decode_log(
            self.engine
                .read_row(&root.table, &root.row, Some(&filter))?,
        )
    }

    /// The value chosen at `position`, if this replica knows it: it applied the
    /// position and still keeps its log cell (an applied position's accepted value is the
    /// chosen one), or it was told the value is chosen.
    pub fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        let (cell, meta) = self.position_and_meta(root, &log_qualifier(position))?;
        let Some(bytes) = cell else {
            return Ok(None);
        };
        let state = AcceptorState::decode(&bytes)?;
        if meta.applied < position {
            return Ok(state.chosen_value().map(<[u8]>::to_vec));
        }
        Ok(state.accepted.map(|(_, v)| v))
    }

    /// Records that `value` is chosen at `position` (unless the position is applied
    /// already). Buffered: losing it in a crash loses only knowledge that catch-up
    /// regains from the other replicas.
    pub fn mark_chosen(&self, root: &RootRow, position: u64, value: &[u8]) -> Result<(), Error> {
        let write = [set_cell(
            LOG,
            &log_qualifier(position),
            AcceptorState::chosen(value).encode(),
        )];
        self.engine.check_and_mutate_row_with(
            &root.table,
            &root.row,
            Some(&applied_through(position)),
            &[],
            &write,
            Durability::Buffered,
        )?;
        Ok(())
    }

    /// The highest position this replica knows of: applied, or holding an accepted value.
    pub fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        Ok(self.group_state(root)?.last_accepted())
    }

    /// Every log position whose cell the root row still holds (diagnostics).
    pub fn log_positions(&self, root: &RootRow) -> Result<Vec<u64>, Error> {
        let filter = RowFilter::Chain(vec![family_at(LOG, None), RowFilter::StripValue]);
        let row = self
            .engine
            .read_row(&root.table, &root.row, Some(&filter))?;
        row.map(|r| r.cells)
            .unwrap_or_default()
            .iter()
            .map(|c| position_of(&c.qualifier))
            .collect()
    }

    /// Asks the acceptor of `position` to accept `value` with `ballot`.
    pub fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Result<(), Refusal>, Error> {
        Ok(self
            .transition(root, position, |s| s.accept(ballot, value))?
            .map(|_| ()))
    }

    /// Asks the acceptor of `position` to promise `ballot`; the promise carries what
    /// it had accepted.
    pub fn prepare(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
    ) -> Result<Result<Option<Accepted>, Refusal>, Error> {
        Ok(self
            .transition(root, position, |s| s.prepare(ballot))?
            .map(|s| s.accepted))
    }

    /// [`Replica::accept`] of several positions (of any groups), with one fsync for
    /// all: each is judged as `accept` judges it, the writes go together as one
    /// check-and-mutate per table (`Engine::check_and_mutate_rows`), and one whose cell
    /// changed meanwhile (or a second of one group) is then handled on its own.
    pub fn accept_many(
        &self,
        accepts: &[AcceptRequest],
    ) -> Vec<Result<Result<(), Refusal>, Error>> {
        let mut results: Vec<Option<Result<Result<(), Refusal>, Error>>> =
            accepts.iter().map(|_| None).collect();
        let mut batches: BTreeMap<&str, (Vec<usize>, Vec<RowCheck>)> = BTreeMap::new();
        for (i, (root, position, ballot, value)) in accepts.iter().enumerate() {
            match self.judge(root, *position, |s| s.accept(*ballot, value)) {
                Err(e) => results[i] = Some(Err(e)),
                Ok(Judged::Done(answer)) => results[i] = Some(Ok(answer.map(|_| ()))),
                Ok(Judged::Write { current, next }) => {
                    let (items, checks) = batches.entry(&root.table).or_default();
                    if checks.iter().all(|c| c.row != root.row) {
                        let value = next.encode();
                        checks.push(position_write(root, *position, current.as_deref(), value));
                        items.push(i);
                    }
                }
            }
        }
        for (table, (items, checks)) in batches {
            let Ok(matched) = self
                .engine
                .check_and_mutate_rows(table, &checks, Durability::Synced)
            else {
                continue; // each is tried again on its own, and reports its own error
            };
            for ((i, check), matched) in items.into_iter().zip(&checks).zip(matched) {
                if wrote(check, matched) {
                    results[i] = Some(Ok(Ok(())));
                }
            }
        }
        results
            .into_iter()
            .zip(accepts)
            .map(|(result, (root, position, ballot, value))| {
                result.unwrap_or_else(|| self.accept(root, *position, *ballot, value))
            })
            .collect()
    }

    /// Applies an acceptor rule to a position's cell by compare-and-set; the new state.
    fn transition(
        &self,
        root: &RootRow,
        position: u64,
        rule: impl Fn(&AcceptorState) -> Result<AcceptorState, Refusal>,
    ) -> Result<Result<AcceptorState, Refusal>, Error> {
        loop {
            match self.judge(root, position, &rule)? {
                Judged::Done(answer) => return Ok(answer),
                Judged::Write { current, next } => {
                    let value = next.encode();
                    let write = position_write(root, position, current.as_deref(), value);
                    let matched = self.engine.check_and_mutate_row(
                        &root.table,
                        &write.row,
                        write.predicate.as_ref(),
                        &write.if_true,
                        &write.if_false,
                    )?;
                    if wrote(&write, matched) {
                        return Ok(Ok(next));
                    }
                }
            }
            // The cell or the applied position changed since our read: judge again.
        }
    }

    /// Judges `rule` on a position's cell as it stands.
    fn judge(
        &self,
        root: &RootRow,
        position: u64,
        rule: impl Fn(&AcceptorState) -> Result<AcceptorState, Refusal>,
    ) -> Result<Judged, Error> {
        let (current, meta) = self.position_and_meta(root, &log_qualifier(position))?;
        if meta.applied >= position {
            // Decided here: answer as a chosen state would, without writing.
            let chosen = match &current {
                Some(bytes) => AcceptorState::decode(bytes)?.accepted,
                None => None,
            };
            return Ok(Judged::Done(match chosen {
                Some((_, value)) => rule(&AcceptorState::chosen(&value)),
                None => Err(Refusal::Applied),
            }));
        }
        let state = match &current {
            Some(bytes) => AcceptorState::decode(bytes)?,
            None => AcceptorState::default(),
        };
        Ok(Judged::Done(match rule(&state) {
            // Nothing to write for a repeated request.
            Ok(next) if next != state => return Ok(Judged::Write { current, next }),
            answer => answer,
        }))
    }

    /// The acceptor cell of a position and the group's state, in one row read.
    fn position_and_meta(
        &self,
        root: &RootRow,
        qualifier: &[u8],
    ) -> Result<(Option<Vec<u8>>, GroupMeta), Error> {
        let newest = |family, q| {
            RowFilter::Chain(vec![column(family, q), RowFilter::CellsPerColumnLimit(1)])
        };
        let filter = RowFilter::Interleave(vec![newest(LOG, qualifier), newest(META, META_STATE)]);
        let mut cell = None;
        let mut meta = GroupMeta::default();
        if let Some(row) = self
            .engine
            .read_row(&root.table, &root.row, Some(&filter))?
        {
            for c in row.cells {
                if c.family == META.as_bytes() {
                    meta = GroupMeta::decode(&c.value)?;
                } else {
                    cell = Some(c.value);
                }
            }
        }
        Ok((cell, meta))
    }

    /// Replaces the group's state cell if it still holds `expected`. Buffered (no
    /// fsync of its own): the state only says how far the log was applied, and if a
    /// crash loses it, it loses the applied cells before it too, and they are redone.
    pub fn set_meta(
        &self,
        root: &RootRow,
        expected: Option<&[u8]>,
        meta: GroupMeta,
    ) -> Result<bool, Error> {
        self.set_meta_along(root, expected, meta, &[])
    }

    /// [`Replica::set_meta`], in one commit with `rows` of the root row's table, which
    /// are written whether or not the state cell still held `expected`: an applied
    /// entry's cells (an apply is idempotent, so a lost race only rewrites them).
    pub fn set_meta_along(
        &self,
        root: &RootRow,
        expected: Option<&[u8]>,
        meta: GroupMeta,
        rows: &[RowMutations],
    ) -> Result<bool, Error> {
        let cell = (META, META_STATE);
        self.compare_and_set(root, cell, expected, meta.encode(), Vec::new(), rows)
    }

    /// The group's applied position, made durable first: the state cell rewritten
    /// unchanged with an fsync, which (the commit log keeping a prefix) makes every
    /// buffered write before it durable too. After a crash this replica's applied
    /// position is at least the one returned, so it never again needs the values of
    /// positions up to there. `Unavailable` if the state kept changing underneath.
    pub fn durable_applied(&self, root: &RootRow) -> Result<u64, Error> {
        for _ in 0..8 {
            let state = self.group_state(root)?;
            let Some(cell) = state.meta_cell else {
                return Ok(0);
            };
            let predicate = RowFilter::Chain(vec![
                column(META, META_STATE),
                RowFilter::CellsPerColumnLimit(1),
                RowFilter::ValueRange {
                    start: std::ops::Bound::Included(cell.clone()),
                    end: std::ops::Bound::Included(cell.clone()),
                },
            ]);
            let rewrite = [set_cell(META, META_STATE, cell)];
            let matched = self.engine.check_and_mutate_row_with(
                &root.table,
                &root.row,
                Some(&predicate),
                &rewrite,
                &[],
                Durability::Synced,
            )?;
            if matched {
                return Ok(state.meta.applied);
            }
        }
        Err(Error::Unavailable(
            "the group's state kept changing while it was being synced".into(),
        ))
    }

    /// Deletes the log cells of `positions` and replaces the state cell with `meta`, in
    /// one check-and-mutate that requires the state cell to still hold `expected`.
    pub fn clean_log(
        &self,
        root: &RootRow,
        expected: Option<&[u8]>,
        meta: GroupMeta,
        positions: &[u64],
    ) -> Result<bool, Error> {
        let deletions = positions
            .iter()
            .map(|p| Mutation::DeleteFromColumn {
                family: LOG.as_bytes().to_vec(),
                qualifier: log_qualifier(*p),
                range: TimestampRange {
                    start: 0,
                    end: None,
                },
            })
            .collect();
        let cell = (META, META_STATE);
        self.compare_and_set(root, cell, expected, meta.encode(), deletions, &[])
    }

    /// One buffered check-and-mutate: writes `value` to the column (and applies `also`)
    /// if its newest cell equals `expected` (`None`: the column is empty), committing
    /// `rows` of the table with it in any case. Whether it wrote.
    fn compare_and_set(
        &self,
        root: &RootRow,
        (family, qualifier): (&str, &[u8]),
        expected: Option<&[u8]>,
        value: Vec<u8>,
        also: Vec<Mutation>,
        rows: &[RowMutations],
    ) -> Result<bool, Error> {
        let mut write = also;
        write.push(set_cell(family, qualifier, value));
        let mut predicate = vec![column(family, qualifier), RowFilter::CellsPerColumnLimit(1)];
        if let Some(old) = expected {
            predicate.push(RowFilter::ValueRange {
                start: std::ops::Bound::Included(old.to_vec()),
                end: std::ops::Bound::Included(old.to_vec()),
            });
        }
        let predicate = RowFilter::Chain(predicate);
        let (if_true, if_false): (&[Mutation], &[Mutation]) = match expected {
            Some(_) => (&write, &[]),
            None => (&[], &write),
        };
        let matched = self.engine.check_and_mutate_row_along(
            &root.table,
            &root.row,
            Some(&predicate),
            if_true,
            if_false,
            rows,
            Durability::Buffered,
        )?;
        Ok(matched == expected.is_some())
    }
}

/// The check-and-mutate that writes `value` to a position's acceptor cell if the cell
/// still holds `expected` (`None`: empty) and the group has not applied the position.
/// The second condition keeps a slow proposer from reusing a position whose cell the
/// log cleanup already deleted.
fn position_write(
    root: &RootRow,
    position: u64,
    expected: Option<&[u8]>,
    value: Vec<u8>,
) -> RowCheck {
    let qualifier = log_qualifier(position);
    let applied = applied_through(position);
    let cell = RowFilter::Chain(vec![
        column(LOG, &qualifier),
        RowFilter::CellsPerColumnLimit(1),
    ]);
    let predicate = match expected {
        // Matches (and so does not write) if the cell exists or the position is applied.
        None => RowFilter::Interleave(vec![cell, applied]),
        // Matches (and writes) only if the position is unapplied and the cell holds `old`.
        Some(old) => RowFilter::Condition {
            predicate: Box::new(applied),
            true_filter: Some(Box::new(RowFilter::BlockAll)),
            false_filter: Some(Box::new(RowFilter::Chain(vec![
                cell,
                RowFilter::ValueRange {
                    start: std::ops::Bound::Included(old.to_vec()),
                    end: std::ops::Bound::Included(old.to_vec()),
                },
            ]))),
        },
    };
    let write = vec![set_cell(LOG, &qualifier, value)];
    let (if_true, if_false) = if expected.is_some() {
        (write, Vec::new())
    } else {
        (Vec::new(), write)
    };
    RowCheck {
        row: root.row.clone(),
        predicate: Some(predicate),
        if_true,
        if_false,
    }
}

/// Whether a check-and-mutate wrote, given whether its predicate matched.
fn wrote(check: &RowCheck, matched: bool) -> bool {
    if matched {
        !check.if_true.is_empty()
    } else {
        !check.if_false.is_empty()
    }
}

/// Replication cells are overwritten in place: always timestamp 0, newest wins.
fn set_cell(family: &str, qualifier: &[u8], value: Vec<u8>) -> Mutation {
    Mutation::SetCell {
        family: family.as_bytes().to_vec(),
        qualifier: qualifier.to_vec(),
        timestamp: Some(0),
        value,
    }
}

/// A filter that outputs the state cell iff the applied position (its first 8 bytes,
/// big-endian) is at least `position`.
fn applied_through(position: u64) -> RowFilter {
    RowFilter::Chain(vec![
        column(META, META_STATE),
        RowFilter::CellsPerColumnLimit(1),
        RowFilter::ValueRange {
            start: std::ops::Bound::Included(position.to_be_bytes().to_vec()),
            end: std::ops::Bound::Unbounded,
        },
    ])
}

/// The newest cell of each log position from `from` on (through `to`, if given).
fn log_range_filter(from: u64, to: Option<u64>) -> RowFilter {
    RowFilter::Chain(vec![
        RowFilter::ColumnRange {
            family: LOG.into(),
            start: std::ops::Bound::Included(log_qualifier(from)),
            end: to.map_or(std::ops::Bound::Unbounded, |to| {
                std::ops::Bound::Included(log_qualifier(to))
            }),
        },
        RowFilter::CellsPerColumnLimit(1),
    ])
}

fn decode_log(row: Option<bigtable::Row>) -> Result<BTreeMap<u64, AcceptorState>, Error> {
    let mut log = BTreeMap::new();
    for cell in row.map(|r| r.cells).unwrap_or_default() {
        log.insert(
            position_of(&cell.qualifier)?,
            AcceptorState::decode(&cell.value)?,
        );
    }
    Ok(log)
}

fn position_of(qualifier: &[u8]) -> Result<u64, Error> {
    <[u8; 8]>::try_from(qualifier)
        .map(u64::from_be_bytes)
        .map_err(|_| Error::Damaged("log cell qualifier is not a position".into()))
}
