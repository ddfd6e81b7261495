//! One client session on the edge, whatever its transport: the handshake under its timeout,
//! then a loop that feeds client frames through the sans-IO session (heartbeats answered here,
//! everything else rate-limited and forwarded to the session's broker) and writes what the
//! broker sends back. It ends for exactly one [`Close`] reason, which is logged, counted and,
//! where the protocol allows, told to the client. A session whose client holds a resume ticket
//! outlives its connection for the resume window (parked), and a connection that presents the
//! ticket is handed to it (PROTOCOL.md §13).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use janus_proto::janus::internal::v1::{
    ClientPacket, EdgeFrame, SessionClose, SessionOpen, Transport, edge_frame,
};
use janus_proto::message::sc_heartbeat::Code as HeartbeatCode;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::message::{CsHeartbeat, CsResumeAck};
use janus_proto::packet::Packet;
use janus_shared::client::unix_now;
use janus_shared::handshake::{ResumeOffer, ServerHandshakeConfig, SessionIdentity};
use janus_shared::session::{ServerEvent, ServerSession};
use janus_shared::{system, telemetry};
use prometheus::{IntCounter, IntGauge};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{EdgeConfig, HeartbeatMode};
use crate::error::Close;
use crate::limits::{Admission, TokenBucket};
use crate::link::{BrokerLink, Downlink, Links, SessionSlot};
use crate::metrics::Metrics;
use crate::outbox;
use crate::relay;
use crate::resume::{self, Handoff, Replay};
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
    /// Cancelled when sessions must log out now (end of the drain).
    pub logout: CancellationToken,
    /// Sessions that can be resumed, by ticket.
    pub resumable: resume::Table,
    /// Issues and opens resume tickets.
    pub tickets: resume::Tickets,
    /// Other edges, for clients resuming sessions they hold.
    pub peers: relay::Peers,
    next_session: AtomicU64,
}

