//! The accept loop of the TLS listener: a connection slot, then a task
//! that serves the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::serve::serve_tls;
use super::state::{reached, Phase, Server};

pub(super) async fn accept_tls(
    listener: TcpListener,
    local: SocketAddr,
    server: Arc<Server>,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<Phase>,
) {
    loop {
        // At max_connections, new connections wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = reached(&mut shutdown, Phase::Draining) => return,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        tokio::select! {
            _ = reached(&mut shutdown, Phase::Draining) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let server2 = server.clone();
                    let shutdown = shutdown.clone();
                    server.tracker.spawn(async move {
                        let _permit = permit;
                        serve_tls(stream, peer, local, server2, shutdown).await;
                    });
                }
                Err(e) => accept_error(e).await,
            },
        }
    }
}

/// Out of file descriptors or similar: log, back off a little, keep serving.
pub(super) async fn accept_error(e: std::io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
