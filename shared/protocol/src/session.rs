//! Sans-IO sessions: bytes and time in, events and bytes out, for both ends of a connection.
//!
//! A session owns the framing limits, the handshake state, the two ciphers, the `index` rule and
//! compression. It never touches a socket: a driver appends what it reads to an input buffer,
//! calls `poll` until it yields `None`, and writes whatever the session appended to the output
//! buffer. Any `Err` ends the session; the error says why (see [`Error::kind`]).

use std::sync::Arc;

use bytes::BytesMut;
use janus_proto::packet::Packet;
use prost::Message;

use crate::cipher::{Opener, Sealer};
use crate::compress::Compression;
use crate::error::{Error, Result};
use crate::frame;
use crate::handshake::{
    ClientHandshakeConfig, ClientHello, HandshakeKeys, Hello, IssueTicket, PendingResume,
    ResumeOffer, ResumeReply, ResumeTicket, Resumed, ServerHandshakeConfig, SessionIdentity,
};
use crate::system;

/// Limits and compression shared by both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Largest frame payload accepted or sent.
    pub max_frame: usize,
    /// Compression of outgoing data and the inflate cap of incoming data.
    pub compression: Compression,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_frame: frame::DEFAULT_MAX_FRAME,
            compression: Compression::default(),
        }
    }
}

impl SessionConfig {
    /// Decodes opened packet bytes and inflates compressed data under the cap.
    fn decode_packet(&self, bytes: &[u8]) -> Result<Packet> {
        let mut packet = Packet::decode(bytes).map_err(|e| Error::decode("packet", e))?;
        if packet.compress {
            packet.data = self.compression.inflate(&packet.data)?;
            packet.compress = false;
        }
        Ok(packet)
    }

    /// Compresses data at or above the threshold, then seals the packet as one frame.
    fn seal_packet(&self, sealer: &mut Sealer, packet: &Packet, out: &mut BytesMut) -> Result<()> {
        if !packet.compress && self.compression.should_compress(packet.data.len()) {
            let compressed = Packet {
                data: Compression::deflate(&packet.data),
                compress: true,
                ..packet.clone()
            };
            return sealer.seal(&compressed, self.max_frame, out);
        }
        sealer.seal(packet, self.max_frame, out)
    }
}

/// What a server session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerEvent {
    /// The handshake succeeded; the reply is in the output buffer.
    Established(SessionIdentity),
    /// The client asks to resume the session of `ticket`; nothing has been replied yet. The
    /// driver asks whoever holds that session ([`ServerSession::pending_resume`] has what the
    /// proof binds), then finishes with [`ServerSession::prepare_resume`] and
    /// [`ServerSession::complete_resume`].
    ResumeRequested {
        /// The ticket as presented.
        ticket: Vec<u8>,
    },
    /// A client packet, opened, index-checked and inflated.
    Packet(Packet),
}

struct Open {
    sealer: Sealer,
    opener: Opener,
    identity: SessionIdentity,
    /// The keys the handshake was answered with.
    keys: HandshakeKeys,
    next_index: i32,
    /// The resume ticket this session's client holds, and its key.
    issued: Option<Box<Issued>>,
}

struct Issued {
    key: [u8; 32],
    ticket: Vec<u8>,
}

enum ServerState {
    AwaitingHello,
    Resuming(Box<PendingResume>),
    /// The resume's reply and keys are made; the session's holder has not answered yet.
    Prepared(Box<Resumed>),
    Open(Box<Open>),
}

/// The server end of one client connection.
pub struct ServerSession {
    handshake: Arc<ServerHandshakeConfig>,
    config: SessionConfig,
    state: ServerState,
    /// The X25519 secret to use instead of a random one (test vectors; not in production
    /// builds).
    #[cfg(any(test, feature = "test-support"))]
    pinned_ephemeral: Option<[u8; 32]>,
    /// Issues the resume ticket of a login that asks for one, until the handshake.
    tickets: Option<Arc<dyn IssueTicket>>,
}

impl ServerSession {
    /// A session waiting for the client's handshake.
    pub fn new(handshake: Arc<ServerHandshakeConfig>, config: SessionConfig) -> Self {
        Self {
            handshake,
            config,
            state: ServerState::AwaitingHello,
            #[cfg(any(test, feature = "test-support"))]
            pinned_ephemeral: None,
            tickets: None,
        }
    }

