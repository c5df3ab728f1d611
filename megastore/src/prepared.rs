//! Two-phase transactions across entity groups, as each group stores them: a prepared
//! record per participant (what it read and will write, and who decides), and the
//! decision in the coordinator group. Both are cells of the `t` family in the root
//! table's Bigtable table, under the group's key (`docs/megastore-layout.md`).
//!
//! A live (non-empty) prepared record locks the entities it read or writes: a
//! transaction that writes one of them, or a two-phase transaction that reads one it
//! writes, is refused until the record is resolved (`database/commit.rs`). Every
//! commit checks, so the group keeps the ids of its live records in one cell: the
//! check reads that cell, not every record the group ever held.

use bigtable::coding::Reader;
use bigtable::{Engine, ReadRequest, RowSet};

use crate::footprint::Footprint;
use crate::keys::{encode_part, Value};
use crate::layout::{self, column};
use crate::log::{encode_writes, read_data_writes, Write};
use crate::queue::{encode_group, read_group};
use crate::schema::Schema;
use crate::{Error, GroupKey};

/// The column family of prepared records and decisions.
pub const FAMILY: &str = "t";
const RECORD: u8 = b'p';
const DECISION: u8 = b'd';
const LIVE: u8 = b'l';

/// One group's part of a two-phase transaction, prepared and not yet resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedRecord {
    pub txid: u64,
    /// The group whose log holds the decision.
    pub coordinator: GroupKey,
    /// The group this part belongs to.
    pub participant: GroupKey,
    pub reads: Footprint,
    /// Puts and deletes, applied if the transaction commits.
    pub writes: Vec<Write>,
    /// The timestamp of the entry that prepared it.
    pub prepared_at: i64,
}

impl PreparedRecord {
    /// The entities it locks: what it read, and what it writes.
    pub fn locks(&self, schema: &Schema) -> Result<(Footprint, Footprint), Error> {
        Ok((
            self.reads.clone(),
            Footprint::of_writes(schema, &self.writes)?,
        ))
    }
}

/// The row of one kind of two-phase cell of `txid` in the group `group_row`.
fn row(group_row: &[u8], kind: u8, txid: Option<u64>) -> Vec<u8> {
    let mut row = group_row.to_vec();
    // An empty string part: no queue (whose mailboxes share the key space) has it.
    encode_part(&mut row, &Value::String(String::new()), false);
    row.push(kind);
    if let Some(txid) = txid {
        row.extend_from_slice(&txid.to_be_bytes());
    }
    row
}

pub(crate) fn record_row(group_row: &[u8], txid: u64) -> Vec<u8> {
    row(group_row, RECORD, Some(txid))
}

pub(crate) fn decision_row(group_row: &[u8], txid: u64) -> Vec<u8> {
    row(group_row, DECISION, Some(txid))
}

/// The row of the group's list of live records.
pub(crate) fn live_row(group_row: &[u8]) -> Vec<u8> {
    row(group_row, LIVE, None)
}

pub(crate) fn live_qualifier() -> Vec<u8> {
    vec![LIVE]
}

/// The live list's cell: each id, 8 bytes big-endian.
pub(crate) fn live_cell(txids: &[u64]) -> Vec<u8> {
    txids.iter().flat_map(|t| t.to_be_bytes()).collect()
}

/// The ids of the group's live records as of `timestamp`.
pub(crate) fn read_live(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    timestamp: Option<i64>,
) -> Result<Vec<u64>, Error> {
    let filter = layout::newest_at(timestamp, vec![column(FAMILY, &live_qualifier())]);
    let Some(found) = engine.read_row(table, &live_row(group_row), Some(&filter))? else {
        return Ok(Vec::new());
    };
    let Some(cell) = found.cells.first() else {
        return Ok(Vec::new());
    };
    decode_live(&cell.value).ok_or_else(damaged)
}

fn decode_live(value: &[u8]) -> Option<Vec<u64>> {
    if !value.len().is_multiple_of(8) {
        return None;
    }
    value
        .chunks(8)
        .map(|c| c.try_into().ok().map(u64::from_be_bytes))
        .collect()
}

pub(crate) fn record_qualifier() -> Vec<u8> {
    vec![RECORD]
}

pub(crate) fn decision_qualifier() -> Vec<u8> {
    vec![DECISION]
}

/// The cell of a prepared record: coordinator, participant, reads, then writes.
pub(crate) fn record_cell(
    coordinator: &GroupKey,
    participant: &GroupKey,
    reads: &Footprint,
    writes: &[Write],
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_group(&mut out, coordinator);
    encode_group(&mut out, participant);
    reads.encode(&mut out);
    encode_writes(&mut out, writes);
    out
}

