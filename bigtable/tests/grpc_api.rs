//! The Cloud Bigtable v2 API served over loopback, driven by the generated gRPC clients:
//! every RPC we serve, the streaming rules of ReadRows (split values, commits, limits,
//! reverse scans, filters), error codes, and UNIMPLEMENTED for the rest.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::Arc;

use bigtable::server::row_merger::RowMerger;
use bigtable::{Engine, EngineOptions};
use googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2 as admin;
use googleapis_tonic_google_bigtable_v2::google::bigtable::v2 as pb;
use tonic::transport::Channel;
use tonic::Code;
use wal::fs::FaultyFs;

use admin::bigtable_table_admin_client::BigtableTableAdminClient;
use pb::bigtable_client::BigtableClient;

const INSTANCE: &str = "projects/p/instances/i";
const TABLE: &str = "projects/p/instances/i/tables/t";

struct Server {
    runtime: tokio::runtime::Runtime,
    channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    fn start() -> Server {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let engine = Arc::new(
            Engine::open(Arc::new(FaultyFs::new()), "/db", EngineOptions::tiny()).unwrap(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let channel = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(bigtable::server::serve(engine, listener, async {
                let _ = stopped.await;
            }));
            Channel::from_shared(format!("http://{address}"))
                .unwrap()
                .connect()
                .await
                .unwrap()
        });
        Server {
            runtime,
            channel,
            stop: Some(stop),
        }
    }