    /// Gives a v2 login that asks for one a resume ticket from `tickets`.
    pub fn with_tickets(mut self, tickets: Arc<dyn IssueTicket>) -> Self {
        self.tickets = Some(tickets);
        self
    }

    /// Uses `ephemeral` as the handshake's X25519 secret instead of a random one, so the reply
    /// is reproducible (test vectors). Never use a fixed secret in production: only with the
    /// `test-support` feature.
    #[cfg(any(test, feature = "test-support"))]
    pub fn with_ephemeral(mut self, ephemeral: [u8; 32]) -> Self {
        self.pinned_ephemeral = Some(ephemeral);
        self
    }

    /// This handshake's X25519 secret: a random one (or, in tests, the pinned one).
    fn ephemeral(&self) -> [u8; 32] {
        #[cfg(any(test, feature = "test-support"))]
        if let Some(pinned) = self.pinned_ephemeral {
            return pinned;
        }
        rand::random()
    }

    /// The session's identity once the handshake is done.
    pub fn identity(&self) -> Option<&SessionIdentity> {
        match &self.state {
            ServerState::Open(open) => Some(&open.identity),
            _ => None,
        }
    }

    /// The keys the handshake (a login or a resume) was answered with, once it is done.
    pub fn handshake_keys(&self) -> Option<HandshakeKeys> {
        match &self.state {
            ServerState::Open(open) => Some(open.keys),
            _ => None,
        }
    }

    /// The key a resume of this session must prove, when the client was given a ticket.
    pub fn resume_key(&self) -> Option<&[u8; 32]> {
        match &self.state {
            ServerState::Open(open) => open.issued.as_ref().map(|issued| &issued.key),
            _ => None,
        }
    }

    /// The resume ticket this session's client holds.
    pub fn resume_ticket(&self) -> Option<&[u8]> {
        match &self.state {
            ServerState::Open(open) => open.issued.as_ref().map(|issued| &issued.ticket[..]),
            _ => None,
        }
    }

    /// The resume this session was asked for, until it is finished.
    pub fn pending_resume(&self) -> Option<&PendingResume> {
        match &self.state {
            ServerState::Resuming(pending) => Some(pending),
            _ => None,
        }
    }

    /// The next client index the session expects, once open.
    pub fn next_index(&self) -> Option<i32> {
        match &self.state {
            ServerState::Open(open) => Some(open.next_index),
            _ => None,
        }
    }

    /// Prepares the resume this session was asked for, offering `next` as the next ticket;
    /// returns the resume key the next resume must prove (it depends only on the new handshake,
    /// so the session's holder can swap it in with the ticket). The reply, its signature and the
    /// session keys also bind the client's next index, so they are made by
    /// [`ServerSession::complete_resume`]; nothing is replied until then.
    pub fn prepare_resume(&mut self, next: ResumeOffer) -> Result<[u8; 32]> {
        let ServerState::Resuming(pending) = &self.state else {
            return Err(Error::UnexpectedState("no resume requested"));
        };
        let resumed = pending.prepare(next);
        let key = resumed.resume_key;
        self.state = ServerState::Prepared(Box::new(resumed));
        Ok(key)
    }

    /// The session's holder granted the prepared resume: signs the reply naming `start_index`,
    /// appends it to `out`, and goes on with `identity` under keys derived from that reply, the
    /// client's next packet being `start_index`.
    pub fn complete_resume(
        &mut self,
        identity: SessionIdentity,
        start_index: i32,
        out: &mut BytesMut,
    ) -> Result<()> {
        let ServerState::Prepared(resumed) =
            std::mem::replace(&mut self.state, ServerState::AwaitingHello)
        else {
            return Err(Error::UnexpectedState("no resume prepared"));
        };
        let resume_key = resumed.resume_key;
        let ResumeReply {
            cert_version,
            reply,
            sealer,
            opener,
            ticket,
        } = resumed.finish(&self.handshake, start_index);
        Sealer::plain().seal(&reply, self.config.max_frame, out)?;
        self.state = ServerState::Open(Box::new(Open {
            sealer,
            opener,
            identity,
            keys: HandshakeKeys {
                cert_version,
                token_key: None,
            },
            next_index: start_index,
            issued: Some(Box::new(Issued {
                key: resume_key,
                ticket,
            })),
        }));
        Ok(())
    }

