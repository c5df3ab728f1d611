//! The Rust client of the client API. Calls block the calling thread, as the embedded
//! API does, which drives the client's single-threaded runtime meanwhile. It must not
//! be called from inside an async runtime. A transaction ([`RemoteTransaction`])
//! begins at a read position, reads there, buffers its writes, and commits them with
//! the list of what it read; [`Client::transact`] runs a closure as one and runs it
//! again on a conflict, like `Database::transact`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Response, Status};

use super::generated::megastore_client::MegastoreClient;
use super::messages::{
    self as wire, mode_to_wire, range_to_wire, values_to_wire, BeginRequest, CommitRequest,
    EntityMessage, EntityRef, GetRequest, QueryRequest, ReadOptions, ScanRequest, SchemaRequest,
    StatusReply, StatusRequest,
};
use crate::auth::AddToken;
use crate::node::MAX_API_MESSAGE_BYTES;
use crate::remote::client::{error_of, lazy_channel};
use crate::tls::ClientTls;
use crate::{Committed, Entity, Error, GroupKey, IndexHit, ReadMode, Stale, Value, ValueRange};

/// How a TLS listener's refusal looks to a plaintext client, depending on how far it got:
/// the connection closes, resets or breaks, or the TLS alert sent first reads as a
/// malformed HTTP/2 frame.
const HUNG_UP: [&str; 4] = [
    "connection closed",
    "connection reset",
    "broken pipe",
    "h2 protocol error",
];

type Stub = MegastoreClient<InterceptedService<Channel, AddToken>>;

/// A connection to one replica's client API.
#[derive(Clone)]
pub struct Client {
    address: String,
    tls: bool,
    /// It presents a client certificate.
    presents_certificate: bool,
    stub: Stub,
    runtime: Arc<tokio::runtime::Runtime>,
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Bounds each call and each connection attempt.
    pub timeout: Duration,
    /// The bearer token the server requires, if any.
    pub token: Option<String>,
    /// How many times [`Client::transact`] runs its closure before giving up.
    pub max_attempts: u32,
    /// What the server's certificate must chain to, when it serves TLS.
    pub tls: Option<ClientTls>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            token: None,
            max_attempts: 32,
            tls: None,
        }
    }
}

/// What the schema calls answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaInfo {
    pub name: String,
    pub version: u64,
    pub text: String,
}

