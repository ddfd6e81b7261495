//! The tokio driver of one KCP conversation, for both ends: one task owns the
//! [`Conversation`] and, with smux on, the [`smux::Session`]; it takes the peer's datagrams
//! from a bounded channel, sends its own on a shared UDP socket, and exposes each stream (each
//! smux stream, or the whole conversation with smux off) as a [`KcpStream`] byte stream. The
//! client library dials with [`KcpConnection`]; the edge's listener demultiplexes its socket and
//! starts a conversation with [`serve`] and owns the returned task. No protocol logic lives
//! here. The client's two tasks (the conversation and its socket reader) are spawned on the
//! current runtime and end by themselves once the [`KcpConnection`] and its streams are gone
//! and what they sent is acknowledged (or after [`LINGER`]), or when the peer goes silent.
//!
//! Bounds and full policies: a conversation's inbound channel holds [`INBOUND`] datagrams and
//! drops the rest (KCP retransmits what they carried); each stream buffers at most
//! [`STREAM_BUFFER`] bytes to write (a writer waits) and the smux window (or, with smux off,
//! [`STREAM_BUFFER`]) to read: KCP stops taking data while the reader lags, and an smux peer that
//! overruns the window it was given loses the stream (FIN). A conversation holds at most
//! [`MAX_STREAMS`] smux streams; a SYN beyond that is answered with a FIN.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, MutexGuard};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc, oneshot};

use super::conv::Conversation;
use super::smux;
use crate::error::{Error, Result};
use crate::kcp::KcpSettings;

/// Datagrams a conversation's inbound channel holds; more are dropped.
pub const INBOUND: usize = 256;
/// Bytes a stream buffers in each direction (see the module doc for the read side).
pub const STREAM_BUFFER: usize = 64 * 1024;
/// smux streams one conversation may hold.
pub const MAX_STREAMS: usize = 32;
/// How long a finished conversation keeps running so the peer gets its last bytes.
pub const LINGER: Duration = Duration::from_secs(3);
/// The stream id of a conversation without smux.
const WHOLE: u32 = 0;

#[derive(Default)]
struct StreamBuf {
    rx: BytesMut,
    /// The peer sent FIN (or the stream was shut down here).
    rx_done: bool,
    tx: BytesMut,
    /// Shut down or dropped here: no more writes.
    tx_done: bool,
    fin_sent: bool,
    dropped: bool,
    /// Bytes read since the task last looked.
    consumed: usize,
    reader: Option<Waker>,
    writer: Option<Waker>,
}

fn wake(slot: &mut Option<Waker>) {
    if let Some(waker) = slot.take() {
        waker.wake();
    }
}

impl StreamBuf {
    fn wake(&mut self) {
        wake(&mut self.reader);
        wake(&mut self.writer);
    }
}

#[derive(Default)]
struct State {
    streams: HashMap<u32, StreamBuf>,
    /// Opens the client asked for, answered with the new stream's id.
    opens: Vec<oneshot::Sender<u32>>,
    /// The conversation is over: every stream reads EOF and refuses writes.
    ended: bool,
    /// The client's [`KcpConnection`] is gone: no more opens.
    handle_gone: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

/// One stream of a KCP conversation as a byte stream.
pub struct KcpStream {
    sid: u32,
    peer: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for KcpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KcpStream")
            .field("sid", &self.sid)
            .field("peer", &self.peer)
            .finish()
    }
}

impl KcpStream {
    /// The smux stream id (0 without smux).
    pub fn id(&self) -> u32 {
        self.sid
    }

    fn with<T>(&self, f: impl FnOnce(Option<&mut StreamBuf>, bool) -> T) -> T {
        let mut state = self.shared.lock();
        let ended = state.ended;
        f(state.streams.get_mut(&self.sid), ended)
    }
}

fn broken() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "KCP stream closed")
}

impl AsyncRead for KcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let poll = self.with(|stream, ended| {
            let Some(stream) = stream else {
                return Poll::Ready(Ok(false));
            };
            if !stream.rx.is_empty() {
                let n = stream.rx.len().min(buf.remaining());
                buf.put_slice(&stream.rx.split_to(n));
                stream.consumed += n;
                return Poll::Ready(Ok(true));
            }
            if stream.rx_done || ended {
                return Poll::Ready(Ok(false));
            }
            stream.reader = Some(cx.waker().clone());
            Poll::Pending
        });
        if let Poll::Ready(Ok(true)) = poll {
            self.shared.wake.notify_one();
        }
        poll.map(|r| r.map(|_| ()))
    }
}

