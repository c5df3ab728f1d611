//! Generates the two gRPC services a replica serves: the replication service
//! (`megastore.replication.v1.Replication`, `docs/replication-protocol.md`) and the
//! client API (`megastore.v1.Megastore`, `docs/client-api.md`), each with its server
//! trait and router and its client. The messages are Rust structs with prost derives
//! (`src/remote/messages.rs`, `src/api/messages.rs`), so no `.proto` file or `protoc`
//! is needed. Also the client of the few etcd v3 calls the etcd lock service makes.

use tonic_build::manual::{Builder, Method, Service};

fn service(
    name: &str,
    package: &str,
    types: &str,
    rpcs: &[(&str, &str, &str, &str)],
) -> tonic_build::manual::Service {
    let mut service = Service::builder().name(name).package(package);
    for (method, route, input, output) in rpcs {
        // A `*` before a type: a stream of them.
        let mut m = Method::builder()
            .name(method)
            .route_name(route)
            .input_type(format!("{types}::{}", input.trim_start_matches('*')))
            .output_type(format!("{types}::{}", output.trim_start_matches('*')))
            .codec_path("tonic_prost::ProstCodec");
        if input.starts_with('*') {
            m = m.client_streaming();
        }
        if output.starts_with('*') {
            m = m.server_streaming();
        }
        service = service.method(m.build());
    }
    service.build()
}

fn main() {
    let replication = service(
        "Replication",
        "megastore.replication.v1",
        "crate::remote::messages",
        &[
            ("prepare", "Prepare", "PrepareRequest", "PaxosReply"),
            ("accept", "Accept", "AcceptRequest", "PaxosReply"),
            (
                "accept_batch",
                "AcceptBatch",
                "AcceptBatch",
                "AcceptBatchReply",
            ),
            (
                "highest_position",
                "HighestPosition",
                "GroupRequest",
                "PositionReply",
            ),
            (
                "chosen_value",
                "ChosenValue",
                "PositionRequest",
                "ValueReply",
            ),
            ("apply", "Apply", "ApplyRequest", "Empty"),
            ("apply_batch", "ApplyBatch", "ApplyBatch", "Empty"),
            ("invalidate", "Invalidate", "PositionRequest", "Empty"),
            (
                "durable_applied",
                "DurableApplied",
                "GroupRequest",
                "PositionReply",
            ),
        ],
    );
    let api = service(
        "Megastore",
        "megastore.v1",
        "crate::api::messages",
        &[
            ("get_schema", "GetSchema", "SchemaRequest", "SchemaReply"),
            (
                "update_schema",
                "UpdateSchema",
                "SchemaRequest",
                "SchemaReply",
            ),
            ("begin", "Begin", "BeginRequest", "Transaction"),
            ("get", "Get", "GetRequest", "GetReply"),
            ("scan", "Scan", "ScanRequest", "ScanReply"),
            ("query", "Query", "QueryRequest", "QueryReply"),
            ("commit", "Commit", "CommitRequest", "CommitReply"),
            ("status", "Status", "StatusRequest", "StatusReply"),
        ],
    );
    Builder::new()
        .build_client(true)
        .build_server(true)
        .compile(&[replication, api]);

    // The part of etcd's v3 API the etcd lock service uses (`src/etcd/`): clients only.
    let types = "crate::etcd::messages";
    let kv = service(
        "KV",
        "etcdserverpb",
        types,
        &[
            ("range", "Range", "RangeRequest", "RangeResponse"),
            ("put", "Put", "PutRequest", "PutResponse"),
            ("txn", "Txn", "TxnRequest", "TxnResponse"),
        ],
    );
    let lease = service(
        "Lease",
        "etcdserverpb",
        types,
        &[
            (
                "lease_grant",
                "LeaseGrant",
                "LeaseGrantRequest",
                "LeaseGrantResponse",
            ),
            (
                "lease_keep_alive",
                "LeaseKeepAlive",
                "*LeaseKeepAliveRequest",
                "*LeaseKeepAliveResponse",
            ),
        ],
    );
    Builder::new()
        .build_client(true)
        .build_server(false)
        .compile(&[kv, lease]);
}
