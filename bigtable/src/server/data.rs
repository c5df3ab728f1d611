//! `google.bigtable.v2.Bigtable`: reads and writes of rows. Engine calls block (a commit
//! waits for its log sync), so each runs on tokio's blocking pool; ReadRows streams rows
//! from a snapshot through a bounded channel, so a slow client holds back the reader
//! instead of filling memory.

use std::pin::Pin;
use std::sync::Arc;

use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use googleapis_tonic_google_rpc::google::rpc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::chunks::row_chunks;
use super::convert::{self, invalid, status};
use super::generated::data::bigtable_server::Bigtable;
use super::names::table_name;
use super::SharedEngine;
use crate::engine::{Engine, ReadRequest, RowMutations};

/// A ReadRows response carries rows until its chunks hold about this many value bytes.
const RESPONSE_BYTES: usize = 1 << 20;
/// Responses buffered ahead of a slow client.
const STREAM_DEPTH: usize = 4;

pub struct DataService {
    engine: SharedEngine,
}

impl DataService {
    pub fn new(engine: Arc<Engine>) -> Self {
        DataService {
            engine: SharedEngine(engine),
        }
    }
}

/// Reads of at most this many single rows are answered in one response, in place.
const POINT_READ_KEYS: usize = 100;

type Streaming<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn read_request(r: pb::ReadRowsRequest) -> Result<ReadRequest, Status> {
    let limit = match r.rows_limit {
        0 => None,
        n if n < 0 => return Err(invalid(format!("rows_limit must not be negative, got {n}"))),
        n => Some(n as u64),
    };
    Ok(ReadRequest {
        rows: convert::row_set(r.rows),
        filter: r.filter.map(convert::filter).transpose()?,
        limit,
        reverse: r.reversed,
    })
}

/// Reads `request` from a snapshot of `table`, sending responses until the rows end,
/// the client goes away, or an error (sent as the stream's last item).
fn stream_rows(
    engine: &Engine,
    table: &str,
    request: &ReadRequest,
    tx: &mpsc::Sender<Result<pb::ReadRowsResponse, Status>>,
) -> Result<(), Status> {
    let snapshot = engine.snapshot(table).map_err(status)?;
    let rows = snapshot.read_rows(request).map_err(status)?;
    let mut chunks = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let row = row.map_err(status)?;
        bytes += row.cells.iter().map(|c| c.value.len() + 64).sum::<usize>();
        row_chunks(row, &mut chunks);
        if bytes >= RESPONSE_BYTES {
            let response = pb::ReadRowsResponse {
                chunks: std::mem::take(&mut chunks),
                ..Default::default()
            };
            if tx.blocking_send(Ok(response)).is_err() {
                return Ok(()); // the client cancelled
            }
            bytes = 0;
        }
    }
    if !chunks.is_empty() {
        let _ = tx.blocking_send(Ok(pb::ReadRowsResponse {
            chunks,
            ..Default::default()
        }));
    }
    Ok(())
}

/// A read of a few single rows, as one response (`None`: no row found).
fn point_reads(
    engine: &Engine,
    table: &str,
    request: &ReadRequest,
) -> Result<Option<pb::ReadRowsResponse>, Status> {
    let snapshot = engine.snapshot(table).map_err(status)?;
    let mut chunks = Vec::new();
    for row in snapshot.read_rows(request).map_err(status)? {
        row_chunks(row.map_err(status)?, &mut chunks);
    }
    Ok((!chunks.is_empty()).then(|| pb::ReadRowsResponse {
        chunks,
        ..Default::default()
    }))
}

/// A MutateRows entry's status (OK for success).
fn rpc_status(result: Result<(), Status>) -> rpc::Status {
    match result {
        Ok(()) => rpc::Status::default(),
        Err(s) => rpc::Status {
            code: s.code() as i32,
            message: s.message().to_string(),
            details: Vec::new(),
        },
    }
}

#[tonic::async_trait]
impl Bigtable for DataService {
    type ReadRowsStream = Streaming<pb::ReadRowsResponse>;
    type SampleRowKeysStream = Streaming<pb::SampleRowKeysResponse>;
    type MutateRowsStream = Streaming<pb::MutateRowsResponse>;

