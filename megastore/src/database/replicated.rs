//! An entity group's log over several replicas (Megastore §4.4): how a writer gets its
//! entry chosen and published, how a current read makes the local replica current, and
//! what this replica does when a peer tells it a value is chosen or invalidates its
//! coordinator.
//!
//! The rule that keeps current reads correct: a value is applied anywhere only after
//! every full replica has accepted it or has had its coordinator invalidated at its
//! position. So a replica whose coordinator calls a group up to date holds every value
//! that is visible anywhere, and catching up the positions it holds is enough.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::log::LogEntry;
use crate::paxos::acceptor::AcceptorState;
use crate::paxos::proposer::{Outcome, Reply};
use crate::replica::{AcceptRequest, GroupState, RootRow};
use crate::replicas::{Peer, ReplicaKind, Replication};
use crate::replication::{accept_reply, propose_at, Acceptor, ProposeOptions, Voter};
use crate::Error;

use super::group::Learned;
use super::Core;

/// A coordinator renews its lease this long before it ends.
const LEASE_MARGIN_MICROS: i64 = 100_000;

/// What became of a proposal of this transaction's entry.
pub(super) enum Proposal {
    Committed,
    /// Another value was chosen at the position.
    Lost,
}

/// A peer that cannot be reached: it answers nothing.
struct Unreachable(Error);

impl Unreachable {
    fn err(&self) -> Error {
        Error::Unavailable(self.0.to_string())
    }
}

impl Acceptor for Unreachable {
    fn prepare(&self, _: &RootRow, _: u64, _: u64) -> Result<Reply, Error> {
        Err(self.err())
    }
    fn accept(&self, _: &RootRow, _: u64, _: u64, _: &[u8]) -> Result<Reply, Error> {
        Err(self.err())
    }
    fn highest_position(&self, _: &RootRow) -> Result<u64, Error> {
        Err(self.err())
    }
    fn chosen_value(&self, _: &RootRow, _: u64) -> Result<Option<Vec<u8>>, Error> {
        Err(self.err())
    }
}

impl Peer for Unreachable {
    fn apply(&self, _: &RootRow, _: u64, _: &[u8]) -> Result<(), Error> {
        Err(self.err())
    }
    fn invalidate(&self, _: &RootRow, _: u64) -> Result<(), Error> {
        Err(self.err())
    }
    fn durable_applied(&self, _: &RootRow) -> Result<u64, Error> {
        Err(self.err())
    }
}

/// The other members as this replica reaches them right now (`None` at the local one).
struct Peers<'a> {
    config: &'a Replication,
    remote: Vec<Option<Arc<dyn Peer>>>,
}

impl<'a> Peers<'a> {
    fn new(config: &'a Replication) -> Self {
        let remote = (0..config.members.len())
            .map(|m| {
                (m != config.local).then(|| {
                    config
                        .transport
                        .peer(m)
                        .unwrap_or_else(|e| Arc::new(Unreachable(e)) as Arc<dyn Peer>)
                })
            })
            .collect();
        Peers { config, remote }
    }

    fn acceptor<'s>(&'s self, core: &'s Core, member: usize) -> &'s dyn Acceptor {
        match &self.remote[member] {
            Some(peer) => peer.as_ref(),
            None => core,
        }
    }

    /// The voters, in voter order, and the member index of each. A write waits for the
    /// full ones (each must accept or be invalidated), except suspects (whose leases
    /// it revokes instead: they get a probe, or nothing while one is out), and not for
    /// witnesses.
    fn voters<'s>(&'s self, core: &'s Core) -> (Vec<Voter<'s>>, Vec<usize>) {
        let members = self.config.voters();
        let now = core.now();
        let views = members
            .iter()
            .map(|&m| match &self.remote[m] {
                Some(peer) if core.suspects.is_suspect(m, now) => Voter::Away {
                    acceptor: match core.suspects.probe(m, peer.clone()) {
                        Some(probe) => Arc::new(probe),
                        None => Arc::new(Unreachable(Error::Unavailable("suspect".into()))),
                    },
                    awaited: false,
                },
                Some(peer) => Voter::Away {
                    acceptor: peer.clone(),
                    awaited: self.config.members[m].kind == ReplicaKind::Full,
                },
                None => Voter::Here(core),
            })
            .collect();
        (views, members)
    }
}

