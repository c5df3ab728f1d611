//! A database replicated over three in-process replicas (three engines): writes at any
//! replica are seen by current reads at every other; losing a minority stops no write
//! and loses nothing; a majority down stops writes with a clear error; a replica that
//! missed writes is never read stale (its coordinator is invalidated, or its lease
//! waited out, even if the wall clock then steps back); witnesses vote without data; read-only replicas apply without voting.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::{Clock, ManualClock};
use bigtable::fs::{CrashMode, FaultyFs};
use megastore::cluster::{Cluster, ClusterOptions, TransportWrapper};
use megastore::log::LogEntry;
use megastore::paxos::proposer::Reply;
use megastore::replica::RootRow;
use megastore::replicas::{LocalTransport, Peer, ReplicaKind, Transport, Waiter};
use megastore::replication::Acceptor;
use megastore::sim::network::Network;
use megastore::{Database, DatabaseOptions, Entity, Error, GroupKey, ReadMode, Value};
use parking_lot::{Condvar, Mutex};

const SCHEMA: &str = "
CREATE SCHEMA Bank;
CREATE TABLE Account { required int64 id; required int64 balance; }
  PRIMARY KEY(id), ENTITY GROUP ROOT;
";

use common::cluster_options as options;

fn file_systems(n: usize) -> Vec<FaultyFs> {
    (0..n).map(|_| FaultyFs::new()).collect()
}

fn open(fs: &[FaultyFs], options: ClusterOptions) -> Cluster {
    common::open_cluster(fs, SCHEMA, options)
}

fn cluster(kinds: &[ReplicaKind]) -> Cluster {
    open(&file_systems(kinds.len()), options(kinds))
}

const FULL: ReplicaKind = ReplicaKind::Full;

fn group(id: i64) -> GroupKey {
    GroupKey::new("Account", vec![Value::Int64(id)])
}

fn balance(db: &Database, id: i64, mode: ReadMode) -> Option<i64> {
    let snapshot = db.read(&group(id), mode).unwrap();
    let account = snapshot.get("Account", &[Value::Int64(id)]).unwrap()?;
    match account.get("balance") {
        Some(Value::Int64(v)) => Some(*v),
        _ => None,
    }
}

/// Adds `amount` to account `id`'s balance (creating it at 0) at `db`.
fn deposit(db: &Database, id: i64, amount: i64) -> Result<(), Error> {
    db.transact(&group(id), |tx| {
        let old = match tx
            .get("Account", &[Value::Int64(id)])?
            .and_then(|a| a.get("balance").cloned())
        {
            Some(Value::Int64(v)) => v,
            _ => 0,
        };
        tx.put(
            Entity::new("Account")
                .set("id", Value::Int64(id))
                .set("balance", Value::Int64(old + amount)),
        )
    })
    .map(|_| ())
}

#[test]
fn a_write_at_any_replica_is_seen_by_current_reads_at_every_replica() {
    let c = cluster(&[FULL, FULL, FULL]);
    deposit(c.replica(0).unwrap(), 1, 10).unwrap();
    deposit(c.replica(1).unwrap(), 1, 5).unwrap();
    deposit(c.replica(2).unwrap(), 1, 1).unwrap();
    for i in 0..3 {
        let db = c.replica(i).unwrap();
        assert_eq!(balance(db, 1, ReadMode::Current), Some(16), "replica {i}");
        // The writer applied at every replica before acknowledging.
        assert_eq!(balance(db, 1, ReadMode::Snapshot), Some(16), "replica {i}");
    }
}

#[test]
fn concurrent_writers_at_different_replicas_lose_no_update() {
    let c = Arc::new(cluster(&[FULL, FULL, FULL]));
    const EACH: i64 = 15;
    std::thread::scope(|s| {
        for i in 0..3 {
            let c = c.clone();
            s.spawn(move || {
                for _ in 0..EACH {
                    deposit(c.replica(i).unwrap(), 7, 1).unwrap();
                }
            });
        }
    });
    for i in 0..3 {
        assert_eq!(
            balance(c.replica(i).unwrap(), 7, ReadMode::Current),
            Some(3 * EACH)
        );
    }
    let conflicts: u64 = (0..3)
        .map(|i| c.replica(i).unwrap().stats().conflicts)
        .sum();
    let commits: u64 = (0..3).map(|i| c.replica(i).unwrap().stats().commits).sum();
    assert_eq!(commits, 3 * EACH as u64, "each increment committed once");
    // Conflicts are possible, not certain; the count is reported, not asserted.
    eprintln!("{conflicts} conflicts");
}

