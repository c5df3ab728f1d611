//! The queue deliverer: moves the messages in a group's outbox to their receivers'
//! inboxes (one transaction per receiving group and queue), then forgets them from the
//! outbox (one transaction on the sender). Exactly once comes from the receiver's
//! watermark (`queue.rs`), not from the deliverer: a crash between the two steps, or
//! two deliverers working one outbox, only repeats deliveries that are then skipped.
//!
//! In the background, a thread works the groups whose applied entries sent messages.
//! When replicated, only the full replica holding the lock service's deliverer lease
//! does; on taking the lease it first looks for every non-empty outbox, since the
//! previous holder may have stopped midway.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Core, GroupName};
use crate::queue::{self, IdentifiedPayloads, Outgoing, INBOX, OUTBOX};
use crate::replica::RootRow;
use crate::replicas::ReplicaKind;
use crate::{Error, GroupKey};

/// The lock service's name for the deliverer's lease.
const DELIVERER_JOB: &str = "queue-deliverer";
/// Messages read from an outbox per round.
const ROUND: usize = 1000;
/// How often an idle deliverer renews its lease and retries failed groups.
const IDLE: Duration = Duration::from_millis(500);
/// Receiving groups delivered to at once (each transaction waits on replication).
const DELIVERY_THREADS: usize = 8;

/// Outboxes read: per sending group, its queues' messages.
type Outboxed = Vec<(RootRow, Vec<(String, Vec<Outgoing>)>)>;

/// What one receiving group gets in a pass: per queue and sender, the messages.
struct Receiver {
    group: GroupKey,
    batches: Vec<(String, GroupKey, IdentifiedPayloads)>,
}

/// One queue's backlog across all groups (as of the newest cells on this replica).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub queue: String,
    /// Sent (committed) and not yet in an inbox.
    pub in_transit: u64,
    /// In an inbox, not yet received.
    pub in_inboxes: u64,
    /// The send timestamp of the oldest message of either kind (microseconds on the
    /// clock entry timestamps come from), if any.
    pub oldest_sent: Option<i64>,
    /// How long ago that was, on this replica's clock.
    pub oldest_age: Option<Duration>,
}

/// Groups whose outbox may hold messages, for the background deliverer.
pub(super) struct Outboxes {
    /// Whether a background deliverer runs (otherwise nothing is kept).
    enabled: bool,
    state: Mutex<OutboxesState>,
    changed: Condvar,
    /// Signalled when the deliverer finishes a pass.
    passed: Condvar,
}

#[derive(Default)]
struct OutboxesState {
    pending: BTreeSet<RootRow>,
    /// Groups whose delivery failed, retried after the next wait.
    failed: BTreeSet<RootRow>,
    /// The deliverer is working on groups it took.
    busy: bool,
    shutdown: bool,
}

impl Outboxes {
    pub(super) fn new(enabled: bool) -> Self {
        Outboxes {
            enabled,
            state: Mutex::default(),
            changed: Condvar::new(),
            passed: Condvar::new(),
        }
    }

    /// An entry that sends messages was applied to the group.
    pub(super) fn add(&self, root: &RootRow) {
        if !self.enabled {
            return;
        }
        let mut state = self.state.lock();
        if state.pending.insert(root.clone()) {
            self.changed.notify_one();
        }
    }

    /// The pending groups and the failed ones (waiting up to `idle` for a pending
    /// one); `None` once shut down.
    fn take(&self, idle: Duration) -> Option<BTreeSet<RootRow>> {
        let mut state = self.state.lock();
        state.busy = false;
        self.passed.notify_all();
        if state.pending.is_empty() && !state.shutdown {
            self.changed.wait_for(&mut state, idle);
        }
        if state.shutdown {
            return None;
        }
        state.busy = true;
        let mut roots = std::mem::take(&mut state.pending);
        roots.append(&mut state.failed);
        Some(roots)
    }

