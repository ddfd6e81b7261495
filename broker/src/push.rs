//! Push fan-out. A push to uids is resolved through the gateway routes to the brokers holding
//! them: local sessions get it directly, each other broker gets one message on its own bus
//! subject carrying all of its uids. A broadcast is one message on the broadcast subject that
//! every broker delivers to its matching sessions. Both push gRPC APIs and the bus ingress
//! subject end up here, and so do the Redis channels of go-pantheon's broadcaster ([`pubsub`]).
//! Delivery is at most once; what counts as pushed is in PROTOCOL.md.

mod pubsub;
mod stray;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::gate::service::push::v1 as gate;
use janus_proto::janus::internal::v1::BrokerControl;
use janus_proto::packet::Packet;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::bus::{Confirm, Incoming, Sent, subject};
use crate::continuity::{self, Continuity};
use crate::error::{Error, Result};
use crate::registry::{Command, EdgeHandle};
use crate::route::gate_route_key;
use crate::session;
use crate::state::{BrokerState, broker_id};

/// How long a push call waits for the edges of the sessions it reached to say they hold it
/// (PROTOCOL.md §13.5). Past it the call is answered anyway: the broker still holds the push.
const HELD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a push went that must say it holds it before the push call is answered.
enum Queued {
    /// An edge, and the count of its link's frames that covers the push.
    Edge(Arc<EdgeHandle>, u64),
    /// A parked session, and the count its copy in the route store must reach.
    Copy(Arc<Continuity>, u64),
}

/// How often pushes waiting for their session's new route look at it ([`stray`]).
const STRAY_LOOK: std::time::Duration = std::time::Duration::from_millis(100);

/// Pushes on behalf of one broker.
#[derive(Debug, Clone)]
pub struct Pusher {
    state: Arc<BrokerState>,
    strays: Arc<stray::Strays>,
}

fn to_packet(body: &bc::PushBody) -> Packet {
    Packet {
        data: body.data.clone(),
        data_version: body.data_version,
        obj: body.obj,
        r#mod: body.r#mod,
        seq: body.seq,
        ..Packet::default()
    }
}

impl Pusher {
    /// A pusher for the broker of `state`.
    pub fn new(state: Arc<BrokerState>) -> Self {
        Self {
            state,
            strays: Arc::default(),
        }
    }

    /// Pushes `bodies` to `uids` of `color` wherever their sessions are. Returns the uids that
    /// had a live session (here) or a gateway route (elsewhere) when the push was resolved.
    /// With no `color`, routes are looked up under every colour this broker serves.
    pub async fn multicast(
        &self,
        color: &str,
        uids: &[i64],
        bodies: &[bc::PushBody],
    ) -> Result<Vec<i64>> {
        let colors = lookup_colors(color, &self.state.config.discovery.colors);
        let started = std::time::Instant::now();
        let (pushed, queued) = self
            .resolve_and_send(&colors, uids, bodies, Confirm::Held)
            .await?;
        self.observe("multicast", started);
        self.held(queued).await;
        Ok(pushed)
    }

    /// Waits until every edge in `queued` holds what was queued for it, and every parked
    /// session's copy in the route store holds what was kept for it, so a push the call
    /// confirms outlives this broker's death (the edge hands it to the next broker with the
    /// session's tail; the copy is what a resume elsewhere takes); one that does not within
    /// [`HELD_WAIT`] is counted.
    async fn held(&self, queued: Vec<Queued>) {
        let waits = queued.into_iter().map(|queued| async move {
            let (held, by) = match &queued {
                Queued::Edge(edge, frames) => {
                    (edge.edge_holds(*frames, HELD_WAIT).await, &*edge.edge_id)
                }
                Queued::Copy(session, sent) => {
                    (session.copy_holds(*sent, HELD_WAIT).await, "parked_copy")
                }
            };
            if !held {
                self.state
                    .metrics
                    .push_unheld
                    .with_label_values(&[by])
                    .inc();
            }
        });
        futures_util::future::join_all(waits).await;
    }

