//! Replicas in different processes: the replication service over gRPC
//! (`docs/replication-protocol.md`). [`server`] serves a replica's [`crate::replicas::Peer`]
//! to the others; [`client::GrpcTransport`] is the [`crate::replicas::Transport`] that
//! reaches them, the same trait the in-process cluster and the simulator use.

pub mod client;
pub mod latency;
pub mod messages;
pub mod outbox;
pub mod server;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod generated {
    include!(concat!(
        env!("OUT_DIR"),
        "/megastore.replication.v1.Replication.rs"
    ));
}

/// Largest request or response: a log entry travels in one message.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;
