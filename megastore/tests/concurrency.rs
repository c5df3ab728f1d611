//! Transactions racing on one entity group: transfers conserve the total, increments
//! lose no update, conflicts are counted, and the committed history is serializable
//! (every transaction read exactly the state all earlier log positions produced).
//! Groups are independent: a transaction held open on one never blocks another group.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigtable::fs::FaultyFs;
use bigtable::{Engine, EngineOptions};
use megastore::{Committed, Database, DatabaseOptions, Entity, GroupKey, Transaction, Value};

const BANK: &str = "
CREATE SCHEMA Bank;
CREATE TABLE Account { required int64 id; } PRIMARY KEY(id), ENTITY GROUP ROOT;
CREATE TABLE Counter { required int64 id; required int32 n; required int64 value; }
  PRIMARY KEY(id, n), IN TABLE Account, ENTITY GROUP KEY(id) REFERENCES Account;
";

const COUNTERS: i32 = 5;
const START: i64 = 100;

fn bank() -> Database {
    let engine = Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap();
    let options = DatabaseOptions {
        max_attempts: 10_000,
        ..DatabaseOptions::default()
    };
    Database::open_with_schema(Arc::new(engine), BANK, options).unwrap()
}

fn group(id: i64) -> GroupKey {
    GroupKey::new("Account", vec![Value::Int64(id)])
}

fn counter(id: i64, n: i32, value: i64) -> Entity {
    Entity::new("Counter")
        .set("id", Value::Int64(id))
        .set("n", Value::Int32(n))
        .set("value", Value::Int64(value))
}

fn read(tx: &Transaction<'_>, id: i64, n: i32) -> i64 {
    let c = tx
        .get("Counter", &[Value::Int64(id), Value::Int32(n)])
        .unwrap();
    match c.and_then(|c| c.get("value").cloned()) {
        Some(Value::Int64(v)) => v,
        _ => 0,
    }
}

/// What one committed transaction read and wrote, and where it committed.
#[derive(Debug, Clone)]
struct Record {
    committed: Committed,
    reads: BTreeMap<i32, i64>,
    writes: BTreeMap<i32, i64>,
}

