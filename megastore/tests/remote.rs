//! Replicas that reach each other only over gRPC on loopback: each replica's
//! replication server runs in its own tokio runtime (dropping it is the replica's
//! process dying), and each replica's transport is a `GrpcTransport` to the others.
//! Writes at one replica are seen by current reads at another; with one replica's
//! server gone, writes and current reads go on; over TLS, they replicate as well.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bigtable::fs::FaultyFs;
use bigtable::EngineOptions;
use megastore::cluster::{Cluster, ClusterOptions, TransportWrapper};
use megastore::node::{spawn, Services};
use megastore::paxos::proposer::Reply;
use megastore::remote::client::cluster_wrapper;
use megastore::replicas::{Peer, ReplicaKind};
use megastore::sim::registers::{Observed, Op, Reg, SCHEMA};
use megastore::tls::ServerTls;
use megastore::{Database, DatabaseOptions, Error};

/// A replica's replication server, alive until dropped.
struct Server(Option<tokio::runtime::Runtime>);

impl Server {
    fn start(peer: Arc<dyn Peer>, listener: std::net::TcpListener) -> Server {
        Server::start_tls(peer, listener, None)
    }

    /// The same, over TLS when `tls` is given.
    fn start_tls(
        peer: Arc<dyn Peer>,
        listener: std::net::TcpListener,
        tls: Option<ServerTls>,
    ) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        spawn(
            runtime.handle(),
            Services::replication_only(peer).with_tls(tls),
            listener,
            std::future::pending(),
        )
        .unwrap();
        Server(Some(runtime))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Every task and connection goes at once, as when a process is killed.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Three full replicas on in-memory file systems, reaching each other through `wrap`.
/// A writer that cannot reach a replica waits out its 300 ms lease.
fn three_full(wrap: Arc<TransportWrapper>) -> Cluster {
    let options = ClusterOptions {
        kinds: vec![ReplicaKind::Full; 3],
        engine: EngineOptions::tiny(),
        lease: Duration::from_millis(300),
        maintenance_every: None,
        database: DatabaseOptions {
            max_attempts: 100,
            ..DatabaseOptions::default()
        },
        ..ClusterOptions::default()
    };
    Cluster::open_wrapped(
        (0..3).map(|_| FaultyFs::new().shared()).collect(),
        (0..3).map(|i| PathBuf::from(format!("/r{i}"))).collect(),
        SCHEMA,
        options,
        Some(wrap),
    )
    .unwrap()
}

fn run(db: &Database, op: Op) -> Result<Observed, Error> {
    db.transact(&op.group_key(), |tx| op.run(tx))
        .map(|(seen, _)| seen)
}

fn read(db: &Database, reg: Reg) -> Option<i64> {
    run(db, Op::Read(reg)).unwrap().reads[0].1
}

/// `n` loopback listeners on free ports, and their addresses.
fn listeners(n: usize) -> (Vec<std::net::TcpListener>, Vec<String>) {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    (listeners, addresses)
}

#[test]
fn replicas_reach_each_other_over_grpc_and_one_down_stops_nothing() {
    let (listeners, addresses) = listeners(3);
    let wrap = cluster_wrapper(&addresses, Duration::from_millis(500), None).unwrap();
    let cluster = three_full(wrap);
    let mut servers: Vec<Option<Server>> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| Some(Server::start(cluster.replica(i).unwrap().peer(), l)))
        .collect();
    let (a, b) = (Reg { group: 0, id: 0 }, Reg { group: 0, id: 1 });

    run(cluster.replica(0).unwrap(), Op::Write(a, 1)).unwrap();
    assert_eq!(read(cluster.replica(2).unwrap(), a), Some(1));
    run(cluster.replica(1).unwrap(), Op::Copy(a, b)).unwrap();
    assert_eq!(read(cluster.replica(0).unwrap(), b), Some(1));

    // Replica 2's server dies: the writer cannot invalidate it, waits its lease out,
    // and commits with the other two.
    servers[2] = None;
    run(cluster.replica(0).unwrap(), Op::Write(a, 2)).unwrap();
    assert_eq!(read(cluster.replica(1).unwrap(), a), Some(2));
    let (meta, _) = cluster.replica(1).unwrap().group_meta(&a_group()).unwrap();
    assert_eq!(meta.applied, 3);
    drop(servers);
}