/// Decrements its counter when dropped.
struct CountDown<'a>(&'a AtomicUsize);

impl Drop for CountDown<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn current_reads_during_writes_at_one_replica_see_a_growing_balance_and_block_nothing() {
    let mut options = options(&[FULL, FULL, FULL]);
    options.propose.parallel = true;
    let c = Arc::new(open(&file_systems(3), options));
    const WRITERS: i64 = 3;
    const EACH: i64 = 20;
    let writing = AtomicUsize::new(WRITERS as usize);
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            let (c, writing) = (c.clone(), &writing);
            s.spawn(move || {
                // Counted down even if a deposit fails, so that the readers stop.
                let _done = CountDown(writing);
                for _ in 0..EACH {
                    deposit(c.replica(0).unwrap(), 3, 1).unwrap();
                }
            });
        }
        for _ in 0..3 {
            let (c, writing) = (c.clone(), &writing);
            s.spawn(move || {
                // Reads racing the writers at the same replica (each may find a
                // position accepted here and not yet chosen).
                let mut last = 0;
                while writing.load(Ordering::SeqCst) > 0 {
                    let seen = balance(c.replica(0).unwrap(), 3, ReadMode::Current).unwrap_or(0);
                    assert!(
                        seen >= last,
                        "a current read went back from {last} to {seen}"
                    );
                    last = seen;
                }
            });
        }
    });
    assert_eq!(
        balance(c.replica(0).unwrap(), 3, ReadMode::Current),
        Some(WRITERS * EACH)
    );
}

#[test]
fn a_replica_down_stops_no_write_and_catches_up_when_back() {
    let fs = file_systems(3);
    let mut c = open(&fs, options(&[FULL, FULL, FULL]));
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    c.stop(2);
    for _ in 0..5 {
        deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    }
    assert_eq!(
        balance(c.replica(1).unwrap(), 1, ReadMode::Current),
        Some(6)
    );
    c.start(2).unwrap();
    let back = c.replica(2).unwrap();
    assert_eq!(
        balance(back, 1, ReadMode::Snapshot),
        Some(1),
        "it missed five writes"
    );
    assert_eq!(balance(back, 1, ReadMode::Current), Some(6), "caught up");
    // The leader can go down too: the next write takes the slow path.
    c.stop(0);
    deposit(c.replica(2).unwrap(), 1, 1).unwrap();
    assert_eq!(
        balance(c.replica(1).unwrap(), 1, ReadMode::Current),
        Some(7)
    );
}

#[test]
fn a_majority_down_refuses_writes_clearly_and_loses_nothing() {
    let mut c = cluster(&[FULL, FULL, FULL]);
    deposit(c.replica(0).unwrap(), 1, 3).unwrap();
    c.stop(1);
    c.stop(2);
    let err = deposit(c.replica(0).unwrap(), 1, 1).unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    let err = c
        .replica(0)
        .unwrap()
        .read(&group(1), ReadMode::Current)
        .err();
    assert!(
        matches!(err, Some(Error::Unavailable(_))),
        "a current read needs a majority or a valid coordinator: {err:?}"
    );
    c.start(1).unwrap();
    c.start(2).unwrap();
    // The refused write was never acknowledged; it may or may not have been chosen.
    let after = balance(c.replica(2).unwrap(), 1, ReadMode::Current).unwrap();
    assert!(after == 3 || after == 4, "{after}");
    deposit(c.replica(1).unwrap(), 1, 10).unwrap();
    assert_eq!(
        balance(c.replica(0).unwrap(), 1, ReadMode::Current),
        Some(after + 10)
    );
}

#[test]
fn every_replica_keeps_its_data_across_a_restart_of_all() {
    let fs = file_systems(3);
    let mut c = open(&fs, options(&[FULL, FULL, FULL]));
    for i in 0..3 {
        deposit(c.replica(i).unwrap(), 2, 2).unwrap();
    }
    drop(c);
    c = open(&fs, options(&[FULL, FULL, FULL]));
    for i in 0..3 {
        assert_eq!(
            balance(c.replica(i).unwrap(), 2, ReadMode::Current),
            Some(6)
        );
    }
}

