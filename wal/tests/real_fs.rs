//! The real file system behaves like the trait says.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;

use wal::fs::{read_file, FileSystem, RealFs};

#[test]
fn create_append_sync_read_rename_list_remove_map() {
    let tmp = tempfile::tempdir().unwrap();
    let fs = RealFs;
    let dir = tmp.path().join("a/b");
    fs.create_dir_all(&dir).unwrap();
    let path = dir.join("f");
    let mut f = fs.create(&path).unwrap();
    f.append(b"hello ").unwrap();
    f.append(b"world").unwrap();
    f.sync().unwrap();
    assert_eq!(f.len(), 11);
    fs.sync_dir(&dir).unwrap();
    let r = fs.open_read(&path).unwrap();
    let mut buf = [0u8; 5];
    r.read_exact_at(6, &mut buf).unwrap();
    assert_eq!(&buf, b"world");
    assert!(
        r.read_exact_at(8, &mut buf).is_err(),
        "reading past the end is an error"
    );
    let mut again = fs.open_append(&path).unwrap();
    assert_eq!(again.len(), 11);
    again.append(b"!").unwrap();
    let moved = dir.join("g");
    fs.rename(&path, &moved).unwrap();
    assert_eq!(fs.list(&dir).unwrap(), vec!["g".to_string()]);
    assert_eq!(&*fs.map(&moved).unwrap(), b"hello world!");
    fs.truncate(&moved, 5).unwrap();
    assert_eq!(read_file(&fs, &moved).unwrap(), b"hello");
    fs.remove(&moved).unwrap();
    assert!(!fs.exists(&moved));
    assert!(fs.open_read(Path::new("/definitely/not/here")).is_err());
}

#[test]
fn mapping_an_empty_file_gives_no_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("empty");
    RealFs.create(&path).unwrap();
    assert!(RealFs.map(&path).unwrap().is_empty());
}
