//! One client session on the edge, whatever its transport: the handshake under its timeout,
//! then a loop that feeds client frames through the sans-IO session (heartbeats answered here,
//! everything else rate-limited and forwarded to the session's broker) and writes what the
//! broker sends back. It ends for exactly one [`Close`] reason, which is logged, counted and,
//! where the protocol allows, told to the client. A session whose client holds a resume ticket
//! outlives its connection at its broker, which parks it; a connection that presents the ticket,
//! at this edge or any other, asks that broker for it (PROTOCOL.md §13). The edge keeps nothing
//! of a session once its connection is gone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use janus_proto::janus::internal::v1::{
    ClientPacket, Continuity, EdgeFrame, RateState, ResumeGranted, ResumeRequest, SessionClose,
    SessionOpen, SessionProgress, Transport, edge_frame,
};
use janus_proto::message::sc_heartbeat::Code as HeartbeatCode;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::message::{CsHeartbeat, CsResumeAck};
use janus_proto::packet::Packet;
use janus_shared::client::unix_now;
use janus_shared::handshake::{
    IssueTicket, Mode, ResumeOffer, ServerHandshakeConfig, SessionIdentity,
};
use janus_shared::session::{ServerEvent, ServerSession};
use janus_shared::{system, telemetry};
use prometheus::{IntCounter, IntGauge};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{EdgeConfig, HeartbeatMode};
use crate::drain::{self, Lifecycle, Phase};
use crate::error::Close;
use crate::limits::{Admission, TokenBucket};
use crate::link::{BrokerLink, Downlink, Links, SessionSlot};
use crate::metrics::Metrics;
use crate::outbox;
use crate::resume::{self, Replay};
use crate::transport::{FrameIo, Read, label};

/// What every session of one edge shares.
#[derive(Debug)]
pub struct EdgeState {
    /// The validated configuration.
    pub config: EdgeConfig,
    /// This edge's id.
    pub edge_id: String,
    /// Keys and rules of the handshake.
    pub handshake: Arc<ServerHandshakeConfig>,
    /// Broker links.
    pub links: Arc<Links>,
    /// Metrics.
    pub metrics: Metrics,
    /// Admission limits.
    pub admission: Admission,
    /// Serving, draining, logging out.
    pub lifecycle: Lifecycle,
    /// Issues and opens resume tickets.
    pub tickets: resume::Tickets,
    next_session: AtomicU64,
}

impl EdgeState {
    /// The shared state of a new edge.
    pub fn new(
        config: EdgeConfig,
        handshake: Arc<ServerHandshakeConfig>,
        links: Arc<Links>,
    ) -> Self {
        let spread = config.drain_spread();
        let limits = &config.limits;
        let admission = Admission::new(
            limits.max_sessions,
            limits.max_sessions_per_ip,
            limits.handshakes_per_ip_per_sec,
        );
        Self {
            edge_id: config.edge_id(),
            tickets: resume::Tickets::new(&handshake.signing_key),
            config,
            handshake,
            links,
            metrics: Metrics::new(),
            admission,
            lifecycle: Lifecycle::new(spread),
            next_session: AtomicU64::new(1),
        }
    }
}

/// Runs a freshly accepted connection from `peer` to its end.
pub async fn serve(state: Arc<EdgeState>, io: FrameIo, peer: SocketAddr, transport: Transport) {
    let slot = match Slot::admit(&state, peer, transport) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::info!(%peer, reason = refusal.kind(), "connection refused");
            state
                .metrics
                .refused
                .with_label_values(&[refusal.kind()])
                .inc();
            let mut io = io;
            io.close().await;
            return;
        }
    };
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("session", %peer, transport = label(transport), session = id, uid = tracing::field::Empty);
    let mut session = Session::new(state.clone(), io, peer, transport, id, slot);
    let close = session.run().instrument(span.clone()).await;
    session.finish(&close).instrument(span).await;
}

/// Issues a login's ticket naming the broker its session goes to (the rendezvous pick).
struct LoginTickets(Arc<EdgeState>);

impl IssueTicket for LoginTickets {
    fn issue(&self, identity: &SessionIdentity) -> ResumeOffer {
        let broker = self.0.links.pick(identity.uid);
        offer(
            &self.0,
            identity.uid,
            broker.as_ref().map_or("", |b| &b.endpoint),
        )
    }
}

