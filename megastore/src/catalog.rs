//! Schemas stored in the tablet server, versioned: each version is a cell of the
//! schema's row in the `megastore.schemas` table, at timestamp = version number. A new
//! version must keep everything the previous version declared (tables, keys, property
//! types, indexes): only additions are allowed.
//!
//! The first version is stored by compare-and-set when a replica is created. Later
//! versions, and the marks of finished index back-fills, are entries of the schema's
//! catalog group (root row = the schema's name in [`GROUP_TABLE`]): replicated like any
//! group's log, so every replica records the same versions in the same order
//! (`database/schema_changes.rs`).

use bigtable::{Engine, Mutation, RowFilter, TableSchema};

use crate::schema::{parse, Cardinality, Schema, SchemaError};

pub(crate) const TABLE: &str = "megastore.schemas";
/// The table of catalog groups: one root row per schema, holding its log of changes.
pub(crate) const GROUP_TABLE: &str = "megastore.catalog";
const FAMILY: &str = "s";
const TEXT: &[u8] = b"text";
const VERSION: &[u8] = b"version";
/// `built.<index>`: the index's back-fill finished (value: the schema version).
const BUILT: &str = "built.";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("schema text: {0}")]
    Parse(#[from] SchemaError),
    #[error("schema change not allowed: {0}")]
    Incompatible(String),
    #[error("schema {0} changed meanwhile; read it again and retry")]
    Conflict(String),
    #[error("stored schema {0} is damaged: {1}")]
    Damaged(String, String),
    #[error(transparent)]
    Storage(#[from] bigtable::Error),
}

/// The schemas of one tablet server.
pub struct Catalog<'e> {
    engine: &'e Engine,
}

impl<'e> Catalog<'e> {
    /// Opens the catalog, creating its table on first use.
    pub fn open(engine: &'e Engine) -> Result<Self, crate::Error> {
        match engine.create_table(TABLE, TableSchema::with_families([FAMILY])) {
            Ok(()) | Err(bigtable::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e.into()),
        }
        // The catalog group writes no entities: the retention does not matter.
        let retention = std::time::Duration::from_secs(3600);
        crate::layout::create(
            engine,
            GROUP_TABLE,
            crate::layout::group_table_schema(retention),
        )?;
        Ok(Catalog { engine })
    }

    /// The catalog of an engine where [`Catalog::open`] already created its table.
    pub(crate) fn existing(engine: &'e Engine) -> Self {
        Catalog { engine }
    }

    /// The newest version of schema `name` and its number, if there is one.
    pub fn get(&self, name: &str) -> Result<Option<(u64, Schema)>, CatalogError> {
        let Some(row) = self.engine.read_row(TABLE, name.as_bytes(), None)? else {
            return Ok(None);
        };
        let version = row
            .cells
            .iter()
            .find(|c| c.qualifier == VERSION)
            .and_then(|c| c.value.as_slice().try_into().ok().map(u64::from_be_bytes));
        let text = row.cells.iter().find(|c| c.qualifier == TEXT);
        match (version, text) {
            (Some(v), Some(text)) => {
                let text = String::from_utf8(text.value.clone())
                    .map_err(|_| CatalogError::Damaged(name.into(), "text is not UTF-8".into()))?;
                let schema =
                    parse(&text).map_err(|e| CatalogError::Damaged(name.into(), e.to_string()))?;
                Ok(Some((v, schema)))
            }
            _ => Err(CatalogError::Damaged(
                name.into(),
                "no version or text".into(),
            )),
        }
    }

    /// Stores `text` as the next version of the schema it names; returns that version.
    pub fn put(&self, text: &str) -> Result<u64, CatalogError> {
        let schema = parse(text)?;
        let current = self.get(&schema.name)?;
        if let Some((_, old)) = &current {
            compatible(old, &schema).map_err(CatalogError::Incompatible)?;
        }
        let version = current.as_ref().map_or(1, |(v, _)| v + 1);
        let write = version_mutations(version, text);
        // Applies only if the row still says the version we read.
        let predicate = current.as_ref().map(|(v, _)| {
            RowFilter::Chain(vec![
                RowFilter::QualifierRegex(b"version".to_vec()),
                RowFilter::CellsPerColumnLimit(1),
                RowFilter::ValueRange {
                    start: std::ops::Bound::Included(v.to_be_bytes().to_vec()),
                    end: std::ops::Bound::Included(v.to_be_bytes().to_vec()),
                },
            ])
        });
        let (if_true, if_false) = match predicate {
            Some(_) => (write, Vec::new()),
            None => (Vec::new(), write),
        };
        let matched = self.engine.check_and_mutate_row(
            TABLE,
            schema.name.as_bytes(),
            predicate.as_ref(),
            &if_true,
            &if_false,
        )?;
        // With a predicate the write needs a match; without one (first version) it needs
        // the row to be still empty.
        if matched != current.is_some() {
            return Err(CatalogError::Conflict(schema.name));
        }
        Ok(version)
    }