impl AsyncWrite for KcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = self.with(|stream, ended| {
            let Some(stream) = stream.filter(|s| !s.tx_done && !ended) else {
                return Poll::Ready(Err(broken()));
            };
            let room = STREAM_BUFFER.saturating_sub(stream.tx.len());
            if room == 0 {
                stream.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let n = room.min(buf.len());
            stream.tx.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        });
        if poll.is_ready() {
            self.shared.wake.notify_one();
        }
        poll
    }

    /// Waits until everything written has gone to KCP.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.with(|stream, ended| match stream {
            None => Poll::Ready(Err(broken())),
            Some(_) if ended => Poll::Ready(Err(broken())),
            Some(stream) if stream.tx.is_empty() => Poll::Ready(Ok(())),
            Some(stream) => {
                stream.writer = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }

    /// Closes the stream (an smux FIN once the written bytes are out); reads end too.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = self.with(|stream, ended| match stream {
            Some(stream) if !ended => {
                stream.tx_done = true;
                if stream.tx.is_empty() {
                    Poll::Ready(Ok(()))
                } else {
                    stream.writer = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
            _ => Poll::Ready(Ok(())),
        });
        self.shared.wake.notify_one();
        poll
    }
}

impl Drop for KcpStream {
    fn drop(&mut self) {
        self.with(|stream, _| {
            if let Some(stream) = stream {
                stream.tx_done = true;
                stream.dropped = true;
            }
        });
        self.shared.wake.notify_one();
    }
}

/// The client end of a KCP conversation: opens streams (one without smux).
pub struct KcpConnection {
    peer: SocketAddr,
    shared: Arc<Shared>,
    /// Without smux: the conversation's one stream, until it is opened.
    whole: Mutex<Option<KcpStream>>,
    smux: bool,
}

impl std::fmt::Debug for KcpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KcpConnection")
            .field("peer", &self.peer)
            .finish()
    }
}

