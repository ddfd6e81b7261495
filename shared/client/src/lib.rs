//! The Janus client library on tokio: connect, handshake, send requests, receive replies and
//! pushes, over TCP, WebSocket, KCP or QUIC.
//!
//! All protocol logic is in [`ClientSession`] (`janus-protocol`) and the framing of each
//! transport in `janus-transport`'s `FrameIo`; this crate dials and moves bytes between them.
//! Used by the CLI, the load generator and the tests. A resumable client given a [`Reconnect`]
//! comes back by itself (PROTOCOL.md §13.6): on a lost connection and on the edge's
//! `SCReconnect`, it resumes at one of its endpoints, with backoff and jitter, until the
//! session's window is over.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use janus_proto::packet::Packet;
use janus_protocol::Error as ProtocolError;
use janus_protocol::handshake::ClientHandshakeConfig;
use janus_protocol::session::{ClientEvent, ClientSession, SessionConfig};
use janus_transport::ByteStream;
use janus_transport::frames::{FrameIo, Read};
use janus_transport::kcp::KcpSettings;
use janus_transport::kcp::driver::KcpConnection;
use janus_transport::quic::QuicStream;
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod error;

pub use error::{Error, Result};

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP listener, `host:port`.
    Tcp(String),
    /// A WebSocket URL, `ws://host:port/path` or `wss://…`.
    WebSocket(String),
    /// A KCP listener, `ip:port`, with go-pantheon's KCP settings (FEC 10+3, smux v2; a
    /// session on the conversation's first smux stream).
    Kcp(String),
    /// A KCP listener, `ip:port`, with other settings (plain KCP, say:
    /// [`KcpSettings::plain`]).
    KcpWith {
        /// `ip:port`.
        addr: String,
        /// FEC, smux and KCP parameters; the edge must agree on FEC and smux.
        settings: KcpSettings,
    },
    /// A QUIC listener.
    Quic {
        /// `ip:port`.
        addr: String,
        /// The TLS server name (SNI) to ask for and verify.
        server_name: String,
        /// A PEM CA (or the server's self-signed certificate) to verify against; `None`
        /// accepts any certificate (see [`janus_transport::quic::quic_client_tls`]).
        ca_pem: Option<String>,
    },
}

/// Everything a client needs besides its token.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Keys and mode of the handshake.
    pub handshake: ClientHandshakeConfig,
    /// Frame limit and compression.
    pub session: SessionConfig,
    /// How long connecting plus the handshake may take.
    pub handshake_timeout: Duration,
}

/// The least room a read waits with: what the client read in before the adapters were shared.
const READ_SPARE: usize = 8 * 1024;

/// A connection of the client: tungstenite's own stream under a WebSocket.
type Conn = FrameIo<MaybeTlsStream<TcpStream>>;

/// How a resumable client resumes by itself: where, and how patiently.
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// The edges to try, in turn; a client told to reconnect starts with the one after the
    /// edge that told it, a client that lost its connection with the same one.
    pub endpoints: Vec<Endpoint>,
    /// The first wait after a failed attempt, doubled after each failure up to `max_backoff`;
    /// every wait is drawn between half of it and all of it (jitter), so clients of one edge
    /// do not come back in step.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// How long one attempt may take (connect, handshake, replay).
    pub attempt_timeout: Duration,
}

impl Reconnect {
    /// Resumes at `endpoints` with a 100 ms first backoff, at most 2 s, 5 s per attempt.
    pub fn to(endpoints: Vec<Endpoint>) -> Self {
        Self {
            endpoints,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
        }
    }
}

/// A resume the client made by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// Where it resumed.
    pub endpoint: Endpoint,
    /// Why: `"reconnect hint: <reason>"` or the connection error.
    pub cause: String,
    /// Failed attempts before it.
    pub failed_attempts: u32,
}

/// A connected, handshaken client.
pub struct Client {
    /// `None` once lost or dropped; a resume brings a new one.
    conn: Option<Conn>,
    session: ClientSession,
    input: BytesMut,
    out: BytesMut,
    reconnect: Option<Box<Reconnect>>,
    /// The endpoint of `reconnect` in use.
    current: usize,
    /// Resumes made by itself, oldest first, not yet taken.
    resumed: Vec<Resumed>,
}

