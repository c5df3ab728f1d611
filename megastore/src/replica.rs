//! What one replica can do to an entity group's replication state, each step a
//! single-row operation on its tablet server: read the root row's log and state cells,
//! accept a value at a position (compare-and-set on that position's cell), advance the
//! group's state, and drop old log cells. The next part of the work reaches remote
//! replicas with the same operations.

use std::collections::BTreeMap;
use std::sync::Arc;

use bigtable::{Durability, Engine, Mutation, RowFilter, RowMutations, RowRead, TimestampRange};

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
    /// The cell must change to this state (which is also the answer).
    Write(AcceptorState),
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
        let (meta, meta_cell) = read_meta(&snapshot, root)?;
        let filter = bigtable::RowFilter::compile(&log_range_filter(meta.applied, None))?;
        let log = decode_log(snapshot.read_row(&root.row, Some(&filter))?)?;
        Ok(GroupState {
            meta,
            meta_cell,
            log,
        })
    }

    /// The group's state cell alone (decoded, and its bytes for compare-and-set): one
    /// row read, for callers that need no log position.
    pub fn group_meta(&self, root: &RootRow) -> Result<(GroupMeta, Option<Vec<u8>>), Error> {
        read_meta(&self.engine.snapshot(&root.table)?, root)
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
    /// all (see [`Replica::transition_many`]).
    pub fn accept_many(
        &self,
        accepts: &[AcceptRequest],
    ) -> Vec<Result<Result<(), Refusal>, Error>> {
        let items: Vec<(&RootRow, u64)> = accepts.iter().map(|(r, p, _, _)| (r, *p)).collect();
        let rule = |i: usize, s: &AcceptorState| {
            let (_, _, ballot, value) = &accepts[i];
            s.accept(*ballot, value)
        };
        self.transition_many(&items, &rule)
            .into_iter()
            .map(|r| r.map(|answer| answer.map(|_| ())))
            .collect()
    }

    /// Applies an acceptor rule to a position's cell; the new state.
    fn transition(
        &self,
        root: &RootRow,
        position: u64,
        rule: impl Fn(&AcceptorState) -> Result<AcceptorState, Refusal>,
    ) -> Result<Result<AcceptorState, Refusal>, Error> {
        let mut answers = self.transition_many(&[(root, position)], &|_, s| rule(s));
        answers.pop().unwrap_or_else(|| Err(unanswered()))
    }

    /// Applies `rule(i, ..)` to the cell of position `items[i]`. Each is judged on its
    /// cell and the group's state as they stand, under the row's lock, and the changed
    /// cells of one table go in one synced commit (one fsync for all). An item whose
    /// row an earlier item names is judged afterwards, on its own; so is each item of a
    /// batch whose commit failed, so that it reports its own error.
    fn transition_many(
        &self,
        items: &[(&RootRow, u64)],
        rule: &dyn Fn(usize, &AcceptorState) -> Result<AcceptorState, Refusal>,
    ) -> Vec<Result<Result<AcceptorState, Refusal>, Error>> {
        let mut results: Vec<Option<Result<Result<AcceptorState, Refusal>, Error>>> =
            items.iter().map(|_| None).collect();
        let mut tables: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut alone = Vec::new();
        for (i, (root, _)) in items.iter().enumerate() {
            let batch = tables.entry(&root.table).or_default();
            if batch.iter().any(|&j| items[j].0.row == root.row) {
                alone.push(i);
            } else {
                batch.push(i);
            }
        }
        for (table, batch) in tables {
            let filters: Vec<RowFilter> = batch
                .iter()
                .map(|&i| position_and_meta_filter(&log_qualifier(items[i].1)))
                .collect();
            let reads: Vec<RowRead<'_>> = batch
                .iter()
                .zip(&filters)
                .map(|(&i, filter)| RowRead {
                    row: &items[i].0.row,
                    filter: Some(filter),
                })
                .collect();
            let judged = self
                .engine
                .update_rows(table, &reads, Durability::Synced, |k, cells| {
                    let (i, position) = (batch[k], items[batch[k]].1);
                    match judge(position, cells, |s| rule(i, s)) {
                        Ok(Judged::Done(answer)) => (Ok(answer), Vec::new()),
                        Ok(Judged::Write(next)) => {
                            let write = set_cell(LOG, &log_qualifier(position), next.encode());
                            (Ok(Ok(next)), vec![write])
                        }
                        Err(e) => (Err(e), Vec::new()),
                    }
                });
            match judged {
                Ok(answers) => {
                    for (&i, answer) in batch.iter().zip(answers) {
                        results[i] = Some(answer);
                    }
                }
                Err(e) if batch.len() == 1 => results[batch[0]] = Some(Err(e.into())),
                Err(_) => alone.extend(batch),
            }
        }
        for i in alone {
            let mut answer = self.transition_many(&[items[i]], &|_, s| rule(i, s));
            results[i] = answer.pop();
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(unanswered())))
            .collect()
    }

    /// The acceptor cell of a position and the group's state, in one row read.
    fn position_and_meta(
        &self,
        root: &RootRow,
        qualifier: &[u8],
    ) -> Result<(Option<Vec<u8>>, GroupMeta), Error> {
        let filter = position_and_meta_filter(qualifier);
        let cells = self
            .engine
            .read_row(&root.table, &root.row, Some(&filter))?
            .map(|row| row.cells)
            .unwrap_or_default();
        split_position_and_meta(cells)
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
            let (meta, meta_cell) = self.group_meta(root)?;
            let Some(cell) = meta_cell else {
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
                return Ok(meta.applied);
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

/// Judges `rule` on a position's cell and the group's state (`cells`, as
/// [`position_and_meta_filter`] selects them).
fn judge(
    position: u64,
    cells: Vec<bigtable::Cell>,
    rule: impl Fn(&AcceptorState) -> Result<AcceptorState, Refusal>,
) -> Result<Judged, Error> {
    let (current, meta) = split_position_and_meta(cells)?;
    if meta.applied >= position {
        // Decided here (its cell may be cleaned up already): answer as a chosen state
        // would, without writing.
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
    Ok(match rule(&state) {
        // Nothing to write for a repeated request.
        Ok(next) if next != state => Judged::Write(next),
        answer => Judged::Done(answer),
    })
}

/// A transition that got no answer: every item gets one, so this is a bug, reported
/// rather than panicked on.
fn unanswered() -> Error {
    Error::Damaged("no answer for a transition".into())
}

/// The newest cell of a position's log column and of the group's state column.
fn position_and_meta_filter(qualifier: &[u8]) -> RowFilter {
    let newest =
        |family, q| RowFilter::Chain(vec![column(family, q), RowFilter::CellsPerColumnLimit(1)]);
    RowFilter::Interleave(vec![newest(LOG, qualifier), newest(META, META_STATE)])
}

/// The log cell's value and the decoded state, from what
/// [`position_and_meta_filter`] selected.
fn split_position_and_meta(
    cells: Vec<bigtable::Cell>,
) -> Result<(Option<Vec<u8>>, GroupMeta), Error> {
    let mut cell = None;
    let mut meta = GroupMeta::default();
    for c in cells {
        if c.family == META.as_bytes() {
            meta = GroupMeta::decode(&c.value)?;
        } else {
            cell = Some(c.value);
        }
    }
    Ok((cell, meta))
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

/// The newest state cell of the group in `root`, decoded (the default state when it
/// was never written), with its bytes.
fn read_meta(
    snapshot: &bigtable::TableSnapshot,
    root: &RootRow,
) -> Result<(GroupMeta, Option<Vec<u8>>), Error> {
    let filter = bigtable::RowFilter::compile(&RowFilter::Chain(vec![
        column(META, META_STATE),
        RowFilter::CellsPerColumnLimit(1),
    ]))?;
    let row = snapshot.read_row(&root.row, Some(&filter))?;
    match row.and_then(|r| r.cells.into_iter().next()) {
        Some(cell) => Ok((GroupMeta::decode(&cell.value)?, Some(cell.value))),
        None => Ok((GroupMeta::default(), None)),
    }
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
