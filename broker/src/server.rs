//! The Kafka listener: accepts connections up to `max.connections`, runs one task per
//! connection, and on shutdown stops accepting and waits for in-flight requests.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::connection;

pub async fn serve(broker: Arc<Broker>, listener: TcpListener) {
    let connection_slots = Arc::new(Semaphore::new(broker.config.max_connections));
    // Request bytes held across all connections, counted in KiB (permits are u32).
    let queued_kib = Arc::new(Semaphore::new(
        (broker.config.max_queued_request_bytes / 1024).max(1),
    ));
    let mut shutdown = broker.shutdown_signal();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = connection_slots.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, limit = broker.config.max_connections, "refusing connection: max.connections reached");
                        metrics::counter!("sluice_connections_refused_total").increment(1);
                        continue;
                    };
                    let conn = connection::Connection::new(broker.clone(), peer, queued_kib.clone());
                    connections.spawn(async move {
                        conn.run(stream).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    tracing::info!(
        open = connections.len(),
        "stopped accepting; finishing in-flight requests"
    );
    while connections.join_next().await.is_some() {}
}
