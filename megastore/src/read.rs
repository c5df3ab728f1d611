//! Reading entities and index entries out of the tablet server as of a timestamp (the
//! newest cell at or before it of each column), or as of now when no timestamp is given.

use std::ops::Bound;

use bigtable::{Engine, ReadRequest, Row, RowFilter, RowRange, RowSet};

use crate::entity::{decode_prop, Entity};
use crate::index::{decode_hit, IndexHit};
use crate::keys::storage_table;
use crate::layout::{self, column, data_table, ValueRange, EXISTS, PROPS};
use crate::schema::{Index, Schema};
use crate::Error;

/// How current a read is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Apply everything committed to the group, then read at its latest position.
    Current,
    /// Read at the group's last applied position, without applying anything.
    Snapshot,
    /// Read the newest cells, ignoring the log: fastest, may see a half-applied entry.
    Inconsistent,
}

/// The cells of `table`'s entities: its existence marker and its properties.
fn entity_filter(table: &str, timestamp: Option<i64>) -> RowFilter {
    let prefix = format!("{table}.").into_bytes();
    let end = layout::prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    layout::newest_at(
        timestamp,
        vec![RowFilter::Interleave(vec![
            column(EXISTS, table.as_bytes()),
            RowFilter::ColumnRange {
                family: PROPS.into(),
                start: Bound::Included(prefix),
                end,
            },
        ])],
    )
}

/// The entity of `table` stored in `row`, if it exists as of `timestamp`.
pub fn entity_in(row: &Row, table: &str) -> Result<Option<Entity>, Error> {
    let exists = row.cells.iter().any(|c| {
        c.family == EXISTS.as_bytes() && c.qualifier == table.as_bytes() && c.value == [1]
    });
    if !exists {
        return Ok(None);
    }
    let mut entity = Entity::new(table);
    let prefix_len = table.len() + 1;
    for cell in row.cells.iter().filter(|c| c.family == PROPS.as_bytes()) {
        let name = std::str::from_utf8(&cell.qualifier[prefix_len.min(cell.qualifier.len())..])
            .map_err(|_| Error::Damaged("property name is not UTF-8".into()))?;
        if let Some(prop) = decode_prop(&cell.value)? {
            entity.props.insert(name.to_string(), prop);
        }
    }
    Ok(Some(entity))
}

/// Reads one entity of `table` by row key.
pub fn get(
    engine: &Engine,
    schema: &Schema,
    table: &str,
    row: &[u8],
    timestamp: Option<i64>,
) -> Result<Option<Entity>, Error> {
    get_with(engine, schema, table, row, &entity_filter(table, timestamp))
}

/// Reads only the properties `properties` of one entity of `table` by row key: whether
/// it exists, and those of them it holds.
pub fn get_properties(
    engine: &Engine,
    schema: &Schema,
    table: &str,
    row: &[u8],
    timestamp: Option<i64>,
    properties: &[&str],
) -> Result<Option<Entity>, Error> {
    let mut columns = vec![column(EXISTS, table.as_bytes())];
    columns.extend(
        properties
            .iter()
            .map(|p| column(PROPS, &crate::keys::column_name(table, p))),
    );
    let filter = layout::newest_at(timestamp, vec![RowFilter::Interleave(columns)]);
    get_with(engine, schema, table, row, &filter)
}

/// The entity of `table` in `row`, from the cells `filter` selects.
fn get_with(
    engine: &Engine,
    schema: &Schema,
    table: &str,
    row: &[u8],
    filter: &RowFilter,
) -> Result<Option<Entity>, Error> {
    let bt = data_table(schema, storage_table(schema, table));
    match engine.read_row(&bt, row, Some(filter))? {
        Some(r) => entity_in(&r, table),
        None => Ok(None),
    }
}

/// The entities of `table` whose row keys lie in `rows`, in key order.
pub fn scan(
    engine: &Engine,
    schema: &Schema,
    table: &str,
    rows: RowRange,
    timestamp: Option<i64>,
) -> Result<Vec<Entity>, Error> {
    let bt = data_table(schema, storage_table(schema, table));
    let request = ReadRequest {
        rows: RowSet::range(rows),
        filter: Some(entity_filter(table, timestamp)),
        ..ReadRequest::default()
    };
    let mut out = Vec::new();
    for row in engine.read_rows(&bt, &request)? {
        if let Some(entity) = entity_in(&row, table)? {
            out.push(entity);
        }
    }
    Ok(out)
}

/// The entries of a local index in one group (`group_row`) whose values lie in `range`.
pub fn local_index(
    engine: &Engine,
    schema: &Schema,
    group_row: &[u8],
    index: &Index,
    range: &ValueRange,
    timestamp: Option<i64>,
) -> Result<Vec<IndexHit>, Error> {
    let bt = data_table(schema, storage_table(schema, &index.table));
    let base = layout::local_index_prefix(group_row, &index.name);
    let filter = layout::newest_at(
        timestamp,
        vec![column(layout::LOCAL_INDEX, index.name.as_bytes())],
    );
    hits(engine, &bt, range.rows(&base), filter)
}

/// The entries of a global index whose values lie in `range`, as the background
/// indexer has written them so far.
pub fn global_index(
    engine: &Engine,
    schema: &Schema,
    index: &str,
    range: &ValueRange,
) -> Result<Vec<IndexHit>, Error> {
    let bt = layout::global_index_table(schema, index);
    let filter = layout::newest_at(
        None,
        vec![column(layout::GLOBAL_INDEX, layout::GLOBAL_ENTRY)],
    );
    hits(engine, &bt, range.rows(&[]), filter)
}

fn hits(
    engine: &Engine,
    table: &str,
    rows: RowRange,
    filter: RowFilter,
) -> Result<Vec<IndexHit>, Error> {
    let request = ReadRequest {
        rows: RowSet::range(rows),
        filter: Some(filter),
        ..ReadRequest::default()
    };
    let mut out = Vec::new();
    for row in engine.read_rows(table, &request)? {
        for cell in &row.cells {
            if let Some(hit) = decode_hit(&cell.value)? {
                out.push(hit);
            }
        }
    }
    Ok(out)
}
