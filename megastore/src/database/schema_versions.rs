//! The schema versions a database has loaded: the current one, and older ones that log
//! entries were written under (applying an entry uses its own version).

use std::sync::Arc;

use super::Core;
use crate::schema::Schema;
use crate::Error;

impl Core {
    pub(super) fn install(&self, version: u64, schema: Arc<Schema>) {
        self.versions.lock().insert(version, schema.clone());
        let mut current = self.current.write();
        if version > current.0 {
            *current = (version, schema);
        }
    }

    /// The schema of `version`, from memory or the catalog. A version this replica
    /// has not recorded yet (another replica changed the schema) comes from catching up
    /// the catalog group.
    pub(super) fn schema_at(&self, version: u64) -> Result<Arc<Schema>, Error> {
        if let Some(s) = self.versions.lock().get(&version) {
            return Ok(s.clone());
        }
        if self.catalog().get_version(&self.name, version)?.is_none() {
            self.make_current(&self.catalog_root())?;
        }
        self.load_version(version)
    }

    /// The schema a transaction on a group last written under `group_version` runs
    /// under: the current one, reloaded if the group has seen a newer one.
    pub(super) fn schema_for(&self, group_version: u64) -> Result<(u64, Arc<Schema>), Error> {
        let current = self.current.read().clone();
        if group_version <= current.0 {
            return Ok(current);
        }
        self.schema_at(group_version)?;
        Ok(self.current.read().clone())
    }
}