impl Core {
    pub(super) fn replication(&self) -> Option<&Replication> {
        self.options.replication.as_ref()
    }

    fn local_kind(&self) -> ReplicaKind {
        self.replication()
            .map_or(ReplicaKind::Full, |r| r.local_member().kind)
    }

    /// Whether this replica alone decides (no replication, or it is the only voter):
    /// then an accepted value is a chosen one.
    pub(super) fn sole_voter(&self) -> bool {
        self.replication().is_none_or(|r| r.voters() == [r.local])
    }

    /// Now, on the clock leases are measured on.
    fn now(&self) -> i64 {
        match self.replication() {
            Some(config) => config.lease_clock.now_micros(),
            None => self.options.clock.now_micros(),
        }
    }

    fn propose_options(&self, config: &Replication) -> ProposeOptions {
        // Unique per proposal: the member id in the top byte, then a counter.
        let serial = self.proposers.fetch_add(1, Ordering::Relaxed) & 0x00ff_ffff;
        ProposeOptions {
            proposer: (config.local_member().id << 24) | serial,
            ..config.propose
        }
    }

    /// Whether the local coordinator calls `root`'s group up to date, and its epoch,
    /// renewing its lease first if it runs low.
    fn coordinator_check(&self, root: &RootRow) -> (bool, u64) {
        let Some(config) = self.replication() else {
            return (false, 0);
        };
        if config.local_member().kind != ReplicaKind::Full {
            return (false, 0);
        }
        let now = self.now();
        let mut coordinator = self.coordinator.lock();
        let renew = coordinator
            .lease_expiry()
            .is_none_or(|until| (until as i64).saturating_sub(now) < LEASE_MARGIN_MICROS);
        if renew {
            match config.locks.acquire(config.local_member().id, now) {
                Some(lease) => {
                    if lease.epoch != coordinator.epoch() {
                        coordinator.lease_lost();
                    }
                    coordinator.lease_granted(lease.until.max(0) as u64, lease.epoch);
                }
                None => coordinator.lease_lost(),
            }
        }
        let tick = now.max(0) as u64;
        (coordinator.is_up_to_date(root, tick), coordinator.epoch())
    }

    /// The coordinator gives its lease up: every group is out of date here until
    /// readers validate them again in a new lifetime.
    pub(super) fn drop_lease(&self) {
        if let Some(config) = self.replication() {
            self.coordinator.lock().lease_lost();
            config.locks.release(config.local_member().id);
        }
    }

    /// Makes the local replica current for `root`'s group (a current read's first
    /// step): if the coordinator calls it up to date, through the positions it holds;
    /// otherwise through the highest position a majority of voters reports. Positions
    /// whose values it does not know come from a peer that knows them, or from Paxos
    /// (a no-op where nothing was accepted).
    pub(super) fn make_current(&self, root: &RootRow) -> Result<GroupState, Error> {
        self.catch_up(root, false)
    }

    /// As [`Core::make_current`]; `majority` skips the coordinator (the scavenger's
    /// way of finishing every position a majority knows of).
    fn catch_up(&self, root: &RootRow, majority: bool) -> Result<GroupState, Error> {
        let Some(config) = self.replication().filter(|_| !self.sole_voter()) else {
            return self.roll_forward(root);
        };
        let (checked, epoch) = self.coordinator_check(root);
        let up_to_date = checked && !majority;
        let mut state = self.roll_forward(root)?;
        let target = if up_to_date {
            state.last_accepted()
        } else {
            self.log_end(&Peers::new(config), root)?
        };
        if target > state.meta.applied {
            let peers = Peers::new(config);
            for position in state.meta.applied + 1..=target {
                let known = |s: &GroupState| {
                    s.meta.applied >= position || s.chosen_at(position, false).is_some()
                };
                if known(&state) {
                    continue;
                }
                if self.proposing.wait_for(root, position) {
                    state = self.replica.group_state(root)?;
                    if known(&state) {
                        continue;
                    }
                }
                let value = self.find_chosen(&peers, root, position)?;
                self.replica.mark_chosen(root, position, &value)?;
            }
            state = self.roll_forward(root)?;
        }
        // Validate only what was reached: every position up to the target.
        if !up_to_date
            && config.local_member().kind == ReplicaKind::Full
            && state.meta.applied >= target
        {
            let tick = self.now().max(0) as u64;
            self.coordinator
                .lock()
                .validate(root, state.meta.applied, epoch, tick);
        }
        Ok(state)
    }

