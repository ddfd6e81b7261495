//! The baselines every figure is divided by: a raw tokio TCP echo server with no gateway (the
//! bytes go straight back) and its client, which frames requests as `u32 length || u64 id ||
//! payload`; and the single-thread cost of the crypto itself (the server side of a v2
//! handshake, AES-256-GCM sealing).

use std::time::{Duration, Instant};

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use bytes::{Buf, BufMut, BytesMut};
use janus_client::{ClientConfig, unix_now};
use janus_protocol::handshake::ServerHandshakeConfig;
use janus_protocol::session::{ClientSession, ServerSession, SessionConfig};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::echo::EchoConn;

/// `janus bench raw-echo-server`: echoes every byte back, one task per connection.
pub(crate) async fn serve(listen: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let (mut read, mut write) = stream.split();
            let _ = tokio::io::copy(&mut read, &mut write).await;
        });
    }
}

/// A client of the raw echo server, over TCP or over any byte stream that ends up there (a
/// TLS-terminating proxy in front of it).
pub(crate) struct RawConn<S = TcpStream> {
    stream: S,
    input: BytesMut,
    out: BytesMut,
    next: u64,
}

impl RawConn {
    /// Connects to the raw echo server at `addr`.
    pub(crate) async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }
}

impl<S> RawConn<S> {
    /// A client of the raw echo server over `stream`.
    pub(crate) fn over(stream: S) -> Self {
        Self {
            stream,
            input: BytesMut::with_capacity(8 * 1024),
            out: BytesMut::with_capacity(1024),
            next: 1,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> EchoConn for RawConn<S> {
    async fn send(&mut self, payload: &[u8]) -> anyhow::Result<u64> {
        let id = self.next;
        self.next += 1;
        self.out.put_u32(8 + payload.len() as u32);
        self.out.put_u64(id);
        self.out.put_slice(payload);
        self.stream.write_all(&self.out).await?;
        // A TLS stream may hold the last record until flushed; TCP's flush does nothing.
        self.stream.flush().await?;
        self.out.clear();
        Ok(id)
    }

    async fn recv(&mut self) -> anyhow::Result<Option<u64>> {
        loop {
            if self.input.len() >= 4 {
                let len = u32::from_be_bytes(self.input[..4].try_into()?) as usize;
                if self.input.len() >= 4 + len {
                    self.input.advance(4);
                    let mut frame = self.input.split_to(len);
                    return Ok(Some(frame.get_u64()));
                }
            }
            if self.stream.read_buf(&mut self.input).await? == 0 {
                anyhow::bail!("the raw echo server closed the connection");
            }
        }
    }
}

/// Runs `step` on this thread for about `time`; returns how many times per second it ran.
fn per_second(time: Duration, mut step: impl FnMut()) -> f64 {
    let started = Instant::now();
    let mut runs = 0u64;
    while started.elapsed() < time {
        for _ in 0..16 {
            step();
        }
        runs += 16;
    }
    runs as f64 / started.elapsed().as_secs_f64()
}

/// Server-side v2 handshakes per second on one thread, with the edge's own keys and checks:
/// token open and check, X25519, Ed25519 signature, key derivation.
pub(crate) fn handshake_ceiling(
    server: Arc<ServerHandshakeConfig>,
    client: &ClientConfig,
    token: &str,
    time: Duration,
) -> anyhow::Result<f64> {
    let now = unix_now();
    let mut hello = BytesMut::new();
    ClientSession::start(
        client.handshake.clone(),
        client.session,
        token,
        now,
        &mut hello,
    )?;
    let mut failed = None;
    let rate = per_second(time, || {
        let mut input = hello.clone();
        let mut out = BytesMut::with_capacity(256);
        let mut session = ServerSession::new(server.clone(), SessionConfig::default());
        if let Err(e) = session.poll(&mut input, now, &mut out) {
            failed = Some(e);
        }
    });
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(rate),
    }
}

/// AES-256-GCM sealing on one thread, bytes per second, for `size`-byte messages.
pub(crate) fn seal_ceiling(size: usize, time: Duration) -> f64 {
    let aead = Aes256Gcm::new(&[7u8; 32].into());
    let mut buffer = vec![0u8; size];
    let mut counter = 0u64;
    let rate = per_second(time, || {
        counter += 1;
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        let tag = aead
            .encrypt_in_place_detached(&nonce.into(), b"", &mut buffer)
            .expect("AES-GCM seals any buffer under 64 GiB");
        std::hint::black_box(tag);
    });
    rate * size as f64
}
