//! Property values as typed on the command line, read by the schema's types, and
//! entities printed as one JSON object per line.

use megastore::schema::{Cardinality, PropertyType, Schema, Table};
use megastore::{Entity, GroupKey, Prop, Value};
use serde_json::{json, Map, Value as Json};

pub fn table<'s>(schema: &'s Schema, name: &str) -> Result<&'s Table, String> {
    schema
        .table(name)
        .ok_or_else(|| format!("table {name} is not in schema {}", schema.name))
}

pub fn parse_value(kind: PropertyType, text: &str) -> Result<Value, String> {
    let bad = |e: &dyn std::fmt::Display| format!("{text:?} is not a {kind:?}: {e}");
    Ok(match kind {
        PropertyType::Int32 => Value::Int32(text.parse().map_err(|e| bad(&e))?),
        PropertyType::Int64 => Value::Int64(text.parse().map_err(|e| bad(&e))?),
        PropertyType::Uint64 => Value::Uint64(text.parse().map_err(|e| bad(&e))?),
        PropertyType::Bool => Value::Bool(text.parse().map_err(|e| bad(&e))?),
        PropertyType::Double => Value::Double(text.parse().map_err(|e| bad(&e))?),
        PropertyType::String => Value::String(text.to_string()),
        PropertyType::Bytes => Value::Bytes(text.as_bytes().to_vec()),
    })
}

/// `name=value` pairs as an entity of `table` (a repeated property: `tag=a,b,c`).
pub fn entity(table: &Table, assignments: &[String]) -> Result<Entity, String> {
    let mut entity = Entity::new(table.name.clone());
    for assignment in assignments {
        let (name, text) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?} is not name=value"))?;
        let property = table
            .properties
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| format!("{} has no property {name}", table.name))?;
        entity = if property.cardinality == Cardinality::Repeated {
            let values = text
                .split(',')
                .filter(|t| !t.is_empty())
                .map(|t| parse_value(property.kind, t))
                .collect::<Result<_, _>>()?;
            entity.set_many(name, values)
        } else {
            entity.set(name, parse_value(property.kind, text)?)
        };
    }
    Ok(entity)
}

/// The primary key `assignments` give, in key order.
pub fn key(table: &Table, assignments: &[String]) -> Result<Vec<Value>, String> {
    let given = entity(table, assignments)?;
    table
        .primary_key
        .iter()
        .map(|c| {
            given
                .get(&c.name)
                .cloned()
                .ok_or_else(|| format!("the key of {} needs {}=...", table.name, c.name))
        })
        .collect()
}

/// The leading key columns `assignments` give, in key order (a scan's prefix).
pub fn key_prefix(table: &Table, assignments: &[String]) -> Result<Vec<Value>, String> {
    let given = entity(table, assignments)?;
    Ok(table
        .primary_key
        .iter()
        .map_while(|c| given.get(&c.name).cloned())
        .collect())
}

/// The entity group of an entity of `table` with (at least) key prefix `key`.
pub fn group_of(table: &Table, key: &[Value]) -> Result<GroupKey, String> {
    let (root, columns) = match &table.role {
        megastore::schema::GroupRole::Root => (table.name.clone(), table.primary_key.len()),
        megastore::schema::GroupRole::Child { key, root } => (root.clone(), key.len()),
    };
    if key.len() < columns {
        return Err(format!(
            "{} needs its first {columns} key columns to name its entity group",
            table.name
        ));
    }
    Ok(GroupKey::new(root, key[..columns].to_vec()))
}

fn json_value(v: &Value) -> Json {
    match v {
        Value::Int32(x) => json!(x),
        Value::Int64(x) => json!(x),
        Value::Uint64(x) => json!(x),
        Value::Bool(x) => json!(x),
        Value::Double(x) => json!(x),
        Value::String(x) => json!(x),
        Value::Bytes(x) => json!(String::from_utf8_lossy(x)),
    }
}

/// `{"table": ..., property: value, ...}`.
pub fn to_json(entity: &Entity) -> Json {
    let mut object = Map::new();
    object.insert("table".into(), json!(entity.table));
    for (name, prop) in &entity.props {
        let value = match prop {
            Prop::One(v) => json_value(v),
            Prop::Many(vs) => Json::Array(vs.iter().map(json_value).collect()),
        };
        object.insert(name.clone(), value);
    }
    Json::Object(object)
}

pub fn values_to_json(values: &[Value]) -> Json {
    Json::Array(values.iter().map(json_value).collect())
}
