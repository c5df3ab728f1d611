//! The whole-system simulator: a replicated database (3 full replicas; or 2 full and a
//! witness; or 3 full and a read-only one) in one process, clients doing reads, writes
//! and compare-and-sets on entity properties, and faults: lost, duplicated, delayed
//! and reordered messages; links cut one way or both; replica crashes that lose unsynced
//! data (sometimes tearing it), with restarts; coordinator lease loss; clock jumps; and
//! the scavenger finishing abandoned writes. Everything random comes from the seed and
//! the run is single-threaded, so a seed replays byte for byte.
//!
//! Checked on every run:
//! - at most one value is chosen per position: every value any replica ever applied at
//!   a position is the same;
//! - the history of client operations is linearizable per key (so every acknowledged
//!   write is seen by every later current read, and nothing seen is unseen);
//! - no acknowledged write is lost: at the end the network heals, every replica
//!   restarts, and a current read of every key at every replica that serves reads joins
//!   the history;
//! - once healed, every replica serves current reads (writes never stop for good).
//!
//! Clients run one operation at a time; operations overlap only through outcomes left
//! unknown (an operation that timed out may take effect at any later time).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::{Clock, ManualClock};
use bigtable::fs::{CrashMode, FaultyFs};
use bigtable::EngineOptions;

use super::history::{check_history, Call, Operation, Status};
use super::network::{FaultRates, NetTransport, Network};
use super::Rng;
use crate::cluster::{Cluster, ClusterOptions};
use crate::replicas::{ReplicaKind, Transport, Waiter};
use crate::replication::ProposeOptions;
use crate::{Database, DatabaseOptions, Entity, Error, GroupKey, ReadMode, Value};

const SCHEMA: &str = "
CREATE SCHEMA Sim;
CREATE TABLE Register { required int64 id; optional int64 value; }
  PRIMARY KEY(id), ENTITY GROUP ROOT;
";

const KEYS: i64 = 3;
const CLIENTS: u64 = 3;
const LEASE_MICROS: i64 = 50_000;

/// What one run did and found.
#[derive(Debug, Clone, Default)]
pub struct SystemReport {
    pub seed: u64,
    pub replicas: Vec<ReplicaKind>,
    pub operations: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub failed: usize,
    pub crashes: usize,
    pub cuts: usize,
    pub lease_losses: usize,
    pub clock_jumps: usize,
    pub scavenged: usize,
    pub messages: u64,
    pub history: Vec<Operation>,
    pub violations: Vec<String>,
}

/// Moves the simulated clock instead of sleeping.
struct MoveClock(Arc<ManualClock>);

impl Waiter for MoveClock {
    fn wait_until(&self, _clock: &dyn Clock, micros: i64) {
        let now = self.0.now_micros();
        if micros > now {
            self.0.advance(micros - now);
        }
    }
}

struct World {
    rng: Rng,
    clock: Arc<ManualClock>,
    fs: Vec<FaultyFs>,
    net: Arc<Network>,
    cluster: Cluster,
    /// Replica index -> the step it restarts at.
    down: BTreeMap<usize, usize>,
    /// (group, position) -> the value some replica applied there.
    chosen: BTreeMap<(i64, u64), Vec<u8>>,
    report: SystemReport,
}

fn group(key: i64) -> GroupKey {
    GroupKey::new("Register", vec![Value::Int64(key)])
}

/// Runs seed `seed` with `operations` client operations.
pub fn run_system(seed: u64, operations: usize) -> SystemReport {
    let mut rng = Rng::new(seed);
    let kinds = match rng.below(3) {
        0 => vec![ReplicaKind::Full; 3],
        1 => vec![ReplicaKind::Full, ReplicaKind::Full, ReplicaKind::Witness],
        _ => vec![
            ReplicaKind::Full,
            ReplicaKind::Full,
            ReplicaKind::Full,
            ReplicaKind::ReadOnly,
        ],
    };
    let report = SystemReport {
        seed,
        replicas: kinds.clone(),
        ..SystemReport::default()
    };
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let fs: Vec<FaultyFs> = kinds.iter().map(|_| FaultyFs::new()).collect();
    let net = Network::new(rng.next_u64());
    net.set_rates(FaultRates {
        drop_request: rng.below(8),
        drop_reply: rng.below(8),
        duplicate: rng.below(8),
        delay: rng.below(5),
    });
    let options = ClusterOptions {
        kinds,
        engine: EngineOptions {
            background_maintenance: false,
            ..EngineOptions::tiny()
        },
        lease: Duration::from_micros(LEASE_MICROS as u64),
        clock: clock.clone(),
        waiter: Arc::new(MoveClock(clock.clone())),
        propose: ProposeOptions {
            proposer: 0,
            max_rounds: 6,
            max_backoff: Duration::from_micros(1),
            // One run in four never takes the fast path.
            fast_path: !rng.one_in(4),
        },
        seed: Some(rng.next_u64()),
        database: DatabaseOptions {
            max_attempts: 4,
            log_retention: 4,
            ..DatabaseOptions::default()
        },
    };
    let wrap_net = net.clone();
    let cluster = Cluster::open_wrapped(
        fs.iter().map(FaultyFs::shared).collect(),
        (0..fs.len())
            .map(|i| PathBuf::from(format!("/r{i}")))
            .collect(),
        SCHEMA,
        options,
        Some(Arc::new(move |from, inner| {
            Arc::new(NetTransport {
                from,
                inner,
                net: wrap_net.clone(),
            }) as Arc<dyn Transport>
        })),
    );
    let cluster = match cluster {
        Ok(c) => c,
        Err(e) => {
            let mut report = report;
            report
                .violations
                .push(format!("the cluster does not open: {e}"));
            return report;
        }
    };
    let mut world = World {
        rng,
        clock,
        fs,
        net,
        cluster,
        down: BTreeMap::new(),
        chosen: BTreeMap::new(),
        report,
    };
    for step in 0..operations {
        world.fault(step);
        world.client_operation();
        world.check_chosen();
    }
    world.finish();
    let mut report = world.report;
    report.operations = operations;
    report.violations.extend(check_history(&report.history));
    report
}