/// Small deterministic per-thread randomness.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn racing_transfers_conserve_the_total_and_serialize() {
    let db = Arc::new(bank());
    let g = group(1);
    db.transact(&g, |tx| {
        tx.put(Entity::new("Account").set("id", Value::Int64(1)))?;
        for n in 0..COUNTERS {
            tx.put(counter(1, n, START))?;
        }
        Ok(())
    })
    .unwrap();
    let history = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let (db, g, history) = (db.clone(), g.clone(), history.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15 ^ (t + 1);
                for i in 0..40 {
                    let kind = next(&mut seed) % 4;
                    let a = (next(&mut seed) % COUNTERS as u64) as i32;
                    let b = (a + 1 + (next(&mut seed) % (COUNTERS as u64 - 1)) as i32) % COUNTERS;
                    let amount = (next(&mut seed) % 20) as i64;
                    let mut record = (BTreeMap::new(), BTreeMap::new());
                    let (_, committed) = db
                        .transact(&g, |tx| {
                            record = (BTreeMap::new(), BTreeMap::new());
                            if kind == 3 && i % 2 == 0 {
                                // A read-only audit: sees a consistent total.
                                let total: i64 = (0..COUNTERS)
                                    .map(|n| {
                                        let v = read(tx, 1, n);
                                        record.0.insert(n, v);
                                        v
                                    })
                                    .sum();
                                assert_eq!(total, START * COUNTERS as i64);
                                return Ok(());
                            }
                            let (va, vb) = (read(tx, 1, a), read(tx, 1, b));
                            record.0.insert(a, va);
                            record.0.insert(b, vb);
                            record.1.insert(a, va - amount);
                            record.1.insert(b, vb + amount);
                            tx.put(counter(1, a, va - amount))?;
                            tx.put(counter(1, b, vb + amount))
                        })
                        .unwrap();
                    history.lock().unwrap().push(Record {
                        committed,
                        reads: record.0,
                        writes: record.1,
                    });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // Conservation, read back after the race.
    let snap = db.read(&g, megastore::ReadMode::Current).unwrap();
    let total: i64 = snap
        .scan("Counter", &[Value::Int64(1)])
        .unwrap()
        .iter()
        .map(|c| match c.get("value") {
            Some(Value::Int64(v)) => *v,
            _ => 0,
        })
        .sum();
    assert_eq!(total, START * COUNTERS as i64);

    // Serializability: replay the log in order. Transactions sharing an entry (group
    // commit) all read the state before it and write disjoint counters, so any order
    // among them explains their reads; a read-only one at p read the state after p.
    let mut history = history.lock().unwrap().clone();
    history.sort_by_key(|r| (r.committed.position, !r.committed.wrote));
    let positions: BTreeSet<u64> = history
        .iter()
        .filter(|r| r.committed.wrote)
        .map(|r| r.committed.position)
        .collect();
    let expected: BTreeSet<u64> = (2..2 + positions.len() as u64).collect();
    assert_eq!(positions, expected, "the writers' entries leave no gaps");
    let mut state: BTreeMap<i32, i64> = (0..COUNTERS).map(|n| (n, START)).collect();
    let mut entry_writes = BTreeMap::new();
    let mut entry_position = 0;
    for r in &history {
        if r.committed.position != entry_position || !r.committed.wrote {
            state.append(&mut entry_writes);
            entry_position = r.committed.position;
        }
        for (n, v) in &r.reads {
            assert_eq!(state[n], *v, "{r:?} read a value no serial order explains");
        }
        for (n, v) in &r.writes {
            assert!(
                entry_writes.insert(*n, *v).is_none(),
                "two transactions of one entry wrote counter {n}"
            );
        }
    }

    // Every conflict was one retry of a transaction that then committed.
    let retries: u64 = history
        .iter()
        .map(|r| u64::from(r.committed.attempts - 1))
        .sum();
    let writers = history.iter().filter(|r| r.committed.wrote).count() as u64;
    assert_eq!(db.stats().conflicts, retries);
    assert_eq!(db.stats().commits, writers + 1);
    assert_eq!(db.stats().entries, positions.len() as u64 + 1);
}

#[test]
fn concurrent_increments_lose_no_update() {
    let db = Arc::new(bank());
    let g = group(2);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (db, g) = (db.clone(), g.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    db.transact(&g, |tx| {
                        let v = read(tx, 2, 0);
                        tx.put(counter(2, 0, v + 1))
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let (value, c) = db.transact(&g, |tx| Ok(read(tx, 2, 0))).unwrap();
    assert_eq!(value, 200);
    assert_eq!(c.position, 200, "one log position per increment");
}

#[test]
fn a_transaction_that_loses_its_position_retries_on_fresh_data() {
    let db = bank();
    let g = group(3);
    db.transact(&g, |tx| tx.put(counter(3, 0, 10))).unwrap();
    let mut runs = Vec::new();
    let (_, c) = db
        .transact(&g, |tx| {
            let v = read(tx, 3, 0);
            runs.push(v);
            if runs.len() == 1 {
                // Another writer commits while this transaction is open.
                db.transact(&g, |other| other.put(counter(3, 0, 100)))
                    .unwrap();
            }
            tx.put(counter(3, 0, v + 1))
        })
        .unwrap();
    assert_eq!(runs, vec![10, 100], "the retry read the winner's value");
    assert_eq!((c.attempts, c.position), (2, 3));
    assert_eq!(db.stats().conflicts, 1);
    assert_eq!(db.transact(&g, |tx| Ok(read(tx, 3, 0))).unwrap().0, 101);
}

#[test]
fn transactions_on_other_groups_are_not_blocked() {
    let db = Arc::new(bank());
    let (inside_tx, inside_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let held = {
        let db = db.clone();
        std::thread::spawn(move || {
            let go_rx = Mutex::new(go_rx);
            db.transact(&group(10), |tx| {
                inside_tx.send(()).unwrap();
                go_rx.lock().unwrap().recv().unwrap();
                tx.put(counter(10, 0, 1))
            })
            .unwrap()
        })
    };
    inside_rx.recv().unwrap();
    let (done_tx, done_rx) = mpsc::channel();
    {
        let db = db.clone();
        std::thread::spawn(move || {
            let r = db.transact(&group(11), |tx| tx.put(counter(11, 0, 1)));
            done_tx.send(r.map(|(_, c)| c.position).ok()).unwrap();
        });
    }
    // A deadlock guard, not a speed assertion: the other group commits while the
    // first transaction is still open.
    let other = done_rx.recv_timeout(Duration::from_secs(60));
    go_tx.send(()).unwrap();
    assert_eq!(other, Ok(Some(1)));
    let (_, c) = held.join().unwrap();
    assert_eq!(
        (c.position, c.attempts),
        (1, 1),
        "no conflict across groups"
    );
}