    fn observe(&self, kind: &str, started: std::time::Instant) {
        let metrics = &self.state.metrics;
        metrics.pushes.with_label_values(&[kind]).inc();
        metrics
            .push_fanout_seconds
            .with_label_values(&[kind])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Delivers `bodies` to the sessions of `uids` here and sends them to the brokers of the
    /// others, which answer as `confirm` says; returns the uids pushed and where they went
    /// here.
    async fn resolve_and_send(
        &self,
        colors: &[&str],
        uids: &[i64],
        bodies: &[bc::PushBody],
        confirm: Confirm,
    ) -> Result<(Vec<i64>, Vec<Queued>)> {
        // Uids with pushes waiting for their session's new route: behind those.
        let (behind, uids) = self.strays.behind(uids, bodies);
        self.count_waiting(&behind.queued);
        let (groups, mut pushed, mut elsewhere) = self.state.registry.split(&uids);
        pushed.extend(behind.uids);
        let mut queued = self.deliver(groups, bodies);
        // Uids not here, by the broker their route names under the first colour that has one.
        let mut by_broker: BTreeMap<(String, &str), Vec<i64>> = BTreeMap::new();
        // Routes naming this broker for sessions not here a moment ago: registered since (a
        // session registers before it writes its route), or gone.
        let mut arrived = Vec::new();
        for color in colors {
            if elsewhere.is_empty() {
                break;
            }
            let keys: Vec<String> = elsewhere
                .iter()
                .map(|uid| gate_route_key(color, *uid))
                .collect();
            let owners = self.state.routes.get_many(&keys).await?;
            let mut unrouted = Vec::new();
            for (uid, owner) in elsewhere.into_iter().zip(owners) {
                match owner {
                    Some(owner) if owner != self.state.endpoint => {
                        by_broker.entry((owner, color)).or_default().push(uid)
                    }
                    Some(_) => arrived.push(uid),
                    None => unrouted.push(uid),
                }
            }
            elsewhere = unrouted;
        }
        if !arrived.is_empty() {
            let (groups, here, _) = self.state.registry.split(&arrived);
            queued.extend(self.deliver(groups, bodies));
            pushed.extend(here);
        }
        // One message per broker, all at once (each may wait for that broker's edges).
        let sends = by_broker.iter().map(|((owner, color), uids)| {
            let message = bc::PushMessage {
                bodies: bodies.to_vec(),
                uids: uids.clone(),
                broadcast: false,
                color: (*color).to_owned(),
                sid: 0,
            };
            let to = subject::broker(&broker_id(owner));
            async move {
                self.state
                    .bus
                    .send(&to, Bytes::from(message.encode_to_vec()), confirm)
                    .await
            }
        });
        let sent = futures_util::future::join_all(sends).await;
        for (((owner, color), uids), sent) in by_broker.into_iter().zip(sent) {
            if sent? == Sent::NoSubscriber {
                // That broker is gone; its sessions are being re-attached elsewhere.
                let queued = self.strays.wait(&owner, color, &uids, bodies);
                self.count_waiting(&queued);
                if queued.watch {
                    self.state.tasks.spawn(self.clone().watch_strays());
                }
            }
            pushed.extend(uids);
        }
        Ok((pushed, queued))
    }

    fn count_waiting(&self, queued: &stray::Queued) {
        let metrics = &self.state.metrics;
        if queued.waiting > 0 {
            metrics
                .stray_pushes
                .with_label_values(&["waited"])
                .inc_by(queued.waiting as u64);
        }
        if queued.dropped > 0 {
            tracing::warn!(
                pushes = queued.dropped,
                "too many pushes wait for a session whose broker went away; dropped"
            );
            metrics
                .push_dropped
                .with_label_values(&["owner_gone"])
                .inc_by(queued.dropped as u64);
        }
    }

    /// Sends pushes waiting for their sessions' new routes on as the routes appear, every
    /// [`STRAY_LOOK`], until none waits.
    async fn watch_strays(self) {
        let mut tick = tokio::time::interval(STRAY_LOOK);
        let (mut sent, mut uids) = (0, 0);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.state.shutdown.cancelled() => return,
            }
            let strays = self.strays.look();
            if strays.is_empty() {
                tracing::info!(
                    pushes = sent,
                    uids,
                    "pushes that waited for their sessions' new routes were sent on"
                );
                return;
            }
            for stray in strays {
                match self.settle(&stray).await {
                    Ok(0) => {}
                    Ok(n) => (sent, uids) = (sent + n, uids + 1),
                    Err(e) => {
                        tracing::warn!(uid = stray.uid, error = %e, "pushes for a session whose broker went away still wait");
                    }
                }
            }
        }
    }

    /// Sends `stray`'s pushes where its session is now, if it is anywhere yet (returns how
    /// many); gives up on them past [`stray::STRAY_WAIT`].
    async fn settle(&self, stray: &stray::Stray) -> Result<usize> {
        let mut sent = 0;
        let uid = stray.uid;
        let owner = if self.state.registry.get(uid).is_some() {
            Some(self.state.endpoint.clone())
        } else {
            let key = gate_route_key(&stray.color, uid);
            self.state.routes.get_many(&[key]).await?.pop().flatten()
        };
        match owner {
            Some(owner) if owner == self.state.endpoint => {
                // Registered here (a session registers before it writes its route).
                loop {
                    let pushes = self.strays.take(uid);
                    if pushes.is_empty() {
                        return Ok(sent);
                    }
                    self.count_sent(pushes.len());
                    sent += pushes.len();
                    for bodies in &pushes {
                        self.deliver(self.state.registry.split(&[uid]).0, bodies);
                    }
                }
            }
            Some(owner) if owner != stray.gone => loop {
                let pushes = self.strays.take(uid);
                if pushes.is_empty() {
                    return Ok(sent);
                }
                for (n, bodies) in pushes.iter().enumerate() {
                    let message = bc::PushMessage {
                        bodies: bodies.clone(),
                        uids: vec![uid],
                        color: stray.color.clone(),
                        ..bc::PushMessage::default()
                    };
                    let result = self
                        .state
                        .bus
                        .send(
                            &subject::broker(&broker_id(&owner)),
                            Bytes::from(message.encode_to_vec()),
                            Confirm::Taken,
                        )
                        .await;
                    if !matches!(result, Ok(Sent::Taken)) {
                        // That broker is gone too, or the bus failed: they wait again.
                        let gone = if result.is_ok() { &owner } else { &stray.gone };
                        self.strays.again(uid, gone, pushes[n..].to_vec());
                        return result.map(|_| sent);
                    }
                    self.count_sent(1);
                    sent += 1;
                }
            },
            // Not re-attached yet (the route names the broker that is gone, or has expired).
            _ if stray.expired => {
                let dropped = self.strays.forget(uid);
                tracing::warn!(uid, pushes = dropped, gone = %stray.gone, "no broker took the session of pushes that waited for it; dropped");
                self.state
                    .metrics
                    .push_dropped
                    .with_label_values(&["owner_gone"])
                    .inc_by(dropped as u64);
                Ok(0)
            }
            _ => Ok(0),
        }
    }

    fn count_sent(&self, pushes: usize) {
        self.state
            .metrics
            .stray_pushes
            .with_label_values(&["sent"])
            .inc_by(pushes as u64);
    }

    /// Broadcasts `bodies` to every session of (`color`, `sid`) on every broker.
    pub async fn broadcast(&self, color: &str, sid: i64, bodies: &[bc::PushBody]) -> Result<()> {
        self.state
            .metrics
            .pushes
            .with_label_values(&["broadcast"])
            .inc();
        let message = bc::PushMessage {
            bodies: bodies.to_vec(),
            uids: Vec::new(),
            broadcast: true,
            color: color.to_owned(),
            sid,
        };
        self.state
            .bus
            .publish(subject::BROADCAST, Bytes::from(message.encode_to_vec()))
            .await
    }

    /// Queues `bodies` for `groups`; returns each edge queued with its link's frame count then.
    fn deliver(&self, groups: crate::registry::Groups, bodies: &[bc::PushBody]) -> Vec<Queued> {
        let dropped = || {
            self.state
                .metrics
                .push_dropped
                .with_label_values(&["edge_queue_full"])
                .inc();
        };
        for body in bodies {
            let packet = Arc::new(to_packet(body));
            for (edge, sessions) in &groups.edges {
                let sent = continuity::multicast(edge, sessions, &packet);
                if sent.dropped > 0 {
                    dropped();
                    tracing::warn!(edge = %edge.edge_id, sessions = sent.dropped, "edge queue full; push dropped");
                }
                for moved in sent.moved {
                    if !moved.try_deliver(&packet) {
                        dropped();
                    }
                }
            }
            for parked in &groups.parked {
                parked.try_deliver(&packet);
            }
        }
        let copies = groups
            .parked
            .into_iter()
            .filter_map(|session| Some(Queued::Copy(session.clone(), session.copy_due()?)));
        groups
            .edges
            .into_iter()
            .map(|(edge, _)| {
                let frames = edge.queued();
                Queued::Edge(edge, frames)
            })
            .chain(copies)
            .collect()
    }

    /// Subscribes to this broker's subjects and serves them until shutdown.
    pub async fn serve_bus(&self) -> Result<()> {
        let bus = &self.state.bus;
        let id = broker_id(&self.state.endpoint);
        let mut own = bus.subscribe_answering(&subject::broker(&id)).await?;
        let mut broadcasts = bus.subscribe(subject::BROADCAST, None).await?;
        let mut ingress = bus
            .subscribe(subject::INGRESS, Some(subject::INGRESS_GROUP))
            .await?;
        let mut control = bus.subscribe(&subject::control(&id), None).await?;
        let pusher = self.clone();
        self.state.tasks.spawn(async move {
            loop {
                let handled = tokio::select! {
                    Some(incoming) = own.next() => pusher.on_own(incoming).await,
                    Some(bytes) = broadcasts.next() => pusher.on_broadcast(&bytes),
                    Some(bytes) = ingress.next() => pusher.on_ingress(&bytes).await,
                    Some(bytes) = control.next() => pusher.on_control(&bytes).await,
                    _ = pusher.state.shutdown.cancelled() => return,
                    else => return,
                };
                if let Err(e) = handled {
                    tracing::warn!(error = %e, "bad bus message");
                }
            }
        });
        Ok(())
    }

    /// A push another broker resolved to sessions here. A sender that waits for it (a push
    /// call, PROTOCOL.md §13.5) is answered once the edges and parked copies it went to hold
    /// it, without holding up the bus meanwhile.
    async fn on_own(&self, incoming: Incoming) -> Result<()> {
        let started = std::time::Instant::now();
        let message = decode::<bc::PushMessage>(&incoming.payload, "push message")?;
        let (groups, _, elsewhere) = self.state.registry.split(&message.uids);
        let mut queued = self.deliver(groups, &message.bodies);
        if !elsewhere.is_empty() {
            // Sessions that left since the sender read their routes (moved to another broker,
            // PROTOCOL.md §13.5): sent on to where their routes name now.
            let colors = lookup_colors(&message.color, &self.state.config.discovery.colors);
            let confirm = if incoming.reply.is_some() {
                Confirm::Held
            } else {
                Confirm::Taken
            };
            let (_, further) = self
                .resolve_and_send(&colors, &elsewhere, &message.bodies, confirm)
                .await?;
            queued.extend(further);
        }
        self.observe("bus_unicast", started);
        if let Some(reply) = incoming.reply {
            let pusher = self.clone();
            self.state.tasks.spawn(async move {
                pusher.held(queued).await;
                reply.await;
            });
        }
        Ok(())
    }

    fn on_broadcast(&self, bytes: &[u8]) -> Result<()> {
        let started = std::time::Instant::now();
        let message = decode::<bc::PushMessage>(bytes, "broadcast")?;
        self.deliver(
            self.state.registry.matching(&message.color, message.sid),
            &message.bodies,
        );
        self.observe("bus_broadcast", started);
        Ok(())
    }

    async fn on_ingress(&self, bytes: &[u8]) -> Result<()> {
        let message = decode::<bc::PushMessage>(bytes, "ingress push")?;
        if message.broadcast {
            self.broadcast(&message.color, message.sid, &message.bodies)
                .await
        } else {
            // Nobody waits for an ingress push: it is not held up for its edges (the bus loop
            // goes on with the next message).
            let started = std::time::Instant::now();
            let colors = lookup_colors(&message.color, &self.state.config.discovery.colors);
            self.resolve_and_send(&colors, &message.uids, &message.bodies, Confirm::Taken)
                .await?;
            self.observe("multicast", started);
            Ok(())
        }
    }

    async fn on_control(&self, bytes: &[u8]) -> Result<()> {
        let control = decode::<BrokerControl>(bytes, "broker control")?;
        let entry = self.state.registry.get(control.uid);
        if control.adoption_reply || !control.forwarded.is_empty() {
            // What the session's previous broker got after it moved here (PROTOCOL.md §13.5):
            // the session's actor delivers it as this broker's own, in the order it was sent.
            if let Some(entry) = entry {
                entry
                    .continuity
                    .forwarded(control.forwarded, control.adoption_reply);
            }
            return Ok(());
        }
        if !control.adopted_by.is_empty() {
            let Some(entry) = entry else {
                // No copy here any more: the adopter need not wait for one.
                session::forward(
                    &self.state,
                    &control.adopted_by,
                    control.uid,
                    Vec::new(),
                    true,
                )
                .await;
                return Ok(());
            };
            let (state, by, uid) = (self.state.clone(), control.adopted_by.clone(), control.uid);
            let command = Command::Adopted {
                by: control.adopted_by,
                after: control.adopted_after,
            };
            // Waits for room in the actor's inbox without holding up the bus; a copy that has
            // just ended answers nothing, so the adopter is told here.
            self.state.tasks.spawn(async move {
                if entry.commands.send(Box::new(command)).await.is_err() {
                    session::forward(&state, &by, uid, Vec::new(), true).await;
                }
            });
            return Ok(());
        }
        if let Some(entry) = entry {
            let _ = entry.commands.try_send(Box::new(Command::Kick {
                code: control.logout_code,
                reason: control.reason,
            }));
        }
        Ok(())
    }
}