    /// The scavenger: finishes every position of every group that holds an accepted
    /// value here beyond what this replica applied (an abandoned write, whose outcome
    /// nobody learned), by catching up through a majority, which runs Paxos where no
    /// replica knows the chosen value (choosing a no-op if nothing was accepted).
    /// Returns how many groups it caught up.
    pub(super) fn scavenge(&self) -> Result<usize, Error> {
        let mut finished = 0;
        for root in self.group_roots()? {
            let state = self.replica.group_state(&root)?;
            if state.last_accepted() > state.meta.applied {
                self.catch_up(&root, true)?;
                finished += 1;
            }
        }
        Ok(finished)
    }

    /// Deletes, in every group, the log positions that every replica has durably
    /// applied, keeping `log_retention` more (and those the global indexes still need).
    /// A replica that does not answer keeps every group's log as it is: it may need
    /// those positions to catch up. Returns how many groups it cleaned.
    pub(super) fn clean_logs(&self) -> Result<usize, Error> {
        let mut cleaned = 0;
        for root in self.group_roots()? {
            let state = self.replica.group_state(&root)?;
            if self.cleanup_through(&state, u64::MAX).is_none() {
                continue; // too little to clean: ask no one
            }
            let bound = match self.replication() {
                Some(config) if !self.sole_voter() => {
                    match self.durable_applied_elsewhere(config, &root) {
                        Some(applied) => applied,
                        None => continue,
                    }
                }
                _ => u64::MAX,
            };
            if self.clean_log_below(&root, &state, bound)? {
                cleaned += 1;
            }
        }
        Ok(cleaned)
    }

    /// The lowest position the other replicas report as durably applied in the group
    /// at `root`; `None` if one does not answer.
    fn durable_applied_elsewhere(&self, config: &Replication, root: &RootRow) -> Option<u64> {
        let peers = Peers::new(config);
        let mut lowest = u64::MAX;
        for peer in peers.remote.iter().flatten() {
            lowest = lowest.min(peer.durable_applied(root).ok()?);
        }
        Some(lowest)
    }

    /// The root row of every entity group of the current schema, and the catalog's.
    fn group_roots(&self) -> Result<Vec<RootRow>, Error> {
        let schema = self.current.read().1.clone();
        let mut roots = vec![self.catalog_root()];
        for root_table in schema
            .tables
            .iter()
            .filter(|t| t.role == crate::schema::GroupRole::Root)
        {
            let table = crate::layout::data_table(
                &schema,
                crate::keys::storage_table(&schema, &root_table.name),
            );
            for row in self.group_rows(&table, true)? {
                roots.push(RootRow {
                    table: table.clone(),
                    row: row.key,
                });
            }
        }
        Ok(roots)
    }

    /// The highest position a majority of voters knows of.
    fn log_end(&self, peers: &Peers<'_>, root: &RootRow) -> Result<u64, Error> {
        let (voters, _) = peers.voters(self);
        crate::replication::log_end(&voters, root)
    }

    /// The value chosen at `position`: from a replica that knows it, or else by
    /// running Paxos for it (which chooses a no-op if nothing was accepted) and
    /// invalidating the full replicas that did not accept what it chose.
    fn find_chosen(
        &self,
        peers: &Peers<'_>,
        root: &RootRow,
        position: u64,
    ) -> Result<Vec<u8>, Error> {
        let known = (0..peers.config.members.len())
            .filter(|&m| m != peers.config.local)
            .find_map(|m| {
                peers
                    .acceptor(self, m)
                    .chosen_value(root, position)
                    .ok()
                    .flatten()
            });
        if let Some(value) = known {
            return Ok(value);
        }
        let no_op = LogEntry {
            timestamp: 0,
            schema_version: self.current.read().0,
            next_leader: self.next_leader(peers.config),
            proposal: self.rng.lock().next_u64(),
            writes: Vec::new(),
        };
        let (Outcome::Chosen { value, .. }, _) =
            self.choose(peers, root, position, no_op.encode(), None)?;
        Ok(value)
    }