/// Replicas whose acceptors (prepare, accept) do not answer requests from the others,
/// while `apply` and `invalidate` still get through.
struct AcceptorsDown {
    inner: Arc<LocalTransport>,
    down: Arc<Mutex<Vec<usize>>>,
}

struct Filtered {
    peer: Arc<dyn Peer>,
    down: bool,
}

impl Transport for AcceptorsDown {
    fn peer(&self, member: usize) -> Result<Arc<dyn Peer>, Error> {
        Ok(Arc::new(Filtered {
            peer: self.inner.peer(member)?,
            down: self.down.lock().contains(&member),
        }))
    }
}

impl Acceptor for Filtered {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        if self.down {
            return Err(Error::Unavailable("acceptor down".into()));
        }
        self.peer.prepare(root, position, ballot)
    }
    fn accept(&self, root: &RootRow, p: u64, b: u64, v: &[u8]) -> Result<Reply, Error> {
        if self.down {
            return Err(Error::Unavailable("acceptor down".into()));
        }
        self.peer.accept(root, p, b, v)
    }
    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        self.peer.highest_position(root)
    }
    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        self.peer.chosen_value(root, position)
    }
}

impl Peer for Filtered {
    fn apply(&self, root: &RootRow, position: u64, value: &[u8]) -> Result<(), Error> {
        if self.down {
            return Err(Error::Unavailable("down".into()));
        }
        self.peer.apply(root, position, value)
    }
    fn invalidate(&self, root: &RootRow, position: u64) -> Result<(), Error> {
        self.peer.invalidate(root, position)
    }
    fn durable_applied(&self, root: &RootRow) -> Result<u64, Error> {
        self.peer.durable_applied(root)
    }
}

/// Three full replicas, each reaching the others through `wrap`.
fn open_wrapped(wrap: Arc<TransportWrapper>) -> Cluster {
    let fs = file_systems(3);
    Cluster::open_wrapped(
        fs.iter().map(FaultyFs::shared).collect(),
        (0..3).map(|i| PathBuf::from(format!("/r{i}"))).collect(),
        SCHEMA,
        options(&[FULL, FULL, FULL]),
        Some(wrap),
    )
    .unwrap()
}

#[test]
fn a_replica_that_missed_a_write_is_invalidated_and_never_read_stale() {
    let down = Arc::new(Mutex::new(Vec::new()));
    let wrap_down = down.clone();
    let c = open_wrapped(Arc::new(move |_, inner| {
        Arc::new(AcceptorsDown {
            inner,
            down: wrap_down.clone(),
        }) as Arc<dyn Transport>
    }));
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    // Replica 2 catches up and its coordinator calls the group up to date.
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Current),
        Some(1)
    );
    down.lock().push(2);
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Snapshot),
        Some(1),
        "replica 2 neither accepted nor applied the write"
    );
    down.lock().clear();
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Current),
        Some(2),
        "the invalidated coordinator sent the read to the majority"
    );
}

#[test]
fn an_unreachable_coordinator_is_waited_out_never_read_stale() {
    let net = Network::new(7);
    let c = open_wrapped(Network::wrapper(&net));
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Current),
        Some(1)
    );
    // Replica 2 is cut off from the writer entirely (no accept, no invalidation): the
    // writer revokes 2's lease and waits it out before acknowledging.
    net.set_partitioned(0, 2, true);
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    net.set_partitioned(0, 2, false);
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Current),
        Some(2)
    );
}

/// A peer that fails its first call to `prepare` or `accept` (as a call that timed
/// out), then holds every later one until released (up to a bound, counted in
/// `timed_out`) and fails it too; its other calls fail at once (it cannot be reached).
struct Hung {
    peer: Arc<dyn Peer>,
    failed_once: Arc<AtomicBool>,
    released: Arc<(Mutex<bool>, Condvar)>,
    timed_out: Arc<AtomicUsize>,
}

