//! Schemas stored in the tablet server: versions, allowed evolution, conflicts, restart.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;

use bigtable::fs::FaultyFs;
use bigtable::{Engine, EngineOptions};
use megastore::catalog::{Catalog, CatalogError};

const V1: &str = "CREATE SCHEMA PhotoApp;
CREATE TABLE User { required int64 user_id; required string name; }
  PRIMARY KEY(user_id), ENTITY GROUP ROOT;
CREATE TABLE Photo { required int64 user_id; required int32 photo_id; repeated string tag; }
  PRIMARY KEY(user_id, photo_id), IN TABLE User, ENTITY GROUP KEY(user_id) REFERENCES User;
CREATE GLOBAL INDEX PhotosByTag ON Photo(tag);";

fn v2() -> String {
    V1.replace(
        "repeated string tag; }",
        "repeated string tag; optional string caption; }",
    ) + "\nCREATE LOCAL INDEX PhotosByCaption ON Photo(user_id, caption);"
}

#[test]
fn versions_add_and_survive_a_restart() {
    let fs = FaultyFs::new();
    let engine = Engine::open(Arc::new(fs.clone()), "/db", EngineOptions::tiny()).unwrap();
    let catalog = Catalog::open(&engine).unwrap();
    assert!(catalog.get("PhotoApp").unwrap().is_none());
    assert_eq!(catalog.put(V1).unwrap(), 1);
    assert_eq!(catalog.put(&v2()).unwrap(), 2);
    let (version, schema) = catalog.get("PhotoApp").unwrap().unwrap();
    assert_eq!(version, 2);
    assert!(schema.table("Photo").unwrap().property("caption").is_some());
    assert_eq!(schema.indexes.len(), 2);
    drop(engine);

    let engine = Engine::open(Arc::new(fs), "/db", EngineOptions::tiny()).unwrap();
    let catalog = Catalog::open(&engine).unwrap();
    assert_eq!(catalog.get("PhotoApp").unwrap().unwrap().0, 2);
    let history = catalog.history("PhotoApp").unwrap();
    assert_eq!(
        history.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(history[0].1, V1);
}

#[test]
fn only_additions_are_allowed() {
    let engine = Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap();
    let catalog = Catalog::open(&engine).unwrap();
    catalog.put(V1).unwrap();
    let changes = [
        V1.replace("required string name;", "required bytes name;"),
        V1.replace("CREATE GLOBAL INDEX PhotosByTag ON Photo(tag);", ""),
        V1.replace(
            "repeated string tag; }",
            "repeated string tag; required int64 size; }",
        ),
        V1.replace(
            "PRIMARY KEY(user_id), ENTITY GROUP ROOT",
            "PRIMARY KEY(user_id DESC), ENTITY GROUP ROOT",
        ),
    ];
    for text in &changes {
        let err = catalog.put(text).unwrap_err();
        assert!(matches!(err, CatalogError::Incompatible(_)), "{err}");
    }
    assert!(matches!(
        catalog.put("CREATE SCHEMA"),
        Err(CatalogError::Parse(_))
    ));
    assert_eq!(
        catalog.get("PhotoApp").unwrap().unwrap().0,
        1,
        "nothing changed"
    );
}

#[test]
fn concurrent_changes_never_claim_the_same_version() {
    let engine = Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap();
    Catalog::open(&engine).unwrap().put(V1).unwrap();
    let results: Vec<Result<u64, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let engine = &engine;
                s.spawn(move || {
                    let text = format!("{V1}\nCREATE GLOBAL INDEX ByUser{i} ON Photo(user_id);");
                    Catalog::open(engine)
                        .unwrap()
                        .put(&text)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut won: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    won.sort_unstable();
    let before = won.len();
    won.dedup();
    assert_eq!(
        won.len(),
        before,
        "two changes claimed one version: {results:?}"
    );
    for r in &results {
        if let Err(e) = r {
            assert!(
                e.contains("changed meanwhile") || e.contains("not allowed"),
                "{e}"
            );
        }
    }
    let latest = Catalog::open(&engine)
        .unwrap()
        .get("PhotoApp")
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(
        Some(&latest),
        won.last(),
        "the newest version is the last winner's"
    );
}
