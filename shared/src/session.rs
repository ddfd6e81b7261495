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
    ClientHandshakeConfig, ClientHello, ServerHandshakeConfig, SessionIdentity,
};

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
    /// A client packet, opened, index-checked and inflated.
    Packet(Packet),
}

struct Open {
    sealer: Sealer,
    opener: Opener,
    identity: SessionIdentity,
    next_index: i32,
}

enum ServerState {
    AwaitingHello,
    Open(Box<Open>),
}

/// The server end of one client connection.
pub struct ServerSession {
    handshake: Arc<ServerHandshakeConfig>,
    config: SessionConfig,
    state: ServerState,
    /// The X25519 secret to use instead of a random one (test vectors).
    pinned_ephemeral: Option<[u8; 32]>,
}

impl ServerSession {
    /// A session waiting for the client's handshake.
    pub fn new(handshake: Arc<ServerHandshakeConfig>, config: SessionConfig) -> Self {
        Self {
            handshake,
            config,
            state: ServerState::AwaitingHello,
            pinned_ephemeral: None,
        }
    }

    /// Uses `ephemeral` as the handshake's X25519 secret instead of a random one, so the reply
    /// is reproducible (test vectors). Never use a fixed secret in production.
    pub fn with_ephemeral(mut self, ephemeral: [u8; 32]) -> Self {
        self.pinned_ephemeral = Some(ephemeral);
        self
    }

    /// The session's identity once the handshake is done.
    pub fn identity(&self) -> Option<&SessionIdentity> {
        match &self.state {
            ServerState::Open(open) => Some(&open.identity),
            ServerState::AwaitingHello => None,
        }
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
                let ephemeral = self.pinned_ephemeral.unwrap_or_else(rand::random);
                let accepted = self.handshake.accept(&hello, now, ephemeral)?;
                Sealer::plain().seal(&accepted.reply, self.config.max_frame, out)?;
                let identity = accepted.identity.clone();
                self.state = ServerState::Open(Box::new(Open {
                    sealer: accepted.sealer,
                    opener: accepted.opener,
                    identity: accepted.identity,
                    next_index: crate::handshake::START_INDEX,
                }));
                Ok(ServerEvent::Established(identity))
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
            ServerState::AwaitingHello => Err(Error::UnexpectedState("awaiting handshake")),
        }
    }
}

/// What a client session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// The server accepted the handshake.
    Established {
        /// The first index the server expects (always 1 today).
        start_index: i32,
        /// The server's clock at the handshake, unix seconds.
        server_time: i64,
    },
    /// A reply (index echoed) or push (index 0) from the server.
    Packet(Packet),
}

struct ClientOpen {
    sealer: Sealer,
    opener: Opener,
    next_index: i32,
}

enum ClientState {
    AwaitingReply(ClientHello),
    Open(Box<ClientOpen>),
    /// Only while a transition is in progress; a session left here has failed.
    Failed,
}

/// The client end of a connection.
pub struct ClientSession {
    handshake: ClientHandshakeConfig,
    config: SessionConfig,
    state: ClientState,
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
        Self::start_with_ephemeral(handshake, config, token, now, rand::random(), out)
    }

    /// [`ClientSession::start`] with a chosen X25519 secret (test vectors pin it).
    pub fn start_with_ephemeral(
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
        })
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
    pub fn handle_frame(&mut self, payload: BytesMut) -> Result<ClientEvent> {
        if let ClientState::Open(open) = &mut self.state {
            let bytes = open.opener.open(payload)?;
            return Ok(ClientEvent::Packet(self.config.decode_packet(&bytes)?));
        }
        let ClientState::AwaitingReply(hello) =
            std::mem::replace(&mut self.state, ClientState::Failed)
        else {
            return Err(Error::UnexpectedState("failed"));
        };
        let reply = Packet::decode(&payload[..]).map_err(|e| Error::decode("packet", e))?;
        let done = self.handshake.finish(hello, &reply)?;
        self.state = ClientState::Open(Box::new(ClientOpen {
            sealer: done.sealer,
            opener: done.opener,
            next_index: done.start_index,
        }));
        Ok(ClientEvent::Established {
            start_index: done.start_index,
            server_time: done.server_time,
        })
    }

    /// Sends a request: sets its `index` to the session counter, seals it into `out`, and
    /// returns the index (the server's reply echoes it).
    pub fn send(&mut self, mut packet: Packet, out: &mut BytesMut) -> Result<i32> {
        let ClientState::Open(open) = &mut self.state else {
            return Err(Error::UnexpectedState("handshake not finished"));
        };
        let index = open.next_index;
        packet.index = index;
        self.config.seal_packet(&mut open.sealer, &packet, out)?;
        open.next_index = index.wrapping_add(1);
        Ok(index)
    }

    /// Seals `packet` with the index it already carries and leaves the counter alone. For tools
    /// that must send what a broken or hostile client would (the bad-input tests).
    pub fn send_unchecked(&mut self, packet: Packet, out: &mut BytesMut) -> Result<()> {
        let ClientState::Open(open) = &mut self.state else {
            return Err(Error::UnexpectedState("handshake not finished"));
        };
        self.config.seal_packet(&mut open.sealer, &packet, out)
    }
}

#[cfg(test)]
mod tests;
