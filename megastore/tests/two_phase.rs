//! Two-phase transactions across entity groups on an embedded cluster of three
//! replicas: transfers are atomic and conserve the total under concurrency; a prepared
//! transaction locks what it touched against other writers (reported as
//! `Error::Locked`); one whose coordinator stopped is finished from the decision its
//! coordinator's log holds; and many claimers of one unique name make one owner.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use bigtable::fs::FaultyFs;
use bigtable::EngineOptions;
use megastore::cluster::{Cluster, ClusterOptions};
use megastore::replicas::ReplicaKind;
use megastore::{Database, DatabaseOptions, Entity, Error, GroupKey, ReadMode, Value};

const SCHEMA: &str = "
CREATE SCHEMA Bank;
CREATE TABLE Account { required int64 id; required int64 balance; optional string name; }
  PRIMARY KEY(id), ENTITY GROUP ROOT;
CREATE TABLE BlogName { required string name; required int64 owner; }
  PRIMARY KEY(name), ENTITY GROUP ROOT;
";

fn cluster(timeout: Duration) -> Cluster {
    let fs: Vec<FaultyFs> = (0..3).map(|_| FaultyFs::new()).collect();
    let options = ClusterOptions {
        kinds: vec![ReplicaKind::Full; 3],
        engine: EngineOptions::tiny(),
        lease: Duration::from_millis(500),
        database: DatabaseOptions {
            max_attempts: 10_000,
            prepared_timeout: timeout,
            ..DatabaseOptions::default()
        },
        ..ClusterOptions::default()
    };
    common::open_cluster(&fs, SCHEMA, options)
}

fn account(id: i64) -> GroupKey {
    GroupKey::new("Account", vec![Value::Int64(id)])
}

fn balance(db: &Database, id: i64) -> Option<i64> {
    let snapshot = db.read(&account(id), ReadMode::Current).unwrap();
    match snapshot
        .get("Account", &[Value::Int64(id)])
        .unwrap()?
        .get("balance")
    {
        Some(Value::Int64(v)) => Some(*v),
        _ => None,
    }
}

fn set_balance(id: i64, balance: i64) -> Entity {
    Entity::new("Account")
        .set("id", Value::Int64(id))
        .set("balance", Value::Int64(balance))
}

fn open_accounts(db: &Database, ids: impl IntoIterator<Item = i64>, each: i64) {
    for id in ids {
        db.transact(&account(id), |tx| tx.put(set_balance(id, each)))
            .unwrap();
    }
}

/// Moves `amount` from `from` to `to` (refusing to overdraw).
fn transfer(db: &Database, from: i64, to: i64, amount: i64) -> Result<bool, Error> {
    let (moved, _) = db.transact_multi(&[account(from), account(to)], |tx| {
        let read = |tx: &megastore::Transaction<'_>, id: i64| -> Result<i64, Error> {
            Ok(match tx.get("Account", &[Value::Int64(id)])? {
                Some(a) => match a.get("balance") {
                    Some(Value::Int64(v)) => *v,
                    _ => 0,
                },
                None => 0,
            })
        };
        let source = read(tx.on(&account(from))?, from)?;
        if source < amount {
            return Ok(false);
        }
        let target = read(tx.on(&account(to))?, to)?;
        tx.on(&account(from))?
            .put(set_balance(from, source - amount))?;
        tx.on(&account(to))?.put(set_balance(to, target + amount))?;
        Ok(true)
    })?;
    Ok(moved)
}

#[test]
fn concurrent_transfers_between_groups_conserve_the_total() {
    let cluster = cluster(Duration::from_secs(60));
    const ACCOUNTS: i64 = 4;
    open_accounts(cluster.replica(0).unwrap(), 0..ACCOUNTS, 100);
    std::thread::scope(|s| {
        for t in 0..6i64 {
            let db = cluster.handle(t as usize % 3).unwrap();
            s.spawn(move || {
                for i in 0..8i64 {
                    let from = (t + i) % ACCOUNTS;
                    let to = (t + 2 * i + 1) % ACCOUNTS;
                    if from != to {
                        transfer(&db, from, to, 1 + (i % 7)).unwrap();
                    }
                }
            });
        }
    });
    for r in 0..3 {
        let db = cluster.replica(r).unwrap();
        let total: i64 = (0..ACCOUNTS).map(|id| balance(db, id).unwrap()).sum();
        assert_eq!(total, ACCOUNTS * 100, "replica {r}");
        assert!(
            db.prepared_transactions().unwrap().is_empty(),
            "replica {r}"
        );
    }
}