/// A connection's place on the edge: admitted for its IP and counted in the session gauge of
/// its transport until dropped.
#[derive(Debug)]
pub struct Slot {
    state: Arc<EdgeState>,
    ip: std::net::IpAddr,
    gauge: IntGauge,
}

impl Slot {
    fn admit(
        state: &Arc<EdgeState>,
        peer: SocketAddr,
        transport: Transport,
    ) -> Result<Self, crate::limits::Refusal> {
        state.admission.admit(peer.ip(), Instant::now())?;
        let gauge = state
            .metrics
            .sessions
            .with_label_values(&[label(transport)]);
        gauge.inc();
        Ok(Self {
            state: state.clone(),
            ip: peer.ip(),
            gauge,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
        self.state.admission.release(self.ip, Instant::now());
    }
}

/// At most this many queued replies and pushes are sealed into one write.
const COALESCE: usize = 64;

struct Session {
    state: Arc<EdgeState>,
    io: FrameIo,
    peer: SocketAddr,
    transport: Transport,
    id: u64,
    proto: ServerSession,
    input: BytesMut,
    out: BytesMut,
    identity: Option<SessionIdentity>,
    broker: Option<Arc<BrokerLink>>,
    downlink: Option<outbox::Receiver<Downlink>>,
    overflow: CancellationToken,
    traffic: Traffic,
    _slot: Slot,
    /// Server packets not yet acknowledged, when the client holds a ticket (boxed: most
    /// sessions have none, and every session's task holds this field).
    replay: Option<Box<Replay>>,
    /// The client's packet and byte buckets; they go with the session when it moves.
    messages: TokenBucket,
    bytes: TokenBucket,
    /// The edge's phase, as this session last saw it.
    phase: tokio::sync::watch::Receiver<Phase>,
    /// When the client was told to reconnect (the edge drains).
    hinted: Option<tokio::time::Instant>,
}

/// This session's frame and byte counters, looked up once instead of per frame.
struct Traffic {
    frames_in: IntCounter,
    frames_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

impl Traffic {
    fn new(metrics: &crate::metrics::Metrics, transport: Transport) -> Self {
        let t = label(transport);
        Self {
            frames_in: metrics.frames.with_label_values(&[t, "in"]),
            frames_out: metrics.frames.with_label_values(&[t, "out"]),
            bytes_in: metrics.bytes.with_label_values(&[t, "in"]),
            bytes_out: metrics.bytes.with_label_values(&[t, "out"]),
        }
    }
}

impl Session {
    fn new(
        state: Arc<EdgeState>,
        io: FrameIo,
        peer: SocketAddr,
        transport: Transport,
        id: u64,
        slot: Slot,
    ) -> Self {
        let mut proto = ServerSession::new(
            state.handshake.clone(),
            state.config.session.session_config(),
        );
        if state.config.resume.window_secs > 0 {
            proto = proto.with_tickets(Arc::new(LoginTickets(state.clone())));
        }
        let rules = &state.config.session;
        let now = Instant::now();
        let phase = state.lifecycle.watch();
        Self {
            messages: TokenBucket::new(rules.messages_per_sec, rules.message_burst, now),
            bytes: TokenBucket::new(rules.bytes_per_sec, rules.byte_burst, now),
            traffic: Traffic::new(&state.metrics, transport),
            state,
            io,
            peer,
            transport,
            id,
            proto,
            input: BytesMut::new(),
            out: BytesMut::new(),
            identity: None,
            broker: None,
            downlink: None,
            overflow: CancellationToken::new(),
            _slot: slot,
            replay: None,
            phase,
            hinted: None,
        }
    }

    async fn run(&mut self) -> Close {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(self.state.config.handshake.timeout_secs);
        let hello = match tokio::time::timeout_at(deadline, self.handshake()).await {
            Err(_) => Err(Close::HandshakeTimeout),
            Ok(result) => result,
        };
        let opened = match hello {
            Ok(Hello::Login(identity)) => Ok(identity),
            // Cold paths run boxed, so the task every session keeps alive is only as large as
            // its serve loop.
            Ok(Hello::Resume(ticket)) => {
                match tokio::time::timeout_at(deadline, Box::pin(self.resume(ticket))).await {
                    Err(_) => Err(Close::HandshakeTimeout),
                    Ok(result) => result,
                }
            }
            Err(close) => Err(close),
        };
        let identity = match opened {
            Ok(identity) => identity,
            Err(close) => {
                self.state
                    .metrics
                    .handshakes
                    .with_label_values(&[close.kind()])
                    .inc();
                return close;
            }
        };
        self.state
            .metrics
            .handshakes
            .with_label_values(&["ok"])
            .inc();
        self.state
            .metrics
            .handshake_seconds
            .with_label_values(&[label(self.transport)])
            .observe(started.elapsed().as_secs_f64());
        tracing::Span::current().record("uid", identity.uid);
        tracing::debug!(sid = identity.sid, mode = ?identity.mode, "handshake done");
        let resumed = self.identity.is_some();
        self.identity = Some(identity);
        if !resumed {
            if self.proto.resume_ticket().is_some() {
                self.replay = Some(Box::new(Replay::new(
                    self.state.config.resume.retain_packets,
                )));
            }
            if let Err(close) = self.attach(false).await {
                return close;
            }
        }
        self.serve().await
    }

    /// The connection presented `ticket`: ask the broker holding its session (the ticket names
    /// it; the rendezvous pick when that one is gone) to decide, and go on with the session
    /// when it grants the resume. The identity is set on success.
    async fn resume(&mut self, ticket: Vec<u8>) -> Result<SessionIdentity, Close> {
        let result = self.redeem(ticket).await;
        let result_label = result.as_ref().map_or_else(Close::kind, |_| "ok");
        self.state
            .metrics
            .resumes
            .with_label_values(&[result_label])
            .inc();
        match &result {
            Ok(_) => tracing::info!(transport = label(self.transport), "session resumed"),
            Err(close) => {
                tracing::info!(reason = close.kind(), detail = %close, "resume refused");
                if let Some(broker) = self.broker.take() {
                    broker.detach(self.id);
                }
            }
        }
        result
    }

    async fn redeem(&mut self, ticket: Vec<u8>) -> Result<SessionIdentity, Close> {
        let unknown = |detail: &str| Close::Protocol("resume_unknown", detail.to_owned());
        let named = self
            .state
            .tickets
            .open(&ticket)
            .ok_or_else(|| unknown("not a ticket of this deployment"))?;
        let broker = self
            .state
            .links
            .up_at(&named.broker)
            .or_else(|| self.state.links.pick(named.uid))
            .ok_or_else(|| unknown("no broker is reachable"))?;
        let next = offer(&self.state, named.uid, &broker.endpoint);
        let claim = self.proto.pending_resume().expect("a resume hello").claim();
        let next_resume_key = self.proto.prepare_resume(next.clone())?;
        let request = ResumeRequest {
            uid: named.uid,
            ticket: claim.ticket,
            client_pub: claim.client_pub.to_vec(),
            timestamp: claim.timestamp,
            received: claim.received,
            proof: claim.proof,
            next_ticket: next.ticket,
            next_resume_key: next_resume_key.to_vec(),
            client_ip: self.peer.ip().to_string(),
            transport: self.transport as i32,
        };
        // The ticket's broker first; the hash's pick next, where a session that moved after
        // its ticket was issued (a scale-out, PROTOCOL.md §13.5) or whose broker died is now.
        let mut brokers = vec![broker];
        if let Some(pick) = self.state.links.pick(named.uid)
            && !Arc::ptr_eq(&pick, &brokers[0])
        {
            brokers.push(pick);
        }
        let mut refused = unknown("the session's broker is unreachable");
        let mut granted = None;
        for broker in brokers {
            if let Some(old) = self.broker.take() {
                old.detach(self.id);
            }
            match self.ask(&broker, named.uid, &request).await {
                Ok(grant) => {
                    granted = Some(grant);
                    break;
                }
                Err(close) => refused = close,
            }
            if refused.kind() != "resume_unknown" {
                break;
            }
        }
        let granted = granted.ok_or(refused)?;
        let ResumeGranted {
            session,
            start_index,
            sent,
            replay,
            rate,
            ..
        } = *granted;
        let session = session.unwrap_or_default();
        let identity = SessionIdentity {
            uid: session.uid,
            sid: session.sid,
            color: session.color,
            status: session.status,
            token_expiry: session.token_expiry,
            mode: Mode::V2,
        };
        self.proto
            .complete_resume(identity.clone(), start_index, &mut self.out)?;
        let replay = Replay::resumed(
            self.state.config.resume.retain_packets,
            sent,
            replay.into_iter().map(Arc::new).collect(),
        );
        for packet in replay.tail() {
            self.proto.send(packet, &mut self.out)?;
            self.traffic.frames_out.inc();
        }
        self.replay = Some(Box::new(replay));
        if let Some(rate) = rate {
            self.restore_rate(&rate);
        }
        self.identity = Some(identity.clone());
        Ok(identity)
    }

    /// Sends the resume `request` to `broker` and waits for its decision; the session is
    /// attached there meanwhile, and stays so when granted.
    async fn ask(
        &mut self,
        broker: &Arc<BrokerLink>,
        uid: i64,
        request: &ResumeRequest,
    ) -> Result<Box<ResumeGranted>, Close> {
        let unknown = |detail: &str| Close::Protocol("resume_unknown", detail.to_owned());
        let (tx, mut downlink) = outbox::outbox(self.state.config.session.outbound_queue);
        broker.attach(
            self.id,
            SessionSlot {
                tx,
                overflow: self.overflow.clone(),
                uid,
            },
        );
        self.broker = Some(broker.clone());
        let frame = EdgeFrame {
            session_id: self.id,
            kind: Some(edge_frame::Kind::Resume(request.clone())),
        };
        if !broker.send(frame).await {
            return Err(unknown("the session's broker is unreachable"));
        }
        loop {
            match downlink.recv().await {
                Some(Downlink::Granted(granted)) => {
                    self.downlink = Some(downlink);
                    return Ok(granted);
                }
                Some(Downlink::Refused(reason)) => {
                    return Err(Close::Protocol(
                        refusal(&reason),
                        format!("the broker refused the resume: {reason}"),
                    ));
                }
                None | Some(Downlink::LinkLost) => {
                    return Err(unknown("the session's broker went away"));
                }
                Some(_) => {}
            }
        }
    }

    async fn handshake(&mut self) -> Result<Hello, Close> {
        loop {
            let event = match self
                .io
                .read(&mut self.input, self.proto.max_frame())
                .await?
            {
                Read::Bytes(_) => self
                    .proto
                    .poll(&mut self.input, unix_now(), &mut self.out)?,
                Read::Frame(payload, _) => Some(self.proto.handle_frame(
                    payload,
                    unix_now(),
                    &mut self.out,
                )?),
                Read::Nothing => None,
            };
            match event {
                Some(ServerEvent::Established(identity)) => {
                    self.write().await?;
                    return Ok(Hello::Login(identity));
                }
                Some(ServerEvent::ResumeRequested { ticket }) => {
                    return Ok(Hello::Resume(ticket));
                }
                Some(ServerEvent::Packet(_)) => {
                    return Err(Close::Protocol(
                        "unexpected_state",
                        "packet before the handshake".into(),
                    ));
                }
                None => {}
            }
        }
    }

    /// Moves the session to the broker the hash picks now (its link dropped).
    /// No broker up (all of them replaced at once, say): the session waits for one, up to the
    /// re-attach grace, instead of ending.
    async fn reattach(&mut self) -> Result<(), Close> {
        if let Some(old) = self.broker.take() {
            old.detach(self.id);
        }
        let links = &self.state.links;
        if !links.any_up() {
            let grace = Duration::from_secs(self.state.config.brokers.reattach_grace_secs);
            tracing::info!(?grace, "no broker is up; the session waits for one");
            let waiting = self.state.metrics.waiting_for_broker.clone();
            waiting.inc();
            let up = Box::pin(links.wait_up(grace)).await;
            waiting.dec();
            if !up {
                return Err(Close::NoBroker);
            }
        }
        self.attach(true).await
    }

    /// Moves the session to the broker the hash picks now (PROTOCOL.md §13.5): the old broker
    /// stops delivering and says so after its last packet (those before it are written to the
    /// client as usual), then the session opens at the new broker with everything it had. The
    /// client is not read meanwhile, so none of its packets goes to a broker that let go.
    async fn move_broker(&mut self) -> Result<(), Close> {
        let uid = self.identity.as_ref().map_or(0, |i| i.uid);
        let (Some(old), Some(new)) = (self.broker.clone(), self.state.links.pick(uid)) else {
            return Ok(());
        };
        if Arc::ptr_eq(&old, &new) {
            return Ok(());
        }
        let handover = EdgeFrame {
            session_id: self.id,
            kind: Some(edge_frame::Kind::Close(SessionClose {
                reason: "moved".into(),
                handover: true,
                ..SessionClose::default()
            })),
        };
        if old.send(handover).await {
            let mut downlink = self.downlink.take().expect("attached");
            let last = tokio::time::timeout(HANDOVER_TIMEOUT, async {
                loop {
                    match downlink.recv().await {
                        Some(Downlink::HandedOver) | None | Some(Downlink::LinkLost) => {
                            return Ok(());
                        }
                        down => {
                            self.on_downlink(down)?;
                        }
                    }
                }
            })
            .await;
            self.downlink = Some(downlink);
            if let Ok(Err(close)) = last {
                return Err(close);
            }
        }
        tracing::debug!(from = %old.endpoint, to = %new.endpoint, "moving the session");
        self.state.metrics.moves.inc();
        self.reattach().await
    }

    /// Opens the session on the broker the hash picks; a link found dead on the way is marked
    /// down by the failed send, so the next pick is another broker.
    async fn attach(&mut self, reattach: bool) -> Result<(), Close> {
        for _ in 0..self.state.links.all().len().max(1) {
            if self.try_attach(reattach).await? {
                return Ok(());
            }
        }
        Err(Close::NoBroker)
    }

    async fn try_attach(&mut self, reattach: bool) -> Result<bool, Close> {
        let identity = self
            .identity
            .as_ref()
            .expect("attached after the handshake");
        let broker = self.state.links.pick(identity.uid).ok_or(Close::NoBroker)?;
        let (tx, rx) = outbox::outbox(self.state.config.session.outbound_queue);
        broker.attach(
            self.id,
            SessionSlot {
                tx,
                overflow: self.overflow.clone(),
                uid: identity.uid,
            },
        );
        let open = SessionOpen {
            uid: identity.uid,
            sid: identity.sid,
            color: identity.color.clone(),
            status: identity.status,
            client_ip: self.peer.ip().to_string(),
            edge_id: self.state.edge_id.clone(),
            transport: self.transport as i32,
            reattach,
            continuity: self.continuity(),
            token_expiry: identity.token_expiry,
            trace_context: Some(telemetry::traceparent())
                .filter(|t| !t.is_empty())
                .map(|t| ("traceparent".to_owned(), t))
                .into_iter()
                .collect(),
        };
        let sent = broker
            .send(EdgeFrame {
                session_id: self.id,
                kind: Some(edge_frame::Kind::Open(open)),
            })
            .await;
        if !sent {
            broker.detach(self.id);
            return Ok(false);
        }
        if reattach {
            tracing::info!(broker = %broker.endpoint, "session re-attached");
        }
        self.broker = Some(broker);
        self.downlink = Some(rx);
        Ok(true)
    }

    /// What the session's broker needs to resume it, when the client holds a ticket.
    fn continuity(&self) -> Option<Continuity> {
        let replay = self.replay.as_ref()?;
        Some(Continuity {
            resume_key: self.proto.resume_key()?.to_vec(),
            ticket: self.proto.resume_ticket()?.to_vec(),
            window_secs: u32::try_from(self.state.config.resume.window_secs).unwrap_or(u32::MAX),
            sent: replay.sent(),
            tail: replay.tail().map(|p| (**p).clone()).collect(),
            next_index: self.proto.next_index().unwrap_or_default(),
            rate: Some(self.rate_state()),
        })
    }

    /// The client's buckets now, as the broker keeps them.
    fn rate_state(&self) -> RateState {
        let now = Instant::now();
        RateState {
            messages: self.messages.level(now),
            bytes: self.bytes.level(now),
            at_ms: unix_millis(),
        }
    }

    /// The client's buckets as they were when its last connection went, refilled since.
    fn restore_rate(&mut self, rate: &RateState) {
        let since = Duration::from_millis(u64::try_from(unix_millis() - rate.at_ms).unwrap_or(0));
        let now = Instant::now();
        self.messages.set_level(rate.messages, since, now);
        self.bytes.set_level(rate.bytes, since, now);
    }

    async fn serve(&mut self) -> Close {
        let idle = Duration::from_secs(self.state.config.session.idle_timeout_secs);
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        // A resumed session starts with its handshake reply and replayed packets to write.
        if !self.out.is_empty()
            && let Err(close) = self.write().await
        {
            return close;
        }
        loop {
            let mut downlink = self.downlink.take().expect("attached");
            let resumable = self.replay.is_some();
            let step = tokio::select! {
                biased;
                drain = self.state.lifecycle.next_step(&mut self.phase, self.id, resumable, self.hinted) => {
                    self.on_drain(drain)
                }
                _ = self.overflow.cancelled() => Err(self.overflowed()),
                down = downlink.recv() => {
                    // Seal whatever else is already queued too, so one write carries it all.
                    let mut step = self.on_downlink(down);
                    for _ in 1..COALESCE {
                        let Ok(Step::Continue) = step else { break };
                        let Some(down) = downlink.try_recv() else { break };
                        step = self.on_downlink(Some(down));
                    }
                    step
                }
                read = self.io.read(&mut self.input, self.proto.max_frame()) => {
                    idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                    self.on_read(read).await
                }
                _ = &mut idle_timer => Err(Close::Idle),
            };
            self.downlink = Some(downlink);
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Reattach) => {
                    if let Err(close) = self.reattach().await {
                        return close;
                    }
                }
                Ok(Step::Move) => {
                    if let Err(close) = Box::pin(self.move_broker()).await {
                        return close;
                    }
                }
                Err(close) => return close,
            }
            if !self.out.is_empty()
                && let Err(close) = self.write().await
            {
                return close;
            }
        }
    }

    fn on_downlink(&mut self, down: Option<Downlink>) -> Result<Step, Close> {
        match down {
            None | Some(Downlink::LinkLost) => Ok(Step::Reattach),
            Some(Downlink::Accepted) => Ok(Step::Continue),
            Some(Downlink::Rejected(reason)) => Err(Close::Rejected(*reason)),
            Some(Downlink::Kick(kick)) => Err(Close::Kicked(kick.0, kick.1)),
            Some(Downlink::Release) => Err(Close::Moved),
            Some(Downlink::Move) => Ok(Step::Move),
            Some(Downlink::HandedOver) => Ok(Step::Continue),
            Some(Downlink::Packet(packet)) => {
                self.emit(packet)?;
                Ok(Step::Continue)
            }
            Some(Downlink::Granted(_) | Downlink::Refused(_)) => Ok(Step::Continue),
        }
    }

    /// Seals `packet` for the client and keeps it for a resume until acknowledged.
    fn emit(&mut self, packet: Arc<Packet>) -> Result<(), Close> {
        self.proto.send(&packet, &mut self.out)?;
        self.traffic.frames_out.inc();
        if let Some(replay) = &mut self.replay {
            replay.record(packet);
        }
        Ok(())
    }

    async fn on_read(&mut self, read: Result<Read, Close>) -> Result<Step, Close> {
        let now = Instant::now();
        let wire = match read? {
            Read::Nothing => return Ok(Step::Continue),
            Read::Bytes(n) => n,
            Read::Frame(payload, n) => {
                self.traffic.bytes_in.inc_by(n as u64);
                self.take_bytes(n, now)?;
                let event = self
                    .proto
                    .handle_frame(payload, unix_now(), &mut self.out)?;
                self.traffic.frames_in.inc();
                return self.on_event(event, now).await;
            }
        };
        self.traffic.bytes_in.inc_by(wire as u64);
        self.take_bytes(wire, now)?;
        let mut step = Step::Continue;
        while let Some(event) = self
            .proto
            .poll(&mut self.input, unix_now(), &mut self.out)?
        {
            self.traffic.frames_in.inc();
            if let Step::Reattach = self.on_event(event, now).await? {
                step = Step::Reattach;
            }
        }
        Ok(step)
    }

    fn take_bytes(&mut self, n: usize, now: Instant) -> Result<(), Close> {
        if self.bytes.take(u32::try_from(n).unwrap_or(u32::MAX), now) {
            Ok(())
        } else {
            Err(Close::RateLimited("byte_rate"))
        }
    }

    async fn on_event(&mut self, event: ServerEvent, now: Instant) -> Result<Step, Close> {
        let ServerEvent::Packet(packet) = event else {
            return Err(Close::Protocol(
                "unexpected_state",
                "second handshake".into(),
            ));
        };
        if !self.messages.take(1, now) {
            return Err(Close::RateLimited("message_rate"));
        }
        if packet.r#mod == system::MODULE && !self.forwarded_system(&packet) {
            self.on_system(packet)?;
            return Ok(self.report_progress().await);
        }
        let started = Instant::now();
        let broker = self.broker.clone().ok_or(Close::NoBroker)?;
        let frame = EdgeFrame {
            session_id: self.id,
            kind: Some(edge_frame::Kind::Packet(ClientPacket {
                packet: Some(packet),
                traceparent: telemetry::traceparent(),
            })),
        };
        if !broker.send(frame).await {
            // The link dropped; the downlink will say so and the session re-attaches. The
            // packet is lost with the link, like any in flight on it.
            return Ok(Step::Reattach);
        }
        self.state
            .metrics
            .forward_seconds
            .with_label_values(&[label(self.transport)])
            .observe(started.elapsed().as_secs_f64());
        Ok(Step::Continue)
    }

