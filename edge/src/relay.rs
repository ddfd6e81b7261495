//! Resume at another edge (PROTOCOL.md §13.5). A client whose ticket names another edge is
//! forwarded there: this edge opens an `EdgeRelay` stream to the edge holding the session and
//! passes whole client frames up and the bytes to write down, opening nothing. The holding edge
//! serves that stream as one more client connection ([`Forwarded`]), so its session runs the
//! resume and everything after exactly as if the client had come back to it directly: it stays
//! the only owner of the session, its replay and its broker session.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use janus_proto::janus::internal::v1::edge_relay_client::EdgeRelayClient;
use janus_proto::janus::internal::v1::edge_relay_server::{EdgeRelay, EdgeRelayServer};
use janus_proto::janus::internal::v1::{RelayDown, RelayOpen, RelayUp, Transport};
use janus_shared::frame;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Close;
use crate::session::{self, EdgeState, Slot};
use crate::transport::{FrameIo, Read};

/// Client frames queued towards the holding edge; when full, the client is not read.
const UP_QUEUE: usize = 64;
/// Writes queued towards the forwarding edge; when full, the session's write waits (under its
/// write timeout, like any client that does not read).
const DOWN_QUEUE: usize = 16;

/// Takes the streams other edges open on `listener` until `stop`; forwarded clients run as
/// sessions of `state`, tracked (and drained) with `sessions`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<EdgeState>,
    sessions: TaskTracker,
    stop: CancellationToken,
) {
    let keepalive = Duration::from_millis(state.config.brokers.keepalive_ms);
    // TCP_NODELAY on every accepted connection: the builder's TCP settings do not apply to a
    // server given its incoming connections.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(keepalive))
        .http2_keepalive_timeout(Some(keepalive))
        .add_service(EdgeRelayServer::new(Service { state, sessions }))
        .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "relay server failed");
    }
}

/// The holding edge's end: serves each forwarded client as a connection of its own.
#[derive(Debug)]
struct Service {
    state: Arc<EdgeState>,
    sessions: TaskTracker,
}

#[tonic::async_trait]
impl EdgeRelay for Service {
    type RelayStream = ReceiverStream<Result<RelayDown, Status>>;

