//! Where a schema's data, indexes and replication state lie in the tablet server: the
//! Bigtable tables, their column families, the root row's replication cells and the
//! index row keys. The full picture, with an example: `docs/megastore-layout.md`.

use std::ops::Bound;
use std::time::Duration;

use bigtable::{Engine, EngineOptions, GcRule, RowFilter, TableSchema};

use crate::keys::{encode_part, Value};
use crate::schema::{IndexScope, Schema};
use crate::Error;

/// The engine settings a replica's tablet server runs with. Every write rewrites its
/// group's root row and entity, so every flushed file holds the hot rows and each read
/// merges one more source per level-0 file: level 0 is compacted at two files, not
/// four (more writes per second and less CPU per write under sustained load, as
/// measured in `docs/benchmarks.md`).
pub fn engine_options() -> EngineOptions {
    EngineOptions {
        l0_compaction_trigger: 2,
        ..EngineOptions::default()
    }
}

/// Entity properties: qualifier `Table.property`, one version per log position.
pub const PROPS: &str = "p";
/// Entity existence: qualifier `Table`, value `01` (present) or empty (deleted).
pub const EXISTS: &str = "e";
/// Local index entries: qualifier = the index name.
pub const LOCAL_INDEX: &str = "i";
/// Root row: the acceptor state of each log position, qualifier = position (8 bytes BE).
pub const LOG: &str = "log";
/// Root row: the group's [`GroupMeta`], qualifier `state`.
pub const META: &str = "m";
pub const META_STATE: &[u8] = b"state";
/// Global index tables: one family, one column.
pub const GLOBAL_INDEX: &str = "g";
pub const GLOBAL_ENTRY: &[u8] = b"e";

/// The Bigtable table holding the entities of Megastore table `storage` (after
/// following `IN TABLE`).
pub fn data_table(schema: &Schema, storage: &str) -> String {
    format!("{}.{storage}", schema.name)
}

/// The Bigtable table of a global index.
pub fn global_index_table(schema: &Schema, index: &str) -> String {
    format!("{}.idx.{index}", schema.name)
}

/// Creates every Bigtable table the schema needs that does not exist yet (and sets
/// the GC rules of those that do). Overwritten versions of entities and index entries
/// are kept for `retention`.
pub fn create_tables(engine: &Engine, schema: &Schema, retention: Duration) -> Result<(), Error> {
    let data = group_table_schema(retention);
    for table in schema.tables.iter().filter(|t| t.in_table.is_none()) {
        create(engine, &data_table(schema, &table.name), data.clone())?;
    }
    for index in schema
        .indexes
        .iter()
        .filter(|i| i.scope == IndexScope::Global)
    {
        create(
            engine,
            &global_index_table(schema, &index.name),
            TableSchema {
                families: [(GLOBAL_INDEX.to_string(), GcRule::KeepFor(retention))].into(),
                ..TableSchema::default()
            },
        )?;
    }
    Ok(())
}

/// The families of a table holding entity groups: entities, local indexes, mailboxes
/// and, in root rows, the group's log and state. Entities and local index entries keep
/// their overwritten versions for `retention` (reads at past positions need them).
pub fn group_table_schema(retention: Duration) -> TableSchema {
    let mut data = TableSchema::with_families([crate::queue::FAMILY, crate::prepared::FAMILY]);
    for family in [PROPS, EXISTS, LOCAL_INDEX] {
        data.families
            .insert(family.into(), GcRule::KeepFor(retention));
    }
    // Replication state is overwritten in place: keep only the newest cell.
    data.families.insert(LOG.into(), GcRule::MaxVersions(1));
    data.families.insert(META.into(), GcRule::MaxVersions(1));
    data
}

