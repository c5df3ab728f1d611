//! What a replica serves on its one port: the replication service its peers call,
//! and (when a database is given) the client API, both behind the bearer-token check
//! (`auth.rs`).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::api::generated::megastore_server::MegastoreServer;
use crate::api::server::ApiService;
use crate::auth::RequireToken;
use crate::remote::generated::replication_server::ReplicationServer;
use crate::remote::server::ReplicationService;
use crate::remote::MAX_MESSAGE_BYTES;
use crate::replicas::Peer;
use crate::{Database, Error};

/// Largest client request or response (an entity, a scan's answer).
pub const MAX_API_MESSAGE_BYTES: usize = 16 << 20;

/// The services of one listener.
#[derive(Clone)]
pub struct Services {
    pub peer: Arc<dyn Peer>,
    /// The client API's database (`None`: replication only).
    pub api: Option<Arc<Database>>,
    /// The bearer token every request must carry (`None`: none).
    pub token: Option<String>,
}

impl Services {
    /// A replica: its replication service and its client API.
    pub fn replica(db: Arc<Database>, token: Option<String>) -> Self {
        Services {
            peer: db.peer(),
            api: Some(db),
            token,
        }
    }

    /// Only the replication service, over `peer`.
    pub fn replication_only(peer: Arc<dyn Peer>) -> Self {
        Services {
            peer,
            api: None,
            token: None,
        }
    }
}

/// Serves `services` on `listener` until `shutdown` completes.
pub async fn serve(
    services: Services,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let check = RequireToken::new(services.token.as_deref());
    let replication = ReplicationServer::new(ReplicationService::new(services.peer))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let api = services.api.map(|db| {
        let server = MegastoreServer::new(ApiService::new(db))
            .max_decoding_message_size(MAX_API_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_API_MESSAGE_BYTES);
        InterceptedService::new(server, check.clone())
    });
    // A Paxos round is a few small messages: Nagle's algorithm would hold each back.
    tonic::transport::Server::builder()
        .add_service(InterceptedService::new(replication, check))
        .add_optional_service(api)
        .serve_with_incoming_shutdown(bigtable::server::incoming_nodelay(listener), shutdown)
        .await
}

/// Serves `services` on `listener` (bound already, so that its address is known
/// first) from `runtime`, until `shutdown` completes or the runtime shuts down.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    services: Services,
    listener: std::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let unusable = |e: std::io::Error| Error::Invalid(format!("cannot serve on the listener: {e}"));
    listener.set_nonblocking(true).map_err(unusable)?;
    let listener = {
        let _inside = runtime.enter();
        TcpListener::from_std(listener).map_err(unusable)?
    };
    runtime.spawn(async move {
        if let Err(e) = serve(services, listener, shutdown).await {
            tracing::error!("a replica's server stopped: {e}");
        }
    });
    Ok(())
}
