//! One client session on the edge as a sans-IO machine: client bytes or frames, broker
//! downlinks, the edge's phase and the time go in (`on_*`, `poll_input`, with the time always
//! passed in as a [`Now`]); bytes for the client ([`Machine::transmit`]), things for the driver
//! to do ([`Action`]) and the next deadline ([`Machine::deadline`]) come out. It owns the
//! protocol core's [`ServerSession`], the client's rate buckets (carried to the next connection
//! of a resumable session), the replay of unacknowledged server packets, and the session's
//! stage. The rules it applies: the heartbeat and its clock-skew check (PROTOCOL.md §7), resume
//! acknowledgements and progress (§13.2), the resume's completion (§13.3), the drain's
//! reconnect hint (§13.6), the rate limits, the idle and handshake deadlines, and what a close
//! tells the client and the broker. It touches no socket, no link and no clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use janus_ops::telemetry;
use janus_proto::janus::internal::v1::{
    ClientPacket, Continuity, EdgeFrame, RateState, ResumeGranted, ResumeRequest, SessionClose,
    SessionOpen, SessionProgress, Transport, edge_frame,
};
use janus_proto::message::sc_heartbeat::Code as HeartbeatCode;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::message::{CsHeartbeat, CsResumeAck};
use janus_proto::packet::Packet;
use janus_protocol::handshake::{HandshakeKeys, IssueTicket, Mode, ResumeOffer, SessionIdentity};
use janus_protocol::session::{ServerEvent, ServerSession};
use janus_protocol::system;
use prometheus::IntCounter;
use prost::Message;

use crate::config::{EdgeConfig, HeartbeatMode};
use crate::drain::{self, Phase};
use crate::error::Close;
use crate::limits::TokenBucket;
use crate::link::Downlink;
use crate::metrics::Metrics;
use crate::metrics::label;
use crate::resume::Replay;

#[cfg(test)]
mod tests;

/// The time, as the machine is told it: a monotonic instant for deadlines and buckets, and
/// the wall clock (unix milliseconds) for heartbeats, handshakes and the rate state a broker
/// keeps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    /// The monotonic time.
    pub(crate) at: Instant,
    /// The wall clock, in unix milliseconds.
    pub(crate) unix_ms: i64,
}

impl Now {
    /// The system's clocks now (only the driver reads them).
    pub(crate) fn system() -> Self {
        Self {
            at: Instant::now(),
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        }
    }

    fn unix_secs(&self) -> i64 {
        self.unix_ms.div_euclid(1000)
    }
}

/// How a session is opened at a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opening {
    /// After the handshake.
    New,
    /// Again, elsewhere: its broker's link dropped (PROTOCOL.md §13.5).
    Reattach,
    /// Again, elsewhere: moved from a broker that answered the handover, and that will hand
    /// on what it kept (§13.5).
    HandedOver,
}

/// What the machine asks its driver to do, besides writing [`Machine::transmit`].
#[derive(Debug)]
pub(crate) enum Action {
    /// The handshake is done: a login (the driver writes the reply, then attaches the session)
    /// or a resume the broker granted (`resumed`).
    Opened {
        /// Whether the session was resumed rather than logged in.
        resumed: bool,
        /// How long the handshake took, from the connection's admission.
        took: Duration,
        /// The keys the handshake was answered with.
        keys: Option<HandshakeKeys>,
    },
    /// The client presented this resume ticket: the driver finds the broker it names and
    /// sends what [`Machine::resume_request`] makes.
    Redeem(Vec<u8>),
    /// The broker asked first does not know the session: the driver asks the second one
    /// ([`Machine::ask_again_if_unknown`]) with the same request.
    RedeemElsewhere,
    /// The session's link dropped: the driver opens it at the broker the hash picks now.
    Reattach,
    /// The hash picks another broker for the session now: the driver hands it over there.
    Move,
    /// A client packet for the session's broker.
    Forward(Box<EdgeFrame>),
    /// What the edge consumed itself, for the session's broker (PROTOCOL.md §13.2).
    Report(Box<EdgeFrame>),
}

/// What ending the session takes, as [`Machine::close`] decides it.
#[derive(Debug)]
pub(crate) struct Farewell {
    /// Whether [`Machine::transmit`] holds a logout to write before closing the connection.
    pub(crate) logout: bool,
    /// What to tell the session's broker, if it holds the session.
    pub(crate) to_broker: Option<Box<EdgeFrame>>,
}

