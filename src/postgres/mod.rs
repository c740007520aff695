//! The Postgres data plane: stock `psql` and drivers connect to the
//! gateway's Postgres port with `user` = their gateway user, `database` =
//! the resource and `password` = the lease password from `checkout`. The
//! gateway checks the lease, logs in to the target itself as the managed
//! account, and relays — logging statements, and severing the session the
//! moment the lease ends.
//!
//! - `wire`, `framer`: the protocol pieces the gateway reads and writes.
//! - `tls`: rustls for clients (and targets), with the certificate's
//!   channel binding data.
//! - `login`: the startup phase, from the first byte to a relayed session;
//!   `admission`: the lease-checked login and its refusals, with the
//!   password in cleartext or (`scram_login`, `scram::server`) by SCRAM;
//!   `lease_password`: what checks a lease password (its hash, its SCRAM
//!   verifier).
//! - `upstream`, `scram`: the gateway's own login to the target.
//! - `relay`, `session`, `querylog`: the session itself.
//! - `cancel`: routing `CancelRequest`s to the right backend.

mod admission;
pub mod cancel;
pub(crate) mod framer;
pub mod lease_password;
mod login;
mod progress;
pub mod querylog;
mod relay;
pub mod scram;
mod scram_login;
mod session;
pub mod tls;
pub mod upstream;
pub mod wire;
mod workers;

use std::sync::Arc;

use dashmap::DashMap;
use tokio::net::TcpListener;

use crate::serve::Runtime;

/// What every connection on the Postgres port shares.
pub struct Frontend {
    pub runtime: Runtime,
    /// Replaced when a reload brings a new certificate (a renewal): new
    /// connections get it, established ones keep theirs.
    tls: parking_lot::RwLock<tls::ClientTls>,
    pub cancels: Arc<cancel::CancelRegistry>,
    /// TLS connectors to targets by address and CA file: built (and the CA
    /// read) once, not on every connection.
    upstream_tls: DashMap<(String, std::path::PathBuf), upstream::UpstreamTls>,
    connections: Arc<DashMap<String, u32>>,
    event_loops: workers::EventLoops,
    /// Salts the stand-in SCRAM verifiers of logins without a lease.
    scram_mock_secret: [u8; 32],
}

/// One of a user's connections; frees its slot when dropped.
pub struct UserSlot {
    connections: Arc<DashMap<String, u32>>,
    user: String,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut entry) = self.connections.entry(self.user.clone()) {
            *entry.get_mut() -= 1;
            if *entry.get() == 0 {
                entry.remove();
            }
        }
    }
}

impl Frontend {
    /// The control command a message suggests, e.g. `ssh -p 2222
    /// alice@10.0.0.5 request orders-prod`, naming the gateway address the
    /// client reached.
    fn control_command(
        &self,
        gateway_host: impl std::fmt::Display,
        user: &str,
        args: &str,
    ) -> String {
        let port = self.runtime.gateway.config().listen.ssh.port();
        format!("ssh -p {port} {user}@{gateway_host} {args}")
    }

    /// The TLS of a new client connection.
    fn tls(&self) -> tls::ClientTls {
        self.tls.read().clone()
    }

    /// After a reload: the certificate and key are read again, and the
    /// targets' CA files when next needed.
    fn reload_tls(&self) {
        match tls::acceptor(&self.runtime.gateway.config()) {
            Ok(acceptor) => *self.tls.write() = acceptor,
            // The reload checked the pair; a file changed since keeps the
            // certificate in use.
            Err(e) => tracing::error!(error = %e, "keeping the Postgres TLS certificate in use"),
        }
        self.upstream_tls.clear();
    }

    /// The TLS settings for connecting to `resource`, if it uses TLS.
    fn upstream_tls(
        &self,
        resource: &crate::config::Resource,
    ) -> Result<Option<upstream::UpstreamTls>, String> {
        let Some(ca) = &resource.upstream_tls_ca else {
            return Ok(None);
        };
        let key = (resource.address.clone(), ca.clone());
        if let Some(tls) = self.upstream_tls.get(&key) {
            return Ok(Some(tls.clone()));
        }
        let tls = upstream::tls_for(resource)?;
        if let Some(tls) = &tls {
            self.upstream_tls.insert(key, tls.clone());
        }
        Ok(tls)
    }

    /// Takes one of `user`'s connection slots, if any is left.
    fn take_slot(&self, user: &str, limit: u32) -> Option<UserSlot> {
        let mut count = self.connections.entry(user.to_string()).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(UserSlot {
            connections: self.connections.clone(),
            user: user.to_string(),
        })
    }
}

/// Starts serving the Postgres port.
pub fn start(runtime: Runtime, listener: TcpListener) -> anyhow::Result<()> {
    let config = runtime.gateway.config();
    let tls = tls::acceptor(&config)?;
    crate::fsutil::ensure_private_dir(&config.postgres.query_log_dir)?;
    let frontend = Arc::new(Frontend {
        runtime,
        tls: parking_lot::RwLock::new(tls),
        cancels: Arc::new(cancel::CancelRegistry::default()),
        upstream_tls: DashMap::new(),
        connections: Arc::new(DashMap::new()),
        event_loops: workers::EventLoops::start(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )?,
        scram_mock_secret: rand::random(),
    });
    tokio::spawn(follow_reloads(frontend.clone()));
    tokio::spawn(accept_loop(frontend, listener));
    Ok(())
}

async fn follow_reloads(frontend: Arc<Frontend>) {
    let mut reloads = frontend.runtime.gateway.reloads();
    let accepting = frontend.runtime.accepting.clone();
    loop {
        tokio::select! {
            () = accepting.cancelled() => return,
            changed = reloads.changed() => match changed {
                Ok(()) => frontend.reload_tls(),
                Err(_) => return,
            },
        }
    }
}

async fn accept_loop(frontend: Arc<Frontend>, listener: TcpListener) {
    let accepting = frontend.runtime.accepting.clone();
    loop {
        let accepted = tokio::select! {
            () = accepting.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                metrics::counter!("jitgate_connections_total", "protocol" => "postgres")
                    .increment(1);
                let Some(pending) = frontend.runtime.gateway.admit_source(peer.ip(), "postgres")
                else {
                    // Closed before the startup packet: no TLS handshake,
                    // no password check, no audit record.
                    drop(tcp);
                    continue;
                };
                if let Err(e) = hand_over(&frontend, tcp, peer, pending) {
                    tracing::warn!(error = %e, %peer, "could not hand a Postgres connection over");
                }
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept on the Postgres port failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Moves an accepted connection to one of the event loops, which serves it
/// from the startup packet to the end.
fn hand_over(
    frontend: &Arc<Frontend>,
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    pending: crate::gateway::PendingLogin,
) -> std::io::Result<()> {
    // A socket belongs to the reactor that registered it: deregister here,
    // register again on the chosen loop.
    let socket = tcp.into_std()?;
    let frontend_for_task = frontend.clone();
    let handle = frontend.event_loops.next();
    frontend.runtime.tracker.spawn_on(
        async move {
            let _open = crate::metrics::OpenConnection::new("postgres");
            match tokio::net::TcpStream::from_std(socket) {
                Ok(tcp) => login::handle(frontend_for_task, tcp, peer, pending).await,
                Err(e) => {
                    tracing::warn!(error = %e, %peer, "could not register a Postgres connection")
                }
            }
        },
        handle,
    );
    Ok(())
}
