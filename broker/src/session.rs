//! One session's actor on the broker: claims the gateway route (kicking an older login), keeps
//! it renewed, forwards the client's packets into tunnels (enforcing that a player tunnel is
//! the player's own), waits parked for a resumable client that lost its connection (its
//! window, the broker's parked limit, an overflow while parked), and on the way out removes
//! what it owns and only that. Where the session is attached and what its resume needs is its
//! [`Continuity`].

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use janus_ops::telemetry;
use janus_proto::janus::internal::v1::{
    BrokerControl, BrokerFrame, Kick, SessionAccepted, SessionOpen, SessionRejected, broker_frame,
};
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::packet::Packet;
use janus_protocol::system;
use prost::Message;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::bus::subject;
use crate::config::{ServiceId, TunnelKind};
use crate::continuity::{Attachment, Continuity, Forwarded};
use crate::missed::Missed;
use crate::registry::{Command, EdgeHandle, Entry, Registry};
use crate::route::{gate_route_key, parked_key};
use crate::state::{BrokerState, broker_id};
use crate::tunnel::{SendError, Tunnel, TunnelMetrics};

/// Packets and closes from the edge for one session. When full, the edge link closes the
/// session (the client sends faster than its game services answer).
pub const INBOX: usize = 256;

/// What the edge link hands a session. Its variants are boxed: every session's inbox (and
/// command channel) allocates slots for a block of 32 messages up front, so the slot size is
/// memory held by every idle session.
#[derive(Debug)]
pub enum Inbound {
    /// A client packet, opened and inflated by the edge, with the W3C traceparent of the edge
    /// span that forwarded it (empty when untraced).
    Packet(Box<(Packet, String)>),
    /// The edge ended the session (client gone, edge draining).
    Close(Box<str>),
    /// The connection is gone but the client holds a ticket: the session is parked (its
    /// continuity says so already) and waits for a resume.
    Parked,
    /// A resume took the parked session to an edge.
    Resumed,
    /// The edge is moving the connection to another broker (PROTOCOL.md §13.5): the session
    /// waits, as if parked, for that broker to adopt it.
    HandedOver,
}

/// How long a handed-over session waits to be adopted before it ends (or, resumable, waits
/// out its window), and how long an adopted one goes on forwarding late packets (tunnel replies
/// to requests sent before the move) to its adopter.
const HANDOVER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const ADOPTED_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a session moved here from a live broker holds its own packets for that broker's
/// adoption reply (PROTOCOL.md §13.5) before it delivers them without it.
const ADOPTION_REPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends the broker at `by`, which adopted `uid`'s session, packets that reached this broker's
/// copy (PROTOCOL.md §13.5); `reply` for the answer to the adoption, sent even when empty.
pub async fn forward(state: &BrokerState, by: &str, uid: i64, forwarded: Forwarded, reply: bool) {
    if forwarded.is_empty() && !reply {
        return;
    }
    state
        .metrics
        .handovers
        .with_label_values(&["forwarded_packets"])
        .inc_by(forwarded.packets.len() as u64);
    let control = BrokerControl {
        uid,
        forwarded: forwarded.packets,
        forwarded_broadcasts: forwarded.broadcasts,
        forwarded_bodies: forwarded.bodies,
        had_broadcasts: forwarded.had,
        adoption_reply: reply,
        ..BrokerControl::default()
    };
    let published = state
        .bus
        .publish(
            &subject::control(&broker_id(by)),
            Bytes::from(control.encode_to_vec()),
        )
        .await;
    if let Err(e) = published {
        tracing::warn!(adopter = %by, error = %e, "could not forward packets to the adopting broker");
    }
}

