//! Where PhotoApp's entities land in Bigtable: the paper's example rows, in order.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use megastore::keys::{column_name, row_key, storage_table, KeyError, Value};
use megastore::schema::parse;

const PHOTO_APP: &str = "
CREATE SCHEMA PhotoApp;
CREATE TABLE User { required int64 user_id; required string name; }
  PRIMARY KEY(user_id), ENTITY GROUP ROOT;
CREATE TABLE Photo { required int64 user_id; required int32 photo_id; required int64 time; }
  PRIMARY KEY(user_id, photo_id), IN TABLE User, ENTITY GROUP KEY(user_id) REFERENCES User;
CREATE TABLE Log { required int64 id; required int64 at; }
  PRIMARY KEY(id, at DESC), ENTITY GROUP ROOT, SCATTER;
CREATE TABLE Entry { required int64 id; required int64 at; required int32 n; }
  PRIMARY KEY(id, at, n), IN TABLE Log, ENTITY GROUP KEY(id, at) REFERENCES Log;
";

#[test]
fn photos_sit_right_after_their_user() {
    let schema = parse(PHOTO_APP).unwrap();
    let user = |id| row_key(&schema, "User", &[Value::Int64(id)]).unwrap();
    let photo = |id, p| row_key(&schema, "Photo", &[Value::Int64(id), Value::Int32(p)]).unwrap();
    let mut rows = vec![
        photo(101, 502),
        user(102),
        photo(101, 500),
        user(101),
        user(-5),
    ];
    rows.sort();
    assert_eq!(
        rows,
        vec![
            user(-5),
            user(101),
            photo(101, 500),
            photo(101, 502),
            user(102)
        ]
    );
    assert!(
        photo(101, 500).starts_with(&user(101)),
        "a group is one row range"
    );
    assert_eq!(storage_table(&schema, "Photo"), "User");
    assert_eq!(column_name("Photo", "time"), b"Photo.time".to_vec());
}

#[test]
fn scatter_prefixes_keep_a_group_together_and_desc_reverses() {
    let schema = parse(PHOTO_APP).unwrap();
    let log = |id, at| row_key(&schema, "Log", &[Value::Int64(id), Value::Int64(at)]).unwrap();
    let entry = |id, at, n| {
        row_key(
            &schema,
            "Entry",
            &[Value::Int64(id), Value::Int64(at), Value::Int32(n)],
        )
        .unwrap()
    };
    assert!(
        entry(7, 100, 1).starts_with(&log(7, 100)),
        "children follow their root"
    );
    assert!(log(7, 200) < log(7, 100), "DESC: later first");
    assert_eq!(
        log(7, 100).len(),
        2 + 16,
        "2 scatter bytes, then two 8-byte parts"
    );
}

#[test]
fn keys_must_fit_the_table() {
    let schema = parse(PHOTO_APP).unwrap();
    assert!(matches!(
        row_key(&schema, "User", &[]),
        Err(KeyError::Arity {
            want: 1,
            got: 0,
            ..
        })
    ));
    assert!(matches!(
        row_key(&schema, "User", &[Value::String("101".into())]),
        Err(KeyError::Type { .. })
    ));
    assert!(matches!(
        row_key(&schema, "Nope", &[]),
        Err(KeyError::UnknownTable(_))
    ));
}
