//! The client API's messages (`megastore.v1`, `docs/client-api.md`) as prost structs,
//! and their conversions to and from the database's types. Conversions from the wire
//! check what they read and return `Error::Invalid` on anything malformed.

#![allow(clippy::all)] // prost derives

use std::ops::Bound;

use crate::entity::{Entity, Prop};
use crate::keys::Value as DbValue;
use crate::{Error, GroupKey, ReadMode, ReadToken, ValueRange};

/// One value: exactly one field is set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub kind: Option<value::Kind>,
}

pub mod value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(int32, tag = "1")]
        Int32(i32),
        #[prost(int64, tag = "2")]
        Int64(i64),
        #[prost(uint64, tag = "3")]
        Uint64(u64),
        #[prost(bool, tag = "4")]
        Bool(bool),
        #[prost(double, tag = "5")]
        Double(f64),
        #[prost(string, tag = "6")]
        String(String),
        #[prost(bytes = "vec", tag = "7")]
        Bytes(Vec<u8>),
    }
}

/// A property: one value, or (`repeated`) a list of them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Property {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<Value>,
    #[prost(bool, tag = "3")]
    pub repeated: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntityMessage {
    #[prost(string, tag = "1")]
    pub table: String,
    #[prost(message, repeated, tag = "2")]
    pub properties: Vec<Property>,
}

/// An entity group: its root table and the root entity's primary key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Group {
    #[prost(string, tag = "1")]
    pub root: String,
    #[prost(message, repeated, tag = "2")]
    pub key: Vec<Value>,
}

/// An entity by table and primary key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntityRef {
    #[prost(string, tag = "1")]
    pub table: String,
    #[prost(message, repeated, tag = "2")]
    pub key: Vec<Value>,
}

/// Where a transaction reads (from `Begin`); clients send it back unchanged.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Transaction {
    #[prost(uint64, tag = "1")]
    pub position: u64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    #[prost(uint64, tag = "3")]
    pub schema_version: u64,
    #[prost(int64, tag = "4")]
    pub began_at: i64,
}

/// How a read reads: inside a transaction (`transaction` set), or in one of the three
/// modes: 0 current, 1 snapshot, 2 inconsistent.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadOptions {
    #[prost(uint32, tag = "1")]
    pub mode: u32,
    #[prost(message, optional, tag = "2")]
    pub transaction: Option<Transaction>,
}

pub const CURRENT: u32 = 0;
pub const SNAPSHOT: u32 = 1;
pub const INCONSISTENT: u32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(message, optional, tag = "2")]
    pub entity: Option<EntityRef>,
    #[prost(message, optional, tag = "3")]
    pub options: Option<ReadOptions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GetReply {
    #[prost(message, optional, tag = "1")]
    pub entity: Option<EntityMessage>,
    /// The position read at (0 for an inconsistent read).
    #[prost(uint64, tag = "2")]
    pub position: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScanRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(string, tag = "2")]
    pub table: String,
    #[prost(message, repeated, tag = "3")]
    pub prefix: Vec<Value>,
    #[prost(message, optional, tag = "4")]
    pub options: Option<ReadOptions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScanReply {
    #[prost(message, repeated, tag = "1")]
    pub entities: Vec<EntityMessage>,
    #[prost(uint64, tag = "2")]
    pub position: u64,
}

/// One end of a range of index values: absent = unbounded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeEnd {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
    #[prost(bool, tag = "2")]
    pub inclusive: bool,
}

