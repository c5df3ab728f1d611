//! Changing the schema. A change is a transaction on the schema's catalog group (root
//! row: the schema's name in `megastore.catalog`), whose entry records the new version's
//! text; the marks of finished index back-fills are entries there too. The group's log
//! is replicated like any other, so every replica records the same versions in the same
//! order, and applying an entry installs what it records. A replica that meets an entry
//! written under a version it has not recorded catches the catalog group up first
//! (`schema_versions.rs`).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Core, GroupName};
use crate::catalog::{compatible, Catalog, CatalogError, GROUP_TABLE};
use crate::layout::create_tables;
use crate::log::{LogEntry, Write};
use crate::replica::RootRow;
use crate::schema::{parse, Schema};
use crate::Error;

impl Core {
    /// The root row of the schema's catalog group.
    pub(super) fn catalog_root(&self) -> RootRow {
        RootRow {
            table: GROUP_TABLE.to_string(),
            row: self.name.as_bytes().to_vec(),
        }
    }

    pub(super) fn is_catalog(root: &RootRow) -> bool {
        root.table == GROUP_TABLE
    }

    /// Commits `text` as the schema's next version (unless it is the current one), then
    /// back-fills every index not built yet; returns the version.
    pub(super) fn change_schema(&self, text: &str) -> Result<u64, Error> {
        let schema = parse(text).map_err(CatalogError::from)?;
        if schema.name != self.name {
            return Err(Error::Invalid(format!(
                "schema {} is not this database's ({})",
                schema.name, self.name
            )));
        }
        let root = self.catalog_root();
        let (version, _) = self.transact(GroupName::table(GROUP_TABLE), &root, |tx| {
            let (current, old) = self
                .catalog()
                .get(&self.name)?
                .ok_or_else(|| Error::Damaged(format!("schema {} is not stored", self.name)))?;
            if old == schema {
                return Ok(current);
            }
            compatible(&old, &schema).map_err(CatalogError::Incompatible)?;
            tx.record_in_catalog(Write::Schema {
                version: current + 1,
                text: text.to_string(),
            });
            Ok(current + 1)
        })?;
        // Applying the entry here installed the version; this waits for transactions
        // still running under the old one, so that the back-fill starts after them.
        drop(self.schema_gate.write());
        if let Err(e) = self.finish_backfills() {
            if !self.sole_voter() {
                self.resume_backfills.store(true, Ordering::SeqCst);
            }
            return Err(e);
        }
        Ok(version)
    }

    /// The upkeep's part: finishes the back-fills that were interrupted, if any.
    pub(super) fn resume_interrupted_backfills(&self) -> Result<(), Error> {
        if self.resume_backfills.load(Ordering::SeqCst) {
            self.finish_backfills()?;
            self.resume_backfills.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Back-fills every index whose back-fill has not finished.
    pub(super) fn finish_backfills(&self) -> Result<(), Error> {
        let unfinished: Vec<String> = self.building.lock().iter().cloned().collect();
        let version = self.current.read().0;
        for index in unfinished {
            self.backfill(&index, version)?;
        }
        Ok(())
    }

    /// Records in the catalog group that index `index` of schema version `version` is
    /// back-filled.
    pub(super) fn mark_built(&self, index: &str, version: u64) -> Result<(), Error> {
        let root = self.catalog_root();
        self.transact(GroupName::table(GROUP_TABLE), &root, |tx| {
            if !self.catalog().built(&self.name)?.iter().any(|b| b == index) {
                tx.record_in_catalog(Write::IndexBuilt {
                    index: index.to_string(),
                    version,
                });
            }
            Ok(())
        })?;
        Ok(())
    }

    /// After a catalog entry is applied here (its cells written): installs the schema
    /// versions it records, and serves queries on the indexes it marks built.
    pub(super) fn recorded_in_catalog(&self, entry: &LogEntry) -> Result<(), Error> {
        for write in &entry.writes {
            match write {
                Write::Schema { version, .. } => {
                    self.load_version(*version)?;
                }
                Write::IndexBuilt { index, .. } => {
                    self.building.lock().remove(index);
                    self.built.notify_all();
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Loads version `version` from this replica's catalog and installs it: creates
    /// the tables it adds, and refuses queries on its indexes until they are built.
    pub(super) fn load_version(&self, version: u64) -> Result<Arc<Schema>, Error> {
        let catalog = self.catalog();
        let schema = catalog
            .get_version(&self.name, version)?
            .ok_or_else(|| Error::Damaged(format!("schema version {version} is not stored")))?;
        create_tables(self.engine(), &schema, self.options.version_retention)?;
        {
            // Held while reading the marks, so that a mark recorded meanwhile (whose
            // cell is written before it is removed from `building`) is not undone.
            let mut building = self.building.lock();
            building.extend(unbuilt_indexes(&catalog, &schema)?);
        }
        let schema = Arc::new(schema);
        self.install(version, schema.clone());
        Ok(schema)
    }
}

/// The indexes of `schema` whose back-fill the catalog does not mark finished.
pub(super) fn unbuilt_indexes(catalog: &Catalog, schema: &Schema) -> Result<Vec<String>, Error> {
    let built = catalog.built(&schema.name)?;
    Ok(schema
        .indexes
        .iter()
        .map(|i| i.name.clone())
        .filter(|n| !built.contains(n))
        .collect())
}
