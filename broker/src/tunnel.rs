//! Tunnels to game services (Roma-compatible, PROTOCOL.md §14): resolving which instance owns
//! an object (app route in the route store, else smooth weighted round-robin over discovered
//! instances and set-if-absent), one gRPC channel per instance, and one bidirectional `Tunnel`
//! stream per (session, service, obj) whose replies go straight to the session's edge.
//!
//! A tunnel is usable as soon as its stream is requested: requests flow without waiting for the
//! service's response headers, because grpc-go (Roma) writes a server stream's headers only
//! with its first message — the reply to the first request. An open that fails surfaces when
//! the stream ends with an error: every request still unanswered then is answered to the
//! client with `SCServerUnexpectedErr`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use janus_ops::discovery::{Discovery, Instance};
use janus_ops::internal_tls::{self, InternalTls, Role};
use janus_proto::janus::internal::v1::SessionOpen;
use janus_proto::packet::Packet;
use janus_proto::{player, room};
use janus_protocol::system;
use parking_lot::Mutex;
use prometheus::{Histogram, IntCounter};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tracing::Instrument;

use crate::balance::SmoothWeighted;
use crate::config::{ServiceConfig, TunnelKind};
use crate::continuity::Continuity;
use crate::error::{Error, Result, unavailable};
use crate::route::{RouteStore, route_key};

/// How long connecting to a game-service instance may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the tunnels take from the configuration, already parsed.
#[derive(Debug, Clone, Copy)]
pub struct TunnelSettings {
    /// TTL of the app routes a tunnel claims (`[routes] app_ttl_secs`).
    pub app_ttl: Duration,
    /// Requests one tunnel may have waiting to be sent (`[tunnels] queue`).
    pub queue: usize,
    /// HTTP/2 ping interval of each channel to an instance (`[tunnels] keepalive_secs`).
    pub keepalive: Duration,
}

/// Everything needed to open tunnels; one per broker.
pub struct Tunnels {
    routes: Arc<dyn RouteStore>,
    discovery: Arc<dyn Discovery>,
    settings: TunnelSettings,
    /// This broker's endpoint, the first half of the referers a tunnel carries.
    endpoint: String,
    tasks: TaskTracker,
    watches: tokio::sync::Mutex<HashMap<String, watch::Receiver<Vec<Instance>>>>,
    balancers: Mutex<HashMap<(String, String), SmoothWeighted>>,
    /// Channels by endpoint and whether they use TLS.
    channels: Mutex<HashMap<(String, bool), Channel>>,
    /// The material of TLS links to game services (`[internal_tls]`), when on.
    tls: Option<InternalTls>,
}

impl std::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnels")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// The metrics one tunnel reports into.
#[derive(Debug, Clone)]
pub struct TunnelMetrics {
    /// Request-to-reply times.
    pub round_trip: Histogram,
    /// Counted when the stream ends with an error (an open refused, a broken stream).
    pub failed: IntCounter,
}

/// A request sent on a tunnel and not answered yet.
#[derive(Debug, Clone, Copy)]
struct Pending {
    index: i32,
    module: i32,
    seq: i32,
    sent: Instant,
}

/// Requests of one tunnel still waiting for their reply, oldest first, timed into the
/// round-trip histogram when the reply with their index comes back, and answered with an error
/// if the stream fails first. Bounded by the tunnel's queue size: requests a service never
/// answers (one-way messages) age out at the front.
#[derive(Debug)]
struct RoundTrips {
    pending: Mutex<VecDeque<Pending>>,
    cap: usize,
    histogram: Histogram,
}

impl RoundTrips {
    fn sent(&self, request: Pending) {
        if request.index == 0 {
            return;
        }
        let mut pending = self.pending.lock();
        if pending.len() == self.cap {
            pending.pop_front();
        }
        pending.push_back(request);
    }

    fn replied(&self, index: i32) {
        if index == 0 {
            return;
        }
        let mut pending = self.pending.lock();
        if let Some(at) = pending.iter().position(|p| p.index == index) {
            let sent = pending[at].sent;
            pending.drain(..=at);
            self.histogram.observe(sent.elapsed().as_secs_f64());
        }
    }

    /// Every request still unanswered, taken.
    fn unanswered(&self) -> VecDeque<Pending> {
        std::mem::take(&mut *self.pending.lock())
    }
}

/// An open tunnel: requests go in, replies go to the session's edge by themselves.
#[derive(Debug)]
pub struct Tunnel {
    tx: mpsc::Sender<Packet>,
    done: CancellationToken,
    round_trips: Arc<RoundTrips>,
    /// The instance it is open to.
    pub endpoint: String,
}

/// Why a packet could not be handed to a tunnel.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The tunnel's queue is full: the game service is not keeping up with this session.
    Full,
    /// The tunnel has ended; the packet is given back for a reopened one.
    Closed(Box<Packet>),
}