#[test]
fn a_prepared_transaction_locks_its_entities_until_it_is_decided() {
    let cluster = cluster(Duration::from_secs(60));
    let db = cluster.replica(0).unwrap();
    open_accounts(db, [1, 2, 3], 50);
    let (_, prepared) = db
        .prepare_multi(&[account(1), account(2)], |tx| {
            tx.on(&account(1))?.put(set_balance(1, 40))?;
            tx.on(&account(2))?.put(set_balance(2, 60))
        })
        .unwrap();
    // Until decided: writers of its entities are refused with a clear error, at every
    // replica; a reader sees the old values; other entities are free.
    let other = cluster.replica(2).unwrap();
    let locked = other.transact(&account(2), |tx| tx.put(set_balance(2, 0)));
    assert!(
        matches!(locked, Err(Error::Locked { txid }) if txid == prepared.txid),
        "{locked:?}"
    );
    assert!(locked
        .unwrap_err()
        .to_string()
        .contains("locked by the prepared"));
    assert_eq!(balance(other, 2), Some(50));
    other
        .transact(&account(3), |tx| tx.put(set_balance(3, 7)))
        .unwrap();
    // A second two-phase transaction on them aborts cleanly, leaving no lock of its own.
    let second = other.prepare_multi(&[account(2), account(3)], |tx| {
        tx.on(&account(2))?.put(set_balance(2, 1))
    });
    assert!(matches!(second, Err(Error::Locked { .. })), "{second:?}");
    let held: Vec<u64> = db
        .prepared_transactions()
        .unwrap()
        .iter()
        .map(|r| r.txid)
        .collect();
    assert_eq!(held, [prepared.txid, prepared.txid]);

    assert!(prepared.commit(db).unwrap());
    assert_eq!((balance(other, 1), balance(other, 2)), (Some(40), Some(60)));
    other
        .transact(&account(2), |tx| tx.put(set_balance(2, 61)))
        .unwrap();
    assert!(db.prepared_transactions().unwrap().is_empty());
}

#[test]
fn an_abandoned_transaction_is_finished_from_its_coordinators_decision() {
    let cluster = cluster(Duration::from_secs(60));
    let db = cluster.replica(0).unwrap();
    open_accounts(db, [1, 2], 50);
    let prepare = |from_balance: i64| {
        db.prepare_multi(&[account(1), account(2)], |tx| {
            tx.on(&account(1))?.put(set_balance(1, from_balance))?;
            tx.on(&account(2))?.put(set_balance(2, 100 - from_balance))
        })
        .unwrap()
        .1
    };
    // The coordinator stops after preparing: finishing aborts it.
    let abandoned = prepare(10);
    drop(abandoned);
    assert_eq!(db.finish_prepared(Duration::ZERO).unwrap(), 2);
    assert_eq!((balance(db, 1), balance(db, 2)), (Some(50), Some(50)));
    assert!(db.prepared_transactions().unwrap().is_empty());

    // The coordinator stops right after deciding to commit: finishing commits the rest.
    let decided = prepare(30);
    assert!(decided.decide(db, true).unwrap());
    let (coordinator_id, other_id) = if balance(db, 1) == Some(30) {
        (1, 2)
    } else {
        (2, 1)
    };
    assert_eq!(balance(db, other_id), Some(50), "not resolved yet");
    let finisher = cluster.replica(1).unwrap();
    assert_eq!(finisher.finish_prepared(Duration::ZERO).unwrap(), 1);
    assert_eq!(
        balance(db, coordinator_id).unwrap() + balance(db, other_id).unwrap(),
        100
    );
    assert_eq!((balance(db, 1), balance(db, 2)), (Some(30), Some(70)));

    // A late commit by the stopped coordinator follows the decision that stands.
    let late = prepare(5);
    assert_eq!(db.finish_prepared(Duration::ZERO).unwrap(), 2);
    assert!(!late.commit(db).unwrap());
    assert_eq!((balance(db, 1), balance(db, 2)), (Some(30), Some(70)));
}

