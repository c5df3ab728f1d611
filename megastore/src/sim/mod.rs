//! A seeded simulator of Paxos at one log position: several proposers (some on the fast
//! path through the position's leader) race to choose their values at a few acceptors,
//! over a network that drops, duplicates, delays and reorders messages and partitions
//! and heals replicas. Everything random comes from the seed, so a seed replays a run
//! exactly.
//!
//! Checked on every run:
//! - at most one value is ever chosen (accepted by a majority at one ballot);
//! - every proposer that finishes learns that value, and only its author calls it its own;
//! - once the network heals, every proposer finishes (no livelock).
//!
//! The full simulator of replicated groups (clients, crashes with unsynced data lost,
//! coordinators, histories) builds on this with the replication stage.

pub mod history;
pub mod linearizability;
pub mod mail;
pub mod network;
pub mod registers;
pub mod system;
pub mod transfers;

use std::collections::{BTreeMap, BTreeSet};

use crate::paxos::acceptor::{AcceptorState, Refusal};
use crate::paxos::proposer::{Outcome, Proposer, ReplicaId, Reply, Request};

pub use wal::rng::SplitMix64 as Rng;

/// True with probability `percent` / 100.
fn chance(rng: &mut Rng, percent: u64) -> bool {
    rng.below(100) < percent
}

#[derive(Debug, Clone)]
enum Payload {
    Request(Request),
    Reply(Reply),
}

#[derive(Debug, Clone)]
struct Message {
    /// Proposer index.
    proposer: usize,
    replica: ReplicaId,
    payload: Payload,
    deliver_at: u64,
}

/// What one run did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub replicas: usize,
    pub proposers: usize,
    pub ticks: u64,
    pub messages: u64,
    pub chosen: Option<Vec<u8>>,
    /// Proposers that took the slow path at least once.
    pub slow_paths: usize,
    pub violations: Vec<String>,
}

/// The run's fault settings, drawn from the seed.
struct Faults {
    drop_percent: u64,
    duplicate_percent: u64,
    max_delay: u64,
    /// Until this tick the network misbehaves; after it, it is reliable.
    heal_at: u64,
}

const MAX_TICKS: u64 = 20_000;

/// Runs one seeded race for one position.
pub fn run_position(seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let replicas = if chance(&mut rng, 50) { 3 } else { 5 };
    let proposer_count = 1 + rng.below(4) as usize;
    let leader = chance(&mut rng, 80).then(|| rng.below(replicas as u64) as usize);
    let faults = Faults {
        drop_percent: rng.below(30),
        duplicate_percent: rng.below(20),
        max_delay: 1 + rng.below(10),
        heal_at: 50 + rng.below(400),
    };
    let patience = 20 + rng.below(40);
    let mut proposers: Vec<Proposer> = (0..proposer_count)
        .map(|i| {
            Proposer::new(
                i as u32 + 1,
                replicas,
                format!("value-{i}").into_bytes(),
                patience,
            )
        })
        .collect();
    let mut acceptors = vec![AcceptorState::default(); replicas];
    let mut down: BTreeSet<ReplicaId> = BTreeSet::new();
    let mut network: Vec<Message> = Vec::new();
    let mut report = Report {
        seed,
        replicas,
        proposers: proposer_count,
        ..Report::default()
    };
    // Every acceptance ever: (ballot, value) -> acceptors.
    let mut accepted: BTreeMap<(u64, Vec<u8>), BTreeSet<ReplicaId>> = BTreeMap::new();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; proposer_count];
    let mut took_slow_path = vec![false; proposer_count];

    let send = |network: &mut Vec<Message>, rng: &mut Rng, now: u64, m: Message, faulty: bool| {
        if faulty && chance(rng, faults.drop_percent) {
            return;
        }
        let copies = if faulty && chance(rng, faults.duplicate_percent) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = if faulty {
                1 + rng.below(faults.max_delay)
            } else {
                1
            };
            network.push(Message {
                deliver_at: now + delay,
                ..m.clone()
            });
        }
    };

    for (i, p) in proposers.iter_mut().enumerate() {
        // Each proposer starts at a random early tick; most go through the leader.
        let fast = leader.filter(|_| chance(&mut rng, 75));
        took_slow_path[i] |= fast.is_none();
        for (replica, request) in p.start(fast) {
            let m = Message {
                proposer: i,
                replica,
                payload: Payload::Request(request),
                deliver_at: 0,
            };
            let at = rng.below(5);
            send(&mut network, &mut rng, at, m, true);
        }
    }

    let mut now = 0;
    while now < MAX_TICKS && proposers.iter().any(|p| !p.is_done()) {
        now += 1;
        let faulty = now < faults.heal_at;
        // Partitions come and go while the network is faulty.
        if faulty && chance(&mut rng, 3) {
            let r = rng.below(replicas as u64) as usize;
            if !down.remove(&r) {
                down.insert(r);
            }
        }
        if !faulty {
            down.clear();
        }
        for (i, p) in proposers.iter_mut().enumerate() {
            let backoff = 1 + rng.below(30);
            let was_done = p.is_done();
            let sends = p.on_tick(now, backoff);
            took_slow_path[i] |= !sends.is_empty() && !was_done;
            for (replica, request) in sends {
                let m = Message {
                    proposer: i,
                    replica,
                    payload: Payload::Request(request),
                    deliver_at: 0,
                };
                send(&mut network, &mut rng, now, m, faulty);
            }
        }
        // Deliver the due messages in a random order.
        let mut due: Vec<Message> = Vec::new();
        network.retain(|m| {
            if m.deliver_at <= now {
                due.push(m.clone());
                false
            } else {
                true
            }
        });
        while !due.is_empty() {
            let m = due.swap_remove(rng.below(due.len() as u64) as usize);
            report.messages += 1;
            if down.contains(&m.replica) {
                continue;
            }
            match m.payload {
                Payload::Request(request) => {
                    let reply =
                        answer(&mut acceptors[m.replica], request, m.replica, &mut accepted);
                    let r = Message {
                        payload: Payload::Reply(reply),
                        ..m
                    };
                    send(&mut network, &mut rng, now, r, faulty);
                }
                Payload::Reply(reply) => {
                    let backoff = 1 + rng.below(30);
                    let (sends, outcome) =
                        proposers[m.proposer].on_reply(m.replica, reply, backoff);
                    if let Some(o) = outcome {
                        outcomes[m.proposer] = Some(o);
                    }
                    for (replica, request) in sends {
                        let out = Message {
                            proposer: m.proposer,
                            replica,
                            payload: Payload::Request(request),
                            deliver_at: 0,
                        };
                        send(&mut network, &mut rng, now, out, faulty);
                    }
                }
            }
        }
    }
    report.ticks = now;
    report.slow_paths = took_slow_path.iter().filter(|s| **s).count();
    check(&mut report, replicas, &accepted, &outcomes, proposer_count);
    report
}

