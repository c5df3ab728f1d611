//! The simulator's workload: registers (entities holding an optional int64), a few to
//! each of a few entity groups, and the transactions clients run on them: read, write,
//! compare-and-set, and copy (read one register, write its value to another of the
//! group). Each operation is recorded twice: as the per-key operations of the history
//! (a copy is a read of one key and a write of another), and, once acknowledged, as a
//! transaction whose reads must match a replay of the chosen log
//! ([`check_serializable`]).

use std::collections::BTreeMap;

use super::history::{Call, Operation, Status};
use crate::log::{LogEntry, Write};
use crate::{Entity, Error, GroupKey, Transaction, Value};

pub const SCHEMA: &str = "
CREATE SCHEMA Sim;
CREATE TABLE Bucket { required int64 g; } PRIMARY KEY(g), ENTITY GROUP ROOT;
CREATE TABLE Register { required int64 g; required int64 id; optional int64 value; }
  PRIMARY KEY(g, id), IN TABLE Bucket, ENTITY GROUP KEY(g) REFERENCES Bucket;
CREATE TABLE Account { required int64 g; required int64 id; optional int64 balance; }
  PRIMARY KEY(g, id), IN TABLE Bucket, ENTITY GROUP KEY(g) REFERENCES Bucket;
CREATE QUEUE Mail;
";

pub const GROUPS: i64 = 2;
pub const PER_GROUP: i64 = 3;

/// One register: its entity group and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reg {
    pub group: i64,
    pub id: i64,
}

impl Reg {
    pub fn name(self) -> String {
        format!("register-{}-{}", self.group, self.id)
    }

    pub fn all() -> impl Iterator<Item = Reg> {
        (0..GROUPS).flat_map(|group| (0..PER_GROUP).map(move |id| Reg { group, id }))
    }

    fn key(self) -> [Value; 2] {
        [Value::Int64(self.group), Value::Int64(self.id)]
    }

    fn entity(self, value: i64) -> Entity {
        Entity::new("Register")
            .set("g", Value::Int64(self.group))
            .set("id", Value::Int64(self.id))
            .set("value", Value::Int64(value))
    }

    fn get(self, tx: &Transaction<'_>) -> Result<Option<i64>, Error> {
        Ok(match tx.get("Register", &self.key())? {
            Some(e) => value_of(&e),
            None => None,
        })
    }
}

pub fn group_key(group: i64) -> GroupKey {
    GroupKey::new("Bucket", vec![Value::Int64(group)])
}

fn value_of(e: &Entity) -> Option<i64> {
    match e.get("value") {
        Some(Value::Int64(v)) => Some(*v),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read(Reg),
    Write(Reg, i64),
    /// Writes the new value if the register holds the expected one.
    Cas(Reg, Option<i64>, i64),
    /// Writes the first register's value (if it has one) to the second.
    Copy(Reg, Reg),
}

/// What one run of an operation's transaction read and decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub reads: Vec<(Reg, Option<i64>)>,
    pub swapped: Option<bool>,
    pub wrote: Option<(Reg, i64)>,
}

impl Op {
    pub fn group(&self) -> i64 {
        match self {
            Op::Read(r) | Op::Write(r, _) | Op::Cas(r, ..) | Op::Copy(r, _) => r.group,
        }
    }

    pub fn group_key(&self) -> GroupKey {
        group_key(self.group())
    }

    /// The operation's transaction body.
    pub fn run(&self, tx: &mut Transaction<'_>) -> Result<Observed, Error> {
        let mut seen = Observed::default();
        let mut write = |tx: &mut Transaction<'_>, reg: Reg, value: i64| {
            seen.wrote = Some((reg, value));
            tx.put(reg.entity(value))
        };
        match *self {
            Op::Read(reg) => seen.reads.push((reg, reg.get(tx)?)),
            Op::Write(reg, value) => write(tx, reg, value)?,
            Op::Cas(reg, expected, new) => {
                let current = reg.get(tx)?;
                if current == expected {
                    write(tx, reg, new)?;
                }
                seen.swapped = Some(current == expected);
                seen.reads.push((reg, current));
            }
            Op::Copy(from, to) => {
                let value = from.get(tx)?;
                if let Some(v) = value {
                    write(tx, to, v)?;
                }
                seen.reads.push((from, value));
            }
        }
        Ok(seen)
    }

    /// The operation as per-key history operations. `observed` is what its last run
    /// saw (`None`: it never ran); `returned_ns` is `None` unless it is `Ok` or `Fail`.
    pub fn history(
        &self,
        client: u64,
        observed: Option<&Observed>,
        status: Status,
        called_ns: u64,
        returned_ns: Option<u64>,
    ) -> Vec<Operation> {
        let op = |reg: Reg, call: Call, status: Status| Operation {
            client,
            key: reg.name(),
            call,
            called_ns,
            returned_ns,
            status,
        };
        let first_read = observed.and_then(|o| o.reads.first()).map(|(_, v)| *v);
        match *self {
            Op::Read(reg) => match (status, first_read) {
                (Status::Ok, Some(output)) => vec![op(reg, Call::Read { output }, status)],
                // A read that did not finish changed nothing.
                _ => vec![op(reg, Call::Read { output: None }, Status::Fail)],
            },
            Op::Write(reg, value) => vec![op(reg, Call::Write { value }, status)],
            Op::Cas(reg, expected, new) => {
                let swapped = match status {
                    Status::Ok => observed.and_then(|o| o.swapped),
                    _ => None,
                };
                let call = Call::Cas {
                    expected,
                    new,
                    swapped,
                };
                vec![op(reg, call, status)]
            }
            Op::Copy(from, _) => {
                let mut ops = Vec::new();
                if let (Status::Ok, Some(output)) = (status, first_read) {
                    ops.push(op(from, Call::Read { output }, status));
                }
                // Not acknowledged, the write carries the value its last run read.
                if let Some((to, value)) = observed.and_then(|o| o.wrote) {
                    ops.push(op(to, Call::Write { value }, status));
                }
                ops
            }
        }
    }
}

