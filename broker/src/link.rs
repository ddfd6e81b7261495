//! The broker end of the edge link (`janus.internal.v1.EdgeLink/Link`): one bidirectional
//! stream per edge carrying batches of frames tagged with session ids. Incoming frames are
//! dispatched to session actors; outgoing frames from all of this edge's sessions share one
//! bounded queue and are written in batches. A resume presented at this edge is decided here,
//! against the session's continuity, wherever the session was before (PROTOCOL.md §13).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use janus_proto::janus::internal::v1::edge_link_server::EdgeLink;
use janus_proto::janus::internal::v1::{
    BrokerBatch, BrokerFrame, EdgeBatch, Kick, ResumeRefused, ResumeRequest, SessionOpen,
    broker_frame, edge_frame,
};
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_protocol::handshake::{Redeemable, ResumeClaim};
use prost::Message;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::continuity::Continuity;
use crate::registry::{EDGE_QUEUE, EdgeHandle};
use crate::route::parked_key;
use crate::session::{self, Inbound, Member};
use crate::state::BrokerState;

/// Most frames written in one batch.
const MAX_BATCH: usize = 256;

/// The `EdgeLink` gRPC service.
#[derive(Debug, Clone)]
pub struct LinkService {
    state: Arc<BrokerState>,
}

impl LinkService {
    /// The service over `state`.
    pub fn new(state: Arc<BrokerState>) -> Self {
        Self { state }
    }
}

type BatchStream = Pin<Box<dyn Stream<Item = Result<BrokerBatch, Status>> + Send>>;

#[tonic::async_trait]
impl EdgeLink for LinkService {
    type LinkStream = BatchStream;

    async fn link(
        &self,
        request: Request<Streaming<EdgeBatch>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty edge link"))?;
        let hello = first
            .hello
            .clone()
            .ok_or_else(|| Status::invalid_argument("the first batch must carry the hello"))?;
        let (tx, rx) = mpsc::channel(EDGE_QUEUE);
        let edge = Arc::new(EdgeHandle::new(hello.edge_id.clone(), tx));
        let released = Arc::downgrade(&edge);
        tracing::info!(edge = %hello.edge_id, version = %hello.version, "edge linked");
        let state = self.state.clone();
        let edges = state.metrics.live.with_label_values(&["edges"]);
        edges.inc();
        self.state.tasks.spawn(async move {
            let mut reader = Reader {
                state,
                edge,
                sessions: HashMap::new(),
            };
            reader.batch(first).await;
            loop {
                match incoming.message().await {
                    Ok(Some(batch)) => reader.batch(batch).await,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(edge = %reader.edge.edge_id, %status, "edge link failed");
                        break;
                    }
                }
            }
            tracing::info!(edge = %reader.edge.edge_id, sessions = reader.sessions.len(), "edge link closed");
            // The edge is gone (or going): resumable sessions wait for their clients, at any edge.
            for (id, member) in std::mem::take(&mut reader.sessions) {
                reader.detached(id, member, "edge link closed".into(), true, None).await;
            }
            edges.dec();
        });
        Ok(Response::new(batches(
            rx,
            released,
            self.state.shutdown.clone(),
        )))
    }
}

/// Batches what is queued for an edge: waits for one frame, then takes what else is ready. When
/// the broker shuts down, the last batch says `draining` and the stream ends: the edge then
/// moves this broker's sessions to another broker. Sessions the broker parked because this
/// queue was full are released (their connections closed quietly) with the next batch.
fn batches(
    rx: mpsc::Receiver<BrokerFrame>,
    edge: std::sync::Weak<EdgeHandle>,
    shutdown: tokio_util::sync::CancellationToken,
) -> BatchStream {
    futures_util::stream::unfold(Some(rx), move |rx| {
        let shutdown = shutdown.clone();
        let edge = edge.clone();
        async move {
            let mut rx = rx?;
            let first = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let last = BrokerBatch { draining: true, ..BrokerBatch::default() };
                    return Some((Ok(last), None));
                }
                first = rx.recv() => first?,
            };
            let mut frames = Vec::with_capacity(8);
            frames.push(first);
            while frames.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(frame) => frames.push(frame),
                    Err(_) => break,
                }
            }
            let released = edge
                .upgrade()
                .map(|e| e.take_released())
                .unwrap_or_default();
            let batch = BrokerBatch {
                frames,
                draining: false,
                released,
            };
            Some((Ok(batch), Some(rx)))
        }
    })
    .boxed()
}