async fn resolve(addr: &str) -> Result<std::net::SocketAddr> {
    tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| Error::Io(std::io::Error::other(format!("{addr} resolves to nothing"))))
}

/// The current time as unix seconds, the clock the handshake and heartbeats use.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Opens a connection to `endpoint`, before any handshake.
async fn dial(endpoint: &Endpoint) -> Result<Conn> {
    Ok(match endpoint {
        Endpoint::Tcp(addr) => {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            FrameIo::Stream(Box::new(tcp))
        }
        Endpoint::WebSocket(url) => {
            janus_transport::tls::install_crypto_provider();
            let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                .await
                .map_err(|e| Error::WebSocket(e.to_string()))?;
            FrameIo::WebSocket(Box::new(ws))
        }
        Endpoint::Kcp(addr) => kcp(addr, KcpSettings::default()).await?,
        Endpoint::KcpWith { addr, settings } => kcp(addr, *settings).await?,
        Endpoint::Quic {
            addr,
            server_name,
            ca_pem,
        } => FrameIo::Stream(Box::new(
            QuicStream::connect(addr, server_name, ca_pem.as_deref()).await?,
        )),
    })
}

/// A KCP conversation with one stream (with smux, the conversation ends with the stream).
async fn kcp(addr: &str, settings: KcpSettings) -> Result<Conn> {
    let connection = KcpConnection::connect(resolve(addr).await?, settings).await?;
    Ok(FrameIo::Stream(Box::new(connection.open_stream().await?)))
}

impl Client {
    /// Connects to `endpoint` and completes the handshake with `token`.
    pub async fn connect(endpoint: &Endpoint, config: &ClientConfig, token: &str) -> Result<Self> {
        let connect = async { Self::handshake(dial(endpoint).await?, config, token).await };
        tokio::time::timeout(config.handshake_timeout, connect)
            .await
            .map_err(|_| Error::Timeout("connect and handshake"))?
    }

    /// Resumes this session over a new connection to `endpoint` (any transport) with the
    /// ticket the last handshake issued, within `timeout`: the server goes on with the same
    /// session, replays what this client has not received, and this client sends again what
    /// the server has not received (PROTOCOL.md §13). The old connection is dropped. After an
    /// error the session can be resumed again (for example once the network is back).
    pub async fn resume(&mut self, endpoint: &Endpoint, timeout: Duration) -> Result<()> {
        self.disconnect();
        let resume = async {
            self.conn = Some(dial(endpoint).await?);
            self.input.clear();
            self.out.clear();
            self.session.start_resume(unix_now(), &mut self.out)?;
            self.flush().await?;
            // A connection closed on the hello is a refusal: the session is gone (§13.3).
            let reply = self.next_event().await.map_err(|e| match e {
                Error::Closed => Error::HandshakeRefused,
                e => e,
            })?;
            match reply {
                ClientEvent::Established { resumed: true, .. } => {
                    self.session.take_resend(&mut self.out);
                    self.flush().await
                }
                ClientEvent::Established { .. } => Err(Error::Protocol(
                    ProtocolError::UnexpectedState("the server started a new session"),
                )),
                ClientEvent::Packet(_) => Err(Error::Protocol(ProtocolError::UnexpectedState(
                    "packet before resume reply",
                ))),
            }
        };
        tokio::time::timeout(timeout, resume)
            .await
            .map_err(|_| Error::Timeout("resume"))?
    }

    /// Drops the connection at once, as a lost network would, without telling the server; the
    /// session can then be resumed ([`Client::resume`]) within its window.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// From now on, resume by itself at `reconnect`'s endpoints after a lost connection or a
    /// reconnect hint (a client without a ticket cannot: it gets the error as before).
    pub fn reconnect_with(&mut self, reconnect: Reconnect) {
        self.reconnect = Some(Box::new(reconnect));
        self.current = 0;
    }

    /// The resumes made by itself since the last call.
    pub fn take_resumed(&mut self) -> Vec<Resumed> {
        std::mem::take(&mut self.resumed)
    }