    fn failed(&self, root: RootRow) {
        self.state.lock().failed.insert(root);
    }

    /// Blocks until the deliverer has nothing pending, nothing failed and is not
    /// working, or `timeout` passes; whether it got there.
    pub(super) fn wait_until_settled(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            if state.pending.is_empty() && state.failed.is_empty() && !state.busy {
                return true;
            }
            if self.passed.wait_until(&mut state, deadline).timed_out() {
                return false;
            }
        }
    }

    pub(super) fn shut_down(&self) {
        self.state.lock().shutdown = true;
        self.changed.notify_all();
    }
}

impl Core {
    /// The background deliverer's loop, until [`Outboxes::shut_down`].
    pub(super) fn run_deliverer(&self) {
        let mut holding = false;
        let mut renewed = std::time::Instant::now();
        while let Some(mut roots) = self.outboxes.take(IDLE) {
            if self.current.read().1.queues.is_empty() {
                holding = false;
                continue; // no queue, no mail: no lease to hold either
            }
            // Renewed at most once per idle period: a busy queue costs the lock
            // service nothing more.
            if !holding || renewed.elapsed() >= IDLE {
                renewed = std::time::Instant::now();
                if !self.holds_deliverer_lease() {
                    holding = false;
                    continue; // the holder delivers these
                }
            }
            if !holding {
                holding = true;
                match self.groups_with_mail() {
                    Ok(found) => roots.extend(found),
                    Err(e) => {
                        tracing::warn!("looking for undelivered messages failed: {e}");
                        holding = false;
                    }
                }
            }
            let roots: Vec<RootRow> = roots.into_iter().collect();
            if let Err(e) = self.deliver_from(&roots, DELIVERY_THREADS) {
                tracing::warn!("delivering queue messages failed (retried): {e}");
                for root in roots {
                    self.outboxes.failed(root);
                }
            }
        }
    }

    fn holds_deliverer_lease(&self) -> bool {
        match self.replication() {
            None => true,
            Some(r) => {
                let me = r.local_member();
                me.kind == ReplicaKind::Full
                    && r.locks
                        .hold_job(DELIVERER_JOB, me.id, r.lease_clock.now_micros())
            }
        }
    }

    /// The root rows of every group with a message in an outbox (on this replica).
    pub(super) fn groups_with_mail(&self) -> Result<Vec<RootRow>, Error> {
        let schema = self.current.read().1.clone();
        if schema.queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut roots = Vec::new();
        for table in self.root_tables() {
            for sender in queue::senders_with_mail(self.engine(), &table)? {
                roots.push(self.root_row(&sender)?);
            }
        }
        roots.sort();
        roots.dedup();
        Ok(roots)
    }

    /// Delivers every message in the outboxes of the groups at `roots`, as of their
    /// applied positions here, then forgets them there: one transaction per receiving
    /// group (receivers in parallel), then one per sender. How many messages it put
    /// into inboxes (one delivered before is not counted again). On an error, what
    /// was delivered stays delivered, and a later pass forgets it. `threads`: receivers
    /// delivered to at once (1: in this thread, one after another).
    pub(super) fn deliver_from(&self, roots: &[RootRow], threads: usize) -> Result<u64, Error> {
        let mut roots = roots.to_vec();
        let mut delivered = 0;
        while !roots.is_empty() {
            let (outboxes, full) = self.read_outboxes(&roots)?;
            let mut receivers: BTreeMap<RootRow, Receiver> = BTreeMap::new();
            for (queue, outgoing) in outboxes.iter().flat_map(|(_, o)| o) {
                for (to, messages) in by_receiver(outgoing) {
                    let to_root = self.root_row(&to)?;
                    let receiver = receivers.entry(to_root).or_insert_with(|| Receiver {
                        group: to.clone(),
                        batches: Vec::new(),
                    });
                    receiver
                        .batches
                        .push((queue.clone(), outgoing[0].from.clone(), messages));
                }
            }
            delivered += self.deliver_to(receivers, threads)?;
            for (root, queues) in &outboxes {
                let from = &queues[0].1[0].from;
                self.transact(GroupName::from(from), root, |tx| {
                    for (queue, outgoing) in queues {
                        tx.forget(queue, outgoing.iter().map(|o| o.id).collect());
                    }
                    Ok(())
                })?;
            }
            roots = full;
        }
        Ok(delivered)
    }

