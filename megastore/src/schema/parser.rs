//! A recursive-descent parser over the tokens, one function per rule of the grammar in
//! `docs/schema-language.md`. Keywords are case-insensitive; names are case-sensitive.

use super::check::check;
use super::lexer::{tokenize, Spanned, Token};
use super::{
    Cardinality, GroupRole, Index, IndexScope, KeyColumn, Property, PropertyType, Schema,
    SchemaError, Table,
};

/// Parses and checks a schema.
pub fn parse(text: &str) -> Result<Schema, SchemaError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        at: 0,
        positions: Vec::new(),
    };
    let schema = p.schema()?;
    check(&schema, &p.positions)?;
    Ok(schema)
}

/// Where each table and index was declared, for the checker's messages.
pub(crate) type Positions = Vec<(String, usize, usize)>;

struct Parser {
    tokens: Vec<Spanned>,
    at: usize,
    positions: Positions,
}

impl Parser {
    fn here(&self) -> (usize, usize) {
        match self.tokens.get(self.at).or(self.tokens.last()) {
            Some(t) if self.at < self.tokens.len() => (t.line, t.column),
            Some(t) => (t.line, t.column + 1),
            None => (1, 1),
        }
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, SchemaError> {
        let (line, column) = self.here();
        Err(SchemaError::at(line, column, message))
    }

    fn describe_next(&self) -> String {
        match self.tokens.get(self.at).map(|t| &t.token) {
            None => "the end of the schema".into(),
            Some(Token::Word(w)) => format!("{w:?}"),
            Some(Token::Symbol(c)) => format!("{c:?}"),
        }
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Spanned { token: Token::Word(w), .. }) if w.eq_ignore_ascii_case(keyword))
    }

    fn keyword(&mut self, keyword: &str) -> Result<(), SchemaError> {
        if self.peek_keyword(keyword) {
            self.at += 1;
            Ok(())
        } else {
            self.error(format!(
                "expected {keyword}, found {}",
                self.describe_next()
            ))
        }
    }

    fn peek_symbol(&self, symbol: char) -> bool {
        matches!(self.tokens.get(self.at), Some(Spanned { token: Token::Symbol(c), .. }) if *c == symbol)
    }

    fn symbol(&mut self, symbol: char) -> Result<(), SchemaError> {
        if self.peek_symbol(symbol) {
            self.at += 1;
            Ok(())
        } else {
            self.error(format!(
                "expected {symbol:?}, found {}",
                self.describe_next()
            ))
        }
    }

    fn name(&mut self, what: &str) -> Result<String, SchemaError> {
        match self.tokens.get(self.at) {
            Some(Spanned {
                token: Token::Word(w),
                ..
            }) => {
                let w = w.clone();
                self.at += 1;
                Ok(w)
            }
            _ => self.error(format!("expected {what}, found {}", self.describe_next())),
        }
    }

    /// `( name {, name} )`
    fn name_list(&mut self, what: &str) -> Result<Vec<String>, SchemaError> {
        self.symbol('(')?;
        let mut names = vec![self.name(what)?];
        while self.peek_symbol(',') {
            self.at += 1;
            names.push(self.name(what)?);
        }
        self.symbol(')')?;
        Ok(names)
    }

    fn schema(&mut self) -> Result<Schema, SchemaError> {
        self.keyword("CREATE")?;
        self.keyword("SCHEMA")?;
        let name = self.name("a schema name")?;
        self.symbol(';')?;
        let mut schema = Schema {
            name,
            tables: Vec::new(),
            indexes: Vec::new(),
            queues: Vec::new(),
        };
        while self.at < self.tokens.len() {
            let (line, column) = self.here();
            self.keyword("CREATE")?;
            if self.peek_keyword("TABLE") {
                let table = self.table()?;
                self.positions.push((table.name.clone(), line, column));
                schema.tables.push(table);
            } else if self.peek_keyword("LOCAL") || self.peek_keyword("GLOBAL") {
                let index = self.index()?;
                self.positions.push((index.name.clone(), line, column));
                schema.indexes.push(index);
            } else if self.peek_keyword("QUEUE") {
                self.at += 1;
                let queue = self.name("a queue name")?;
                self.symbol(';')?;
                self.positions.push((queue.clone(), line, column));
                schema.queues.push(queue);
            } else {
                return self.error(format!(
                    "expected TABLE, LOCAL INDEX, GLOBAL INDEX or QUEUE, found {}",
                    self.describe_next()
                ));
            }
        }
        Ok(schema)
    }

    fn table(&mut self) -> Result<Table, SchemaError> {
        self.keyword("TABLE")?;
        let name = self.name("a table name")?;
        self.symbol('{')?;
        let mut properties = Vec::new();
        while !self.peek_symbol('}') {
            properties.push(self.property()?);
        }
        self.symbol('}')?;
        self.keyword("PRIMARY")?;
        self.keyword("KEY")?;
        let primary_key = self.key_columns()?;
        let mut table = Table {
            name,
            properties,
            primary_key,
            role: GroupRole::Root,
            in_table: None,
            scatter: false,
        };
        let mut role = None;
        while self.peek_symbol(',') {
            self.at += 1;
            self.table_option(&mut table, &mut role)?;
        }
        self.symbol(';')?;
        match role {
            Some(role) => table.role = role,
            None => {
                return self.error(format!(
                    "table {} needs ENTITY GROUP ROOT or ENTITY GROUP KEY(...) REFERENCES a root",
                    table.name
                ))
            }
        }
        Ok(table)
    }

    fn table_option(
        &mut self,
        table: &mut Table,
        role: &mut Option<GroupRole>,
    ) -> Result<(), SchemaError> {
        if self.peek_keyword("ENTITY") {
            if role.is_some() {
                return self.error("a second ENTITY GROUP clause");
            }
            self.at += 1;
            self.keyword("GROUP")?;
            if self.peek_keyword("ROOT") {
                self.at += 1;
                *role = Some(GroupRole::Root);
            } else {
                self.keyword("KEY")?;
                let key = self.name_list("a column name")?;
                self.keyword("REFERENCES")?;
                let root = self.name("a root table name")?;
                *role = Some(GroupRole::Child { key, root });
            }
        } else if self.peek_keyword("IN") {
            self.at += 1;
            self.keyword("TABLE")?;
            table.in_table = Some(self.name("a table name")?);
        } else if self.peek_keyword("SCATTER") {
            self.at += 1;
            table.scatter = true;
        } else {
            return self.error(format!(
                "expected ENTITY GROUP, IN TABLE or SCATTER, found {}",
                self.describe_next()
            ));
        }
        Ok(())
    }

    /// `( name [ASC|DESC] {, name [ASC|DESC]} )`
    fn key_columns(&mut self) -> Result<Vec<KeyColumn>, SchemaError> {
        self.symbol('(')?;
        let mut columns = Vec::new();
        loop {
            let name = self.name("a column name")?;
            let descending = if self.peek_keyword("DESC") {
                self.at += 1;
                true
            } else {
                if self.peek_keyword("ASC") {
                    self.at += 1;
                }
                false
            };
            columns.push(KeyColumn { name, descending });
            if !self.peek_symbol(',') {
                break;
            }
            self.at += 1;
        }
        self.symbol(')')?;
        Ok(columns)
    }

    fn property(&mut self) -> Result<Property, SchemaError> {
        let cardinality = match self
            .name("required, optional or repeated")?
            .to_ascii_lowercase()
            .as_str()
        {
            "required" => Cardinality::Required,
            "optional" => Cardinality::Optional,
            "repeated" => Cardinality::Repeated,
            other => {
                self.at -= 1;
                return self.error(format!(
                    "expected required, optional or repeated, found {other:?}"
                ));
            }
        };
        let kind = match self.name("a type")?.to_ascii_lowercase().as_str() {
            "int32" => PropertyType::Int32,
            "int64" => PropertyType::Int64,
            "uint64" => PropertyType::Uint64,
            "bool" => PropertyType::Bool,
            "double" => PropertyType::Double,
            "string" => PropertyType::String,
            "bytes" => PropertyType::Bytes,
            other => {
                self.at -= 1;
                return self.error(format!(
                    "unknown type {other:?} (int32, int64, uint64, bool, double, string, bytes)"
                ));
            }
        };
        let name = self.name("a property name")?;
        self.symbol(';')?;
        Ok(Property {
            name,
            cardinality,
            kind,
        })
    }

    fn index(&mut self) -> Result<Index, SchemaError> {
        let scope = if self.peek_keyword("LOCAL") {
            IndexScope::Local
        } else {
            IndexScope::Global
        };
        self.at += 1;
        self.keyword("INDEX")?;
        let name = self.name("an index name")?;
        self.keyword("ON")?;
        let table = self.name("a table name")?;
        let columns = self.name_list("a column name")?;
        let storing = if self.peek_keyword("STORING") {
            self.at += 1;
            self.name_list("a column name")?
        } else {
            Vec::new()
        };
        self.symbol(';')?;
        Ok(Index {
            name,
            scope,
            table,
            columns,
            storing,
        })
    }
}
