//! The Cloud Bigtable v2 API over gRPC (tonic): the data service
//! (`google.bigtable.v2.Bigtable`) and the table admin service
//! (`google.bigtable.admin.v2.BigtableTableAdmin`) on one listener, so existing clients
//! pointed at it with `BIGTABLE_EMULATOR_HOST` work unchanged. Methods we do not serve
//! answer UNIMPLEMENTED. See `docs/grpc-api.md`.

mod admin;
mod chunks;
mod convert;
mod data;
mod generated;
mod names;
pub mod row_merger;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::engine::Engine;
use generated::admin::bigtable_table_admin_server::BigtableTableAdminServer;
use generated::data::bigtable_server::BigtableServer;

/// The engine as the services call it: work that may block (a commit waits for its log
/// fsync) runs on tokio's blocking pool, never on the async workers.
#[derive(Clone)]
struct SharedEngine(Arc<Engine>);

impl SharedEngine {
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Engine) -> Result<T, tonic::Status> + Send + 'static,
    ) -> Result<T, tonic::Status> {
        let engine = self.0.clone();
        tokio::task::spawn_blocking(move || work(&engine))
            .await
            .map_err(|e| tonic::Status::internal(format!("request task failed: {e}")))?
    }
}

/// Largest request or response message: Cloud Bigtable's 256 MiB request limit would let
/// one client hold that much of our memory per call; we accept up to 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Serves both services on `listener` until `shutdown` completes, then finishes the
/// calls in flight.
pub async fn serve(
    engine: Arc<Engine>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let data = BigtableServer::new(data::DataService::new(engine.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = BigtableTableAdminServer::new(admin::AdminService::new(engine))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(data)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming_nodelay(listener), shutdown)
        .await
}

/// The connections `listener` accepts, with Nagle's algorithm off: small responses must
/// leave at once (with it on, a one-row read waited for the client's delayed ACK, 40 ms).
pub fn incoming_nodelay(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!("cannot set TCP_NODELAY: {e}");
            }
        })
    })
}