impl KcpConnection {
    /// Starts a conversation (a random conversation id, as kcp-go picks) with the KCP
    /// listener at `addr` from a UDP socket of its own. Nothing is sent before a stream writes.
    pub async fn connect(addr: SocketAddr, settings: KcpSettings) -> Result<Self> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .expect("a wildcard address");
        let socket = Arc::new(UdpSocket::bind(bind).await?);
        socket.connect(addr).await?;
        let (inbound, rx) = mpsc::channel(INBOUND);
        let reader_socket = socket.clone();
        let conv = rand::random::<u32>();
        let (shared, task) = start(
            socket,
            addr,
            conv,
            settings,
            settings.fec(),
            smux::Role::Client,
            rx,
            None,
        )?;
        tokio::spawn(task);
        // Forwards datagrams until the conversation ends (its channel closes).
        tokio::spawn(async move {
            let mut buf = vec![0; 64 * 1024];
            loop {
                tokio::select! {
                    _ = inbound.closed() => return,
                    received = reader_socket.recv(&mut buf) => match received {
                        Ok(n) => {
                            let _ = inbound.try_send(Bytes::copy_from_slice(&buf[..n]));
                        }
                        // ICMP "port unreachable" and the like: KCP retransmits or gives up.
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            }
        });
        let whole = (!settings.smux).then(|| KcpStream {
            sid: WHOLE,
            peer: addr,
            shared: shared.clone(),
        });
        Ok(Self {
            peer: addr,
            shared,
            whole: Mutex::new(whole),
            smux: settings.smux,
        })
    }

    /// Opens a stream: a new smux stream, or with smux off the conversation itself (once).
    pub async fn open_stream(&self) -> Result<KcpStream> {
        let stream = |sid| KcpStream {
            sid,
            peer: self.peer,
            shared: self.shared.clone(),
        };
        if !self.smux {
            return self.whole.lock().take().ok_or(Error::UnexpectedState(
                "a KCP conversation without smux has one stream",
            ));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.ended {
                return Err(Error::Closed);
            }
            state.opens.push(tx);
        }
        self.shared.wake.notify_one();
        let sid = rx.await.map_err(|_| Error::Closed)?;
        Ok(stream(sid))
    }
}

impl Drop for KcpConnection {
    fn drop(&mut self) {
        self.shared.lock().handle_gone = true;
        self.shared.wake.notify_one();
    }
}

/// The server end's callbacks.
pub struct ServerHooks {
    /// Gets every stream the peer opens.
    pub on_stream: Box<dyn FnMut(KcpStream) + Send>,
    /// Counts KCP packets recovered from FEC parity.
    pub fec_recovered: prometheus::IntCounter,
}

/// Starts the server end of conversation `conv` with `peer` on `socket`: datagrams for it go
/// into the returned sender (its first one included), each stream the peer opens is handed to
/// `hooks.on_stream`, and the returned future runs the conversation until it ends (the peer
/// goes silent or KCP gives up, its stream ends without smux, or the sender is dropped).
/// `fec`: whether to answer with FEC (the conversation opened with it).
pub fn serve(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    conv: u32,
    settings: KcpSettings,
    fec: bool,
    hooks: ServerHooks,
) -> Result<(mpsc::Sender<Bytes>, impl Future<Output = ()> + Send + use<>)> {
    let (inbound, rx) = mpsc::channel(INBOUND);
    let (_, task) = start(
        socket,
        peer,
        conv,
        settings,
        fec,
        smux::Role::Server,
        rx,
        Some(hooks),
    )?;
    Ok((inbound, task))
}

#[expect(
    clippy::too_many_arguments,
    reason = "one private constructor for both ends"
)]
fn start(
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    conv: u32,
    settings: KcpSettings,
    fec: bool,
    role: smux::Role,
    inbound: mpsc::Receiver<Bytes>,
    hooks: Option<ServerHooks>,
) -> Result<(Arc<Shared>, impl Future<Output = ()> + Send + use<>)> {
    let (on_stream, fec_recovered) = match hooks {
        Some(hooks) => (Some(hooks.on_stream), Some(hooks.fec_recovered)),
        None => (None, None),
    };
    let now = Instant::now();
    let conversation = Conversation::new(conv, &settings, fec, now)?;
    // A server with smux on tells smux from frames by the first byte (see `decide`).
    let undecided = (settings.smux && role == smux::Role::Server).then_some(now);
    let smux = (settings.smux && undecided.is_none())
        .then(|| smux::Session::new(settings.smux_config(), role, now));
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Notify::new(),
    });
    let mut driver = Driver {
        conversation,
        smux,
        // A writer may send the initial window before it hears ours.
        window: (settings.smux_max_stream_buffer).max(smux::INITIAL_PEER_WINDOW) as usize,
        shared: shared.clone(),
        socket,
        peer,
        smux_config: settings.smux_config(),
        undecided,
        on_stream,
        fec_recovered,
        pending: BytesMut::new(),
        scratch: BytesMut::new(),
        finished: None,
    };
    if driver.smux.is_none() && driver.undecided.is_none() {
        driver
            .shared
            .lock()
            .streams
            .insert(WHOLE, StreamBuf::default());
        if driver.on_stream.is_some() {
            let stream = driver.stream(WHOLE);
            if let Some(on_stream) = driver.on_stream.as_mut() {
                on_stream(stream);
            }
        }
    }
    Ok((shared, driver.run(inbound)))
}

struct Driver {
    conversation: Conversation,
    smux: Option<smux::Session>,
    /// The most an smux peer may send ahead (the window this end advertises, or the initial
    /// one before that), which bounds what a stream buffers to read.
    window: usize,
    shared: Arc<Shared>,
    socket: Arc<UdpSocket>,
    peer: SocketAddr,
    smux_config: smux::Config,
    /// A server with smux on, since it started, until the conversation's first byte says
    /// whether the client runs smux.
    undecided: Option<Instant>,
    /// The server's: every stream the peer opens.
    on_stream: Option<Box<dyn FnMut(KcpStream) + Send>>,
    /// The server's: packets recovered from parity.
    fec_recovered: Option<prometheus::IntCounter>,
    /// smux frames KCP had no room for yet.
    pending: BytesMut,
    scratch: BytesMut,
    /// Since when nothing is left to do but deliver what was sent.
    finished: Option<Instant>,
}

impl Driver {
    fn stream(&self, sid: u32) -> KcpStream {
        KcpStream {
            sid,
            peer: self.peer,
            shared: self.shared.clone(),
        }
    }

