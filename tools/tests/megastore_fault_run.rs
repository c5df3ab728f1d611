//! A bounded fault run on a cluster of three `megastore serve --replica` processes:
//! clients write and read registers (one `User` entity per group, its name holding the
//! value) through the gRPC client while, for a fixed time, one replica at a time is
//! killed and restarted or stopped and continued. Each fault lasts until the clients
//! have completed more operations (so the cluster makes progress with a replica
//! down), and so does each recovery. The history, in the JSON-lines format of
//! `megastore::sim::history`, must be linearizable, including final current reads of
//! every register at every replica. A failing run leaves the history in the temp
//! directory and names it.
//!
//! `MEGASTORE_FAULT_RUN_SECONDS` (default 8) sets how long faults are injected;
//! `MEGASTORE_FAULT_RUN_SEED` the seed of the fault schedule and the operations.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::processes::{Etcd, Processes};
use megastore::api::client::{Client, ClientOptions};
use megastore::sim::history::{check_history, Call, Operation, Status};
use megastore::sim::Rng;
use megastore::{Entity, GroupKey, ReadMode, Value};
use parking_lot::{Condvar, Mutex};

const REPLICAS: usize = 3;
const CLIENTS: u64 = 3;
const KEYS: i64 = 3;
/// Operations completed while a fault lasts, and again after it heals.
const PROGRESS: usize = 8;
/// How long a fault or a recovery may take to let that much progress happen.
const PATIENCE: Duration = Duration::from_secs(60);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn group(key: i64) -> GroupKey {
    GroupKey::new("User", vec![Value::Int64(key)])
}

/// The operations so far, and a signal on each one that completes.
struct History {
    started: Instant,
    ops: Mutex<Vec<Operation>>,
    completed: Condvar,
}

impl History {
    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    fn record(&self, op: Operation) {
        let mut ops = self.ops.lock();
        ops.push(op);
        self.completed.notify_all();
    }

    fn successes(ops: &[Operation]) -> usize {
        ops.iter().filter(|o| o.status == Status::Ok).count()
    }

    /// Waits until `more` operations beyond those now recorded succeed.
    fn wait_for_progress(&self, more: usize, during: &str) {
        let mut ops = self.ops.lock();
        let target = Self::successes(&ops) + more;
        let deadline = Instant::now() + PATIENCE;
        while Self::successes(&ops) < target {
            let timed_out = self.completed.wait_until(&mut ops, deadline).timed_out();
            assert!(!timed_out, "no progress for {PATIENCE:?} {during}");
        }
    }
}

/// One operation by `client` on `key` through `at`: a write of `value`, or a read.
fn operate(history: &History, client: u64, at: &Client, key: i64, write: Option<i64>) {
    let called_ns = history.now_ns();
    let (call, status) = match write {
        Some(value) => {
            let user = Entity::new("User")
                .set("user_id", Value::Int64(key))
                .set("name", Value::String(value.to_string()));
            // A write that errs may still take effect (its entry may be chosen later).
            let status = match at.write(&group(key), &[user]) {
                Ok(_) => Status::Ok,
                Err(_) => Status::Unknown,
            };
            (Call::Write { value }, status)
        }
        None => match at.get(&group(key), "User", &[Value::Int64(key)], ReadMode::Current) {
            Ok(found) => (
                Call::Read {
                    output: found.map(value_of),
                },
                Status::Ok,
            ),
            // A read that errs changed nothing.
            Err(_) => (Call::Read { output: None }, Status::Fail),
        },
    };
    history.record(Operation {
        client,
        key: format!("user-{key}"),
        call,
        called_ns,
        returned_ns: (status != Status::Unknown).then(|| history.now_ns()),
        status,
    });
}

fn value_of(user: Entity) -> i64 {
    match user.get("name") {
        Some(Value::String(s)) => s.parse().expect("a register holds a number"),
        other => panic!("a register holds a number, not {other:?}"),
    }
}