    /// The edge drains: tell a resumable client to reconnect elsewhere (not counted, not kept:
    /// PROTOCOL.md §13.6), or end the session (`Shutdown`: parked when resumable).
    fn on_drain(&mut self, step: drain::Step) -> Result<Step, Close> {
        match step {
            drain::Step::Leave => Err(Close::Shutdown),
            drain::Step::Hint => {
                self.proto
                    .send(&system::reconnect("edge draining"), &mut self.out)?;
                self.traffic.frames_out.inc();
                self.hinted = Some(tokio::time::Instant::now());
                tracing::debug!("told to reconnect");
                Ok(Step::Continue)
            }
        }
    }

    /// Tells the broker of a resumable session what the edge consumed itself (a heartbeat, an
    /// acknowledgement): the next client index and what the client acknowledged, so a resume
    /// elsewhere starts where this connection left off (PROTOCOL.md §13.2).
    async fn report_progress(&mut self) -> Step {
        let (Some(replay), Some(broker)) = (&self.replay, &self.broker) else {
            return Step::Continue;
        };
        let frame = EdgeFrame {
            session_id: self.id,
            kind: Some(edge_frame::Kind::Progress(SessionProgress {
                received: replay.oldest(),
                next_index: self.proto.next_index().unwrap_or_default(),
            })),
        };
        if broker.send(frame).await {
            Step::Continue
        } else {
            Step::Reattach
        }
    }

