//! A group's log replicated over three replicas (three engines, one process): values are
//! chosen while any one replica is down, a down replica learns what it missed, two down
//! replicas stop writes with a clear error, and proposers racing for the same positions
//! always agree on one value per position, which a majority of replicas holds.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bigtable::fs::FaultyFs;
use bigtable::{Engine, EngineOptions};
use megastore::paxos::proposer::{Outcome, Reply};
use megastore::replica::{Replica, RootRow};
use megastore::replication::{catch_up, learn, propose, Acceptor, ProposeOptions, Voter};
use megastore::sim::Rng;
use megastore::Error;

const SCHEMA: &str = "CREATE SCHEMA G;
CREATE TABLE Root { required int64 id; } PRIMARY KEY(id), ENTITY GROUP ROOT;";

/// A replica that can be switched off: then it answers nothing.
struct Switchable {
    replica: Replica,
    down: AtomicBool,
}

impl Switchable {
    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    fn check(&self) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("switched off".into()));
        }
        Ok(())
    }
}

impl Acceptor for Switchable {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        self.check()?;
        Acceptor::prepare(&self.replica, root, position, ballot)
    }

    fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Reply, Error> {
        self.check()?;
        Acceptor::accept(&self.replica, root, position, ballot, value)
    }

    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        self.check()?;
        self.replica.highest_position(root)
    }

    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        self.check()?;
        self.replica.chosen_value(root, position)
    }
}

fn replicas(n: usize) -> Vec<Arc<Switchable>> {
    let schema = megastore::schema::parse(SCHEMA).unwrap();
    (0..n)
        .map(|i| {
            let engine = Engine::open(
                Arc::new(FaultyFs::new()),
                format!("/r{i}"),
                EngineOptions::tiny(),
            )
            .unwrap();
            let retention = std::time::Duration::from_secs(3600);
            megastore::layout::create_tables(&engine, &schema, retention).unwrap();
            Arc::new(Switchable {
                replica: Replica::new(Arc::new(engine)),
                down: AtomicBool::new(false),
            })
        })
        .collect()
}

fn root() -> RootRow {
    RootRow {
        table: "G.Root".into(),
        row: b"group-1".to_vec(),
    }
}

fn views(set: &[Arc<Switchable>]) -> Vec<Voter<'static>> {
    set.iter()
        .map(|r| Voter::Away {
            acceptor: r.clone(),
            awaited: true,
        })
        .collect()
}

/// The value each replica's acceptor holds at `position`, if any.
fn held(set: &[Arc<Switchable>], position: u64) -> Vec<Option<Vec<u8>>> {
    set.iter()
        .map(|r| {
            let state = r.replica.group_state(&root()).unwrap();
            state.value_at(position).map(<[u8]>::to_vec)
        })
        .collect()
}

fn options(proposer: u32) -> ProposeOptions {
    ProposeOptions {
        proposer,
        max_rounds: 50,
        max_backoff: Duration::from_micros(500),
        fast_path: true,
        parallel: true,
    }
}

/// Proposes `entry <p>` at position `p` through replica 0 (the leader).
fn commit_entry(set: &[Arc<Switchable>], p: u64, rng: &mut Rng) -> (Vec<u8>, Outcome) {
    let value = format!("entry {p}").into_bytes();
    let outcome = propose(
        &views(set),
        &root(),
        p,
        value.clone(),
        Some(0),
        options(1),
        rng,
    )
    .unwrap();
    (value, outcome)
}

#[test]
fn a_minority_down_stops_nothing_and_learns_what_it_missed() {
    let set = replicas(3);
    let mut rng = Rng::new(1);
    set[2].set_down(true);
    for p in 1..=10u64 {
        let (value, outcome) = commit_entry(&set, p, &mut rng);
        assert_eq!(
            outcome,
            Outcome::Chosen {
                value: value.clone(),
                ours: true
            }
        );
        assert_eq!(held(&set, p), vec![Some(value.clone()), Some(value), None]);
    }
    // The leader goes down: the fast path gets no answer, the slow path still chooses.
    set[2].set_down(false);
    set[0].set_down(true);
    let outcome = propose(
        &views(&set),
        &root(),
        11,
        b"entry 11".to_vec(),
        Some(0),
        options(2),
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        outcome,
        Outcome::Chosen {
            value: b"entry 11".to_vec(),
            ours: true
        }
    );
    // The replica that was down learns every position it missed, as chosen.
    for p in 1..=10u64 {
        let learned = learn(
            &views(&set),
            &root(),
            p,
            b"no-op".to_vec(),
            options(3),
            &mut rng,
        )
        .unwrap();
        assert_eq!(learned, format!("entry {p}").into_bytes(), "position {p}");
        assert_eq!(held(&set, p)[2], Some(learned));
    }
    // Nothing was ever accepted at 12: learning chooses the no-op there.
    let learned = learn(
        &views(&set),
        &root(),
        12,
        b"no-op".to_vec(),
        options(3),
        &mut rng,
    )
    .unwrap();
    assert_eq!(learned, b"no-op".to_vec());
}