impl Hung {
    fn hang(&self) -> Error {
        if !self.failed_once.swap(true, Ordering::SeqCst) {
            return Error::Unavailable("timed out".into());
        }
        let (released, changed) = &*self.released;
        let mut released = released.lock();
        // Bounded, so that a writer waiting for this answer fails the test instead
        // of hanging it.
        let wait = changed.wait_while_for(&mut released, |r| !*r, Duration::from_secs(10));
        if wait.timed_out() {
            self.timed_out.fetch_add(1, Ordering::SeqCst);
        }
        Error::Unavailable("timed out".into())
    }
}

impl Acceptor for Hung {
    fn prepare(&self, _: &RootRow, _: u64, _: u64) -> Result<Reply, Error> {
        Err(self.hang())
    }
    fn accept(&self, _: &RootRow, _: u64, _: u64, _: &[u8]) -> Result<Reply, Error> {
        Err(self.hang())
    }
    fn highest_position(&self, _: &RootRow) -> Result<u64, Error> {
        Err(Error::Unavailable("unreachable".into()))
    }
    fn chosen_value(&self, _: &RootRow, _: u64) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::Unavailable("unreachable".into()))
    }
}

impl Peer for Hung {
    fn apply(&self, _: &RootRow, _: u64, _: &[u8]) -> Result<(), Error> {
        Err(Error::Unavailable("unreachable".into()))
    }
    fn invalidate(&self, _: &RootRow, _: u64) -> Result<(), Error> {
        Err(Error::Unavailable("unreachable".into()))
    }
    fn durable_applied(&self, root: &RootRow) -> Result<u64, Error> {
        self.peer.durable_applied(root)
    }
}

/// Calls to replica 2 go through a `Hung` sharing these.
struct HungToTwo {
    inner: Arc<LocalTransport>,
    failed_once: Arc<AtomicBool>,
    released: Arc<(Mutex<bool>, Condvar)>,
    timed_out: Arc<AtomicUsize>,
}

impl Transport for HungToTwo {
    fn peer(&self, member: usize) -> Result<Arc<dyn Peer>, Error> {
        let peer = self.inner.peer(member)?;
        if member != 2 {
            return Ok(peer);
        }
        Ok(Arc::new(Hung {
            peer,
            failed_once: self.failed_once.clone(),
            released: self.released.clone(),
            timed_out: self.timed_out.clone(),
        }))
    }
}

#[test]
fn a_replica_that_timed_out_is_not_waited_for_again_and_is_never_read_stale() {
    let failed_once = Arc::new(AtomicBool::new(false));
    let released = Arc::new((Mutex::new(false), Condvar::new()));
    let timed_out = Arc::new(AtomicUsize::new(0));
    let (f, r, t) = (failed_once.clone(), released.clone(), timed_out.clone());
    let wrap: Arc<TransportWrapper> = Arc::new(move |me, inner| {
        if me != 0 {
            return inner as Arc<dyn Transport>;
        }
        Arc::new(HungToTwo {
            inner,
            failed_once: f.clone(),
            released: r.clone(),
            timed_out: t.clone(),
        }) as Arc<dyn Transport>
    });
    let mut options = options(&[FULL, FULL, FULL]);
    options.propose.parallel = true;
    // Longer than suspicion lasts (2 s): it must count from the end of the wait.
    options.lease = Duration::from_millis(2500);
    let c = Cluster::open_wrapped(
        file_systems(3).iter().map(FaultyFs::shared).collect(),
        (0..3).map(|i| PathBuf::from(format!("/r{i}"))).collect(),
        SCHEMA,
        options,
        Some(wrap),
    )
    .unwrap();
    // Replica 2's coordinator takes a lease (on its first current read).
    assert_eq!(balance(c.replica(2).unwrap(), 1, ReadMode::Current), None);
    // The first write finds replica 2 failing (a timeout): it revokes 2's lease and
    // waits it out.
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    // The next ones send 2 their accepts but do not wait for the answers.
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    // Had a write waited for a held call, that call would have timed out first.
    let waited_out = timed_out.load(Ordering::SeqCst);
    {
        let (released, changed) = &*released;
        *released.lock() = true;
        changed.notify_all();
    }
    assert_eq!(waited_out, 0, "a write waited for the hung replica");
    // Replica 2 missed every write; its reads are never stale.
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Current),
        Some(3)
    );
}

