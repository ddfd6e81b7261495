//! The demo game service: a small Roma-compatible service for tests, the standalone mode and
//! docker compose, and an example for game developers of what a service behind Janus does.
//!
//! - `player.intra.v1.TunnelService`: echoes every request (same mod, seq, obj, index, data);
//!   a request with seq [`ECHO_AND_PUSH`] is also followed by a push on the same tunnel
//!   (index 0, data `pushed`), the way Roma sends per-player pushes.
//! - `room.intra.v1.TunnelService` (module 6), `obj` is the room id:
//!   seq [`JOIN`] joins, [`LEAVE`] leaves, [`SAY`] sends `data` to the room: every other member
//!   gets a push (seq [`SAID`], data `"<uid>: <text>"`) through a broker's
//!   `broadcaster.service.push.v1.PushService/Multicast`. Each request is answered with the
//!   same mod/seq/obj/index and data `ok` (or an error text).
//!
//! The player is known from the `x-md-global-uid` / `-color` metadata Janus puts on a tunnel.

use std::collections::{BTreeSet, HashMap};
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use janus_ops::internal_tls::{self, Admit, InternalTls, Role};
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::player::intra::v1::tunnel_service_server::TunnelServiceServer as PlayerServer;
use janus_proto::room::intra::v1::tunnel_service_server::TunnelServiceServer as RoomServer;
use janus_proto::{player, room};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// Player request: echo, then push `pushed` on the tunnel.
pub const ECHO_AND_PUSH: i32 = 100;

/// Room request: join room `obj`.
pub const JOIN: i32 = 1;
/// Room request: leave room `obj`.
pub const LEAVE: i32 = 2;
/// Room request: say `data` to room `obj`.
pub const SAY: i32 = 3;
/// Room push: someone said something (`"<uid>: <text>"`).
pub const SAID: i32 = 4;

type Replies<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn caller(md: &tonic::metadata::MetadataMap) -> Result<(i64, String), Status> {
    let text = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let uid = text("x-md-global-uid")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Status::unauthenticated("x-md-global-uid metadata is required"))?;
    Ok((uid, text("x-md-global-color").unwrap_or_default()))
}

/// The echoing player service.
#[derive(Debug, Clone, Default)]
pub struct EchoPlayer;

#[tonic::async_trait]
impl player::intra::v1::tunnel_service_server::TunnelService for EchoPlayer {
    type TunnelStream = Replies<player::intra::v1::TunnelResponse>;

    async fn tunnel(
        &self,
        request: Request<Streaming<player::intra::v1::TunnelRequest>>,
    ) -> Result<Response<Self::TunnelStream>, Status> {
        caller(request.metadata())?;
        let replies = request.into_inner().flat_map(|r| {
            let out = match r {
                Err(status) => vec![Err(status)],
                Ok(r) => {
                    let push =
                        (r.seq == ECHO_AND_PUSH).then(|| player::intra::v1::TunnelResponse {
                            data: b"pushed".to_vec(),
                            obj: r.obj,
                            r#mod: r.r#mod,
                            seq: r.seq,
                            index: 0,
                            ..Default::default()
                        });
                    let echo = player::intra::v1::TunnelResponse {
                        data: r.data,
                        data_version: r.data_version,
                        obj: r.obj,
                        r#mod: r.r#mod,
                        seq: r.seq,
                        index: r.index,
                    };
                    std::iter::once(echo).chain(push).map(Ok).collect()
                }
            };
            futures_util::stream::iter(out)
        });
        Ok(Response::new(replies.boxed()))
    }
}

/// Room members by (colour, room id).
type Members = HashMap<(String, i64), BTreeSet<i64>>;

/// The chat-room service.
#[derive(Debug, Clone)]
pub struct Rooms {
    members: Arc<Mutex<Members>>,
    push: bc::push_service_client::PushServiceClient<Channel>,
}

impl Rooms {
    /// Rooms that push through the broker at `push_endpoint` (`host:port`), over mutual TLS
    /// when `tls` is given.
    pub fn new(
        push_endpoint: &str,
        tls: Option<&InternalTls>,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = internal_tls::channel(push_endpoint, tls, Role::Broker, |e| e)?;
        Ok(Self {
            members: Arc::default(),
            push: bc::push_service_client::PushServiceClient::new(channel),
        })
    }

    async fn handle(&self, uid: i64, color: &str, r: &room::intra::v1::TunnelRequest) -> Vec<u8> {
        let key = (color.to_owned(), r.obj);
        match r.seq {
            JOIN => {
                self.lock().entry(key).or_default().insert(uid);
                b"ok".to_vec()
            }
            LEAVE => {
                if let Some(members) = self.lock().get_mut(&key) {
                    members.remove(&uid);
                }
                b"ok".to_vec()
            }
            SAY => {
                let others: Vec<i64> = self
                    .lock()
                    .get(&key)
                    .map(|m| m.iter().copied().filter(|m| *m != uid).collect())
                    .unwrap_or_default();
                let mut data = format!("{uid}: ").into_bytes();
                data.extend_from_slice(&r.data);
                let request = bc::MulticastRequest {
                    bodies: vec![bc::PushBody {
                        data,
                        data_version: 0,
                        obj: r.obj,
                        r#mod: r.r#mod,
                        seq: SAID,
                        ..Default::default()
                    }],
                    uids: others,
                    color: color.to_owned(),
                };
                match self.push.clone().multicast(request).await {
                    Ok(_) => b"ok".to_vec(),
                    Err(status) => format!("push failed: {}", status.message()).into_bytes(),
                }
            }
            other => format!("unknown room request {other}").into_bytes(),
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Members> {
        self.members.lock()
    }
}

#[tonic::async_trait]
impl room::intra::v1::tunnel_service_server::TunnelService for Rooms {
    type TunnelStream = Replies<room::intra::v1::TunnelResponse>;

    async fn tunnel(
        &self,
        request: Request<Streaming<room::intra::v1::TunnelRequest>>,
    ) -> Result<Response<Self::TunnelStream>, Status> {
        let (uid, color) = caller(request.metadata())?;
        let rooms = self.clone();
        let replies = request.into_inner().then(move |r| {
            let rooms = rooms.clone();
            let color = color.clone();
            async move {
                let r = r?;
                let data = rooms.handle(uid, &color, &r).await;
                Ok(room::intra::v1::TunnelResponse {
                    data,
                    obj: r.obj,
                    r#mod: r.r#mod,
                    seq: r.seq,
                    index: r.index,
                    conn_id: r.conn_id,
                    ..Default::default()
                })
            }
        });
        Ok(Response::new(replies.boxed()))
    }
}

/// Serves the demo game service (both tunnel services) on `listener` until `shutdown`
/// resolves; room pushes go through the broker at `push_endpoint`. With `tls`, both ways are
/// mutual TLS (PROTOCOL.md §15): tunnels are taken from brokers only, and the material is
/// reloaded as its files change.
pub async fn serve(
    listener: TcpListener,
    push_endpoint: &str,
    tls: Option<InternalTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let rooms = Rooms::new(push_endpoint, tls.as_ref())?;
    let stop = CancellationToken::new();
    let _stopped = stop.clone().drop_guard();
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(None, stop.clone()));
    }
    let brokers = Admit::new("tunnel", &[Role::Broker], false, None);
    let incoming = internal_tls::incoming(listener, tls, false, None, stop);
    tonic::transport::Server::builder()
        .add_service(PlayerServer::with_interceptor(EchoPlayer, brokers.clone()))
        .add_service(RoomServer::with_interceptor(rooms, brokers))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
