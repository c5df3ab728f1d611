//! The replication service's messages (`docs/replication-protocol.md`), as prost structs.

#![allow(clippy::all)] // prost derives

use crate::paxos::proposer::Reply;
use crate::replica::RootRow;
use crate::Error;

/// An entity group: the Bigtable table and row of its root entity.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Group {
    #[prost(string, tag = "1")]
    pub table: String,
    #[prost(bytes = "vec", tag = "2")]
    pub row: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GroupRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PositionRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(uint64, tag = "2")]
    pub position: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PrepareRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(uint64, tag = "2")]
    pub position: u64,
    #[prost(uint64, tag = "3")]
    pub ballot: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AcceptRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(uint64, tag = "2")]
    pub position: u64,
    #[prost(uint64, tag = "3")]
    pub ballot: u64,
    #[prost(bytes = "vec", tag = "4")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyRequest {
    #[prost(message, optional, tag = "1")]
    pub group: Option<Group>,
    #[prost(uint64, tag = "2")]
    pub position: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub value: Vec<u8>,
}

/// Accept requests for one replica, of any groups, judged together (one fsync).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AcceptBatch {
    #[prost(message, repeated, tag = "1")]
    pub accepts: Vec<AcceptRequest>,
}

/// One reply per accept of an [`AcceptBatch`], in order; kind 0: that accept failed
/// (as if unanswered).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AcceptBatchReply {
    #[prost(message, repeated, tag = "1")]
    pub replies: Vec<PaxosReply>,
}

/// Chosen values for one replica to apply, oldest first.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyBatch {
    #[prost(message, repeated, tag = "1")]
    pub applies: Vec<ApplyRequest>,
}

/// An acceptor's answer: `kind` 1 promised (with what it had accepted, if anything),
/// 2 accepted, 3 refused (with what it had promised).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PaxosReply {
    #[prost(uint32, tag = "1")]
    pub kind: u32,
    #[prost(uint64, tag = "2")]
    pub ballot: u64,
    #[prost(uint64, tag = "3")]
    pub promised: u64,
    #[prost(message, optional, tag = "4")]
    pub accepted: Option<Accepted>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Accepted {
    #[prost(uint64, tag = "1")]
    pub ballot: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PositionReply {
    #[prost(uint64, tag = "1")]
    pub position: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueReply {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub value: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Empty {}

const PROMISED: u32 = 1;
const ACCEPTED: u32 = 2;
const REFUSED: u32 = 3;

impl From<&RootRow> for Group {
    fn from(root: &RootRow) -> Self {
        Group {
            table: root.table.clone(),
            row: root.row.clone(),
        }
    }
}

/// The group a request names, which it must name.
pub fn root_of(group: Option<Group>) -> Result<RootRow, Error> {
    let group = group.ok_or_else(|| Error::Invalid("the request names no group".into()))?;
    Ok(RootRow {
        table: group.table,
        row: group.row,
    })
}

impl From<Reply> for PaxosReply {
    fn from(reply: Reply) -> Self {
        match reply {
            Reply::Promised { ballot, accepted } => PaxosReply {
                kind: PROMISED,
                ballot,
                promised: ballot,
                accepted: accepted.map(|(ballot, value)| Accepted { ballot, value }),
            },
            Reply::Accepted { ballot } => PaxosReply {
                kind: ACCEPTED,
                ballot,
                promised: ballot,
                accepted: None,
            },
            Reply::Refused { ballot, promised } => PaxosReply {
                kind: REFUSED,
                ballot,
                promised,
                accepted: None,
            },
        }
    }
}

impl TryFrom<PaxosReply> for Reply {
    type Error = Error;

    fn try_from(reply: PaxosReply) -> Result<Self, Error> {
        let ballot = reply.ballot;
        match reply.kind {
            PROMISED => Ok(Reply::Promised {
                ballot,
                accepted: reply.accepted.map(|a| (a.ballot, a.value)),
            }),
            ACCEPTED => Ok(Reply::Accepted { ballot }),
            REFUSED => Ok(Reply::Refused {
                ballot,
                promised: reply.promised,
            }),
            other => Err(Error::Invalid(format!(
                "unknown acceptor reply kind {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_unknown_kinds_are_errors() {
        let replies = [
            Reply::Promised {
                ballot: 7,
                accepted: Some((3, b"v".to_vec())),
            },
            Reply::Promised {
                ballot: 7,
                accepted: None,
            },
            Reply::Accepted { ballot: 9 },
            Reply::Refused {
                ballot: 2,
                promised: 5,
            },
        ];
        for reply in replies {
            let wire = PaxosReply::from(reply.clone());
            assert_eq!(Reply::try_from(wire).ok(), Some(reply));
        }
        let bad = PaxosReply {
            kind: 99,
            ..PaxosReply::default()
        };
        assert!(Reply::try_from(bad).is_err());
        assert!(root_of(None).is_err());
    }
}
