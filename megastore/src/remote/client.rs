//! Reaching the other replicas over gRPC: [`GrpcTransport`] gives, for each member, a
//! [`GrpcPeer`] whose calls go to that member's replication server. Calls block the
//! calling thread (transactions and reads are synchronous) on the transport's own
//! small tokio runtime. A peer that does not answer within the timeout is an error,
//! which the proposer treats as a lost message.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Response, Status};

use super::generated::replication_client::ReplicationClient;
use super::messages::{
    AcceptBatch, AcceptRequest, ApplyBatch, ApplyRequest, Group, GroupRequest, PositionRequest,
    PrepareRequest,
};
use super::outbox::{drain, Outbox, MAX_WAITING};
use super::MAX_MESSAGE_BYTES;
use crate::auth::AddToken;
use crate::paxos::proposer::{Reply, Request};
use crate::replica::RootRow;
use crate::replicas::{Peer, Transport};
use crate::replication::{Acceptor, Answer};
use crate::tls::ClientTls;
use crate::Error;

/// The members' replication servers, by member index.
pub struct GrpcTransport {
    peers: Vec<Option<Arc<GrpcPeer>>>,
}

impl GrpcTransport {
    /// `addresses[m]` is where member `m`'s replication server listens (`host:port`),
    /// `None` for this replica itself. Connections are made on first use, and again
    /// after a failure; `timeout` bounds each call and each connection attempt.
    /// `token`: the bearer token the servers require, if any; `tls`: what their
    /// certificates must chain to, when they serve TLS.
    pub fn new(
        addresses: &[Option<String>],
        timeout: Duration,
        token: Option<&str>,
        tls: Option<&ClientTls>,
    ) -> Result<Self, Error> {
        // One thread: its work per call is small, and a second one costs more in
        // wake-ups (each spawned call may wake both) than it adds.
        let runtime = client_runtime("megastore-replication-client", 1)?;
        let add_token = AddToken::new(token)?;
        let mut peers = Vec::with_capacity(addresses.len());
        for (member, address) in addresses.iter().enumerate() {
            let Some(address) = address else {
                peers.push(None);
                continue;
            };
            let channel = lazy_channel(&runtime, address, timeout, tls)?;
            let client = ReplicationClient::with_interceptor(channel, add_token.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            peers.push(Some(Arc::new(GrpcPeer {
                member,
                client,
                runtime: runtime.clone(),
                accepts: Arc::new(Outbox::unbounded()),
                applies: Arc::new(Outbox::bounded(MAX_WAITING)),
            })));
        }
        Ok(GrpcTransport { peers })
    }
}

/// A small runtime that a client's calls run on, with `threads` worker threads.
pub(crate) fn client_runtime(
    name: &str,
    threads: usize,
) -> Result<Arc<tokio::runtime::Runtime>, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Invalid(format!("cannot start the client runtime: {e}")))
}

