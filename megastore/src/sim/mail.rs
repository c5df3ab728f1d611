//! The simulator's queue workload: clients send messages between the register groups
//! on queue `Mail` (each payload unique), receive a few at a time, and deliverers run
//! at random replicas, all under the system simulator's faults. What each client
//! learned is kept here, and [`MailLog::check`] compares it with the chosen logs:
//!
//! - a message is delivered (put into an inbox by a chosen entry) if and only if the
//!   entry that sent it is chosen, exactly once, and in send order per sender and
//!   receiver (checked once delivery has run to the end after healing);
//! - an acknowledged send is chosen; a failed one is not;
//! - no message is received twice; every delivered message is received by an
//!   acknowledged receive, the final drain, or a receive of unknown outcome that saw it.

use std::collections::{BTreeMap, BTreeSet};

use crate::log::{LogEntry, Write};
use crate::queue::MessageId;
use crate::sim::history::Status;
use crate::{Database, Error, GroupKey};

pub const QUEUE: &str = "Mail";

#[derive(Debug, Default)]
pub struct MailLog {
    next: u64,
    /// Payload -> (sender group, receiver group, status of the sending transaction).
    sends: BTreeMap<String, (i64, i64, Status)>,
    /// Payloads taken by acknowledged receives (a payload twice is a violation).
    received: Vec<String>,
    /// Payloads an unknown-outcome receive saw.
    maybe_received: BTreeSet<String>,
    pub deliveries: usize,
}

/// A payload's text.
fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

impl MailLog {
    /// Sends a fresh message from group `from` to group `to` at `db`.
    pub fn send(&mut self, db: &Database, from: (i64, GroupKey), to: (i64, GroupKey)) {
        let payload = format!("m{}", self.next);
        self.next += 1;
        let result = db.transact(&from.1, |tx| tx.send(QUEUE, &to.1, payload.clone()));
        self.sends
            .insert(payload, (from.0, to.0, status_of(&result)));
    }

    /// Receives up to `max` messages at group `group` through `db`.
    pub fn receive(&mut self, db: &Database, group: &GroupKey, max: usize) {
        let mut seen = Vec::new();
        let result = db.transact(group, |tx| {
            let got = tx.receive(QUEUE, max)?;
            seen = got.iter().map(|m| text(&m.payload)).collect();
            Ok(())
        });
        match status_of(&result) {
            Status::Ok => self.received.extend(seen),
            Status::Unknown => self.maybe_received.extend(seen),
            Status::Fail => {}
        }
    }

    /// Runs a delivery pass at `db` (it may fail under faults: nothing is lost).
    pub fn deliver(&mut self, db: &Database) -> Result<(), Error> {
        db.deliver_messages()?;
        self.deliveries += 1;
        Ok(())
    }

    /// Receives everything left in `group`'s inbox (after healing).
    pub fn drain(&mut self, db: &Database, group: &GroupKey) -> Result<(), Error> {
        let (got, _) = db.transact(group, |tx| tx.receive(QUEUE, usize::MAX))?;
        self.received.extend(got.iter().map(|m| text(&m.payload)));
        Ok(())
    }

    /// The violations, given each group's chosen log ((group, position) -> value), and
    /// how many messages the chosen log delivered.
    pub fn check(&self, chosen: &BTreeMap<(i64, u64), Vec<u8>>) -> (Vec<String>, usize) {
        let mut violations = Vec::new();
        let mut sent = BTreeSet::new();
        let mut delivered: BTreeMap<String, usize> = BTreeMap::new();
        // Per (sender, receiver): the ids delivered, in the receiver's log order.
        let mut order: BTreeMap<(String, i64), Vec<MessageId>> = BTreeMap::new();
        for ((group, _), value) in chosen {
            let Ok(entry) = LogEntry::decode(value) else {
                continue; // a no-op
            };
            for write in &entry.writes {
                match write {
                    Write::Send { payload, .. } => {
                        sent.insert(text(payload));
                    }
                    Write::Deliver { from, messages, .. } => {
                        for (id, payload) in messages {
                            *delivered.entry(text(payload)).or_default() += 1;
                            order
                                .entry((format!("{:?}", from.key), *group))
                                .or_default()
                                .push(*id);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (payload, (from, to, status)) in &self.sends {
            let chosen = sent.contains(payload);
            match (status, chosen) {
                (Status::Ok, false) => violations.push(format!(
                    "acknowledged send {payload} ({from} to {to}) is not in the chosen log"
                )),
                (Status::Fail, true) => violations.push(format!(
                    "failed send {payload} ({from} to {to}) is in the chosen log"
                )),
                _ => {}
            }
            match (chosen, delivered.get(payload).copied().unwrap_or(0)) {
                (true, 1) | (false, 0) => {}
                (true, n) => violations.push(format!(
                    "message {payload} ({from} to {to}) was delivered {n} times"
                )),
                (false, n) => violations.push(format!(
                    "message {payload} of an unchosen send was delivered {n} times"
                )),
            }
        }
        for ((from, to), ids) in &order {
            if ids.windows(2).any(|w| w[0] >= w[1]) {
                violations.push(format!(
                    "messages from {from} to group {to} arrived out of order: {ids:?}"
                ));
            }
        }
        let mut taken = BTreeSet::new();
        for payload in &self.received {
            if !taken.insert(payload) {
                violations.push(format!("message {payload} was received twice"));
            }
        }
        for payload in delivered.keys() {
            if !taken.contains(payload) && !self.maybe_received.contains(payload) {
                violations.push(format!(
                    "message {payload} was delivered but never received"
                ));
            }
        }
        (violations, delivered.len())
    }
}

fn status_of<T>(result: &Result<T, Error>) -> Status {
    match result {
        Ok(_) => Status::Ok,
        Err(Error::TooManyConflicts { .. }) => Status::Fail,
        // Anything else may have been proposed, and be chosen later.
        Err(_) => Status::Unknown,
    }
}