/// What the detached copy `copy` of `uid`'s session answers the broker that adopted it from
/// its packet `after` on (PROTOCOL.md §13.5), as it leaves the registry: what it kept since,
/// and the broadcasts it got here. Those it gave its edge before the move are in the tail the
/// edge handed the adopter, untagged, and the adopter's own copy of one may come after the move
/// (its bus behind this broker's delivery): it does not deliver them again.
fn adoption_reply(
    registry: &Registry,
    missed: &Missed,
    uid: i64,
    copy: &Arc<Continuity>,
    after: u64,
) -> Forwarded {
    let registered = registry.leave(uid, copy);
    let mut kept = copy.take_after(after);
    if let Some(registered) = registered {
        let open = copy.open();
        kept.had = missed.since(
            (&open.color, open.sid),
            registered,
            std::time::Instant::now(),
        );
    }
    kept
}

/// A session as the edge link that brought it sees it.
#[derive(Debug, Clone)]
pub struct Member {
    /// The actor's inbox.
    pub inbox: mpsc::Sender<Inbound>,
    /// Its continuity.
    pub continuity: Arc<Continuity>,
}

/// Starts the actor of a session the edge just opened (or re-attached).
pub fn spawn(
    state: &Arc<BrokerState>,
    edge: Arc<EdgeHandle>,
    session_id: u64,
    open: SessionOpen,
) -> Member {
    let continuity = Arc::new(
        Continuity::new(
            Some(Attachment { edge, session_id }),
            &open,
            state.config.resume.retain_packets,
        )
        .with_delivery(&state.delivery),
    );
    start(state, session_id, continuity)
}

/// Starts the actor of a session whose `continuity` is ready: a new one, or one restored from
/// its parked copy that a resume has just taken (PROTOCOL.md §13.5).
pub fn start(state: &Arc<BrokerState>, session_id: u64, continuity: Arc<Continuity>) -> Member {
    let (tx, rx) = mpsc::channel(INBOX);
    let open = continuity.open();
    let edge = continuity
        .attachment()
        .map(|a| a.edge.edge_id.clone())
        .unwrap_or_default();
    let span = tracing::info_span!("session", %edge, session_id, uid = open.uid);
    let actor = Actor {
        state: state.clone(),
        session_id,
        key: gate_route_key(&open.color, open.uid),
        uid: open.uid,
        continuity: continuity.clone(),
        inbox: tx.clone(),
        tunnels: HashMap::new(),
        parked: None,
        leaving: None,
        replica: None,
        moving: false,
    };
    state
        .tasks
        .spawn(tracing::Instrument::instrument(actor.run(rx), span));
    Member {
        inbox: tx,
        continuity,
    }
}

struct Actor {
    state: Arc<BrokerState>,
    /// The id the session was opened with (names it to game services: the Referer).
    session_id: u64,
    key: String,
    uid: i64,
    continuity: Arc<Continuity>,
    inbox: mpsc::Sender<Inbound>,
    tunnels: HashMap<(ServiceId, i64), Tunnel>,
    /// While parked: until when.
    parked: Option<tokio::time::Instant>,
    /// Adopted by another broker: its endpoint, where it started, and when this copy ends.
    leaving: Option<(String, u64, tokio::time::Instant)>,
    /// The parked copy last written to the route store, while there is one, when it was
    /// written, and when the next write is due (packets kept since).
    replica: Option<String>,
    /// Handed over to another broker by its edge, waiting to be adopted.
    moving: bool,
}

