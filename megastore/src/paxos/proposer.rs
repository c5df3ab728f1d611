//! The proposer of one log position, as in Megastore's write algorithm: a pure state
//! machine. It takes replies (and ticks of a logical clock) and returns the messages to
//! send; the caller moves the messages. No I/O, no clock, no randomness of its own: the
//! caller supplies a back-off length, so a seeded simulator replays a run exactly.
//!
//! 1. Fast path: ask the position's leader to accept the value with ballot 0. The leader
//!    accepts the first value offered at ballot 0 only, so at most one value ever holds
//!    ballot 0.
//! 2. Otherwise prepare with a higher ballot, unique to this proposer, at every replica;
//!    with a majority of promises, adopt the value of the highest ballot accepted among
//!    them (the own value if none).
//! 3. Accept at every replica (after the fast path: at the others); a majority of
//!    acceptances chooses the value. A majority of refusals, or silence until the
//!    deadline, sends the proposer back to step 2 after a back-off.

use std::collections::BTreeSet;

/// A replica, by index in the group's replica list.
pub type ReplicaId = usize;

/// Ballots are unique per proposer: `round << 32 | proposer id`. Ballot 0 is the fast
/// path's; rounds stay far below 2^32 - 1, whose ballots are reserved (see
/// `acceptor::CHOSEN`).
pub fn ballot(round: u64, proposer: u32) -> u64 {
    (round << 32) | u64::from(proposer)
}

fn round_of(ballot: u64) -> u64 {
    ballot >> 32
}

/// A message from the proposer to one acceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Prepare { ballot: u64 },
    Accept { ballot: u64, value: Vec<u8> },
}