    /// Whether a System packet goes to the game service: heartbeats in go-pantheon's mode.
    fn forwarded_system(&self, packet: &Packet) -> bool {
        packet.seq == system::SEQ_HEARTBEAT
            && self.state.config.session.heartbeats == HeartbeatMode::Game
    }

    /// System packets the edge handles itself: the heartbeat (answered), the resume
    /// acknowledgement and the client's goodbye.
    fn on_system(&mut self, packet: Packet) -> Result<(), Close> {
        match packet.seq {
            system::SEQ_HEARTBEAT => {}
            system::SEQ_RESUME_ACK => {
                let ack = CsResumeAck::decode(&packet.data[..]).map_err(|e| {
                    Close::Protocol("malformed_packet", format!("malformed resume ack: {e}"))
                })?;
                if let Some(replay) = &mut self.replay {
                    replay.ack(ack.received);
                }
                return Ok(());
            }
            system::SEQ_BYE => return Err(Close::Bye),
            seq => {
                tracing::debug!(seq, "ignored a System packet");
                return Ok(());
            }
        }
        let beat = CsHeartbeat::decode(&packet.data[..]).map_err(|e| {
            Close::Protocol("malformed_packet", format!("malformed heartbeat: {e}"))
        })?;
        let now = unix_now();
        let code = if (beat.client_time - now).abs() > self.state.config.handshake.max_skew_secs {
            HeartbeatCode::ErrTime
        } else {
            HeartbeatCode::Succeeded
        };
        // Not kept for a resume: heartbeat replies are not counted (PROTOCOL.md §13.2).
        let uid = self.identity.as_ref().map_or(0, |i| i.uid);
        let reply = system::heartbeat_reply(packet.index, uid, now, code as i32);
        self.proto.send(&reply, &mut self.out)?;
        self.traffic.frames_out.inc();
        Ok(())
    }