/// How a session's actor ended.
enum End {
    /// The edge closed it; nothing to tell the edge.
    Closed,
    /// The broker is shutting down: the edge moves an attached session elsewhere, and a parked
    /// one's copy stays in the route store for a resume at another broker.
    Shutdown,
    /// Tell the edge to log the client out with `code`.
    Kick(LogoutCode, String),
    /// The client can no longer resume it (a close reason of PROTOCOL.md §9).
    Lost(&'static str),
}

impl Actor {
    async fn run(mut self, mut inbox: mpsc::Receiver<Inbound>) {
        let (commands, mut command_rx) = mpsc::channel(4);
        // Cold steps (claim, renew, tunnel open, release) run boxed, so the task every session
        // keeps alive is only as large as its loop.
        let claimed = Box::pin(self.claim(commands)).await;
        let mut reply_due = match &claimed {
            Ok(true) if self.continuity.holding() => {
                Some(tokio::time::Instant::now() + ADOPTION_REPLY_WAIT)
            }
            _ => {
                self.continuity.stop_holding();
                None
            }
        };
        if let Err(reason) = claimed {
            tracing::warn!(%reason, "session refused");
            self.state
                .metrics
                .refused
                .with_label_values(&["route_store"])
                .inc();
            self.frame(broker_frame::Kind::Rejected(SessionRejected {
                session_id: self.session_id,
                logout_code: LogoutCode::Server as i32,
                reason,
            }))
            .await;
            self.continuity.end();
            return;
        }
        self.frame(broker_frame::Kind::Accepted(SessionAccepted {
            session_id: self.session_id,
        }))
        .await;
        tracing::debug!("session accepted");
        let live = self.state.metrics.live.with_label_values(&["sessions"]);
        live.inc();

        let renew_every = self.state.gate_ttl() / 2;
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        // When the stage's next paced packet is due (PROTOCOL.md §16).
        let mut release_due = None;
        let end = loop {
            let parked_until = self.parked;
            let leave_at = self.leaving.as_ref().map(|l| l.2);
            // One timer for both (every sleep in this select is memory held by every session).
            let due = reply_due.into_iter().chain(release_due).min();
            tokio::select! {
                () = self.continuity.waiting.notified() => {
                    if !self.continuity.holding() {
                        reply_due = None;
                    }
                    self.continuity.drain().await;
                    release_due = Box::pin(self.continuity.release()).await;
                }
                () = sleep_until(due) => {
                    let now = tokio::time::Instant::now();
                    if reply_due.is_some_and(|at| at <= now) {
                        tracing::warn!("no adoption reply from the previous broker; delivering without it");
                        reply_due = None;
                        self.continuity.stop_holding();
                    }
                    if release_due.is_some_and(|at| at <= now) {
                        release_due = Box::pin(self.continuity.release()).await;
                    }
                }
                inbound = inbox.recv() => match inbound {
                    Some(Inbound::Packet(forwarded)) => {
                        let (packet, traceparent) = *forwarded;
                        let span = tracing::info_span!("forward", module = packet.r#mod, seq = packet.seq, obj = packet.obj);
                        telemetry::set_parent(&span, &traceparent);
                        if let Some(end) = self.forward(packet).instrument(span).await {
                            break end;
                        }
                    }
                    Some(Inbound::Close(reason)) => {
                        tracing::debug!(%reason, "closed by the edge");
                        break End::Closed;
                    }
                    Some(Inbound::Parked) => {
                        if let Some(end) = self.park() {
                            break end;
                        }
                        self.replicate().await;
                    }
                    Some(Inbound::Resumed) => {
                        self.unpark();
                        self.leaving = None;
                        self.moving = false;
                        self.drop_replica().await;
                    }
                    Some(Inbound::HandedOver) => {
                        if let Some(end) = self.park() {
                            break end;
                        }
                        // Not copied to the route store: the edge holds the session, and the
                        // broker it moves to gets everything from it and from here.
                        self.moving = true;
                        self.parked = self.parked.map(|until| until.max(tokio::time::Instant::now() + HANDOVER_WAIT));
                    }
                    None => break End::Closed,
                },
                Some(command) = command_rx.recv() => match *command {
                    Command::Kick { code, reason } => {
                        break End::Kick(LogoutCode::try_from(code).unwrap_or(LogoutCode::Server), reason);
                    }
                    Command::Adopted { by, after } => self.adopted(by, after).await,
                },
                // What reached this copy until now goes to the adopter with its end.
                () = sleep_until(leave_at) => break End::Closed,
                _ = renew.tick() => {
                    if let Some(end) = Box::pin(self.renew()).await {
                        break end;
                    }
                }
                () = sleep_until(parked_until), if self.leaving.is_none() => {
                    // A resume may have taken the session just now; its Resumed is on the way.
                    if self.continuity.attachment().is_none() {
                        let reason = if self.continuity.resumable() { "resume_expired" } else { "handover_expired" };
                        break End::Lost(reason);
                    }
                    self.unpark();
                }
                _ = self.continuity.lost.cancelled() => break End::Lost(self.continuity.lost_reason()),
                // Parked by the broker: its edge's queue was full.
                () = self.continuity.parked.notified() => {
                    if self.parked.is_none() && self.continuity.attachment().is_none() {
                        if let Some(end) = self.park() {
                            break end;
                        }
                        self.replicate().await;
                    }
                }
                // A packet kept while detached: sent on to the adopter, or the parked copy is
                // brought up to date (one write at a time: what is kept meanwhile goes in the
                // next one, right after).
                () = self.continuity.changed.notified() => {
                    if self.leaving.is_some() {
                        self.forward_kept().await;
                    } else if self.parked.is_some() && !self.moving {
                        self.replicate().await;
                    }
                }
                // The edge learns of the shutdown on the link and moves the session elsewhere.
                _ = self.state.shutdown.cancelled() => break End::Shutdown,
            }
        };
        let shutdown = matches!(end, End::Shutdown);
        let adopted = self.leaving.take();
        if let Some((by, after, _)) = &adopted {
            // An adopted copy, however it ends: its last packets go to the adopter in the same
            // step as the end, so none falls between.
            let last = self.continuity.leave(*after);
            forward(&self.state, by, self.uid, last, false).await;
        } else if shutdown && self.continuity.copy_behind() {
            // Going away with packets the parked copy lacks: it gets them first.
            self.replicate().await;
        }
        // Nothing is queued for the session from here on; the edge it was at hears why.
        let at = self.continuity.end();
        let told = match end {
            End::Kick(code, reason) => {
                tracing::info!(?code, %reason, "session kicked");
                self.state
                    .metrics
                    .kicks
                    .with_label_values(&[code.as_str_name()])
                    .inc();
                Some((code, reason))
            }
            End::Lost(reason) => {
                tracing::info!(reason, "resumable session lost");
                self.state.metrics.lost.with_label_values(&[reason]).inc();
                Some((LogoutCode::Server, reason.to_owned()))
            }
            End::Closed | End::Shutdown => None,
        };
        if !shutdown || adopted.is_some() {
            self.drop_replica().await;
        }
        if let (Some(at), Some((code, reason))) = (at, told) {
            at.edge.send(kick(&at, code, reason)).await;
        }
        self.unpark();
        if shutdown && adopted.is_none() {
            // The session goes on at another broker (its edge re-attaches it, or a resume takes
            // the parked copy): the route keeps naming this one until that broker takes it, so
            // pushes meanwhile wait for it and it learns where the session came from
            // (PROTOCOL.md §13.5).
            self.state
                .registry
                .remove_if_current(self.uid, &self.continuity);
        } else {
            Box::pin(self.release()).await;
        }
        live.dec();
    }

    /// The connection is gone and the client may come back: wait for it, within the window
    /// and the broker's parked limit.
    fn park(&mut self) -> Option<End> {
        let metrics = &self.state.metrics;
        if metrics.parked.get()
            >= i64::try_from(self.state.config.resume.max_parked).unwrap_or(i64::MAX)
        {
            return Some(End::Lost("resume_limit"));
        }
        if self.parked.is_none() {
            metrics.parked.inc();
        }
        let window = std::time::Duration::from_secs(u64::from(self.continuity.window_secs()));
        self.parked = Some(tokio::time::Instant::now() + window);
        tracing::debug!(?window, "session parked");
        None
    }

    /// Another broker took the session, from its packet `after` on (PROTOCOL.md §13.5). A copy
    /// still attached here is a login that went on here (a resume won the race): it stays, and
    /// route renewal settles which one remains. A detached copy leaves the registry (pushes
    /// follow the route to the adopter from now on; broadcasts still reach it), answers with
    /// what it kept, and ends after [`ADOPTED_LINGER`], forwarding what still reaches it
    /// meanwhile (a tunnel reply in flight, a broadcast the adopter may have missed). The adopter hears back either way, so it holds its own packets no longer.
    async fn adopted(&mut self, by: String, after: u64) {
        if self.continuity.attachment().is_some() || self.leaving.is_some() {
            forward(&self.state, &by, self.uid, Forwarded::default(), true).await;
            return;
        }
        tracing::info!(adopter = %by, after, "session adopted by another broker");
        self.state
            .metrics
            .handovers
            .with_label_values(&["adopted"])
            .inc();
        let kept = adoption_reply(
            &self.state.registry,
            &self.state.missed,
            self.uid,
            &self.continuity,
            after,
        );
        forward(&self.state, &by, self.uid, kept, true).await;
        self.leaving = Some((by, after, tokio::time::Instant::now() + ADOPTED_LINGER));
    }

    /// Sends the adopter the packets kept for it since the last call.
    async fn forward_kept(&self) {
        let Some((by, after, _)) = &self.leaving else {
            return;
        };
        let kept = self.continuity.take_after(*after);
        forward(&self.state, by, self.uid, kept, false).await;
    }

    /// Writes the parked session's copy to the route store, where any broker finds it for a
    /// resume if this one goes away (PROTOCOL.md §13.5), for the rest of its window.
    async fn replicate(&mut self) {
        use base64::Engine;
        let (Some(snapshot), Some(until)) = (self.continuity.snapshot(), self.parked) else {
            return;
        };
        let sent = snapshot.continuity.as_ref().map_or(0, |c| c.sent);
        let encoded = base64::engine::general_purpose::STANDARD.encode(snapshot.encode_to_vec());
        let ttl = until
            .saturating_duration_since(tokio::time::Instant::now())
            .max(std::time::Duration::from_secs(1));
        match self
            .state
            .routes
            .swap(&parked_key(self.uid), &encoded, ttl)
            .await
        {
            Ok(_) => {
                self.replica = Some(encoded);
                self.continuity.copied(sent);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not write the parked session's copy");
                self.state
                    .metrics
                    .route_errors
                    .with_label_values(&["park"])
                    .inc();
            }
        }
    }

    /// Removes the parked copy this actor wrote, unless another broker has taken it since.
    async fn drop_replica(&mut self) {
        if let Some(written) = self.replica.take() {
            let _ = self
                .state
                .routes
                .delete_if(&parked_key(self.uid), &written)
                .await;
        }
    }

    fn unpark(&mut self) {
        if self.parked.take().is_some() {
            self.state.metrics.parked.dec();
        }
    }

    /// Registers the session and writes the gateway route (in that order: a push that reads
    /// the route finds the session here); an older login is kicked. True when the route named
    /// another broker and this is the same session re-attached from there: that broker was
    /// asked to hand on what it kept (its adoption reply).
    async fn claim(&self, commands: mpsc::Sender<Box<Command>>) -> Result<bool, String> {
        let state = &self.state;
        let open = self.continuity.open();
        let (replaced, registered) = state.registry.insert(
            open.uid,
            Entry {
                continuity: self.continuity.clone(),
                inbox: self.inbox.clone(),
                color: open.color.clone(),
                sid: open.sid,
                commands,
                registered: 0,
            },
        );
        let previous = match state
            .routes
            .swap(&self.key, &state.endpoint, state.gate_ttl())
            .await
        {
            Ok(previous) => previous,
            Err(e) => {
                if state.registry.remove_if_current(open.uid, &self.continuity)
                    && let Some(older) = replaced
                {
                    state.registry.insert(open.uid, older);
                }
                return Err(format!("route store unavailable: {e}"));
            }
        };
        let reason = "logged in elsewhere".to_owned();
        if let Some(older) = replaced {
            let _ = older.commands.try_send(Box::new(Command::Kick {
                code: LogoutCode::ConflictingLogin as i32,
                reason,
            }));
            return Ok(false);
        }
        let Some(owner) = previous.filter(|p| *p != state.endpoint) else {
            return Ok(false);
        };
        if open.reattach && !open.handed_over {
            // Re-attached after its broker's link was lost, or taken from its parked copy: if
            // that broker is dead, broadcasts may have missed the session meanwhile. They go
            // out first, before its own packets held in line since it registered.
            let missed = state.missed.adopted(
                open.uid,
                &owner,
                (&open.color, open.sid),
                registered,
                std::time::Instant::now(),
            );
            if !missed.is_empty() {
                state
                    .metrics
                    .missed_broadcasts
                    .with_label_values(&["delivered"])
                    .inc_by(missed.len() as u64);
            }
            let mut forwarded = Forwarded::default();
            for notice in &missed {
                for (body, packet) in notice.packets.iter().enumerate() {
                    forwarded.packets.push((**packet).clone());
                    forwarded.broadcasts.push(notice.id.clone());
                    forwarded.bodies.push(body as u32);
                }
            }
            self.continuity.forwarded(forwarded, true);
        }
        {
            // A re-attached session is the same login moving here, not a second one: its old
            // broker, if alive, ends its copy quietly and hands on what it kept since.
            let control = if open.reattach {
                BrokerControl {
                    uid: open.uid,
                    adopted_by: state.endpoint.clone(),
                    adopted_after: self.continuity.started(),
                    ..BrokerControl::default()
                }
            } else {
                BrokerControl {
                    uid: open.uid,
                    logout_code: LogoutCode::ConflictingLogin as i32,
                    reason,
                    ..BrokerControl::default()
                }
            };
            let published = state
                .bus
                .publish(
                    &subject::control(&broker_id(&owner)),
                    Bytes::from(control.encode_to_vec()),
                )
                .await;
            if let Err(e) = published {
                tracing::warn!(%owner, error = %e, "could not tell the older session's broker");
                return Ok(false);
            }
            Ok(open.reattach)
        }
    }

    /// Renews the gateway route; another owner means this login was superseded elsewhere.
    async fn renew(&self) -> Option<End> {
        let state = &self.state;
        match state
            .routes
            .renew(&self.key, &state.endpoint, state.gate_ttl())
            .await
        {
            Ok(Some(owner)) if owner == state.endpoint => None,
            // Detached (parked, or handed over): the session went on elsewhere, and that broker's
            // adoption (or a kick for a new login) ends this copy.
            Ok(Some(_)) if self.continuity.attachment().is_none() => None,
            Ok(Some(owner)) => Some(End::Kick(
                LogoutCode::ConflictingLogin,
                format!("route now held by {owner}"),
            )),
            Ok(None) => {
                // The route vanished (expired during an outage, or flushed): write it again.
                if let Err(e) = state
                    .routes
                    .swap(&self.key, &state.endpoint, state.gate_ttl())
                    .await
                {
                    tracing::warn!(error = %e, "could not rewrite the gateway route");
                }
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "route renewal failed; the session goes on");
                state
                    .metrics
                    .route_errors
                    .with_label_values(&["renew"])
                    .inc();
                None
            }
        }
    }