/// An acceptor's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A promise for `ballot`, with what the acceptor had accepted.
    Promised {
        ballot: u64,
        accepted: Option<(u64, Vec<u8>)>,
    },
    /// Accepted the value with `ballot`.
    Accepted { ballot: u64 },
    /// Refused a request with `ballot`; it had promised `promised`.
    Refused { ballot: u64, promised: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `value` is chosen at the position; `ours` says whether it is the proposer's own.
    Chosen { value: Vec<u8>, ours: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for the leader's answer to the ballot-0 accept.
    Fast,
    Prepare {
        promised: BTreeSet<ReplicaId>,
        refused: BTreeSet<ReplicaId>,
        /// The highest-ballot accepted value among the promises.
        adopt: Option<(u64, Vec<u8>)>,
    },
    Accept {
        accepted: BTreeSet<ReplicaId>,
        refused: BTreeSet<ReplicaId>,
    },
    /// Backing off until the tick `until`, then preparing again.
    Backoff {
        until: u64,
    },
    Done,
}

/// One proposer of one position.
#[derive(Debug, Clone)]
pub struct Proposer {
    id: u32,
    replicas: usize,
    own: Vec<u8>,
    /// The value being proposed (the own one, or an adopted one).
    value: Vec<u8>,
    ballot: u64,
    /// The highest ballot any acceptor reported: the next prepare goes above it.
    highest_seen: u64,
    phase: Phase,
    /// Ticks without progress after which a phase gives up.
    patience: u64,
    deadline: u64,
    now: u64,
}

/// Messages to send, as (replica, request).
pub type Sends = Vec<(ReplicaId, Request)>;

impl Proposer {
    /// A proposer with id `id` (unique among the position's proposers) for `value`, among
    /// `replicas` voting replicas.
    pub fn new(id: u32, replicas: usize, value: Vec<u8>, patience: u64) -> Self {
        Proposer {
            id,
            replicas,
            own: value.clone(),
            value,
            ballot: 0,
            highest_seen: 0,
            phase: Phase::Done,
            patience: patience.max(1),
            deadline: 0,
            now: 0,
        }
    }

    fn majority(&self) -> usize {
        self.replicas / 2 + 1
    }

    /// Starts on the fast path through `leader`, or (`None`) on the slow path.
    pub fn start(&mut self, leader: Option<ReplicaId>) -> Sends {
        match leader {
            Some(leader) => {
                self.ballot = 0;
                self.enter(Phase::Fast);
                vec![(
                    leader,
                    Request::Accept {
                        ballot: 0,
                        value: self.value.clone(),
                    },
                )]
            }
            None => self.prepare(),
        }
    }

    /// The ballot of the current (or last) attempt.
    pub fn ballot(&self) -> u64 {
        self.ballot
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.deadline = self.now + self.patience;
    }

    fn prepare(&mut self) -> Sends {
        let round = round_of(self.highest_seen.max(self.ballot)) + 1;
        self.ballot = ballot(round, self.id);
        self.value = self.own.clone();
        self.enter(Phase::Prepare {
            promised: BTreeSet::new(),
            refused: BTreeSet::new(),
            adopt: None,
        });
        (0..self.replicas)
            .map(|r| {
                (
                    r,
                    Request::Prepare {
                        ballot: self.ballot,
                    },
                )
            })
            .collect()
    }

    fn accept_at(
        &mut self,
        replicas: impl Iterator<Item = ReplicaId>,
        accepted: BTreeSet<ReplicaId>,
    ) -> Sends {
        self.enter(Phase::Accept {
            accepted,
            refused: BTreeSet::new(),
        });
        let (ballot, value) = (self.ballot, self.value.clone());
        replicas
            .map(|r| {
                (
                    r,
                    Request::Accept {
                        ballot,
                        value: value.clone(),
                    },
                )
            })
            .collect()
    }

    fn back_off(&mut self, ticks: u64) -> Sends {
        self.phase = Phase::Backoff {
            until: self.now + ticks,
        };
        Vec::new()
    }

    /// Takes `reply` from `from`. `backoff` is how many ticks to wait if this reply makes
    /// the attempt fail (the caller's randomness). Returns messages to send and, once
    /// known, the outcome.
    pub fn on_reply(
        &mut self,
        from: ReplicaId,
        reply: Reply,
        backoff: u64,
    ) -> (Sends, Option<Outcome>) {
        if let Reply::Refused { promised, .. }
        | Reply::Promised {
            ballot: promised, ..
        } = &reply
        {
            self.highest_seen = self.highest_seen.max(*promised);
        }
        let majority = self.majority();
        let replicas = self.replicas;
        let current = self.ballot;
        match (&mut self.phase, reply) {
            (Phase::Fast, Reply::Accepted { ballot: 0 }) => {
                let accepted = BTreeSet::from([from]);
                if majority == 1 {
                    return self.choose();
                }
                (
                    self.accept_at((0..replicas).filter(|r| *r != from), accepted),
                    None,
                )
            }
            (Phase::Fast, Reply::Refused { ballot: 0, .. }) => (self.prepare(), None),
            (
                Phase::Prepare {
                    promised, adopt, ..
                },
                Reply::Promised { ballot, accepted },
            ) if ballot == current => {
                promised.insert(from);
                if let Some((b, v)) = accepted {
                    if adopt.as_ref().is_none_or(|(best, _)| b > *best) {
                        *adopt = Some((b, v));
                    }
                }
                if promised.len() >= majority {
                    if let Some((_, v)) = adopt.take() {
                        self.value = v;
                    }
                    return (self.accept_at(0..replicas, BTreeSet::new()), None);
                }
                (Vec::new(), None)
            }
            (Phase::Prepare { refused, .. }, Reply::Refused { ballot, .. })
                if ballot == current =>
            {
                refused.insert(from);
                if refused.len() > replicas - majority {
                    return (self.back_off(backoff), None);
                }
                (Vec::new(), None)
            }
            (Phase::Accept { accepted, .. }, Reply::Accepted { ballot }) if ballot == current => {
                accepted.insert(from);
                if accepted.len() >= majority {
                    return self.choose();
                }
                (Vec::new(), None)
            }
            (Phase::Accept { refused, .. }, Reply::Refused { ballot, .. }) if ballot == current => {
                refused.insert(from);
                if refused.len() > replicas - majority {
                    return (self.back_off(backoff), None);
                }
                (Vec::new(), None)
            }
            // Late, duplicated or stale replies change nothing.
            _ => (Vec::new(), None),
        }
    }

    fn choose(&mut self) -> (Sends, Option<Outcome>) {
        self.phase = Phase::Done;
        let ours = self.value == self.own;
        (
            Vec::new(),
            Some(Outcome::Chosen {
                value: self.value.clone(),
                ours,
            }),
        )
    }

    /// Advances the proposer's clock to `now`: a phase past its deadline gives up (and
    /// backs off `backoff` ticks); a finished back-off prepares again.
    pub fn on_tick(&mut self, now: u64, backoff: u64) -> Sends {
        self.now = now;
        match &self.phase {
            Phase::Done => Vec::new(),
            Phase::Backoff { until } if now >= *until => self.prepare(),
            Phase::Backoff { .. } => Vec::new(),
            _ if now >= self.deadline => self.back_off(backoff),
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_takes_one_round_trip_to_the_leader_then_the_rest() {
        let mut p = Proposer::new(1, 3, b"v".to_vec(), 10);
        let sends = p.start(Some(2));
        assert_eq!(
            sends,
            vec![(
                2,
                Request::Accept {
                    ballot: 0,
                    value: b"v".to_vec()
                }
            )]
        );
        let (sends, outcome) = p.on_reply(2, Reply::Accepted { ballot: 0 }, 1);
        assert_eq!(outcome, None);
        assert_eq!(
            sends.iter().map(|(r, _)| *r).collect::<Vec<_>>(),
            vec![0, 1]
        );
        let (_, outcome) = p.on_reply(0, Reply::Accepted { ballot: 0 }, 1);
        assert_eq!(
            outcome,
            Some(Outcome::Chosen {
                value: b"v".to_vec(),
                ours: true
            })
        );
    }

    #[test]
    fn the_slow_path_adopts_the_highest_accepted_value() {
        let mut p = Proposer::new(7, 3, b"mine".to_vec(), 10);
        let sends = p.start(None);
        let Request::Prepare { ballot: b } = sends[0].1.clone() else {
            panic!("prepares first")
        };
        assert_eq!(b, ballot(1, 7));
        let promise = |accepted| Reply::Promised {
            ballot: b,
            accepted,
        };
        p.on_reply(0, promise(Some((0, b"old".to_vec()))), 1);
        let (sends, _) = p.on_reply(1, promise(None), 1);
        assert!(sends.iter().all(|(_, r)| *r
            == Request::Accept {
                ballot: b,
                value: b"old".to_vec()
            }));
        p.on_reply(0, Reply::Accepted { ballot: b }, 1);
        let (_, outcome) = p.on_reply(2, Reply::Accepted { ballot: b }, 1);
        assert_eq!(
            outcome,
            Some(Outcome::Chosen {
                value: b"old".to_vec(),
                ours: false
            })
        );
    }

    #[test]
    fn a_majority_of_refusals_backs_off_then_prepares_above_what_it_saw() {
        let mut p = Proposer::new(2, 3, b"v".to_vec(), 10);
        let sends = p.start(None);
        let Request::Prepare { ballot: b } = sends[0].1.clone() else {
            panic!("prepares first")
        };
        let refusal = Reply::Refused {
            ballot: b,
            promised: ballot(5, 9),
        };
        p.on_reply(0, refusal.clone(), 3);
        p.on_reply(1, refusal, 3);
        assert!(p.on_tick(2, 3).is_empty(), "still backing off");
        let sends = p.on_tick(3, 3);
        assert_eq!(
            sends[0].1,
            Request::Prepare {
                ballot: ballot(6, 2)
            }
        );
    }
}
