//! Push fan-out. A push to uids is resolved through the gateway routes to the brokers holding
//! them: local sessions get it directly, each other broker gets one message on its own bus
//! subject carrying all of its uids. A broadcast is one message on the subject of every broker
//! heard on the bus ([`peers`]), which delivers it to its matching sessions; one that finds a
//! broker gone becomes a notice for that broker's sessions where they are re-attached
//! ([`crate::missed`]). Both push gRPC APIs and the bus ingress subject end up here, and so do
//! the Redis channels of go-pantheon's broadcaster ([`pubsub`]). Delivery is at most once;
//! what counts as pushed is in PROTOCOL.md.

mod peers;
mod pubsub;
mod stray;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::gate::service::push::v1 as gate;
use janus_proto::janus::internal::v1::{BrokerControl, BrokerPresence, BrokerPush};
use janus_proto::packet::Packet;
use prost::Message;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use crate::bus::{Confirm, Incoming, Sent, subject};
use crate::continuity::{self, BroadcastBody, Continuity, Forwarded};
use crate::delivery::Class;
use crate::error::{Error, Result};
use crate::missed::Notice;
use crate::registry::{Command, EdgeHandle, Groups};
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

/// Ingress pushes being handled at once; when all are taken the bus loop waits for one to
/// finish (the bus then queues, and past its queue drops, as for any slow subscriber).
const INGRESS_IN_FLIGHT: usize = 64;

/// Pushes on behalf of one broker.
#[derive(Debug, Clone)]
pub struct Pusher {
    state: Arc<BrokerState>,
    strays: Arc<stray::Strays>,
    peers: Arc<peers::Peers>,
    /// Broadcasts sent from here, for their ids.
    broadcasts: Arc<AtomicU64>,
    ingress: Arc<Semaphore>,
}

/// The class each body asked for (PROTOCOL.md §16), in the bodies' order.
fn classes(bodies: &[bc::PushBody]) -> Vec<Option<Class>> {
    bodies
        .iter()
        .map(|body| match body.delivery_class() {
            bc::DeliveryClass::Unspecified => None,
            bc::DeliveryClass::Event => Some(Class::Event),
            bc::DeliveryClass::State => Some(Class::State),
        })
        .collect()
}

fn to_packets(bodies: &[bc::PushBody]) -> Vec<Arc<Packet>> {
    bodies
        .iter()
        .map(|body| {
            Arc::new(Packet {
                data: body.data.clone(),
                data_version: body.data_version,
                obj: body.obj,
                r#mod: body.r#mod,
                seq: body.seq,
                ..Packet::default()
            })
        })
        .collect()
}

impl Pusher {
    /// A pusher for the broker of `state`.
    pub fn new(state: Arc<BrokerState>) -> Self {
        Self {
            state,
            strays: Arc::default(),
            peers: Arc::default(),
            // Counted from the process's start time in microseconds, not from 0: a broker back
            // from a restart at the same address must not reuse the ids of broadcasts other
            // brokers still remember (PROTOCOL.md §13.5: `had_broadcasts`, each one once).
            broadcasts: Arc::new(AtomicU64::new(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as u64),
            )),
            ingress: Arc::new(Semaphore::new(INGRESS_IN_FLIGHT)),
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
            let message = BrokerPush {
                bodies: bodies.to_vec(),
                uids: uids.clone(),
                color: (*color).to_owned(),
                ..BrokerPush::default()
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
            match sent? {
                Sent::Taken => {}
                Sent::NoSubscriber => {
                    // That broker is gone; its sessions are being re-attached elsewhere.
                    let queued = self.strays.wait(&owner, color, &uids, bodies);
                    self.count_waiting(&queued);
                    if queued.watch {
                        self.state.tasks.spawn(self.clone().watch_strays());
                    }
                }
                Sent::Unanswered if confirm == Confirm::Held => {
                    // Taken by a broker that did not say it holds the push (it died with it,
                    // or is stuck): not pushed, for the caller to send again.
                    self.unconfirmed(&owner);
                    continue;
                }
                Sent::Unanswered => {}
            }
            pushed.extend(uids);
        }
        Ok((pushed, queued))
    }