    /// Sends a client packet into its tunnel, opening (or reopening once) as needed.
    async fn forward(&mut self, mut packet: Packet) -> Option<End> {
        let (id, service) = self.state.services.service_for(packet.r#mod);
        let service = service.clone();
        // obj 0 is the player's uid in every module, before the tunnel is chosen (go-pantheon's
        // rule, PROTOCOL.md §14): a room request with obj 0 goes to the player's own room object.
        if packet.obj == 0 {
            packet.obj = self.uid;
        }
        if service.tunnel == TunnelKind::Player && packet.obj != self.uid {
            tracing::warn!(
                obj = packet.obj,
                "refused a player tunnel for another player's object"
            );
            self.state
                .metrics
                .packets_refused
                .with_label_values(&["foreign_object"])
                .inc();
            let reply = system::unexpected_error(
                packet.r#mod,
                packet.seq,
                format!("obj {} is not yours", packet.obj),
            );
            self.continuity.deliver(reply).await;
            return None;
        }
        let key = (id, packet.obj);
        for _ in 0..2 {
            if !self.tunnels.contains_key(&key) {
                let opened = Box::pin(
                    self.state.tunnels.open(
                        &service,
                        self.continuity.clone(),
                        packet.obj,
                        self.session_id,
                        TunnelMetrics {
                            round_trip: self
                                .state
                                .metrics
                                .tunnel_seconds
                                .with_label_values(&[&service.name]),
                            failed: self
                                .state
                                .metrics
                                .tunnels
                                .with_label_values(&[&service.name, "failed"]),
                        },
                    ),
                )
                .await;
                let result = opened.as_ref().map_or_else(|e| e.kind(), |_| "ok");
                self.state
                    .metrics
                    .tunnels
                    .with_label_values(&[&service.name, result])
                    .inc();
                match opened {
                    Ok(tunnel) => {
                        self.tunnels.insert(key, tunnel);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot open tunnel");
                        let reply =
                            system::unexpected_error(packet.r#mod, packet.seq, e.client_reason());
                        self.continuity.deliver(reply).await;
                        return None;
                    }
                }
            }
            let tunnel = &self.tunnels[&key];
            match tunnel.send(packet) {
                Ok(()) => return None,
                Err(SendError::Full) => {
                    return Some(End::Kick(
                        LogoutCode::Server,
                        format!("{} is not keeping up with this session", service.name),
                    ));
                }
                Err(SendError::Closed(back)) => {
                    tracing::info!(endpoint = %tunnel.endpoint, "tunnel closed; reopening");
                    self.tunnels.remove(&key);
                    packet = *back;
                }
            }
        }
        let reply = system::unexpected_error(packet.r#mod, packet.seq, "tunnel closed twice");
        self.continuity.deliver(reply).await;
        None
    }

    /// Removes the registry entry and the gateway route if they are still this session's.
    async fn release(&self) {
        let state = &self.state;
        if state.registry.remove_if_current(self.uid, &self.continuity)
            && let Err(e) = state.routes.delete_if(&self.key, &state.endpoint).await
        {
            tracing::warn!(error = %e, "could not delete the gateway route; it will expire");
            state
                .metrics
                .route_errors
                .with_label_values(&["delete"])
                .inc();
        }
    }

    /// Sends `kind` to the session's edge, if it is attached.
    async fn frame(&self, kind: broker_frame::Kind) {
        if let Some(at) = self.continuity.attachment() {
            at.edge.send(BrokerFrame { kind: Some(kind) }).await;
        }
    }
}

/// The frame that ends the session attached at `at` with SCServerLogout `code`.
fn kick(at: &Attachment, code: LogoutCode, reason: String) -> BrokerFrame {
    BrokerFrame {
        kind: Some(broker_frame::Kind::Kick(Kick {
            session_ids: vec![at.session_id],
            logout_code: code as i32,
            reason,
        })),
    }
}

/// Sleeps until `deadline`; never, without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use janus_proto::janus::internal::v1::{Continuity as Given, broker_frame::Kind};

    use super::*;
    use crate::continuity::BroadcastBody;

    fn edge(name: &str) -> (Arc<EdgeHandle>, mpsc::Receiver<BrokerFrame>) {
        let (tx, rx) = mpsc::channel(16);
        (Arc::new(EdgeHandle::new(name.into(), tx)), rx)
    }

    fn broadcast(n: i32) -> Arc<Packet> {
        Arc::new(Packet {
            r#mod: 10,
            seq: n,
            ..Default::default()
        })
    }

    /// The seqs of the packets queued on an edge, and whether a `HandedOver` came.
    fn delivered(rx: &mut mpsc::Receiver<BrokerFrame>) -> (Vec<i32>, bool) {
        let (mut seqs, mut handed_over) = (Vec::new(), false);
        while let Ok(frame) = rx.try_recv() {
            match frame.kind {
                Some(Kind::Deliver(d)) => seqs.push(d.packet.unwrap().seq),
                Some(Kind::HandedOver(_)) => handed_over = true,
                _ => {}
            }
        }
        (seqs, handed_over)
    }

    fn open(reattach: bool, sent: u64, tail: Vec<Packet>) -> SessionOpen {
        SessionOpen {
            uid: 7,
            color: "blue".into(),
            sid: 1,
            reattach,
            handed_over: reattach,
            continuity: Some(Given {
                resume_key: vec![3; 32],
                ticket: b"t1".to_vec(),
                window_secs: 30,
                sent,
                tail,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A broadcast at `registry`'s broker, as [`crate::push`] delivers one: counted, noted as
    /// handled, then queued for the matching sessions (here: `to`).
    fn deliver_broadcast(
        registry: &Registry,
        missed: &Missed,
        id: &str,
        to: &[&Arc<Continuity>],
        packet: &Arc<Packet>,
    ) {
        let (_, count) = registry.matching("blue", 1);
        missed.handled(id, ("blue", 1), count, std::time::Instant::now());
        for session in to {
            assert!(session.try_deliver(packet, Some(&BroadcastBody::of(id, 0)), None));
        }
    }

    /// The rebalance race (PROTOCOL.md §13.5): broker A delivers broadcast a/11 to the session
    /// while its edge is still on A, the edge moves the session to broker B (the tail it hands
    /// over has a/11, untagged), and B's own copy of a/11 comes only after B registered the
    /// session (B's bus behind A's delivery). B must not give the client a/11 a second time.
    #[tokio::test]
    async fn an_adopter_does_not_deliver_again_a_broadcast_its_session_got_before_the_move() {
        // Broker A: a/10 came before the session was there, a/11 while its edge was on A.
        let (registry, missed) = (Registry::default(), Missed::default());
        registry.matching("blue", 1);
        missed.handled("a/10", ("blue", 1), 1, std::time::Instant::now());
        let (a, mut a_rx) = edge("a");
        let attachment = Attachment {
            edge: a.clone(),
            session_id: 1,
        };
        let copy = Arc::new(Continuity::new(
            Some(attachment),
            &open(false, 0, vec![]),
            8,
        ));
        registry.insert(
            7,
            Entry {
                continuity: copy.clone(),
                inbox: mpsc::channel(1).0,
                color: "blue".into(),
                sid: 1,
                commands: mpsc::channel(1).0,
                registered: 0,
            },
        );
        deliver_broadcast(&registry, &missed, "a/11", &[&copy], &broadcast(11));
        assert!(copy.hand_over(&a, 1).await);
        assert_eq!(
            delivered(&mut a_rx),
            (vec![11], true),
            "the client has a/11"
        );

        // Broker B opens the moved session with the edge's tail, then gets a/11 itself.
        let (b, mut b_rx) = edge("b");
        let attachment = Attachment {
            edge: b.clone(),
            session_id: 1,
        };
        let tail = vec![(*broadcast(11)).clone()];
        let adopter = Arc::new(Continuity::new(Some(attachment), &open(true, 1, tail), 8));
        assert!(adopter.holding());
        assert!(adopter.try_deliver(&broadcast(11), Some(&BroadcastBody::of("a/11", 0)), None));

        // A's answer to the adoption; then a/12, which the session did not have.
        let reply = adoption_reply(&registry, &missed, 7, &copy, adopter.started());
        assert_eq!(reply.had, ["a/11"], "a/10 never reached the copy at A");
        adopter.forwarded(reply, true);
        adopter.drain().await;
        assert!(adopter.try_deliver(&broadcast(12), Some(&BroadcastBody::of("a/12", 0)), None));
        assert!(
            adopter.try_deliver(&broadcast(11), Some(&BroadcastBody::of("a/11", 0)), None),
            "taken as had"
        );
        assert_eq!(delivered(&mut b_rx), (vec![12], false), "a/11 not again");
        assert_eq!(adopter.counts().0, 2, "the tail's a/11 and a/12");
    }
}
