//! Entities: a table's row of typed properties, checked against the schema, and the
//! byte encoding of property values in cells and log entries (`docs/megastore-layout.md`).

use std::collections::BTreeMap;

use bigtable::coding::{put_varint, Reader};

use crate::keys::Value;
use crate::schema::{Cardinality, PropertyType, Schema, Table};
use crate::Error;

/// The value of one property: one value, or the elements of a repeated property.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    One(Value),
    Many(Vec<Value>),
}

impl Prop {
    /// The values an index makes entries for: the one value, or each element.
    pub fn values(&self) -> &[Value] {
        match self {
            Prop::One(v) => std::slice::from_ref(v),
            Prop::Many(vs) => vs,
        }
    }
}

/// An entity of `table`: its properties by name (absent optional properties are left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    pub table: String,
    pub props: BTreeMap<String, Prop>,
}

impl Entity {
    pub fn new(table: impl Into<String>) -> Self {
        Entity {
            table: table.into(),
            props: BTreeMap::new(),
        }
    }

    /// Sets a single-valued property.
    pub fn set(mut self, name: &str, value: Value) -> Self {
        self.props.insert(name.into(), Prop::One(value));
        self
    }

    /// Sets a repeated property.
    pub fn set_many(mut self, name: &str, values: Vec<Value>) -> Self {
        self.props.insert(name.into(), Prop::Many(values));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        match self.props.get(name)? {
            Prop::One(v) => Some(v),
            Prop::Many(_) => None,
        }
    }

    pub fn get_many(&self, name: &str) -> &[Value] {
        self.props.get(name).map_or(&[], Prop::values)
    }

    /// The primary-key values, in key order (the entity must have been checked).
    pub fn key(&self, table: &Table) -> Result<Vec<Value>, Error> {
        table
            .primary_key
            .iter()
            .map(|c| {
                self.get(&c.name).cloned().ok_or_else(|| {
                    Error::Invalid(format!("{} has no key column {}", table.name, c.name))
                })
            })
            .collect()
    }

    /// Checks the entity against its table: known properties of the declared types and
    /// cardinalities, every required property present.
    pub fn check(&self, schema: &Schema) -> Result<(), Error> {
        let table = schema
            .table(&self.table)
            .ok_or_else(|| Error::Invalid(format!("table {} is not in the schema", self.table)))?;
        for (name, prop) in &self.props {
            let declared = table
                .property(name)
                .ok_or_else(|| Error::Invalid(format!("{} has no property {name}", table.name)))?;
            let shape_ok = matches!(
                (declared.cardinality, prop),
                (Cardinality::Repeated, Prop::Many(_))
                    | (Cardinality::Required | Cardinality::Optional, Prop::One(_))
            );
            if !shape_ok {
                return Err(Error::Invalid(format!(
                    "{}.{name} is {:?}; give it {}",
                    table.name,
                    declared.cardinality,
                    if declared.cardinality == Cardinality::Repeated {
                        "a list (set_many)"
                    } else {
                        "one value (set)"
                    }
                )));
            }
            if let Some(bad) = prop.values().iter().find(|v| v.kind() != declared.kind) {
                return Err(Error::Invalid(format!(
                    "{}.{name} is {:?}, got {:?}",
                    table.name,
                    declared.kind,
                    bad.kind()
                )));
            }
        }
        for p in &table.properties {
            if p.cardinality == Cardinality::Required && !self.props.contains_key(&p.name) {
                return Err(Error::Invalid(format!(
                    "{}.{} is required",
                    table.name, p.name
                )));
            }
        }
        Ok(())
    }
}

const SINGLE: u8 = 1;
const REPEATED: u8 = 2;

/// A property cell's value: `01 value` or `02 count value...`. An absent property is
/// an empty cell, so a later write can hide an earlier value at a newer timestamp.
pub fn encode_prop(out: &mut Vec<u8>, prop: &Prop) {
    match prop {
        Prop::One(v) => {
            out.push(SINGLE);
            encode_value(out, v);
        }
        Prop::Many(vs) => {
            out.push(REPEATED);
            put_varint(out, vs.len() as u64);
            for v in vs {
                encode_value(out, v);
            }
        }
    }
}