    /// Runs Paxos at `position` for `value` (from `leader` on the fast path), then
    /// invalidates the full replicas that did not accept what was chosen. Also whether
    /// this replica was heard to accept the chosen value.
    fn choose(
        &self,
        peers: &Peers<'_>,
        root: &RootRow,
        position: u64,
        value: Vec<u8>,
        leader: Option<usize>,
    ) -> Result<(Outcome, bool), Error> {
        let (voters, members) = peers.voters(self);
        let options = self.propose_options(peers.config);
        let mut rng = crate::sim::Rng::new(self.rng.lock().next_u64());
        let (outcome, accepted) =
            propose_at(&voters, root, position, value, leader, options, &mut rng)?;
        let accepted: BTreeSet<usize> = accepted.iter().map(|&v| members[v]).collect();
        for &m in &accepted {
            self.suspects.clear(m);
        }
        self.invalidate_others(peers, root, position, &accepted);
        Ok((outcome, accepted.contains(&peers.config.local)))
    }

    /// The member this replica nominates to lead the next position: itself if it
    /// votes, else the first voter.
    pub(super) fn next_leader(&self, config: &Replication) -> u32 {
        let local = config.local_member();
        if local.kind.votes() {
            return local.id;
        }
        config
            .voters()
            .first()
            .map_or(local.id, |&m| config.members[m].id)
    }

    /// The voter index of the leader of the position after `state`'s applied one: the
    /// member its entry nominated (the first voter for the first position).
    fn leader_after(&self, config: &Replication, state: &GroupState) -> Option<usize> {
        let voters = config.voters();
        if state.meta.applied == 0 {
            return Some(0);
        }
        let entry = LogEntry::decode(state.value_at(state.meta.applied)?).ok()?;
        voters
            .iter()
            .position(|&m| config.members[m].id == entry.next_leader)
    }

    /// Proposes `value` (this transaction's entry) at `position`, after the local
    /// replica was made current at `state`. Whatever is chosen there is published
    /// (invalidations, then applied at every replica that can be reached) before this
    /// returns.
    pub(super) fn propose_entry(
        &self,
        root: &RootRow,
        state: &GroupState,
        position: u64,
        value: Vec<u8>,
    ) -> Result<Proposal, Error> {
        let config = self
            .replication()
            .ok_or_else(|| Error::Invalid("not replicated".into()))?;
        let peers = Peers::new(config);
        let leader = if config.propose.fast_path {
            self.leader_after(config, state)
        } else {
            None
        };
        let proposing = self.proposing.mark(root, position);
        let (Outcome::Chosen { value, ours }, accepted_here) =
            self.choose(&peers, root, position, value, leader)?;
        // Accepted here, the chosen value is this replica's own: it applies it on the
        // state it rolled forward to before proposing, without reading that again.
        let hint = accepted_here.then(|| {
            let mut known = state.clone();
            known.log.insert(position, AcceptorState::chosen(&value));
            known
        });
        self.apply_everywhere(&peers, root, position, &value, hint)?;
        drop(proposing);
        Ok(if ours {
            Proposal::Committed
        } else {
            Proposal::Lost
        })
    }

