//! The client API over gRPC (`megastore.v1.Megastore`, `docs/client-api.md`): schema
//! management, detached transactions (begin, reads, commit with buffered mutations,
//! a conflict answered ABORTED), reads in the three modes, index queries, and status.
//! [`server`] serves a replica's database; [`client::Client`] is the Rust client.

pub mod client;
pub mod messages;
pub mod server;

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod generated {
    include!(concat!(env!("OUT_DIR"), "/megastore.v1.Megastore.rs"));
}
