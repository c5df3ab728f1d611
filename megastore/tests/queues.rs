//! Queues between entity groups: a message is sent if and only if its transaction
//! commits, reaches the receiver's inbox exactly once and in order per sender (even
//! when delivered twice, by two deliverers at once, or after a restart), and is
//! consumed if and only if the receiving transaction commits.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bigtable::fs::FaultyFs;
use bigtable::{Engine, EngineOptions};
use megastore::cluster::ClusterOptions;
use megastore::replicas::ReplicaKind;
use megastore::{Database, DatabaseOptions, Entity, Error, GroupKey, Message, Value};

const SCHEMA: &str = "
CREATE SCHEMA Shop;
CREATE TABLE Customer { required int64 id; optional int64 orders; }
  PRIMARY KEY(id), ENTITY GROUP ROOT;
CREATE TABLE Store { required string name; } PRIMARY KEY(name), ENTITY GROUP ROOT;
CREATE QUEUE Orders;
CREATE QUEUE Receipts;
";

fn customer(id: i64) -> GroupKey {
    GroupKey::new("Customer", vec![Value::Int64(id)])
}

fn store(name: &str) -> GroupKey {
    GroupKey::new("Store", vec![Value::String(name.into())])
}

fn options(background: bool) -> DatabaseOptions {
    DatabaseOptions {
        deliver_in_background: background,
        ..DatabaseOptions::default()
    }
}

fn open_on(fs: &FaultyFs, background: bool) -> Database {
    let engine = Engine::open(fs.shared(), "/db", EngineOptions::tiny()).unwrap();
    Database::open_with_schema(Arc::new(engine), SCHEMA, options(background)).unwrap()
}

fn send(db: &Database, from: &GroupKey, to: &GroupKey, queue: &str, payloads: &[&str]) {
    db.transact(from, |tx| {
        for p in payloads {
            tx.send(queue, to, p.as_bytes())?;
        }
        Ok(())
    })
    .unwrap();
}

fn receive(db: &Database, group: &GroupKey, queue: &str, max: usize) -> Vec<Message> {
    db.transact(group, |tx| tx.receive(queue, max)).unwrap().0
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect()
}

#[test]
fn a_message_is_sent_iff_its_transaction_commits_and_arrives_once_in_order() {
    let fs = FaultyFs::new();
    let db = open_on(&fs, false);
    let (alice, bob, corner) = (customer(1), customer(2), store("corner"));
    send(&db, &alice, &corner, "Orders", &["a1", "a2"]);
    let aborted = db.transact(&alice, |tx| {
        tx.send("Orders", &corner, b"never".to_vec())?;
        Err::<(), _>(Error::Invalid("changed my mind".into()))
    });
    assert!(aborted.is_err());
    send(&db, &bob, &corner, "Orders", &["b1"]);
    send(&db, &alice, &corner, "Orders", &["a3"]);
    send(&db, &alice, &bob, "Receipts", &["r1"]);

    // Nothing arrives before delivery.
    assert!(receive(&db, &corner, "Orders", 10).is_empty());
    let stats = db.queue_stats().unwrap();
    assert_eq!(stats[0].queue, "Orders");
    assert_eq!((stats[0].in_transit, stats[0].in_inboxes), (4, 0));
    assert_eq!((stats[1].in_transit, stats[1].in_inboxes), (1, 0));
    assert!(stats[0].oldest_sent.is_some() && stats[0].oldest_age.is_some());

    assert_eq!(db.deliver_messages().unwrap(), 5);
    // Delivering again delivers nothing: the outboxes were forgotten.
    assert_eq!(db.deliver_messages().unwrap(), 0);
    let stats = db.queue_stats().unwrap();
    assert_eq!((stats[0].in_transit, stats[0].in_inboxes), (0, 4));

    let got = receive(&db, &corner, "Orders", 10);
    let from_alice: Vec<String> = texts(&got)
        .into_iter()
        .filter(|t| t.starts_with('a'))
        .collect();
    assert_eq!(from_alice, ["a1", "a2", "a3"]);
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|m| m.from == alice || m.from == bob));
    let alice_ids: Vec<_> = got
        .iter()
        .filter(|m| m.from == alice)
        .map(|m| m.id)
        .collect();
    assert!(alice_ids.windows(2).all(|w| w[0] < w[1]), "{alice_ids:?}");
    assert!(receive(&db, &corner, "Orders", 10).is_empty());
    assert_eq!(texts(&receive(&db, &bob, "Receipts", 10)), ["r1"]);
    let stats = db.queue_stats().unwrap();
    assert!(stats.iter().all(|s| s.in_transit + s.in_inboxes == 0));
    assert!(stats.iter().all(|s| s.oldest_sent.is_none()));
}

