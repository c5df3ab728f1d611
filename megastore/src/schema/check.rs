//! Whether a parsed schema holds together: names resolve, keys are required scalar
//! properties, children name their root's key, and indexes cover real properties.

use std::collections::HashSet;

use super::parser::Positions;
use super::{Cardinality, GroupRole, Schema, SchemaError, Table};

pub(crate) fn check(schema: &Schema, positions: &Positions) -> Result<(), SchemaError> {
    let fail = |name: &str, message: String| {
        let (line, column) = positions
            .iter()
            .find(|(n, _, _)| n == name)
            .map_or((1, 1), |(_, l, c)| (*l, *c));
        Err(SchemaError::at(line, column, message))
    };
    let mut names = HashSet::new();
    for (i, table) in schema.tables.iter().enumerate() {
        if !names.insert(table.name.as_str()) {
            return fail(
                &table.name,
                format!("table {} is declared twice", table.name),
            );
        }
        let earlier = &schema.tables[..i];
        if let Err(message) = check_table(table, earlier) {
            return fail(&table.name, format!("table {}: {message}", table.name));
        }
    }
    for index in &schema.indexes {
        if !names.insert(index.name.as_str()) {
            return fail(
                &index.name,
                format!("name {} is declared twice", index.name),
            );
        }
        let Some(table) = schema.table(&index.table) else {
            return fail(
                &index.name,
                format!("index {} is on unknown table {}", index.name, index.table),
            );
        };
        let mut repeated = 0;
        for column in index.columns.iter().chain(&index.storing) {
            match table.property(column) {
                None => {
                    return fail(
                        &index.name,
                        format!(
                            "index {}: table {} has no property {column}",
                            index.name, table.name
                        ),
                    )
                }
                Some(p)
                    if p.cardinality == Cardinality::Repeated && index.columns.contains(column) =>
                {
                    repeated += 1
                }
                Some(_) => {}
            }
        }
        if repeated > 1 {
            return fail(
                &index.name,
                format!("index {} has more than one repeated column", index.name),
            );
        }
    }
    for queue in &schema.queues {
        if !names.insert(queue.as_str()) {
            return fail(queue, format!("name {queue} is declared twice"));
        }
    }
    Ok(())
}

/// Checks one table against the tables declared before it.
fn check_table(table: &Table, earlier: &[Table]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for p in &table.properties {
        if !seen.insert(p.name.as_str()) {
            return Err(format!("property {} is declared twice", p.name));
        }
    }
    let mut key_seen = HashSet::new();
    for column in &table.primary_key {
        let p = table
            .property(&column.name)
            .ok_or_else(|| format!("primary key column {} is not a property", column.name))?;
        if p.cardinality != Cardinality::Required {
            return Err(format!(
                "primary key column {} must be required",
                column.name
            ));
        }
        if !key_seen.insert(column.name.as_str()) {
            return Err(format!("primary key names {} twice", column.name));
        }
    }
    let find = |name: &str| earlier.iter().find(|t| t.name == name);
    if let GroupRole::Child { key, root } = &table.role {
        let root_table = find(root)
            .ok_or_else(|| format!("references unknown table {root} (declare it first)"))?;
        if root_table.role != GroupRole::Root {
            return Err(format!(
                "references {root}, which is not an entity group root"
            ));
        }
        if key.len() != root_table.primary_key.len() {
            return Err(format!(
                "ENTITY GROUP KEY has {} columns but {root}'s primary key has {}",
                key.len(),
                root_table.primary_key.len()
            ));
        }
        // The group key leads the primary key, so a group's entities sit together.
        let leads = key
            .iter()
            .zip(&table.primary_key)
            .all(|(k, pk)| *k == pk.name);
        if !leads {
            return Err("ENTITY GROUP KEY must be the first columns of the primary key".into());
        }
        for (k, root_key) in key.iter().zip(&root_table.primary_key) {
            let (mine, theirs) = (table.property(k), root_table.property(&root_key.name));
            if mine.map(|p| p.kind) != theirs.map(|p| p.kind) {
                return Err(format!(
                    "column {k} does not have the type of {root}.{}",
                    root_key.name
                ));
            }
        }
        if table.scatter {
            return Err("SCATTER belongs on the root table".into());
        }
    }
    if let Some(parent) = &table.in_table {
        let parent_table =
            find(parent).ok_or_else(|| format!("IN TABLE names unknown table {parent}"))?;
        if parent_table.root_name() != table.root_name() {
            return Err(format!(
                "IN TABLE {parent}: it belongs to other entity groups"
            ));
        }
    }
    Ok(())
}