impl Client {
    /// A client of the replica at `address` (`host:port`); it connects on first use.
    pub fn connect(address: &str, options: &ClientOptions) -> Result<Self, Error> {
        // A calling thread drives the connection itself while it waits (several may
        // call at once: each runs its own request, one at a time the connection), which
        // saves the hand-offs to and from worker threads: about 70 µs of a 1.3 ms write
        // at p50 (docs/benchmarks.md).
        let runtime = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::Invalid(format!("cannot start the client runtime: {e}")))?,
        );
        let channel = lazy_channel(&runtime, address, options.timeout, options.tls.as_ref())?;
        let stub =
            MegastoreClient::with_interceptor(channel, AddToken::new(options.token.as_deref())?)
                .max_decoding_message_size(MAX_API_MESSAGE_BYTES)
                // Larger than the server takes, so that the server's answer says why.
                .max_encoding_message_size(crate::remote::MAX_MESSAGE_BYTES);
        Ok(Client {
            address: address.to_string(),
            tls: options.tls.is_some(),
            presents_certificate: options
                .tls
                .as_ref()
                .is_some_and(ClientTls::presents_certificate),
            stub,
            runtime,
        })
    }

    fn call<T, F>(&self, call: impl FnOnce(Stub) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<Response<T>, Status>>,
    {
        self.runtime
            .block_on(call(self.stub.clone()))
            .map(Response::into_inner)
            .map_err(|status| self.error(&status))
    }

    /// What a failed call means. A TLS listener hangs up on a plaintext client, which
    /// then sees only a broken connection: that error says what may be why.
    fn error(&self, status: &Status) -> Error {
        match error_of(&self.address, status) {
            Error::Unavailable(m) if !self.tls && HUNG_UP.iter().any(|s| m.contains(s)) => {
                Error::Unavailable(format!(
                    "{m} (a server that serves TLS closes plaintext connections: \
                     connect over TLS with its CA, ClientOptions::tls or --tls-ca)"
                ))
            }
            Error::Unavailable(m)
                if self.tls
                    && !self.presents_certificate
                    && (m.contains("CertificateRequired")
                        || HUNG_UP.iter().any(|s| m.contains(s))) =>
            {
                Error::Unavailable(format!(
                    "{m} (a server that requires client certificates closes connections \
                     without one: ClientTls::with_certificate, or --tls-client-cert and \
                     --tls-client-key)"
                ))
            }
            e => e,
        }
    }

    pub fn schema(&self) -> Result<SchemaInfo, Error> {
        let r = self.call(|mut c| async move { c.get_schema(SchemaRequest::default()).await })?;
        Ok(SchemaInfo {
            name: r.name,
            version: r.version,
            text: r.text,
        })
    }

    /// Replaces the schema with `text` (which may only add to it).
    pub fn update_schema(&self, text: &str) -> Result<SchemaInfo, Error> {
        let request = SchemaRequest { text: text.into() };
        let r = self.call(|mut c| async move { c.update_schema(request).await })?;
        Ok(SchemaInfo {
            name: r.name,
            version: r.version,
            text: r.text,
        })
    }

    pub fn status(&self) -> Result<StatusReply, Error> {
        self.call(|mut c| async move { c.status(StatusRequest {}).await })
    }

    /// The entity of `table` with key `key` in `group`, read in `mode`.
    pub fn get(
        &self,
        group: &GroupKey,
        table: &str,
        key: &[Value],
        mode: ReadMode,
    ) -> Result<Option<Entity>, Error> {
        self.get_with(group, table, key, mode_options(mode))
    }

    fn get_with(
        &self,
        group: &GroupKey,
        table: &str,
        key: &[Value],
        options: ReadOptions,
    ) -> Result<Option<Entity>, Error> {
        let request = GetRequest {
            group: Some(group.into()),
            entity: Some(entity_ref(table, key)),
            options: Some(options),
        };
        let reply = self.call(|mut c| async move { c.get(request).await })?;
        reply.entity.map(Entity::try_from).transpose()
    }

    /// The entities of `table` in `group` whose key starts with `prefix`.
    pub fn scan(
        &self,
        group: &GroupKey,
        table: &str,
        prefix: &[Value],
        mode: ReadMode,
    ) -> Result<Vec<Entity>, Error> {
        self.scan_with(group, table, prefix, mode_options(mode))
    }

    fn scan_with(
        &self,
        group: &GroupKey,
        table: &str,
        prefix: &[Value],
        options: ReadOptions,
    ) -> Result<Vec<Entity>, Error> {
        let request = ScanRequest {
            group: Some(group.into()),
            table: table.into(),
            prefix: values_to_wire(prefix),
            options: Some(options),
        };
        let reply = self.call(|mut c| async move { c.scan(request).await })?;
        reply.entities.into_iter().map(Entity::try_from).collect()
    }

    /// A local index's entries in `group` within `range`.
    pub fn query_local(
        &self,
        group: &GroupKey,
        index: &str,
        range: &ValueRange,
        mode: ReadMode,
    ) -> Result<Vec<IndexHit>, Error> {
        self.query_local_with(group, index, range, mode_options(mode))
    }

    fn query_local_with(
        &self,
        group: &GroupKey,
        index: &str,
        range: &ValueRange,
        options: ReadOptions,
    ) -> Result<Vec<IndexHit>, Error> {
        let request = QueryRequest {
            group: Some(group.into()),
            index: index.into(),
            range: Some(range_to_wire(range)),
            options: Some(options),
        };
        let reply = self.call(|mut c| async move { c.query(request).await })?;
        reply.hits.into_iter().map(IndexHit::try_from).collect()
    }

    /// A global index's entries within `range`, as of the returned watermark.
    pub fn query_global(
        &self,
        index: &str,
        range: &ValueRange,
    ) -> Result<Stale<Vec<IndexHit>>, Error> {
        let request = QueryRequest {
            group: None,
            index: index.into(),
            range: Some(range_to_wire(range)),
            options: None,
        };
        let reply = self.call(|mut c| async move { c.query(request).await })?;
        Ok(Stale {
            value: reply
                .hits
                .into_iter()
                .map(IndexHit::try_from)
                .collect::<Result<_, _>>()?,
            watermark: reply.watermark,
        })
    }

    /// Begins a transaction on `group`.
    pub fn begin(&self, group: &GroupKey) -> Result<RemoteTransaction<'_>, Error> {
        let request = BeginRequest {
            group: Some(group.into()),
        };
        let token = self.call(|mut c| async move { c.begin(request).await })?;
        Ok(RemoteTransaction {
            client: self,
            group: group.clone(),
            token,
            reads: Vec::new(),
            whole_group: false,
            mutations: Vec::new(),
        })
    }

    /// The replica's address, as given to [`Client::connect`].
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Commits `entities` to `group` as a blind write: a transaction that read nothing,
    /// so one round trip and never a conflict.
    pub fn write(&self, group: &GroupKey, entities: &[Entity]) -> Result<Committed, Error> {
        let request = CommitRequest {
            group: Some(group.into()),
            transaction: None,
            reads: Vec::new(),
            read_whole_group: false,
            mutations: entities.iter().map(put_of).collect(),
        };
        self.commit(request)
    }

    fn commit(&self, request: CommitRequest) -> Result<Committed, Error> {
        let reply = self.call(|mut c| async move { c.commit(request).await })?;
        Ok(Committed {
            position: reply.position,
            timestamp: reply.timestamp,
            wrote: reply.wrote,
            attempts: 1,
        })
    }

    /// Runs `f` as a transaction on `group` and commits it; on a conflict, runs it
    /// again from a new begin, up to `max_attempts` times in all.
    pub fn transact<R>(
        &self,
        group: &GroupKey,
        max_attempts: u32,
        mut f: impl FnMut(&mut RemoteTransaction<'_>) -> Result<R, Error>,
    ) -> Result<(R, Committed), Error> {
        let attempts = max_attempts.max(1);
        for attempt in 1..=attempts {
            let mut tx = self.begin(group)?;
            let result = f(&mut tx)?;
            match tx.commit() {
                Ok(committed) => {
                    return Ok((
                        result,
                        Committed {
                            attempts: attempt,
                            ..committed
                        },
                    ))
                }
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::TooManyConflicts { attempts })
    }
}

fn mode_options(mode: ReadMode) -> ReadOptions {
    ReadOptions {
        mode: mode_to_wire(mode),
        transaction: None,
    }
}

fn entity_ref(table: &str, key: &[Value]) -> EntityRef {
    EntityRef {
        table: table.into(),
        key: values_to_wire(key),
    }
}

/// A transaction in progress at a server: reads at its begin position, writes kept
/// here until [`RemoteTransaction::commit`].
pub struct RemoteTransaction<'c> {
    client: &'c Client,
    group: GroupKey,
    token: wire::Transaction,
    reads: Vec<EntityRef>,
    whole_group: bool,
    mutations: Vec<wire::Mutation>,
}