/// An acknowledged transaction: where it took effect, what it read and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Txn {
    pub group: i64,
    /// Its entry's position, or (if it wrote nothing) the position it read at.
    pub position: u64,
    pub wrote: bool,
    pub reads: Vec<(Reg, Option<i64>)>,
    pub writes: Vec<(Reg, i64)>,
}

type State = BTreeMap<Reg, Option<i64>>;

/// Replays each group's chosen log (`(group, position) -> entry`) in order and checks
/// that it is a serial order explaining every acknowledged transaction: each read what
/// the log held just before its entry (or, if it wrote nothing, at the position it
/// read), and the transactions sharing an entry can be ordered so that none reads what
/// another of them wrote and the last writer of a register left the entry's value.
/// Also reports positions no replica holds below the highest one a transaction names.
pub fn check_serializable(log: &BTreeMap<(i64, u64), Vec<u8>>, txns: &[Txn]) -> Vec<String> {
    let mut violations = Vec::new();
    for group in 0..GROUPS {
        let mut by_position: BTreeMap<u64, (Vec<&Txn>, Vec<&Txn>)> = BTreeMap::new();
        for t in txns.iter().filter(|t| t.group == group) {
            let (writers, readers) = by_position.entry(t.position).or_default();
            if t.wrote {
                writers.push(t);
            } else {
                readers.push(t);
            }
        }
        let mut replay = Replay {
            log,
            group,
            state: State::new(),
            applied: 0,
            violations: &mut violations,
        };
        for (position, (writers, readers)) in by_position {
            if !writers.is_empty() {
                replay.advance(position - 1);
                writers.iter().for_each(|t| replay.check_reads(t));
                replay.advance(position);
                if let Some(why) = entry_order(&writers, &replay.state) {
                    replay
                        .violations
                        .push(format!("group {group} position {position}: {why}"));
                }
            }
            replay.advance(position);
            readers.iter().for_each(|t| replay.check_reads(t));
        }
    }
    violations
}

/// One group's log being replayed.
struct Replay<'a> {
    log: &'a BTreeMap<(i64, u64), Vec<u8>>,
    group: i64,
    state: State,
    applied: u64,
    violations: &'a mut Vec<String>,
}

impl Replay<'_> {
    fn advance(&mut self, through: u64) {
        while self.applied < through {
            self.applied += 1;
            let (group, position) = (self.group, self.applied);
            match self
                .log
                .get(&(group, position))
                .map(|v| LogEntry::decode(v))
            {
                Some(Ok(entry)) => replay(&entry, &mut self.state),
                Some(Err(e)) => self.violations.push(format!(
                    "group {group} position {position}: undecodable entry: {e}"
                )),
                None => self.violations.push(format!(
                    "group {group} position {position}: no replica holds its entry"
                )),
            }
        }
    }

    fn check_reads(&mut self, t: &Txn) {
        for (reg, value) in &t.reads {
            let held = self.state.get(reg).copied().flatten();
            if held != *value {
                self.violations.push(format!(
                    "{t:?} read {} = {value:?}, but the log holds {held:?} there",
                    reg.name()
                ));
            }
        }
    }
}