/// Index values from `start` to `end`; `prefix` instead: every entry starting with it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Range {
    #[prost(message, optional, tag = "1")]
    pub start: Option<RangeEnd>,
    #[prost(message, optional, tag = "2")]
    pub end: Option<RangeEnd>,
    #[prost(message, repeated, tag = "3")]
    pub prefix: Vec<Value>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryRequest {
    /// Set for a local index; absent for a global one.
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(string, tag = "2")]
    pub index: String,
    #[prost(message, optional, tag = "3")]
    pub range: Option<Range>,
    #[prost(message, optional, tag = "4")]
    pub options: Option<ReadOptions>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct IndexHit {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
    #[prost(message, repeated, tag = "2")]
    pub key: Vec<Value>,
    #[prost(message, repeated, tag = "3")]
    pub storing: Vec<Property>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct QueryReply {
    #[prost(message, repeated, tag = "1")]
    pub hits: Vec<IndexHit>,
    /// A local query: the position read at. A global one: 0.
    #[prost(uint64, tag = "2")]
    pub position: u64,
    /// A global query: every commit at or below this timestamp is reflected.
    #[prost(int64, tag = "3")]
    pub watermark: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BeginRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
}

/// A write: `put` set, or `delete` set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mutation {
    #[prost(message, optional, tag = "1")]
    pub put: Option<EntityMessage>,
    #[prost(message, optional, tag = "2")]
    pub delete: Option<EntityRef>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(message, optional, tag = "2")]
    pub transaction: Option<Transaction>,
    /// The entities the transaction read (conflicts are judged on them).
    #[prost(message, repeated, tag = "3")]
    pub reads: Vec<EntityRef>,
    /// It scanned or queried the group: any write to the group conflicts.
    #[prost(bool, tag = "4")]
    pub read_whole_group: bool,
    #[prost(message, repeated, tag = "5")]
    pub mutations: Vec<Mutation>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CommitReply {
    #[prost(uint64, tag = "1")]
    pub position: u64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
    #[prost(bool, tag = "3")]
    pub wrote: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaRequest {
    /// `UpdateSchema`: the whole new schema text. `GetSchema`: ignored.
    #[prost(string, tag = "1")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaReply {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    #[prost(string, tag = "3")]
    pub text: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Member {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    /// "full", "witness" or "read-only".
    #[prost(string, tag = "2")]
    pub kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusReply {
    /// The replica answering.
    #[prost(uint32, tag = "1")]
    pub replica: u32,
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
    #[prost(string, tag = "3")]
    pub schema: String,
    #[prost(uint64, tag = "4")]
    pub schema_version: u64,
    #[prost(uint64, tag = "5")]
    pub commits: u64,
    #[prost(uint64, tag = "6")]
    pub conflicts: u64,
    #[prost(uint64, tag = "7")]
    pub entries: u64,
    #[prost(uint64, tag = "8")]
    pub entries_applied: u64,
}

fn invalid(what: &str) -> Error {
    Error::Invalid(what.to_string())
}

impl From<&DbValue> for Value {
    fn from(v: &DbValue) -> Self {
        use value::Kind;
        let kind = match v {
            DbValue::Int32(x) => Kind::Int32(*x),
            DbValue::Int64(x) => Kind::Int64(*x),
            DbValue::Uint64(x) => Kind::Uint64(*x),
            DbValue::Bool(x) => Kind::Bool(*x),
            DbValue::Double(x) => Kind::Double(*x),
            DbValue::String(x) => Kind::String(x.clone()),
            DbValue::Bytes(x) => Kind::Bytes(x.clone()),
        };
        Value { kind: Some(kind) }
    }
}

impl TryFrom<Value> for DbValue {
    type Error = Error;

    fn try_from(v: Value) -> Result<Self, Error> {
        use value::Kind;
        Ok(
            match v.kind.ok_or_else(|| invalid("a value has no kind"))? {
                Kind::Int32(x) => DbValue::Int32(x),
                Kind::Int64(x) => DbValue::Int64(x),
                Kind::Uint64(x) => DbValue::Uint64(x),
                Kind::Bool(x) => DbValue::Bool(x),
                Kind::Double(x) => DbValue::Double(x),
                Kind::String(x) => DbValue::String(x),
                Kind::Bytes(x) => DbValue::Bytes(x),
            },
        )
    }
}

pub fn values_to_wire(values: &[DbValue]) -> Vec<Value> {
    values.iter().map(Value::from).collect()
}

pub fn values_from_wire(values: Vec<Value>) -> Result<Vec<DbValue>, Error> {
    values.into_iter().map(DbValue::try_from).collect()
}

fn property(name: &str, prop: &Prop) -> Property {
    match prop {
        Prop::One(v) => Property {
            name: name.to_string(),
            values: vec![v.into()],
            repeated: false,
        },
        Prop::Many(vs) => Property {
            name: name.to_string(),
            values: values_to_wire(vs),
            repeated: true,
        },
    }
}

/// A property from the wire: a single-valued one must have exactly one value.
fn prop_of(p: Property) -> Result<(String, Prop), Error> {
    let mut values = values_from_wire(p.values)?;
    if p.repeated {
        return Ok((p.name, Prop::Many(values)));
    }
    if values.len() != 1 {
        return Err(Error::Invalid(format!(
            "property {} is not repeated but has {} values",
            p.name,
            values.len()
        )));
    }
    Ok((p.name, Prop::One(values.remove(0))))
}

impl From<&Entity> for EntityMessage {
    fn from(e: &Entity) -> Self {
        EntityMessage {
            table: e.table.clone(),
            properties: e.props.iter().map(|(n, p)| property(n, p)).collect(),
        }
    }
}

impl TryFrom<EntityMessage> for Entity {
    type Error = Error;

    fn try_from(m: EntityMessage) -> Result<Self, Error> {
        let mut entity = Entity::new(m.table);
        for p in m.properties {
            let (name, prop) = prop_of(p)?;
            entity.props.insert(name, prop);
        }
        Ok(entity)
    }
}

impl From<&GroupKey> for Group {
    fn from(g: &GroupKey) -> Self {
        Group {
            root: g.root.clone(),
            key: values_to_wire(&g.key),
        }
    }
}

/// The group a request names, which it must name.
pub fn group_of(group: Option<Group>) -> Result<GroupKey, Error> {
    let g = group.ok_or_else(|| invalid("the request names no entity group"))?;
    Ok(GroupKey::new(g.root, values_from_wire(g.key)?))
}

pub fn entity_ref_of(r: Option<EntityRef>) -> Result<(String, Vec<DbValue>), Error> {
    let r = r.ok_or_else(|| invalid("the request names no entity"))?;
    Ok((r.table, values_from_wire(r.key)?))
}

impl From<ReadToken> for Transaction {
    fn from(t: ReadToken) -> Self {
        Transaction {
            position: t.position,
            timestamp: t.timestamp,
            schema_version: t.schema_version,
            began_at: t.began_at,
        }
    }
}

impl From<Transaction> for ReadToken {
    fn from(t: Transaction) -> Self {
        ReadToken {
            position: t.position,
            timestamp: t.timestamp,
            schema_version: t.schema_version,
            began_at: t.began_at,
        }
    }
}

/// How to read: in a transaction, or in a mode.
pub enum HowToRead {
    Transaction(ReadToken),
    Mode(ReadMode),
}

pub fn how_to_read(options: Option<ReadOptions>) -> Result<HowToRead, Error> {
    let options = options.unwrap_or_default();
    if let Some(t) = options.transaction {
        return Ok(HowToRead::Transaction(t.into()));
    }
    match options.mode {
        CURRENT => Ok(HowToRead::Mode(ReadMode::Current)),
        SNAPSHOT => Ok(HowToRead::Mode(ReadMode::Snapshot)),
        INCONSISTENT => Ok(HowToRead::Mode(ReadMode::Inconsistent)),
        other => Err(Error::Invalid(format!("unknown read mode {other}"))),
    }
}

pub fn mode_to_wire(mode: ReadMode) -> u32 {
    match mode {
        ReadMode::Current => CURRENT,
        ReadMode::Snapshot => SNAPSHOT,
        ReadMode::Inconsistent => INCONSISTENT,
    }
}

fn bound_of(end: Option<RangeEnd>) -> Result<Bound<Vec<DbValue>>, Error> {
    Ok(match end {
        None => Bound::Unbounded,
        Some(e) if e.inclusive => Bound::Included(values_from_wire(e.values)?),
        Some(e) => Bound::Excluded(values_from_wire(e.values)?),
    })
}

fn bound_to_wire(bound: &Bound<Vec<DbValue>>) -> Option<RangeEnd> {
    match bound {
        Bound::Unbounded => None,
        Bound::Included(v) => Some(RangeEnd {
            values: values_to_wire(v),
            inclusive: true,
        }),
        Bound::Excluded(v) => Some(RangeEnd {
            values: values_to_wire(v),
            inclusive: false,
        }),
    }
}

pub fn range_of(range: Option<Range>) -> Result<ValueRange, Error> {
    let r = range.unwrap_or_default();
    if !r.prefix.is_empty() {
        return Ok(ValueRange::prefix(values_from_wire(r.prefix)?));
    }
    Ok(ValueRange {
        start: bound_of(r.start)?,
        end: bound_of(r.end)?,
    })
}

pub fn range_to_wire(range: &ValueRange) -> Range {
    Range {
        start: bound_to_wire(&range.start),
        end: bound_to_wire(&range.end),
        prefix: Vec::new(),
    }
}

impl From<&crate::IndexHit> for IndexHit {
    fn from(h: &crate::IndexHit) -> Self {
        IndexHit {
            values: values_to_wire(&h.values),
            key: values_to_wire(&h.key),
            storing: h.storing.iter().map(|(n, p)| property(n, p)).collect(),
        }
    }
}

impl TryFrom<IndexHit> for crate::IndexHit {
    type Error = Error;

    fn try_from(h: IndexHit) -> Result<Self, Error> {
        Ok(crate::IndexHit {
            values: values_from_wire(h.values)?,
            key: values_from_wire(h.key)?,
            storing: h
                .storing
                .into_iter()
                .map(prop_of)
                .collect::<Result<_, _>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_round_trip_and_malformed_ones_are_errors() {
        let entity = Entity::new("Photo")
            .set("user_id", DbValue::Int64(7))
            .set("caption", DbValue::String("a".into()))
            .set_many(
                "tag",
                vec![DbValue::String("x".into()), DbValue::Bytes(vec![1])],
            );
        let wire = EntityMessage::from(&entity);
        assert_eq!(Entity::try_from(wire.clone()).ok(), Some(entity));
        let mut two_values = wire.clone();
        two_values.properties[0]
            .values
            .push(Value::from(&DbValue::Bool(true)));
        assert!(Entity::try_from(two_values).is_err());
        let mut no_kind = wire;
        no_kind.properties[0].values[0].kind = None;
        assert!(Entity::try_from(no_kind).is_err());
        assert!(group_of(None).is_err());
        assert!(how_to_read(Some(ReadOptions {
            mode: 9,
            transaction: None
        }))
        .is_err());
    }

    #[test]
    fn ranges_round_trip() {
        let range = ValueRange {
            start: Bound::Included(vec![DbValue::Int64(1)]),
            end: Bound::Excluded(vec![DbValue::Int64(5)]),
        };
        let back = range_of(Some(range_to_wire(&range))).ok();
        assert_eq!(back, Some(range));
        let everything = range_of(None).ok();
        assert_eq!(
            everything,
            Some(ValueRange {
                start: Bound::Unbounded,
                end: Bound::Unbounded
            })
        );
    }
}