#[test]
fn a_writer_finishes_a_transaction_abandoned_for_longer_than_the_timeout() {
    let cluster = cluster(Duration::ZERO);
    let db = cluster.replica(0).unwrap();
    open_accounts(db, [1, 2], 50);
    let (_, abandoned) = db
        .prepare_multi(&[account(1), account(2)], |tx| {
            tx.on(&account(1))?.put(set_balance(1, 0))
        })
        .unwrap();
    drop(abandoned);
    // With a zero timeout the lock is abandoned at once: the writer aborts it and goes on.
    db.transact(&account(1), |tx| tx.put(set_balance(1, 49)))
        .unwrap();
    assert_eq!(balance(db, 1), Some(49));
    // Its other part (still prepared, but locking nothing this writer needs) is left
    // for the finisher.
    assert!(db.finish_prepared(Duration::ZERO).unwrap() <= 1);
    assert!(db.prepared_transactions().unwrap().is_empty());
}

#[test]
fn many_claimers_of_one_blog_name_make_exactly_one_owner() {
    let cluster = cluster(Duration::from_secs(60));
    const CLAIMERS: i64 = 8;
    open_accounts(cluster.replica(0).unwrap(), 0..CLAIMERS, 0);
    let winners: Vec<i64> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..CLAIMERS)
            .map(|id| {
                let db = cluster.handle(id as usize % 3).unwrap();
                s.spawn(move || {
                    let name = Entity::new("BlogName")
                        .set("name", Value::String("cooking".into()))
                        .set("owner", Value::Int64(id));
                    let won = db
                        .claim_unique(&name, &account(id), |tx| {
                            tx.put(set_balance(id, 0).set("name", Value::String("cooking".into())))
                        })
                        .unwrap();
                    won.then_some(id)
                })
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect()
    });
    assert_eq!(winners.len(), 1, "{winners:?}");
    let db = cluster.replica(1).unwrap();
    let claim = GroupKey::new("BlogName", vec![Value::String("cooking".into())]);
    let snapshot = db.read(&claim, ReadMode::Current).unwrap();
    let owner = snapshot
        .get("BlogName", &[Value::String("cooking".into())])
        .unwrap()
        .unwrap();
    assert_eq!(owner.get("owner"), Some(&Value::Int64(winners[0])));
    for id in 0..CLAIMERS {
        let snapshot = db.read(&account(id), ReadMode::Current).unwrap();
        let named = snapshot
            .get("Account", &[Value::Int64(id)])
            .unwrap()
            .unwrap();
        assert_eq!(
            named.get("name").is_some(),
            id == winners[0],
            "account {id}"
        );
    }
}

#[test]
fn a_part_that_only_read_is_locked_too() {
    let cluster = cluster(Duration::from_secs(60));
    let db = cluster.replica(0).unwrap();
    open_accounts(db, [1, 2], 50);
    // Reads account 1, writes account 2 from what it read.
    let (_, prepared) = db
        .prepare_multi(&[account(1), account(2)], |tx| {
            let seen = tx.on(&account(1))?.get("Account", &[Value::Int64(1)])?;
            assert!(seen.is_some());
            tx.on(&account(2))?.put(set_balance(2, 150))
        })
        .unwrap();
    let write_read_one = db.transact(&account(1), |tx| tx.put(set_balance(1, 0)));
    assert!(
        matches!(write_read_one, Err(Error::Locked { .. })),
        "{write_read_one:?}"
    );
    assert!(prepared.commit(db).unwrap());
    db.transact(&account(1), |tx| tx.put(set_balance(1, 0)))
        .unwrap();
}