/// The colours a push's gateway routes are looked up under (PROTOCOL.md §12): the push's own
/// colour if it names one, else every colour this broker serves (`discovery.colors`; a game
/// service's connection reaches only brokers registered under its player's colour).
fn lookup_colors<'a>(color: &'a str, served: &'a [String]) -> Vec<&'a str> {
    if color.is_empty() {
        served.iter().map(String::as_str).collect()
    } else {
        vec![color]
    }
}

fn decode<M: Message + Default>(bytes: &[u8], what: &'static str) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::Malformed {
        what,
        reason: e.to_string(),
    })
}

fn status(e: Error) -> Status {
    Status::unavailable(e.to_string())
}

#[tonic::async_trait]
impl bc::push_service_server::PushService for Pusher {
    async fn push(
        &self,
        request: Request<bc::PushRequest>,
    ) -> Result<Response<bc::PushResponse>, Status> {
        // Roma's single-player Push names no colour (PROTOCOL.md §12).
        let r = request.into_inner();
        let pushed = Pusher::multicast(self, &r.color, &[r.uid], &r.bodies)
            .await
            .map_err(status)?;
        Ok(Response::new(bc::PushResponse {
            pushed: !pushed.is_empty(),
        }))
    }

    async fn multicast(
        &self,
        request: Request<bc::MulticastRequest>,
    ) -> Result<Response<bc::MulticastResponse>, Status> {
        let r = request.into_inner();
        let pushed_uids = Pusher::multicast(self, &r.color, &r.uids, &r.bodies)
            .await
            .map_err(status)?;
        Ok(Response::new(bc::MulticastResponse { pushed_uids }))
    }

