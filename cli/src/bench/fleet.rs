//! Many players at once: opening encrypted sessions (from several 127.0.0.x source addresses
//! when one address runs out of ports, after raising the file-descriptor limit), and holding
//! them open with heartbeats while reporting every bench push they receive.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use janus_client::{Client, ClientConfig, Endpoint, unix_now};
use janus_protocol::handshake::{ClientHandshakeConfig, Mode};
use janus_protocol::session::SessionConfig;
use janus_protocol::system;
use janus_protocol::token::TokenCodec;
use janus_transport::quic::QuicStream;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::gateway::Gateway;
use crate::connect::Transport;
use crate::keys;

/// The zone (server id) every bench player's token names; broadcasts go to it.
pub(crate) const ZONE: i64 = 1;

/// The module bench pushes carry, so a session can tell them from anything else.
pub(crate) const PUSH_MODULE: i32 = 99;

/// Ports one source address can use towards one listener (Linux's default ephemeral range
/// has 28 232; keep a margin).
const PORTS_PER_SOURCE: usize = 25_000;

/// Where and how the generator's players log in.
#[derive(Clone)]
pub(crate) struct Target {
    transport: Transport,
    addr: SocketAddr,
    config: ClientConfig,
    tokens: Arc<TokenCodec>,
    sources: Vec<IpAddr>,
    /// QUIC: one client endpoint (one UDP socket and driver task) per CPU carries the
    /// sessions, player `uid` on endpoint `uid % len`, so the number of sessions is not bounded
    /// by open files on either side nor the generator by one task; and the edge's kernel,
    /// choosing an edge endpoint by source address, spreads them over its endpoints too.
    quic: Vec<quinn::Endpoint>,
    /// TCP: the receive buffer each player's socket asks for (a slow link's small window).
    recv_buffer: Option<u32>,
}

