//! What the Megastore integration tests share: the paper's PhotoApp schema and helpers
//! to build its entities on an in-memory engine.

#![allow(dead_code)] // each test binary uses a different part

pub mod certs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bigtable::fs::FaultyFs;
use bigtable::{Engine, EngineOptions};
use megastore::cluster::{Cluster, ClusterOptions};
use megastore::replicas::ReplicaKind;
use megastore::{Database, DatabaseOptions, Entity, GroupKey, Value};

pub use megastore::examples::PHOTO_APP;

pub fn engine(fs: &FaultyFs) -> Arc<Engine> {
    Arc::new(
        Engine::open(Arc::new(fs.clone()), "/db", EngineOptions::tiny()).expect("engine opens"),
    )
}

/// An embedded cluster of one replica per file system of `fs` (replica `i`'s data
/// under `/r{i}`), created with `schema`.
pub fn open_cluster(fs: &[FaultyFs], schema: &str, options: ClusterOptions) -> Cluster {
    let dirs = (0..fs.len())
        .map(|i| PathBuf::from(format!("/r{i}")))
        .collect();
    Cluster::open(
        fs.iter().map(FaultyFs::shared).collect(),
        dirs,
        schema,
        options,
    )
    .expect("cluster opens")
}

/// Cluster options for tests: tiny engines, short leases, many retries.
pub fn cluster_options(kinds: &[ReplicaKind]) -> ClusterOptions {
    ClusterOptions {
        kinds: kinds.to_vec(),
        engine: EngineOptions::tiny(),
        lease: Duration::from_millis(300),
        database: DatabaseOptions {
            max_attempts: 1000,
            ..DatabaseOptions::default()
        },
        ..ClusterOptions::default()
    }
}

pub fn photo_app(fs: &FaultyFs) -> Database {
    Database::open_with_schema(engine(fs), PHOTO_APP, DatabaseOptions::default())
        .expect("database opens")
}

pub fn user_group(id: i64) -> GroupKey {
    GroupKey::new("User", vec![Value::Int64(id)])
}

pub fn user(id: i64, name: &str) -> Entity {
    Entity::new("User")
        .set("user_id", Value::Int64(id))
        .set("name", Value::String(name.into()))
}

pub fn photo(user: i64, id: i32, time: i64, tags: &[&str]) -> Entity {
    Entity::new("Photo")
        .set("user_id", Value::Int64(user))
        .set("photo_id", Value::Int32(id))
        .set("time", Value::Int64(time))
        .set("full_url", Value::String(format!("https://p/{user}/{id}")))
        .set(
            "thumbnail_url",
            Value::String(format!("https://t/{user}/{id}")),
        )
        .set_many(
            "tag",
            tags.iter().map(|t| Value::String((*t).into())).collect(),
        )
}

pub fn photo_key(user: i64, id: i32) -> Vec<Value> {
    vec![Value::Int64(user), Value::Int32(id)]
}

pub fn int(v: &Value) -> i64 {
    match v {
        Value::Int64(x) => *x,
        Value::Int32(x) => i64::from(*x),
        other => panic!("not an integer: {other:?}"),
    }
}

/// The root row of user `id`'s entity group in the tablet server.
pub fn user_root(db: &Database, id: i64) -> megastore::replica::RootRow {
    megastore::replica::RootRow {
        table: "PhotoApp.User".into(),
        row: megastore::keys::row_key(&db.schema(), "User", &[Value::Int64(id)])
            .expect("a user key"),
    }
}
