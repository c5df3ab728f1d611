//! The whole-system simulator: a replicated database (3 full replicas; or 2 full and a
//! witness; or 3 full and a read-only one) in one process, clients running transactions
//! on registers (`registers.rs`), and faults: lost, duplicated, delayed and reordered
//! messages; links cut one way or both; replica crashes that lose unsynced data
//! (sometimes tearing it), with restarts; coordinator lease loss; pauses (time jumps
//! forward for everyone) and wall-clock steps either way (leases are measured on a
//! monotonic clock, entry timestamps on the wall clock); and the scavenger finishing
//! abandoned writes; and replicas cleaning their logs. Leases are short (every coordinator check renews at the lock
//! service) or long (a coordinator serves from its lease alone for a while). Everything random comes from the seed and the
//! run is single-threaded, so a seed replays byte for byte.
//!
//! Clients run one transaction at a time, or several at one replica at once: those are
//! prepared one after another (while, sometimes, another client commits through another
//! replica in between) and then committed together, as group commit does
//! (`database/commit.rs`), so they share entries or commit at later positions than the
//! one after their reads.
//!
//! Checked on every run:
//! - at most one value is chosen per position: every value any replica ever applied at
//!   a position is the same, and a replica that applied position n holds a value for
//!   every position up to n (so replicas that applied n applied the same prefix);
//! - the history of client operations is linearizable per key (so every acknowledged
//!   write is seen by every later current read, and nothing seen is unseen);
//! - serializability: replaying the chosen log explains every acknowledged
//!   transaction's reads at its position;
//! - no acknowledged write is lost: at the end the network heals, every replica
//!   restarts, and a current read of every key at every replica that serves reads joins
//!   the history;
//! - once healed, every replica serves current reads (writes never stop for good);
//! - queue messages (`mail.rs`): delivered exactly once, in order, iff their sending
//!   entry is chosen, and received at most once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bigtable::clock::{Clock, ManualClock};
use bigtable::fs::{CrashMode, FaultyFs};
use bigtable::EngineOptions;

use super::history::{check_history, Call, Operation, Status};
use super::mail::MailLog;
use super::network::{FaultRates, Network};
use super::registers::{
    check_serializable, group_key, Observed, Op, Reg, Txn, GROUPS, PER_GROUP, SCHEMA,
};
use super::transfers::{Ending, Transfers, ACCOUNTS_PER_GROUP};
use super::Rng;
use crate::cluster::{Cluster, ClusterOptions};
use crate::database::{Prepared, Ran, Verdict};
use crate::replicas::{ReplicaKind, Waiter};
use crate::replication::ProposeOptions;
use crate::{Database, DatabaseOptions, Error};

const CLIENTS: u64 = 3;
/// Coordinator lease lengths: shorter than the renewal margin (every check renews at
/// the lock service), and longer (a coordinator serves from its own lease for a while).
const LEASES_MICROS: [i64; 2] = [50_000, 400_000];

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
    /// Groups whose log a replica cleaned.
    pub log_cleanups: usize,
    pub messages: u64,
    /// Queue messages clients tried to send, the ones the chosen logs delivered, and
    /// delivery passes that finished.
    pub mail_sent: usize,
    pub mail_delivered: usize,
    pub mail_deliveries: usize,
    /// Two-phase transfers attempted, committed, and abandoned by their client.
    pub transfers: usize,
    pub transfers_committed: usize,
    pub transfers_abandoned: usize,
    /// Transactions prepared in a batch and committed together.
    pub batched: usize,
    /// Of those, the ones that shared their entry with another.
    pub shared_entry: usize,
    /// And the ones committed past the position after their read (something else
    /// committed in between, writing nothing they read).
    pub past_read: usize,
    pub history: Vec<Operation>,
    /// The acknowledged transactions, for the serializability check.
    pub transactions: Vec<Txn>,
    pub violations: Vec<String>,
}

/// The simulated time: the wall clock entry timestamps come from, which may step
/// either way, and the monotonic clock that leases are measured on and the history
/// is timed by. Time passing moves both.
struct Clocks {
    wall: Arc<ManualClock>,
    monotonic: Arc<ManualClock>,
}