/// Creates the table, or brings its families to `schema`'s: adds the ones it lacks (a
/// table made by an older version, before queues had a family) and sets their GC rules
/// (a table made before versions were collected, or with another retention).
pub(crate) fn create(engine: &Engine, name: &str, schema: TableSchema) -> Result<(), Error> {
    match engine.create_table(name, schema.clone()) {
        Ok(()) => Ok(()),
        Err(bigtable::Error::AlreadyExists(_)) => {
            let mut existing = engine.schema(name)?;
            let changed: Vec<_> = schema
                .families
                .into_iter()
                .filter(|(f, rule)| existing.families.get(f) != Some(rule))
                .collect();
            if changed.is_empty() {
                return Ok(());
            }
            existing.families.extend(changed);
            Ok(engine.set_schema(name, existing)?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The replication and bookkeeping state of a group on one replica, in the root row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupMeta {
    /// Every position up to this one is applied to the data.
    pub applied: u64,
    /// The timestamp of the applied position's entry (0 before the first).
    pub applied_timestamp: i64,
    /// Every position up to this one is reflected in the global indexes.
    pub indexed: u64,
    /// The schema version of the applied position's entry: later transactions on the
    /// group must run under this version or a newer one.
    pub schema_version: u64,
    /// Log positions up to this one are deleted (cleaned up).
    pub cleaned: u64,
}

impl GroupMeta {
    /// `applied`, `applied_timestamp`, `indexed`, `schema_version`, `cleaned` (8 bytes
    /// BE each), then a CRC-32 (little-endian) of those 40 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::LEN);
        out.extend_from_slice(&self.applied.to_be_bytes());
        out.extend_from_slice(&self.applied_timestamp.to_be_bytes());
        out.extend_from_slice(&self.indexed.to_be_bytes());
        out.extend_from_slice(&self.schema_version.to_be_bytes());
        out.extend_from_slice(&self.cleaned.to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<GroupMeta, Error> {
        let damaged = || Error::Damaged("group state cell does not decode".into());
        if bytes.len() != Self::LEN || crc32fast::hash(&bytes[..40]).to_le_bytes() != bytes[40..] {
            return Err(damaged());
        }
        let word = |i: usize| -> Result<[u8; 8], Error> {
            bytes[i * 8..i * 8 + 8].try_into().map_err(|_| damaged())
        };
        Ok(GroupMeta {
            applied: u64::from_be_bytes(word(0)?),
            applied_timestamp: i64::from_be_bytes(word(1)?),
            indexed: u64::from_be_bytes(word(2)?),
            schema_version: u64::from_be_bytes(word(3)?),
            cleaned: u64::from_be_bytes(word(4)?),
        })
    }

    const LEN: usize = 44;
}

pub fn log_qualifier(position: u64) -> Vec<u8> {
    position.to_be_bytes().to_vec()
}

/// The row key of a local index entry: the group's key, the index name, the indexed
/// values, then the entity's key columns after the group's. It lies inside the group's
/// key range; the `i` family tells it from entity rows that may share the key.
pub fn local_index_row(group: &[u8], index: &str, values: &[Value], rest: &[Value]) -> Vec<u8> {
    let mut row = local_index_prefix(group, index);
    for v in values.iter().chain(rest) {
        encode_part(&mut row, v, false);
    }
    row
}

pub fn local_index_prefix(group: &[u8], index: &str) -> Vec<u8> {
    let mut row = group.to_vec();
    encode_part(&mut row, &Value::String(index.into()), false);
    row
}

/// The row key of a global index entry: the indexed values, then the entity's row key.
pub fn global_index_row(values: &[Value], entity_row: &[u8]) -> Vec<u8> {
    let mut row = Vec::with_capacity(entity_row.len() + 16);
    for v in values {
        encode_part(&mut row, v, false);
    }
    row.extend_from_slice(entity_row);
    row
}

/// The smallest key greater than every key that starts with `prefix` (`None`: no
/// such key, the range is unbounded above).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Bounds on index values, as tuples of leading index columns: `Included(t)` as a
/// lower bound starts at the first entry whose values start with `t`; as an upper
/// bound it ends after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueRange {
    pub start: Bound<Vec<Value>>,
    pub end: Bound<Vec<Value>>,
}

impl ValueRange {
    /// Every entry whose values start with `values`.
    pub fn prefix(values: Vec<Value>) -> Self {
        ValueRange {
            start: Bound::Included(values.clone()),
            end: Bound::Included(values),
        }
    }

    pub fn all() -> Self {
        ValueRange {
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }
    }

    /// The row range under `base` (the bytes every entry's key starts with).
    pub fn rows(&self, base: &[u8]) -> bigtable::RowRange {
        let encoded = |values: &[Value]| {
            let mut key = base.to_vec();
            for v in values {
                encode_part(&mut key, v, false);
            }
            key
        };
        let after = |key: Vec<u8>| prefix_end(&key).map_or(Bound::Unbounded, Bound::Excluded);
        let start = match &self.start {
            Bound::Included(v) => Bound::Included(encoded(v)),
            Bound::Excluded(v) => match prefix_end(&encoded(v)) {
                Some(k) => Bound::Included(k),
                None => Bound::Excluded(encoded(v)),
            },
            Bound::Unbounded => Bound::Included(base.to_vec()),
        };
        let end = match &self.end {
            Bound::Included(v) => after(encoded(v)),
            Bound::Excluded(v) => Bound::Excluded(encoded(v)),
            Bound::Unbounded => after(base.to_vec()),
        };
        bigtable::RowRange { start, end }
    }
}

/// Keeps the newest cell at or before `timestamp` of each column (all cells' newest
/// when `None`) in `family`.
pub fn family_at(family: &str, timestamp: Option<i64>) -> RowFilter {
    newest_at(
        timestamp,
        vec![RowFilter::ColumnRange {
            family: family.into(),
            start: Bound::Unbounded,
            end: Bound::Unbounded,
        }],
    )
}

/// `chain`, then only the newest cell at or before `timestamp` (the newest of all when
/// `None`) of each column.
pub fn newest_at(timestamp: Option<i64>, mut chain: Vec<RowFilter>) -> RowFilter {
    if let Some(ts) = timestamp {
        chain.push(RowFilter::TimestampRange {
            start: 0,
            end: Some(ts.saturating_add(1)),
        });
    }
    chain.push(RowFilter::CellsPerColumnLimit(1));
    RowFilter::Chain(chain)
}

/// Exactly the column `family:qualifier`.
pub fn column(family: &str, qualifier: &[u8]) -> RowFilter {
    RowFilter::ColumnRange {
        family: family.into(),
        start: Bound::Included(qualifier.to_vec()),
        end: Bound::Included(qualifier.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_skip_trailing_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn group_state_round_trips_and_detects_damage() {
        let meta = GroupMeta {
            applied: 5,
            applied_timestamp: 77,
            indexed: 4,
            schema_version: 2,
            cleaned: 1,
        };
        let mut bytes = meta.encode();
        assert_eq!(GroupMeta::decode(&bytes).ok(), Some(meta));
        bytes[0] ^= 1;
        assert!(GroupMeta::decode(&bytes).is_err());
    }
}