    /// The configured frame limit (drivers of message transports check frames with it).
    pub fn max_frame(&self) -> usize {
        self.config.max_frame
    }

    /// Takes the next whole frame out of `input` and handles it; `None` means more bytes are
    /// needed. `now` is unix seconds; replies are appended to `out`.
    pub fn poll(
        &mut self,
        input: &mut BytesMut,
        now: i64,
        out: &mut BytesMut,
    ) -> Result<Option<ServerEvent>> {
        match frame::decode(input, self.config.max_frame)? {
            Some(payload) => self.handle_frame(payload, now, out).map(Some),
            None => Ok(None),
        }
    }

    /// Handles one frame payload (header already stripped and checked).
    pub fn handle_frame(
        &mut self,
        payload: BytesMut,
        now: i64,
        out: &mut BytesMut,
    ) -> Result<ServerEvent> {
        match &mut self.state {
            ServerState::AwaitingHello => {
                let hello = Packet::decode(&payload[..]).map_err(|e| Error::decode("packet", e))?;
                let ephemeral = self.ephemeral();
                // The issuer is needed once: a session does not keep it.
                let tickets = self.tickets.take();
                let accepted =
                    match self
                        .handshake
                        .accept(&hello, now, ephemeral, tickets.as_deref())?
                    {
                        Hello::Login(accepted) => accepted,
                        Hello::Resume(pending) => {
                            let ticket = pending.ticket().to_vec();
                            self.state = ServerState::Resuming(pending);
                            return Ok(ServerEvent::ResumeRequested { ticket });
                        }
                    };
                Sealer::plain().seal(&accepted.reply, self.config.max_frame, out)?;
                let identity = accepted.identity.clone();
                self.state = ServerState::Open(Box::new(Open {
                    sealer: accepted.sealer,
                    opener: accepted.opener,
                    identity: accepted.identity,
                    keys: accepted.keys,
                    next_index: crate::handshake::START_INDEX,
                    issued: accepted
                        .resume
                        .map(|(key, ticket)| Box::new(Issued { key, ticket })),
                }));
                Ok(ServerEvent::Established(identity))
            }
            ServerState::Resuming(_) | ServerState::Prepared(_) => {
                Err(Error::UnexpectedState("resume in progress"))
            }
            ServerState::Open(open) => {
                let bytes = open.opener.open(payload)?;
                let packet = self.config.decode_packet(&bytes)?;
                if packet.index != open.next_index {
                    return Err(Error::IndexMismatch {
                        expected: open.next_index,
                        got: packet.index,
                    });
                }
                open.next_index = open.next_index.wrapping_add(1);
                Ok(ServerEvent::Packet(packet))
            }
        }
    }

    /// Seals `packet` (a reply or push) for the client, appending the frame to `out`. Borrowed,
    /// so one push can be shared by every session it goes to.
    pub fn send(&mut self, packet: &Packet, out: &mut BytesMut) -> Result<()> {
        match &mut self.state {
            ServerState::Open(open) => self.config.seal_packet(&mut open.sealer, packet, out),
            _ => Err(Error::UnexpectedState("awaiting handshake")),
        }
    }
}

/// What a client session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server accepted the handshake.
    Established {
        /// The first index the server expects (1, or where a resumed session goes on).
        start_index: i32,
        /// The server's clock at the handshake, unix seconds.
        server_time: i64,
        /// The server resumed the session instead of starting a new one.
        resumed: bool,
    },
    /// A reply (index echoed) or push (index 0) from the server.
    Packet(Packet),
}

struct ClientOpen {
    sealer: Sealer,
    opener: Opener,
}

enum ClientState {
    AwaitingReply(ClientHello),
    Open(Box<ClientOpen>),
    /// Only while a transition is in progress; a session left here has failed.
    Failed,
}

/// Client packets a resumable session keeps until the server has them: a reply (or heartbeat
/// reply) echoing index `k` shows the edge took every packet up to `k`.
pub const MAX_UNACKED: usize = 256;
/// A resumable client acknowledges server packets after this many (PROTOCOL.md §13).
pub const ACK_EVERY: u64 = 32;

/// What a resumable client keeps across connections.
#[derive(Debug, Default)]
struct Resume {
    ticket: Option<ResumeTicket>,
    /// Server packets received in the session.
    received: u64,
    /// `received` when the last acknowledgement was sent.
    acked: u64,
    /// Packets sent, oldest first, not yet shown to have reached the edge.
    unacked: std::collections::VecDeque<Packet>,
}