impl Target {
    /// Players of `gateway` over `transport`, spread over enough source addresses for
    /// `sessions` connections.
    pub(crate) fn new(
        gateway: &Gateway,
        transport: Transport,
        sessions: usize,
    ) -> anyhow::Result<Self> {
        let addr = match transport {
            Transport::Tcp => gateway.tcp,
            Transport::Ws => gateway.ws,
            Transport::Kcp => gateway.kcp,
            Transport::Quic => gateway.quic,
        };
        let sources = (0..sessions.div_ceil(PORTS_PER_SOURCE).max(1))
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + i as u8)))
            .collect();
        let quic = match transport {
            Transport::Quic => {
                let cpus = std::thread::available_parallelism().map_or(1, usize::from);
                (0..cpus)
                    .map(|_| QuicStream::client_endpoint(addr, None))
                    .collect::<Result<_, _>>()?
            }
            _ => Vec::new(),
        };
        Ok(Self {
            transport,
            addr,
            config: ClientConfig {
                handshake: ClientHandshakeConfig {
                    server_key: gateway.server_key,
                    client_key: None,
                    mode: Mode::V2,
                    server_id: 0,
                    cert_version: 0,
                    resumable: false,
                },
                session: SessionConfig::default(),
                handshake_timeout: Duration::from_secs(30),
            },
            tokens: gateway.tokens.clone(),
            sources,
            quic,
            recv_buffer: None,
        })
    }

    /// TCP players' sockets ask for a receive buffer of `bytes` (the kernel doubles it).
    pub(crate) fn recv_buffer(mut self, bytes: u32) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// Players ask for resume tickets.
    pub(crate) fn resumable(mut self, on: bool) -> Self {
        self.config.handshake.resumable = on;
        self
    }

    /// Where a player reaches the listener of this target's transport among `listeners` (TCP,
    /// WebSocket, KCP, QUIC), for a resume.
    pub(crate) fn endpoint_among(&self, listeners: [SocketAddr; 4]) -> Endpoint {
        let [tcp, ws, kcp, quic] = listeners;
        match self.transport {
            Transport::Tcp => Endpoint::Tcp(tcp.to_string()),
            Transport::Ws => Endpoint::WebSocket(format!("ws://{ws}/ws")),
            Transport::Kcp => Endpoint::Kcp(kcp.to_string()),
            Transport::Quic => Endpoint::Quic {
                addr: quic.to_string(),
                server_name: "localhost".into(),
                ca_pem: None,
            },
        }
    }

    /// The client configuration players log in with.
    pub(crate) fn client_config(&self) -> &ClientConfig {
        &self.config
    }

    /// A TCP connection to the target, from the source address `uid` is assigned to when
    /// there is more than one. (Binding a source port first makes the kernel search for a
    /// port free towards every destination, which crawls once many are in TIME_WAIT; with one
    /// source address, plain connect picks per destination.)
    async fn tcp(&self, uid: i64) -> std::io::Result<tokio::net::TcpStream> {
        let stream = match (&self.sources[..], self.recv_buffer) {
            ([_], None) => tokio::net::TcpStream::connect(self.addr).await?,
            (sources, recv_buffer) => {
                let socket = TcpSocket::new_v4()?;
                if let Some(bytes) = recv_buffer {
                    socket.set_recv_buffer_size(bytes)?;
                }
                if let [_, _, ..] = sources {
                    socket.bind(SocketAddr::new(sources[uid as usize % sources.len()], 0))?;
                }
                socket.connect(self.addr).await?
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Logs player `uid` in.
    pub(crate) async fn open(&self, uid: i64) -> anyhow::Result<Client> {
        let token = keys::mint_with(&self.tokens, uid, ZONE, "", 3600);
        let client = match self.transport {
            Transport::Tcp => {
                Client::over_stream(Box::new(self.tcp(uid).await?), &self.config, &token).await?
            }
            Transport::Ws => {
                let url = format!("ws://{}/ws", self.addr);
                let stream = tokio_tungstenite::MaybeTlsStream::Plain(self.tcp(uid).await?);
                let (ws, _) = tokio_tungstenite::client_async(url, stream).await?;
                Client::over_websocket(ws, &self.config, &token).await?
            }
            Transport::Kcp => {
                Client::connect(&Endpoint::Kcp(self.addr.to_string()), &self.config, &token).await?
            }
            Transport::Quic => {
                let endpoint = self
                    .quic
                    .get(uid as usize % self.quic.len().max(1))
                    .context("a QUIC target has endpoints")?;
                let stream = tokio::time::timeout(
                    self.config.handshake_timeout,
                    QuicStream::connect_on(endpoint, self.addr, "localhost"),
                )
                .await
                .context("QUIC connect timed out")??;
                Client::over_stream(Box::new(stream), &self.config, &token).await?
            }
        };
        Ok(client)
    }
}

/// Raises this process's open-file limit to what `sessions` connections over `transport` need
/// (children, the edge among them, inherit it); fails with the fix when the hard limit is
/// lower. QUIC sessions share a few UDP sockets on each side and need no file per session.
pub(crate) fn raise_fd_limit(transport: Transport, sessions: usize) -> anyhow::Result<()> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let per_session = match transport {
        Transport::Quic => 0,
        Transport::Tcp | Transport::Ws | Transport::Kcp => 1,
    };
    let needed = (sessions * per_session) as u64 + 256;
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard < needed {
        bail!(
            "{sessions} sessions need {needed} open files in the generator and in the edge, but \
             this machine's hard limit is {hard} (raise it: `ulimit -Hn {needed}` as root, \
             LimitNOFILE= in a systemd unit, --ulimit nofile= in Docker), or ask for fewer sessions"
        );
    }
    let raised = Rlimit {
        current: Some(limit.current.unwrap_or(u64::MAX).min(hard).max(needed)),
        maximum: limit.maximum,
    };
    setrlimit(Resource::Nofile, raised).context("raising the open-file limit")?;
    Ok(())
}

/// Sessions that failed to open, by reason.
pub(crate) type Failures = BTreeMap<String, u64>;

/// Opens players `uids` with at most `concurrency` handshakes in flight; returns the clients
/// with their uids, the failures by reason, and how long it took.
pub(crate) async fn open_many(
    target: &Target,
    uids: std::ops::Range<i64>,
    concurrency: usize,
) -> (Vec<(i64, Client)>, Failures, Duration) {
    let started = Instant::now();
    let mut clients = Vec::with_capacity(uids.clone().count());
    let mut failures = Failures::new();
    let mut results = futures_util::stream::iter(uids)
        .map(|uid| async move { (uid, target.open(uid).await) })
        .buffer_unordered(concurrency.max(1));
    while let Some((uid, result)) = results.next().await {
        match result {
            Ok(client) => clients.push((uid, client)),
            Err(e) => *failures.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    (clients, failures, started.elapsed())
}

/// A bench push a held session received: which one (its `seq`) and when.
pub(crate) struct Arrival {
    pub(crate) seq: i32,
    pub(crate) at: Instant,
}

/// Takes arrivals of push `round` (skipping any other) until `expected` have come or `wait`
/// has passed; returns how many came and when the last one did (`started` if none did).
pub(crate) async fn await_round(
    arrivals: &mut mpsc::Receiver<Arrival>,
    round: i32,
    expected: usize,
    started: Instant,
    wait: Duration,
) -> (usize, Instant) {
    let mut received = 0;
    let mut last = started;
    let deadline = tokio::time::Instant::now() + wait;
    while received < expected {
        match tokio::time::timeout_at(deadline, arrivals.recv()).await {
            Ok(Some(arrival)) if arrival.seq == round => {
                received += 1;
                last = last.max(arrival.at);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    (received, last)
}

/// Sessions held open: each heartbeats every `heartbeat` and reports bench pushes.
pub(crate) struct Held {
    tasks: JoinSet<anyhow::Result<()>>,
    stop: CancellationToken,
    /// Bench pushes as they arrive.
    pub(crate) arrivals: mpsc::Receiver<Arrival>,
}

/// Opens players `uids` (at most `concurrency` handshakes in flight) and holds each open from
/// the moment its handshake completes, heartbeating every `heartbeat`, until
/// [`Held::release`]; returns the held sessions, the failures by reason, and the ramp time.
pub(crate) async fn open_and_hold(
    target: &Target,
    uids: std::ops::Range<i64>,
    concurrency: usize,
    heartbeat: Duration,
) -> (Held, Failures, Duration) {
    let started = Instant::now();
    // One slot per session per push round in flight: a round never blocks a session.
    let (tx, arrivals) = mpsc::channel(uids.clone().count().max(1) * 4);
    let mut held = Held {
        tasks: JoinSet::new(),
        stop: CancellationToken::new(),
        arrivals,
    };
    let mut failures = Failures::new();
    let mut results = futures_util::stream::iter(uids)
        .map(|uid| async move { target.open(uid).await })
        .buffer_unordered(concurrency.max(1));
    while let Some(result) = results.next().await {
        match result {
            Ok(client) => held.hold(client, heartbeat, tx.clone()),
            Err(e) => *failures.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    (held, failures, started.elapsed())
}

impl Held {
    /// How many sessions are held.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Keeps `client` open: a heartbeat every `heartbeat` (starting at a random point of the
    /// interval, so a ramp does not beat in step), bench pushes reported on `arrivals`.
    fn hold(&mut self, mut client: Client, heartbeat: Duration, arrivals: mpsc::Sender<Arrival>) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let offset =
                Duration::from_millis(rand::random::<u64>() % heartbeat.as_millis().max(1) as u64);
            let mut beat =
                tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    _ = beat.tick() => {
                        client.send(system::heartbeat(unix_now())).await?;
                    }
                    packet = client.recv() => {
                        let packet = packet.context("the gateway closed a held session")?;
                        if packet.r#mod == PUSH_MODULE {
                            let _ = arrivals.try_send(Arrival { seq: packet.seq, at: Instant::now() });
                        }
                    }
                }
            }
        });
    }

    /// Ends every held session; returns how many had failed and why.
    pub(crate) async fn release(mut self) -> Failures {
        self.stop.cancel();
        let mut failures = Failures::new();
        while let Some(result) = self.tasks.join_next().await {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => *failures.entry(format!("{e:#}")).or_default() += 1,
                Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
            }
        }
        failures
    }
}