fn decode_record(row: &[u8], value: &[u8], prepared_at: i64) -> Option<PreparedRecord> {
    let txid = u64::from_be_bytes(row.get(row.len().checked_sub(8)?..)?.try_into().ok()?);
    let r = &mut Reader::new(value);
    let record = PreparedRecord {
        txid,
        coordinator: read_group(r)?,
        participant: read_group(r)?,
        reads: Footprint::read(r)?,
        writes: read_data_writes(r)?,
        prepared_at,
    };
    r.is_empty().then_some(record)
}

fn damaged() -> Error {
    Error::Damaged("a prepared two-phase record does not decode".into())
}

/// The group's live prepared records as of `timestamp`.
pub(crate) fn group_records(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    timestamp: Option<i64>,
) -> Result<Vec<PreparedRecord>, Error> {
    let mut out = Vec::new();
    for txid in read_live(engine, table, group_row, timestamp)? {
        let filter = layout::newest_at(timestamp, vec![column(FAMILY, &record_qualifier())]);
        let row = record_row(group_row, txid);
        let found = engine.read_row(table, &row, Some(&filter))?;
        let cell = found
            .as_ref()
            .and_then(|r| r.cells.first())
            .filter(|c| !c.value.is_empty())
            .ok_or_else(damaged)?;
        out.push(decode_record(&row, &cell.value, cell.timestamp).ok_or_else(damaged)?);
    }
    Ok(out)
}

/// Every live prepared record in `table` (the newest cells): for the finisher. Reads
/// each group's live list, then the records it names.
pub(crate) fn all_records(engine: &Engine, table: &str) -> Result<Vec<PreparedRecord>, Error> {
    let request = ReadRequest {
        rows: RowSet::all(),
        filter: Some(layout::newest_at(
            None,
            vec![column(FAMILY, &live_qualifier())],
        )),
        ..ReadRequest::default()
    };
    let suffix = live_row(&[]).len();
    let mut out = Vec::new();
    for found in engine.read_rows(table, &request)? {
        if found.cells.iter().all(|c| c.value.is_empty()) {
            continue;
        }
        let group_row = found
            .key
            .get(..found.key.len().saturating_sub(suffix))
            .ok_or_else(damaged)?;
        out.extend(group_records(engine, table, group_row, None)?);
    }
    Ok(out)
}

/// Whether the group holds a live prepared record of `txid` as of `timestamp`.
pub(crate) fn is_prepared(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    txid: u64,
    timestamp: Option<i64>,
) -> Result<bool, Error> {
    let filter = layout::newest_at(timestamp, vec![column(FAMILY, &record_qualifier())]);
    let found = engine.read_row(table, &record_row(group_row, txid), Some(&filter))?;
    Ok(found.is_some_and(|r| r.cells.iter().any(|c| !c.value.is_empty())))
}

/// The decision on `txid` recorded in the coordinator group, as of `timestamp`.
pub(crate) fn read_decision(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    txid: u64,
    timestamp: Option<i64>,
) -> Result<Option<bool>, Error> {
    let filter = layout::newest_at(timestamp, vec![column(FAMILY, &decision_qualifier())]);
    let Some(found) = engine.read_row(table, &decision_row(group_row, txid), Some(&filter))? else {
        return Ok(None);
    };
    match found.cells.first().map(|c| c.value.as_slice()) {
        None => Ok(None),
        Some([1]) => Ok(Some(true)),
        Some([0]) => Ok(Some(false)),
        Some(_) => Err(Error::Damaged(
            "a two-phase decision does not decode".into(),
        )),
    }
}

/// A decision's cell value.
pub(crate) fn decision_cell(commit: bool) -> Vec<u8> {
    vec![u8::from(commit)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Entity;

    #[test]
    fn records_round_trip_and_damage_is_none() {
        let coordinator = GroupKey::new("A", vec![Value::Int64(1)]);
        let participant = GroupKey::new("A", vec![Value::Int64(2)]);
        let mut reads = Footprint::default();
        reads.add_row("A", b"\x01");
        let writes = vec![Write::Put(Entity::new("A").set("id", Value::Int64(2)))];
        let cell = record_cell(&coordinator, &participant, &reads, &writes);
        let row = record_row(b"g", 42);
        let record = decode_record(&row, &cell, 7).expect("decodes");
        assert_eq!(record.txid, 42);
        assert_eq!(
            (record.coordinator, record.participant),
            (coordinator, participant)
        );
        assert_eq!(
            (record.reads, record.writes, record.prepared_at),
            (reads, writes, 7)
        );
        for cut in 0..cell.len() {
            assert!(decode_record(&row, &cell[..cut], 7).is_none());
        }
    }
}