/// This session's frame and byte counters, looked up once instead of per frame.
#[derive(Debug)]
pub(crate) struct Traffic {
    frames_in: IntCounter,
    frames_out: IntCounter,
    bytes_in: IntCounter,
    bytes_out: IntCounter,
}

impl Traffic {
    /// The counters of `transport`.
    pub(crate) fn new(metrics: &Metrics, transport: Transport) -> Self {
        let t = label(transport);
        Self {
            frames_in: metrics.frames.with_label_values(&[t, "in"]),
            frames_out: metrics.frames.with_label_values(&[t, "out"]),
            bytes_in: metrics.bytes.with_label_values(&[t, "in"]),
            bytes_out: metrics.bytes.with_label_values(&[t, "out"]),
        }
    }
}

/// Where the session is.
#[derive(Debug)]
enum Stage {
    /// Waiting for the client's hello, until the handshake deadline.
    Handshaking { until: Instant },
    /// Waiting for the broker's verdict on a resume, until the same deadline.
    /// `ask_again`: a second broker may be asked after `resume_unknown` (the ticket's own,
    /// when the hash picked another first, PROTOCOL.md §13.5).
    Redeeming { until: Instant, ask_again: bool },
    /// Carrying packets; closed when nothing comes from the client by `idle`. `hinted` is when
    /// the drain told the client to reconnect.
    Serving {
        idle: Instant,
        hinted: Option<Instant>,
    },
    /// Ended.
    Closed,
}

/// One client session.
pub(crate) struct Machine {
    config: Arc<EdgeConfig>,
    id: u64,
    peer: SocketAddr,
    transport: Transport,
    proto: ServerSession,
    stage: Stage,
    out: BytesMut,
    /// Server packets not yet acknowledged, when the client holds a ticket (boxed: most
    /// sessions have none, and every session holds this field).
    replay: Option<Box<Replay>>,
    /// The client's packet and byte buckets; they go with the session when it moves.
    messages: TokenBucket,
    bytes: TokenBucket,
    /// The edge's phase, as this session was last told.
    drain: Phase,
    traffic: Traffic,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("id", &self.id)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// Session `id` of a connection from `peer` over `transport`, awaiting its hello from
    /// `now` on. `proto` is the protocol core for it; a login that asks for a ticket gets one
    /// from `tickets`, when resumes are on.
    pub(crate) fn new(
        config: Arc<EdgeConfig>,
        proto: ServerSession,
        tickets: Option<Arc<dyn IssueTicket>>,
        (id, peer, transport): (u64, SocketAddr, Transport),
        traffic: Traffic,
        now: Instant,
    ) -> Self {
        let proto = match tickets {
            Some(tickets) if !config.resume.window_secs.is_zero() => proto.with_tickets(tickets),
            _ => proto,
        };
        let rules = &config.session;
        Self {
            messages: TokenBucket::new(rules.messages_per_sec, rules.message_burst, now),
            bytes: TokenBucket::new(rules.bytes_per_sec, rules.byte_burst, now),
            stage: Stage::Handshaking {
                until: now + config.handshake.timeout_secs,
            },
            config,
            id,
            peer,
            transport,
            proto,
            out: BytesMut::new(),
            replay: None,
            drain: Phase::Serving,
            traffic,
        }
    }

    /// The session's id on this edge.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The transport the client connected over.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }

    /// The player, once the handshake is done.
    pub(crate) fn identity(&self) -> Option<&SessionIdentity> {
        self.proto.identity()
    }

    /// Whether the handshake is done (a login, or a granted resume).
    pub(crate) fn opened(&self) -> bool {
        self.identity().is_some()
    }

    /// Whether the session waits for a broker's verdict on a resume.
    pub(crate) fn redeeming(&self) -> bool {
        matches!(self.stage, Stage::Redeeming { .. })
    }

    /// The resume being decided has a second broker to ask if the first answers
    /// `resume_unknown` (once).
    pub(crate) fn ask_again_if_unknown(&mut self) {
        if let Stage::Redeeming { ask_again, .. } = &mut self.stage {
            *ask_again = true;
        }
    }

    /// Whether the driver should read from the client now (not while a resume is decided).
    pub(crate) fn reading(&self) -> bool {
        matches!(
            self.stage,
            Stage::Handshaking { .. } | Stage::Serving { .. }
        )
    }

