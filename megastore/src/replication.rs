//! An entity group's log replicated over several replicas: a driver that runs the
//! proposer state machine (`paxos::proposer`) against the replicas' acceptors, one
//! request at a time, until a value is chosen at a position. Replicas are reached through
//! the [`Acceptor`] trait: in process, a [`Replica`] itself; across processes, a
//! replication-server client (later).
//!
//! A replica that does not answer (an error) simply gives no reply, as a lost message
//! would: a majority of the replicas is enough to choose, and fewer is reported as
//! `Error::Unavailable` after `max_rounds` attempts.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use crate::paxos::acceptor::Refusal;
use crate::paxos::proposer::{Outcome, Proposer, Reply, Request};
use crate::replica::{Replica, RootRow};
use crate::sim::Rng;
use crate::Error;

/// One replica's acceptors, as a proposer (or a replica catching up) reaches them.
pub trait Acceptor: Send + Sync {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error>;
    fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Reply, Error>;
    /// The highest position the replica knows of (applied, or holding an accepted value).
    fn highest_position(&self, root: &RootRow) -> Result<u64, Error>;
    /// The chosen value of a position the replica applied (and still keeps).
    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error>;
}

fn refused(ballot: u64, refusal: Refusal) -> Reply {
    Reply::Refused {
        ballot,
        promised: match refusal {
            Refusal::Promised(p) => p,
            // The other value holds this ballot; a position already applied is decided:
            // both send the proposer to a higher ballot (which learns the value).
            Refusal::Taken | Refusal::Applied => ballot,
        },
    }
}

impl Acceptor for Replica {
    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        Ok(match Replica::prepare(self, root, position, ballot)? {
            Ok(accepted) => Reply::Promised { ballot, accepted },
            Err(r) => refused(ballot, r),
        })
    }

    fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Reply, Error> {
        Ok(
            match Replica::accept(self, root, position, ballot, value)? {
                Ok(()) => Reply::Accepted { ballot },
                Err(r) => refused(ballot, r),
            },
        )
    }

    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        Replica::highest_position(self, root)
    }

    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        Replica::chosen_value(self, root, position)
    }
}

/// How a proposal runs.
#[derive(Debug, Clone, Copy)]
pub struct ProposeOptions {
    /// This proposer's id, unique among the group's proposers (it makes ballots unique).
    pub proposer: u32,
    /// Attempts (prepare rounds) before giving up as unavailable.
    pub max_rounds: u32,
    /// The longest random pause between attempts.
    pub max_backoff: Duration,
    /// Whether a writer starts at the position's leader with ballot 0 (one round trip
    /// when it succeeds); `false` always prepares first (for measurements).
    pub fast_path: bool,
}

impl Default for ProposeOptions {
    fn default() -> Self {
        ProposeOptions {
            proposer: 1,
            max_rounds: 20,
            max_backoff: Duration::from_millis(2),
            fast_path: true,
        }
    }
}

/// Gets a value chosen at `position` of the group at `root`: `value` if it wins, or
/// the value some other proposer got chosen first. With `leader`, starts on the fast
/// path (ballot 0 at the leader).
pub fn propose(
    replicas: &[&dyn Acceptor],
    root: &RootRow,
    position: u64,
    value: Vec<u8>,
    leader: Option<usize>,
    options: ProposeOptions,
    rng: &mut Rng,
) -> Result<Outcome, Error> {
    propose_at(replicas, root, position, value, leader, options, rng).map(|(o, _)| o)
}

