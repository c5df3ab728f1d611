//! Who an entity group's replicas are and how a replica reaches the others: the
//! replica types, the [`Peer`] interface (a replica's acceptors plus the two things a
//! writer tells it: apply a chosen value, and invalidate its coordinator's knowledge),
//! the [`Transport`] that finds peers, and the lock service that grants coordinator
//! leases.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bigtable::clock::Clock;
use parking_lot::{Mutex, RwLock};

use crate::paxos::proposer::Reply;
use crate::replica::{AcceptRequest, RootRow};
use crate::replication::{Acceptor, ProposeOptions};
use crate::Error;

/// What a replica does for a group (Megastore §4.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaKind {
    /// Votes, stores the log, applies it, serves current reads (has a coordinator).
    Full,
    /// Votes and stores the log; never applies, serves no reads, has no coordinator.
    Witness,
    /// Does not vote; applies chosen values and serves snapshot reads.
    ReadOnly,
}

impl ReplicaKind {
    pub fn votes(self) -> bool {
        self != ReplicaKind::ReadOnly
    }

    pub fn applies(self) -> bool {
        self != ReplicaKind::Witness
    }
}

/// One replica of the database's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Unique among the members; log entries name the next leader by it.
    pub id: u32,
    pub kind: ReplicaKind,
}

/// A replica as the others reach it.
pub trait Peer: Acceptor {
    /// [`Acceptor::accept`] of several positions (of any groups), one answer each in
    /// order; where the replica can, one fsync covers them all.
    fn accept_batch(&self, accepts: &[AcceptRequest]) -> Vec<Result<Reply, Error>> {
        accepts
            .iter()
            .map(|(root, position, ballot, value)| self.accept(root, *position, *ballot, value))
            .collect()
    }
    /// `value` is chosen at `position`: remember it, and apply it (with every earlier
    /// position this replica knows the value of).
    fn apply(&self, root: &RootRow, position: u64, value: &[u8]) -> Result<(), Error>;
    /// [`Peer::apply`] for several chosen values (of any groups), in order. Best
    /// effort: one that cannot be applied is left for catch-up, and the rest still are.
    fn apply_batch(&self, applies: &[(RootRow, u64, Vec<u8>)]) {
        for (root, position, value) in applies {
            if let Err(e) = self.apply(root, *position, value) {
                tracing::debug!("apply of position {position} deferred: {e}");
            }
        }
    }
    /// A write chose `position` without this replica: its coordinator must no longer
    /// call the group up to date.
    fn invalidate(&self, root: &RootRow, position: u64) -> Result<(), Error>;
    /// How far this replica has applied the group, durably (see
    /// `Replica::durable_applied`): the log below it may be deleted everywhere.
    fn durable_applied(&self, root: &RootRow) -> Result<u64, Error>;
    /// [`Peer::apply`] without waiting for the answer, where the transport can send
    /// and go on (over a network); here, it applies before returning.
    fn apply_in_background(self: Arc<Self>, root: RootRow, position: u64, value: Vec<u8>) {
        if let Err(e) = self.apply(&root, position, &value) {
            tracing::debug!("apply of position {position} deferred at a replica: {e}");
        }
    }
}

/// How one replica reaches the others (by index in the member list).
pub trait Transport: Send + Sync {
    /// The peer `member`, or an error if it cannot be reached at all.
    fn peer(&self, member: usize) -> Result<Arc<dyn Peer>, Error>;
}

/// A coordinator's lease: valid until `until` (clock microseconds) in lifetime `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub epoch: u64,
    pub until: i64,
}

/// The lock service that grants coordinators their leases (Chubby in the paper).
pub trait LockService: Send + Sync {
    /// Grants or renews replica `id`'s lease at time `now`. A renewal keeps the epoch; a
    /// lease granted after one was lost or revoked has a new one. `None`: refused.
    fn acquire(&self, id: u32, now: i64) -> Option<Lease>;
    /// A writer could not reach replica `id`'s coordinator: its lease is not renewed
    /// again. Returns when the current lease ends (after that, the coordinator has
    /// stopped serving), or `None` if it holds none.
    fn revoke(&self, id: u32) -> Option<i64>;
    /// Replica `id` gave its lease up (or lost it): the next one has a new epoch.
    fn release(&self, id: u32);
    /// Grants or renews replica `holder`'s lease on the background job `job` (the
    /// queue deliverer): whether `holder` holds it now. At most one replica holds a
    /// job's lease at a time; it passes on once its holder stops renewing.
    fn hold_job(&self, job: &str, holder: u32, now: i64) -> bool;
}

#[derive(Debug, Clone, Copy)]
struct Held {
    lease: Lease,
    revoked: bool,
}

/// A clock that never goes back: the process's monotonic time, in microseconds since
/// the clock was made. Leases are measured on it, so that a step of the wall clock
/// (which entry timestamps come from) can neither extend nor shorten one.
pub struct MonotonicClock {
    start: Instant,
}

