//! The client API's server (`megastore.v1.Megastore`): each request runs against one
//! replica's [`Database`] in tokio's blocking pool. Transactions are detached
//! (`database/detached.rs`): nothing is kept between a transaction's requests.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::generated::megastore_server::Megastore;
use super::messages::{
    entity_ref_of, group_of, how_to_read, range_of, values_from_wire, BeginRequest, CommitReply,
    CommitRequest, EntityMessage, GetReply, GetRequest, HowToRead, IndexHit, Member, QueryReply,
    QueryRequest, ScanReply, ScanRequest, SchemaReply, SchemaRequest, StatusReply, StatusRequest,
    Transaction,
};
use crate::remote::server::in_blocking_pool;
use crate::replicas::ReplicaKind;
use crate::{Database, Entity, Error, GroupKey, Mutation, ReadSet, Snapshot};

/// The client API over one replica.
pub struct ApiService {
    db: Arc<Database>,
}

impl ApiService {
    pub fn new(db: Arc<Database>) -> Self {
        ApiService { db }
    }

    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, Error> + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let db = self.db.clone();
        in_blocking_pool(move || work(&db)).await
    }
}

fn snapshot<'d>(db: &'d Database, group: &GroupKey, how: HowToRead) -> Result<Snapshot<'d>, Error> {
    match how {
        HowToRead::Transaction(token) => db.read_at(group, token),
        HowToRead::Mode(mode) => db.read(group, mode),
    }
}

fn schema_reply(db: &Database) -> Result<SchemaReply, Error> {
    // With changes made through other replicas; without a majority (or at a witness),
    // what this replica has.
    if let Err(e) = db.refresh_schema() {
        tracing::debug!("answering with this replica's schema, not refreshed: {e}");
    }
    let (version, text) = db.schema_text()?;
    Ok(SchemaReply {
        name: db.schema().name.clone(),
        version,
        text,
    })
}

pub fn kind_name(kind: ReplicaKind) -> &'static str {
    match kind {
        ReplicaKind::Full => "full",
        ReplicaKind::Witness => "witness",
        ReplicaKind::ReadOnly => "read-only",
    }
}

fn mutation_of(m: super::messages::Mutation) -> Result<Mutation, Error> {
    match (m.put, m.delete) {
        (Some(entity), None) => Ok(Mutation::Put(Entity::try_from(entity)?)),
        (None, Some(r)) => {
            let (table, key) = entity_ref_of(Some(r))?;
            Ok(Mutation::Delete { table, key })
        }
        _ => Err(Error::Invalid(
            "a mutation sets exactly one of put and delete".into(),
        )),
    }
}

#[tonic::async_trait]
impl Megastore for ApiService {
    async fn get_schema(
        &self,
        _request: Request<SchemaRequest>,
    ) -> Result<Response<SchemaReply>, Status> {
        self.run(schema_reply).await
    }

    async fn update_schema(
        &self,
        request: Request<SchemaRequest>,
    ) -> Result<Response<SchemaReply>, Status> {
        let text = request.into_inner().text;
        self.run(move |db| {
            db.update_schema(&text)?;
            schema_reply(db)
        })
        .await
    }

    async fn begin(&self, request: Request<BeginRequest>) -> Result<Response<Transaction>, Status> {
        let r = request.into_inner();
        self.run(move |db| Ok(db.begin(&group_of(r.group)?)?.into()))
            .await
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetReply>, Status> {
        let r = request.into_inner();
        self.run(move |db| {
            let group = group_of(r.group)?;
            let (table, key) = entity_ref_of(r.entity)?;
            let snapshot = snapshot(db, &group, how_to_read(r.options)?)?;
            let entity = snapshot.get(&table, &key)?;
            Ok(GetReply {
                entity: entity.as_ref().map(EntityMessage::from),
                position: snapshot.position().unwrap_or(0),
            })
        })
        .await
    }

    async fn scan(&self, request: Request<ScanRequest>) -> Result<Response<ScanReply>, Status> {
        let r = request.into_inner();
        self.run(move |db| {
            let group = group_of(r.group)?;
            let prefix = values_from_wire(r.prefix)?;
            let snapshot = snapshot(db, &group, how_to_read(r.options)?)?;
            let entities = snapshot.scan(&r.table, &prefix)?;
            Ok(ScanReply {
                entities: entities.iter().map(EntityMessage::from).collect(),
                position: snapshot.position().unwrap_or(0),
            })
        })
        .await
    }

    async fn query(&self, request: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        let r = request.into_inner();
        self.run(move |db| {
            let range = range_of(r.range)?;
            if r.group.is_none() {
                let stale = db.query_global(&r.index, &range)?;
                return Ok(QueryReply {
                    hits: stale.value.iter().map(IndexHit::from).collect(),
                    position: 0,
                    watermark: stale.watermark,
                });
            }
            let group = group_of(r.group)?;
            let snapshot = snapshot(db, &group, how_to_read(r.options)?)?;
            let hits = snapshot.query_local(&r.index, &range)?;
            Ok(QueryReply {
                hits: hits.iter().map(IndexHit::from).collect(),
                position: snapshot.position().unwrap_or(0),
                watermark: 0,
            })
        })
        .await
    }

    async fn commit(
        &self,
        request: Request<CommitRequest>,
    ) -> Result<Response<CommitReply>, Status> {
        let r = request.into_inner();
        self.run(move |db| {
            let group = group_of(r.group)?;
            let blind = r.reads.is_empty() && !r.read_whole_group;
            let token = match r.transaction {
                Some(t) => t.into(),
                // It read nothing, so it cannot conflict: it commits as of now.
                None if blind => db.begin_blind(&group)?,
                None => {
                    return Err(Error::Invalid(
                        "a commit that read names its transaction (Begin)".into(),
                    ))
                }
            };
            let reads = ReadSet {
                entities: r
                    .reads
                    .into_iter()
                    .map(|e| entity_ref_of(Some(e)))
                    .collect::<Result<_, _>>()?,
                whole_group: r.read_whole_group,
            };
            let mutations = r
                .mutations
                .into_iter()
                .map(mutation_of)
                .collect::<Result<_, _>>()?;
            match db.commit_detached(&group, token, &reads, mutations)? {
                Some(c) => Ok(CommitReply {
                    position: c.position,
                    timestamp: c.timestamp,
                    wrote: c.wrote,
                }),
                // Something it read was written after its read position.
                None => Err(Error::Conflict(token.position + 1)),
            }
        })
        .await
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        self.run(|db| {
            let (replica, members) = db.membership();
            let stats = db.stats();
            Ok(StatusReply {
                replica,
                members: members
                    .iter()
                    .map(|m| Member {
                        id: m.id,
                        kind: kind_name(m.kind).into(),
                    })
                    .collect(),
                schema: db.schema().name.clone(),
                schema_version: db.schema_version(),
                commits: stats.commits,
                conflicts: stats.conflicts,
                entries: stats.entries,
                entries_applied: stats.entries_applied,
            })
        })
        .await
    }
}
