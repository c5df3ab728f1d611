//! What a transaction read or wrote in its entity group, as the set of entities it
//! touched: what decides whether two transactions may share a log entry, and whether a
//! transaction may commit after entries it did not read from (`database/commit.rs`).

use std::collections::BTreeSet;

use crate::log::{LogEntry, Write};
use crate::schema::Schema;
use crate::Error;

/// An entity: its table and its row key.
pub type EntityRow = (String, Vec<u8>);

/// The entities one side (the reads or the writes) of a transaction touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Every entity of the group: a read that scanned or queried, or a write that
    /// rebuilt an index.
    pub whole_group: bool,
    pub rows: BTreeSet<EntityRow>,
}

impl Footprint {
    pub fn is_empty(&self) -> bool {
        !self.whole_group && self.rows.is_empty()
    }

    /// Whether the two share an entity.
    pub fn overlaps(&self, other: &Footprint) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        if self.whole_group || other.whole_group {
            return true;
        }
        let (small, large) = if self.rows.len() <= other.rows.len() {
            (&self.rows, &other.rows)
        } else {
            (&other.rows, &self.rows)
        };
        small.iter().any(|row| large.contains(row))
    }

    pub fn add_row(&mut self, table: &str, row: &[u8]) {
        if !self.whole_group {
            self.rows.insert((table.to_string(), row.to_vec()));
        }
    }

    /// A queue's inbox in the group, as one entity: receiving reads and writes it,
    /// delivering writes it.
    pub fn add_inbox(&mut self, queue: &str) {
        self.add_row("#inbox", queue.as_bytes());
    }

    /// The last message delivered from `from` on `queue`, as one entity: a delivery
    /// reads and writes it, so two deliveries of the same messages cannot both commit.
    pub fn add_watermark(&mut self, queue: &str, from: &crate::GroupKey) {
        let mut row = queue.as_bytes().to_vec();
        row.push(0);
        crate::queue::encode_group(&mut row, from);
        self.add_row("#watermark", &row);
    }

    /// A flag byte (1: the whole group), then the count of rows and each (table, row).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(u8::from(self.whole_group));
        bigtable::coding::put_varint(out, self.rows.len() as u64);
        for (table, row) in &self.rows {
            crate::entity::put_bytes(out, table.as_bytes());
            crate::entity::put_bytes(out, row);
        }
    }

    pub(crate) fn read(r: &mut bigtable::coding::Reader<'_>) -> Option<Footprint> {
        let whole_group = match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        let n = r.varint_usize()?;
        if n > r.remaining() {
            return None;
        }
        let mut rows = BTreeSet::new();
        for _ in 0..n {
            let table = String::from_utf8(crate::entity::read_bytes(r)?.to_vec()).ok()?;
            rows.insert((table, crate::entity::read_bytes(r)?.to_vec()));
        }
        Some(Footprint { whole_group, rows })
    }

    /// Two-phase transaction `txid`'s state in the group, as one entity: every resolve
    /// reads and writes it, so two resolves of one transaction (its coordinator's and a
    /// finisher's) never share an entry, and the second sees the first.
    pub fn add_two_phase(&mut self, txid: u64) {
        self.add_row("#two-phase", &txid.to_be_bytes());
    }

    pub fn add_whole_group(&mut self) {
        self.whole_group = true;
        self.rows.clear();
    }

    pub fn extend(&mut self, other: &Footprint) {
        if other.whole_group {
            self.add_whole_group();
        } else if !self.whole_group {
            self.rows.extend(other.rows.iter().cloned());
        }
    }

    /// The entities `entry` writes, under the schema it was written with.
    pub fn written_by(schema: &Schema, entry: &LogEntry) -> Result<Footprint, Error> {
        Self::of_writes(schema, &entry.writes)
    }

    /// The entities `writes` write.
    pub fn of_writes(schema: &Schema, writes: &[Write]) -> Result<Footprint, Error> {
        let mut written = Footprint::default();
        for write in writes {
            match write {
                Write::Put(entity) => {
                    let table = schema.table(&entity.table).ok_or_else(|| {
                        Error::Damaged(format!("a log entry writes unknown table {}", entity.table))
                    })?;
                    let row = crate::keys::row_key(schema, &entity.table, &entity.key(table)?)?;
                    written.add_row(&entity.table, &row);
                }
                Write::Delete { table, key } => {
                    written.add_row(table, &crate::keys::row_key(schema, table, key)?);
                }
                // A catalog record conflicts with any other, so that two schema
                // changes never both build on the same version.
                Write::Reindex { .. } | Write::Schema { .. } | Write::IndexBuilt { .. } => {
                    written.add_whole_group()
                }
                Write::Deliver { queue, from, .. } => {
                    written.add_inbox(queue);
                    written.add_watermark(queue, from);
                }
                Write::Receive { queue, .. } => written.add_inbox(queue),
                // New outbox cells and emptied delivered ones: nobody reads either in
                // a transaction (the deliverer reads the outbox outside one).
                Write::Send { .. } | Write::Forget { .. } => {}
                // A prepare writes no entity (it locks them: `database/commit.rs`).
                Write::Prepare { .. } => {}
                Write::Resolve {
                    txid,
                    commit,
                    writes,
                    ..
                } => {
                    written.add_two_phase(*txid);
                    if *commit {
                        written.extend(&Self::of_writes(schema, writes)?);
                    }
                }
            }
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(names: &[&str]) -> Footprint {
        let mut f = Footprint::default();
        for n in names {
            f.add_row("T", n.as_bytes());
        }
        f
    }

    #[test]
    fn overlap_is_a_shared_entity() {
        assert!(rows(&["a", "b"]).overlaps(&rows(&["b", "c"])));
        assert!(!rows(&["a", "b"]).overlaps(&rows(&["c"])));
        let mut other_table = Footprint::default();
        other_table.add_row("U", b"a");
        assert!(!rows(&["a"]).overlaps(&other_table));
    }

    #[test]
    fn the_whole_group_overlaps_anything_but_nothing() {
        let mut all = Footprint::default();
        all.add_whole_group();
        assert!(all.overlaps(&rows(&["a"])));
        assert!(rows(&["a"]).overlaps(&all));
        assert!(!all.overlaps(&Footprint::default()));
        let mut grown = rows(&["a"]);
        grown.extend(&all);
        assert!(grown.whole_group && grown.rows.is_empty());
        grown.add_row("T", b"z");
        assert!(grown.rows.is_empty());
    }
}
