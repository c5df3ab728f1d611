//! Generates the server side of the Cloud Bigtable v2 data and table-admin services.
//! The message types come from the published `googleapis-tonic-*` crates (which ship only
//! client code); tonic-build's manual builder writes the service traits and routing for
//! the methods we serve, under their wire names. No `.proto` file or `protoc` is needed.
//! Methods not listed here are answered UNIMPLEMENTED by tonic's router.

use tonic_build::manual::{Builder, Method, Service};

const CODEC: &str = "tonic_prost::ProstCodec";

struct Rpc {
    name: &'static str,
    route: &'static str,
    input: &'static str,
    output: &'static str,
    server_streaming: bool,
}

const fn rpc(
    name: &'static str,
    route: &'static str,
    input: &'static str,
    output: &'static str,
) -> Rpc {
    Rpc {
        name,
        route,
        input,
        output,
        server_streaming: false,
    }
}

const fn streaming(
    name: &'static str,
    route: &'static str,
    input: &'static str,
    output: &'static str,
) -> Rpc {
    Rpc {
        name,
        route,
        input,
        output,
        server_streaming: true,
    }
}

fn service(package: &str, name: &str, types: &str, rpcs: &[Rpc]) -> Service {
    let mut builder = Service::builder().name(name).package(package);
    for r in rpcs {
        let input = if r.input.starts_with("::") {
            r.input.to_string()
        } else {
            format!("{types}::{}", r.input)
        };
        let output = if r.output.starts_with("::") || r.output.starts_with("crate::") {
            r.output.to_string()
        } else {
            format!("{types}::{}", r.output)
        };
        let mut method = Method::builder()
            .name(r.name)
            .route_name(r.route)
            .input_type(input)
            .output_type(output)
            .codec_path(CODEC);
        if r.server_streaming {
            method = method.server_streaming();
        }
        builder = builder.method(method.build());
    }
    builder.build()
}

fn main() {
    let data = service(
        "google.bigtable.v2",
        "Bigtable",
        "::googleapis_tonic_google_bigtable_v2::google::bigtable::v2",
        &[
            streaming(
                "read_rows",
                "ReadRows",
                "ReadRowsRequest",
                "ReadRowsResponse",
            ),
            streaming(
                "sample_row_keys",
                "SampleRowKeys",
                "SampleRowKeysRequest",
                "SampleRowKeysResponse",
            ),
            rpc(
                "mutate_row",
                "MutateRow",
                "MutateRowRequest",
                "MutateRowResponse",
            ),
            streaming(
                "mutate_rows",
                "MutateRows",
                "MutateRowsRequest",
                "MutateRowsResponse",
            ),
            rpc(
                "check_and_mutate_row",
                "CheckAndMutateRow",
                "CheckAndMutateRowRequest",
                "CheckAndMutateRowResponse",
            ),
            rpc(
                "ping_and_warm",
                "PingAndWarm",
                "PingAndWarmRequest",
                "PingAndWarmResponse",
            ),
            rpc(
                "read_modify_write_row",
                "ReadModifyWriteRow",
                "ReadModifyWriteRowRequest",
                "ReadModifyWriteRowResponse",
            ),
        ],
    );
    let admin = service(
        "google.bigtable.admin.v2",
        "BigtableTableAdmin",
        "::googleapis_tonic_google_bigtable_admin_v2::google::bigtable::admin::v2",
        &[
            rpc("create_table", "CreateTable", "CreateTableRequest", "Table"),
            rpc(
                "list_tables",
                "ListTables",
                "ListTablesRequest",
                "ListTablesResponse",
            ),
            rpc("get_table", "GetTable", "GetTableRequest", "Table"),
            rpc(
                "delete_table",
                "DeleteTable",
                "DeleteTableRequest",
                "crate::server::generated::Empty",
            ),
            rpc(
                "modify_column_families",
                "ModifyColumnFamilies",
                "ModifyColumnFamiliesRequest",
                "Table",
            ),
            rpc(
                "drop_row_range",
                "DropRowRange",
                "DropRowRangeRequest",
                "crate::server::generated::Empty",
            ),
            rpc(
                "generate_consistency_token",
                "GenerateConsistencyToken",
                "GenerateConsistencyTokenRequest",
                "GenerateConsistencyTokenResponse",
            ),
            rpc(
                "check_consistency",
                "CheckConsistency",
                "CheckConsistencyRequest",
                "CheckConsistencyResponse",
            ),
        ],
    );
    Builder::new()
        .build_client(false)
        .build_server(true)
        .compile(&[data, admin]);
}