    /// The largest frame the client may send (message transports check frames with it).
    pub(crate) fn max_frame(&self) -> usize {
        self.proto.max_frame()
    }

    /// Bytes for the client, to be written and emptied by the driver.
    pub(crate) fn transmit(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// `n` bytes reached the client.
    pub(crate) fn wrote(&self, n: usize) {
        self.traffic.bytes_out.inc_by(n as u64);
    }

    /// The next moment [`Machine::on_timeout`] has something to do.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.stage {
            Stage::Handshaking { until } | Stage::Redeeming { until, .. } => Some(until),
            Stage::Serving { idle, hinted } => Some(match self.drain_step(hinted) {
                Some((at, _)) => at.min(idle),
                None => idle,
            }),
            Stage::Closed => None,
        }
    }

    /// The edge moved to `phase`.
    pub(crate) fn on_phase(&mut self, phase: Phase) {
        self.drain = phase;
    }

    /// The time is `now`: ends a handshake past its deadline or a session idle for too long,
    /// tells a resumable client to reconnect at its moment of a drain, ends a session the
    /// drain is done with (`Shutdown`).
    pub(crate) fn on_timeout(&mut self, now: &Now) -> Result<(), Close> {
        match self.stage {
            Stage::Handshaking { until } | Stage::Redeeming { until, .. } if now.at >= until => {
                Err(Close::HandshakeTimeout)
            }
            Stage::Serving { idle, hinted } => {
                match self.drain_step(hinted) {
                    Some((at, drain::Step::Leave)) if now.at >= at => return Err(Close::Shutdown),
                    Some((at, drain::Step::Hint)) if now.at >= at => {
                        self.proto
                            .send(&system::reconnect("edge draining"), &mut self.out)?;
                        self.traffic.frames_out.inc();
                        self.stage = Stage::Serving {
                            idle,
                            hinted: Some(now.at),
                        };
                        tracing::debug!("told to reconnect");
                    }
                    _ => {}
                }
                if now.at >= idle {
                    return Err(Close::Idle);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn drain_step(&self, hinted: Option<Instant>) -> Option<(Instant, drain::Step)> {
        let resumable = self.replay.is_some();
        drain::next_step(
            self.drain,
            self.id,
            resumable,
            hinted,
            self.config.drain_spread(),
        )
    }

    /// The client's connection produced `wire` bytes (or, with `wire` 0, a ping): the idle
    /// deadline moves, and an open session's byte bucket pays for them.
    pub(crate) fn on_read(&mut self, wire: usize, now: &Now) -> Result<(), Close> {
        let Stage::Serving { idle, .. } = &mut self.stage else {
            return Ok(());
        };
        *idle = now.at + self.config.session.idle_timeout_secs;
        if wire == 0 {
            return Ok(());
        }
        self.traffic.bytes_in.inc_by(wire as u64);
        if self
            .bytes
            .take(u32::try_from(wire).unwrap_or(u32::MAX), now.at)
        {
            Ok(())
        } else {
            Err(Close::RateLimited("byte_rate"))
        }
    }

    /// Handles the whole frames in `input` (a byte stream's) until one asks something of the
    /// driver; `None` once more bytes are needed.
    pub(crate) fn poll_input(
        &mut self,
        input: &mut BytesMut,
        now: &Now,
    ) -> Result<Option<Action>, Close> {
        while self.reading() {
            let Some(event) = self.proto.poll(input, now.unix_secs(), &mut self.out)? else {
                return Ok(None);
            };
            if let Some(action) = self.on_event(event, now)? {
                return Ok(Some(action));
            }
        }
        Ok(None)
    }

    /// Handles one whole frame's payload (a message transport's).
    pub(crate) fn handle_frame(
        &mut self,
        payload: BytesMut,
        now: &Now,
    ) -> Result<Option<Action>, Close> {
        if !self.reading() {
            return Ok(None);
        }
        let event = self
            .proto
            .handle_frame(payload, now.unix_secs(), &mut self.out)?;
        self.on_event(event, now)
    }

    fn on_event(&mut self, event: ServerEvent, now: &Now) -> Result<Option<Action>, Close> {
        match (&self.stage, event) {
            (Stage::Handshaking { .. }, ServerEvent::Established(identity)) => {
                tracing::Span::current().record("uid", identity.uid);
                tracing::debug!(sid = identity.sid, mode = ?identity.mode, "handshake done");
                if self.proto.resume_ticket().is_some() {
                    self.replay = Some(Box::new(Replay::new(self.config.resume.retain_packets)));
                }
                let took = self.handshake_took(now);
                self.serve(now);
                Ok(Some(Action::Opened {
                    resumed: false,
                    took,
                    keys: self.proto.handshake_keys(),
                }))
            }
            (Stage::Handshaking { until }, ServerEvent::ResumeRequested { ticket }) => {
                self.stage = Stage::Redeeming {
                    until: *until,
                    ask_again: false,
                };
                Ok(Some(Action::Redeem(ticket)))
            }
            (Stage::Handshaking { .. }, ServerEvent::Packet(_)) => Err(Close::Protocol(
                "unexpected_state",
                "packet before the handshake".into(),
            )),
            (Stage::Serving { .. }, ServerEvent::Packet(packet)) => {
                self.traffic.frames_in.inc();
                self.on_packet(packet, now)
            }
            (Stage::Serving { .. }, _) => {
                self.traffic.frames_in.inc();
                Err(Close::Protocol(
                    "unexpected_state",
                    "second handshake".into(),
                ))
            }
            (Stage::Redeeming { .. } | Stage::Closed, _) => Ok(None),
        }
    }

    /// How long the handshake has taken so far (its deadline is the timeout after its start).
    fn handshake_took(&self, now: &Now) -> Duration {
        match self.stage {
            Stage::Handshaking { until } | Stage::Redeeming { until, .. } => {
                let timeout = self.config.handshake.timeout_secs;
                timeout.saturating_sub(until.saturating_duration_since(now.at))
            }
            Stage::Serving { .. } | Stage::Closed => Duration::ZERO,
        }
    }

    fn serve(&mut self, now: &Now) {
        self.stage = Stage::Serving {
            idle: now.at + self.config.session.idle_timeout_secs,
            hinted: None,
        };
    }

    fn on_packet(&mut self, packet: Packet, now: &Now) -> Result<Option<Action>, Close> {
        if !self.messages.take(1, now.at) {
            return Err(Close::RateLimited("message_rate"));
        }
        if packet.r#mod == system::MODULE && !self.forwarded_system(&packet) {
            self.on_system(packet, now)?;
            return Ok(self.progress().map(Action::Report));
        }
        Ok(Some(Action::Forward(self.frame(edge_frame::Kind::Packet(
            ClientPacket {
                packet: Some(packet),
                traceparent: telemetry::traceparent(),
            },
        )))))
    }

    /// Whether a System packet goes to the game service: heartbeats in go-pantheon's mode.
    fn forwarded_system(&self, packet: &Packet) -> bool {
        packet.seq == system::SEQ_HEARTBEAT && self.config.session.heartbeats == HeartbeatMode::Game
    }

    /// System packets the edge handles itself: the heartbeat (answered, PROTOCOL.md §7), the
    /// resume acknowledgement and the client's goodbye.
    fn on_system(&mut self, packet: Packet, now: &Now) -> Result<(), Close> {
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
        let unix = now.unix_secs();
        let code = if (beat.client_time - unix).abs() > self.config.handshake.max_skew_secs {
            HeartbeatCode::ErrTime
        } else {
            HeartbeatCode::Succeeded
        };
        // Not kept for a resume: heartbeat replies are not counted (PROTOCOL.md §13.2).
        let uid = self.identity().map_or(0, |i| i.uid);
        let reply = system::heartbeat_reply(packet.index, uid, unix, code as i32);
        self.proto.send(&reply, &mut self.out)?;
        self.traffic.frames_out.inc();
        Ok(())
    }

    /// What a resumable session's broker is told of what the edge consumed itself (a heartbeat,
    /// an acknowledgement): the next client index and what the client acknowledged, so a
    /// resume elsewhere starts where this connection left off (PROTOCOL.md §13.2).
    fn progress(&self) -> Option<Box<EdgeFrame>> {
        let replay = self.replay.as_ref()?;
        Some(self.frame(edge_frame::Kind::Progress(SessionProgress {
            received: replay.oldest(),
            next_index: self.proto.next_index().unwrap_or_default(),
        })))
    }

    /// What the session's broker sent. While a resume is decided only its verdict counts;
    /// afterwards packets are sealed for the client, and a lost link asks for a re-attach.
    pub(crate) fn on_downlink(
        &mut self,
        down: Option<Downlink>,
        now: &Now,
    ) -> Result<Option<Action>, Close> {
        match self.stage {
            Stage::Redeeming {
                ref mut ask_again, ..
            } => match down {
                Some(Downlink::Refused(reason))
                    if *reason == "resume_unknown" && std::mem::take(ask_again) =>
                {
                    Ok(Some(Action::RedeemElsewhere))
                }
                Some(Downlink::Granted(granted)) => {
                    let took = self.handshake_took(now);
                    self.resumed(*granted, now)?;
                    Ok(Some(Action::Opened {
                        resumed: true,
                        took,
                        keys: self.proto.handshake_keys(),
                    }))
                }
                Some(Downlink::Refused(reason)) => Err(Close::Protocol(
                    refusal(&reason),
                    format!("the broker refused the resume: {reason}"),
                )),
                None | Some(Downlink::LinkLost) => Err(Close::Protocol(
                    "resume_unknown",
                    "the session's broker went away".into(),
                )),
                Some(_) => Ok(None),
            },
            Stage::Serving { .. } => match down {
                None | Some(Downlink::LinkLost) => Ok(Some(Action::Reattach)),
                Some(Downlink::Accepted | Downlink::Granted(_) | Downlink::Refused(_)) => Ok(None),
                Some(Downlink::Rejected(reason)) => Err(Close::Rejected(*reason)),
                Some(Downlink::Kick(kick)) => Err(Close::Kicked(kick.0, kick.1)),
                Some(Downlink::Release) => Err(Close::Moved),
                Some(Downlink::Move) => Ok(Some(Action::Move)),
                Some(Downlink::HandedOver) => Ok(None),
                Some(Downlink::Packet(packet)) => {
                    self.emit(packet)?;
                    Ok(None)
                }
            },
            Stage::Handshaking { .. } | Stage::Closed => Ok(None),
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

    /// The request to resume `uid`'s session (the ticket named it), offering `next` as the
    /// client's next ticket (PROTOCOL.md §13.3).
    pub(crate) fn resume_request(
        &mut self,
        uid: i64,
        next: ResumeOffer,
    ) -> Result<Box<EdgeFrame>, Close> {
        let claim = self
            .proto
            .pending_resume()
            .ok_or_else(|| Close::Protocol("unexpected_state", "no resume requested".into()))?
            .claim();
        let next_ticket = next.ticket.clone();
        let next_resume_key = self.proto.prepare_resume(next)?;
        Ok(self.frame(edge_frame::Kind::Resume(ResumeRequest {
            uid,
            ticket: claim.ticket,
            client_pub: claim.client_pub.to_vec(),
            timestamp: claim.timestamp,
            received: claim.received,
            proof: claim.proof,
            next_ticket,
            next_resume_key: next_resume_key.to_vec(),
            client_ip: self.peer.ip().to_string(),
            transport: self.transport as i32,
        })))
    }

    /// The broker granted the resume: the reply, then the packets the client lacks, and the
    /// buckets as the last connection left them.
    fn resumed(&mut self, granted: ResumeGranted, now: &Now) -> Result<(), Close> {
        let ResumeGranted {
            session,
            start_index,
            sent,
            replay,
            rate,
            ..
        } = granted;
        let session = session.unwrap_or_default();
        let identity = SessionIdentity {
            uid: session.uid,
            sid: session.sid,
            color: session.color,
            status: session.status,
            token_expiry: session.token_expiry,
            mode: Mode::V2,
        };
        tracing::Span::current().record("uid", identity.uid);
        self.proto
            .complete_resume(identity, start_index, &mut self.out)?;
        let replay = Replay::resumed(
            self.config.resume.retain_packets,
            sent,
            replay.into_iter().map(Arc::new).collect(),
        );
        for packet in replay.tail() {
            self.proto.send(packet, &mut self.out)?;
            self.traffic.frames_out.inc();
        }
        self.replay = Some(Box::new(replay));
        if let Some(rate) = rate {
            let since = Duration::from_millis(u64::try_from(now.unix_ms - rate.at_ms).unwrap_or(0));
            self.messages.set_level(rate.messages, since, now.at);
            self.bytes.set_level(rate.bytes, since, now.at);
        }
        self.serve(now);
        Ok(())
    }

    /// The frame that opens the session at a broker, from edge `edge_id`; a resumable
    /// session's broker gets what it needs to resume it.
    pub(crate) fn open(
        &self,
        opening: Opening,
        edge_id: &str,
        now: &Now,
    ) -> Result<Box<EdgeFrame>, Close> {
        let identity = self.identity().ok_or_else(|| {
            Close::Protocol("unexpected_state", "attached before the handshake".into())
        })?;
        Ok(self.frame(edge_frame::Kind::Open(SessionOpen {
            uid: identity.uid,
            sid: identity.sid,
            color: identity.color.clone(),
            status: identity.status,
            client_ip: self.peer.ip().to_string(),
            edge_id: edge_id.to_owned(),
            transport: self.transport as i32,
            reattach: opening != Opening::New,
            handed_over: opening == Opening::HandedOver,
            continuity: self.continuity(now),
            token_expiry: identity.token_expiry,
            trace_context: Some(telemetry::traceparent())
                .filter(|t| !t.is_empty())
                .map(|t| ("traceparent".to_owned(), t))
                .into_iter()
                .collect(),
        })))
    }

    /// What the session's broker needs to resume it, when the client holds a ticket.
    fn continuity(&self, now: &Now) -> Option<Continuity> {
        let replay = self.replay.as_ref()?;
        Some(Continuity {
            resume_key: self.proto.resume_key()?.to_vec(),
            ticket: self.proto.resume_ticket()?.to_vec(),
            window_secs: u32::try_from(self.config.resume.window_secs.as_secs())
                .unwrap_or(u32::MAX),
            sent: replay.sent(),
            tail: replay.tail().map(|p| (**p).clone()).collect(),
            next_index: self.proto.next_index().unwrap_or_default(),
            rate: Some(self.rate_state(now)),
        })
    }

    /// The client's buckets now, as the broker keeps them.
    fn rate_state(&self, now: &Now) -> RateState {
        RateState {
            messages: self.messages.level(now.at),
            bytes: self.bytes.level(now.at),
            at_ms: now.unix_ms,
        }
    }

    /// Ends the session for `close`. A client that holds a ticket and lost its connection (or
    /// whose edge is going away) is not logged out: its broker parks the session for a resume at
    /// any edge. Any other open session is told why and logged out, where the protocol allows.
    pub(crate) fn close(&mut self, close: &Close, now: &Now) -> Farewell {
        let opened = self.opened();
        self.stage = Stage::Closed;
        let resumable = self.replay.is_some()
            && matches!(close, Close::ClientClosed | Close::Idle | Close::Shutdown);
        let mut logout = false;
        if opened && !resumable {
            let code = match close {
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
            if let Some(code) = code {
                self.out.clear();
                let explained = match close {
                    Close::Kicked(..) | Close::Shutdown => Ok(()),
                    other => self.proto.send(
                        &system::unexpected_error(system::MODULE, 0, other.to_string()),
                        &mut self.out,
                    ),
                };
                logout = explained.is_ok()
                    && self
                        .proto
                        .send(&system::logout(code), &mut self.out)
                        .is_ok();
            }
        }
        // A session that moved to another connection goes on there.
        let to_broker = (opened && *close != Close::Moved).then(|| {
            self.frame(edge_frame::Kind::Close(SessionClose {
                reason: close.kind().to_owned(),
                resumable,
                rate: resumable.then(|| self.rate_state(now)),
                handover: false,
            }))
        });
        Farewell { logout, to_broker }
    }

    /// A frame of this session for its broker, boxed: frames are large, and the driver's
    /// futures that carry one live in every session's task.
    /// What asks the session's broker to hand the session over: it stops delivering and
    /// answers `HandedOver` after its last packet (PROTOCOL.md §13.5).
    pub(crate) fn handover(&self) -> Box<EdgeFrame> {
        self.frame(edge_frame::Kind::Close(SessionClose {
            reason: "moved".into(),
            handover: true,
            ..SessionClose::default()
        }))
    }

    fn frame(&self, kind: edge_frame::Kind) -> Box<EdgeFrame> {
        Box::new(EdgeFrame {
            session_id: self.id,
            kind: Some(kind),
        })
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