#[test]
fn a_majority_down_is_unavailable_and_chooses_nothing() {
    let set = replicas(3);
    set[1].set_down(true);
    set[2].set_down(true);
    let mut rng = Rng::new(2);
    let quick = ProposeOptions {
        max_rounds: 3,
        ..options(1)
    };
    let result = propose(
        &views(&set),
        &root(),
        1,
        b"v".to_vec(),
        Some(0),
        quick,
        &mut rng,
    );
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    // Once they are back, the position gets a value: the one the leader alone accepted
    // was never chosen, so either it or the no-op may win, and every later learner
    // learns the same.
    set[1].set_down(false);
    set[2].set_down(false);
    let learned = learn(
        &views(&set),
        &root(),
        1,
        b"no-op".to_vec(),
        options(2),
        &mut rng,
    )
    .unwrap();
    assert!(learned == b"v" || learned == b"no-op", "{learned:?}");
    let again = learn(
        &views(&set),
        &root(),
        1,
        b"other".to_vec(),
        options(3),
        &mut rng,
    )
    .unwrap();
    assert_eq!(again, learned);
}

#[test]
fn racing_proposers_agree_on_one_value_per_position() {
    const POSITIONS: u64 = 25;
    const THREADS: u32 = 4;
    let set = Arc::new(replicas(3));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (set, outcomes) = (set.clone(), outcomes.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(u64::from(t) + 10);
                for p in 1..=POSITIONS {
                    // Every thread tries the fast path through replica 0 first.
                    let value = format!("thread {t} position {p}").into_bytes();
                    let outcome = propose(
                        &views(&set),
                        &root(),
                        p,
                        value,
                        Some(0),
                        options(t + 1),
                        &mut rng,
                    )
                    .unwrap();
                    outcomes.lock().unwrap().push((p, t, outcome));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let outcomes = outcomes.lock().unwrap();
    for p in 1..=POSITIONS {
        let here: Vec<&(u64, u32, Outcome)> = outcomes.iter().filter(|(q, _, _)| *q == p).collect();
        assert_eq!(here.len(), THREADS as usize);
        let Outcome::Chosen { value: chosen, .. } = &here[0].2;
        let mut winners = 0;
        for (_, t, Outcome::Chosen { value, ours }) in &here {
            assert_eq!(value, chosen, "position {p}: proposers disagree");
            assert_eq!(
                *ours,
                *value == format!("thread {t} position {p}").into_bytes()
            );
            winners += usize::from(*ours);
        }
        assert_eq!(
            winners, 1,
            "position {p}: exactly one proposer's value is chosen"
        );
        let holders = held(&set, p)
            .iter()
            .filter(|v| v.as_ref() == Some(chosen))
            .count();
        assert!(
            holders >= 2,
            "position {p}: only {holders} replicas hold the chosen value"
        );
    }
}

#[test]
fn a_replica_back_from_an_outage_catches_up_on_exactly_the_chosen_log() {
    let set = replicas(3);
    let mut rng = Rng::new(5);
    set[2].set_down(true);
    let mut written = Vec::new();
    for p in 1..=6u64 {
        let (value, _) = commit_entry(&set, p, &mut rng);
        written.push((p, value));
    }
    // A writer got position 7 accepted at the leader alone, then vanished: not chosen.
    set[1].set_down(true);
    let quick = ProposeOptions {
        max_rounds: 1,
        ..options(2)
    };
    assert!(propose(
        &views(&set),
        &root(),
        7,
        b"lost".to_vec(),
        Some(0),
        quick,
        &mut rng
    )
    .is_err());
    set[1].set_down(false);
    // The returning replica finds the log's end at a majority and learns each value.
    set[2].set_down(false);
    let chosen = catch_up(&views(&set), &root(), 1, b"no-op", options(3), &mut rng).unwrap();
    assert_eq!(&chosen[..6], &written[..]);
    assert_eq!(chosen.len(), 7);
    assert!(
        chosen[6].1 == b"lost" || chosen[6].1 == b"no-op",
        "{:?}",
        chosen[6]
    );
    // Every later catch-up agrees on position 7.
    let again = catch_up(&views(&set), &root(), 7, b"other", options(4), &mut rng).unwrap();
    assert_eq!(again, vec![chosen[6].clone()]);
    // Without a majority, the log's end is unknown.
    set[0].set_down(true);
    set[1].set_down(true);
    assert!(matches!(
        catch_up(&views(&set), &root(), 1, b"no-op", options(5), &mut rng),
        Err(Error::Unavailable(_))
    ));
}

/// The group state every write and read loads starts at the applied position: a
/// global-index maintainer that lags far behind (its older positions kept in the row)
/// must not make each of them read every position since.
#[test]
fn the_group_state_starts_at_the_applied_position_while_older_ones_wait_for_indexing() {
    let set = replicas(1);
    let replica = &set[0].replica;
    for p in 1..=12 {
        let value = format!("entry {p}").into_bytes();
        let reply = Acceptor::accept(replica, &root(), p, 0, &value).unwrap();
        assert!(matches!(reply, Reply::Accepted { .. }), "{reply:?}");
    }
    let meta = megastore::layout::GroupMeta {
        applied: 10,
        indexed: 2,
        ..Default::default()
    };
    assert!(replica.set_meta(&root(), None, meta).unwrap());

    let state = replica.group_state(&root()).unwrap();
    assert_eq!(state.meta, meta);
    assert_eq!(state.log.keys().copied().collect::<Vec<_>>(), [10, 11, 12]);
    assert_eq!(state.value_at(10), Some(&b"entry 10"[..]));
    let unindexed = replica.log_range(&root(), 3, 10).unwrap();
    assert_eq!(
        unindexed.keys().copied().collect::<Vec<_>>(),
        (3..=10).collect::<Vec<_>>()
    );
}

fn group(n: u8) -> RootRow {
    RootRow {
        table: "G.Root".into(),
        row: vec![b'g', n],
    }
}

/// A batch of accepts answers each as a lone accept would, and writes the fresh ones
/// with one fsync.
#[test]
fn a_batch_of_accepts_answers_each_as_alone_with_one_fsync_for_the_fresh_ones() {
    let set = replicas(1);
    let replica = &set[0].replica;
    // Group 3's position 1 holds another value at a higher ballot already.
    assert!(replica.accept(&group(3), 1, 5, b"earlier").unwrap().is_ok());
    let syncs = replica.engine().log_syncs();
    let batch = vec![
        (group(1), 1, 0, b"one".to_vec()),
        (group(2), 1, 0, b"two".to_vec()),
        (group(3), 1, 0, b"late".to_vec()),
        // A second accept of group 1 in the batch: judged on its own, after the first.
        (group(1), 2, 0, b"one, next".to_vec()),
    ];
    let judged = replica.accept_many(&batch);
    let ok: Vec<bool> = judged.iter().map(|r| matches!(r, Ok(Ok(())))).collect();
    assert_eq!(ok, [true, true, false, true], "{judged:?}");
    assert_eq!(
        replica.engine().log_syncs() - syncs,
        2,
        "one fsync for the batch, one for the second accept of group 1"
    );
    let value = |g: u8, p: u64| {
        let state = replica.group_state(&group(g)).unwrap();
        state.value_at(p).map(<[u8]>::to_vec)
    };
    assert_eq!(value(1, 1).as_deref(), Some(&b"one"[..]));
    assert_eq!(value(1, 2).as_deref(), Some(&b"one, next"[..]));
    assert_eq!(value(2, 1).as_deref(), Some(&b"two"[..]));
    assert_eq!(value(3, 1).as_deref(), Some(&b"earlier"[..]));

    // Repeated, the batch is accepted again (the same value at the same ballot), and
    // nothing is written.
    let syncs = replica.engine().log_syncs();
    let again = replica.accept_many(&batch[..2]);
    assert!(again.iter().all(|r| matches!(r, Ok(Ok(())))), "{again:?}");
    assert_eq!(replica.engine().log_syncs(), syncs);
}