    fn data(&self) -> BigtableClient<Channel> {
        BigtableClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    fn admin(&self) -> BigtableTableAdminClient<Channel> {
        BigtableTableAdminClient::new(self.channel.clone())
    }

    fn run<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.runtime.block_on(f)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn family(max_versions: i32) -> admin::ColumnFamily {
    admin::ColumnFamily {
        gc_rule: Some(admin::GcRule {
            rule: Some(admin::gc_rule::Rule::MaxNumVersions(max_versions)),
        }),
        value_type: None,
    }
}

fn create_table(server: &Server) {
    create_table_with(server, vec![("cf", family(2)), ("other", family(1))], &[]);
}

/// Creates table `t` with `families`, split at `splits`.
fn create_table_with(
    server: &Server,
    families: Vec<(&str, admin::ColumnFamily)>,
    splits: &[&[u8]],
) {
    let table = admin::Table {
        column_families: families
            .into_iter()
            .map(|(name, f)| (name.to_string(), f))
            .collect(),
        ..Default::default()
    };
    let initial_splits = splits
        .iter()
        .map(|key| admin::create_table_request::Split { key: key.to_vec() })
        .collect();
    server
        .run(server.admin().create_table(admin::CreateTableRequest {
            parent: INSTANCE.into(),
            table_id: "t".into(),
            table: Some(table),
            initial_splits,
        }))
        .unwrap();
}

fn set(family: &str, qualifier: &[u8], ts: i64, value: &[u8]) -> pb::Mutation {
    pb::Mutation {
        mutation: Some(pb::mutation::Mutation::SetCell(pb::mutation::SetCell {
            family_name: family.into(),
            column_qualifier: qualifier.to_vec(),
            timestamp_micros: ts,
            value: value.to_vec(),
        })),
    }
}

fn mutate(server: &Server, row: &[u8], mutations: Vec<pb::Mutation>) -> Result<(), tonic::Status> {
    server
        .run(server.data().mutate_row(pb::MutateRowRequest {
            table_name: TABLE.into(),
            row_key: row.to_vec(),
            mutations,
            ..Default::default()
        }))
        .map(|_| ())
}

/// A row as the client library assembles it: family -> qualifier -> [(ts, value)].
type Cells = BTreeMap<String, BTreeMap<Vec<u8>, Vec<(i64, Vec<u8>)>>>;

/// Reads rows, merging chunks as a client does (which checks the protocol's rules).
fn read(server: &Server, request: pb::ReadRowsRequest) -> Vec<(Vec<u8>, Cells)> {
    server.run(async {
        let mut stream = server.data().read_rows(request).await.unwrap().into_inner();
        let mut merger = RowMerger::new();
        let mut rows = Vec::new();
        while let Some(response) = stream.message().await.unwrap() {
            for chunk in response.chunks {
                if let Some(row) = merger.push(chunk).unwrap() {
                    let mut cells = Cells::new();
                    for c in row.cells {
                        cells
                            .entry(String::from_utf8(c.family).unwrap())
                            .or_default()
                            .entry(c.qualifier)
                            .or_default()
                            .push((c.timestamp, c.value));
                    }
                    rows.push((row.key, cells));
                }
            }
        }
        assert!(merger.is_idle(), "the last row was committed");
        rows
    })
}

fn keys(rows: &[(Vec<u8>, Cells)]) -> Vec<Vec<u8>> {
    rows.iter().map(|(k, _)| k.clone()).collect()
}

fn all_rows() -> pb::ReadRowsRequest {
    pb::ReadRowsRequest {
        table_name: TABLE.into(),
        ..Default::default()
    }
}

#[test]
fn admin_creates_describes_modifies_and_deletes_tables() {
    let server = Server::start();
    create_table(&server);
    let mut a = server.admin();
    let again = server.run(a.create_table(admin::CreateTableRequest {
        parent: INSTANCE.into(),
        table_id: "t".into(),
        ..Default::default()
    }));
    assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);
    let bad = server.run(a.create_table(admin::CreateTableRequest {
        parent: "projects/p".into(),
        table_id: "t".into(),
        ..Default::default()
    }));
    assert_eq!(bad.unwrap_err().code(), Code::InvalidArgument);

    let full = server
        .run(a.get_table(admin::GetTableRequest {
            name: TABLE.into(),
            view: admin::table::View::Full as i32,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(full.column_families.len(), 2);
    assert_eq!(full.column_families["cf"], family(2));
    let name_only = server
        .run(a.get_table(admin::GetTableRequest {
            name: TABLE.into(),
            view: admin::table::View::NameOnly as i32,
        }))
        .unwrap()
        .into_inner();
    assert_eq!(name_only.name, TABLE);
    assert!(name_only.column_families.is_empty());

    use admin::modify_column_families_request::{modification::Mod, Modification};
    let modified = server
        .run(
            a.modify_column_families(admin::ModifyColumnFamiliesRequest {
                name: TABLE.into(),
                modifications: vec![
                    Modification {
                        id: "new".into(),
                        update_mask: None,
                        r#mod: Some(Mod::Create(family(5))),
                    },
                    Modification {
                        id: "other".into(),
                        update_mask: None,
                        r#mod: Some(Mod::Drop(true)),
                    },
                ],
                ignore_warnings: false,
            }),
        )
        .unwrap()
        .into_inner();
    let mut families: Vec<String> = modified.column_families.keys().cloned().collect();
    families.sort();
    assert_eq!(families, vec!["cf".to_string(), "new".to_string()]);

    let listed = server
        .run(a.list_tables(admin::ListTablesRequest {
            parent: INSTANCE.into(),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert_eq!(listed.tables.len(), 1);
    assert_eq!(listed.tables[0].name, TABLE);
    let elsewhere = server
        .run(a.list_tables(admin::ListTablesRequest {
            parent: "projects/p/instances/other".into(),
            ..Default::default()
        }))
        .unwrap()
        .into_inner();
    assert!(elsewhere.tables.is_empty(), "instances are separate");

    let token = server
        .run(
            a.generate_consistency_token(admin::GenerateConsistencyTokenRequest {
                name: TABLE.into(),
            }),
        )
        .unwrap()
        .into_inner()
        .consistency_token;
    let consistent = server
        .run(a.check_consistency(admin::CheckConsistencyRequest {
            name: TABLE.into(),
            consistency_token: token,
            mode: None,
        }))
        .unwrap()
        .into_inner()
        .consistent;
    assert!(consistent);

    server
        .run(a.delete_table(admin::DeleteTableRequest { name: TABLE.into() }))
        .unwrap();
    let gone = server.run(a.get_table(admin::GetTableRequest {
        name: TABLE.into(),
        view: 0,
    }));
    assert_eq!(gone.unwrap_err().code(), Code::NotFound);
}

#[test]
fn writes_and_reads_follow_the_streaming_rules() {
    let server = Server::start();
    create_table(&server);
    for i in 0..20u8 {
        let row = format!("row{i:02}");
        mutate(
            &server,
            row.as_bytes(),
            vec![
                set("cf", b"a", 1000, &[i]),
                set("cf", b"a", 2000, &[i, i]),
                set("cf", b"a", 3000, &[i, i, i]),
                set("other", b"b", 1000, b"x"),
            ],
        )
        .unwrap();
    }
    let rows = read(&server, all_rows());
    assert_eq!(rows.len(), 20);
    let (key, cells) = &rows[3];
    assert_eq!(key, b"row03");
    // GC keeps two versions of cf, newest first.
    assert_eq!(
        cells["cf"][&b"a".to_vec()],
        vec![(3000, vec![3, 3, 3]), (2000, vec![3, 3])]
    );

    let points = read(
        &server,
        pb::ReadRowsRequest {
            rows: Some(pb::RowSet {
                row_keys: vec![b"row07".to_vec(), b"missing".to_vec(), b"row02".to_vec()],
                row_ranges: Vec::new(),
            }),
            ..all_rows()
        },
    );
    assert_eq!(keys(&points), vec![b"row02".to_vec(), b"row07".to_vec()]);
    let nothing = read(
        &server,
        pb::ReadRowsRequest {
            rows: Some(pb::RowSet {
                row_keys: vec![b"missing".to_vec()],
                row_ranges: Vec::new(),
            }),
            ..all_rows()
        },
    );
    assert!(nothing.is_empty());

    let limited = read(
        &server,
        pb::ReadRowsRequest {
            rows_limit: 5,
            reversed: true,
            ..all_rows()
        },
    );
    assert_eq!(
        keys(&limited),
        (15..20u8)
            .rev()
            .map(|i| format!("row{i:02}").into_bytes())
            .collect::<Vec<_>>()
    );

    use pb::row_filter::{Chain, Filter};
    let chain = pb::RowFilter {
        filter: Some(Filter::Chain(Chain {
            filters: vec![
                pb::RowFilter {
                    filter: Some(Filter::FamilyNameRegexFilter("cf".into())),
                },
                pb::RowFilter {
                    filter: Some(Filter::CellsPerColumnLimitFilter(1)),
                },
            ],
        })),
    };
    let set_of_rows = pb::RowSet {
        row_keys: vec![b"row01".to_vec()],
        row_ranges: vec![pb::RowRange {
            start_key: Some(pb::row_range::StartKey::StartKeyOpen(b"row10".to_vec())),
            end_key: Some(pb::row_range::EndKey::EndKeyClosed(b"row12".to_vec())),
        }],
    };
    let filtered = read(
        &server,
        pb::ReadRowsRequest {
            rows: Some(set_of_rows),
            filter: Some(chain),
            ..all_rows()
        },
    );
    assert_eq!(
        keys(&filtered),
        vec![b"row01".to_vec(), b"row11".to_vec(), b"row12".to_vec()]
    );
    for (_, cells) in &filtered {
        assert_eq!(cells.keys().collect::<Vec<_>>(), vec!["cf"]);
        assert_eq!(cells["cf"][&b"a".to_vec()].len(), 1);
    }
}

#[test]
fn large_values_stream_in_pieces_and_come_back_whole() {
    let server = Server::start();
    create_table(&server);
    let big: Vec<u8> = (0..(5 << 20) / 2).map(|i| (i % 251) as u8).collect();
    mutate(&server, b"big", vec![set("cf", b"q", 1000, &big)]).unwrap();
    mutate(&server, b"small", vec![set("cf", b"q", 1000, b"s")]).unwrap();
    let rows = read(&server, all_rows());
    assert_eq!(keys(&rows), vec![b"big".to_vec(), b"small".to_vec()]);
    assert_eq!(rows[0].1["cf"][&b"q".to_vec()], vec![(1000, big)]);
}

#[test]
fn batches_conditions_and_read_modify_write() {
    let server = Server::start();
    create_table(&server);
    let mut d = server.data();
    let entry = |row: &[u8], family: &str| pb::mutate_rows_request::Entry {
        row_key: row.to_vec(),
        mutations: vec![set(family, b"q", 1000, b"v")],
        idempotency: None,
    };
    let responses: Vec<pb::MutateRowsResponse> = server.run(async {
        let mut stream = d
            .mutate_rows(pb::MutateRowsRequest {
                table_name: TABLE.into(),
                entries: vec![
                    entry(b"a", "cf"),
                    entry(b"b", "no-such-family"),
                    entry(b"c", "cf"),
                ],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = stream.message().await.unwrap() {
            out.push(r);
        }
        out
    });
    let mut codes: Vec<(i64, i32)> = responses
        .iter()
        .flat_map(|r| r.entries.iter())
        .map(|e| (e.index, e.status.as_ref().unwrap().code))
        .collect();
    codes.sort();
    assert_eq!(codes[0], (0, 0));
    assert_ne!(
        codes[1].1, 0,
        "the entry naming an unknown family fails alone"
    );
    assert_eq!(codes[2], (2, 0));
    assert_eq!(
        keys(&read(&server, all_rows())),
        vec![b"a".to_vec(), b"c".to_vec()]
    );

    let check = |row: &[u8]| pb::CheckAndMutateRowRequest {
        table_name: TABLE.into(),
        row_key: row.to_vec(),
        predicate_filter: None,
        true_mutations: vec![set("cf", b"matched", 1000, b"yes")],
        false_mutations: vec![set("cf", b"unmatched", 1000, b"no")],
        ..Default::default()
    };
    let hit = server
        .run(d.check_and_mutate_row(check(b"a")))
        .unwrap()
        .into_inner();
    let miss = server
        .run(d.check_and_mutate_row(check(b"z")))
        .unwrap()
        .into_inner();
    assert!(hit.predicate_matched && !miss.predicate_matched);
    let rows = read(&server, all_rows());
    assert!(rows[0].1["cf"].contains_key(b"matched".as_slice()));
    assert!(rows[2].1["cf"].contains_key(b"unmatched".as_slice()));

    let rule = |r: pb::read_modify_write_rule::Rule| pb::ReadModifyWriteRule {
        family_name: "cf".into(),
        column_qualifier: b"counter".to_vec(),
        rule: Some(r),
    };
    use pb::read_modify_write_rule::Rule;
    for _ in 0..3 {
        server
            .run(d.read_modify_write_row(pb::ReadModifyWriteRowRequest {
                table_name: TABLE.into(),
                row_key: b"a".to_vec(),
                rules: vec![rule(Rule::IncrementAmount(5))],
                ..Default::default()
            }))
            .unwrap();
    }
    let appended = server
        .run(d.read_modify_write_row(pb::ReadModifyWriteRowRequest {
            table_name: TABLE.into(),
            row_key: b"a".to_vec(),
            rules: vec![pb::ReadModifyWriteRule {
                family_name: "cf".into(),
                column_qualifier: b"q".to_vec(),
                rule: Some(Rule::AppendValue(b"++".to_vec())),
            }],
            ..Default::default()
        }))
        .unwrap()
        .into_inner()
        .row
        .unwrap();
    assert_eq!(
        appended.families[0].columns[0].cells[0].value,
        b"v++".to_vec()
    );
    let rows = read(&server, all_rows());
    let counter = &rows[0].1["cf"][&b"counter".to_vec()][0].1;
    assert_eq!(counter, &15i64.to_be_bytes().to_vec());
}

#[test]
fn samples_drop_row_range_and_errors() {
    let server = Server::start();
    create_table_with(&server, vec![("cf", family(2))], &[b"even", b"odd"]);
    for i in 0..300u32 {
        let prefix = if i % 2 == 0 { "even" } else { "odd" };
        mutate(
            &server,
            format!("{prefix}{i:04}").as_bytes(),
            vec![set("cf", b"q", 1000, &[7u8; 100])],
        )
        .unwrap();
    }
    let mut d = server.data();
    let samples: Vec<pb::SampleRowKeysResponse> = server.run(async {
        let mut stream = d
            .sample_row_keys(pb::SampleRowKeysRequest {
                table_name: TABLE.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut out = Vec::new();
        while let Some(s) = stream.message().await.unwrap() {
            out.push(s);
        }
        out
    });
    let last = samples.last().unwrap();
    for split in [b"even".to_vec(), b"odd".to_vec()] {
        assert!(
            samples.iter().any(|s| s.row_key == split),
            "the initial split {split:?} is a tablet boundary"
        );
    }
    assert!(last.row_key.is_empty(), "the last sample ends the table");
    assert!(samples
        .windows(2)
        .all(|w| w[0].offset_bytes <= w[1].offset_bytes));

    server
        .run(server.admin().drop_row_range(admin::DropRowRangeRequest {
            name: TABLE.into(),
            target: Some(admin::drop_row_range_request::Target::RowKeyPrefix(
                b"even".to_vec(),
            )),
        }))
        .unwrap();
    let rows = read(&server, all_rows());
    assert_eq!(rows.len(), 150);
    assert!(rows.iter().all(|(k, _)| k.starts_with(b"odd")));

    let no_kind = mutate(&server, b"r", vec![pb::Mutation { mutation: None }]);
    assert_eq!(no_kind.unwrap_err().code(), Code::InvalidArgument);
    let unknown_table = server.run(d.mutate_row(pb::MutateRowRequest {
        table_name: "projects/p/instances/i/tables/nope".into(),
        row_key: b"r".to_vec(),
        mutations: vec![set("cf", b"q", 1, b"v")],
        ..Default::default()
    }));
    assert_eq!(unknown_table.unwrap_err().code(), Code::NotFound);
    let unserved = server.run(d.execute_query(pb::ExecuteQueryRequest {
        instance_name: INSTANCE.into(),
        ..Default::default()
    }));
    assert_eq!(unserved.unwrap_err().code(), Code::Unimplemented);
    // Still serving after all of that.
    mutate(&server, b"r", vec![set("cf", b"q", 1, b"v")]).unwrap();
}

#[test]
fn int64_sum_families_take_add_to_cell() {
    let server = Server::start();
    use admin::r#type::{aggregate::Aggregator, aggregate::Sum, Aggregate, Int64, Kind};
    let int64 = || {
        Box::new(admin::Type {
            kind: Some(Kind::Int64Type(Int64 { encoding: None })),
        })
    };
    let sum_type = admin::Type {
        kind: Some(Kind::AggregateType(Box::new(Aggregate {
            input_type: Some(int64()),
            state_type: None,
            aggregator: Some(Aggregator::Sum(Sum {})),
        }))),
    };
    let counts = admin::ColumnFamily {
        gc_rule: None,
        value_type: Some(sum_type),
    };
    create_table_with(&server, vec![("counts", counts), ("cf", family(1))], &[]);
    let got = server
        .run(server.admin().get_table(admin::GetTableRequest {
            name: TABLE.into(),
            view: admin::table::View::Full as i32,
        }))
        .unwrap()
        .into_inner();
    assert!(got.column_families["counts"].value_type.is_some());
    assert!(got.column_families["cf"].value_type.is_none());

    use pb::value::Kind as V;
    let value = |kind: V| {
        Some(pb::Value {
            kind: Some(kind),
            ..Default::default()
        })
    };
    let add = |family: &str, n: i64| pb::Mutation {
        mutation: Some(pb::mutation::Mutation::AddToCell(pb::mutation::AddToCell {
            family_name: family.into(),
            column_qualifier: value(V::RawValue(b"views".to_vec())),
            timestamp: value(V::RawTimestampMicros(5000)),
            input: value(V::IntValue(n)),
        })),
    };
    for n in [3, 4, 35] {
        mutate(&server, b"page", vec![add("counts", n)]).unwrap();
    }
    let rows = read(&server, all_rows());
    assert_eq!(
        rows[0].1["counts"][&b"views".to_vec()],
        vec![(5000, 42i64.to_be_bytes().to_vec())]
    );
    let wrong = mutate(&server, b"page", vec![add("cf", 1)]);
    assert_eq!(wrong.unwrap_err().code(), Code::InvalidArgument);
}