/// An acceptor's answer to a request (and the acceptance recorded).
fn answer(
    state: &mut AcceptorState,
    request: Request,
    me: ReplicaId,
    accepted: &mut BTreeMap<(u64, Vec<u8>), BTreeSet<ReplicaId>>,
) -> Reply {
    let refused = |ballot, refusal, state: &AcceptorState| Reply::Refused {
        ballot,
        promised: match refusal {
            Refusal::Promised(p) => p,
            Refusal::Taken | Refusal::Applied => state.promised,
        },
    };
    match request {
        Request::Prepare { ballot } => match state.prepare(ballot) {
            Ok(next) => {
                *state = next;
                Reply::Promised {
                    ballot,
                    accepted: state.accepted.clone(),
                }
            }
            Err(r) => refused(ballot, r, state),
        },
        Request::Accept { ballot, value } => match state.accept(ballot, &value) {
            Ok(next) => {
                *state = next;
                accepted.entry((ballot, value)).or_default().insert(me);
                Reply::Accepted { ballot }
            }
            Err(r) => refused(ballot, r, state),
        },
    }
}

fn check(
    report: &mut Report,
    replicas: usize,
    accepted: &BTreeMap<(u64, Vec<u8>), BTreeSet<ReplicaId>>,
    outcomes: &[Option<Outcome>],
    proposers: usize,
) {
    let majority = replicas / 2 + 1;
    let chosen: BTreeSet<&Vec<u8>> = accepted
        .iter()
        .filter(|(_, who)| who.len() >= majority)
        .map(|((_, v), _)| v)
        .collect();
    if chosen.len() > 1 {
        report
            .violations
            .push(format!("several values chosen: {chosen:?}"));
    }
    report.chosen = chosen.into_iter().next().cloned();
    let mut own_claims = 0;
    for (i, outcome) in outcomes.iter().enumerate() {
        match outcome {
            None => report.violations.push(format!(
                "proposer {i} never finished after the network healed"
            )),
            Some(Outcome::Chosen { value, ours }) => {
                if Some(value) != report.chosen.as_ref() {
                    report.violations.push(format!(
                        "proposer {i} learned {value:?}, not the chosen value"
                    ));
                }
                let author = *value == format!("value-{i}").into_bytes();
                if *ours != author {
                    report
                        .violations
                        .push(format!("proposer {i} says ours={ours} for {value:?}"));
                }
                own_claims += usize::from(*ours);
            }
        }
    }
    if own_claims > 1 || (proposers > 0 && report.chosen.is_none()) {
        report.violations.push(format!(
            "{own_claims} proposers claim the position; chosen {:?}",
            report.chosen
        ));
    }
}