    /// Whether `error` is a lost connection this client comes back from by itself.
    fn recovers_from(&self, error: &Error) -> bool {
        self.reconnect.is_some()
            && self.session.resume_ticket().is_some()
            && error.connection_lost()
    }

    /// Resumes the session at the next endpoint that takes it: the one after the current on a
    /// hint (`skip_current`), else the current first; with backoff and jitter between attempts.
    /// A refused resume (the session is gone: log in again) or a ticket whose window has passed
    /// ends the tries with the error.
    async fn come_back(&mut self, cause: String, skip_current: bool) -> Result<()> {
        let Some(reconnect) = self.reconnect.clone() else {
            return Err(Error::Closed);
        };
        let n = reconnect.endpoints.len().max(1);
        let window = self
            .session
            .resume_ticket()
            .map(|t| Duration::from_secs(u64::try_from(t.offer.window_secs).unwrap_or(0)))
            .ok_or(Error::Closed)?;
        let started = std::time::Instant::now();
        let mut next = if skip_current {
            self.current + 1
        } else {
            self.current
        };
        let mut backoff = reconnect.backoff;
        let mut failed = 0;
        loop {
            let i = next % n;
            let Some(endpoint) = reconnect.endpoints.get(i) else {
                return Err(Error::Closed);
            };
            match self.resume(endpoint, reconnect.attempt_timeout).await {
                Ok(()) => {
                    self.current = i;
                    self.resumed.push(Resumed {
                        endpoint: endpoint.clone(),
                        cause,
                        failed_attempts: failed,
                    });
                    return Ok(());
                }
                Err(
                    e @ (Error::HandshakeRefused | Error::Protocol(ProtocolError::ResumeGap(_))),
                ) => return Err(e),
                Err(e) if started.elapsed() + backoff > window => return Err(e),
                Err(_) => {
                    failed += 1;
                    next += 1;
                    let wait = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(reconnect.max_backoff);
                }
            }
        }
    }

    /// The session's resume ticket, when the server issued one.
    pub fn resume_ticket(&self) -> Option<&janus_protocol::handshake::ResumeTicket> {
        self.session.resume_ticket()
    }

    /// Server packets received in this session, over every connection.
    pub fn received(&self) -> u64 {
        self.session.received()
    }

    /// Runs the handshake over an already open WebSocket (for example a wss connection made
    /// with a custom TLS connector).
    pub async fn over_websocket(
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        config: &ClientConfig,
        token: &str,
    ) -> Result<Self> {
        tokio::time::timeout(
            config.handshake_timeout,
            Self::handshake(FrameIo::WebSocket(Box::new(ws)), config, token),
        )
        .await
        .map_err(|_| Error::Timeout("handshake"))?
    }

    /// Runs the handshake over an already connected byte stream (transports other than TCP
    /// and WebSocket wrap their streams and come in here).
    pub async fn over_stream(
        stream: Box<dyn ByteStream>,
        config: &ClientConfig,
        token: &str,
    ) -> Result<Self> {
        tokio::time::timeout(
            config.handshake_timeout,
            Self::handshake(FrameIo::Stream(stream), config, token),
        )
        .await
        .map_err(|_| Error::Timeout("handshake"))?
    }

    async fn handshake(conn: Conn, config: &ClientConfig, token: &str) -> Result<Self> {
        let mut out = BytesMut::with_capacity(1024);
        let session = ClientSession::start(
            config.handshake.clone(),
            config.session,
            token,
            unix_now(),
            &mut out,
        )?;
        let mut client = Self {
            conn: Some(conn),
            session,
            input: BytesMut::with_capacity(8 * 1024),
            out,
            reconnect: None,
            current: 0,
            resumed: Vec::new(),
        };
        client.flush().await?;
        let reply = client.next_event().await.map_err(|e| match e {
            Error::Closed => Error::HandshakeRefused,
            e => e,
        })?;
        match reply {
            ClientEvent::Established { .. } => Ok(client),
            ClientEvent::Packet(_) => Err(Error::Protocol(ProtocolError::UnexpectedState(
                "packet before handshake reply",
            ))),
        }
    }

