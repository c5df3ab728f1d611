//! What a replica serves on its one port: the replication service its peers call,
//! and (when a database is given) the client API, both behind the bearer-token check
//! (`auth.rs`), over TLS when it has a certificate (`tls.rs`).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;

use crate::api::generated::megastore_server::MegastoreServer;
use crate::api::server::ApiService;
use crate::auth::RequireToken;
use crate::remote::client::with_causes;
use crate::remote::generated::replication_server::ReplicationServer;
use crate::remote::server::ReplicationService;
use crate::remote::MAX_MESSAGE_BYTES;
use crate::replicas::Peer;
use crate::tls::ServerTls;
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
    /// The certificate the listener presents (`None`: plaintext).
    pub tls: Option<ServerTls>,
}

impl Services {
    /// A replica: its replication service and its client API.
    pub fn replica(db: Arc<Database>, token: Option<String>) -> Self {
        Services {
            peer: db.peer(),
            api: Some(db),
            token,
            tls: None,
        }
    }

    /// Only the replication service, over `peer`.
    pub fn replication_only(peer: Arc<dyn Peer>) -> Self {
        Services {
            peer,
            api: None,
            token: None,
            tls: None,
        }
    }

    /// The same services, over TLS when `tls` is given.
    pub fn with_tls(self, tls: Option<ServerTls>) -> Self {
        Services { tls, ..self }
    }
}

/// Serves `services` on `listener` until `shutdown` completes.
pub async fn serve(
    services: Services,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    run(router(services)?, listener, shutdown).await
}

async fn run(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    // A Paxos round is a few small messages: Nagle's algorithm would hold each back.
    router
        .serve_with_incoming_shutdown(bigtable::server::incoming_nodelay(listener), shutdown)
        .await
        .map_err(|e| Error::Unavailable(format!("the server stopped: {}", with_causes(&e))))
}

/// The server of `services`, ready to serve: nothing is accepted yet.
fn router(services: Services) -> Result<Router, Error> {
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
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &services.tls {
        server = tls
            .apply(server)
            .map_err(|e| Error::Invalid(format!("cannot serve TLS: {e}")))?;
    }
    Ok(server
        .add_service(InterceptedService::new(replication, check))
        .add_optional_service(api))
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
    let router = router(services)?;
    runtime.spawn(async move {
        if let Err(e) = run(router, listener, shutdown).await {
            tracing::error!("a replica's server stopped: {e}");
        }
    });
    Ok(())
}
