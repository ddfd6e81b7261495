//! The KCP listener: one UDP socket, conversations told apart by the peer's address and
//! conversation id, each run by `janus_transport::kcp::driver`; every smux stream (or, with smux
//! off, the conversation itself) becomes a session of its own.
//!
//! A datagram from an address with no conversation opens one only if it is a valid KCP
//! segment (in a FEC data packet when FEC is on) carrying the conversation's first push
//! (sequence number 0); anything else is counted in `janus_edge_refused_total` as
//! `kcp_invalid` (not a KCP segment or FEC packet) or `kcp_no_conversation` (a segment of a
//! conversation this edge does not have, say one that ended) and dropped, so stray datagrams
//! and a dead conversation's retransmissions cost no session. A first push of another
//! conversation id from a known address replaces that address's conversation (the client
//! restarted), as in kcp-go. Conversations are bounded by `limits.max_sessions` and, per client
//! IP, by `limits.max_sessions_per_ip`; past them a new one is refused (`kcp_conversations`,
//! `kcp_conversations_per_ip`). Once the edge stops accepting no conversation opens and no new
//! smux stream is served; the socket keeps carrying the open ones until the edge has stopped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use janus_proto::janus::internal::v1::Transport;
use janus_transport::frames::FrameIo;
use janus_transport::kcp::conv::{Datagram, classify};
use janus_transport::kcp::driver::{self, KcpStream, ServerHooks};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::context::EdgeState;
use crate::session::serve;

/// The largest datagram read; longer ones are cut and then fail the checks.
const MAX_DATAGRAM: usize = 64 * 1024;

struct Peer {
    conv: u32,
    inbound: mpsc::Sender<Bytes>,
}

/// Live conversations per client IP, so one address (or a forger of its datagrams) cannot
/// fill the edge: at most `limits.max_sessions_per_ip`, refused beyond
/// (`kcp_conversations_per_ip`).
#[derive(Clone, Default)]
struct PerIp(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One conversation's place in [`PerIp`], given back when dropped.
struct Held(PerIp, IpAddr);

impl PerIp {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0.lock()
    }

    fn count(&self, ip: IpAddr) -> usize {
        self.lock().get(&ip).copied().unwrap_or(0)
    }

    fn hold(&self, ip: IpAddr) -> Held {
        *self.lock().entry(ip).or_default() += 1;
        Held(self.clone(), ip)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.0.lock();
        if let Some(n) = counts.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.1);
            }
        }
    }
}

/// Serves KCP clients on `socket` while the edge accepts, then keeps the socket (which carries
/// every KCP session) until the edge has stopped, so draining sessions are not cut off.
pub(crate) async fn serve_kcp(socket: UdpSocket, state: Arc<EdgeState>, sessions: TaskTracker) {
    let socket = Arc::new(socket);
    let conversations = TaskTracker::new();
    let per_ip = PerIp::default();
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    let mut buf = vec![0; MAX_DATAGRAM];
    let stopped = state.lifecycle.stopped();
    tokio::pin!(stopped);
    loop {
        let (n, from) = tokio::select! {
            () = &mut stopped => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    // An ICMP error from an earlier send surfaces here on some systems.
                    tracing::debug!(error = %e, "kcp receive failed");
                    continue;
                }
            },
        };
        let datagram = &buf[..n];
        let refuse = |reason: &str| state.metrics.refused.with_label_values(&[reason]).inc();
        let kind = classify(datagram, state.config.kcp.params.fec());
        if let Some(peer) = peers.get(&from).filter(|p| !p.inbound.is_closed()) {
            let ours = match kind {
                Ok(Datagram::Parity) => true,
                Ok(Datagram::Segments { conv, .. }) => conv == peer.conv,
                Err(_) => false,
            };
            if ours {
                // Full: dropped; KCP retransmits what it carried.
                let _ = peer.inbound.try_send(Bytes::copy_from_slice(datagram));
                continue;
            }
        }
        let (conv, fec) = match kind {
            Ok(Datagram::Segments {
                conv,
                fec,
                push: true,
                first_sn: 0,
            }) => (conv, fec),
            Ok(_) => {
                refuse("kcp_no_conversation");
                continue;
            }
            Err(e) => {
                tracing::debug!(peer = %from, reason = %e, "kcp datagram refused");
                refuse("kcp_invalid");
                continue;
            }
        };
        if !state.lifecycle.accepting() {
            continue;
        }
        if peers.len() >= state.config.limits.max_sessions {
            peers.retain(|_, peer| !peer.inbound.is_closed());
            if peers.len() >= state.config.limits.max_sessions {
                refuse("kcp_conversations");
                continue;
            }
        }
        let ip = from.ip();
        if per_ip.count(ip) >= state.config.limits.max_sessions_per_ip {
            refuse("kcp_conversations_per_ip");
            continue;
        }
        let on_stream = {
            let (state, sessions) = (state.clone(), sessions.clone());
            Box::new(move |stream: KcpStream| {
                // Streams opened while draining are dropped, which closes them.
                if state.lifecycle.accepting() {
                    let io = FrameIo::Stream(Box::new(stream));
                    sessions.spawn(serve(state.clone(), io, from, Transport::Kcp));
                }
            })
        };
        let hooks = ServerHooks {
            on_stream,
            fec_recovered: state.metrics.kcp_fec_recovered.clone(),
        };
        let params = state.config.kcp.params;
        match driver::serve(socket.clone(), from, conv, params, fec, hooks) {
            Ok((inbound, task)) => {
                let _ = inbound.try_send(Bytes::copy_from_slice(datagram));
                let held = per_ip.hold(ip);
                conversations.spawn(async move {
                    task.await;
                    drop(held);
                });
                // Replacing an entry drops its sender, which ends that conversation.
                peers.insert(from, Peer { conv, inbound });
            }
            Err(e) => tracing::warn!(error = %e, "kcp conversation not started"),
        }
    }
    drop(peers);
    conversations.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), conversations.wait()).await;
}