#[test]
fn a_witness_votes_without_data_and_keeps_writes_going() {
    let mut c = cluster(&[FULL, FULL, ReplicaKind::Witness]);
    deposit(c.replica(0).unwrap(), 3, 4).unwrap();
    let err = c
        .replica(2)
        .unwrap()
        .read(&group(3), ReadMode::Current)
        .err();
    assert!(matches!(err, Some(Error::Invalid(_))), "{err:?}");
    c.stop(1);
    deposit(c.replica(0).unwrap(), 3, 4).unwrap();
    c.start(1).unwrap();
    assert_eq!(
        balance(c.replica(1).unwrap(), 3, ReadMode::Current),
        Some(8)
    );
    // The witness advanced its log state without data.
    let (meta, _) = c.replica(2).unwrap().group_meta(&group(3)).unwrap();
    assert_eq!(meta.applied, 2);
}

#[test]
fn a_read_only_replica_applies_without_voting() {
    let mut c = cluster(&[FULL, FULL, ReplicaKind::ReadOnly]);
    deposit(c.replica(0).unwrap(), 4, 9).unwrap();
    assert_eq!(
        balance(c.replica(2).unwrap(), 4, ReadMode::Snapshot),
        Some(9)
    );
    c.stop(2);
    deposit(c.replica(1).unwrap(), 4, 1).unwrap();
    c.start(2).unwrap();
    c.stop(1);
    let err = deposit(c.replica(0).unwrap(), 4, 1).unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(_)),
        "two voters need both: {err}"
    );
    c.start(1).unwrap();
    assert_eq!(
        balance(c.replica(2).unwrap(), 4, ReadMode::Current),
        Some(10)
    );
}

/// Simulated time for a cluster: a wall clock and a monotonic one, both moved when
/// time passes (or a writer waits out a lease).
struct Clocks {
    wall: Arc<ManualClock>,
    monotonic: Arc<ManualClock>,
}

impl Waiter for Clocks {
    fn wait_until(&self, clock: &dyn Clock, micros: i64) {
        let passed = micros - clock.now_micros();
        if passed > 0 {
            self.wall.advance(passed);
            self.monotonic.advance(passed);
        }
    }
}

#[test]
fn a_wall_clock_step_back_does_not_extend_a_lease_waited_out() {
    let clocks = Arc::new(Clocks {
        wall: Arc::new(ManualClock::new(1_000_000_000)),
        monotonic: Arc::new(ManualClock::new(0)),
    });
    let net = Network::new(11);
    let fs = file_systems(3);
    let options = ClusterOptions {
        // Longer than the renewal margin: a coordinator serves from its lease alone.
        lease: Duration::from_secs(2),
        clock: clocks.wall.clone(),
        lease_clock: clocks.monotonic.clone(),
        waiter: clocks.clone(),
        ..options(&[FULL, FULL, FULL])
    };
    let c = Cluster::open_wrapped(
        fs.iter().map(FaultyFs::shared).collect(),
        (0..3).map(|i| PathBuf::from(format!("/r{i}"))).collect(),
        SCHEMA,
        options,
        Some(Network::wrapper(&net)),
    )
    .unwrap();
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Current),
        Some(1)
    );
    // The writer cannot reach replica 2: it revokes 2's lease and waits it out.
    net.set_partitioned(0, 2, true);
    let before = clocks.monotonic.now_micros();
    deposit(c.replica(0).unwrap(), 1, 1).unwrap();
    assert!(clocks.monotonic.now_micros() > before, "the writer waited");
    net.set_partitioned(0, 2, false);
    // The wall clock steps back past the lease's end: replica 2 still knows its
    // lease is over, and catches up instead of answering from its stale state.
    clocks.wall.advance(-3_000_000);
    assert_eq!(
        balance(c.replica(2).unwrap(), 1, ReadMode::Current),
        Some(2)
    );
}

