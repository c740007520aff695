//! One SSH connection: who is it (public key), and which channels it may open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditEvent, Protocol};
use crate::config::ResourceKind;
use crate::control::Caller;
use crate::serve::Runtime;
use crate::sessions::SessionGuard;

use super::channel;
use super::dataplane::{DataPlane, Sever};
use super::login_names::{key_matches, printable, split_username};
use super::login_state::{LoginState, key_fingerprint};
use super::relay;
use super::upstream::KnownHosts;

mod forwarding;

pub struct Connection {
    runtime: Runtime,
    remote: SocketAddr,
    host: String,
    user: Option<String>,
    target: Option<String>,
    login: Arc<LoginState>,
    open_channels: Arc<std::sync::atomic::AtomicUsize>,
    session: Option<SessionGuard>,
    known_hosts: Arc<KnownHosts>,
    /// Set once a resource connection passed its lease check.
    plane: Option<Arc<DataPlane>>,
    sever: Sever,
    /// Given back once logged in, or when the connection ends.
    pending: crate::gateway::PendingLogin,
    /// Cancelled when the connection ends; the data planes' `closed` with it.
    gone: CancellationToken,
}

impl Connection {
    pub fn new(
        runtime: Runtime,
        remote: SocketAddr,
        host: String,
        known_hosts: Arc<KnownHosts>,
        sever: Sever,
        pending: crate::gateway::PendingLogin,
    ) -> Self {
        Self {
            runtime,
            remote,
            host,
            user: None,
            target: None,
            login: Arc::default(),
            open_channels: Arc::default(),
            session: None,
            known_hosts,
            plane: None,
            sever,
            pending,
            gone: CancellationToken::new(),
        }
    }

    /// The data plane of this connection if `caller` holds a live lease on
    /// `resource` that passed MFA where required; created on first use.
    fn data_plane(&mut self, caller: &Caller, resource: &str) -> Option<Arc<DataPlane>> {
        let gateway = &self.runtime.gateway;
        let config = gateway.config();
        let resource = config
            .resource(resource)
            .filter(|r| r.kind == ResourceKind::Ssh)?
            .clone();
        let lease = gateway.leases().lookup(&caller.user, &resource.name)?;
        if !gateway.audit_ready() {
            return None;
        }
        let mfa_needed = gateway
            .request(lease.request_id)
            .is_none_or(|r| r.settings.mfa_required);
        if mfa_needed && !lease.mfa_passed {
            return None;
        }
        if let Some(plane) = &self.plane
            && plane.lease.request_id == lease.request_id
            && !plane.ends.is_cancelled()
        {
            return Some(plane.clone());
        }
        let key = self.login.key();
        let username = format!("{}+{}", caller.user, resource.name);
        let login = self.login_event(&username, key.as_ref(), true, None);
        let plane = DataPlane::new(
            gateway.clone(),
            caller.clone(),
            resource,
            lease,
            self.known_hosts.clone(),
            login,
            &self.gone,
        );
        // Nothing reaches the target before its session's start is on
        // record: the log may have failed just now, on these very records.
        if gateway.audit_failing() {
            return None;
        }
        let shutdown = self.runtime.sessions.clone();
        tokio::spawn(plane.clone().watch_lease(self.sever.clone(), shutdown));
        self.plane = Some(plane.clone());
        Some(plane)
    }

    pub fn login_state(&self) -> Arc<LoginState> {
        self.login.clone()
    }

    fn known_key(&self, username: &str, key: &PublicKey) -> bool {
        let Some((user, _)) = split_username(username) else {
            return false;
        };
        let config = self.runtime.gateway.config();
        config
            .directory
            .user(user)
            .is_some_and(|u| key_matches(key, &u.ssh_keys))
    }

    fn audit_login(&self, username: &str, key: &PublicKey, accepted: bool, reason: Option<&str>) {
        let event = self.login_event(username, Some(key), accepted, reason);
        self.runtime.gateway.audit_all_in_place(vec![event]);
    }

    /// A login's record, naming the key it presented: which of a user's
    /// keys got in, and which unknown one knocked.
    fn login_event(
        &self,
        username: &str,
        key: Option<&PublicKey>,
        accepted: bool,
        reason: Option<&str>,
    ) -> AuditEvent {
        let (user, resource) = split_username(username)
            .map_or((printable(username), None), |(u, r)| {
                (u.to_string(), r.map(String::from))
            });
        let protocol = if resource.is_some() {
            Protocol::Ssh
        } else {
            Protocol::Control
        };
        AuditEvent::Login {
            protocol,
            user,
            resource,
            remote: self.remote.to_string(),
            key: key.map(key_fingerprint),
            accepted,
            reason: reason.map(String::from),
        }
    }