    /// The session's outbound queue overflowed: counted, and the session ends as a slow
    /// consumer.
    fn overflowed(&self) -> Close {
        self.state
            .metrics
            .queue_overflows
            .with_label_values(&["session_outbound"])
            .inc();
        Close::SlowConsumer
    }

    async fn write(&mut self) -> Result<(), Close> {
        let n = self.out.len();
        let timeout = Duration::from_secs(self.state.config.session.write_timeout_secs);
        // A client that stopped reading overflows its queue while a write waits for room: it
        // is cut off then, not only at the write timeout.
        let written = tokio::select! {
            _ = self.overflow.cancelled() => None,
            written = tokio::time::timeout(timeout, self.io.write(&mut self.out)) => Some(written),
        };
        let Some(written) = written else {
            return Err(self.overflowed());
        };
        match written {
            Err(_) => Err(Close::SlowConsumer),
            Ok(Err(_)) => Err(Close::ClientClosed),
            Ok(Ok(())) => {
                self.traffic.bytes_out.inc_by(n as u64);
                Ok(())
            }
        }
    }

    /// Logs and counts `close`, tells the client where possible, tells the broker. A client
    /// that holds a ticket and lost its connection (or whose edge is going away) is not logged
    /// out: its broker parks the session for a resume at any edge.
    async fn finish(&mut self, close: &Close) {
        self.state
            .metrics
            .closes
            .with_label_values(&[close.kind()])
            .inc();
        match close {
            Close::ClientClosed => tracing::debug!("session closed by the client"),
            other => tracing::info!(reason = other.kind(), detail = %other, "session closed"),
        }
        let resumable = self.replay.is_some()
            && matches!(close, Close::ClientClosed | Close::Idle | Close::Shutdown);
        if self.identity.is_some() && !resumable {
            let logout = match close {
                Close::Kicked(code, _) => Some(*code),
                Close::Rejected(_) | Close::NoBroker | Close::Shutdown | Close::Idle => {
                    Some(LogoutCode::Server as i32)
                }
                Close::RateLimited(_) | Close::SlowConsumer | Close::Protocol(..) => {
                    Some(LogoutCode::Server as i32)
                }
                Close::ClientClosed
                | Close::Bye
                | Close::Moved
                | Close::HandshakeTimeout
                | Close::TextMessage => None,
            };
            if let Some(code) = logout {
                self.out.clear();
                let explained = match close {
                    Close::Kicked(..) | Close::Shutdown => Ok(()),
                    other => self.proto.send(
                        &system::unexpected_error(system::MODULE, 0, other.to_string()),
                        &mut self.out,
                    ),
                };
                if explained.is_ok()
                    && self
                        .proto
                        .send(&system::logout(code), &mut self.out)
                        .is_ok()
                {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), self.io.write(&mut self.out))
                            .await;
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.close()).await;
        let rate = resumable.then(|| self.rate_state());
        if let Some(broker) = self.broker.take() {
            broker.detach(self.id);
            // A session that moved to another connection goes on there.
            if *close != Close::Moved {
                let frame = EdgeFrame {
                    session_id: self.id,
                    kind: Some(edge_frame::Kind::Close(SessionClose {
                        reason: close.kind().to_owned(),
                        resumable,
                        rate,
                        handover: false,
                    })),
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), broker.send(frame)).await;
            }
        }
    }
}

enum Step {
    Continue,
    Reattach,
    /// The hash picks another broker now: hand the session over to it.
    Move,
}

/// How long a move waits for the old broker's `HandedOver` before it opens the session at the
/// new one anyway (what the old broker queued after that is forwarded by it on adoption).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection's handshake asked for.
enum Hello {
    Login(SessionIdentity),
    Resume(Vec<u8>),
}

/// A ticket for `uid`'s session at `broker`, with this edge's window.
fn offer(state: &EdgeState, uid: i64, broker: &str) -> ResumeOffer {
    ResumeOffer {
        ticket: state.tickets.issue(uid, broker),
        window_secs: i32::try_from(state.config.resume.window_secs).unwrap_or(i32::MAX),
    }
}

/// The close reason of a broker's refusal (PROTOCOL.md §9).
fn refusal(reason: &str) -> &'static str {
    match reason {
        "resume_denied" => "resume_denied",
        "resume_gap" => "resume_gap",
        _ => "resume_unknown",
    }
}

/// Now, in unix milliseconds.
fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