/// Why the transactions sharing one entry (which left `after`) have no serial order,
/// if they have none. A transaction that read a register goes before the others that
/// wrote it; the one whose value the entry left goes after the others that wrote it.
fn entry_order(writers: &[&Txn], after: &State) -> Option<String> {
    let n = writers.len();
    let writes = |t: &Txn, reg: Reg| t.writes.iter().any(|(r, _)| *r == reg);
    let mut before = vec![Vec::new(); n]; // before[a]: those that go after a
    for (a, ta) in writers.iter().enumerate() {
        for (b, tb) in writers.iter().enumerate() {
            if a == b {
                continue;
            }
            let reads_what_b_writes = ta.reads.iter().any(|(r, _)| writes(tb, *r));
            let b_left_what_a_wrote = ta.writes.iter().any(|(r, _)| {
                tb.writes
                    .iter()
                    .any(|(rb, vb)| rb == r && after.get(r).copied().flatten() == Some(*vb))
            });
            if reads_what_b_writes || b_left_what_a_wrote {
                before[a].push(b);
            }
        }
    }
    // Kahn's algorithm: an order exists iff every transaction can be placed.
    let mut waiting_on = vec![0; n];
    for next in before.iter().flatten() {
        waiting_on[*next] += 1;
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting_on[i] == 0).collect();
    let mut placed = 0;
    while let Some(a) = ready.pop() {
        placed += 1;
        for &b in &before[a] {
            waiting_on[b] -= 1;
            if waiting_on[b] == 0 {
                ready.push(b);
            }
        }
    }
    (placed < n).then(|| format!("its transactions have no serial order: {writers:?}"))
}

fn replay(entry: &LogEntry, state: &mut BTreeMap<Reg, Option<i64>>) {
    for write in &entry.writes {
        match write {
            Write::Put(e) => {
                if let (Some(Value::Int64(group)), Some(Value::Int64(id))) =
                    (e.get("g"), e.get("id"))
                {
                    let reg = Reg {
                        group: *group,
                        id: *id,
                    };
                    state.insert(reg, value_of(e));
                }
            }
            Write::Delete { key, .. } => {
                if let [Value::Int64(group), Value::Int64(id)] = key.as_slice() {
                    state.remove(&Reg {
                        group: *group,
                        id: *id,
                    });
                }
            }
            Write::Reindex { .. }
            | Write::Schema { .. }
            | Write::IndexBuilt { .. }
            | Write::Send { .. }
            | Write::Deliver { .. }
            | Write::Receive { .. }
            | Write::Forget { .. }
            | Write::Prepare { .. }
            | Write::Resolve { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(writes: Vec<Write>) -> Vec<u8> {
        LogEntry {
            timestamp: 1,
            schema_version: 1,
            next_leader: 0,
            proposal: 0,
            writes,
        }
        .encode()
    }

    #[test]
    fn the_replay_explains_reads_or_names_them() {
        let (a, b) = (Reg { group: 0, id: 0 }, Reg { group: 0, id: 1 });
        let log = BTreeMap::from([
            ((0, 1), entry(vec![Write::Put(a.entity(5))])),
            (
                (0, 2),
                entry(vec![Write::Put(b.entity(5)), Write::Put(a.entity(6))]),
            ),
        ]);
        let copy = Txn {
            group: 0,
            position: 2,
            wrote: true,
            reads: vec![(a, Some(5))],
            writes: vec![(b, 5)],
        };
        let read = Txn {
            group: 0,
            position: 2,
            wrote: false,
            reads: vec![(a, Some(6)), (b, Some(5))],
            writes: vec![],
        };
        assert!(check_serializable(&log, &[read.clone(), copy.clone()]).is_empty());
        let stale = Txn {
            reads: vec![(a, Some(6))],
            ..copy
        };
        assert_eq!(check_serializable(&log, &[stale]).len(), 1);
        let beyond = Txn {
            position: 3,
            ..read
        };
        assert_eq!(check_serializable(&log, &[beyond]).len(), 1);
    }

    #[test]
    fn transactions_sharing_an_entry_need_a_serial_order() {
        let (a, b) = (Reg { group: 0, id: 0 }, Reg { group: 0, id: 1 });
        let txn = |reads, writes| Txn {
            group: 0,
            position: 2,
            wrote: true,
            reads,
            writes,
        };
        let log = BTreeMap::from([
            (
                (0, 1),
                entry(vec![Write::Put(a.entity(1)), Write::Put(b.entity(2))]),
            ),
            (
                (0, 2),
                entry(vec![Write::Put(b.entity(1)), Write::Put(a.entity(3))]),
            ),
        ]);
        // Copy a to b, and set a from what it held: the copy goes first.
        let copy = txn(vec![(a, Some(1))], vec![(b, 1)]);
        let cas = txn(vec![(a, Some(1))], vec![(a, 3)]);
        assert!(check_serializable(&log, &[copy.clone(), cas]).is_empty());
        // Copy a to b and b to a from one state: a swap no serial order makes.
        let swapped = BTreeMap::from([
            (
                (0, 1),
                entry(vec![Write::Put(a.entity(1)), Write::Put(b.entity(2))]),
            ),
            (
                (0, 2),
                entry(vec![Write::Put(b.entity(1)), Write::Put(a.entity(2))]),
            ),
        ]);
        let back = txn(vec![(b, Some(2))], vec![(a, 2)]);
        assert_eq!(check_serializable(&swapped, &[copy, back]).len(), 1);
    }
}
