//! Forwarding: `ssh -L` to a resource that allows it, inside a live
//! lease, relayed by `ssh::forward`; whatever would let the target reach
//! back into the client's side refused, and every refusal audited.

use russh::server::{ChannelOpenHandle, Msg};
use russh::{Channel, ChannelOpenFailure};

use super::Connection;
use crate::audit::AuditEvent;
use crate::control::Caller;
use crate::gateway::AUDIT_UNAVAILABLE;
use crate::ssh::forward;
use crate::ssh::login_names::printable;

/// Where an `ssh -L` (direct-tcpip) channel asks to go, and from where.
pub(super) struct LocalForward<'a> {
    pub host: &'a str,
    pub port: u32,
    pub originator_address: &'a str,
    pub originator_port: u32,
}

impl Connection {
    /// Opens an `ssh -L` channel through the target's own SSH server, or
    /// refuses it saying why (no lease, not allowed on the resource).
    pub(super) async fn open_local_forward(
        &mut self,
        channel: Channel<Msg>,
        to: LocalForward<'_>,
        reply: ChannelOpenHandle,
    ) {
        let LocalForward {
            host,
            port,
            originator_address,
            originator_port,
        } = to;
        self.login.asked_for_a_channel();
        let (Some(user), Some(resource)) = (self.user.clone(), self.target.clone()) else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return;
        };
        let caller = Caller {
            user,
            remote: self.remote.to_string(),
            host: self.host.clone(),
        };
        let allowed = self
            .runtime
            .gateway
            .config()
            .resource(&resource)
            .is_some_and(|r| r.allow_port_forwarding);
        let plane = if allowed {
            self.data_plane(&caller, &resource)
        } else {
            None
        };
        let Some(plane) = plane else {
            let reason = if !allowed {
                format!("port forwarding is not allowed on {resource}")
            } else if self.runtime.gateway.audit_ready() {
                format!("no active lease for {resource}")
            } else {
                AUDIT_UNAVAILABLE.to_string()
            };
            self.audit_forwarding_refused(
                format!("port forwarding to {}:{port}", printable(host)),
                reason.clone(),
            );
            // The client prints the description with its refusal.
            reply
                .reject_saying(ChannelOpenFailure::AdministrativelyProhibited, reason)
                .await;
            return;
        };
        let upstream = match plane.upstream().await {
            Ok(handle) => handle
                .channel_open_direct_tcpip(host, port, originator_address, originator_port)
                .await
                .ok(),
            Err(_) => None,
        };
        let Some(upstream) = upstream else {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            return;
        };
        reply.accept().await;
        let target = format!("{host}:{port}");
        self.runtime.tracker.spawn(
            plane
                .channels
                .clone()
                .track_future(forward::relay_forward(plane, channel, upstream, target)),
        );
    }

    /// Forwarding a client asked for and did not get, for the audit log.
    pub(super) fn audit_forwarding_refused(&self, what: String, reason: String) {
        let actor = self.user.clone().unwrap_or_default();
        self.runtime
            .gateway
            .audit_all_in_place(vec![AuditEvent::Refused {
                actor,
                command: what,
                reason,
            }]);
    }

    /// Forwarding that would let the target reach back into the client's
    /// side (its agent, its ports, its display) is never offered.
    pub(super) fn refuse_reverse_forwarding(&self, what: String) {
        let reason = match &self.target {
            Some(resource) => format!("the gateway never forwards this from {resource}"),
            None => "the control plane offers no forwarding".to_string(),
        };
        self.audit_forwarding_refused(what, reason);
    }
}