    /// Version `version` of schema `name`.
    pub fn get_version(&self, name: &str, version: u64) -> Result<Option<Schema>, CatalogError> {
        let Some((_, text)) = self.history(name)?.into_iter().find(|(v, _)| *v == version) else {
            return Ok(None);
        };
        parse(&text)
            .map(Some)
            .map_err(|e| CatalogError::Damaged(name.into(), e.to_string()))
    }

    /// Records that index `index` of schema `name` is complete (its back-fill is done).
    pub fn mark_built(&self, name: &str, index: &str, version: u64) -> Result<(), CatalogError> {
        self.engine
            .mutate_row(TABLE, name.as_bytes(), &[built_mutation(index, version)])?;
        Ok(())
    }

    /// The indexes of schema `name` marked complete.
    pub fn built(&self, name: &str) -> Result<Vec<String>, CatalogError> {
        let Some(row) = self.engine.read_row(TABLE, name.as_bytes(), None)? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<String> = row
            .cells
            .iter()
            .filter_map(|c| c.qualifier.strip_prefix(BUILT.as_bytes()))
            .map(|q| String::from_utf8_lossy(q).into_owned())
            .collect();
        out.dedup();
        Ok(out)
    }

    /// Every stored version of schema `name`, oldest first, as text.
    pub fn history(&self, name: &str) -> Result<Vec<(u64, String)>, CatalogError> {
        let Some(row) = self.engine.read_row(TABLE, name.as_bytes(), None)? else {
            return Ok(Vec::new());
        };
        let mut versions: Vec<(u64, String)> = row
            .cells
            .into_iter()
            .filter(|c| c.qualifier == TEXT)
            .map(|c| {
                (
                    c.timestamp as u64,
                    String::from_utf8_lossy(&c.value).into_owned(),
                )
            })
            .collect();
        versions.sort();
        Ok(versions)
    }
}

/// The cells of version `version` of a schema, whose text is `text`, in its row.
pub(crate) fn version_mutations(version: u64, text: &str) -> Vec<Mutation> {
    vec![
        Mutation::SetCell {
            family: FAMILY.into(),
            qualifier: TEXT.to_vec(),
            timestamp: Some(version as i64),
            value: text.as_bytes().to_vec(),
        },
        Mutation::SetCell {
            family: FAMILY.into(),
            qualifier: VERSION.to_vec(),
            timestamp: Some(version as i64),
            value: version.to_be_bytes().to_vec(),
        },
    ]
}

/// The cell marking index `index` (of schema version `version`) built, in the
/// schema's row.
pub(crate) fn built_mutation(index: &str, version: u64) -> Mutation {
    Mutation::SetCell {
        family: FAMILY.into(),
        qualifier: format!("{BUILT}{index}").into_bytes(),
        timestamp: Some(0),
        value: version.to_be_bytes().to_vec(),
    }
}

/// Whether `new` only adds to `old`: every table, property, key and index of `old` is in
/// `new` unchanged; added properties of existing tables are not `required` (entities
/// written before would lack them).
pub fn compatible(old: &Schema, new: &Schema) -> Result<(), String> {
    for t in &old.tables {
        let n = new
            .table(&t.name)
            .ok_or_else(|| format!("table {} was removed", t.name))?;
        if n.primary_key != t.primary_key
            || n.role != t.role
            || n.in_table != t.in_table
            || n.scatter != t.scatter
        {
            return Err(format!(
                "the key or entity group of table {} changed",
                t.name
            ));
        }
        for p in &t.properties {
            match n.property(&p.name) {
                None => return Err(format!("property {}.{} was removed", t.name, p.name)),
                Some(np) if np != p => {
                    return Err(format!(
                        "property {}.{} changed its type or cardinality",
                        t.name, p.name
                    ))
                }
                Some(_) => {}
            }
        }
        for p in &n.properties {
            if t.property(&p.name).is_none() && p.cardinality == Cardinality::Required {
                return Err(format!(
                    "new property {}.{} cannot be required",
                    t.name, p.name
                ));
            }
        }
    }
    for index in &old.indexes {
        if !new.indexes.contains(index) {
            return Err(format!("index {} was removed or changed", index.name));
        }
    }
    // A removed queue would strand the messages in its inboxes.
    if let Some(queue) = old.queues.iter().find(|q| !new.has_queue(q)) {
        return Err(format!("queue {queue} was removed"));
    }
    Ok(())
}
