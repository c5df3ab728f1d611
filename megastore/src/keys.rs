//! Row keys: an entity's primary-key values as bytes whose order is the values' order,
//! so an entity group is one contiguous row range and a child sorts right after its root.
//!
//! Each part is self-delimiting (no encoding is a prefix of another), so the bytes of a
//! tuple compare like the tuple. A `DESC` part has its bytes inverted, which reverses
//! the order of a prefix-free encoding. `SCATTER` prefixes the group's key with 2 bytes
//! of its hash. Layout: `docs/megastore-layout.md`.

use crate::schema::{GroupRole, PropertyType, Schema, Table};

/// A property value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int32(i32),
    Int64(i64),
    Uint64(u64),
    Bool(bool),
    Double(f64),
    String(String),
    Bytes(Vec<u8>),
}

impl Value {
    pub fn kind(&self) -> PropertyType {
        match self {
            Value::Int32(_) => PropertyType::Int32,
            Value::Int64(_) => PropertyType::Int64,
            Value::Uint64(_) => PropertyType::Uint64,
            Value::Bool(_) => PropertyType::Bool,
            Value::Double(_) => PropertyType::Double,
            Value::String(_) => PropertyType::String,
            Value::Bytes(_) => PropertyType::Bytes,
        }
    }
}

/// A key that does not fit its table's primary key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("table {table} has a {want}-column primary key, got {got} values")]
    Arity {
        table: String,
        want: usize,
        got: usize,
    },
    #[error("key column {column} of {table} is {want:?}, got {got:?}")]
    Type {
        table: String,
        column: String,
        want: PropertyType,
        got: PropertyType,
    },
    #[error("table {0} is not in the schema")]
    UnknownTable(String),
}

