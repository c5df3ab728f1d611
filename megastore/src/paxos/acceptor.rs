//! The Paxos acceptor's state for one log position of one entity group, and its rules.
//! The state is the value of that position's cell in the root row; the rules are pure
//! functions from (state, request) to the new state, which the replica writes back by
//! compare-and-set on the old bytes. No I/O here.
//!
//! Ballot 0 is the fast path: only the position's leader proposes with it, and it
//! accepts the first value offered, so a second value at ballot 0 is refused. A higher
//! ballot belongs to one proposer; re-accepting the same ballot with another value is
//! refused as well.

use bigtable::coding::Reader;

use crate::entity::{damaged, put_bytes, read_bytes};
use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptorState {
    /// No accept or prepare below this ballot is granted.
    pub promised: u64,
    /// The last value accepted, with its ballot.
    pub accepted: Option<(u64, Vec<u8>)>,
}

/// Why an acceptor refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A higher ballot was promised.
    Promised(u64),
    /// Another value was already accepted with this ballot.
    Taken,
    /// The replica has applied the position: its value is decided, and its acceptor
    /// state may already be cleaned up, so nothing more is accepted there.
    Applied,
}

/// The ballot that marks a value as known to be chosen (learned from its proposer or
/// from catch-up), above every real ballot. Such a state grants every prepare, reporting
/// the chosen value (which a proposer then adopts), and accepts only that value.
pub const CHOSEN: u64 = u64::MAX;

impl AcceptorState {
    /// The state of a position whose chosen value is known.
    pub fn chosen(value: &[u8]) -> Self {
        AcceptorState {
            promised: CHOSEN,
            accepted: Some((CHOSEN, value.to_vec())),
        }
    }

    /// The value, if this position's chosen value is known here.
    pub fn chosen_value(&self) -> Option<&[u8]> {
        match &self.accepted {
            Some((CHOSEN, value)) => Some(value),
            _ => None,
        }
    }

    /// Phase 2: accept `value` with `ballot`; the new state.
    pub fn accept(&self, ballot: u64, value: &[u8]) -> Result<AcceptorState, Refusal> {
        if let Some(chosen) = self.chosen_value() {
            return if chosen == value {
                Ok(self.clone())
            } else {
                Err(Refusal::Taken)
            };
        }
        if ballot < self.promised {
            return Err(Refusal::Promised(self.promised));
        }
        if let Some((b, v)) = &self.accepted {
            if *b == ballot && v != value {
                return Err(Refusal::Taken);
            }
        }
        Ok(AcceptorState {
            promised: ballot,
            accepted: Some((ballot, value.to_vec())),
        })
    }

    /// Phase 1: promise to ignore ballots below `ballot`; the new state. The caller
    /// learns what was accepted from `self.accepted`.
    /// Promising the same ballot again (a duplicated request) is granted again.
    pub fn prepare(&self, ballot: u64) -> Result<AcceptorState, Refusal> {
        if self.chosen_value().is_some() {
            return Ok(self.clone());
        }
        if ballot < self.promised {
            return Err(Refusal::Promised(self.promised));
        }
        Ok(AcceptorState {
            promised: ballot,
            accepted: self.accepted.clone(),
        })
    }

    /// `promised`, then `00` or `01 ballot value`, then a CRC-32 of what precedes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.promised.to_be_bytes().to_vec();
        match &self.accepted {
            None => out.push(0),
            Some((ballot, value)) => {
                out.push(1);
                out.extend_from_slice(&ballot.to_be_bytes());
                put_bytes(&mut out, value);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<AcceptorState, Error> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or_else(|| damaged("acceptor state"))?;
        let (body, crc) = bytes.split_at(body_len);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(Error::Damaged("acceptor state fails its checksum".into()));
        }
        let mut r = Reader::new(body);
        let state = (|| {
            let promised = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
            let accepted = match r.u8()? {
                0 => None,
                1 => {
                    let ballot = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
                    Some((ballot, read_bytes(&mut r)?.to_vec()))
                }
                _ => return None,
            };
            r.is_empty().then_some(AcceptorState { promised, accepted })
        })();
        state.ok_or_else(|| damaged("acceptor state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_takes_the_first_value_only() {
        let empty = AcceptorState::default();
        let first = empty.accept(0, b"a").expect("first value");
        assert_eq!(first.accept(0, b"b"), Err(Refusal::Taken));
        assert_eq!(
            first.accept(0, b"a").as_ref(),
            Ok(&first),
            "a retry is idempotent"
        );
    }

    #[test]
    fn promises_fence_lower_ballots_and_report_accepted_values() {
        let accepted = AcceptorState::default().accept(0, b"a").expect("accept");
        let promised = accepted.prepare(5).expect("prepare");
        assert_eq!(promised.accepted, Some((0, b"a".to_vec())));
        assert_eq!(promised.accept(3, b"b"), Err(Refusal::Promised(5)));
        assert_eq!(promised.prepare(4), Err(Refusal::Promised(5)));
        let replaced = promised
            .accept(5, b"a")
            .expect("accept at the promised ballot");
        assert_eq!(replaced.accepted, Some((5, b"a".to_vec())));
    }

    #[test]
    fn a_known_chosen_value_is_reported_to_every_prepare_and_is_the_only_one_accepted() {
        let chosen = AcceptorState::chosen(b"c");
        let promised = chosen.prepare(ballot_of(3)).expect("prepare");
        assert_eq!(promised.accepted, Some((CHOSEN, b"c".to_vec())));
        assert_eq!(chosen.accept(ballot_of(9), b"c").as_ref(), Ok(&chosen));
        assert_eq!(chosen.accept(ballot_of(9), b"d"), Err(Refusal::Taken));
        assert_eq!(chosen.chosen_value(), Some(&b"c"[..]));
        assert_eq!(AcceptorState::default().chosen_value(), None);
    }

    fn ballot_of(round: u64) -> u64 {
        crate::paxos::proposer::ballot(round, 1)
    }

    #[test]
    fn states_round_trip_and_damage_is_detected() {
        let state = AcceptorState {
            promised: 9,
            accepted: Some((7, b"entry".to_vec())),
        };
        let mut bytes = state.encode();
        assert_eq!(AcceptorState::decode(&bytes).ok(), Some(state));
        bytes[3] ^= 1;
        assert!(AcceptorState::decode(&bytes).is_err());
        assert!(AcceptorState::decode(&[1, 2]).is_err());
    }
}
