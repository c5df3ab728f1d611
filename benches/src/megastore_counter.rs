//! The Megastore benchmarks' workload: a counter entity in each entity group, which a
//! read-modify-write transaction reads and writes back plus one.

use megastore::{Entity, GroupKey, Transaction, Value};

pub const SCHEMA: &str = "
CREATE SCHEMA Bench;
CREATE TABLE Account { required int64 id; } PRIMARY KEY(id), ENTITY GROUP ROOT;
CREATE TABLE Counter { required int64 id; required int32 n; required int64 value; }
  PRIMARY KEY(id, n), IN TABLE Account, ENTITY GROUP KEY(id) REFERENCES Account;
";

pub fn group(id: i64) -> GroupKey {
    GroupKey::new("Account", vec![Value::Int64(id)])
}

/// The key of group `id`'s counter.
pub fn counter_key(id: i64) -> [Value; 2] {
    [Value::Int64(id), Value::Int32(0)]
}

/// Adds one to group `id`'s counter (creating it at 1).
pub fn increment(tx: &mut Transaction<'_>, id: i64) -> Result<(), megastore::Error> {
    let value = match tx.get("Counter", &counter_key(id))? {
        Some(c) => match c.get("value") {
            Some(Value::Int64(v)) => *v,
            _ => 0,
        },
        None => 0,
    };
    tx.put(
        Entity::new("Counter")
            .set("id", Value::Int64(id))
            .set("n", Value::Int32(0))
            .set("value", Value::Int64(value + 1)),
    )
}