/// Appends the order-preserving bytes of one value.
pub fn encode_part(out: &mut Vec<u8>, value: &Value, descending: bool) {
    let start = out.len();
    match value {
        Value::Int32(v) => out.extend_from_slice(&((*v as u32) ^ (1 << 31)).to_be_bytes()),
        Value::Int64(v) => out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes()),
        Value::Uint64(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::Double(v) => {
            // Positive numbers: flip the sign bit; negative: flip every bit. NaN sorts
            // after +inf (all NaNs are encoded alike); -0.0 is 0.0.
            let bits = match v {
                v if v.is_nan() => f64::NAN.to_bits(),
                v if *v == 0.0 => 0,
                v => v.to_bits(),
            };
            let ordered = if bits >> 63 == 0 {
                bits ^ (1 << 63)
            } else {
                !bits
            };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::String(s) => escape(out, s.as_bytes()),
        Value::Bytes(b) => escape(out, b),
    }
    if descending {
        for byte in &mut out[start..] {
            *byte = !*byte;
        }
    }
}

/// `00` becomes `00 FF`; the end is `00 01`: prefix-free, order-preserving.
fn escape(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

fn check_types(table: &Table, values: &[Value]) -> Result<(), KeyError> {
    if values.len() != table.primary_key.len() {
        return Err(KeyError::Arity {
            table: table.name.clone(),
            want: table.primary_key.len(),
            got: values.len(),
        });
    }
    check_prefix_types(table, values)
}

fn check_prefix_types(table: &Table, values: &[Value]) -> Result<(), KeyError> {
    for (column, value) in table.primary_key.iter().zip(values) {
        let want = table.property(&column.name).map(|p| p.kind);
        if want != Some(value.kind()) {
            return Err(KeyError::Type {
                table: table.name.clone(),
                column: column.name.clone(),
                want: want.unwrap_or(PropertyType::Bytes),
                got: value.kind(),
            });
        }
    }
    Ok(())
}

/// The row key of the entity of `table` with primary key `values`: its group's key
/// (the root's key columns, in the root's directions, after the root's scatter prefix),
/// then its remaining key columns.
pub fn row_key(schema: &Schema, table: &str, values: &[Value]) -> Result<Vec<u8>, KeyError> {
    let t = schema
        .table(table)
        .ok_or_else(|| KeyError::UnknownTable(table.into()))?;
    check_types(t, values)?;
    key_prefix(schema, table, values)
}

/// The bytes every row key of `table` whose primary key starts with `values` starts
/// with. `values` must hold at least the group's key columns.
pub fn key_prefix(schema: &Schema, table: &str, values: &[Value]) -> Result<Vec<u8>, KeyError> {
    let t = schema
        .table(table)
        .ok_or_else(|| KeyError::UnknownTable(table.into()))?;
    let root = schema
        .table(t.root_name())
        .ok_or_else(|| KeyError::UnknownTable(t.root_name().into()))?;
    let group_len = group_columns(t);
    if values.len() < group_len || values.len() > t.primary_key.len() {
        return Err(KeyError::Arity {
            table: t.name.clone(),
            want: t.primary_key.len(),
            got: values.len(),
        });
    }
    check_prefix_types(t, values)?;
    let mut group = Vec::new();
    for (column, value) in root.primary_key.iter().zip(&values[..group_len]) {
        encode_part(&mut group, value, column.descending);
    }
    let mut out = Vec::with_capacity(group.len() + 16);
    if root.scatter {
        out.extend_from_slice(&scatter_prefix(&group));
    }
    out.extend_from_slice(&group);
    for (column, value) in t.primary_key.iter().zip(values).skip(group_len) {
        encode_part(&mut out, value, column.descending);
    }
    Ok(out)
}

/// How many leading primary-key columns of `table` are its entity group's key.
pub fn group_columns(table: &Table) -> usize {
    match &table.role {
        GroupRole::Root => table.primary_key.len(),
        GroupRole::Child { key, .. } => key.len(),
    }
}

/// Two bytes of a hash of the group key (FNV-1a, folded).
fn scatter_prefix(group_key: &[u8]) -> [u8; 2] {
    let mut h: u32 = 0x811C_9DC5;
    for &b in group_key {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let folded = (h >> 16) ^ (h & 0xFFFF);
    (folded as u16).to_be_bytes()
}

/// The column of a property: `Table.property`, so tables sharing a Bigtable table (by
/// `IN TABLE`) never write the same column.
pub fn column_name(table: &str, property: &str) -> Vec<u8> {
    format!("{table}.{property}").into_bytes()
}

/// The Bigtable table an entity of `table` lives in: its `IN TABLE` parent's, followed
/// up the chain, or its own.
pub fn storage_table<'a>(schema: &'a Schema, table: &'a str) -> &'a str {
    let mut name = table;
    while let Some(parent) = schema.table(name).and_then(|t| t.in_table.as_deref()) {
        name = parent;
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(value: &Value, descending: bool) -> Vec<u8> {
        let mut out = Vec::new();
        encode_part(&mut out, value, descending);
        out
    }

    fn order(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
        match (a, b) {
            (Value::Int32(x), Value::Int32(y)) => Some(x.cmp(y)),
            (Value::Int64(x), Value::Int64(y)) => Some(x.cmp(y)),
            (Value::Uint64(x), Value::Uint64(y)) => Some(x.cmp(y)),
            (Value::Double(x), Value::Double(y)) => x.partial_cmp(y),
            (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
            (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn byte_order_is_value_order(a in any::<i64>(), b in any::<i64>(), x in any::<f64>(), y in any::<f64>(),
                                    s in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()], 0..6),
                                    t in proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(0xFFu8), any::<u8>()], 0..6)) {
            let pairs = [
                (Value::Int64(a), Value::Int64(b)),
                (Value::Int32(a as i32), Value::Int32(b as i32)),
                (Value::Uint64(a as u64), Value::Uint64(b as u64)),
                (Value::Double(x), Value::Double(y)),
                (Value::Bytes(s.clone()), Value::Bytes(t.clone())),
            ];
            for (p, q) in &pairs {
                if let Some(want) = order(p, q) {
                    prop_assert_eq!(encoded(p, false).cmp(&encoded(q, false)), want, "{:?} {:?}", p, q);
                    prop_assert_eq!(encoded(p, true).cmp(&encoded(q, true)), want.reverse(), "desc {:?} {:?}", p, q);
                }
            }
        }

        #[test]
        fn tuples_compare_like_their_parts(a in any::<Vec<u8>>(), b in any::<i64>(), c in any::<Vec<u8>>(), d in any::<i64>()) {
            let key = |s: &Vec<u8>, n: i64| {
                let mut out = Vec::new();
                encode_part(&mut out, &Value::Bytes(s.clone()), false);
                encode_part(&mut out, &Value::Int64(n), true);
                out
            };
            let want = a.cmp(&c).then(d.cmp(&b)); // the second part is descending
            prop_assert_eq!(key(&a, b).cmp(&key(&c, d)), want);
        }
    }
}