/// The client end of a connection.
pub struct ClientSession {
    handshake: ClientHandshakeConfig,
    config: SessionConfig,
    state: ClientState,
    /// The next request index; it continues across resumes.
    next_index: i32,
    resume: Resume,
    /// Packets a finished resume re-sealed, waiting for the driver.
    pending_resend: BytesMut,
}

impl ClientSession {
    /// Starts a handshake with `token` at time `now` (unix seconds): appends the hello frame to
    /// `out`, which the driver must send.
    pub fn start(
        handshake: ClientHandshakeConfig,
        config: SessionConfig,
        token: &str,
        now: i64,
        out: &mut BytesMut,
    ) -> Result<Self> {
        Self::start_from(handshake, config, token, now, rand::random(), out)
    }

    /// [`ClientSession::start`] with a chosen X25519 secret (test vectors pin it; only with the
    /// `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn start_with_ephemeral(
        handshake: ClientHandshakeConfig,
        config: SessionConfig,
        token: &str,
        now: i64,
        ephemeral: [u8; 32],
        out: &mut BytesMut,
    ) -> Result<Self> {
        Self::start_from(handshake, config, token, now, ephemeral, out)
    }

    fn start_from(
        handshake: ClientHandshakeConfig,
        config: SessionConfig,
        token: &str,
        now: i64,
        ephemeral: [u8; 32],
        out: &mut BytesMut,
    ) -> Result<Self> {
        let (hello, packet) = handshake.hello(token, now, ephemeral);
        Sealer::plain().seal(&packet, config.max_frame, out)?;
        Ok(Self {
            handshake,
            config,
            state: ClientState::AwaitingReply(hello),
            next_index: crate::handshake::START_INDEX,
            resume: Resume::default(),
            pending_resend: BytesMut::new(),
        })
    }

    /// The ticket this session can be resumed with, once the server has issued one.
    pub fn resume_ticket(&self) -> Option<&ResumeTicket> {
        self.resume.ticket.as_ref()
    }

    /// Server packets received in this session, over every connection.
    pub fn received(&self) -> u64 {
        self.resume.received
    }

    /// Starts resuming this session over a new connection at time `now`: appends the resume
    /// hello to `out` (the driver sends it on the new connection, with an empty input buffer).
    /// The reply brings the next ticket; until then this one is kept, so a resume whose
    /// connection failed can be tried again (a server that did take it refuses the retry).
    pub fn start_resume(&mut self, now: i64, out: &mut BytesMut) -> Result<()> {
        self.resume_from(now, rand::random(), out)
    }

    /// [`ClientSession::start_resume`] with a chosen X25519 secret (test vectors pin it; only
    /// with the `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn start_resume_with_ephemeral(
        &mut self,
        now: i64,
        ephemeral: [u8; 32],
        out: &mut BytesMut,
    ) -> Result<()> {
        self.resume_from(now, ephemeral, out)
    }

    fn resume_from(&mut self, now: i64, ephemeral: [u8; 32], out: &mut BytesMut) -> Result<()> {
        let ticket = self
            .resume
            .ticket
            .clone()
            .ok_or(Error::UnexpectedState("no resume ticket"))?;
        let (hello, packet) =
            self.handshake
                .resume_hello(&ticket, self.resume.received, now, ephemeral);
        Sealer::plain().seal(&packet, self.config.max_frame, out)?;
        self.state = ClientState::AwaitingReply(hello);
        Ok(())
    }

    /// The configured frame limit.
    pub fn max_frame(&self) -> usize {
        self.config.max_frame
    }

    /// Takes the next whole frame out of `input` and handles it; `None` means more bytes are
    /// needed.
    pub fn poll(&mut self, input: &mut BytesMut) -> Result<Option<ClientEvent>> {
        match frame::decode(input, self.config.max_frame)? {
            Some(payload) => self.handle_frame(payload).map(Some),
            None => Ok(None),
        }
    }

    /// Handles one frame payload (header already stripped and checked).
    /// A resumed handshake's reply may be followed at once by the first packets of the
    /// session, sealed under the new keys.
    pub fn handle_frame(&mut self, payload: BytesMut) -> Result<ClientEvent> {
        if let ClientState::Open(open) = &mut self.state {
            let bytes = open.opener.open(payload)?;
            let packet = self.config.decode_packet(&bytes)?;
            let resume = &mut self.resume;
            // Only a counted packet shows what the session holds: a heartbeat reply comes from
            // the edge, which may die before its broker learns of the heartbeat (§13.2).
            let counted = system::is_counted(&packet);
            if counted {
                resume.received += 1;
            }
            if counted && packet.index > 0 {
                while resume
                    .unacked
                    .front()
                    .is_some_and(|sent| sent.index <= packet.index)
                {
                    resume.unacked.pop_front();
                }
            }
            return Ok(ClientEvent::Packet(packet));
        }
        let ClientState::AwaitingReply(hello) =
            std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(Error::UnexpectedState("failed"));
        };
        let reply = Packet::decode(&payload[..]).map_err(|e| Error::decode("packet", e))?;
        let done = self.handshake.finish(hello, &reply)?;
        let mut open = Box::new(ClientOpen {
            sealer: done.sealer,
            opener: done.opener,
        });
        let mut resend = BytesMut::new();
        if done.resumed {
            // Everything from `start_index` on never reached the edge: send it again, in order,
            // under the new keys. The caller flushes it with whatever it sends next.
            let unacked = &mut self.resume.unacked;
            unacked.retain(|sent| sent.index >= done.start_index);
            let first = unacked.front().map_or(self.next_index, |sent| sent.index);
            if first != done.start_index {
                return Err(Error::ResumeGap(format!(
                    "the server expects index {}, this client kept from {first}",
                    done.start_index
                )));
            }
            for sent in unacked.iter() {
                self.config
                    .seal_packet(&mut open.sealer, sent, &mut resend)?;
            }
        } else {
            self.next_index = done.start_index;
        }
        self.resume.ticket = done.resume;
        self.state = ClientState::Open(open);
        self.pending_resend = resend;
        Ok(ClientEvent::Established {
            start_index: done.start_index,
            server_time: done.server_time,
            resumed: done.resumed,
        })
    }

    /// Appends what a resume must send again (packets the edge never got) to `out`; empty
    /// unless a resume has just finished.
    pub fn take_resend(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&self.pending_resend.split());
    }

    /// Whether enough server packets arrived since the last acknowledgement that the next write
    /// should carry one ([`ClientSession::ack`]).
    pub fn ack_due(&self) -> bool {
        self.resume.ticket.is_some() && self.resume.received - self.resume.acked >= ACK_EVERY
    }

    /// Appends a `CSResumeAck` for every server packet received so far to `out`.
    pub fn ack(&mut self, out: &mut BytesMut) -> Result<()> {
        let received = self.resume.received;
        let ack = janus_proto::message::CsResumeAck { received };
        self.send(
            system::packet(system::SEQ_RESUME_ACK, 0, ack.encode_to_vec()),
            out,
        )?;
        self.resume.acked = received;
        Ok(())
    }

    /// Sends a request: sets its `index` to the session counter, seals it into `out`, and
    /// returns the index (the server's reply echoes it).
    pub fn send(&mut self, mut packet: Packet, out: &mut BytesMut) -> Result<i32> {
        let ClientState::Open(open) = &mut self.state else {
            return Err(Error::UnexpectedState("handshake not finished"));
        };
        let index = self.next_index;
        packet.index = index;
        self.config.seal_packet(&mut open.sealer, &packet, out)?;
        self.next_index = index.wrapping_add(1);
        if self.resume.ticket.is_some() {
            let unacked = &mut self.resume.unacked;
            if unacked.len() == MAX_UNACKED {
                unacked.pop_front();
            }
            unacked.push_back(packet);
        }
        Ok(index)
    }

    /// Seals `packet` with the index it already carries and leaves the counter alone. For tools
    /// that must send what a broken or hostile client would (the bad-input tests; only with the
    /// `test-support` feature).
    #[cfg(any(test, feature = "test-support"))]
    pub fn send_unchecked(&mut self, packet: Packet, out: &mut BytesMut) -> Result<()> {
        let ClientState::Open(open) = &mut self.state else {
            return Err(Error::UnexpectedState("handshake not finished"));
        };
        self.config.seal_packet(&mut open.sealer, &packet, out)
    }
}

#[cfg(test)]
mod tests;