    async fn run(mut self, mut inbound: mpsc::Receiver<Bytes>) {
        let shared = self.shared.clone();
        loop {
            let now = Instant::now();
            if self.step(now).is_err() {
                break;
            }
            self.transmit().await;
            if self.done(now) {
                break;
            }
            let deadline = [
                self.conversation.poll_timeout(now),
                self.smux.as_ref().map(smux::Session::poll_timeout),
                self.undecided
                    .map(|since| since + self.smux_config.keepalive_timeout),
                self.finished.map(|since| since + LINGER),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                datagram = inbound.recv() => match datagram {
                    Some(datagram) => {
                        self.input(&datagram);
                        while let Ok(datagram) = inbound.try_recv() {
                            self.input(&datagram);
                        }
                    }
                    None => break,
                },
                _ = shared.wake.notified() => {}
                _ = sleep => {}
            }
        }
        self.transmit().await;
        let mut state = shared.lock();
        state.ended = true;
        state.opens.clear();
        for stream in state.streams.values_mut() {
            stream.wake();
        }
    }

    /// Feeds one datagram; one that KCP refuses is dropped and the conversation goes on.
    fn input(&mut self, datagram: &[u8]) {
        if let Ok(recovered) = self.conversation.handle_datagram(datagram, Instant::now())
            && let Some(counter) = &self.fec_recovered
        {
            counter.inc_by(recovered as u64);
        }
    }

    /// Timers, then data in from KCP, then data out to it.
    fn step(&mut self, now: Instant) -> Result<()> {
        self.conversation.handle_timeout(now)?;
        if let Some(smux) = &mut self.smux {
            smux.handle_timeout(now)?;
        }
        if self.conversation.is_dead() {
            return Err(Error::Timeout("KCP peer unreachable"));
        }
        self.take_in(now)?;
        self.put_out()
    }

    /// Tells, from the first byte a client sent, whether it runs smux (a frame of the
    /// configured version) or sends frames straight on the conversation (a frame's length
    /// prefix, whose first byte is 0 below 16 MiB), so one edge serves both kinds of client.
    fn decide(&mut self, now: Instant) -> Result<()> {
        let Some(since) = self.undecided else {
            return Ok(());
        };
        self.conversation.recv(&mut self.scratch, usize::MAX);
        let Some(&first) = self.scratch.first() else {
            if now >= since + self.smux_config.keepalive_timeout {
                return Err(Error::Timeout("a KCP conversation that sends nothing"));
            }
            return Ok(());
        };
        self.undecided = None;
        if first == self.smux_config.version {
            self.smux = Some(smux::Session::new(
                self.smux_config,
                smux::Role::Server,
                now,
            ));
            return Ok(());
        }
        let whole = StreamBuf {
            rx: self.scratch.split(),
            ..StreamBuf::default()
        };
        self.shared.lock().streams.insert(WHOLE, whole);
        let stream = self.stream(WHOLE);
        if let Some(on_stream) = self.on_stream.as_mut() {
            on_stream(stream);
        }
        Ok(())
    }

    fn take_in(&mut self, now: Instant) -> Result<()> {
        self.decide(now)?;
        if self.undecided.is_some() {
            return Ok(());
        }
        let Some(smux) = &mut self.smux else {
            let mut state = self.shared.lock();
            if let Some(stream) = state.streams.get_mut(&WHOLE)
                && self.conversation.recv(&mut stream.rx, STREAM_BUFFER) > 0
            {
                wake(&mut stream.reader);
            }
            return Ok(());
        };
        // `decide` may have left the conversation's first bytes here.
        self.conversation.recv(&mut self.scratch, usize::MAX);
        if !self.scratch.is_empty() {
            smux.handle_input(&self.scratch, now)?;
            self.scratch.clear();
        }
        let mut state = self.shared.lock();
        while let Some(event) = smux.poll_event() {
            match event {
                smux::Event::Opened(sid) => {
                    let accept = self.on_stream.is_some() && state.streams.len() < MAX_STREAMS;
                    if !accept {
                        smux.close(sid);
                        continue;
                    }
                    state.streams.insert(sid, StreamBuf::default());
                    drop(state);
                    let stream = KcpStream {
                        sid,
                        peer: self.peer,
                        shared: self.shared.clone(),
                    };
                    if let Some(on_stream) = self.on_stream.as_mut() {
                        on_stream(stream);
                    }
                    state = self.shared.lock();
                }
                smux::Event::Data(sid, bytes) => {
                    let Some(stream) = state.streams.get_mut(&sid) else {
                        continue;
                    };
                    if stream.rx.len() + bytes.len() > self.window + STREAM_BUFFER {
                        // The peer overran the window it was given.
                        smux.close(sid);
                        stream.fin_sent = true;
                        stream.rx_done = true;
                        stream.tx_done = true;
                        stream.wake();
                        continue;
                    }
                    stream.rx.extend_from_slice(&bytes);
                    wake(&mut stream.reader);
                }
                smux::Event::Finished(sid) => {
                    if let Some(stream) = state.streams.get_mut(&sid) {
                        stream.rx_done = true;
                        wake(&mut stream.reader);
                    }
                }
            }
        }
        Ok(())
    }