#[test]
fn a_rolled_back_receive_leaves_the_messages_and_a_bulk_receive_takes_them_together() {
    let fs = FaultyFs::new();
    let db = open_on(&fs, false);
    let (alice, corner) = (customer(1), store("corner"));
    send(&db, &alice, &corner, "Orders", &["1", "2", "3", "4", "5"]);
    db.deliver_messages().unwrap();

    let rolled_back = db.transact(&corner, |tx| {
        let got = tx.receive("Orders", 2)?;
        assert_eq!(got.len(), 2);
        Err::<(), _>(Error::Invalid("crash while processing".into()))
    });
    assert!(rolled_back.is_err());
    // Two receives in one transaction take different messages, and the writes
    // commit with them.
    let (taken, committed) = db
        .transact(&corner, |tx| {
            let first = tx.receive("Orders", 2)?;
            let rest = tx.receive("Orders", 10)?;
            tx.put(Entity::new("Store").set("name", Value::String("corner".into())))?;
            Ok((texts(&first), texts(&rest)))
        })
        .unwrap();
    assert_eq!(taken.0, ["1", "2"]);
    assert_eq!(taken.1, ["3", "4", "5"]);
    let (meta, _) = db.group_meta(&corner).unwrap();
    assert_eq!(meta.applied, committed.position);
    assert!(receive(&db, &corner, "Orders", 10).is_empty());
}

#[test]
fn the_background_deliverer_delivers_and_picks_up_where_it_stopped_after_a_restart() {
    let fs = FaultyFs::new();
    let (alice, corner) = (customer(1), store("corner"));
    {
        let db = open_on(&fs, false);
        send(&db, &alice, &corner, "Orders", &["left", "over"]);
    }
    let db = open_on(&fs, true);
    send(&db, &alice, &corner, "Orders", &["new"]);
    assert!(db.wait_for_delivery(Duration::from_secs(30)));
    // The restart's scan found the two older messages as well.
    let stats = db.queue_stats().unwrap();
    assert_eq!((stats[0].in_transit, stats[0].in_inboxes), (0, 3));
    assert_eq!(
        texts(&receive(&db, &corner, "Orders", 10)),
        ["left", "over", "new"]
    );
}

#[test]
fn bad_queue_requests_are_clear_errors() {
    let fs = FaultyFs::new();
    let db = open_on(&fs, false);
    let alice = customer(1);
    let err = |r: Result<((), megastore::Committed), Error>| r.unwrap_err().to_string();
    let no_queue = db.transact(&alice, |tx| tx.send("Nope", &store("x"), b"".to_vec()));
    assert!(err(no_queue).contains("no queue Nope"));
    let bad_root = db.transact(&alice, |tx| {
        tx.send("Orders", &GroupKey::new("Nowhere", vec![]), b"".to_vec())
    });
    assert!(err(bad_root).contains("Nowhere"));
    let bad_key = db.transact(&alice, |tx| {
        tx.send(
            "Orders",
            &GroupKey::new("Customer", vec![Value::String("x".into())]),
            b"".to_vec(),
        )
    });
    assert!(bad_key.is_err());
    let receive = db.transact(&alice, |tx| tx.receive("Nope", 1).map(|_| ()));
    assert!(err(receive).contains("no queue Nope"));
}

/// Three replicas in one process, background deliverers at each (one holds the lease),
/// senders at every replica, and an extra delivery pass run by hand at every replica
/// racing them: every message arrives exactly once, in order per sender.
#[test]
fn replicated_senders_and_racing_deliverers_deliver_each_message_once_in_order() {
    let fs: Vec<FaultyFs> = (0..3).map(|_| FaultyFs::new()).collect();
    let options = ClusterOptions {
        lease: Duration::from_millis(500),
        ..common::cluster_options(&[ReplicaKind::Full; 3])
    };
    let cluster = common::open_cluster(&fs, SCHEMA, options);
    const SENDERS: i64 = 4;
    const EACH: usize = 15;
    let stores = [store("north"), store("south")];
    std::thread::scope(|s| {
        for sender in 0..SENDERS {
            let db = cluster.handle(sender as usize % 3).unwrap();
            let stores = stores.clone();
            s.spawn(move || {
                for n in 0..EACH {
                    let to = &stores[n % 2];
                    let payload = format!("{sender}:{n}");
                    db.transact(&customer(sender), |tx| {
                        tx.send("Orders", to, payload.clone())
                    })
                    .unwrap();
                }
            });
        }
        for r in 0..3 {
            let db = cluster.handle(r).unwrap();
            s.spawn(move || {
                db.deliver_messages().unwrap();
            });
        }
    });
    for r in 0..3 {
        cluster.replica(r).unwrap().deliver_messages().unwrap();
    }
    let db = cluster.replica(1).unwrap();
    let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for to in &stores {
        for text in texts(&receive(db, to, "Orders", 1000)) {
            let (sender, n) = text.split_once(':').unwrap();
            seen.entry(format!("{sender}->{}", n.parse::<usize>().unwrap() % 2))
                .or_default()
                .push(n.parse().unwrap());
        }
    }
    for sender in 0..SENDERS {
        for parity in 0..2 {
            let want: Vec<usize> = (0..EACH).filter(|n| n % 2 == parity).collect();
            assert_eq!(
                seen[&format!("{sender}->{parity}")],
                want,
                "sender {sender}"
            );
        }
    }
    for r in 0..3 {
        let stats = cluster.replica(r).unwrap().queue_stats().unwrap();
        assert_eq!(stats[0].in_inboxes, 0, "replica {r}: {stats:?}");
    }
}