    fn refuse(&self, username: &str, key: &PublicKey) -> Auth {
        metrics::counter!("jitgate_ssh_auth_failures_total").increment(1);
        self.login.refused();
        // The client learns nothing about which part was wrong.
        self.audit_login(username, key, false, Some("unknown user or key"));
        Auth::reject()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        if self.known_key(user, offer.public_key) {
            Ok(Auth::Accept)
        } else {
            Ok(self.refuse(user, offer.public_key))
        }
    }

    async fn auth_publickey(
        &mut self,
        username: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let key = key.public_key;
        if !self.known_key(username, key) {
            return Ok(self.refuse(username, key));
        }
        let Some((user, target)) = split_username(username) else {
            return Ok(self.refuse(username, key));
        };
        self.user = Some(user.to_string());
        self.target = target.map(String::from);
        self.login.logged_in(user, target, key);
        self.pending.logged_in();
        if target.is_none() {
            self.audit_login(username, key, true, None);
            let remote = self.remote.to_string();
            self.session = Some(self.runtime.gateway.sessions().register(
                Protocol::Control,
                user,
                None,
                &remote,
            ));
        }
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.login.asked_for_a_channel();
        let Some(user) = self.user.clone() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        if self.open_channels.load(Ordering::Acquire) >= super::MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.open_channels.fetch_add(1, Ordering::AcqRel);
        let caller = Caller {
            user,
            remote: self.remote.to_string(),
            host: self.host.clone(),
        };
        let gateway = self.runtime.gateway.clone();
        let open_channels = self.open_channels.clone();
        let target = self.target.clone();
        let gone = self.gone.clone();
        let plane = target
            .as_ref()
            .and_then(|resource| self.data_plane(&caller, resource));
        let server = session.handle();
        let refused = target.is_some() && plane.is_none();
        let key = refused.then(|| self.login.key().map(|key| key_fingerprint(&key)));
        let key = key.flatten();
        self.runtime.tracker.spawn(async move {
            match (target, plane) {
                (None, _) => {
                    reply.accept().await;
                    channel::serve_control(channel, gateway, caller, gone).await
                }
                (Some(_), Some(plane)) => {
                    plane
                        .channels
                        .clone()
                        .track_future(relay::open_and_relay(plane, channel, reply, server))
                        .await
                }
                (Some(resource), None) => {
                    reply.accept().await;
                    let refused = channel::Refused {
                        caller,
                        resource,
                        key,
                    };
                    channel::refuse_target(channel, gateway, refused, gone).await
                }
            }
            open_channels.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let to = forwarding::LocalForward {
            host,
            port,
            originator_address,
            originator_port,
        };
        self.open_local_forward(channel, to, reply).await;
        Ok(())
    }

    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.audit_forwarding_refused(
            format!("forwarding to unix socket {}", printable(socket_path)),
            "the gateway forwards only TCP ports".to_string(),
        );
        reply
            .reject(ChannelOpenFailure::AdministrativelyProhibited)
            .await;
        Ok(())
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_reverse_forwarding(format!(
            "remote port forwarding from {}:{port}",
            printable(address)
        ));
        Ok(false)
    }

    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_reverse_forwarding(format!(
            "remote forwarding from unix socket {}",
            printable(socket_path)
        ));
        Ok(false)
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        self.refuse_reverse_forwarding("agent forwarding".to_string());
        Ok(false)
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_reverse_forwarding("X11 forwarding".to_string());
        // The client waits for an answer to each request in order.
        session.channel_failure(channel)
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Subsystems (sftp) exist only on resources; the relay forwards
        // them. A refused resource login accepts the request too, as it
        // does a shell or command, so that the refusal's reason reaches
        // the user: sftp and scp say only "subsystem request failed" to a
        // failure, and drop the channel before reading what it says.
        if self.target.is_some() {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let config = self.runtime.gateway.config();
        if self.plane.is_some() && super::relay::env_allowed(&config.env_allow, name) {
            session.channel_success(channel)
        } else {
            session.channel_failure(channel)
        }
    }
}

impl Drop for Connection {
    /// Lets the lease watch and the channels of this connection end with
    /// it (each data plane's `closed` is a child of `gone`).
    fn drop(&mut self) {
        self.gone.cancel();
    }
}