/// Client `c`: operations at the replicas in turn, until `stop`.
fn run_client(c: u64, seed: u64, clients: &[Client], history: &History, stop: &AtomicBool) {
    let mut rng = Rng::new(seed ^ (c + 1));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let at = &clients[(c as usize + n) % clients.len()];
        let key = rng.below(KEYS as u64) as i64;
        let write = (rng.below(2) == 0).then_some((c as i64 + 1) * 1_000_000 + n as i64);
        operate(history, c, at, key, write);
        n += 1;
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Kill,
    Stop,
}

/// Injects faults, one replica at a time, until `until`; returns those injected.
fn inject_faults(
    cluster: &mut Processes,
    history: &History,
    until: Instant,
    rng: &mut Rng,
) -> Vec<(usize, Fault)> {
    let mut injected = Vec::new();
    while Instant::now() < until {
        let victim = rng.below(REPLICAS as u64) as usize;
        let fault = if rng.below(2) == 0 {
            Fault::Kill
        } else {
            Fault::Stop
        };
        match fault {
            Fault::Kill => cluster.kill(victim),
            Fault::Stop => cluster.signal(victim, "STOP"),
        }
        injected.push((victim, fault));
        history.wait_for_progress(PROGRESS, &format!("with replica {victim} under {fault:?}"));
        match fault {
            Fault::Kill => cluster.restart(victim),
            Fault::Stop => cluster.signal(victim, "CONT"),
        }
        history.wait_for_progress(PROGRESS, &format!("after replica {victim} healed"));
    }
    injected
}

#[test]
fn a_history_under_kills_and_stops_of_replica_processes_is_linearizable() {
    let seconds = env_u64("MEGASTORE_FAULT_RUN_SECONDS", 8);
    let seed = env_u64("MEGASTORE_FAULT_RUN_SEED", 7);
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = Etcd::start(dir.path());
    let mut cluster = Processes::start(dir.path(), &etcd, &["full"; REPLICAS], 1000, 500);
    let options = ClientOptions {
        timeout: Duration::from_millis(600),
        ..ClientOptions::default()
    };
    let clients: Vec<Client> = cluster
        .addresses
        .iter()
        .map(|a| Client::connect(a, &options).expect("client"))
        .collect();
    let history = Arc::new(History {
        started: Instant::now(),
        ops: Mutex::new(Vec::new()),
        completed: Condvar::new(),
    });
    let stop = AtomicBool::new(false);
    let injected = std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let (clients, history, stop) = (&clients, &history, &stop);
            s.spawn(move || run_client(c, seed, clients, history, stop));
        }
        let until = Instant::now() + Duration::from_secs(seconds);
        let injected = inject_faults(&mut cluster, &history, until, &mut Rng::new(seed));
        stop.store(true, Ordering::Relaxed);
        injected
    });
    // Every replica, healed, must serve every register's latest value.
    for (i, at) in clients.iter().enumerate() {
        for key in 0..KEYS {
            operate(&history, 100 + i as u64, at, key, None);
        }
    }

    let ops = history.ops.lock().clone();
    let lines: Vec<String> = ops.iter().map(Operation::to_json_line).collect();
    let parsed: Vec<Operation> = lines
        .iter()
        .map(|l| Operation::from_json_line(l).expect("a history line parses"))
        .collect();
    let final_reads = &parsed[parsed.len() - REPLICAS * KEYS as usize..];
    assert!(
        final_reads.iter().all(|o| o.status == Status::Ok),
        "a healed replica failed a current read: {final_reads:?}"
    );
    let acknowledged = parsed
        .iter()
        .filter(|o| o.status == Status::Ok && matches!(o.call, Call::Write { .. }))
        .count();
    assert!(
        !injected.is_empty() && acknowledged > 0,
        "{injected:?}, {acknowledged} writes"
    );
    let violations = check_history(&parsed);
    if !violations.is_empty() {
        let kept =
            std::env::temp_dir().join(format!("megastore-fault-run-{}.jsonl", std::process::id()));
        std::fs::write(&kept, lines.join("\n")).expect("history written");
        panic!(
            "not linearizable (seed {seed}, faults {injected:?}); history in {}: {violations:?}",
            kept.display()
        );
    }
    eprintln!(
        "fault run: {} operations ({acknowledged} acknowledged writes), faults {injected:?}",
        parsed.len()
    );
}
