//! Paxos for one log position, as pure state machines: the acceptor's rules (its state
//! is a log cell of the root row) and the proposer of Megastore's write algorithm (fast
//! path through the position's leader, then prepare and accept). Transport, storage and
//! time belong to the caller; `crate::sim` drives both under a seeded fault simulator.

pub mod acceptor;
pub mod proposer;