    /// Invalidates, at `position`, the coordinator of every full replica outside
    /// `accepted`. One that cannot be reached (or is suspect: recently could not be)
    /// has its lease revoked, and this waits until that lease has ended (its
    /// coordinator has then stopped serving).
    fn invalidate_others(
        &self,
        peers: &Peers<'_>,
        root: &RootRow,
        position: u64,
        accepted: &BTreeSet<usize>,
    ) {
        let config = peers.config;
        for (m, member) in config.members.iter().enumerate() {
            if member.kind != ReplicaKind::Full || accepted.contains(&m) {
                continue;
            }
            let done = match &peers.remote[m] {
                None => self.invalidate(root, position),
                Some(_) if self.suspects.is_suspect(m, self.now()) => {
                    Err(Error::Unavailable("suspect".into()))
                }
                Some(peer) => peer.invalidate(root, position),
            };
            if let Err(e) = done {
                tracing::debug!(
                    "replica {} not invalidated ({e}): waiting out its lease",
                    member.id
                );
                if let Some(until) = config.locks.revoke(member.id) {
                    config
                        .waiter
                        .wait_until(config.lease_clock.as_ref(), until.saturating_add(1));
                }
                // From now: suspicion that began before waiting out a lease as long as
                // its lapse would be over before the next write.
                self.suspects.suspect(m, self.now());
            }
        }
    }

    /// Applies the chosen `value` at `position` here (from `hint`, the group's state
    /// as known here, if given), then at every other replica that answers (best effort:
    /// a replica that misses it catches up later).
    fn apply_everywhere(
        &self,
        peers: &Peers<'_>,
        root: &RootRow,
        position: u64,
        value: &[u8],
        hint: Option<GroupState>,
    ) -> Result<(), Error> {
        self.roll_forward_from(root, &[(position, value)], hint)?;
        for peer in peers.remote.iter().flatten() {
            if peers.config.propose.parallel {
                // Nothing waits for it: a replica that misses it catches up later.
                peer.clone()
                    .apply_in_background(root.clone(), position, value.to_vec());
            } else if let Err(e) = peer.apply(root, position, value) {
                tracing::debug!("apply of position {position} deferred at a replica: {e}");
            }
        }
        Ok(())
    }

    /// This replica learns that `value` is chosen at `position`, and applies it with
    /// every earlier position it knows the value of.
    pub(super) fn apply_chosen(
        &self,
        root: &RootRow,
        position: u64,
        value: &[u8],
    ) -> Result<(), Error> {
        self.learn_and_roll_forward(root, &[(position, value)])?;
        Ok(())
    }

    fn invalidate(&self, root: &RootRow, position: u64) -> Result<(), Error> {
        if self.local_kind() == ReplicaKind::Full {
            self.coordinator.lock().invalidate(root, position);
        }
        Ok(())
    }
}

impl Acceptor for Core {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        Acceptor::prepare(&self.replica, root, position, ballot)
    }

    fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Reply, Error> {
        Acceptor::accept(&self.replica, root, position, ballot, value)
    }

    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        self.replica.highest_position(root)
    }

    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        self.replica.chosen_value(root, position)
    }
}

impl Peer for Core {
    fn accept_batch(&self, accepts: &[AcceptRequest]) -> Vec<Result<Reply, Error>> {
        let judged = self.replica.accept_many(accepts);
        judged
            .into_iter()
            .zip(accepts)
            .map(|(judged, (_, _, ballot, _))| Ok(accept_reply(*ballot, judged?)))
            .collect()
    }

    fn apply(&self, root: &RootRow, position: u64, value: &[u8]) -> Result<(), Error> {
        self.apply_chosen(root, position, value)
    }

    /// Rolls each group forward once, with what the batch says is chosen in it.
    fn apply_batch(&self, applies: &[(RootRow, u64, Vec<u8>)]) {
        let mut groups: Vec<(&RootRow, Vec<Learned<'_>>)> = Vec::new();
        for (root, position, value) in applies {
            let learned = (*position, value.as_slice());
            match groups.iter_mut().find(|(r, _)| *r == root) {
                Some((_, group)) => group.push(learned),
                None => groups.push((root, vec![learned])),
            }
        }
        for (root, learned) in groups {
            if let Err(e) = self.learn_and_roll_forward(root, &learned) {
                tracing::debug!("apply deferred: {e}");
            }
        }
    }

    fn invalidate(&self, root: &RootRow, position: u64) -> Result<(), Error> {
        Core::invalidate(self, root, position)
    }

    fn durable_applied(&self, root: &RootRow) -> Result<u64, Error> {
        self.replica.durable_applied(root)
    }
}