impl MonotonicClock {
    pub fn new() -> Self {
        MonotonicClock {
            start: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_micros(&self) -> i64 {
        i64::try_from(self.start.elapsed().as_micros()).unwrap_or(i64::MAX)
    }
}

/// A lock service inside the process: leases of a fixed length on a shared clock
/// (a monotonic one: see [`MonotonicClock`]).
pub struct LocalLocks {
    clock: Arc<dyn Clock>,
    length_micros: i64,
    held: Mutex<HashMap<u32, Held>>,
    epochs: Mutex<u64>,
    /// Job leases: the holder and until when.
    jobs: Mutex<HashMap<String, (u32, i64)>>,
}

impl LocalLocks {
    pub fn new(clock: Arc<dyn Clock>, length: Duration) -> Self {
        LocalLocks {
            clock,
            length_micros: i64::try_from(length.as_micros()).unwrap_or(i64::MAX / 4),
            held: Mutex::new(HashMap::new()),
            epochs: Mutex::new(0),
            jobs: Mutex::new(HashMap::new()),
        }
    }

    fn new_epoch(&self) -> u64 {
        let mut epochs = self.epochs.lock();
        *epochs += 1;
        *epochs
    }
}

impl LockService for LocalLocks {
    fn acquire(&self, id: u32, now: i64) -> Option<Lease> {
        let mut held = self.held.lock();
        let until = now.saturating_add(self.length_micros);
        match held.get_mut(&id) {
            Some(h) if h.revoked && now < h.lease.until => None,
            Some(h) if !h.revoked && now < h.lease.until => {
                h.lease.until = h.lease.until.max(until);
                Some(h.lease)
            }
            _ => {
                let lease = Lease {
                    epoch: self.new_epoch(),
                    until,
                };
                held.insert(
                    id,
                    Held {
                        lease,
                        revoked: false,
                    },
                );
                Some(lease)
            }
        }
    }

    fn revoke(&self, id: u32) -> Option<i64> {
        let now = self.clock.now_micros();
        let mut held = self.held.lock();
        let h = held.get_mut(&id)?;
        if now >= h.lease.until {
            return None;
        }
        h.revoked = true;
        Some(h.lease.until)
    }

    fn release(&self, id: u32) {
        self.held.lock().remove(&id);
    }

    fn hold_job(&self, job: &str, holder: u32, now: i64) -> bool {
        let mut jobs = self.jobs.lock();
        if let Some(&(other, until)) = jobs.get(job) {
            if other != holder && now < until {
                return false;
            }
        }
        let until = now.saturating_add(self.length_micros);
        jobs.insert(job.to_string(), (holder, until));
        true
    }
}

/// Waits until a clock reads at least a time: real sleeping, or (in a simulation)
/// moving a manual clock.
pub trait Waiter: Send + Sync {
    fn wait_until(&self, clock: &dyn Clock, micros: i64);
}

/// Sleeps on the system clock.
pub struct Sleeper;

impl Waiter for Sleeper {
    fn wait_until(&self, clock: &dyn Clock, micros: i64) {
        loop {
            let left = micros.saturating_sub(clock.now_micros());
            if left < 0 {
                return;
            }
            std::thread::sleep(Duration::from_micros(left.unsigned_abs().min(10_000) + 1));
        }
    }
}

/// A database's place among the replicas of its groups.
#[derive(Clone)]
pub struct Replication {
    pub members: Vec<Member>,
    /// This replica, by index in `members`.
    pub local: usize,
    pub transport: Arc<dyn Transport>,
    pub locks: Arc<dyn LockService>,
    /// What coordinator leases are measured on (the lock service's clock); never the
    /// wall clock, which may step back.
    pub lease_clock: Arc<dyn Clock>,
    pub waiter: Arc<dyn Waiter>,
    /// `proposer` is ignored: each proposal gets a unique id.
    pub propose: ProposeOptions,
    /// Seeds the replica's randomness (back-off, proposal ids); `None`: random.
    pub seed: Option<u64>,
    /// How often the replica runs the scavenger and cleans its logs in the background
    /// (`None`: only when asked, `Database::scavenge` and `Database::clean_logs`).
    pub maintenance_every: Option<Duration>,
}

impl Replication {
    pub fn local_member(&self) -> Member {
        self.members[self.local]
    }

    /// The voting members' indexes, in member order.
    pub fn voters(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&m| self.members[m].kind.votes())
            .collect()
    }
}

/// Peers registered by index, for replicas that live in one process.
#[derive(Default)]
pub struct LocalTransport {
    peers: RwLock<Vec<Option<Arc<dyn Peer>>>>,
}

impl LocalTransport {
    pub fn register(&self, member: usize, peer: Arc<dyn Peer>) {
        let mut peers = self.peers.write();
        if peers.len() <= member {
            peers.resize_with(member + 1, || None);
        }
        peers[member] = Some(peer);
    }

    pub fn unregister(&self, member: usize) {
        if let Some(slot) = self.peers.write().get_mut(member) {
            *slot = None;
        }
    }
}

impl Transport for LocalTransport {
    fn peer(&self, member: usize) -> Result<Arc<dyn Peer>, Error> {
        self.peers
            .read()
            .get(member)
            .cloned()
            .flatten()
            .ok_or_else(|| Error::Unavailable(format!("replica {member} is not running")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bigtable::clock::ManualClock;

    #[test]
    fn a_job_lease_is_one_holders_until_it_lapses() {
        let locks = LocalLocks::new(Arc::new(ManualClock::new(0)), Duration::from_micros(100));
        assert!(locks.hold_job("deliver", 1, 0));
        assert!(!locks.hold_job("deliver", 2, 50));
        assert!(locks.hold_job("deliver", 1, 90)); // renewed until 190
        assert!(!locks.hold_job("deliver", 2, 150));
        assert!(locks.hold_job("other", 2, 150));
        assert!(locks.hold_job("deliver", 2, 190)); // lapsed: passes on
        assert!(!locks.hold_job("deliver", 1, 200));
    }
}