impl EdgeState {
    /// The shared state of a new edge, reached by other edges for relays at `relay_home`
    /// (empty: not at all).
    pub fn new(
        config: EdgeConfig,
        handshake: Arc<ServerHandshakeConfig>,
        links: Arc<Links>,
        relay_home: String,
    ) -> Self {
        let limits = &config.limits;
        let admission = Admission::new(
            limits.max_sessions,
            limits.max_sessions_per_ip,
            limits.handshakes_per_ip_per_sec,
        );
        Self {
            edge_id: config.edge_id(),
            tickets: resume::Tickets::new(&handshake.signing_key, relay_home),
            peers: relay::Peers::default(),
            config,
            handshake,
            links,
            metrics: Metrics::new(),
            admission,
            logout: CancellationToken::new(),
            resumable: resume::Table::default(),
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
    match session.run().instrument(span.clone()).await {
        Outcome::Ended(close) => session.finish(&close).instrument(span).await,
        // Cold paths run boxed, so the task every session keeps alive is only as large as its
        // serve loop.
        Outcome::Resume(ticket, hello) => {
            Box::pin(session.redeem(ticket, hello).instrument(span)).await
        }
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

/// How a connection's task ends: its session ended, or it asked to resume another session
/// (with this ticket and hello).
enum Outcome {
    Ended(Close),
    Resume(Vec<u8>, Bytes),
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
    /// `None` while parked.
    slot: Option<Slot>,
    /// Server packets kept for a resume, when the client holds a ticket (boxed: most sessions
    /// have none, and every session's task holds this field).
    replay: Option<Box<Replay>>,
    /// Connections presenting this session's ticket.
    handoffs: Option<mpsc::Receiver<Box<Handoff>>>,
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
        if let Some(offer) = resume_offer(&state, id) {
            proto = proto.with_resume_offer(offer);
        }
        Self {
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
            slot: Some(slot),
            replay: None,
            handoffs: None,
        }
    }

    async fn run(&mut self) -> Outcome {
        let started = Instant::now();
        let timeout = Duration::from_secs(self.state.config.handshake.timeout_secs);
        let identity = match tokio::time::timeout(timeout, self.handshake()).await {
            Err(_) => Err(Close::HandshakeTimeout),
            Ok(result) => result,
        };
        let identity = match identity {
            Ok(Hello::Login(identity)) => identity,
            Ok(Hello::Resume(ticket, hello)) => return Outcome::Resume(ticket, hello),
            Err(close) => {
                self.state
                    .metrics
                    .handshakes
                    .with_label_values(&[close.kind()])
                    .inc();
                return Outcome::Ended(close);
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
        self.identity = Some(identity);
        if let Err(close) = self.attach(false).await {
            return Outcome::Ended(close);
        }
        if let Some(ticket) = self.proto.resume_ticket() {
            let ticket = ticket.to_vec();
            let (tx, rx) = mpsc::channel(1);
            self.state.resumable.insert(self.id, ticket, tx);
            self.handoffs = Some(rx);
            self.replay = Some(Box::new(Replay::new(
                self.state.config.resume.retain_packets,
            )));
        }
        let mut close = self.serve().await;
        while self.replay.is_some() && matches!(close, Close::ClientClosed | Close::Idle) {
            close = match Box::pin(self.park()).await {
                Ok(()) => self.serve().await,
                Err(close) => close,
            };
        }
        Outcome::Ended(close)
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
                Some(ServerEvent::ResumeRequested { ticket, hello }) => {
                    return Ok(Hello::Resume(ticket, hello));
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
    async fn reattach(&mut self) -> Result<(), Close> {
        if let Some(old) = self.broker.take() {
            old.detach(self.id);
        }
        self.attach(true).await
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

    async fn serve(&mut self) -> Close {
        let rules = &self.state.config.session;
        let now = Instant::now();
        let mut messages = TokenBucket::new(rules.messages_per_sec, rules.message_burst, now);
        let mut bytes = TokenBucket::new(rules.bytes_per_sec, rules.byte_burst, now);
        let idle = Duration::from_secs(rules.idle_timeout_secs);
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
            let mut handoffs = self.handoffs.take();
            let step = tokio::select! {
                biased;
                _ = self.state.logout.cancelled() => Err(Close::Shutdown),
                Some(handoff) = next_handoff(&mut handoffs) => {
                    Box::pin(self.take_over(handoff)).await.map(|_| Step::Continue)
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
                    self.on_read(read, &mut messages, &mut bytes).await
                }
                _ = &mut idle_timer => Err(Close::Idle),
            };
            self.downlink = Some(downlink);
            self.handoffs = handoffs;
            match step {
                Ok(Step::Continue | Step::Resumed) => {}
                Ok(Step::Reattach) => {
                    if let Err(close) = self.reattach().await {
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
            Some(Downlink::Packet(packet)) => {
                self.emit(packet)?;
                Ok(Step::Continue)
            }
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

    async fn on_read(
        &mut self,
        read: Result<Read, Close>,
        messages: &mut TokenBucket,
        bytes: &mut TokenBucket,
    ) -> Result<Step, Close> {
        let now = Instant::now();
        let wire = match read? {
            Read::Nothing => return Ok(Step::Continue),
            Read::Bytes(n) => n,
            Read::Frame(payload, n) => {
                self.traffic.bytes_in.inc_by(n as u64);
                self.take_bytes(bytes, n, now)?;
                let event = self
                    .proto
                    .handle_frame(payload, unix_now(), &mut self.out)?;
                self.traffic.frames_in.inc();
                return self.on_event(event, messages, now).await;
            }
        };
        self.traffic.bytes_in.inc_by(wire as u64);
        self.take_bytes(bytes, wire, now)?;
        let mut step = Step::Continue;
        while let Some(event) = self
            .proto
            .poll(&mut self.input, unix_now(), &mut self.out)?
        {
            self.traffic.frames_in.inc();
            if let Step::Reattach = self.on_event(event, messages, now).await? {
                step = Step::Reattach;
            }
        }
        Ok(step)
    }

    fn take_bytes(&self, bucket: &mut TokenBucket, n: usize, now: Instant) -> Result<(), Close> {
        if bucket.take(u32::try_from(n).unwrap_or(u32::MAX), now) {
            Ok(())
        } else {
            Err(Close::RateLimited("byte_rate"))
        }
    }

    async fn on_event(
        &mut self,
        event: ServerEvent,
        messages: &mut TokenBucket,
        now: Instant,
    ) -> Result<Step, Close> {
        let ServerEvent::Packet(packet) = event else {
            return Err(Close::Protocol(
                "unexpected_state",
                "second handshake".into(),
            ));
        };
        if !messages.take(1, now) {
            return Err(Close::RateLimited("message_rate"));
        }
        if packet.r#mod == system::MODULE && !self.forwarded_system(&packet) {
            self.on_system(packet)?;
            return Ok(Step::Continue);
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

    /// The connection is gone but the client holds a ticket: close the connection, free its
    /// admission, and wait up to the resume window for a connection presenting the ticket,
    /// keeping what the broker sends meanwhile. `Ok` once a resume took over.
    async fn park(&mut self) -> Result<(), Close> {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.close()).await;
        self.out.clear();
        self.input.clear();
        self.slot = None;
        tracing::debug!("session parked");
        let parked = self.state.metrics.parked.clone();
        parked.inc();
        let waited = self.wait_for_resume().await;
        parked.dec();
        waited
    }

    async fn wait_for_resume(&mut self) -> Result<(), Close> {
        let window = Duration::from_secs(self.state.config.resume.window_secs);
        let deadline = tokio::time::sleep(window);
        tokio::pin!(deadline);
        loop {
            let mut downlink = self.downlink.take().expect("attached");
            let mut handoffs = self.handoffs.take();
            let step = tokio::select! {
                biased;
                _ = self.state.logout.cancelled() => Err(Close::Shutdown),
                _ = &mut deadline => Err(Close::ResumeExpired),
                Some(handoff) = next_handoff(&mut handoffs) => {
                    self.take_over(handoff).await.map(|resumed| if resumed { Step::Resumed } else { Step::Continue })
                }
                down = downlink.recv() => match down {
                    Some(Downlink::Packet(packet)) => {
                        self.replay.as_mut().expect("parked sessions replay").record(packet);
                        Ok(Step::Continue)
                    }
                    other => self.on_downlink(other),
                },
            };
            self.downlink = Some(downlink);
            self.handoffs = handoffs;
            match step? {
                Step::Continue => {}
                Step::Resumed => return Ok(()),
                Step::Reattach => self.reattach().await?,
            }
        }
    }

    /// A connection presenting this session's ticket: finish its handshake on this session's
    /// behalf, send it what the client lacks, and go on over it (closing the old connection,
    /// if any). `Ok(false)`: refused, the session goes on as it was; `Err`: the session cannot
    /// go on.
    async fn take_over(&mut self, handoff: Box<Handoff>) -> Result<bool, Close> {
        let Handoff {
            io,
            mut proto,
            input,
            peer,
            transport,
            slot,
            done,
        } = *handoff;
        let received = proto.pending_resume().map_or(0, |p| p.received());
        let offer = resume_offer(&self.state, self.id).expect("a resumable session");
        let mut out = BytesMut::new();
        let refuse = |close: Close, io: FrameIo, done: oneshot::Sender<_>| {
            self.state
                .metrics
                .resumes
                .with_label_values(&[close.kind()])
                .inc();
            tracing::info!(%peer, reason = close.kind(), detail = %close, "resume refused");
            let _ = done.send(Err((close, io)));
        };
        if let Err(e) = proto.finish_resume(&mut self.proto, &offer, &mut out) {
            refuse(e.into(), io, done);
            return Ok(false);
        }
        let replay = self.replay.as_mut().expect("a resumable session");
        let mut replayed = 0;
        let sealed = match replay.since(received) {
            Err(detail) => Err(Close::Protocol("resume_gap", detail)),
            Ok(packets) => packets
                .inspect(|_| replayed += 1)
                .try_for_each(|packet| proto.send(packet, &mut out))
                .map_err(Close::from),
        };
        if let Err(close) = sealed {
            // The ticket is spent and the client cannot be made whole: the session ends.
            refuse(close.clone(), io, done);
            return Err(close);
        }
        if self.slot.is_some() {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.io.close()).await;
        }
        self.io = io;
        self.input = input;
        self.proto = proto;
        self.peer = peer;
        self.transport = transport;
        self.traffic = Traffic::new(&self.state.metrics, transport);
        self.traffic.frames_out.inc_by(replayed);
        self.slot = Some(slot);
        self.out = out;
        self.state.resumable.renew(self.id, offer.ticket);
        self.state.metrics.resumes.with_label_values(&["ok"]).inc();
        tracing::info!(%peer, transport = label(transport), replayed, "session resumed");
        let _ = done.send(Ok(()));
        Ok(true)
    }

    /// This connection asked to resume the session of `ticket` with `hello`: hand it over and
    /// wait for the answer, or forward it to the edge holding that session; a refused
    /// connection is closed with the reason.
    async fn redeem(self, ticket: Vec<u8>, hello: Bytes) {
        let state = self.state.clone();
        let timeout = Duration::from_secs(state.config.handshake.timeout_secs);
        // A forwarded connection is never forwarded again.
        let forwarded = matches!(self.io, FrameIo::Relay(_));
        let slot = self.slot.expect("a connection has its slot");
        let (close, mut io) = match state.tickets.open(&ticket) {
            Some(named) if !state.tickets.is_home(&named.home) && !forwarded => {
                let client = relay::Client {
                    io: self.io,
                    input: self.input,
                    peer: self.peer,
                    transport: self.transport,
                    slot,
                };
                match relay::forward(state.clone(), &named.home, hello, client).await {
                    None => return,
                    Some(io) => unknown(&state, io),
                }
            }
            named => {
                let (done, answer) = oneshot::channel();
                let handoff = Box::new(Handoff {
                    io: self.io,
                    proto: self.proto,
                    input: self.input,
                    peer: self.peer,
                    transport: self.transport,
                    slot,
                    done,
                });
                match named.and_then(|named| state.resumable.find(named.id, &ticket)) {
                    None => unknown(&state, handoff.io),
                    Some(session) => match session.send_timeout(handoff, timeout).await {
                        Err(e) => unknown(&state, e.into_inner().io),
                        Ok(()) => match tokio::time::timeout(timeout, answer).await {
                            Ok(Ok(Ok(()))) => {
                                state.metrics.handshakes.with_label_values(&["ok"]).inc();
                                return;
                            }
                            Ok(Ok(Err(refused))) => refused,
                            Ok(Err(_)) | Err(_) => {
                                // The session ended, or is stuck, with the connection in hand:
                                // it is dropped there.
                                state
                                    .metrics
                                    .handshakes
                                    .with_label_values(&["resume_unknown"])
                                    .inc();
                                return;
                            }
                        },
                    },
                }
            }
        };
        tracing::info!(reason = close.kind(), "resume refused; connection closed");
        state
            .metrics
            .handshakes
            .with_label_values(&[close.kind()])
            .inc();
        state
            .metrics
            .closes
            .with_label_values(&[close.kind()])
            .inc();
        let _ = tokio::time::timeout(Duration::from_secs(2), io.close()).await;
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

    /// Logs and counts `close`, tells the client where possible, tells the broker.
    async fn finish(&mut self, close: &Close) {
        self.state.resumable.remove(self.id);
        let connected = self.slot.is_some();
        self.state
            .metrics
            .closes
            .with_label_values(&[close.kind()])
            .inc();
        match close {
            Close::ClientClosed => tracing::debug!("session closed by the client"),
            other => tracing::info!(reason = other.kind(), detail = %other, "session closed"),
        }
        if self.identity.is_some() && connected {
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
                | Close::ResumeExpired
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
        if connected {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.io.close()).await;
        }
        if let Some(broker) = self.broker.take() {
            broker.detach(self.id);
            let frame = EdgeFrame {
                session_id: self.id,
                kind: Some(edge_frame::Kind::Close(SessionClose {
                    reason: close.kind().to_owned(),
                })),
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), broker.send(frame)).await;
        }
    }
}

enum Step {
    Continue,
    Reattach,
    Resumed,
}

/// What a connection's handshake asked for.
enum Hello {
    Login(SessionIdentity),
    Resume(Vec<u8>, Bytes),
}

/// The next connection presenting this session's ticket; never, for a session without one.
async fn next_handoff(handoffs: &mut Option<mpsc::Receiver<Box<Handoff>>>) -> Option<Box<Handoff>> {
    match handoffs {
        Some(handoffs) => handoffs.recv().await,
        None => std::future::pending().await,
    }
}

/// No session holds the ticket `io` presented (any more), or its edge cannot be reached:
/// decided and counted here.
fn unknown(state: &EdgeState, io: FrameIo) -> (Close, FrameIo) {
    let close = Close::from(janus_shared::Error::ResumeUnknown);
    state
        .metrics
        .resumes
        .with_label_values(&[close.kind()])
        .inc();
    (close, io)
}

/// A fresh ticket for session `id`, when resume is on.
fn resume_offer(state: &EdgeState, id: u64) -> Option<ResumeOffer> {
    let window = state.config.resume.window_secs;
    (window > 0).then(|| ResumeOffer {
        ticket: state.tickets.issue(id),
        window_secs: i32::try_from(window).unwrap_or(i32::MAX),
    })
}