    /// The non-empty outboxes of `roots` (up to [`ROUND`] messages each), by group and
    /// queue, and the groups with more than that.
    fn read_outboxes(&self, roots: &[RootRow]) -> Result<(Outboxed, Vec<RootRow>), Error> {
        let queues = self.current.read().1.queues.clone();
        let (mut outboxes, mut full) = (Vec::new(), Vec::new());
        for root in roots {
            let state = self.roll_forward(root)?;
            let mut mine = Vec::new();
            for queue in &queues {
                let outgoing = queue::read_mailbox::<Outgoing>(
                    self.engine(),
                    &root.table,
                    &root.row,
                    queue,
                    Some(state.meta.applied_timestamp),
                    ROUND,
                )?;
                if outgoing.len() >= ROUND && !full.contains(root) {
                    full.push(root.clone());
                }
                if !outgoing.is_empty() {
                    mine.push((queue.clone(), outgoing));
                }
            }
            if !mine.is_empty() {
                outboxes.push((root.clone(), mine));
            }
        }
        Ok((outboxes, full))
    }

    /// One delivery transaction per receiving group, `threads` groups at a time.
    fn deliver_to(
        &self,
        receivers: BTreeMap<RootRow, Receiver>,
        threads: usize,
    ) -> Result<u64, Error> {
        let receivers: Vec<(RootRow, Receiver)> = receivers.into_iter().collect();
        if threads <= 1 {
            return self.deliver_each(&receivers);
        }
        let per_thread = receivers.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let threads: Vec<_> = receivers
                .chunks(per_thread)
                .map(|chunk| s.spawn(move || self.deliver_each(chunk)))
                .collect();
            let mut delivered = 0;
            for thread in threads {
                delivered += thread
                    .join()
                    .map_err(|_| Error::Unavailable("a delivery thread panicked".into()))??;
            }
            Ok(delivered)
        })
    }

    fn deliver_each(&self, receivers: &[(RootRow, Receiver)]) -> Result<u64, Error> {
        let mut delivered = 0;
        for (root, receiver) in receivers {
            let (count, _) = self.transact(GroupName::from(&receiver.group), root, |tx| {
                let mut count = 0;
                for (queue, from, messages) in &receiver.batches {
                    count += tx.deliver(queue, from, messages)?;
                }
                Ok(count)
            })?;
            delivered += count as u64;
        }
        Ok(delivered)
    }

    /// Each queue's backlog, from every mailbox on this replica.
    pub(super) fn queue_stats(&self) -> Result<Vec<QueueStats>, Error> {
        let schema = self.current.read().1.clone();
        let mut stats: BTreeMap<String, QueueStats> = schema
            .queues
            .iter()
            .map(|q| {
                let empty = QueueStats {
                    queue: q.clone(),
                    in_transit: 0,
                    in_inboxes: 0,
                    oldest_sent: None,
                    oldest_age: None,
                };
                (q.clone(), empty)
            })
            .collect();
        for table in self.root_tables() {
            for kind in [OUTBOX, INBOX] {
                queue::each_message(self.engine(), &table, kind, |name, id| {
                    if let Some(s) = stats.get_mut(name) {
                        match kind {
                            OUTBOX => s.in_transit += 1,
                            _ => s.in_inboxes += 1,
                        }
                        s.oldest_sent =
                            Some(s.oldest_sent.map_or(id.timestamp, |t| t.min(id.timestamp)));
                    }
                })?;
            }
        }
        let now = self.options.clock.now_micros();
        for s in stats.values_mut() {
            s.oldest_age = s
                .oldest_sent
                .map(|sent| Duration::from_micros(now.saturating_sub(sent).max(0) as u64));
        }
        Ok(stats.into_values().collect())
    }
}