/// The inverse of [`encode_prop`]; `Ok(None)` for an absent (empty) cell.
pub fn decode_prop(bytes: &[u8]) -> Result<Option<Prop>, Error> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut r = Reader::new(bytes);
    let prop = read_prop(&mut r).ok_or_else(|| damaged("property cell"))?;
    if !r.is_empty() {
        return Err(damaged("property cell has trailing bytes"));
    }
    Ok(Some(prop))
}

pub(crate) fn read_prop(r: &mut Reader<'_>) -> Option<Prop> {
    match r.u8()? {
        SINGLE => Some(Prop::One(read_value(r)?)),
        REPEATED => {
            let n = r.varint_usize()?;
            // Each value takes at least 2 bytes; a count beyond that is damage.
            if n > r.remaining() {
                return None;
            }
            (0..n)
                .map(|_| read_value(r))
                .collect::<Option<_>>()
                .map(Prop::Many)
        }
        _ => None,
    }
}

/// One value, self-describing: a type byte, then a fixed-size big-endian number or a
/// length-prefixed string.
pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    out.push(type_tag(value.kind()));
    match value {
        Value::Int32(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Int64(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Uint64(v) => out.extend_from_slice(&v.to_be_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::Double(v) => out.extend_from_slice(&v.to_bits().to_be_bytes()),
        Value::String(s) => put_bytes(out, s.as_bytes()),
        Value::Bytes(b) => put_bytes(out, b),
    }
}

pub(crate) fn read_value(r: &mut Reader<'_>) -> Option<Value> {
    let fixed = |r: &mut Reader<'_>| -> Option<[u8; 8]> { r.take(8)?.try_into().ok() };
    Some(match r.u8()? {
        1 => Value::Int32(i32::from_be_bytes(r.take(4)?.try_into().ok()?)),
        2 => Value::Int64(i64::from_be_bytes(fixed(r)?)),
        3 => Value::Uint64(u64::from_be_bytes(fixed(r)?)),
        4 => Value::Bool(match r.u8()? {
            0 => false,
            1 => true,
            _ => return None,
        }),
        5 => Value::Double(f64::from_bits(u64::from_be_bytes(fixed(r)?))),
        6 => Value::String(String::from_utf8(read_bytes(r)?.to_vec()).ok()?),
        7 => Value::Bytes(read_bytes(r)?.to_vec()),
        _ => return None,
    })
}

fn type_tag(kind: PropertyType) -> u8 {
    match kind {
        PropertyType::Int32 => 1,
        PropertyType::Int64 => 2,
        PropertyType::Uint64 => 3,
        PropertyType::Bool => 4,
        PropertyType::Double => 5,
        PropertyType::String => 6,
        PropertyType::Bytes => 7,
    }
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub(crate) fn read_bytes<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let n = r.varint_usize()?;
    r.take(n)
}

pub(crate) fn damaged(what: &str) -> Error {
    Error::Damaged(format!("{what} does not decode"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i32>().prop_map(Value::Int32),
            any::<i64>().prop_map(Value::Int64),
            any::<u64>().prop_map(Value::Uint64),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|v| Value::Double(v as f64 / 7.0)),
            ".{0,12}".prop_map(Value::String),
            any::<Vec<u8>>().prop_map(Value::Bytes),
        ]
    }

    proptest! {
        #[test]
        fn props_round_trip(one in value(), many in proptest::collection::vec(value(), 0..5)) {
            for prop in [Prop::One(one.clone()), Prop::Many(many.clone())] {
                let mut out = Vec::new();
                encode_prop(&mut out, &prop);
                prop_assert_eq!(decode_prop(&out).ok().flatten(), Some(prop));
            }
        }

        #[test]
        fn random_bytes_never_panic(bytes in any::<Vec<u8>>()) {
            let _ = decode_prop(&bytes);
        }
    }
}
