//! The replication server: a stateless gRPC service in each replica process that
//! performs, against the local replica, what remote writers and readers ask of it
//! (prepare, accept, the log's end, chosen values, apply, invalidate, durable applied).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::generated::replication_server::Replication;
use super::messages::{
    root_of, AcceptBatch, AcceptBatchReply, AcceptRequest, ApplyBatch, ApplyRequest, Empty,
    GroupRequest, PaxosReply, PositionReply, PositionRequest, PrepareRequest, ValueReply,
};
use crate::catalog::CatalogError;
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

    /// Runs `work` on the replica, on the server's own thread. Unlike a client request
    /// (see [`in_blocking_pool`]), it only reads and writes the local engine (it may
    /// wait for an fsync, never for another replica), so a request of one replica can
    /// never wait for a server thread that waits for it: no cycle across processes.
    /// Handing it to another thread would cost two thread switches per request.
    fn run<T>(
        &self,
        work: impl FnOnce(&dyn Peer) -> Result<T, Error>,
    ) -> Result<Response<T>, Status> {
        work(self.peer.as_ref())
            .map(Response::new)
            .map_err(status_of)
    }
}

/// Runs a request's `work` in tokio's blocking pool (it reads and writes the engine,
/// and may wait for an fsync or for other replicas), and answers with its result.
pub(crate) async fn in_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<Response<T>, Status> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Status::internal(format!("request task failed: {e}")))?
        .map(Response::new)
        .map_err(status_of)
}

/// The gRPC status for a replica's error.
pub fn status_of(e: Error) -> Status {
    match e {
        Error::Invalid(m) => Status::invalid_argument(m),
        Error::Unavailable(m) => Status::unavailable(m),
        Error::Conflict(_)
        | Error::TooManyConflicts { .. }
        | Error::Locked { .. }
        | Error::SnapshotTooOld(_) => Status::aborted(e.to_string()),
        Error::Key(_) => Status::invalid_argument(e.to_string()),
        Error::Catalog(CatalogError::Storage(_) | CatalogError::Damaged(..)) => {
            Status::internal(e.to_string())
        }
        Error::Catalog(CatalogError::Conflict(_)) => Status::aborted(e.to_string()),
        Error::Catalog(_) => Status::invalid_argument(e.to_string()),
        Error::IndexNotReady(_) => Status::failed_precondition(e.to_string()),
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
    }

    async fn accept_batch(
        &self,
        request: Request<AcceptBatch>,
    ) -> Result<Response<AcceptBatchReply>, Status> {
        let accepts = request
            .into_inner()
            .accepts
            .into_iter()
            .map(|a| Ok((root_of(a.group)?, a.position, a.ballot, a.value)))
            .collect::<Result<Vec<_>, Error>>()
            .map_err(status_of)?;
        self.run(move |peer| {
            let replies = peer
                .accept_batch(&accepts)
                .into_iter()
                .map(|reply| match reply {
                    Ok(reply) => reply.into(),
                    Err(e) => {
                        tracing::debug!("an accept of a batch failed: {e}");
                        PaxosReply::default()
                    }
                })
                .collect();
            Ok(AcceptBatchReply { replies })
        })
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
    }

    async fn apply(&self, request: Request<ApplyRequest>) -> Result<Response<Empty>, Status> {
        let r = request.into_inner();
        self.run(move |peer| {
            peer.apply(&root_of(r.group)?, r.position, &r.value)?;
            Ok(Empty {})
        })
    }

    async fn apply_batch(&self, request: Request<ApplyBatch>) -> Result<Response<Empty>, Status> {
        let applies = request
            .into_inner()
            .applies
            .into_iter()
            .map(|a| Ok((root_of(a.group)?, a.position, a.value)))
            .collect::<Result<Vec<_>, Error>>()
            .map_err(status_of)?;
        self.run(move |peer| {
            peer.apply_batch(&applies);
            Ok(Empty {})
        })
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_refusals_are_aborted_and_bad_input_is_invalid() {
        let code = |e: Error| status_of(e).code();
        assert_eq!(code(Error::Conflict(3)), tonic::Code::Aborted);
        assert_eq!(code(Error::Locked { txid: 9 }), tonic::Code::Aborted);
        assert_eq!(
            code(Error::Invalid("x".into())),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            code(Error::Unavailable("x".into())),
            tonic::Code::Unavailable
        );
    }
}