struct Reader {
    state: Arc<BrokerState>,
    edge: Arc<EdgeHandle>,
    sessions: HashMap<u64, Member>,
}

impl Reader {
    async fn batch(&mut self, batch: EdgeBatch) {
        self.edge.edge_received(batch.received_frames);
        if batch.draining {
            tracing::info!(edge = %self.edge.edge_id, "edge is draining");
        }
        for frame in batch.frames {
            let id = frame.session_id;
            match frame.kind {
                Some(edge_frame::Kind::Open(open)) => {
                    let member = session::spawn(&self.state, self.edge.clone(), id, open);
                    if let Some(old) = self.sessions.insert(id, member) {
                        let _ = old
                            .inbox
                            .try_send(Inbound::Close("session id reused".into()));
                    }
                }
                Some(edge_frame::Kind::Packet(client)) => {
                    let Some(packet) = client.packet else {
                        continue;
                    };
                    let Some(member) = self.sessions.get(&id) else {
                        continue;
                    };
                    if !member.continuity.took(&self.edge, id, packet.index) {
                        // Sent over a connection the session has moved away from.
                        continue;
                    }
                    let forwarded = Inbound::Packet(Box::new((packet, client.traceparent)));
                    match member.inbox.try_send(forwarded) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // The edge ends the session and its close comes back here.
                            tracing::warn!(session_id = id, "session inbox full; closing it");
                            self.state
                                .metrics
                                .packets_refused
                                .with_label_values(&["inbox_full"])
                                .inc();
                            self.kick(id, "too many requests in flight").await;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            self.sessions.remove(&id);
                        }
                    }
                }
                Some(edge_frame::Kind::Backlog(backlog)) => {
                    if let Some(member) = self.sessions.get(&id) {
                        member
                            .continuity
                            .backlog(&self.edge, id, backlog.backlogged);
                    }
                }
                Some(edge_frame::Kind::Progress(progress)) => {
                    if let Some(member) = self.sessions.get(&id) {
                        member.continuity.progress(
                            &self.edge,
                            id,
                            progress.received,
                            progress.next_index,
                        );
                    }
                }
                Some(edge_frame::Kind::Close(close)) if close.handover => {
                    if let Some(member) = self.sessions.remove(&id)
                        && member.continuity.hand_over(&self.edge, id).await
                    {
                        self.state
                            .metrics
                            .handovers
                            .with_label_values(&["handed_over"])
                            .inc();
                        let _ = member.inbox.send(Inbound::HandedOver).await;
                    }
                }
                Some(edge_frame::Kind::Close(close)) => {
                    if let Some(member) = self.sessions.remove(&id) {
                        self.detached(id, member, close.reason.into(), close.resumable, close.rate)
                            .await;
                    }
                }
                Some(edge_frame::Kind::Resume(request)) => self.resume(id, request).await,
                None => {}
            }
        }
    }

    /// The connection of session `id` at this edge is gone, for `reason`: the session parks
    /// if `resumable` and it can, or ends; unless it has moved to another connection already.
    /// Every way a session leaves its edge comes through here: its actor ends only when told.
    async fn detached(
        &self,
        id: u64,
        member: Member,
        reason: Box<str>,
        resumable: bool,
        rate: Option<janus_proto::janus::internal::v1::RateState>,
    ) {
        let continuity = &member.continuity;
        if resumable && continuity.park(&self.edge, id, rate) {
            let _ = member.inbox.send(Inbound::Parked).await;
        } else if continuity.is_at(&self.edge, id) {
            let _ = member.inbox.send(Inbound::Close(reason)).await;
        }
    }

    /// A client presented a ticket at this edge, now session `id` here: the first resume
    /// with the current ticket and a valid proof takes the session, wherever it was. A session
    /// this broker does not hold may be parked in the route store by a broker that went away
    /// (PROTOCOL.md §13.5): the resume restores it here.
    async fn resume(&mut self, id: u64, request: ResumeRequest) {
        let metrics = &self.state.metrics;
        let decided = match claim_of(&request) {
            Err(refusal) => Err(refusal),
            Ok((claim, next)) => match self.state.registry.get(request.uid) {
                Some(entry) => entry
                    .continuity
                    .redeem(&claim, next, &self.edge, id)
                    .map(|()| {
                        let _ = entry.inbox.try_send(Inbound::Resumed);
                        Member {
                            inbox: entry.inbox,
                            continuity: entry.continuity,
                        }
                    }),
                None => self.restore(id, request.uid, &claim, next).await,
            },
        };
        match decided {
            Ok(member) => {
                metrics.resumes.with_label_values(&["ok"]).inc();
                tracing::info!(edge = %self.edge.edge_id, session_id = id, uid = request.uid, "session resumed");
                self.sessions.insert(id, member);
            }
            Err(reason) => {
                metrics.resumes.with_label_values(&[reason]).inc();
                tracing::info!(edge = %self.edge.edge_id, session_id = id, uid = request.uid, reason, "resume refused");
                let refused = BrokerFrame {
                    kind: Some(broker_frame::Kind::Refused(ResumeRefused {
                        session_id: id,
                        reason: reason.to_owned(),
                    })),
                };
                self.edge.try_send(refused);
            }
        }
    }

    /// Takes `uid`'s parked copy from the route store (only one broker can: the copy is
    /// deleted if it is still the one read) and decides the resume against it; a refused claim
    /// puts the copy back for the real client, unless the session is lost (a gap).
    async fn restore(
        &self,
        id: u64,
        uid: i64,
        claim: &ResumeClaim,
        next: Redeemable,
    ) -> Result<Member, &'static str> {
        use base64::Engine;
        let routes = &self.state.routes;
        let key = parked_key(uid);
        let encoded = routes
            .get(&key)
            .await
            .ok()
            .flatten()
            .ok_or("resume_unknown")?;
        let open = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .ok()
            .and_then(|bytes| SessionOpen::decode(bytes.as_slice()).ok())
            .ok_or("resume_unknown")?;
        if !routes.delete_if(&key, &encoded).await.unwrap_or(false) {
            return Err("resume_unknown");
        }
        let window = std::time::Duration::from_secs(u64::from(
            open.continuity.as_ref().map_or(0, |c| c.window_secs),
        ));
        let continuity = Arc::new(
            Continuity::new(None, &open, self.state.config.resume.retain_packets)
                .with_delivery(&self.state.delivery),
        );
        match continuity.redeem(claim, next, &self.edge, id) {
            Ok(()) => {
                tracing::info!(uid, "parked session restored from the route store");
                self.state
                    .metrics
                    .handovers
                    .with_label_values(&["restored"])
                    .inc();
                Ok(session::start(&self.state, id, continuity))
            }
            Err("resume_gap") => Err("resume_gap"),
            Err(refusal) => {
                let _ = routes.swap(&key, &encoded, window).await;
                Err(refusal)
            }
        }
    }

    async fn kick(&self, session_id: u64, reason: &str) {
        let frame = BrokerFrame {
            kind: Some(broker_frame::Kind::Kick(Kick {
                session_ids: vec![session_id],
                logout_code: LogoutCode::Server as i32,
                reason: reason.to_owned(),
            })),
        };
        self.edge.send(frame).await;
    }
}

/// The claim a resume request makes and the ticket and key it offers next.
fn claim_of(request: &ResumeRequest) -> Result<(ResumeClaim, Redeemable), &'static str> {
    let claim = ResumeClaim {
        client_pub: request
            .client_pub
            .as_slice()
            .try_into()
            .map_err(|_| "resume_denied")?,
        ticket: request.ticket.clone(),
        timestamp: request.timestamp,
        received: request.received,
        proof: request.proof.clone(),
    };
    let next = Redeemable {
        ticket: request.next_ticket.clone(),
        key: request
            .next_resume_key
            .as_slice()
            .try_into()
            .map_err(|_| "resume_denied")?,
    };
    Ok((claim, next))
}