impl RemoteTransaction<'_> {
    /// The log position the transaction reads at.
    pub fn position(&self) -> u64 {
        self.token.position
    }

    fn options(&self) -> ReadOptions {
        ReadOptions {
            mode: 0,
            transaction: Some(self.token.clone()),
        }
    }

    pub fn get(&mut self, table: &str, key: &[Value]) -> Result<Option<Entity>, Error> {
        self.reads.push(entity_ref(table, key));
        self.client
            .get_with(&self.group, table, key, self.options())
    }

    /// A scan reads the whole group: any write to the group since the begin conflicts.
    pub fn scan(&mut self, table: &str, prefix: &[Value]) -> Result<Vec<Entity>, Error> {
        self.whole_group = true;
        self.client
            .scan_with(&self.group, table, prefix, self.options())
    }

    /// A query reads the whole group, as a scan does.
    pub fn query_local(&mut self, index: &str, range: &ValueRange) -> Result<Vec<IndexHit>, Error> {
        self.whole_group = true;
        self.client
            .query_local_with(&self.group, index, range, self.options())
    }

    pub fn put(&mut self, entity: &Entity) {
        self.mutations.push(put_of(entity));
    }

    pub fn delete(&mut self, table: &str, key: &[Value]) {
        self.mutations.push(wire::Mutation {
            put: None,
            delete: Some(entity_ref(table, key)),
        });
    }

    /// Commits the buffered writes. `Err(Error::Conflict)`: something it read was
    /// written since its begin; nothing was written.
    pub fn commit(self) -> Result<Committed, Error> {
        let request = CommitRequest {
            group: Some((&self.group).into()),
            transaction: Some(self.token),
            reads: self.reads,
            read_whole_group: self.whole_group,
            mutations: self.mutations,
        };
        self.client.commit(request)
    }
}

fn put_of(entity: &Entity) -> wire::Mutation {
    wire::Mutation {
        put: Some(EntityMessage::from(entity)),
        delete: None,
    }
}