impl World {
    fn now_ns(&self) -> u64 {
        self.clock.now_micros().max(0) as u64 * 1000
    }

    fn tick(&self, micros: u64) {
        self.clock.advance(micros.max(1) as i64);
    }

    /// Replicas a client can be attached to (those that serve reads).
    fn serving(&self) -> Vec<usize> {
        let members = self.cluster.members();
        (0..members.len())
            .filter(|&i| members[i].kind != ReplicaKind::Witness)
            .collect()
    }

    fn fault(&mut self, step: usize) {
        let restart: Vec<usize> = self
            .down
            .iter()
            .filter(|(_, at)| **at <= step)
            .map(|(i, _)| *i)
            .collect();
        for i in restart {
            self.restart(i);
        }
        let n = self.cluster.len() as u64;
        let roll = self.rng.below(100);
        match roll {
            0..=2 => {
                let i = self.rng.below(n) as usize;
                if self.cluster.is_running(i) {
                    self.crash(i, step);
                }
            }
            3..=6 => {
                let (a, b) = (self.rng.below(n) as usize, self.rng.below(n) as usize);
                if a != b {
                    let both = self.rng.one_in(2);
                    self.net.set_cut(a, b, true);
                    if both {
                        self.net.set_cut(b, a, true);
                    }
                    self.report.cuts += 1;
                }
            }
            7..=10 => {
                let (a, b) = (self.rng.below(n) as usize, self.rng.below(n) as usize);
                self.net.set_partitioned(a, b, false);
            }
            11..=12 => {
                let i = self.rng.below(n) as usize;
                if let Ok(db) = self.cluster.replica(i) {
                    db.drop_coordinator_lease();
                    self.report.lease_losses += 1;
                }
            }
            13..=14 => {
                let jump = self.rng.below(2 * LEASE_MICROS as u64);
                self.tick(jump);
                self.report.clock_jumps += 1;
            }
            15..=19 => {
                let k = self.rng.below(4) as usize;
                self.net.deliver_delayed(k);
            }
            20..=21 => {
                let i = self.rng.below(n) as usize;
                if let Ok(db) = self.cluster.replica(i) {
                    if let Ok(finished) = db.scavenge() {
                        self.report.scavenged += finished;
                    }
                }
            }
            _ => {}
        }
    }

    fn crash(&mut self, i: usize, step: usize) {
        let mode = if self.rng.one_in(2) {
            CrashMode::DropUnsynced
        } else {
            CrashMode::TornWrites {
                seed: self.rng.next_u64(),
            }
        };
        // The file system loses its unsynced data first, so that closing the engine
        // cannot save any of it.
        self.fs[i].crash(mode);
        self.cluster.stop(i);
        self.report.crashes += 1;
        let back = step + self.rng.below(8) as usize;
        self.down.insert(i, back);
    }

    fn restart(&mut self, i: usize) {
        self.down.remove(&i);
        if let Err(e) = self.cluster.start(i) {
            self.report
                .violations
                .push(format!("replica {i} does not restart: {e}"));
        }
    }

    fn client_operation(&mut self) {
        let client = self.rng.below(CLIENTS);
        let serving = self.serving();
        let replica = serving[client as usize % serving.len()];
        let key = self.rng.below(KEYS as u64) as i64;
        let kind = self.rng.below(10);
        let value = self.rng.below(1_000_000) as i64;
        let expected = match self.rng.below(3) {
            0 => None,
            _ => Some(self.rng.below(1_000_000) as i64),
        };
        // Prefer a value some client saw: a blind compare-and-set almost never swaps.
        let expected = self.last_seen(key).or(expected);
        let pause = 1 + self.rng.below(100);
        self.tick(pause);
        let called = self.now_ns();
        let Ok(db) = self.cluster.replica(replica) else {
            return; // the client's replica is down: nothing was sent
        };
        let (call, status) = match kind {
            0..=3 => read_op(db, key),
            4..=6 => write_op(db, key, value),
            _ => cas_op(db, key, expected, value),
        };
        self.tick(1); // an operation takes time: it returns after it was called
        let returned = (status == Status::Ok || status == Status::Fail).then(|| self.now_ns());
        match status {
            Status::Ok => self.report.acknowledged += 1,
            Status::Fail => self.report.failed += 1,
            Status::Unknown => self.report.unknown += 1,
        }
        self.report.history.push(Operation {
            client,
            key: format!("register-{key}"),
            call,
            called_ns: called,
            returned_ns: returned,
            status,
        });
        self.tick(1);
    }