/// As [`propose`], and also which replicas accepted the chosen value in the winning
/// round (the accept requests already sent when a majority answered are delivered too,
/// as they would be on a network).
pub fn propose_at(
    replicas: &[&dyn Acceptor],
    root: &RootRow,
    position: u64,
    value: Vec<u8>,
    leader: Option<usize>,
    options: ProposeOptions,
    rng: &mut Rng,
) -> Result<(Outcome, BTreeSet<usize>), Error> {
    // Patience of one tick: a tick comes only when no reply is left to wait for.
    let mut proposer = Proposer::new(options.proposer, replicas.len(), value, 1);
    let mut outbox: VecDeque<(usize, Request)> = proposer.start(leader).into();
    let mut now = 0;
    let mut rounds = 0;
    let mut accepted: Vec<(usize, u64)> = Vec::new();
    loop {
        while let Some((to, request)) = outbox.pop_front() {
            let Some(reply) = ask(replicas[to], root, position, request) else {
                continue;
            };
            if let Reply::Accepted { ballot } = reply {
                accepted.push((to, ballot));
            }
            let backoff = 1 + rng.below(4);
            let (sends, outcome) = proposer.on_reply(to, reply, backoff);
            if let Some(outcome) = outcome {
                let ballot = proposer.ballot();
                for (to, request) in outbox {
                    if matches!(request, Request::Accept { .. }) {
                        if let Some(Reply::Accepted { ballot: b }) =
                            ask(replicas[to], root, position, request)
                        {
                            accepted.push((to, b));
                        }
                    }
                }
                let by = accepted
                    .iter()
                    .filter(|(_, b)| *b == ballot)
                    .map(|(r, _)| *r)
                    .collect();
                return Ok((outcome, by));
            }
            outbox.extend(sends);
        }
        // Nothing left to hear: the attempt failed (refusals or silence). Pause at
        // random, so that dueling proposers stop colliding, and try again.
        rounds += 1;
        if rounds > options.max_rounds {
            return Err(Error::Unavailable(format!(
                "no value chosen at position {position} after {} attempts: too few replicas answer",
                options.max_rounds
            )));
        }
        let pause_micros = rng.below(options.max_backoff.as_micros().max(1) as u64);
        std::thread::sleep(Duration::from_micros(pause_micros));
        while outbox.is_empty() {
            now += 1;
            outbox.extend(proposer.on_tick(now, 1));
        }
    }
}

/// Learns the value chosen at `position`, choosing `no_op` there if nothing was
/// accepted anywhere (the slow path: a prepare adopts any accepted value).
pub fn learn(
    replicas: &[&dyn Acceptor],
    root: &RootRow,
    position: u64,
    no_op: Vec<u8>,
    options: ProposeOptions,
    rng: &mut Rng,
) -> Result<Vec<u8>, Error> {
    let Outcome::Chosen { value, .. } =
        propose(replicas, root, position, no_op, None, options, rng)?;
    Ok(value)
}

/// The chosen values of positions `from..=` the highest position a majority of the
/// replicas reports, in order: what a replica that has applied up to `from - 1` must
/// apply to be current. Each value comes from a replica that applied it, or else from
/// Paxos (which chooses `no_op` where nothing was accepted).
pub fn catch_up(
    replicas: &[&dyn Acceptor],
    root: &RootRow,
    from: u64,
    no_op: &[u8],
    options: ProposeOptions,
    rng: &mut Rng,
) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let highest = log_end(replicas, root)?;
    let mut chosen = Vec::new();
    for position in from..=highest {
        let known = replicas
            .iter()
            .find_map(|r| r.chosen_value(root, position).ok().flatten());
        let value = match known {
            Some(v) => v,
            None => learn(replicas, root, position, no_op.to_vec(), options, rng)?,
        };
        chosen.push((position, value));
    }
    Ok(chosen)
}

/// The highest position a majority of `replicas` knows of (applied, or accepted).
pub fn log_end(replicas: &[&dyn Acceptor], root: &RootRow) -> Result<u64, Error> {
    let heard: Vec<u64> = replicas
        .iter()
        .filter_map(|r| r.highest_position(root).ok())
        .collect();
    if heard.len() < replicas.len() / 2 + 1 {
        return Err(Error::Unavailable(format!(
            "{} of {} voting replicas answered; a majority is needed to find the log's end",
            heard.len(),
            replicas.len()
        )));
    }
    Ok(heard.into_iter().max().unwrap_or(0))
}

fn ask(replica: &dyn Acceptor, root: &RootRow, position: u64, request: Request) -> Option<Reply> {
    let answer = match request {
        Request::Prepare { ballot } => replica.prepare(root, position, ballot),
        Request::Accept { ballot, value } => replica.accept(root, position, ballot, &value),
    };
    match answer {
        Ok(reply) => Some(reply),
        Err(e) => {
            tracing::debug!("replica did not answer: {e}");
            None
        }
    }
}
