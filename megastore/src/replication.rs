//! An entity group's log replicated over several replicas: a driver that runs the
//! proposer state machine (`paxos::proposer`) against the replicas' acceptors until a
//! value is chosen at a position. The requests the proposer has ready go out together
//! (in parallel, one thread each, unless `ProposeOptions::parallel` is off), and their
//! replies are fed back in the order they were sent. Replicas are reached through
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
    /// Whether requests ready together are sent in parallel; `false` sends them one
    /// after another (the simulator, which must stay single-threaded).
    pub parallel: bool,
}

impl Default for ProposeOptions {
    fn default() -> Self {
        ProposeOptions {
            proposer: 1,
            max_rounds: 20,
            max_backoff: Duration::from_millis(2),
            fast_path: true,
            parallel: true,
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
        while !outbox.is_empty() {
            let sent: Vec<(usize, Request)> = outbox.drain(..).collect();
            let mut outcome = None;
            for (to, reply) in ask_all(replicas, root, position, sent, options.parallel) {
                let Some(reply) = reply else {
                    continue;
                };
                if let Reply::Accepted { ballot } = reply {
                    accepted.push((to, ballot));
                }
                if outcome.is_none() {
                    let backoff = 1 + rng.below(4);
                    let (sends, decided) = proposer.on_reply(to, reply, backoff);
                    outbox.extend(sends);
                    outcome = decided;
                }
            }
            if let Some(outcome) = outcome {
                // The accepts it has ready are delivered too, as on a network.
                let pending: Vec<(usize, Request)> = outbox
                    .drain(..)
                    .filter(|(_, r)| matches!(r, Request::Accept { .. }))
                    .collect();
                for (to, reply) in ask_all(replicas, root, position, pending, options.parallel) {
                    if let Some(Reply::Accepted { ballot }) = reply {
                        accepted.push((to, ballot));
                    }
                }
                let ballot = proposer.ballot();
                let by = accepted
                    .iter()
                    .filter(|(_, b)| *b == ballot)
                    .map(|(r, _)| *r)
                    .collect();
                return Ok((outcome, by));
            }
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

/// Sends `requests` and returns each one's reply (`None`: no answer), in the order
/// sent; in parallel if `parallel`.
fn ask_all(
    replicas: &[&dyn Acceptor],
    root: &RootRow,
    position: u64,
    requests: Vec<(usize, Request)>,
    parallel: bool,
) -> Vec<(usize, Option<Reply>)> {
    let replies = each(&requests, parallel, |(to, request)| {
        ask(replicas[*to], root, position, request.clone())
    });
    requests
        .into_iter()
        .map(|(to, _)| to)
        .zip(replies)
        .collect()
}

/// `f` of every item, in order; in parallel (one thread each, the first on this
/// thread) if `parallel`. A call that panics gives `None`, as a peer that never
/// answered.
fn each<T: Sync, R: Send>(
    items: &[T],
    parallel: bool,
    f: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<Option<R>> {
    if !parallel || items.len() < 2 {
        return items.iter().map(&f).collect();
    }
    std::thread::scope(|s| {
        let f = &f;
        let others: Vec<_> = items[1..]
            .iter()
            .map(|item| s.spawn(move || f(item)))
            .collect();
        let mut results = vec![f(&items[0])];
        results.extend(others.into_iter().map(|h| h.join().ok().flatten()));
        results
    })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::{Condvar, Mutex};

    use super::*;
    use crate::paxos::acceptor::AcceptorState;

    /// Counts the accepts in progress at once among the replicas that share it.
    #[derive(Default)]
    struct InFlight {
        now: Mutex<(usize, usize)>, // (in progress, most at once)
        changed: Condvar,
    }

    /// An acceptor in memory whose accepts wait (up to a bound) for a second accept
    /// to be in progress at another replica sharing its `InFlight`.
    struct Meeting {
        state: Mutex<AcceptorState>,
        in_flight: Option<Arc<InFlight>>,
    }

    impl Acceptor for Meeting {
        fn prepare(&self, _: &RootRow, _: u64, ballot: u64) -> Result<Reply, Error> {
            let mut state = self.state.lock();
            Ok(match state.prepare(ballot) {
                Ok(next) => {
                    *state = next;
                    Reply::Promised {
                        ballot,
                        accepted: state.accepted.clone(),
                    }
                }
                Err(_) => Reply::Refused {
                    ballot,
                    promised: state.promised,
                },
            })
        }

        fn accept(&self, _: &RootRow, _: u64, ballot: u64, value: &[u8]) -> Result<Reply, Error> {
            if let Some(meet) = &self.in_flight {
                let mut now = meet.now.lock();
                now.0 += 1;
                now.1 = now.1.max(now.0);
                meet.changed.notify_all();
                // Bounded, so that sequential sends fail the test instead of hanging it.
                let _ = meet
                    .changed
                    .wait_while_for(&mut now, |n| n.1 < 2, Duration::from_secs(10));
                now.0 -= 1;
            }
            let mut state = self.state.lock();
            Ok(match state.accept(ballot, value) {
                Ok(next) => {
                    *state = next;
                    Reply::Accepted { ballot }
                }
                Err(_) => Reply::Refused {
                    ballot,
                    promised: state.promised,
                },
            })
        }

        fn highest_position(&self, _: &RootRow) -> Result<u64, Error> {
            Ok(0)
        }

        fn chosen_value(&self, _: &RootRow, _: u64) -> Result<Option<Vec<u8>>, Error> {
            Ok(None)
        }
    }

    #[test]
    fn the_fast_path_accepts_at_the_others_in_parallel() {
        let in_flight = Arc::new(InFlight::default());
        let replicas: Vec<Meeting> = (0..3)
            .map(|i| Meeting {
                state: Mutex::new(AcceptorState::default()),
                in_flight: (i > 0).then(|| in_flight.clone()),
            })
            .collect();
        let views: Vec<&dyn Acceptor> = replicas.iter().map(|r| r as &dyn Acceptor).collect();
        let root = RootRow {
            table: "t".into(),
            row: b"g".to_vec(),
        };
        let (outcome, accepted) = propose_at(
            &views,
            &root,
            1,
            b"v".to_vec(),
            Some(0),
            ProposeOptions::default(),
            &mut Rng::new(1),
        )
        .unwrap();
        assert_eq!(
            outcome,
            Outcome::Chosen {
                value: b"v".to_vec(),
                ours: true
            }
        );
        assert_eq!(accepted, BTreeSet::from([0, 1, 2]));
        assert_eq!(
            in_flight.now.lock().1,
            2,
            "both others' accepts were in progress at once"
        );
    }
}