    /// A push sent to the broker at `owner` that it did not confirm in time.
    fn unconfirmed(&self, owner: &str) {
        tracing::warn!(
            broker = %broker_id(owner),
            "a broker took a push and did not say it holds it in time; not counted as pushed"
        );
        self.state
            .metrics
            .push_unheld
            .with_label_values(&[&broker_id(owner)])
            .inc();
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
                    let message = BrokerPush {
                        bodies: bodies.clone(),
                        uids: vec![uid],
                        color: stray.color.clone(),
                        ..BrokerPush::default()
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
                    if !matches!(result, Ok(Sent::Taken | Sent::Unanswered)) {
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

    /// Broadcasts `bodies` to every session of (`color`, `sid`) on every broker: here, and on
    /// the subject of every broker heard on the bus, each answering once its edges and parked
    /// copies hold it. The broadcast names the brokers found gone lately, and one that finds
    /// another gone is followed by a notice naming it, so their sessions get the broadcast
    /// where they are re-attached (PROTOCOL.md §13.5). Fails when a broker took it without
    /// confirming in time.
    pub async fn broadcast(&self, color: &str, sid: i64, bodies: &[bc::PushBody]) -> Result<()> {
        let started = Instant::now();
        let n = self.broadcasts.fetch_add(1, Ordering::Relaxed);
        let (peers, gone) = self.peers.known(started);
        let peers: Vec<String> = peers
            .into_iter()
            .filter(|peer| *peer != self.state.endpoint)
            .collect();
        let push = BrokerPush {
            bodies: bodies.to_vec(),
            broadcast: true,
            color: color.to_owned(),
            sid,
            broadcast_id: format!("{}/{n}", broker_id(&self.state.endpoint)),
            missed_by: gone,
            ..BrokerPush::default()
        };
        let packets = to_packets(bodies);
        let mut queued = self.deliver_broadcast(&push, &packets);
        if !push.missed_by.is_empty() {
            queued.extend(self.on_notice(&push, packets.clone()));
        }
        let sent = self.send_to(&peers, &push).await;
        let (mut missed_by, mut unanswered, mut failed) = (Vec::new(), 0, None);
        let mut takers = Vec::new();
        for (peer, sent) in peers.into_iter().zip(sent) {
            match sent {
                Ok(Sent::Taken) => takers.push(peer),
                Ok(Sent::NoSubscriber) => {
                    self.peers.gone(&peer, Instant::now());
                    missed_by.push(peer);
                }
                Ok(Sent::Unanswered) => {
                    self.unconfirmed(&peer);
                    unanswered += 1;
                    takers.push(peer);
                }
                Err(e) => failed = Some(e),
            }
        }
        if !missed_by.is_empty() {
            tracing::info!(
                brokers = missed_by.len(),
                "a broadcast found brokers gone; their sessions get it where they are re-attached"
            );
            self.state
                .metrics
                .missed_broadcasts
                .with_label_values(&["noticed"])
                .inc_by(missed_by.len() as u64);
            let notice = BrokerPush {
                broadcast: false,
                missed_by,
                ..push
            };
            queued.extend(self.on_notice(&notice, packets));
            for sent in self.send_to(&takers, &notice).await {
                if let Err(e) = sent {
                    failed = Some(e);
                }
            }
        }
        self.observe("broadcast", started);
        self.held(queued).await;
        if let Some(e) = failed {
            return Err(e);
        }
        if unanswered > 0 {
            return Err(Error::Bus(format!(
                "{unanswered} broker(s) took the broadcast without confirming it in time; \
                 their sessions may or may not have it"
            )));
        }
        Ok(())
    }

    /// Sends `push` to the brokers at `peers`, all at once, each answering once it holds it.
    async fn send_to(&self, peers: &[String], push: &BrokerPush) -> Vec<Result<Sent>> {
        let payload = Bytes::from(push.encode_to_vec());
        let sends = peers.iter().map(|peer| {
            let to = subject::broker(&broker_id(peer));
            let payload = payload.clone();
            async move { self.state.bus.send(&to, payload, Confirm::Held).await }
        });
        futures_util::future::join_all(sends).await
    }

    /// Delivers broadcast `push` to the matching sessions here, noting that it did.
    fn deliver_broadcast(&self, push: &BrokerPush, packets: &[Arc<Packet>]) -> Vec<Queued> {
        let (groups, count) = self.state.registry.matching(&push.color, push.sid);
        let classes = classes(&push.bodies);
        if push.broadcast_id.is_empty() {
            return self.deliver_packets(groups, packets, &classes, None);
        }
        self.state.missed.handled(
            &push.broadcast_id,
            (&push.color, push.sid),
            count,
            Instant::now(),
        );
        self.deliver_packets(
            groups,
            packets,
            &classes,
            Some(&Arc::from(push.broadcast_id.as_str())),
        )
    }

    /// A notice (PROTOCOL.md §13.5): delivers the broadcast to the sessions adopted here from
    /// the brokers it names that did not get it, and keeps it for those adopted later.
    fn on_notice(&self, push: &BrokerPush, packets: Vec<Arc<Packet>>) -> Vec<Queued> {
        let notice = Notice {
            id: push.broadcast_id.clone(),
            packets,
            color: push.color.clone(),
            sid: push.sid,
            missed_by: push.missed_by.clone(),
        };
        let (notice, uids, forgot) = self.state.missed.notice(notice, Instant::now());
        let metrics = &self.state.metrics.missed_broadcasts;
        if forgot {
            metrics.with_label_values(&["forgotten"]).inc();
        }
        let (groups, here, _) = self.state.registry.split(&uids);
        metrics
            .with_label_values(&["delivered"])
            .inc_by(here.len() as u64);
        // Kept without the classes its push asked for: its modules' rules decide.
        self.deliver_packets(
            groups,
            &notice.packets,
            &[],
            Some(&Arc::from(notice.id.as_str())),
        )
    }

    /// Queues `bodies` for `groups`; returns each edge queued with its link's frame count then.
    fn deliver(&self, groups: Groups, bodies: &[bc::PushBody]) -> Vec<Queued> {
        self.deliver_packets(groups, &to_packets(bodies), &classes(bodies), None)
    }

    /// [`Pusher::deliver`] for packets, the bodies of broadcast `broadcast` (its id) if they are
    /// a broadcast's (a session moving between brokers takes each body once, PROTOCOL.md
    /// §13.5), each with the class its body asked for at the same place of `classes`, if it did
    /// (PROTOCOL.md §16).
    fn deliver_packets(
        &self,
        groups: Groups,
        packets: &[Arc<Packet>],
        classes: &[Option<Class>],
        broadcast: Option<&Arc<str>>,
    ) -> Vec<Queued> {
        let dropped = || {
            self.state
                .metrics
                .push_dropped
                .with_label_values(&["edge_queue_full"])
                .inc();
        };
        for (i, packet) in packets.iter().enumerate() {
            let class = classes.get(i).copied().flatten();
            let body = broadcast.map(|id| BroadcastBody {
                id: id.clone(),
                body: i as u32,
            });
            let broadcast = body.as_ref();
            for (edge, sessions) in &groups.edges {
                let sent = continuity::multicast(edge, sessions, packet, broadcast, class);
                if sent.dropped > 0 {
                    dropped();
                    tracing::warn!(edge = %edge.edge_id, sessions = sent.dropped, "edge queue full; push dropped");
                }
                for moved in sent.moved {
                    if !moved.try_deliver(packet, broadcast, class) {
                        dropped();
                    }
                }
            }
            for parked in &groups.parked {
                parked.try_deliver(packet, broadcast, class);
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

    /// Subscribes to this broker's subjects, announces it on the presence subject, and serves
    /// them until shutdown.
    pub async fn serve_bus(&self) -> Result<()> {
        let bus = &self.state.bus;
        let id = broker_id(&self.state.endpoint);
        let mut own = bus.subscribe_answering(&subject::broker(&id), None).await?;
        let mut presence = bus.subscribe(subject::PRESENCE, None).await?;
        let mut ingress = bus
            .subscribe_answering(subject::INGRESS, Some(subject::INGRESS_GROUP))
            .await?;
        let mut control = bus.subscribe(&subject::control(&id), None).await?;
        self.state.tasks.spawn(self.clone().announce());
        let pusher = self.clone();
        self.state.tasks.spawn(async move {
            loop {
                let handled = tokio::select! {
                    Some(incoming) = own.next() => pusher.on_own(incoming).await,
                    Some(bytes) = presence.next() => pusher.on_presence(&bytes).await,
                    Some(incoming) = ingress.next() => pusher.on_ingress(incoming).await,
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

    /// Publishes this broker's presence every [`peers::ANNOUNCE_EVERY`] until shutdown.
    async fn announce(self) {
        let presence = BrokerPresence {
            endpoint: self.state.endpoint.clone(),
        };
        let payload = Bytes::from(presence.encode_to_vec());
        let mut tick = tokio::time::interval(peers::ANNOUNCE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.state.shutdown.cancelled() => return,
            }
            if let Err(e) = self
                .state
                .bus
                .publish(subject::PRESENCE, payload.clone())
                .await
            {
                tracing::debug!(error = %e, "could not announce this broker");
            }
        }
    }

    /// Another broker's presence; one not known yet (a broker that just started) is answered
    /// with this broker's at once, so it knows its peers before its first broadcast.
    async fn on_presence(&self, bytes: &[u8]) -> Result<()> {
        let presence = decode::<BrokerPresence>(bytes, "broker presence")?;
        if presence.endpoint == self.state.endpoint
            || !self.peers.heard(&presence.endpoint, Instant::now())
        {
            return Ok(());
        }
        let own = BrokerPresence {
            endpoint: self.state.endpoint.clone(),
        };
        self.state
            .bus
            .publish(subject::PRESENCE, Bytes::from(own.encode_to_vec()))
            .await
    }

    /// A push another broker sent here: pushes resolved to sessions here, a broadcast, or a
    /// broadcast's notice. A sender that waits for it (a push call, PROTOCOL.md §13.5) is
    /// answered once the edges and parked copies it went to hold it, without holding up the
    /// bus meanwhile.
    async fn on_own(&self, incoming: Incoming) -> Result<()> {
        let started = std::time::Instant::now();
        let message = decode::<BrokerPush>(&incoming.payload, "push message")?;
        let noticed = !message.missed_by.is_empty();
        let broadcast_packets = if message.broadcast || noticed {
            to_packets(&message.bodies)
        } else {
            Vec::new()
        };
        let mut queued = if message.broadcast {
            let queued = self.deliver_broadcast(&message, &broadcast_packets);
            self.observe("bus_broadcast", started);
            queued
        } else if noticed {
            Vec::new()
        } else {
            let (groups, _, elsewhere) = self.state.registry.split(&message.uids);
            let mut queued = self.deliver(groups, &message.bodies);
            if !elsewhere.is_empty() {
                // Sessions that left since the sender read their routes (moved to another
                // broker, PROTOCOL.md §13.5): sent on to where their routes name now.
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
            queued
        };
        if noticed {
            // A broadcast naming brokers gone, or the notice after one (PROTOCOL.md §13.5).
            queued.extend(self.on_notice(&message, broadcast_packets));
        }
        if let Some(reply) = incoming.reply {
            let pusher = self.clone();
            self.state.tasks.spawn(async move {
                pusher.held(queued).await;
                reply(Bytes::new()).await;
            });
        }
        Ok(())
    }

    /// A broadcast go-pantheon's broadcaster published on Redis, which every broker receives:
    /// to the matching sessions here only.
    fn on_redis_broadcast(&self, bytes: &[u8]) -> Result<()> {
        let started = std::time::Instant::now();
        let message = decode::<bc::PushMessage>(bytes, "broadcast")?;
        self.deliver(
            self.state.registry.matching(&message.color, message.sid).0,
            &message.bodies,
        );
        self.observe("bus_broadcast", started);
        Ok(())
    }

    /// A push from the ingress subject (PROTOCOL.md §12), handled beside the bus loop (at most
    /// [`INGRESS_IN_FLIGHT`] at once). A publisher that asked for `Janus-Confirm: held` is
    /// answered as a push call would be: once the push is held, with the uids pushed
    /// (`MulticastResponse`; empty for a broadcast), and not at all if it failed.
    async fn on_ingress(&self, incoming: Incoming) -> Result<()> {
        let message = decode::<bc::PushMessage>(&incoming.payload, "ingress push")?;
        let Ok(permit) = self.ingress.clone().acquire_owned().await else {
            return Ok(());
        };
        let pusher = self.clone();
        self.state.tasks.spawn(async move {
            let _permit = permit;
            let answer = if message.broadcast {
                pusher
                    .broadcast(&message.color, message.sid, &message.bodies)
                    .await
                    .map(|()| Bytes::new())
            } else if incoming.reply.is_some() {
                pusher
                    .multicast(&message.color, &message.uids, &message.bodies)
                    .await
                    .map(|pushed_uids| {
                        Bytes::from(bc::MulticastResponse { pushed_uids }.encode_to_vec())
                    })
            } else {
                pusher
                    .push_unanswered(&message)
                    .await
                    .map(|()| Bytes::new())
            };
            match (answer, incoming.reply) {
                (Ok(answer), Some(reply)) => reply(answer).await,
                (Ok(_), None) => {}
                (Err(e), _) => tracing::warn!(error = %e, "ingress push failed"),
            }
        });
        Ok(())
    }

    /// A push nobody waits for (an ingress publish, go-pantheon's Redis channel for this
    /// gateway): sent on to other brokers without waiting for their edges.
    async fn push_unanswered(&self, message: &bc::PushMessage) -> Result<()> {
        let started = std::time::Instant::now();
        let colors = lookup_colors(&message.color, &self.state.config.discovery.colors);
        self.resolve_and_send(&colors, &message.uids, &message.bodies, Confirm::Taken)
            .await?;
        self.observe("multicast", started);
        Ok(())
    }

    async fn on_control(&self, bytes: &[u8]) -> Result<()> {
        let control = decode::<BrokerControl>(bytes, "broker control")?;
        let entry = self.state.registry.get(control.uid);
        if control.adoption_reply || !control.forwarded.is_empty() {
            // What the session's previous broker got after it moved here (PROTOCOL.md §13.5):
            // the session's actor delivers it as this broker's own, in the order it was sent.
            if let Some(entry) = entry {
                let forwarded = Forwarded {
                    packets: control.forwarded,
                    broadcasts: control.forwarded_broadcasts,
                    bodies: control.forwarded_bodies,
                    had: control.had_broadcasts,
                };
                entry
                    .continuity
                    .forwarded(forwarded, control.adoption_reply);
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
                    Forwarded::default(),
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
                    session::forward(&state, &by, uid, Forwarded::default(), true).await;
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

/// The gate push call's metadata naming its body's delivery class (PROTOCOL.md §16).
pub const DELIVERY_CLASS_HEADER: &str = "x-md-janus-delivery-class";

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
        // Janus's own, optional (PROTOCOL.md §16): go-pantheon's gate push body has no field
        // for it.
        let delivery_class = match text(DELIVERY_CLASS_HEADER).as_deref() {
            None => bc::DeliveryClass::Unspecified,
            Some("state") => bc::DeliveryClass::State,
            Some("event") => bc::DeliveryClass::Event,
            Some(other) => {
                return Err(Status::invalid_argument(format!(
                    "{DELIVERY_CLASS_HEADER} is \"state\" or \"event\", not {other:?}"
                )));
            }
        };
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
            delivery_class: delivery_class.into(),
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