fn a_group() -> megastore::GroupKey {
    megastore::sim::registers::group_key(0)
}

#[test]
fn replicas_replicate_to_each_other_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::certs::self_signed(dir.path(), "replicas");
    let (listeners, addresses) = listeners(3);
    let trust = files.client().unwrap();
    let wrap = cluster_wrapper(&addresses, Duration::from_millis(500), trust.as_ref()).unwrap();
    let cluster = three_full(wrap);
    let _servers: Vec<Server> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let peer = cluster.replica(i).unwrap().peer();
            Server::start_tls(peer, l, files.server().unwrap())
        })
        .collect();
    let a = Reg { group: 2, id: 0 };
    run(cluster.replica(0).unwrap(), Op::Write(a, 7)).unwrap();
    for i in [1, 2] {
        assert_eq!(read(cluster.replica(i).unwrap(), a), Some(7), "replica {i}");
    }
}

#[test]
fn a_malformed_request_gets_a_clear_error_and_the_server_keeps_serving() {
    use megastore::remote::generated::replication_client::ReplicationClient;
    use megastore::remote::messages::{
        AcceptBatch, AcceptRequest, ApplyBatch, ApplyRequest, Group, GroupRequest, PositionRequest,
    };

    let engine = Arc::new(
        bigtable::Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap(),
    );
    let db = Database::open_with_schema(engine, SCHEMA, DatabaseOptions::default()).unwrap();
    run(&db, Op::Write(Reg { group: 1, id: 0 }, 5)).unwrap();
    let root = db
        .root_row(&megastore::sim::registers::group_key(1))
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let _server = Server::start(db.peer(), listener);
    let client_runtime = tokio::runtime::Runtime::new().unwrap();
    client_runtime.block_on(async {
        let mut client = ReplicationClient::connect(address).await.unwrap();
        let missing_group = PositionRequest {
            group: None,
            position: 1,
        };
        let status = client.chosen_value(missing_group).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let unknown_table = GroupRequest {
            group: Some(Group {
                table: "no-such-table".into(),
                row: b"x".to_vec(),
            }),
        };
        let status = client.highest_position(unknown_table).await.unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
        let batch_missing_a_group = ApplyBatch {
            applies: vec![ApplyRequest {
                group: None,
                position: 2,
                value: Vec::new(),
            }],
        };
        let status = client.apply_batch(batch_missing_a_group).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        // Still serving: the group's log end is the one committed entry.
        let good = GroupRequest {
            group: Some(Group::from(&root)),
        };
        let reply = client
            .highest_position(good.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.position, 1);

        // A batch of accepts: one answer each, in order.
        let accept = |position, value: &[u8]| AcceptRequest {
            group: Some(Group::from(&root)),
            position,
            ballot: 0,
            value: value.to_vec(),
        };
        let batch = AcceptBatch {
            accepts: vec![accept(2, b"next"), accept(1, b"not the chosen one")],
        };
        let replies = client
            .accept_batch(batch)
            .await
            .unwrap()
            .into_inner()
            .replies;
        let replies: Vec<Reply> = replies
            .into_iter()
            .map(|r| Reply::try_from(r).unwrap())
            .collect();
        assert_eq!(replies[0], Reply::Accepted { ballot: 0 });
        assert!(matches!(replies[1], Reply::Refused { .. }), "{replies:?}");
        let reply = client.highest_position(good).await.unwrap().into_inner();
        assert_eq!(reply.position, 2);
        let mut missing_a_group = accept(3, b"x");
        missing_a_group.group = None;
        let batch = AcceptBatch {
            accepts: vec![accept(3, b"x"), missing_a_group],
        };
        let status = client.accept_batch(batch).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    });
}

#[test]
fn replicas_behind_injected_latency_still_replicate() {
    use megastore::remote::latency::{self, Latencies};

    let latencies = Arc::new(Latencies::parse("a:b=2,a:c=4,b:c=6").unwrap());
    let regions: Vec<String> = ["a", "b", "c"].iter().map(|r| r.to_string()).collect();
    let cluster = three_full(latency::cluster_wrapper(None, regions, latencies));
    let a = Reg { group: 1, id: 2 };
    run(cluster.replica(2).unwrap(), Op::Write(a, 9)).unwrap();
    for i in 0..3 {
        assert_eq!(read(cluster.replica(i).unwrap(), a), Some(9), "replica {i}");
    }
}