    async fn broadcast(
        &self,
        request: Request<bc::BroadcastRequest>,
    ) -> Result<Response<bc::BroadcastResponse>, Status> {
        let r = request.into_inner();
        Pusher::broadcast(self, &r.color, r.sid, &r.bodies)
            .await
            .map_err(status)?;
        Ok(Response::new(bc::BroadcastResponse {}))
    }
}

/// `gate.service.push.v1.PushService`: go-pantheon's gate API for pushing to one player (no
/// Roma code calls it; Roma uses the broadcaster API); the player is named by the
/// `x-md-global-uid` and `-color` metadata.
#[derive(Debug, Clone)]
pub struct GatePush(pub Pusher);

#[tonic::async_trait]
impl gate::push_service_server::PushService for GatePush {
    async fn push(
        &self,
        request: Request<gate::PushRequest>,
    ) -> Result<Response<gate::PushResponse>, Status> {
        let md = request.metadata();
        let text = |key: &str| md.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let uid = text("x-md-global-uid")
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| Status::invalid_argument("x-md-global-uid metadata is required"))?;
        let color = text("x-md-global-color").unwrap_or_default();
        let body = request
            .into_inner()
            .body
            .ok_or_else(|| Status::invalid_argument("body is required"))?;
        let body = bc::PushBody {
            data: body.data,
            data_version: body.data_version,
            obj: body.obj,
            r#mod: body.r#mod,
            seq: body.seq,
        };
        let pushed = self
            .0
            .multicast(&color, &[uid], &[body])
            .await
            .map_err(status)?;
        Ok(Response::new(gate::PushResponse {
            pushed: !pushed.is_empty(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::lookup_colors;

    #[test]
    fn a_push_without_colour_is_looked_up_under_every_served_colour() {
        let served = ["blue".to_owned(), "red".to_owned()];
        assert_eq!(lookup_colors("green", &served), ["green"]);
        assert_eq!(lookup_colors("", &served), ["blue", "red"]);
        assert_eq!(lookup_colors("", &[String::new()]), [""]);
    }
}