/// A channel to `address` (`host:port`) that connects on first use, and again after
/// a failure; `timeout` bounds each call and each connection attempt. Over TLS when
/// `tls` is given.
pub(crate) fn lazy_channel(
    runtime: &tokio::runtime::Runtime,
    address: &str,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Channel, Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
        .map_err(|e| Error::Invalid(format!("bad address {address}: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true);
    let endpoint = match tls {
        Some(tls) => tls.apply(endpoint)?,
        None => endpoint,
    };
    let _inside = runtime.enter();
    Ok(endpoint.connect_lazy())
}

/// What a `Cluster` (`Cluster::open_wrapped`) needs so that its replicas reach each
/// other only through their replication servers at `addresses` (one per member),
/// over TLS when `tls` is given.
pub fn cluster_wrapper(
    addresses: &[String],
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Arc<crate::cluster::TransportWrapper>, Error> {
    let transports = (0..addresses.len())
        .map(|me| {
            let others: Vec<Option<String>> = (0..addresses.len())
                .map(|m| (m != me).then(|| addresses[m].clone()))
                .collect();
            GrpcTransport::new(&others, timeout, None, tls).map(Arc::new)
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Ok(Arc::new(move |me, in_process| match transports.get(me) {
        Some(t) => t.clone() as Arc<dyn Transport>,
        None => in_process as Arc<dyn Transport>,
    }))
}

impl Transport for GrpcTransport {
    fn peer(&self, member: usize) -> Result<Arc<dyn Peer>, Error> {
        match self.peers.get(member) {
            Some(Some(peer)) => Ok(peer.clone()),
            _ => Err(Error::Invalid(format!(
                "member {member} has no replication server address"
            ))),
        }
    }
}

/// One member's replication server.
pub struct GrpcPeer {
    member: usize,
    client: ReplicationClient<InterceptedService<Channel, AddToken>>,
    runtime: Arc<tokio::runtime::Runtime>,
    /// Accepts waiting for the next `AcceptBatch` call, each with its answer.
    accepts: Arc<Outbox<(AcceptRequest, Answer)>>,
    applies: Arc<Outbox<ApplyRequest>>,
}

impl GrpcPeer {
    /// Runs one call to completion on the client runtime.
    fn call<T, F>(
        &self,
        call: impl FnOnce(ReplicationClient<InterceptedService<Channel, AddToken>>) -> F,
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        let answer = self.runtime.block_on(call(self.client.clone()));
        answer
            .map(Response::into_inner)
            .map_err(|status| error_of(&format!("replica {}", self.member), &status))
    }
}

/// The error a failed call means: the request was refused as it stands (invalid,
/// unauthenticated, too large), a conflict, or the server could not be reached or
/// could not answer (`Unavailable`: the outcome of a write is then unknown).
pub fn error_of(who: &str, status: &Status) -> Error {
    use tonic::Code;
    // Why a connection failed (refused, closed, TLS) may be only in the causes.
    let why = format!(
        "{who}: {}",
        said_and_causes(status.message(), std::error::Error::source(status))
    );
    match status.code() {
        Code::InvalidArgument
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::OutOfRange
        | Code::ResourceExhausted
        | Code::FailedPrecondition
        | Code::Unimplemented => Error::Invalid(format!("{why} ({:?})", status.code())),
        Code::Aborted => Error::Conflict(0),
        _ => Error::Unavailable(why),
    }
}

/// `e` and its causes, one after another.
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    said_and_causes(&e.to_string(), e.source())
}

/// `said`, then each cause that it does not say already: tonic's errors often repeat
/// their causes' words, or say only "transport error".
fn said_and_causes(said: &str, mut cause: Option<&dyn std::error::Error>) -> String {
    let mut text = String::new();
    append_new(&mut text, said);
    while let Some(c) = cause {
        append_new(&mut text, &c.to_string());
        cause = c.source();
    }
    if text.is_empty() {
        text.push_str(said);
    }
    text
}

fn append_new(text: &mut String, part: &str) {
    if part == "transport error" || text.contains(part) {
        return;
    }
    if !text.is_empty() {
        text.push_str(": ");
    }
    text.push_str(part);
}

fn group(root: &RootRow) -> Option<Group> {
    Some(Group::from(root))
}

impl GrpcPeer {
    /// Queues an accept for the next `AcceptBatch` call to this peer, starting a
    /// sender task if none is running.
    fn send_accept(&self, request: AcceptRequest, answer: Answer) {
        if !self.accepts.push((request, answer)) {
            return; // the running sender takes it
        }
        let (client, member) = (self.client.clone(), self.member);
        self.runtime
            .spawn(drain(self.accepts.clone(), move |batch| {
                let mut client = client.clone();
                async move {
                    let (accepts, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                    let mut replies = match client.accept_batch(AcceptBatch { accepts }).await {
                        Ok(reply) => reply.into_inner().replies.into_iter(),
                        Err(status) => {
                            let e = error_of(&format!("replica {member}"), &status);
                            tracing::debug!(
                                "replica did not answer {} accepts: {e}",
                                answers.len()
                            );
                            Vec::new().into_iter()
                        }
                    };
                    for answer in answers {
                        // A missing or failed reply is a lost message.
                        answer(replies.next().and_then(|r| Reply::try_from(r).ok()));
                    }
                }
            }));
    }
}

impl Acceptor for GrpcPeer {
    /// Sent from the client runtime: no thread waits for the network. Accepts go in
    /// batches (see [`GrpcPeer::send_accept`]).
    fn send(self: Arc<Self>, root: RootRow, position: u64, request: Request, answer: Answer) {
        let group = group(&root);
        let ballot = match request {
            Request::Accept { ballot, value } => {
                let request = AcceptRequest {
                    group,
                    position,
                    ballot,
                    value,
                };
                return self.send_accept(request, answer);
            }
            Request::Prepare { ballot } => ballot,
        };
        let mut client = self.client.clone();
        let member = self.member;
        self.runtime.spawn(async move {
            let request = PrepareRequest {
                group,
                position,
                ballot,
            };
            let reply = match client.prepare(request).await {
                Ok(reply) => Reply::try_from(reply.into_inner()),
                Err(status) => Err(error_of(&format!("replica {member}"), &status)),
            };
            if let Err(e) = &reply {
                tracing::debug!("replica did not answer: {e}");
            }
            answer(reply.ok());
        });
    }

    fn prepare(&self, root: &RootRow, position: u64, ballot: u64) -> Result<Reply, Error> {
        let request = PrepareRequest {
            group: group(root),
            position,
            ballot,
        };
        let reply = self.call(|mut c| async move { c.prepare(request).await })?;
        Reply::try_from(reply)
    }

    fn accept(
        &self,
        root: &RootRow,
        position: u64,
        ballot: u64,
        value: &[u8],
    ) -> Result<Reply, Error> {
        let request = AcceptRequest {
            group: group(root),
            position,
            ballot,
            value: value.to_vec(),
        };
        let reply = self.call(|mut c| async move { c.accept(request).await })?;
        Reply::try_from(reply)
    }

    fn highest_position(&self, root: &RootRow) -> Result<u64, Error> {
        let request = GroupRequest { group: group(root) };
        let reply = self.call(|mut c| async move { c.highest_position(request).await })?;
        Ok(reply.position)
    }

    fn chosen_value(&self, root: &RootRow, position: u64) -> Result<Option<Vec<u8>>, Error> {
        let request = PositionRequest {
            group: group(root),
            position,
        };
        let reply = self.call(|mut c| async move { c.chosen_value(request).await })?;
        Ok(reply.value)
    }
}

impl Peer for GrpcPeer {
    fn apply(&self, root: &RootRow, position: u64, value: &[u8]) -> Result<(), Error> {
        let request = ApplyRequest {
            group: group(root),
            position,
            value: value.to_vec(),
        };
        self.call(|mut c| async move { c.apply(request).await })?;
        Ok(())
    }

    fn invalidate(&self, root: &RootRow, position: u64) -> Result<(), Error> {
        let request = PositionRequest {
            group: group(root),
            position,
        };
        self.call(|mut c| async move { c.invalidate(request).await })?;
        Ok(())
    }

    /// Queued in the peer's outbox; a sender task sends what accumulates in batches.
    fn apply_in_background(self: Arc<Self>, root: RootRow, position: u64, value: Vec<u8>) {
        let request = ApplyRequest {
            group: group(&root),
            position,
            value,
        };
        if !self.applies.push(request) {
            return; // the running sender takes it
        }
        let (client, member) = (self.client.clone(), self.member);
        self.runtime
            .spawn(drain(self.applies.clone(), move |applies| {
                let mut client = client.clone();
                async move {
                    let count = applies.len();
                    if let Err(status) = client.apply_batch(ApplyBatch { applies }).await {
                        tracing::debug!("{count} applies deferred at replica {member}: {status}");
                    }
                }
            }));
    }

    fn durable_applied(&self, root: &RootRow) -> Result<u64, Error> {
        let request = GroupRequest { group: group(root) };
        let reply = self.call(|mut c| async move { c.durable_applied(request).await })?;
        Ok(reply.position)
    }
}
