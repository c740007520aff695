//! Cancel keys: clients get a gateway-issued (process id, secret) pair; a
//! `CancelRequest` carrying it is forwarded to the right backend with that
//! backend's real key, which never leaves the gateway.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use dashmap::DashMap;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where and how to cancel one upstream backend.
#[derive(Clone, Debug)]
pub struct UpstreamKey {
    /// The address the session's connection reached, not the resource's
    /// name resolved again: a name with several addresses (or moved since)
    /// could send the cancel to another server, as libpq never does.
    pub address: std::net::SocketAddr,
    pub process_id: i32,
    pub secret_key: i32,
    pub tls: Option<super::upstream::UpstreamTls>,
}

/// The key a client sees: 64 random bits, so guessing one is hopeless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub process_id: i32,
    pub secret_key: i32,
}

#[derive(Default)]
pub struct CancelRegistry {
    keys: DashMap<ClientKey, UpstreamKey>,
}

/// Removes its key from the registry when the session ends.
pub struct CancelGuard {
    registry: Arc<CancelRegistry>,
    key: ClientKey,
}

impl CancelGuard {
    pub fn key(&self) -> ClientKey {
        self.key
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.key);
    }
}

impl CancelRegistry {
    pub fn issue(self: &Arc<Self>, upstream: UpstreamKey) -> CancelGuard {
        loop {
            let key = ClientKey {
                process_id: rand::random::<i32>() & i32::MAX,
                secret_key: rand::random(),
            };
            if let dashmap::Entry::Vacant(slot) = self.keys.entry(key) {
                slot.insert(upstream);
                return CancelGuard {
                    registry: self.clone(),
                    key,
                };
            }
        }
    }

    pub fn lookup(&self, key: ClientKey) -> Option<UpstreamKey> {
        self.keys.get(&key).map(|k| k.value().clone())
    }
}

/// Sends the real `CancelRequest` to the backend; best effort, as in libpq.
pub async fn cancel_upstream(key: &UpstreamKey, timeout: Duration) -> std::io::Result<()> {
    let mut packet = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(
        key.process_id,
        key.secret_key,
        &mut packet,
    );
    tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(key.address).await?;
        let mut stream = super::upstream::secure(tcp, key.tls.as_ref()).await?;
        stream.write_all(&packet).await?;
        stream.flush().await?;
        // The server closes the connection once it has acted on the request.
        let mut sink = [0u8; 1];
        let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await;
        Ok(())
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "cancel timed out"))?
}
