//! An entity group's log replicated over several replicas: a driver that runs the
//! proposer state machine (`paxos::proposer`) against the replicas' acceptors until a
//! value is chosen at a position. Replicas are reached through the [`Acceptor`]
//! trait: in process, a [`Replica`] itself; across processes, a replication-server
//! client. Requests to other replicas go out in parallel (unless
//! `ProposeOptions::parallel` is off), each through [`Acceptor::send`], which returns
//! at once, and their replies are taken as they arrive; once
//! a value is chosen, only the replicas that must have heard of it (full ones) are
//! still waited for.
//!
//! A replica that does not answer (an error) simply gives no reply, as a lost message
//! would: a majority of the replicas is enough to choose, and fewer is reported as
//! `Error::Unavailable` after `max_rounds` attempts.

use std::collections::{BTreeSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::paxos::acceptor::Refusal;
use crate::paxos::proposer::{Outcome, Proposer, Reply, Request};
use crate::replica::{Replica, RootRow};
use crate::sim::Rng;
use crate::Error;

/// Where the reply to a request sent with [`Acceptor::send`] goes (`None`: no answer).
pub type Answer = Box<dyn FnOnce(Option<Reply>) + Send>;

/// One replica's acceptors, as a proposer (or a replica catching up) reaches them.
pub trait Acceptor: Send + Sync + 'static {
    /// Sends `request` for `position` and returns at once; `answer` gets the reply.
    /// By default a pooled thread makes the blocking call; a network client sends it
    /// from its own event loop instead (no thread waits for the network).
    fn send(self: Arc<Self>, root: RootRow, position: u64, request: Request, answer: Answer) {
        let carry = move || {
            // A call that panics is a peer that never answered.
            let reply = std::panic::catch_unwind(AssertUnwindSafe(|| {
                ask(self.as_ref(), &root, position, request)
            }));
            answer(reply.ok().flatten());
        };
        match carriers() {
            Some(pool) => drop(pool.spawn_blocking(carry)),
            None => drop(std::thread::spawn(carry)),
        }
    }

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

/// The reply to an accept of `ballot` that the acceptor judged so.
pub(crate) fn accept_reply(ballot: u64, judged: Result<(), Refusal>) -> Reply {
    match judged {
        Ok(()) => Reply::Accepted { ballot },
        Err(r) => refused(ballot, r),
    }
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
        let judged = Replica::accept(self, root, position, ballot, value)?;
        Ok(accept_reply(ballot, judged))
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

/// A voting replica as the driver reaches it.
#[derive(Clone)]
pub enum Voter<'a> {
    /// Answered on the proposer's own thread (the local replica).
    Here(&'a dyn Acceptor),
    /// Answered on a thread of its own (in parallel mode), which may outlive the
    /// proposal. `awaited`: once a value is chosen, the driver still waits for this
    /// replica's answer (a full replica must have accepted, or be invalidated, before a
    /// write is acknowledged); a replica not awaited (a witness) is left to answer late,
    /// so a write waits for the nearest majority, not the farthest voter.
    Away {
        acceptor: Arc<dyn Acceptor>,
        awaited: bool,
    },
}

impl Voter<'_> {
    pub fn acceptor(&self) -> &dyn Acceptor {
        match self {
            Voter::Here(a) => *a,
            Voter::Away { acceptor, .. } => acceptor.as_ref(),
        }
    }

    fn awaited(&self) -> bool {
        match self {
            Voter::Here(_) => true,
            Voter::Away { awaited, .. } => *awaited,
        }
    }
}

/// Gets a value chosen at `position` of the group at `root`: `value` if it wins, or
/// the value some other proposer got chosen first. With `leader`, starts on the fast
/// path (ballot 0 at the leader).
pub fn propose(
    replicas: &[Voter<'_>],
    root: &RootRow,
    position: u64,
    value: Vec<u8>,
    leader: Option<usize>,
    options: ProposeOptions,
    rng: &mut Rng,
) -> Result<Outcome, Error> {
    propose_at(replicas, root, position, value, leader, options, rng).map(|(o, _)| o)
}

/// As [`propose`], and also which replicas were heard to accept the chosen value in
/// the winning round: all awaited ones that did (the accept requests already sent when
/// a majority answered are delivered too, as they would be on a network).
pub fn propose_at(
    replicas: &[Voter<'_>],
    root: &RootRow,
    position: u64,
    value: Vec<u8>,
    leader: Option<usize>,
    options: ProposeOptions,
    rng: &mut Rng,
) -> Result<(Outcome, BTreeSet<usize>), Error> {
    // Patience of one tick: a tick comes only when no reply is left to wait for.
    let mut proposer = Proposer::new(options.proposer, replicas.len(), value, 1);
    let mut post = PostOffice::new(replicas, root, position, options.parallel);
    post.send(proposer.start(leader));
    let mut now = 0;
    let mut rounds = 0;
    let mut accepted: Vec<(usize, u64)> = Vec::new();
    loop {
        while let Some((to, reply)) = post.next_reply() {
            let Some(reply) = reply else {
                continue;
            };
            if let Reply::Accepted { ballot } = reply {
                accepted.push((to, ballot));
            }
            let backoff = 1 + rng.below(4);
            let (sends, decided) = proposer.on_reply(to, reply, backoff);
            post.send(sends);
            if let Some(outcome) = decided {
                // The accepts it has ready are delivered too, as on a network; the
                // awaited replicas' answers are collected before returning.
                post.flush_accepts();
                for (to, reply) in post.drain_awaited() {
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
        loop {
            now += 1;
            let sends = proposer.on_tick(now, 1);
            if !sends.is_empty() {
                post.send(sends);
                break;
            }
        }
    }
}

/// Learns the value chosen at `position`, choosing `no_op` there if nothing was
/// accepted anywhere (the slow path: a prepare adopts any accepted value).
pub fn learn(
    replicas: &[Voter<'_>],
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
    replicas: &[Voter<'_>],
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
            .find_map(|r| r.acceptor().chosen_value(root, position).ok().flatten());
        let value = match known {
            Some(v) => v,
            None => learn(replicas, root, position, no_op.to_vec(), options, rng)?,
        };
        chosen.push((position, value));
    }
    Ok(chosen)
}

/// The highest position a majority of `replicas` knows of (applied, or accepted).
pub fn log_end(replicas: &[Voter<'_>], root: &RootRow) -> Result<u64, Error> {
    let heard: Vec<u64> = replicas
        .iter()
        .filter_map(|r| r.acceptor().highest_position(root).ok())
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

/// A reply from a replica's thread: (replica, reply; `None`: no answer).
type Arrival = (usize, Option<Reply>);

/// Carries one proposal's requests to the voters and brings back their replies.
///
/// In parallel mode a request to a replica `Away` goes out at once on a thread of its
/// own, and replies come back in the order they arrive. Otherwise (the simulator, which
/// must stay single-threaded and deterministic) requests wait in a queue until every
/// earlier reply was read, then are answered one after another, in the order sent.
struct PostOffice<'v, 'a> {
    replicas: &'v [Voter<'a>],
    root: &'v RootRow,
    position: u64,
    parallel: bool,
    queued: VecDeque<(usize, Request)>,
    answered: VecDeque<Arrival>,
    /// Requests out on their own threads, per replica.
    in_flight: Vec<usize>,
    /// Replies from those threads: (replica, reply).
    arrivals: (Sender<Arrival>, Receiver<Arrival>),
}

impl<'v, 'a> PostOffice<'v, 'a> {
    fn new(replicas: &'v [Voter<'a>], root: &'v RootRow, position: u64, parallel: bool) -> Self {
        PostOffice {
            replicas,
            root,
            position,
            parallel,
            queued: VecDeque::new(),
            answered: VecDeque::new(),
            in_flight: vec![0; replicas.len()],
            arrivals: channel(),
        }
    }

    fn send(&mut self, requests: Vec<(usize, Request)>) {
        self.queued.extend(requests);
        if self.parallel {
            self.dispatch();
        }
    }

    /// Sends the queued accept requests (drops any other).
    fn flush_accepts(&mut self) {
        self.queued
            .retain(|(_, r)| matches!(r, Request::Accept { .. }));
        self.dispatch();
    }

    /// Sends what is queued: first out to the replicas away (in parallel mode), then
    /// here, so that the local answer overlaps the remote ones.
    fn dispatch(&mut self) {
        let mut here = Vec::new();
        for (to, request) in std::mem::take(&mut self.queued) {
            match &self.replicas[to] {
                Voter::Away { acceptor, .. } if self.parallel => {
                    self.in_flight[to] += 1;
                    self.spawn(to, acceptor.clone(), request);
                }
                _ => here.push((to, request)),
            }
        }
        for (to, request) in here {
            let voter = &self.replicas[to];
            let reply = ask(voter.acceptor(), self.root, self.position, request);
            self.answered.push_back((to, reply));
        }
    }

    fn spawn(&self, to: usize, acceptor: Arc<dyn Acceptor>, request: Request) {
        let arrivals = self.arrivals.0.clone();
        // Once the proposal is over nobody listens, and the reply is dropped.
        let answer: Answer = Box::new(move |reply| drop(arrivals.send((to, reply))));
        acceptor.send(self.root.clone(), self.position, request, answer);
    }

    /// The next reply (`None` inside: that replica did not answer), or `None` when no
    /// request is left unanswered.
    fn next_reply(&mut self) -> Option<Arrival> {
        if self.answered.is_empty() && !self.parallel {
            self.dispatch();
        }
        if let Some(reply) = self.answered.pop_front() {
            return Some(reply);
        }
        if self.in_flight.iter().all(|&n| n == 0) {
            return None;
        }
        let (to, reply) = self.arrivals.1.recv().ok()?;
        self.in_flight[to] -= 1;
        Some((to, reply))
    }

    /// The replies still to come from awaited replicas (and any already in), leaving
    /// the others to answer late.
    fn drain_awaited(&mut self) -> Vec<Arrival> {
        let mut replies: Vec<_> = self.answered.drain(..).collect();
        let awaited = |post: &Self| {
            (0..post.replicas.len()).any(|r| post.in_flight[r] > 0 && post.replicas[r].awaited())
        };
        while awaited(self) {
            let Ok((to, reply)) = self.arrivals.1.recv() else {
                break;
            };
            self.in_flight[to] -= 1;
            replies.push((to, reply));
        }
        replies
    }
}

/// Threads that carry requests to other replicas, kept for reuse: starting a thread
/// per request costs more than the request itself on loopback. `None` if the pool
/// could not be started (then each request gets a thread of its own).
fn carriers() -> Option<&'static tokio::runtime::Runtime> {
    static CARRIERS: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    CARRIERS
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .thread_name("megastore-carrier")
                .build()
                .ok()
        })
        .as_ref()
}

fn ask<A: Acceptor + ?Sized>(
    replica: &A,
    root: &RootRow,
    position: u64,
    request: Request,
) -> Option<Reply> {
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
    use std::sync::atomic::{AtomicBool, Ordering};
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

    /// Holds accepts back until released (up to a bound), and tells whether one answered.
    #[derive(Default)]
    struct Hold {
        released: Mutex<bool>,
        changed: Condvar,
        answered: AtomicBool,
    }

    impl Hold {
        fn release(&self) {
            *self.released.lock() = true;
            self.changed.notify_all();
        }
    }

    /// An acceptor in memory whose accepts wait (up to a bound) for a second accept
    /// to be in progress at another replica sharing its `InFlight`, or for its `Hold`
    /// to be released.
    #[derive(Default)]
    struct Meeting {
        state: Mutex<AcceptorState>,
        in_flight: Option<Arc<InFlight>>,
        hold: Option<Arc<Hold>>,
    }

    fn away(replica: Meeting, awaited: bool) -> Voter<'static> {
        Voter::Away {
            acceptor: Arc::new(replica),
            awaited,
        }
    }

    /// Proposes "v" at position 1 on the fast path, through voter 0.
    fn propose_v(voters: &[Voter<'_>]) -> (Outcome, BTreeSet<usize>) {
        propose_at(
            voters,
            &root(),
            1,
            b"v".to_vec(),
            Some(0),
            ProposeOptions::default(),
            &mut Rng::new(1),
        )
        .unwrap()
    }

    fn root() -> RootRow {
        RootRow {
            table: "t".into(),
            row: b"g".to_vec(),
        }
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
            if let Some(hold) = &self.hold {
                let mut released = hold.released.lock();
                // Bounded, so that a driver waiting for this answer fails the test
                // instead of hanging it.
                let _ =
                    hold.changed
                        .wait_while_for(&mut released, |r| !*r, Duration::from_secs(10));
                hold.answered.store(true, Ordering::SeqCst);
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
        let leader = Meeting::default();
        let voters: Vec<Voter<'_>> = std::iter::once(Voter::Here(&leader))
            .chain((1..3).map(|_| {
                let replica = Meeting {
                    in_flight: Some(in_flight.clone()),
                    ..Meeting::default()
                };
                away(replica, true)
            }))
            .collect();
        let (outcome, accepted) = propose_v(&voters);
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

    #[test]
    fn a_write_waits_for_the_nearest_majority_not_for_a_witness() {
        let hold = Arc::new(Hold::default());
        let leader = Meeting::default();
        let voters = vec![
            Voter::Here(&leader),
            away(Meeting::default(), true),
            away(
                Meeting {
                    hold: Some(hold.clone()),
                    ..Meeting::default()
                },
                false,
            ),
        ];
        let (outcome, accepted) = propose_v(&voters);
        let answered = hold.answered.load(Ordering::SeqCst);
        hold.release();
        assert!(matches!(outcome, Outcome::Chosen { ours: true, .. }));
        assert!(!answered, "the proposal waited for the witness");
        assert_eq!(accepted, BTreeSet::from([0, 1]));
    }

    #[test]
    fn an_unanswered_witness_is_still_needed_for_a_majority() {
        let hold = Arc::new(Hold::default());
        let leader = Meeting::default();
        let down = Meeting::default();
        // The full replica "down" refuses everything: it promised the highest ballot.
        down.state.lock().promised = u64::MAX;
        let voters = vec![
            Voter::Here(&leader),
            away(down, true),
            away(
                Meeting {
                    hold: Some(hold.clone()),
                    ..Meeting::default()
                },
                false,
            ),
        ];
        let releaser = {
            let hold = hold.clone();
            std::thread::spawn(move || hold.release())
        };
        let (outcome, accepted) = propose_v(&voters);
        releaser.join().unwrap();
        assert!(matches!(outcome, Outcome::Chosen { ours: true, .. }));
        assert!(hold.answered.load(Ordering::SeqCst));
        assert_eq!(accepted, BTreeSet::from([0, 2]));
    }
}