    async fn relay(
        &self,
        request: Request<Streaming<RelayUp>>,
    ) -> Result<Response<Self::RelayStream>, Status> {
        let mut up = request.into_inner();
        let first = up
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty relay"))?;
        let open = first
            .open
            .ok_or_else(|| Status::invalid_argument("the first message carries open"))?;
        let peer: SocketAddr = open
            .client_addr
            .parse()
            .map_err(|_| Status::invalid_argument(format!("client_addr {:?}", open.client_addr)))?;
        let transport = open.transport();
        let (down, rx) = mpsc::channel(DOWN_QUEUE);
        let io = FrameIo::Relay(Box::new(Forwarded {
            up,
            first: Some(first.frame.into()),
            down: Some(down),
        }));
        self.sessions
            .spawn(session::serve(self.state.clone(), io, peer, transport));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// A client another edge forwards, as a connection of this edge.
pub struct Forwarded {
    up: Streaming<RelayUp>,
    /// The resume hello, read before the stream was handed over.
    first: Option<Bytes>,
    /// `None` once closed.
    down: Option<mpsc::Sender<Result<RelayDown, Status>>>,
}

impl Forwarded {
    /// The next client frame. Cancel-safe: `Streaming::message` keeps its state in the stream.
    pub async fn read(&mut self, max_frame: usize) -> Result<Read, Close> {
        let payload = match self.first.take() {
            Some(hello) => hello,
            None => match self.up.message().await {
                Ok(Some(up)) => up.frame.into(),
                Ok(None) | Err(_) => return Err(Close::ClientClosed),
            },
        };
        frame::check_len(payload.len(), max_frame)?;
        let n = frame::HEADER_LEN + payload.len();
        Ok(Read::Frame(BytesMut::from(payload), n))
    }

    /// Sends everything in `out` (whole frames) to the forwarding edge and empties it.
    pub async fn write(&mut self, out: &mut BytesMut) -> std::io::Result<()> {
        let closed = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let down = self.down.as_ref().ok_or_else(closed)?;
        let data = out.split().freeze().into();
        down.send(Ok(RelayDown { data }))
            .await
            .map_err(|_| closed())
    }

    /// Ends the stream: the forwarding edge closes the client's connection.
    pub fn close(&mut self) {
        self.down = None;
    }
}

/// Connections to the other edges of the deployment, by relay address, made on first use and
/// shared by every client forwarded there (one HTTP/2 connection, a stream per client). Only
/// addresses read from authentic tickets get here, so the map is bounded by the edges there are.
#[derive(Debug, Default)]
pub struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
}

impl Peers {
    fn channel(&self, home: &str, keepalive: Duration) -> Result<Channel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(home) {
            return Ok(channel.clone());
        }
        let channel = Endpoint::from_shared(format!("http://{home}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive)
            .connect_lazy();
        channels.insert(home.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// A client connection whose resume hello names a session at another edge.
pub struct Client {
    /// The connection.
    pub io: FrameIo,
    /// Bytes read after the hello.
    pub input: BytesMut,
    /// Where it comes from.
    pub peer: SocketAddr,
    /// Its transport.
    pub transport: Transport,
    /// Its admission and gauge on this edge.
    pub slot: Slot,
}

/// Forwards `client`, whose resume `hello` names a session at the edge reached at `home`, until
/// either end closes. `Some`: that edge cannot be reached, and the connection is handed back to
/// be refused like an unknown ticket (the client may log in again).
pub async fn forward(
    state: Arc<EdgeState>,
    home: &str,
    hello: Bytes,
    mut client: Client,
) -> Option<FrameIo> {
    let metrics = &state.metrics;
    let timeout = Duration::from_secs(state.config.handshake.timeout_secs);
    let (up, up_rx) = mpsc::channel(UP_QUEUE);
    let open = RelayUp {
        open: Some(RelayOpen {
            client_addr: client.peer.to_string(),
            transport: client.transport as i32,
        }),
        frame: hello.into(),
    };
    up.try_send(open)
        .expect("an empty queue takes the first message");
    let keepalive = Duration::from_millis(state.config.brokers.keepalive_ms);
    let opened = match state.peers.channel(home, keepalive) {
        Err(e) => Err(e),
        Ok(channel) => tokio::time::timeout(
            timeout,
            EdgeRelayClient::new(channel).relay(ReceiverStream::new(up_rx)),
        )
        .await
        .map_err(|_| "timed out".to_owned())
        .and_then(|r| r.map_err(|status| status.to_string())),
    };
    let mut down = match opened {
        Ok(response) => response.into_inner(),
        Err(error) => {
            tracing::warn!(%home, %error, "the edge holding the session cannot be reached");
            metrics.relays.with_label_values(&["unreachable"]).inc();
            return Some(client.io);
        }
    };
    metrics.relays.with_label_values(&["ok"]).inc();
    metrics.relayed.inc();
    tracing::info!(%home, "resume forwarded to the edge holding the session");
    let ended = pump(&state, &mut client, &up, &mut down).await;
    if ended.is_err() {
        // This end stopped: the holding edge gets what was queued (a goodbye, say) and the end
        // of the stream, and closes its side, before the stream is dropped (which would reset
        // it, queue and all).
        drop(up);
        let drained = async { while let Ok(Some(_)) = down.message().await {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
    }
    metrics.relayed.dec();
    match ended {
        Ok(()) | Err(Close::ClientClosed) => tracing::debug!("forwarded connection ended"),
        Err(close) => {
            tracing::info!(reason = close.kind(), detail = %close, "forwarded connection closed");
            metrics.closes.with_label_values(&[close.kind()]).inc();
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.io.close()).await;
    None
}

/// Moves frames both ways until the client or the holding edge is done (`Ok`: the holding edge
/// ended the stream, having said what it had to say to the client).
async fn pump(
    state: &EdgeState,
    client: &mut Client,
    up: &mpsc::Sender<RelayUp>,
    down: &mut Streaming<RelayDown>,
) -> Result<(), Close> {
    let max_frame = state.config.session.max_frame;
    let write_timeout = Duration::from_secs(state.config.session.write_timeout_secs);
    let t = crate::transport::label(client.transport);
    let bytes_in = state.metrics.bytes.with_label_values(&[t, "in"]);
    let bytes_out = state.metrics.bytes.with_label_values(&[t, "out"]);
    send_frames(&mut client.input, up, max_frame)?;
    loop {
        tokio::select! {
            biased;
            _ = state.logout.cancelled() => return Err(Close::Shutdown),
            message = down.message() => {
                let Ok(Some(message)) = message else { return Ok(()) };
                bytes_out.inc_by(message.data.len() as u64);
                let mut out = BytesMut::from(Bytes::from(message.data));
                match tokio::time::timeout(write_timeout, client.io.write(&mut out)).await {
                    Err(_) => return Err(Close::SlowConsumer),
                    Ok(Err(_)) => return Err(Close::ClientClosed),
                    Ok(Ok(())) => {}
                }
            }
            // The holding edge is slow to take frames: the client waits.
            room = up.reserve(), if up.capacity() == 0 => {
                drop(room.map_err(|_| Close::ClientClosed)?);
                send_frames(&mut client.input, up, max_frame)?;
            }
            read = client.io.read(&mut client.input, max_frame), if up.capacity() > 0 => match read? {
                Read::Bytes(n) => {
                    bytes_in.inc_by(n as u64);
                    send_frames(&mut client.input, up, max_frame)?;
                }
                Read::Frame(payload, n) => {
                    bytes_in.inc_by(n as u64);
                    queue(up, payload.freeze())?;
                }
                Read::Nothing => {}
            },
        }
    }
}

/// Queues the whole frames in `input` (a byte stream's) while there is room.
fn send_frames(input: &mut BytesMut, up: &mpsc::Sender<RelayUp>, max: usize) -> Result<(), Close> {
    while up.capacity() > 0 {
        match frame::decode(input, max)? {
            Some(payload) => queue(up, payload.freeze())?,
            None => break,
        }
    }
    Ok(())
}

/// Queues one frame payload; the caller made sure there is room.
fn queue(up: &mpsc::Sender<RelayUp>, payload: Bytes) -> Result<(), Close> {
    up.try_send(RelayUp {
        open: None,
        frame: payload.into(),
    })
    .map_err(|_| Close::ClientClosed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> BytesMut {
        let mut input = BytesMut::new();
        for payload in payloads {
            frame::encode(payload, 64, &mut input).unwrap();
        }
        input
    }

    #[test]
    fn frames_wait_in_the_input_while_the_holding_edge_is_behind() {
        let (up, mut rx) = mpsc::channel(2);
        let mut input = frames(&[b"one", b"two", b"three"]);
        input.extend_from_slice(&[0, 0, 0, 4, b'f']);
        send_frames(&mut input, &up, 64).unwrap();
        assert_eq!(rx.try_recv().unwrap().frame, b"one");
        assert_eq!(up.capacity(), 1, "two queued, one taken");
        send_frames(&mut input, &up, 64).unwrap();
        assert_eq!(rx.try_recv().unwrap().frame, b"two");
        assert_eq!(rx.try_recv().unwrap().frame, b"three");
        assert!(rx.try_recv().is_err());
        assert_eq!(
            &input[..],
            &[0, 0, 0, 4, b'f'],
            "a partial frame waits for its rest"
        );
    }

    #[test]
    fn a_malformed_frame_ends_the_forwarded_connection_with_its_reason() {
        let (up, _rx) = mpsc::channel(4);
        let mut empty = BytesMut::from(&[0u8, 0, 0, 0][..]);
        let close = send_frames(&mut empty, &up, 64).unwrap_err();
        assert_eq!(close.kind(), "empty_frame");
        let mut large = BytesMut::from(&[0u8, 0, 0, 65][..]);
        let close = send_frames(&mut large, &up, 64).unwrap_err();
        assert_eq!(close.kind(), "frame_too_large");
    }
}