#[test]
fn a_reported_durable_applied_position_survives_a_crash() {
    let fs = file_systems(3);
    let kinds = [FULL, FULL, ReplicaKind::ReadOnly];
    let mut c = open(&fs, options(&kinds));
    for _ in 0..5 {
        deposit(c.replica(0).unwrap(), 6, 1).unwrap();
    }
    // The read-only replica never votes, so nothing synced its applied state yet.
    let root = c.replica(2).unwrap().root_row(&group(6)).unwrap();
    let reported = c.replica(2).unwrap().peer().durable_applied(&root).unwrap();
    assert_eq!(reported, 5);
    fs[2].crash(CrashMode::DropUnsynced);
    c.stop(2);
    c.start(2).unwrap();
    let (meta, _) = c.replica(2).unwrap().group_meta(&group(6)).unwrap();
    assert!(
        meta.applied >= reported,
        "applied {} after the crash",
        meta.applied
    );
}

#[test]
fn logs_are_cleaned_only_below_what_every_replica_applied() {
    let fs = file_systems(3);
    let mut c = open(
        &fs,
        ClusterOptions {
            database: DatabaseOptions {
                log_retention: 2,
                ..options(&[FULL; 3]).database
            },
            ..options(&[FULL; 3])
        },
    );
    c.stop(2);
    for _ in 0..10 {
        deposit(c.replica(0).unwrap(), 7, 1).unwrap();
    }
    // Replica 2 is down and would need every position: nothing is cleaned.
    assert_eq!(c.replica(0).unwrap().clean_logs().unwrap(), 0);
    c.start(2).unwrap();
    assert_eq!(
        balance(c.replica(2).unwrap(), 7, ReadMode::Current),
        Some(10)
    );
    // Every replica has applied all 10 now: each cleans up to 10 - 2.
    for i in 0..3 {
        assert_eq!(
            c.replica(i).unwrap().clean_logs().unwrap(),
            1,
            "replica {i}"
        );
        let (meta, positions) = c.replica(i).unwrap().group_meta(&group(7)).unwrap();
        assert_eq!(meta.cleaned, 8);
        assert_eq!(positions, vec![9, 10], "replica {i}");
    }
    deposit(c.replica(1).unwrap(), 7, 1).unwrap();
    for i in 0..3 {
        assert_eq!(
            balance(c.replica(i).unwrap(), 7, ReadMode::Current),
            Some(11)
        );
    }
}

/// A replica told that a value is chosen answers that value for the position from then
/// on, and applies it: when it accepted that very value, when it accepted another one
/// (an earlier ballot's), and when an earlier position is still unknown there.
#[test]
fn a_replica_told_of_a_chosen_value_holds_that_value_whatever_it_accepted() {
    let c = cluster(&[FULL, FULL, FULL]);
    deposit(c.replica(0).unwrap(), 8, 1).unwrap();
    let db = c.replica(2).unwrap();
    let root = db.root_row(&group(8)).unwrap();
    let peer = db.peer();
    let first = LogEntry::decode(&peer.chosen_value(&root, 1).unwrap().unwrap()).unwrap();
    let entry = |proposal| {
        LogEntry {
            proposal,
            writes: Vec::new(),
            ..first.clone()
        }
        .encode()
    };
    let applied = || db.group_meta(&group(8)).unwrap().0.applied;

    // Accepted another value at position 2, then told which one was chosen.
    let reply = peer.accept(&root, 2, 0, &entry(20)).unwrap();
    assert!(matches!(reply, Reply::Accepted { .. }), "{reply:?}");
    peer.apply(&root, 2, &entry(21)).unwrap();
    assert_eq!(peer.chosen_value(&root, 2).unwrap(), Some(entry(21)));
    assert_eq!(applied(), 2);

    // Accepted the chosen value itself.
    peer.accept(&root, 3, 0, &entry(30)).unwrap();
    peer.apply(&root, 3, &entry(30)).unwrap();
    assert_eq!(peer.chosen_value(&root, 3).unwrap(), Some(entry(30)));
    assert_eq!(applied(), 3);

    // Told of position 5 before 4: it waits, and is applied once 4 is known.
    peer.accept(&root, 5, 0, &entry(50)).unwrap();
    peer.apply(&root, 5, &entry(50)).unwrap();
    assert_eq!(applied(), 3);
    assert_eq!(peer.chosen_value(&root, 5).unwrap(), Some(entry(50)));
    peer.apply(&root, 4, &entry(40)).unwrap();
    assert_eq!(applied(), 5);
    assert_eq!(peer.chosen_value(&root, 4).unwrap(), Some(entry(40)));
}