    fn put_out(&mut self) -> Result<()> {
        let mut state = self.shared.lock();
        let Some(smux) = &mut self.smux else {
            if let Some(stream) = state.streams.get_mut(&WHOLE) {
                let n = self.conversation.send(&stream.tx)?;
                let _ = stream.tx.split_to(n);
                if n > 0 {
                    wake(&mut stream.writer);
                }
            }
            return Ok(());
        };
        for reply in std::mem::take(&mut state.opens) {
            let sid = smux.open();
            let mut stream = StreamBuf::default();
            if reply.send(sid).is_err() {
                // The opener gave up: close it again.
                stream.tx_done = true;
                stream.dropped = true;
            }
            state.streams.insert(sid, stream);
        }
        for (&sid, stream) in state.streams.iter_mut() {
            if stream.consumed > 0 {
                smux.consumed(sid, stream.consumed);
                stream.consumed = 0;
            }
        }
        let mut closed = Vec::new();
        for (&sid, stream) in state.streams.iter_mut() {
            if self.pending.len() < STREAM_BUFFER && !stream.tx.is_empty() {
                let room = self
                    .conversation
                    .send_room()
                    .saturating_sub(self.pending.len());
                let n = smux.send(sid, &stream.tx[..stream.tx.len().min(room)]);
                if n > 0 {
                    let _ = stream.tx.split_to(n);
                    wake(&mut stream.writer);
                }
                if let Some(frames) = smux.poll_transmit() {
                    self.pending.extend_from_slice(&frames);
                }
            }
            if stream.tx_done && stream.tx.is_empty() && !stream.fin_sent {
                smux.close(sid);
                stream.fin_sent = true;
                stream.rx_done = true;
                stream.wake();
            }
            if stream.dropped && stream.fin_sent {
                closed.push(sid);
            }
        }
        for sid in closed {
            state.streams.remove(&sid);
        }
        if let Some(frames) = smux.poll_transmit() {
            self.pending.extend_from_slice(&frames);
        }
        drop(state);
        let n = self.conversation.send(&self.pending)?;
        let _ = self.pending.split_to(n);
        Ok(())
    }

    async fn transmit(&mut self) {
        while let Some(datagram) = self.conversation.poll_transmit() {
            // A failed send is a lost datagram: KCP retransmits.
            let _ = self.socket.send_to(&datagram, self.peer).await;
        }
    }

