//! Generates the replication service (`megastore.replication.v1.Replication`): its
//! server trait and router, and its client. The messages are Rust structs with prost
//! derives (`src/remote/messages.rs`), so no `.proto` file or `protoc` is needed. The
//! wire protocol is documented in `docs/replication-protocol.md`.

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    let types = "crate::remote::messages";
    let rpcs = [
        ("prepare", "Prepare", "PrepareRequest", "PaxosReply"),
        ("accept", "Accept", "AcceptRequest", "PaxosReply"),
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
        ("invalidate", "Invalidate", "PositionRequest", "Empty"),
        (
            "durable_applied",
            "DurableApplied",
            "GroupRequest",
            "PositionReply",
        ),
    ];
    let mut service = Service::builder()
        .name("Replication")
        .package("megastore.replication.v1");
    for (name, route, input, output) in rpcs {
        service = service.method(
            Method::builder()
                .name(name)
                .route_name(route)
                .input_type(format!("{types}::{input}"))
                .output_type(format!("{types}::{output}"))
                .codec_path("tonic_prost::ProstCodec")
                .build(),
        );
    }
    Builder::new()
        .build_client(true)
        .build_server(true)
        .compile(&[service.build()]);
}
