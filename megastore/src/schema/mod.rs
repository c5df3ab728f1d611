//! The schema language of the Megastore paper: tables of typed properties grouped into
//! entity groups, and local and global indexes. [`parse`] turns the text into a
//! [`Schema`], checked for consistency; errors name the line and column. The grammar is
//! in `docs/schema-language.md`.

mod check;
mod lexer;
mod parser;

use std::fmt;

pub use parser::parse;

/// A whole schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    pub name: String,
    pub tables: Vec<Table>,
    pub indexes: Vec<Index>,
    /// Declared queues (`CREATE QUEUE`): each entity group has an inbox for each.
    pub queues: Vec<String>,
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.queues.iter().any(|q| q == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cardinality {
    Required,
    Optional,
    Repeated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyType {
    Int32,
    Int64,
    Uint64,
    Bool,
    Double,
    String,
    Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    pub name: String,
    pub cardinality: Cardinality,
    pub kind: PropertyType,
}

/// One column of a primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    /// Sorts in descending order (its key bytes are inverted).
    pub descending: bool,
}

/// Where a table stands in its entity group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRole {
    /// Each entity roots its own entity group.
    Root,
    /// Each entity belongs to the group of the root entity its `key` columns name.
    Child { key: Vec<String>, root: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub properties: Vec<Property>,
    pub primary_key: Vec<KeyColumn>,
    pub role: GroupRole,
    /// `IN TABLE`: stored in this table's Bigtable table, right after its entities.
    pub in_table: Option<String>,
    /// Keys get a 2-byte hash prefix, spreading monotonically increasing keys.
    pub scatter: bool,
}

impl Table {
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// The root table of this table's entity groups.
    pub fn root_name(&self) -> &str {
        match &self.role {
            GroupRole::Root => &self.name,
            GroupRole::Child { root, .. } => root,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexScope {
    /// Inside each entity group, updated atomically with the data.
    Local,
    /// Across groups, maintained asynchronously.
    Global,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub scope: IndexScope,
    pub table: String,
    pub columns: Vec<String>,
    /// Properties copied into each entry.
    pub storing: Vec<String>,
}

/// A schema that does not parse or does not hold together, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl SchemaError {
    pub(crate) fn at(line: usize, column: usize, message: impl Into<String>) -> Self {
        SchemaError {
            line,
            column,
            message: message.into(),
        }
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

impl std::error::Error for SchemaError {}