    /// Whether the conversation has nothing left to do: its streams are gone (the whole one
    /// without smux; all of them once the client let go of its connection), and what was sent
    /// is acknowledged or the linger time is over.
    fn done(&mut self, now: Instant) -> bool {
        if self.undecided.is_some() {
            return false;
        }
        let state = self.shared.lock();
        let gone = match &self.smux {
            None => state
                .streams
                .get(&WHOLE)
                .is_none_or(|s| s.dropped && s.tx.is_empty()),
            Some(_) => {
                self.on_stream.is_none()
                    && state.handle_gone
                    && state.streams.is_empty()
                    && state.opens.is_empty()
                    && self.pending.is_empty()
            }
        };
        drop(state);
        if !gone {
            self.finished = None;
            return false;
        }
        let since = *self.finished.get_or_insert(now);
        self.conversation.unacknowledged() == 0 || now >= since + LINGER
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::kcp::conv::{Datagram, classify};

    /// A one-client server on a real socket: the first segment starts the conversation and
    /// every stream echoes until its reader ends, then closes.
    async fn echo_server(settings: KcpSettings) -> SocketAddr {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0; 65536];
            let mut inbound: Option<mpsc::Sender<Bytes>> = None;
            loop {
                let (n, from) = socket.recv_from(&mut buf).await.unwrap();
                let datagram = Bytes::copy_from_slice(&buf[..n]);
                if inbound.is_none() {
                    let Ok(Datagram::Segments { conv, fec, .. }) =
                        classify(&datagram, settings.fec())
                    else {
                        continue;
                    };
                    let echo = Box::new(|stream: KcpStream| {
                        tokio::spawn(async move {
                            let (mut r, mut w) = tokio::io::split(stream);
                            let _ = tokio::io::copy(&mut r, &mut w).await;
                            let _ = w.shutdown().await;
                        });
                    });
                    let hooks = ServerHooks {
                        on_stream: echo,
                        fec_recovered: prometheus::IntCounter::new("recovered", "r").unwrap(),
                    };
                    let (tx, task) =
                        serve(socket.clone(), from, conv, settings, fec, hooks).unwrap();
                    tokio::spawn(task);
                    inbound = Some(tx);
                }
                let _ = inbound.as_ref().unwrap().try_send(datagram);
            }
        });
        addr
    }

    async fn echo(stream: KcpStream, payload: Vec<u8>) -> Vec<u8> {
        let (mut r, mut w) = tokio::io::split(stream);
        let send = payload.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&send).await.unwrap();
            w.flush().await.unwrap();
            w
        });
        let mut got = vec![0; payload.len()];
        r.read_exact(&mut got).await.expect("the whole echo");
        let w = writer.await.unwrap();
        drop(r.unsplit(w));
        got
    }

    fn modes() -> [(&'static str, KcpSettings); 4] {
        let fec_only = KcpSettings {
            smux: false,
            ..KcpSettings::default()
        };
        let smux_only = KcpSettings {
            fec_data_shards: 0,
            fec_parity_shards: 0,
            ..KcpSettings::default()
        };
        [
            ("fec+smux", KcpSettings::default()),
            ("fec", fec_only),
            ("smux", smux_only),
            ("plain", KcpSettings::plain()),
        ]
    }

    #[tokio::test]
    async fn streams_echo_over_real_sockets_in_every_mode() {
        for (mode, settings) in modes() {
            let addr = echo_server(settings).await;
            let connection = KcpConnection::connect(addr, settings).await.unwrap();
            let streams = if settings.smux { 2 } else { 1 };
            let mut echoes = Vec::new();
            for i in 0..streams {
                let stream = connection.open_stream().await.unwrap();
                // Larger than the smux window and a stream's buffer, so both fill and drain.
                let payload: Vec<u8> = (0..300_000u32).map(|b| (b as u8) ^ i).collect();
                echoes.push(tokio::spawn(async move {
                    let got = echo(stream, payload.clone()).await;
                    got == payload
                }));
            }
            for echoed in echoes {
                let ok = tokio::time::timeout(Duration::from_secs(20), echoed).await;
                assert!(ok.expect("in time").unwrap(), "{mode}: echoed intact");
            }
            if !settings.smux {
                assert!(
                    connection.open_stream().await.is_err(),
                    "{mode}: one stream"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_default_server_serves_every_kind_of_client() {
        // FEC and smux on at the server; the client's first byte and datagrams tell.
        for (mode, settings) in modes() {
            let addr = echo_server(KcpSettings::default()).await;
            let connection = KcpConnection::connect(addr, settings).await.unwrap();
            let stream = connection.open_stream().await.unwrap();
            let payload: Vec<u8> = (0..50_000u32).map(|b| b as u8).collect();
            let echoed =
                tokio::time::timeout(Duration::from_secs(20), echo(stream, payload.clone()));
            assert_eq!(echoed.await.expect("in time"), payload, "{mode}");
        }
    }

    #[tokio::test]
    async fn a_closed_smux_stream_reads_to_the_end_and_eof() {
        let settings = KcpSettings::default();
        let addr = echo_server(settings).await;
        let connection = KcpConnection::connect(addr, settings).await.unwrap();
        let mut stream = connection.open_stream().await.unwrap();
        assert_eq!(stream.id(), 3, "a client's first smux stream");
        stream.write_all(b"last words").await.unwrap();
        let mut got = vec![0; 10];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"last words");
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("EOF in time")
            .unwrap();
        assert_eq!(n, 0);
        assert!(
            stream.write_all(b"more").await.is_err(),
            "closed for writes"
        );
    }
}