impl Clocks {
    fn pass(&self, micros: i64) {
        self.wall.advance(micros);
        self.monotonic.advance(micros);
    }
}

/// Lets simulated time pass instead of sleeping.
struct MoveClock(Arc<Clocks>);

impl Waiter for MoveClock {
    fn wait_until(&self, clock: &dyn Clock, micros: i64) {
        let now = clock.now_micros();
        if micros > now {
            self.0.pass(micros - now);
        }
    }
}

struct World {
    rng: Rng,
    clocks: Arc<Clocks>,
    lease_micros: i64,
    fs: Vec<FaultyFs>,
    net: Arc<Network>,
    cluster: Cluster,
    /// Replica index -> the step it restarts at.
    down: BTreeMap<usize, usize>,
    /// (group, position) -> the value some replica applied there.
    chosen: BTreeMap<(i64, u64), Vec<u8>>,
    mail: MailLog,
    transfers: Transfers,
    report: SystemReport,
}

/// A finished client operation, to be recorded.
struct Done {
    client: u64,
    op: Op,
    called_ns: u64,
    returned_ns: Option<u64>,
    observed: Option<Observed>,
    status: Status,
    /// Where it took effect, if acknowledged: (position, wrote).
    effect: Option<(u64, bool)>,
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
    let lease_micros = LEASES_MICROS[rng.below(2) as usize];
    let clocks = Arc::new(Clocks {
        wall: Arc::new(ManualClock::new(1_000_000_000)),
        monotonic: Arc::new(ManualClock::new(0)),
    });
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
        lease: Duration::from_micros(lease_micros as u64),
        clock: clocks.wall.clone(),
        lease_clock: clocks.monotonic.clone(),
        waiter: Arc::new(MoveClock(clocks.clone())),
        propose: ProposeOptions {
            proposer: 0,
            max_rounds: 6,
            max_backoff: Duration::from_micros(1),
            // One run in four never takes the fast path.
            fast_path: !rng.one_in(4),
            parallel: false,
        },
        seed: Some(rng.next_u64()),
        // The simulator cleans logs itself, as a fault step.
        maintenance_every: None,
        database: DatabaseOptions {
            max_attempts: 4,
            log_retention: 4,
            deliver_in_background: false,
            ..DatabaseOptions::default()
        },
    };
    let cluster = Cluster::open_wrapped(
        fs.iter().map(FaultyFs::shared).collect(),
        (0..fs.len())
            .map(|i| PathBuf::from(format!("/r{i}")))
            .collect(),
        SCHEMA,
        options,
        Some(Network::wrapper(&net)),
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
        clocks,
        lease_micros,
        fs,
        net,
        cluster,
        down: BTreeMap::new(),
        chosen: BTreeMap::new(),
        mail: MailLog::default(),
        transfers: Transfers::default(),
        report,
    };
    for step in 0..operations {
        world.fault(step);
        if world.rng.one_in(6) {
            world.mail_operation();
        } else if world.rng.one_in(8) {
            world.transfer();
        } else if world.rng.one_in(4) {
            world.client_batch();
        } else {
            world.client_operation();
        }
        world.check_chosen();
    }
    world.finish();
    let mut report = world.report;
    report.operations = operations;
    report.violations.extend(check_history(&report.history));
    report
        .violations
        .extend(check_serializable(&world.chosen, &report.transactions));
    let (violations, delivered) = world.mail.check(&world.chosen);
    report.violations.extend(violations);
    report.mail_delivered = delivered;
    report.mail_deliveries = world.mail.deliveries;
    report.transfers = world.transfers.attempted;
    report.transfers_committed = world.transfers.committed;
    report.transfers_abandoned = world.transfers.abandoned;
    report
}

impl World {
    fn now_ns(&self) -> u64 {
        self.clocks.monotonic.now_micros().max(0) as u64 * 1000
    }