/// The outbox's messages grouped by receiver, each group's in id order.
fn by_receiver(outgoing: &[Outgoing]) -> Vec<(GroupKey, IdentifiedPayloads)> {
    let mut groups: Vec<(GroupKey, IdentifiedPayloads)> = Vec::new();
    for o in outgoing {
        match groups.iter_mut().find(|(to, _)| *to == o.to) {
            Some((_, messages)) => messages.push((o.id, o.payload.clone())),
            None => groups.push((o.to.clone(), vec![(o.id, o.payload.clone())])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use std::sync::Arc;

    use bigtable::fs::FaultyFs;
    use bigtable::{Engine, EngineOptions};

    use crate::queue::{read_head, read_mailbox, Outgoing, INBOX, OUTBOX};
    use crate::{Database, DatabaseOptions, GroupKey, Value};

    const SCHEMA: &str = "
    CREATE SCHEMA Q;
    CREATE TABLE G { required int64 id; } PRIMARY KEY(id), ENTITY GROUP ROOT;
    CREATE QUEUE Jobs;
    ";

    fn group(id: i64) -> GroupKey {
        GroupKey::new("G", vec![Value::Int64(id)])
    }

    #[test]
    fn a_delivery_of_messages_delivered_before_puts_nothing() {
        let engine = Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap();
        let options = DatabaseOptions {
            deliver_in_background: false,
            ..DatabaseOptions::default()
        };
        let db = Database::open_with_schema(Arc::new(engine), SCHEMA, options).unwrap();
        let (a, b) = (group(1), group(2));
        db.transact(&a, |tx| {
            tx.send("Jobs", &b, b"one".to_vec())?;
            tx.send("Jobs", &b, b"two".to_vec())
        })
        .unwrap();
        // What two deliverers would both read from a's outbox.
        let root = db.root_row(&a).unwrap();
        let outgoing =
            read_mailbox::<Outgoing>(db.core.engine(), &root.table, &root.row, "Jobs", None, 10)
                .unwrap();
        let messages: Vec<_> = outgoing.iter().map(|o| (o.id, o.payload.clone())).collect();
        assert_eq!(messages.len(), 2);
        let deliver = |batch: &[_]| {
            db.transact(&b, |tx| tx.deliver("Jobs", &a, batch))
                .unwrap()
                .0
        };
        assert_eq!(deliver(&messages), 2);
        assert_eq!(deliver(&messages), 0);
        assert_eq!(deliver(&messages[1..]), 0);
        // The outbox still holds both (nothing forgot them): a full pass delivers
        // none again, and forgets them.
        assert_eq!(db.deliver_messages().unwrap(), 0);
        let stats = db.queue_stats().unwrap();
        assert_eq!((stats[0].in_transit, stats[0].in_inboxes), (0, 2));
        let got = db.transact(&b, |tx| tx.receive("Jobs", 10)).unwrap().0;
        let payloads: Vec<_> = got.iter().map(|m| m.payload.clone()).collect();
        assert_eq!(payloads, [b"one".to_vec(), b"two".to_vec()]);
        // Both mailboxes' heads are past what left them: reads start there.
        let engine = db.core.engine();
        let b_root = db.root_row(&b).unwrap();
        let inbox_head = read_head(engine, &b_root.table, &b_root.row, "Jobs", INBOX, None);
        assert_eq!(inbox_head.unwrap(), Some(got[1].slot));
        let outbox_head = read_head(engine, &root.table, &root.row, "Jobs", OUTBOX, None);
        assert_eq!(outbox_head.unwrap(), Some(outgoing[1].id));
    }
}
