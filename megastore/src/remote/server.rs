//! The replication server: a stateless gRPC service in each replica process that
//! performs, against the local replica, what remote writers and readers ask of it
//! (prepare, accept, the log's end, chosen values, apply, invalidate, durable applied).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::generated::replication_server::{Replication, ReplicationServer};
use super::messages::{
    root_of, AcceptRequest, ApplyRequest, Empty, GroupRequest, PaxosReply, PositionReply,
    PositionRequest, PrepareRequest, ValueReply,
};
use super::MAX_MESSAGE_BYTES;
use crate::replicas::Peer;
use crate::Error;

/// The service over one replica.
pub struct ReplicationService {
    peer: Arc<dyn Peer>,
}

impl ReplicationService {
    pub fn new(peer: Arc<dyn Peer>) -> Self {
        ReplicationService { peer }
    }

    /// Runs `work` on the replica in tokio's blocking pool (it reads and writes the
    /// engine, and a synced write waits for an fsync).
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&dyn Peer) -> Result<T, Error> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let peer = self.peer.clone();
        tokio::task::spawn_blocking(move || work(peer.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("request task failed: {e}")))?
            .map(Response::new)
            .map_err(status_of)
    }
}

/// The gRPC status for a replica's error.
pub fn status_of(e: Error) -> Status {
    match e {
        Error::Invalid(m) => Status::invalid_argument(m),
        Error::Unavailable(m) => Status::unavailable(m),
        Error::Conflict(_) | Error::TooManyConflicts { .. } => Status::aborted(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn prepare(
        &self,
        request: Request<PrepareRequest>,
    ) -> Result<Response<PaxosReply>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            let root = root_of(r.group)?;
            Ok(peer.prepare(&root, r.position, r.ballot)?.into())
        })
        .await
    }

    async fn accept(
        &self,
        request: Request<AcceptRequest>,
    ) -> Result<Response<PaxosReply>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            let root = root_of(r.group)?;
            Ok(peer.accept(&root, r.position, r.ballot, &r.value)?.into())
        })
        .await
    }

    async fn highest_position(
        &self,
        request: Request<GroupRequest>,
    ) -> Result<Response<PositionReply>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            let position = peer.highest_position(&root_of(r.group)?)?;
            Ok(PositionReply { position })
        })
        .await
    }

    async fn chosen_value(
        &self,
        request: Request<PositionRequest>,
    ) -> Result<Response<ValueReply>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            let value = peer.chosen_value(&root_of(r.group)?, r.position)?;
            Ok(ValueReply { value })
        })
        .await
    }

    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            peer.apply(&root_of(r.group)?, r.position, &r.value)?;
            Ok(Empty {})
        })
        .await
    }

    async fn invalidate(
        &self,
        request: Request<PositionRequest>,
    ) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            peer.invalidate(&root_of(r.group)?, r.position)?;
            Ok(Empty {})
        })
        .await
    }

    async fn durable_applied(
        &self,
        request: Request<GroupRequest>,
    ) -> Result<Response<PositionReply>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            let position = peer.durable_applied(&root_of(r.group)?)?;
            Ok(PositionReply { position })
        })
        .await
    }
}

/// Serves `peer`'s replication service on `listener` until `shutdown` completes.
pub async fn serve(
    peer: Arc<dyn Peer>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = ReplicationServer::new(ReplicationService::new(peer))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    // A Paxos round is a few small messages: Nagle's algorithm would hold each back.
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(bigtable::server::incoming_nodelay(listener), shutdown)
        .await
}

/// Serves `peer` on `listener` (bound already, so that its address is known first)
/// from `runtime`, until the runtime shuts down.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    peer: Arc<dyn Peer>,
    listener: std::net::TcpListener,
) -> Result<(), Error> {
    let unusable = |e: std::io::Error| Error::Invalid(format!("cannot serve on the listener: {e}"));
    listener.set_nonblocking(true).map_err(unusable)?;
    let listener = {
        let _inside = runtime.enter();
        TcpListener::from_std(listener).map_err(unusable)?
    };
    runtime.spawn(async move {
        if let Err(e) = serve(peer, listener, std::future::pending()).await {
            tracing::error!("the replication server stopped: {e}");
        }
    });
    Ok(())
}
