//! The schema language: the paper's PhotoApp example, and errors that point at the line
//! and column of the mistake.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use megastore::schema::{
    parse, Cardinality, GroupRole, IndexScope, KeyColumn, PropertyType, SchemaError,
};
use proptest::prelude::*;

mod common;
use common::PHOTO_APP;

#[test]
fn the_photo_app_schema_parses() {
    let schema = parse(PHOTO_APP).unwrap();
    assert_eq!(schema.name, "PhotoApp");
    let user = schema.table("User").unwrap();
    assert_eq!(user.role, GroupRole::Root);
    let photo = schema.table("Photo").unwrap();
    assert_eq!(
        photo.role,
        GroupRole::Child {
            key: vec!["user_id".into()],
            root: "User".into()
        }
    );
    assert_eq!(photo.in_table.as_deref(), Some("User"));
    assert_eq!(photo.properties.len(), 6);
    let tag = photo.property("tag").unwrap();
    assert_eq!(
        (tag.cardinality, tag.kind),
        (Cardinality::Repeated, PropertyType::String)
    );
    assert_eq!(
        photo.primary_key,
        vec![
            KeyColumn {
                name: "user_id".into(),
                descending: false
            },
            KeyColumn {
                name: "photo_id".into(),
                descending: false
            },
        ]
    );
    let by_tag = &schema.indexes[1];
    assert_eq!(by_tag.scope, IndexScope::Global);
    assert_eq!(
        (by_tag.columns.clone(), by_tag.storing.clone()),
        (vec!["tag".into()], vec!["thumbnail_url".into()])
    );
    assert_eq!(schema.indexes[0].scope, IndexScope::Local);
}

#[test]
fn descending_keys_scatter_and_comments() {
    let schema = parse(
        "create schema S; -- keywords in any case
         CREATE TABLE Event {
           required uint64 id; // a comment
           required double at;
           optional bytes body;
           optional bool seen;
         } PRIMARY KEY(id, at DESC), ENTITY GROUP ROOT, SCATTER;",
    )
    .unwrap();
    let event = schema.table("Event").unwrap();
    assert!(event.scatter);
    assert!(event.primary_key[1].descending && !event.primary_key[0].descending);
}

fn error(text: &str) -> SchemaError {
    parse(text).unwrap_err()
}

/// The line of PhotoApp's schema text that starts with `start` (1-based).
fn line_of(start: &str) -> usize {
    PHOTO_APP
        .lines()
        .position(|l| l.starts_with(start))
        .expect("in the schema")
        + 1
}

#[test]
fn errors_name_the_line_and_column() {
    let e = error("CREATE SCHEMA S;\nCREATE TABLE T {\n  required int128 x;\n} PRIMARY KEY(x), ENTITY GROUP ROOT;");
    assert_eq!((e.line, e.column), (3, 12), "{e}");
    assert!(e.message.contains("unknown type \"int128\""), "{e}");

    let e = error("CREATE SCHEMA S;\nCREATE TABLE T {\n  required int64 x\n} PRIMARY KEY(x), ENTITY GROUP ROOT;");
    assert_eq!(
        (e.line, e.column),
        (4, 1),
        "missing ';' is reported where the next token is: {e}"
    );

    let e = error("CREATE SCHEMA S;\nCREATE TABLE T {\n  required int64 x;\n} PRIMARY KEY(y), ENTITY GROUP ROOT;");
    assert_eq!((e.line, e.column), (2, 1), "{e}");
    assert!(
        e.message.contains("primary key column y is not a property"),
        "{e}"
    );

    let e = error(&PHOTO_APP.replace("REFERENCES User", "REFERENCES Nobody"));
    assert!(e.message.contains("unknown table Nobody"), "{e}");
    assert_eq!(
        e.line,
        line_of("CREATE TABLE Photo"),
        "points at the table: {e}"
    );

    let e = error(&PHOTO_APP.replace("ON Photo(tag)", "ON Photo(colour)"));
    assert!(e.message.contains("no property colour"), "{e}");
    assert_eq!(
        (e.line, e.column),
        (line_of("CREATE GLOBAL INDEX"), 1),
        "{e}"
    );

    let e = error("CREATE SCHEMA S;\nCREATE TABLE T {\n  required int64 x;\n} PRIMARY KEY(x);");
    assert!(e.message.contains("ENTITY GROUP"), "{e}");

    let e = error(&PHOTO_APP.replace("ENTITY GROUP KEY(user_id)", "ENTITY GROUP KEY(photo_id)"));
    assert!(
        e.message.contains("first columns of the primary key"),
        "{e}"
    );

    let e = error(&PHOTO_APP.replace("optional string thumbnail_url", "optional string tag"));
    assert!(e.message.contains("property tag is declared twice"), "{e}");

    let e = error("CREATE SCHEMA S;\nCREATE TABLE T {\n  optional int64 x;\n} PRIMARY KEY(x), ENTITY GROUP ROOT;");
    assert!(e.message.contains("must be required"), "{e}");

    let e = error("CREATE SCHEMA S; CREATE TABLE T { required int64 x; } PRIMARY KEY(x), ENTITY GROUP ROOT; #");
    assert!(e.message.contains("unexpected '#'"), "{e}");
    assert_eq!(e.to_string().split(':').next(), Some("line 1, column 90"));
}

proptest! {
    #[test]
    fn any_text_parses_or_fails_with_a_position(text in "[A-Za-z_(){};,\\- \n/#0-9]{0,200}") {
        match parse(&text) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.line >= 1 && e.column >= 1),
        }
    }

    #[test]
    fn any_cut_of_photo_app_fails_cleanly(cut in 0usize..PHOTO_APP.len()) {
        if let Ok(schema) = parse(&PHOTO_APP[..cut]) {
            prop_assert!(schema.tables.len() <= 2);
        }
    }
}