    async fn read_rows(
        &self,
        request: Request<pb::ReadRowsRequest>,
    ) -> Result<Response<Self::ReadRowsStream>, Status> {
        let r = request.into_inner();
        let table = table_name(&r.table_name)?;
        let read = read_request(r)?;
        // Fail fast (NOT_FOUND) before the stream starts.
        self.engine.0.schema(&table).map_err(status)?;
        if read.rows.ranges.is_empty()
            && !read.rows.keys.is_empty()
            && read.rows.keys.len() <= POINT_READ_KEYS
        {
            let response = self
                .engine
                .run(move |e| point_reads(e, &table, &read))
                .await?;
            return Ok(Response::new(Box::pin(tokio_stream::iter(
                response.map(Ok),
            ))));
        }
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        let engine = self.engine.0.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = stream_rows(&engine, &table, &read, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn sample_row_keys(
        &self,
        request: Request<pb::SampleRowKeysRequest>,
    ) -> Result<Response<Self::SampleRowKeysStream>, Status> {
        let table = table_name(&request.into_inner().table_name)?;
        let samples = self
            .engine
            .run(move |e| e.sample_row_keys(&table).map_err(status))
            .await?;
        let responses = samples.into_iter().map(|(row_key, offset)| {
            Ok(pb::SampleRowKeysResponse {
                row_key,
                offset_bytes: i64::try_from(offset).unwrap_or(i64::MAX),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(responses))))
    }

    async fn mutate_row(
        &self,
        request: Request<pb::MutateRowRequest>,
    ) -> Result<Response<pb::MutateRowResponse>, Status> {
        let r = request.into_inner();
        let table = table_name(&r.table_name)?;
        if r.mutations.is_empty() {
            return Err(invalid("no mutations"));
        }
        let mutations = convert::mutations(r.mutations)?;
        let row = r.row_key;
        self.engine
            .run(move |e| e.mutate_row(&table, &row, &mutations).map_err(status))
            .await?;
        Ok(Response::new(pb::MutateRowResponse {}))
    }

    async fn mutate_rows(
        &self,
        request: Request<pb::MutateRowsRequest>,
    ) -> Result<Response<Self::MutateRowsStream>, Status> {
        let r = request.into_inner();
        let table = table_name(&r.table_name)?;
        if r.entries.is_empty() {
            return Err(invalid("no entries"));
        }
        // A malformed entry fails alone, as the service does; the others are applied.
        let mut statuses: Vec<Option<rpc::Status>> = vec![None; r.entries.len()];
        let mut batch = Vec::new();
        let mut batch_index = Vec::new();
        for (i, entry) in r.entries.into_iter().enumerate() {
            let converted = if entry.mutations.is_empty() {
                Err(invalid("entry without mutations"))
            } else {
                convert::mutations(entry.mutations)
            };
            match converted {
                Ok(mutations) => {
                    batch.push(RowMutations {
                        row: entry.row_key,
                        mutations,
                    });
                    batch_index.push(i);
                }
                Err(s) => statuses[i] = Some(rpc_status(Err(s))),
            }
        }
        let results = self
            .engine
            .run(move |e| e.mutate_rows(&table, &batch).map_err(status))
            .await?;
        for (i, result) in batch_index.into_iter().zip(results) {
            statuses[i] = Some(rpc_status(result.map_err(status)));
        }
        let entries = statuses
            .into_iter()
            .enumerate()
            .map(|(i, s)| pb::mutate_rows_response::Entry {
                index: i as i64,
                status: s,
            })
            .collect();
        let response = pb::MutateRowsResponse {
            entries,
            rate_limit_info: None,
        };
        Ok(Response::new(Box::pin(tokio_stream::once(Ok(response)))))
    }

    async fn check_and_mutate_row(
        &self,
        request: Request<pb::CheckAndMutateRowRequest>,
    ) -> Result<Response<pb::CheckAndMutateRowResponse>, Status> {
        let r = request.into_inner();
        let table = table_name(&r.table_name)?;
        let predicate = r.predicate_filter.map(convert::filter).transpose()?;
        let if_true = convert::mutations(r.true_mutations)?;
        let if_false = convert::mutations(r.false_mutations)?;
        let row = r.row_key;
        let matched = self
            .engine
            .run(move |e| {
                e.check_and_mutate_row(&table, &row, predicate.as_ref(), &if_true, &if_false)
                    .map_err(status)
            })
            .await?;
        Ok(Response::new(pb::CheckAndMutateRowResponse {
            predicate_matched: matched,
        }))
    }

    async fn ping_and_warm(
        &self,
        _request: Request<pb::PingAndWarmRequest>,
    ) -> Result<Response<pb::PingAndWarmResponse>, Status> {
        Ok(Response::new(pb::PingAndWarmResponse {}))
    }

    async fn read_modify_write_row(
        &self,
        request: Request<pb::ReadModifyWriteRowRequest>,
    ) -> Result<Response<pb::ReadModifyWriteRowResponse>, Status> {
        let r = request.into_inner();
        let table = table_name(&r.table_name)?;
        if r.rules.is_empty() {
            return Err(invalid("no rules"));
        }
        let rules = r
            .rules
            .into_iter()
            .map(convert::read_modify_write)
            .collect::<Result<Vec<_>, _>>()?;
        let row = r.row_key;
        let written = self
            .engine
            .run(move |e| {
                e.read_modify_write_row(&table, &row, &rules)
                    .map_err(status)
            })
            .await?;
        Ok(Response::new(pb::ReadModifyWriteRowResponse {
            row: Some(convert::row(written)),
        }))
    }
}