    /// Sends a request; returns the index the reply will echo. With [`Client::reconnect_with`],
    /// a request whose connection is found lost is sent again after the resume.
    pub async fn send(&mut self, packet: Packet) -> Result<i32> {
        let index = self.session.send(packet, &mut self.out)?;
        match self.flush().await {
            Ok(()) => {}
            Err(e) if self.recovers_from(&e) => {
                Box::pin(self.come_back(e.to_string(), false)).await?
            }
            Err(e) => return Err(e),
        }
        Ok(index)
    }

    /// Sends `packet` exactly as given, index included, bypassing the counter (bad-input tests;
    /// only with the `test-support` feature).
    #[cfg(feature = "test-support")]
    pub async fn send_unchecked(&mut self, packet: Packet) -> Result<()> {
        self.session.send_unchecked(packet, &mut self.out)?;
        self.flush().await
    }

    /// Writes raw bytes to the transport, outside any framing or encryption (bad-input tests;
    /// only with the `test-support` feature).
    #[cfg(feature = "test-support")]
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.extend_from_slice(bytes);
        self.flush().await
    }

    /// The next packet from the server: a reply (index echoed) or a push (index 0).
    /// Cancel-safe, except while it resumes by itself (with [`Client::reconnect_with`]): nothing
    /// is lost if the future is dropped. A resumable session's acknowledgements are queued here
    /// and go out with the next write. A reconnect hint is handed up only to a client that does
    /// not come back by itself.
    pub async fn recv(&mut self) -> Result<Packet> {
        loop {
            match self.next_event().await {
                Ok(ClientEvent::Packet(packet)) => {
                    if packet.r#mod == janus_protocol::system::MODULE
                        && packet.seq == janus_protocol::system::SEQ_RECONNECT
                        && self.reconnect.is_some()
                    {
                        let reason = janus_proto::message::ScReconnect::decode(&packet.data[..])
                            .map(|r| r.reason)
                            .unwrap_or_default();
                        self.disconnect();
                        Box::pin(self.come_back(format!("reconnect hint: {reason}"), true)).await?;
                        continue;
                    }
                    if self.session.ack_due() {
                        self.session.ack(&mut self.out)?;
                    }
                    return Ok(packet);
                }
                Ok(ClientEvent::Established { .. }) => {
                    return Err(Error::Protocol(ProtocolError::UnexpectedState(
                        "second handshake reply",
                    )));
                }
                Err(e) if self.recovers_from(&e) => {
                    Box::pin(self.come_back(e.to_string(), false)).await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a request and waits for the reply with its index; pushes that arrive meanwhile are
    /// handed to `on_push`.
    pub async fn request(
        &mut self,
        packet: Packet,
        mut on_push: impl FnMut(Packet),
    ) -> Result<Packet> {
        let index = self.send(packet).await?;
        loop {
            let packet = self.recv().await?;
            if packet.index == index {
                return Ok(packet);
            }
            on_push(packet);
        }
    }

    /// Closes the connection politely: says `CSBye` first, so the server ends the session now
    /// (instead of keeping a resumable one for a resume, or waiting for the idle timeout on
    /// KCP, which has no close of its own).
    pub async fn close(mut self) -> Result<()> {
        if self.conn.is_none() {
            return Ok(());
        }
        // Best effort: the server may already have closed its side.
        let bye = janus_protocol::system::packet(janus_protocol::system::SEQ_BYE, 0, Vec::new());
        let _ = self.send(bye).await;
        if let Some(conn) = &mut self.conn {
            conn.close().await?;
        }
        Ok(())
    }

    async fn next_event(&mut self) -> Result<ClientEvent> {
        loop {
            // Nothing left of a dropped connection is handed up.
            let conn = self.conn.as_mut().ok_or(Error::Closed)?;
            if let Some(event) = self.session.poll(&mut self.input)? {
                return Ok(event);
            }
            let max_frame = self.session.max_frame();
            match conn.read::<READ_SPARE>(&mut self.input, max_frame).await? {
                Read::Frame(payload, _) => return Ok(self.session.handle_frame(payload)?),
                Read::Bytes(_) | Read::Nothing => {}
            }
        }
    }

    async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let conn = self.conn.as_mut().ok_or(Error::Closed)?;
        Ok(conn.write(&mut self.out).await?)
    }
}