impl Tunnel {
    /// Queues `packet` without waiting.
    pub fn send(&self, packet: Packet) -> Result<(), SendError> {
        if self.done.is_cancelled() {
            return Err(SendError::Closed(Box::new(packet)));
        }
        let pending = Pending {
            index: packet.index,
            module: packet.r#mod,
            seq: packet.seq,
            sent: Instant::now(),
        };
        self.tx
            .try_send(packet)
            .map(|()| self.round_trips.sent(pending))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::Full,
                mpsc::error::TrySendError::Closed(p) => SendError::Closed(Box::new(p)),
            })
    }
}

impl Tunnels {
    /// Tunnels resolved through `routes` and `discovery`.
    pub fn new(
        routes: Arc<dyn RouteStore>,
        discovery: Arc<dyn Discovery>,
        settings: TunnelSettings,
        endpoint: String,
        tasks: TaskTracker,
        tls: Option<InternalTls>,
    ) -> Self {
        Self {
            tls,
            routes,
            discovery,
            settings,
            endpoint,
            tasks,
            watches: Default::default(),
            balancers: Default::default(),
            channels: Default::default(),
        }
    }

    async fn instances(&self, service: &str, color: &str) -> Result<Vec<(String, i64)>> {
        let mut watches = self.watches.lock().await;
        let rx = match watches.get(service) {
            Some(rx) => rx.clone(),
            None => {
                let rx = self
                    .discovery
                    .watch(service)
                    .await
                    .map_err(|e| Error::Discovery(e.to_string()))?;
                watches.insert(service.to_owned(), rx.clone());
                rx
            }
        };
        drop(watches);
        let instances = rx.borrow();
        Ok(instances
            .iter()
            .filter(|i| i.color() == color)
            .filter_map(|i| Some((i.grpc_endpoint()?.to_owned(), i.weight())))
            .collect())
    }

    /// The endpoint of the instance that owns `obj` of `service` for `color`: the app route if
    /// it names a live instance, else a balanced pick claimed with set-if-absent (the winner of
    /// a race is used).
    pub async fn resolve(&self, service: &str, color: &str, obj: i64) -> Result<String> {
        let live = self.instances(service, color).await?;
        let key = route_key(service, color, obj);
        match self.routes.get(&key).await? {
            Some(endpoint) if live.iter().any(|(e, _)| *e == endpoint) => return Ok(endpoint),
            Some(stale) if !live.is_empty() => {
                self.routes.delete_if(&key, &stale).await?;
            }
            _ => {}
        }
        let pick = {
            let mut balancers = self.balancers.lock();
            let swrr = balancers
                .entry((service.to_owned(), color.to_owned()))
                .or_default();
            swrr.pick(&live).map(str::to_owned)
        };
        let Some(pick) = pick else {
            return Err(Error::NoInstance {
                service: service.to_owned(),
                color: color.to_owned(),
            });
        };
        self.routes.claim(&key, &pick, self.settings.app_ttl).await
    }

    /// The channel to `endpoint` of `service`: TLS when internal TLS is on and the service
    /// is not a plaintext one (`[tunnels.services.<alias>] plaintext`).
    fn channel(&self, service: &ServiceConfig, endpoint: &str) -> Result<Channel> {
        let tls = self.tls.as_ref().filter(|_| !service.plaintext);
        let key = (endpoint.to_owned(), tls.is_some());
        let mut channels = self.channels.lock();
        if let Some(channel) = channels.get(&key) {
            return Ok(channel.clone());
        }
        let channel = internal_tls::channel(endpoint, tls, Role::Game, |e| {
            e.connect_timeout(CONNECT_TIMEOUT)
                .http2_keep_alive_interval(self.settings.keepalive)
        })
        .map_err(|e| tunnel_err(&service.name, endpoint, e))?;
        channels.insert(key, channel.clone());
        Ok(channel)
    }

    /// Opens a tunnel for `session` (named `session_id` to the service) to the instance owning
    /// `obj` of `service`; replies go to the client through the session's continuity, wherever
    /// it is. The stream is requested here but not waited for (module doc): the tunnel takes
    /// requests at once.
    #[tracing::instrument(name = "tunnel_open", skip_all, fields(service = %service.name, obj))]
    pub async fn open(
        &self,
        service: &ServiceConfig,
        continuity: Arc<Continuity>,
        obj: i64,
        session_id: u64,
        metrics: TunnelMetrics,
    ) -> Result<Tunnel> {
        let session = continuity.open();
        let endpoint = self.resolve(&service.name, &session.color, obj).await?;
        let channel = self.channel(service, &endpoint)?;
        let (tx, rx) = mpsc::channel(self.settings.queue);
        let replies = call(
            service.tunnel,
            channel,
            ReceiverStream::new(rx),
            self.metadata(session, session_id, obj),
        );
        let done = CancellationToken::new();
        let finished = done.clone();
        let (name, at) = (service.name.clone(), endpoint.clone());
        let round_trips = Arc::new(RoundTrips {
            pending: Mutex::new(VecDeque::new()),
            cap: self.settings.queue.max(1),
            histogram: metrics.round_trip,
        });
        let replied = round_trips.clone();
        self.tasks.spawn(
            async move {
                let _finished = finished.drop_guard();
                let relayed = async {
                    let mut replies = replies.await?;
                    while let Some(reply) = replies.next().await {
                        let packet = reply?;
                        replied.replied(packet.index);
                        if !continuity.deliver(packet).await {
                            break;
                        }
                    }
                    Ok::<_, tonic::Status>(())
                };
                let Err(status) = relayed.await else {
                    tracing::debug!(service = %name, endpoint = %at, "tunnel ended by the service");
                    return;
                };
                tracing::warn!(service = %name, endpoint = %at, %status, "tunnel failed");
                metrics.failed.inc();
                // The client hears of each request the failure lost, without the endpoint.
                for lost in replied.unanswered() {
                    let reply = system::unexpected_error(lost.module, lost.seq, unavailable(&name));
                    if !continuity.deliver(reply).await {
                        return;
                    }
                }
            }
            .in_current_span(),
        );
        Ok(Tunnel {
            tx,
            done,
            round_trips,
            endpoint,
        })
    }