    fn tick(&self, micros: u64) {
        self.clocks.pass(micros.max(1) as i64);
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
                // A pause: time passes for everyone at once.
                let jump = self.rng.below(2 * self.lease_micros as u64);
                self.tick(jump);
                self.report.clock_jumps += 1;
            }
            24..=27 => {
                let i = self.rng.below(n) as usize;
                if let Ok(db) = self.cluster.replica(i) {
                    if let Ok(cleaned) = db.clean_logs() {
                        self.report.log_cleanups += cleaned;
                    }
                }
            }
            22..=23 => {
                // The wall clock steps, forward or back.
                let step = self.rng.below(2 * self.lease_micros as u64) as i64;
                let step = if self.rng.one_in(2) { -step } else { step };
                self.clocks.wall.advance(step);
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
            28..=30 => {
                let i = self.rng.below(n) as usize;
                if let Ok(db) = self.cluster.replica(i) {
                    let _ = self.mail.deliver(db); // a failed pass leaves the messages
                }
            }
            31..=32 => {
                let i = self.rng.below(n) as usize;
                if let Ok(db) = self.cluster.replica(i) {
                    let _ = self.transfers.finish(db); // what fails is finished later
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

    fn random_op(&mut self, group: i64) -> Op {
        let reg = Reg {
            group,
            id: self.rng.below(PER_GROUP as u64) as i64,
        };
        let value = self.rng.below(1_000_000) as i64;
        match self.rng.below(12) {
            0..=3 => Op::Read(reg),
            4..=6 => Op::Write(reg, value),
            7..=9 => {
                let blind = match self.rng.below(3) {
                    0 => None,
                    _ => Some(self.rng.below(1_000_000) as i64),
                };
                // Prefer a value some client saw: a blind compare-and-set almost never
                // swaps.
                Op::Cas(reg, self.last_seen(reg).or(blind), value)
            }
            _ => {
                let to = Reg {
                    group,
                    id: (reg.id + 1 + self.rng.below(PER_GROUP as u64 - 1) as i64) % PER_GROUP,
                };
                Op::Copy(reg, to)
            }
        }
    }

    /// The replica a client is attached to.
    fn client_replica(&self, client: u64) -> usize {
        let serving = self.serving();
        serving[client as usize % serving.len()]
    }

    fn client_operation(&mut self) {
        let client = self.rng.below(CLIENTS);
        let group = self.rng.below(GROUPS as u64) as i64;
        let op = self.random_op(group);
        let pause = 1 + self.rng.below(100);
        self.tick(pause);
        let Ok(db) = self.cluster.replica(self.client_replica(client)) else {
            return; // the client's replica is down: nothing was sent
        };
        let done = self.run_one(db, client, op);
        self.record(done);
        self.tick(1);
    }

    /// A client sends a message between groups (or receives some), or a deliverer
    /// runs at the client's replica.
    fn mail_operation(&mut self) {
        let client = self.rng.below(CLIENTS);
        let (from, to) = (
            self.rng.below(GROUPS as u64) as i64,
            self.rng.below(GROUPS as u64) as i64,
        );
        let roll = self.rng.below(10);
        let max = 1 + self.rng.below(3) as usize;
        let pause = 1 + self.rng.below(100);
        self.tick(pause);
        let Ok(db) = self.cluster.replica(self.client_replica(client)) else {
            return;
        };
        match roll {
            0..=5 => {
                self.report.mail_sent += 1;
                self.mail
                    .send(db, (from, group_key(from)), (to, group_key(to)));
            }
            6..=8 => self.mail.receive(db, &group_key(to), max),
            _ => {
                let _ = self.mail.deliver(db);
            }
        }
        self.tick(1);
    }

    /// A client moves money between the groups with a two-phase transaction, and
    /// sometimes stops midway as a crashed coordinator would.
    fn transfer(&mut self) {
        let client = self.rng.below(CLIENTS);
        let from_group = self.rng.below(2) as i64;
        let from = (from_group, self.rng.below(ACCOUNTS_PER_GROUP as u64) as i64);
        let to = (
            1 - from_group,
            self.rng.below(ACCOUNTS_PER_GROUP as u64) as i64,
        );
        let amount = 1 + self.rng.below(50) as i64;
        let ending = match self.rng.below(8) {
            0 => Ending::AfterPrepare,
            1 => Ending::AfterDecision,
            _ => Ending::Complete,
        };
        let pause = 1 + self.rng.below(100);
        self.tick(pause);
        let Ok(db) = self.cluster.replica(self.client_replica(client)) else {
            return;
        };
        self.transfers.transfer(db, from, to, amount, ending);
        self.tick(1);
    }

    /// After healing: finishes every abandoned transfer, then checks every replica
    /// that serves reads.
    fn finish_transfers(&mut self) {
        let serving = self.serving();
        if let Some(db) = serving.first().and_then(|&r| self.cluster.replica(r).ok()) {
            if let Err(e) = self.transfers.finish(db) {
                self.report.violations.push(format!(
                    "after healing, abandoned transfers cannot be finished: {e}"
                ));
            }
        }
        for replica in serving {
            if let Ok(db) = self.cluster.replica(replica) {
                let found = Transfers::check(replica, db);
                self.report.violations.extend(found);
            }
        }
    }

    /// After healing: delivers everything and empties every inbox.
    fn finish_mail(&mut self) {
        let Some(&replica) = self.serving().first() else {
            return;
        };
        let Ok(db) = self.cluster.replica(replica) else {
            return;
        };
        let mut failures = Vec::new();
        if let Err(e) = self.mail.deliver(db) {
            failures.push(format!("after healing, delivery fails: {e}"));
        }
        for group in 0..GROUPS {
            if let Err(e) = self.mail.drain(db, &group_key(group)) {
                failures.push(format!(
                    "after healing, group {group}'s inbox cannot be read: {e}"
                ));
            }
        }
        self.report.violations.extend(failures);
    }

    /// Runs `op` as a transaction of its own at `db`.
    fn run_one(&self, db: &Database, client: u64, op: Op) -> Done {
        let called_ns = self.now_ns();
        let mut last = None;
        let result = db.transact(&op.group_key(), |tx| {
            let seen = op.run(tx)?;
            last = Some(seen.clone());
            Ok(seen)
        });
        self.tick(1); // an operation takes time: it returns after it was called
        let status = match (&result, op) {
            (Ok(_), _) => Status::Ok,
            (Err(Error::TooManyConflicts { .. }), _) | (Err(_), Op::Read(_)) => Status::Fail,
            // An error after the entry may have been proposed leaves the outcome unknown.
            (Err(_), _) => Status::Unknown,
        };
        let effect = result.as_ref().ok().map(|(_, c)| (c.position, c.wrote));
        Done {
            client,
            op,
            called_ns,
            returned_ns: (status != Status::Unknown).then(|| self.now_ns()),
            observed: result.map(|(seen, _)| seen).ok().or(last),
            status,
            effect,
        }
    }

    /// Several clients' transactions on one group at one replica, prepared one after
    /// another and committed together; sometimes another client commits through
    /// another replica between two preparations.
    fn client_batch(&mut self) {
        let client = self.rng.below(CLIENTS);
        let replica = self.client_replica(client);
        let group = self.rng.below(GROUPS as u64) as i64;
        let size = 2 + self.rng.below(3) as usize;
        let mut plan = Vec::new();
        for _ in 0..size {
            let op = self.random_op(group);
            let other = self.rng.one_in(3).then(|| {
                let client = self.rng.below(CLIENTS);
                (self.client_replica(client), client, self.random_op(group))
            });
            plan.push((self.rng.below(CLIENTS), op, other));
        }
        let pause = 1 + self.rng.below(100);
        self.tick(pause);
        let Ok(db) = self.cluster.replica(replica) else {
            return;
        };
        let mut done = Vec::new();
        let mut prepared: Vec<(Done, Prepared)> = Vec::new();
        for (client, op, other) in plan {
            let called_ns = self.now_ns();
            let outcome = db.prepare(&group_key(group), |tx| op.run(tx));
            self.tick(1);
            let returned_ns = Some(self.now_ns());
            let finished = |observed, status, effect| Done {
                client,
                op,
                called_ns,
                returned_ns,
                observed,
                status,
                effect,
            };
            match outcome {
                Ok(Ran::ReadOnly(seen, c)) => {
                    done.push(finished(Some(seen), Status::Ok, Some((c.position, false))))
                }
                Ok(Ran::Wrote(seen, tx)) => {
                    prepared.push((finished(Some(seen), Status::Ok, None), tx))
                }
                Err(_) => done.push(finished(None, Status::Fail, None)),
            }
            if let Some((at, client, op)) = other {
                if let Ok(other_db) = self.cluster.replica(at) {
                    done.push(self.run_one(other_db, client, op));
                }
            }
        }
        let (mut waiting, txs): (Vec<Done>, Vec<Prepared>) = prepared.into_iter().unzip();
        let verdicts = db
            .commit_prepared(&group_key(group), &txs)
            .unwrap_or_else(|e| {
                txs.iter()
                    .map(|_| Err(Error::Unavailable(e.to_string())))
                    .collect()
            });
        self.tick(1);
        let now = self.now_ns();
        self.report.batched += waiting.len();
        let mut entries = BTreeMap::new();
        for (tx, verdict) in txs.iter().zip(&verdicts) {
            if let Ok(Verdict::Committed { position, .. }) = verdict {
                *entries.entry(*position).or_insert(0) += 1;
                if *position > tx.read_at + 1 {
                    self.report.past_read += 1;
                }
            }
        }
        self.report.shared_entry += entries.values().filter(|n| **n > 1).sum::<usize>();
        for (d, verdict) in waiting.iter_mut().zip(verdicts) {
            (d.status, d.effect) = match verdict {
                Ok(Verdict::Committed { position, .. }) => (Status::Ok, Some((position, true))),
                Ok(Verdict::Rerun) => (Status::Fail, None),
                Err(_) => (Status::Unknown, None),
            };
            d.returned_ns = (d.status != Status::Unknown).then_some(now);
        }
        for d in done.into_iter().chain(waiting) {
            self.record(d);
        }
        self.tick(1);
    }

    fn record(&mut self, d: Done) {
        match d.status {
            Status::Ok => self.report.acknowledged += 1,
            Status::Fail => self.report.failed += 1,
            Status::Unknown => self.report.unknown += 1,
        }
        self.report.history.extend(d.op.history(
            d.client,
            d.observed.as_ref(),
            d.status,
            d.called_ns,
            d.returned_ns,
        ));
        if let (Status::Ok, Some((position, wrote))) = (d.status, d.effect) {
            self.report.transactions.push(Txn {
                group: d.op.group(),
                position,
                wrote,
                reads: d
                    .observed
                    .as_ref()
                    .map(|o| o.reads.clone())
                    .unwrap_or_default(),
                writes: d.observed.and_then(|o| o.wrote).into_iter().collect(),
            });
        }
    }

    fn last_seen(&self, reg: Reg) -> Option<i64> {
        let name = reg.name();
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
            for group in 0..GROUPS {
                let (Ok((meta, _)), Ok(root)) = (
                    db.group_meta(&group_key(group)),
                    db.root_row(&group_key(group)),
                ) else {
                    continue;
                };
                let peer = db.peer();
                // Every applied position not yet cleaned up, so that replicas applying
                // position n applied the same prefix.
                for p in meta.cleaned + 1..=meta.applied {
                    let value = match peer.chosen_value(&root, p) {
                        Ok(Some(value)) => value,
                        Ok(None) => {
                            self.report.violations.push(format!(
                                "replica {i} applied position {p} of group {group} but keeps no value for it"
                            ));
                            continue;
                        }
                        Err(_) => continue,
                    };
                    match self.chosen.get(&(group, p)) {
                        Some(v) if *v != value => self.report.violations.push(format!(
                            "two values chosen at position {p} of group {group} (replica {i} differs)"
                        )),
                        Some(_) => {}
                        None => {
                            self.chosen.insert((group, p), value);
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
        self.tick(2 * self.lease_micros as u64);
        for replica in self.serving() {
            for reg in Reg::all() {
                self.tick(1);
                let Ok(db) = self.cluster.replica(replica) else {
                    continue;
                };
                let done = self.run_one(db, 100 + replica as u64, Op::Read(reg));
                if done.status != Status::Ok {
                    let why = db
                        .transact(&group_key(reg.group), |tx| Op::Read(reg).run(tx))
                        .err();
                    self.report.violations.push(format!(
                        "after healing, replica {replica} cannot read {}: {why:?}",
                        reg.name()
                    ));
                    continue;
                }
                self.record(done);
            }
        }
        self.finish_mail();
        self.finish_transfers();
        self.check_chosen();
        self.report.messages = self.net.requests();
    }
}