    fn last_seen(&self, key: i64) -> Option<i64> {
        let name = format!("register-{key}");
        self.report
            .history
            .iter()
            .rev()
            .find_map(|op| match op.call {
                Call::Read { output } if op.key == name && op.status == Status::Ok => output,
                Call::Write { value } if op.key == name && op.status == Status::Ok => Some(value),
                _ => None,
            })
    }

    /// Records the value each running replica applied at each position it still
    /// keeps; a second value at any position is a violation.
    fn check_chosen(&mut self) {
        for i in 0..self.cluster.len() {
            let Ok(db) = self.cluster.replica(i) else {
                continue;
            };
            for key in 0..KEYS {
                let (Ok((meta, positions)), Ok(root)) =
                    (db.group_meta(&group(key)), db.root_row(&group(key)))
                else {
                    continue;
                };
                let peer = db.peer();
                for p in positions.into_iter().filter(|p| *p <= meta.applied) {
                    let Ok(Some(value)) = peer.chosen_value(&root, p) else {
                        continue;
                    };
                    match self.chosen.get(&(key, p)) {
                        Some(v) if *v != value => self.report.violations.push(format!(
                            "two values chosen at position {p} of register-{key} (replica {i} differs)"
                        )),
                        Some(_) => {}
                        None => {
                            self.chosen.insert((key, p), value);
                        }
                    }
                }
            }
        }
    }

    /// Heals everything, restarts every replica, and reads every key at every replica
    /// that serves reads (these reads join the history).
    fn finish(&mut self) {
        self.net.heal();
        self.net.deliver_delayed(usize::MAX);
        let down: Vec<usize> = (0..self.cluster.len())
            .filter(|&i| !self.cluster.is_running(i))
            .collect();
        for i in down {
            self.restart(i);
        }
        self.tick(2 * LEASE_MICROS as u64);
        for replica in self.serving() {
            for key in 0..KEYS {
                self.tick(1);
                let called = self.now_ns();
                let Ok(db) = self.cluster.replica(replica) else {
                    continue;
                };
                let (call, status) = read_op(db, key);
                if status != Status::Ok {
                    let why = db.read(&group(key), ReadMode::Current).err();
                    self.report.violations.push(format!(
                        "after healing, replica {replica} cannot read register-{key}: {why:?}"
                    ));
                    continue;
                }
                self.report.history.push(Operation {
                    client: 100 + replica as u64,
                    key: format!("register-{key}"),
                    call,
                    called_ns: called,
                    returned_ns: Some(self.now_ns()),
                    status,
                });
            }
        }
        self.check_chosen();
        self.report.messages = self.net.requests();
    }
}

fn register(tx_get: Result<Option<Entity>, Error>) -> Result<Option<i64>, Error> {
    Ok(match tx_get?.and_then(|e| e.get("value").cloned()) {
        Some(Value::Int64(v)) => Some(v),
        _ => None,
    })
}

fn entity(key: i64, value: i64) -> Entity {
    Entity::new("Register")
        .set("id", Value::Int64(key))
        .set("value", Value::Int64(value))
}

fn read_op(db: &Database, key: i64) -> (Call, Status) {
    let read = db
        .read(&group(key), ReadMode::Current)
        .and_then(|s| register(s.get("Register", &[Value::Int64(key)])));
    match read {
        Ok(output) => (Call::Read { output }, Status::Ok),
        // A read that failed changed nothing.
        Err(_) => (Call::Read { output: None }, Status::Fail),
    }
}

/// The status of a write that returned `result`: an error after the entry may have
/// been proposed leaves the outcome unknown; losing every attempt's position means it
/// was never chosen.
fn write_status<T>(result: &Result<T, Error>) -> Status {
    match result {
        Ok(_) => Status::Ok,
        Err(Error::TooManyConflicts { .. }) => Status::Fail,
        Err(_) => Status::Unknown,
    }
}

fn write_op(db: &Database, key: i64, value: i64) -> (Call, Status) {
    let result = db.transact(&group(key), |tx| tx.put(entity(key, value)));
    (Call::Write { value }, write_status(&result))
}

fn cas_op(db: &Database, key: i64, expected: Option<i64>, new: i64) -> (Call, Status) {
    let result = db.transact(&group(key), |tx| {
        let current = register(tx.get("Register", &[Value::Int64(key)]))?;
        if current != expected {
            return Ok(false);
        }
        tx.put(entity(key, new))?;
        Ok(true)
    });
    let status = write_status(&result);
    let swapped = result.ok().map(|(s, _)| s);
    (
        Call::Cas {
            expected,
            new,
            swapped,
        },
        status,
    )
}