    /// The `x-md-global-*` metadata Roma reads (PROTOCOL.md §14.3). Both referers are
    /// `<broker gRPC endpoint>#<session id>`, as go-pantheon's gate sends
    /// `<gate endpoint>#<worker id>`: Roma reuses a player's worker only for the same referer.
    fn metadata(&self, session: &SessionOpen, session_id: u64, obj: i64) -> MetadataMap {
        let mut md = MetadataMap::new();
        let mut put = |key: &'static str, value: String| {
            if let Ok(value) = MetadataValue::try_from(value) {
                md.insert(key, value);
            }
        };
        put("x-md-global-oid", obj.to_string());
        put("x-md-global-uid", session.uid.to_string());
        put("x-md-global-sid", session.sid.to_string());
        put("x-md-global-status", session.status.to_string());
        put("x-md-global-color", session.color.clone());
        put("x-md-global-client-ip", session.client_ip.clone());
        let referer = format!("{}#{session_id}", self.endpoint);
        put("x-md-global-referer", referer.clone());
        put("x-md-global-gate-referer", referer);
        let traceparent = janus_ops::telemetry::traceparent();
        if !traceparent.is_empty() {
            put("traceparent", traceparent);
        }
        md
    }
}

type Replies = BoxStream<'static, Result<Packet, tonic::Status>>;

/// Requests the `Tunnel` stream of `kind` carrying `requests`; the future resolves when the
/// service's response headers arrive (with its first reply, for grpc-go), while the requests
/// already flow.
async fn call(
    kind: TunnelKind,
    channel: Channel,
    requests: ReceiverStream<Packet>,
    metadata: MetadataMap,
) -> Result<Replies, tonic::Status> {
    let replies: Replies = match kind {
        TunnelKind::Player => {
            let mut request = tonic::Request::new(requests.map(player_request));
            *request.metadata_mut() = metadata;
            player::intra::v1::tunnel_service_client::TunnelServiceClient::new(channel)
                .tunnel(request)
                .await?
                .into_inner()
                .map(|r| r.map(player_reply))
                .boxed()
        }
        TunnelKind::Room => {
            let mut request = tonic::Request::new(requests.map(room_request));
            *request.metadata_mut() = metadata;
            room::intra::v1::tunnel_service_client::TunnelServiceClient::new(channel)
                .tunnel(request)
                .await?
                .into_inner()
                .map(|r| r.map(room_reply))
                .boxed()
        }
    };
    Ok(replies)
}

fn tunnel_err(service: &str, endpoint: &str, reason: impl ToString) -> Error {
    Error::Tunnel {
        service: service.to_owned(),
        endpoint: endpoint.to_owned(),
        reason: reason.to_string(),
    }
}

fn player_request(p: Packet) -> player::intra::v1::TunnelRequest {
    player::intra::v1::TunnelRequest {
        data: p.data,
        data_version: p.data_version,
        obj: p.obj,
        r#mod: p.r#mod,
        seq: p.seq,
        index: p.index,
    }
}

fn player_reply(r: player::intra::v1::TunnelResponse) -> Packet {
    Packet {
        data: r.data,
        data_version: r.data_version,
        obj: r.obj,
        r#mod: r.r#mod,
        seq: r.seq,
        index: r.index,
        ..Packet::default()
    }
}

fn room_request(p: Packet) -> room::intra::v1::TunnelRequest {
    room::intra::v1::TunnelRequest {
        data: p.data,
        data_version: p.data_version,
        obj: p.obj,
        r#mod: p.r#mod,
        seq: p.seq,
        index: p.index,
        conn_id: p.conn_id,
        frag_id: p.frag_id,
        frag_count: p.frag_count,
        frag_index: p.frag_index,
    }
}

fn room_reply(r: room::intra::v1::TunnelResponse) -> Packet {
    Packet {
        data: r.data,
        data_version: r.data_version,
        obj: r.obj,
        r#mod: r.r#mod,
        seq: r.seq,
        index: r.index,
        conn_id: r.conn_id,
        frag_id: r.frag_id,
        frag_count: r.frag_count,
        frag_index: r.frag_index,
        ..Packet::default()
    }
}
