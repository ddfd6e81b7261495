//! What makes a session outlive its connection and its edge (PROTOCOL.md §13): where the session
//! is attached (an edge and the session's id there, or nowhere: parked), the server packets
//! counted so far with the unacknowledged tail, the next client index, the ticket and resume key
//! a resume must present, and the client's rate buckets. One per broker session.
//!
//! Every server packet for a session is recorded here and queued for its edge under that edge's
//! order lock ([`EdgeHandle::order`]), so the edge sees a session's packets in exactly the order
//! they were counted, whoever sent them (a tunnel, a push, the session itself). A resume is
//! decided here too, under the same locks: the first request with the current ticket and a
//! valid proof moves the session to its edge, and the grant with the packets the client lacks
//! is queued there before anything newer.

use std::collections::VecDeque;
use std::sync::Arc;

use janus_proto::janus::internal::v1::{
    BrokerFrame, Continuity as Given, Deliver, HandedOver, RateState, Release, ResumeGranted,
    SessionOpen, broker_frame,
};
use janus_proto::packet::Packet;
use janus_protocol::handshake::{Redeemable, ResumeClaim, START_INDEX};
use janus_protocol::system;
use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use crate::delivery::{Class, Delivery, Held, Stage};
use crate::registry::{EdgeHandle, Permit};

/// Where a session's connection is: an edge, and the session's id on it.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// The edge holding the connection.
    pub edge: Arc<EdgeHandle>,
    /// The session's id on that edge.
    pub session_id: u64,
}

impl Attachment {
    fn is(&self, edge: &EdgeHandle, session_id: u64) -> bool {
        self.session_id == session_id && std::ptr::eq(Arc::as_ptr(&self.edge), edge)
    }
}

/// One session's continuity; see the module doc.
#[derive(Debug)]
pub struct Continuity {
    state: Mutex<State>,
    /// The session as its edge opened it (its identity, for a resume's grant).
    open: SessionOpen,
    /// The server packets counted when it came here (what an edge's continuity said).
    started: u64,
    /// Cancelled when the client can no longer be made whole and the session must end:
    /// a packet forgotten while it was parked (`resume_overflow`), or a resume that found
    /// a gap (`resume_gap`); [`Continuity::lost_reason`] says which.
    pub lost: CancellationToken,
    /// Notified when the broker parked the session itself (its edge's queue was full).
    pub parked: tokio::sync::Notify,
    /// Notified when a packet is kept while detached: the parked copy in the route store is
    /// out of date.
    pub changed: tokio::sync::Notify,
    /// Notified when packets wait in line or in the stage for the session's actor to deliver
    /// them ([`Continuity::drain`], [`Continuity::release`]).
    pub waiting: tokio::sync::Notify,
    /// The server-packet count the parked copy in the route store holds (PROTOCOL.md §13.5).
    copied: tokio::sync::watch::Sender<u64>,
    /// The delivery classes (PROTOCOL.md §16).
    delivery: Option<Arc<Delivery>>,
}

#[derive(Debug)]
struct State {
    at: Option<Attachment>,
    /// `None` for a session whose client holds no ticket: nothing is counted or kept.
    redeemable: Option<Redeemable>,
    /// The ticket the last resume spent, until the client shows it got the grant's reply (a
    /// packet or a progress report over its new connection): a reply lost on the way leaves
    /// the client with that ticket, and its retry, once that connection is gone, must still
    /// find the session (§13.3).
    unconfirmed: Option<Redeemable>,
    window_secs: u32,
    sent: u64,
    kept: VecDeque<Arc<Packet>>,
    capacity: usize,
    next_index: i32,
    rate: Option<RateState>,
    ended: bool,
    lost: Option<&'static str>,
    /// Handed over to another broker (PROTOCOL.md §13.5): packets are counted and kept from
    /// then on even without a ticket, for the adopter.
    moving: bool,
    /// The count up to which packets were forwarded to the adopter (0: none yet, so the first
    /// forward starts from the adopter's own count).
    forwarded: u64,
    /// The count when the session was handed over: what the edge holds.
    moved_at: u64,
    /// Moved here from a live broker: the session's own packets wait in `line` until that
    /// broker's adoption reply puts what it kept in front of them (PROTOCOL.md §13.5).
    holding: bool,
    /// Packets waiting, in order, to be delivered by the session's actor: held behind the
    /// adoption reply, and everything after them until the line is empty, so nothing
    /// overtakes them; each with the broadcast body it is, if it is one. At most [`LINE`].
    line: VecDeque<(Arc<Packet>, Option<BroadcastBody>)>,
    /// The broadcast packets kept while detached, by their count, with the broadcast body each
    /// is: what an adopter is told with them ([`Forwarded::broadcasts`], [`Forwarded::bodies`]).
    tagged: VecDeque<(u64, BroadcastBody)>,
    /// Re-attached from another broker: the broadcasts the session got here or from that
    /// broker, so that it takes each once ([`ONCE_FOR`]); `None` after that.
    once: Option<Once>,
    /// The edge says the client reads slower than its packets come (PROTOCOL.md §16).
    backlogged: bool,
    /// Packets waiting, uncounted, for a backlog to clear or a rate cap (PROTOCOL.md §16);
    /// allocated while something waits or a paced key went out lately.
    stage: Option<Box<Stage>>,
}

/// The broadcasts a re-attached session got (PROTOCOL.md §13.5): for the instant of its
/// adoption both its brokers may deliver the same broadcast to it, the new one itself and the
/// old one, in what it forwards or before the move (then it is in the tail the edge handed over).
#[derive(Debug)]
struct Once {
    until: tokio::time::Instant,
    /// Broadcast bodies taken here, oldest first; at most [`LINE`].
    ids: VecDeque<BroadcastBody>,
    /// Broadcast ids the previous broker says the session got there (its adoption reply), oldest
    /// first; at most [`LINE`]. This broker's own copy of any of their bodies is not delivered;
    /// one forwarded later by that broker is (it kept it after the move, so the edge never had
    /// it).
    had: VecDeque<Arc<str>>,
}

/// How long a re-attached session takes each broadcast only once: its previous broker's
/// adoption reply may take two seconds, the old copy forwards for two more, and a broadcast's
/// request to either broker may take three (the bus's send timeout).
const ONCE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Packets for an adopter (PROTOCOL.md §13.5), oldest first, with the broadcast body each is:
/// `BrokerControl.forwarded`, `forwarded_broadcasts` and `forwarded_bodies`; and, in an adoption
/// reply, the broadcasts the session got at the old broker (`had_broadcasts`).
#[derive(Debug, Default, PartialEq)]
pub struct Forwarded {
    /// The packets.
    pub packets: Vec<Packet>,
    /// One id per packet, empty for one that is not a broadcast's; empty when none is.
    pub broadcasts: Vec<String>,
    /// Each packet's place among its broadcast's bodies ([`BroadcastBody::body`]), alongside
    /// `broadcasts`; 0 where this is shorter.
    pub bodies: Vec<u32>,
    /// The broadcasts the session got at the old broker: the adopter's own copies of them are
    /// not delivered.
    pub had: Vec<String>,
}

impl Forwarded {
    /// Whether there is no packet.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }
}

/// How many packets may wait in a session's line ([`State::line`]). When it is full a
/// resumable session is lost (`resume_overflow`: never a silent hole); another session's
/// packet is dropped and counted as for a full edge queue.
const LINE: usize = 1024;

/// Why a resume was refused (a close reason of PROTOCOL.md §9).
pub type Refusal = &'static str;

impl Continuity {
    /// The continuity of a session `open` brings to `at` (or, restored from its parked copy,
    /// to nowhere yet), keeping at most `capacity` packets.
    pub fn new(at: Option<Attachment>, open: &SessionOpen, capacity: usize) -> Self {
        let given = open.continuity.clone();
        let (redeemable, window_secs, sent, kept, next_index, rate) = match given {
            Some(c) => {
                let key = <[u8; 32]>::try_from(c.resume_key.as_slice()).ok();
                let tail: VecDeque<Arc<Packet>> = c.tail.into_iter().map(Arc::new).collect();
                (
                    key.map(|key| Redeemable {
                        ticket: c.ticket,
                        key,
                    }),
                    c.window_secs,
                    c.sent.max(tail.len() as u64),
                    tail,
                    if c.next_index == 0 {
                        START_INDEX
                    } else {
                        c.next_index
                    },
                    c.rate,
                )
            }
            None => (None, 0, 0, VecDeque::new(), START_INDEX, None),
        };
        Self {
            started: sent,
            state: Mutex::new(State {
                at,
                redeemable,
                unconfirmed: None,
                window_secs,
                sent,
                kept,
                capacity: capacity.max(1),
                next_index,
                rate,
                ended: false,
                lost: None,
                moving: false,
                forwarded: 0,
                moved_at: 0,
                // A re-attached session's own packets wait until its claim decides what goes
                // before them (PROTOCOL.md §13.5).
                holding: open.reattach,
                line: VecDeque::new(),
                tagged: VecDeque::new(),
                once: open.reattach.then(|| Once {
                    until: tokio::time::Instant::now() + ONCE_FOR,
                    ids: VecDeque::new(),
                    had: VecDeque::new(),
                }),
                backlogged: false,
                stage: None,
            }),
            open: SessionOpen {
                continuity: None,
                ..open.clone()
            },
            lost: CancellationToken::new(),
            parked: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
            waiting: tokio::sync::Notify::new(),
            copied: tokio::sync::watch::channel(0).0,
            delivery: None,
        }
    }

    /// The continuity with `delivery`'s classes (PROTOCOL.md §16); without this every packet
    /// goes out as it comes.
    pub fn with_delivery(mut self, delivery: &Arc<Delivery>) -> Self {
        self.delivery = Some(delivery.clone());
        self
    }

    /// The edge says the client at `session_id` is backlogged, or has caught up: the stage
    /// holds its packets, or releases them.
    pub fn backlog(&self, edge: &EdgeHandle, session_id: u64, backlogged: bool) {
        let mut state = self.lock();
        if state.at.as_ref().is_some_and(|a| a.is(edge, session_id)) {
            state.backlogged = backlogged;
            if !backlogged && state.stage.is_some() {
                self.waiting.notify_one();
            }
        }
    }

    /// Sends what the stage may send now, oldest first, counting each as it goes; returns when
    /// the next paced packet is due, if one waits. The session's actor calls this when
    /// [`Continuity::waiting`] is notified and when that time comes.
    pub async fn release(&self) -> Option<tokio::time::Instant> {
        // Nothing waits: no room on the edge is needed.
        self.lock().stage.as_ref()?;
        loop {
            let at = self.attachment()?;
            // `Some(due)` once nothing more may go now.
            let step = self.with_room(&at, |state, permit| {
                if state.backlogged {
                    return Some(None);
                }
                let now = tokio::time::Instant::now();
                let Some(stage) = state.stage.as_mut() else {
                    return Some(None);
                };
                let Some(waiting) = stage.next(now) else {
                    let due = stage.next_due();
                    if stage.is_idle(now) {
                        state.stage = None;
                    }
                    return Some(due);
                };
                if state.counts(&waiting.packet) {
                    state.record(self, &waiting.packet, waiting.broadcast.as_ref());
                }
                permit.send(deliver_frame(vec![at.session_id], &waiting.packet));
                None
            });
            if let Some(Some(due)) = step.await {
                return due;
            }
        }
    }

    /// Waits for room on `at`'s edge, then runs `step` under the edge's order lock and the
    /// session's lock if the session is still at `at`; `None` when it is not, or when that
    /// edge's link is closed (its reader is about to park or end the session): look again.
    async fn with_room<R>(
        &self,
        at: &Attachment,
        step: impl FnOnce(&mut State, Permit<'_>) -> R,
    ) -> Option<R> {
        let Some(permit) = at.edge.reserve().await else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            return None;
        };
        let _order = at.edge.order();
        let mut state = self.lock();
        if !state
            .at
            .as_ref()
            .is_some_and(|a| a.is(&at.edge, at.session_id))
        {
            return None;
        }
        Some(step(&mut state, permit))
    }

    /// The parked copy now in the route store holds the first `sent` server packets.
    pub fn copied(&self, sent: u64) {
        self.copied.send_if_modified(|n| {
            let more = sent > *n;
            *n = (*n).max(sent);
            more
        });
    }

    /// The count a parked copy must reach to hold every packet kept so far, while the session
    /// is parked with a ticket (then its copy is what outlives this broker); `None` otherwise
    /// (attached: its edge holds the tail; handed over: the adopter gets what is kept).
    pub fn copy_due(&self) -> Option<u64> {
        let state = self.lock();
        let protects = state.at.is_none() && state.redeemable.is_some();
        (protects && !state.moving && !state.ended).then_some(state.sent)
    }

    /// Whether the parked copy lacks packets kept since it was written.
    pub fn copy_behind(&self) -> bool {
        self.copy_due()
            .is_some_and(|sent| sent > *self.copied.borrow())
    }

    /// Waits until the parked copy holds the first `sent` packets, for at most `wait`.
    pub async fn copy_holds(&self, sent: u64, wait: std::time::Duration) -> bool {
        let mut copied = self.copied.subscribe();
        let read = async { copied.wait_for(|n| *n >= sent).await.is_ok() };
        tokio::time::timeout(wait, read).await.unwrap_or(false)
    }

    /// What another broker needs to take the session over while it is parked (PROTOCOL.md
    /// §13.5): its opening with the whole continuity. `None` unless parked with a ticket.
    pub fn snapshot(&self) -> Option<SessionOpen> {
        let state = self.lock();
        let redeemable = state.redeemable.as_ref()?;
        if state.at.is_some() || state.ended {
            return None;
        }
        Some(SessionOpen {
            reattach: true,
            // Taken from a copy, not handed over by a live broker.
            handed_over: false,
            continuity: Some(Given {
                resume_key: redeemable.key.to_vec(),
                ticket: redeemable.ticket.clone(),
                window_secs: state.window_secs,
                sent: state.sent,
                tail: state.kept.iter().map(|p| (**p).clone()).collect(),
                next_index: state.next_index,
                rate: state.rate,
            }),
            ..self.open.clone()
        })
    }

    /// Why the session was lost, once [`Continuity::lost`] is cancelled.
    pub fn lost_reason(&self) -> &'static str {
        self.lock().lost.unwrap_or("resume_overflow")
    }

    /// The session as its edge opened it.
    pub fn open(&self) -> &SessionOpen {
        &self.open
    }

    /// The server packets counted when the session came here: where an adopter starts
    /// (PROTOCOL.md §13.5), whatever it counted since.
    pub fn started(&self) -> u64 {
        self.started
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Where the session is now; `None` while parked.
    pub fn attachment(&self) -> Option<Attachment> {
        self.lock().at.clone()
    }

    /// Whether the session is attached to `session_id` on `edge`.
    pub fn is_at(&self, edge: &EdgeHandle, session_id: u64) -> bool {
        self.lock()
            .at
            .as_ref()
            .is_some_and(|a| a.is(edge, session_id))
    }

    /// Whether the client holds a ticket.
    pub fn resumable(&self) -> bool {
        self.lock().redeemable.is_some()
    }

    /// Seconds a parked session waits for its client.
    pub fn window_secs(&self) -> u32 {
        self.lock().window_secs
    }

    /// Server packets counted and packets kept, for tests and stats.
    pub fn counts(&self) -> (u64, usize) {
        let state = self.lock();
        (state.sent, state.kept.len())
    }

    /// The edge forwarded client packet `index` from `session_id`: false when that is not
    /// where the session is any more (a connection it moved away from), and the packet is
    /// dropped; the client sends it again after its resume.
    pub fn took(&self, edge: &EdgeHandle, session_id: u64, index: i32) -> bool {
        let mut state = self.lock();
        if !state.at.as_ref().is_some_and(|a| a.is(edge, session_id)) {
            return false;
        }
        state.unconfirmed = None;
        state.advance(index.wrapping_add(1));
        true
    }

    /// The edge reports the client's acknowledgement and the next index it expects.
    pub fn progress(&self, edge: &EdgeHandle, session_id: u64, received: u64, next_index: i32) {
        let mut state = self.lock();
        if state.at.as_ref().is_some_and(|a| a.is(edge, session_id)) {
            state.unconfirmed = None;
            state.ack(received);
            state.advance(next_index);
        }
    }

    /// The connection at `session_id` on `edge` is gone: the session parks, if it is still
    /// there and its client holds a ticket. `rate` is the client's buckets, when the edge said.
    pub fn park(&self, edge: &EdgeHandle, session_id: u64, rate: Option<RateState>) -> bool {
        let mut state = self.lock();
        if state.redeemable.is_none() || !state.at.as_ref().is_some_and(|a| a.is(edge, session_id))
        {
            return false;
        }
        state.at = None;
        state.unstage(self);
        if rate.is_some() {
            state.rate = rate;
        }
        true
    }

    /// The edge moves the connection at `session_id` on `edge` to another broker: nothing more
    /// is queued there, and `HandedOver` is queued after the last packet that was, so the edge
    /// holds every packet counted so far when it opens the session elsewhere. What arrives from
    /// now on is kept for the adopter. False when the session is not there.
    pub async fn hand_over(&self, edge: &EdgeHandle, session_id: u64) -> bool {
        let Some(permit) = edge.reserve().await else {
            return false;
        };
        let _order = edge.order();
        let mut state = self.lock();
        if !state.at.as_ref().is_some_and(|a| a.is(edge, session_id)) {
            return false;
        }
        state.at = None;
        state.moving = true;
        state.moved_at = state.sent;
        // What waited for the client is the adopter's, after what the edge holds.
        state.unstage(self);
        permit.send(BrokerFrame {
            kind: Some(broker_frame::Kind::HandedOver(HandedOver { session_id })),
        });
        true
    }

    /// The packets kept after server packet `after` (the adopter's starting point) not yet
    /// taken, oldest first; the next call returns only newer ones. Nothing while attached.
    pub fn take_after(&self, after: u64) -> Forwarded {
        self.lock().take_after(after)
    }

    /// Ends a copy another broker adopted from its packet `after` on: nothing more is kept for
    /// it, and what was kept since the last [`Continuity::take_after`] is returned in the same
    /// step, so no packet falls between the last forward and the end.
    pub fn leave(&self, after: u64) -> Forwarded {
        let mut state = self.lock();
        let taken = state.take_after(after);
        state.ended = true;
        taken
    }

    /// The session has ended: nothing more is queued for it. Returns where it was.
    pub fn end(&self) -> Option<Attachment> {
        let mut state = self.lock();
        state.ended = true;
        state.at.take()
    }

    /// Queues `packet` for the client, waiting for room on its edge; recorded while parked,
    /// and behind the packets waiting in line, if any. False once the session has ended.
    pub async fn deliver(&self, packet: Packet) -> bool {
        self.put(packet, None, false).await
    }

    /// [`Continuity::deliver`] for a packet that is `broadcast`'s body, if it is one; `first`
    /// for the packet at the head of the line, which goes out now.
    async fn put(&self, packet: Packet, broadcast: Option<BroadcastBody>, first: bool) -> bool {
        // Taken by the step that queues or keeps it, once.
        let mut packet = Some(packet);
        loop {
            let Some(at) = self.attachment() else {
                let mut state = self.lock();
                if state.ended {
                    return false;
                }
                let Some(kept) = packet.take() else {
                    return true;
                };
                if !first && state.wait_in_line(self, &kept, broadcast.as_ref()) {
                    return true;
                }
                if state.at.is_none() {
                    state.record(self, &Arc::new(kept), broadcast.as_ref());
                    return true;
                }
                packet = Some(kept);
                continue;
            };
            let queued = self.with_room(&at, |state, permit| {
                let Some(packet) = packet.take() else {
                    return;
                };
                if !first && state.wait_in_line(self, &packet, broadcast.as_ref()) {
                    return;
                }
                let shared = || Arc::new(packet.clone());
                if state.stages(self, &packet, shared, broadcast.as_ref(), None) {
                    return;
                }
                if state.counts(&packet) {
                    state.record(self, &Arc::new(packet.clone()), broadcast.as_ref());
                }
                permit.send(BrokerFrame {
                    kind: Some(broker_frame::Kind::Deliver(Deliver {
                        session_ids: vec![at.session_id],
                        packet: Some(packet),
                    })),
                });
            });
            if queued.await.is_some() {
                return true;
            }
        }
    }

    /// Queues `packet` (of `broadcast`, if it is a broadcast's) if the session's edge has room
    /// now, or keeps it while parked; false if it was dropped (a full edge queue) or the
    /// session has ended.
    /// `class` is what the push asked for (PROTOCOL.md §16), if it did.
    pub fn try_deliver(
        self: &Arc<Self>,
        packet: &Arc<Packet>,
        broadcast: Broadcast<'_>,
        class: Option<Class>,
    ) -> bool {
        match self.attachment() {
            Some(at) => {
                let sessions = std::slice::from_ref(self);
                multicast(&at.edge, sessions, packet, broadcast, class).delivered == 1
            }
            None => {
                let mut state = self.lock();
                let parked = state.at.is_none() && !state.ended;
                if parked
                    && state.first_time(broadcast)
                    && !state.wait_in_line(self, packet, broadcast)
                {
                    state.record(self, packet, broadcast);
                }
                parked
            }
        }
    }

    /// Packets for the session from its previous broker (PROTOCOL.md §13.5), oldest first:
    /// with `reply`, what that broker kept until the adoption, which goes before the packets
    /// held for it; otherwise ones that reached it later, after everything else. The session's
    /// actor delivers them ([`Continuity::drain`]). A broadcast the session got here as well
    /// is taken once: in the previous broker's place when this broker's copy still waits
    /// behind the reply, else where it already is. One the reply says the session had there
    /// (`had`, given to its edge before the move) is not delivered by this broker: its copy
    /// waiting behind the reply is dropped, and a later one too.
    pub fn forwarded(&self, forwarded: Forwarded, reply: bool) {
        let mut state = self.lock();
        if state.ended {
            return;
        }
        let front = reply && state.holding;
        let bodies = forwarded.bodies.into_iter().chain(std::iter::repeat(0));
        let ids = forwarded.broadcasts.into_iter().zip(bodies).map(Some);
        let mut packets = VecDeque::with_capacity(forwarded.packets.len());
        for (packet, id) in forwarded
            .packets
            .into_iter()
            .zip(ids.chain(std::iter::repeat(None)))
        {
            let id = id
                .filter(|(id, _)| !id.is_empty())
                .map(|(id, body)| BroadcastBody {
                    id: Arc::from(id),
                    body,
                });
            if !state.take_once(id.as_ref(), false) {
                let held = state
                    .line
                    .iter()
                    .position(|(_, b)| b.is_some() && *b == id)
                    .filter(|_| front);
                let Some(held) = held else { continue };
                state.line.remove(held);
            }
            packets.push_back((Arc::new(packet), id));
        }
        for id in forwarded.had {
            state.had(Arc::from(id), front);
        }
        if front {
            state.holding = false;
            let held = std::mem::take(&mut state.line);
            packets.extend(held);
            state.line = packets;
        } else {
            state.line.extend(packets);
        }
        if !state.holding && !state.line.is_empty() {
            self.waiting.notify_one();
        }
    }

    /// Whether the session's own packets wait for its previous broker's adoption reply.
    pub fn holding(&self) -> bool {
        self.lock().holding
    }

    /// Stops waiting for the adoption reply (none is coming: no broker had the session, or it
    /// did not answer in time); what was held goes out in order.
    pub fn stop_holding(&self) {
        let mut state = self.lock();
        state.holding = false;
        if !state.line.is_empty() {
            self.waiting.notify_one();
        }
    }

    /// Delivers the packets waiting in line, oldest first, until the line is empty (new ones
    /// join it meanwhile, behind). The session's actor calls this when [`Continuity::waiting`]
    /// is notified.
    pub async fn drain(&self) {
        loop {
            let head = {
                let state = self.lock();
                if state.holding {
                    return;
                }
                match state.line.front() {
                    Some((head, broadcast)) => ((**head).clone(), broadcast.clone()),
                    None => return,
                }
            };
            // The head stays in line while it goes out, so nothing overtakes it.
            let delivered = self.put(head.0, head.1, true).await;
            let mut state = self.lock();
            if !delivered {
                state.line.clear();
                return;
            }
            state.line.pop_front();
        }
    }

    /// Decides the resume `claim` asks for at `session_id` on `edge` (PROTOCOL.md §13.3): the
    /// current ticket and a proof under its key (the first such claim wins), then every packet
    /// after the client's `received` still kept. On success the session is attached there with
    /// `next` as its ticket, the grant is queued on `edge` before anything newer, and the
    /// connection it leaves, if any, is told to close.
    pub fn redeem(
        &self,
        claim: &ResumeClaim,
        next: Redeemable,
        edge: &Arc<EdgeHandle>,
        session_id: u64,
    ) -> Result<(), Refusal> {
        let permit = edge.try_reserve().ok_or("resume_unknown")?;
        let _order = edge.order();
        let mut state = self.lock();
        if state.ended {
            return Err("resume_unknown");
        }
        let held = state.redeemable.as_mut().ok_or("resume_unknown")?;
        let spent = held.clone();
        match held.redeem(claim, next.clone()) {
            Ok(()) => state.unconfirmed = Some(spent),
            // The retry of a client whose last grant never reached it: that connection went
            // without a word from the client. While it is up, the first resume still wins.
            Err(refused) => {
                let unconfirmed = state.unconfirmed.clone().filter(|_| state.at.is_none());
                let mut retried = unconfirmed.ok_or(refused.kind())?;
                retried.redeem(claim, next).map_err(|_| refused.kind())?;
                state.redeemable = Some(retried);
            }
        }
        // The ticket is spent from here on: a client that lacks packets no longer kept cannot
        // be made whole, and the session ends.
        let oldest = state.sent - state.kept.len() as u64;
        if claim.received > state.sent || claim.received < oldest {
            state.lost = Some("resume_gap");
            drop(state);
            self.lost.cancel();
            return Err("resume_gap");
        }
        state.ack(claim.received);
        state.moving = false;
        let left = state.at.replace(Attachment {
            edge: edge.clone(),
            session_id,
        });
        // A new connection: not backlogged; what still waits (the session was attached
        // elsewhere) follows the grant.
        state.backlogged = false;
        if state.stage.is_some() {
            self.waiting.notify_one();
        }
        permit.send(BrokerFrame {
            kind: Some(broker_frame::Kind::Granted(ResumeGranted {
                session_id,
                session: Some(self.open.clone()),
                start_index: state.next_index,
                sent: state.sent,
                replay: state.kept.iter().map(|p| (**p).clone()).collect(),
                rate: state.rate,
            })),
        });
        drop(state);
        if let Some(left) = left {
            let release = BrokerFrame {
                kind: Some(broker_frame::Kind::Release(Release {
                    session_ids: vec![left.session_id],
                })),
            };
            left.edge.try_send(release);
        }
        Ok(())
    }
}

impl State {
    fn take_after(&mut self, after: u64) -> Forwarded {
        if self.at.is_some() {
            return Forwarded::default();
        }
        let from = after.max(self.forwarded);
        let oldest = self.sent - self.kept.len() as u64;
        let skip = usize::try_from(from.saturating_sub(oldest)).unwrap_or(usize::MAX);
        let packets: Vec<Packet> = self.kept.iter().skip(skip).map(|p| (**p).clone()).collect();
        // Packet `n` (counted from 1) is at `n - start - 1` of those taken.
        let start = from.max(oldest);
        let (mut broadcasts, mut bodies) = (Vec::new(), Vec::new());
        if self.tagged.iter().any(|(n, _)| *n > start) {
            broadcasts = vec![String::new(); packets.len()];
            bodies = vec![0; packets.len()];
            for (n, tag) in self.tagged.iter().filter(|(n, _)| *n > start) {
                let i = usize::try_from(n - start - 1).unwrap_or(usize::MAX);
                if let (Some(id), Some(body)) = (broadcasts.get_mut(i), bodies.get_mut(i)) {
                    *id = tag.id.to_string();
                    *body = tag.body;
                }
            }
        }
        self.tagged.clear();
        self.forwarded = self.sent;
        // The copy is the adopter's from now on: what reaches it is kept for the adopter.
        self.moving = true;
        Forwarded {
            packets,
            broadcasts,
            bodies,
            had: Vec::new(),
        }
    }

    /// Whether the session is to take broadcast body `broadcast` this broker delivers itself:
    /// always, but for a re-attached one that already got it (see [`Once`]), which takes it as
    /// delivered.
    fn first_time(&mut self, broadcast: Broadcast<'_>) -> bool {
        self.take_once(broadcast, true)
    }

    /// [`State::first_time`] for a broadcast this broker delivers itself (`own`), or one its
    /// previous broker forwarded (then what that broker says the session had there does not
    /// count: it forwards only what it kept after the move).
    fn take_once(&mut self, broadcast: Broadcast<'_>, own: bool) -> bool {
        let (Some(id), Some(once)) = (broadcast, self.once.as_mut()) else {
            return true;
        };
        if tokio::time::Instant::now() >= once.until {
            self.once = None;
            return true;
        }
        if once.ids.contains(id) || (own && once.had.contains(&id.id)) {
            return false;
        }
        if once.ids.len() >= LINE {
            once.ids.pop_front();
        }
        once.ids.push_back(id.clone());
        true
    }

    /// The previous broker says the session got broadcast `id` there: this broker's own copy of
    /// its bodies is not delivered, those waiting in line behind the reply (if `held`) neither.
    fn had(&mut self, id: Arc<str>, held: bool) {
        let Some(once) = self.once.as_mut() else {
            return;
        };
        let of_id = |b: &Option<BroadcastBody>| b.as_ref().is_some_and(|b| b.id == id);
        if held && self.line.iter().any(|(_, b)| of_id(b)) {
            self.line.retain(|(_, b)| !of_id(b));
            // Not taken after all: should the previous broker forward it (it reached the copy
            // there after the move), that copy goes out.
            once.ids.retain(|taken| taken.id != id);
        }
        if once.had.len() >= LINE {
            once.had.pop_front();
        }
        once.had.push_back(id);
    }

    /// Puts `packet` at the back of the line if packets wait there (or are held): true when
    /// it was taken so (or, the line full, lost or dropped; see [`LINE`]).
    fn wait_in_line(
        &mut self,
        session: &Continuity,
        packet: &Packet,
        broadcast: Broadcast<'_>,
    ) -> bool {
        if !self.holding && self.line.is_empty() {
            return false;
        }
        if self.line.len() >= LINE {
            if self.counts(packet) && self.lost.is_none() {
                self.lost = Some("resume_overflow");
                session.lost.cancel();
            }
            return true;
        }
        self.line
            .push_back((Arc::new(packet.clone()), broadcast.cloned()));
        if !self.holding {
            session.waiting.notify_one();
        }
        true
    }

    /// Holds `packet` in the stage (PROTOCOL.md §16) when the session is backlogged, or when it
    /// must wait behind what waits there or for its key's rate cap: true when it was taken so
    /// (an event or reply past `max_pending` loses the session as `slow_consumer`).
    /// `shared` gives the packet to keep, when it is held (an `Arc` the caller may have already,
    /// so that nothing is allocated for a packet that goes out).
    fn stages(
        &mut self,
        session: &Continuity,
        packet: &Packet,
        shared: impl FnOnce() -> Arc<Packet>,
        broadcast: Broadcast<'_>,
        asked: Option<Class>,
    ) -> bool {
        let Some(policy) = &session.delivery else {
            return false;
        };
        if !policy.is_active() && asked.is_none() && self.stage.is_none() {
            // Nothing can be held: as without classes.
            return false;
        }
        let (class, gap) = policy.classify(packet, asked);
        if class == Class::Control {
            return false;
        }
        let now = tokio::time::Instant::now();
        let wait = (self.backlogged && (class == Class::State || policy.is_active()))
            || self
                .stage
                .as_ref()
                .is_some_and(|stage| stage.must_wait(packet, class, now));
        let stage = match (wait, gap) {
            (false, None) => return false,
            (false, Some(_)) => {
                self.stage
                    .get_or_insert_default()
                    .went_out(policy, packet, gap, now);
                return false;
            }
            (true, _) => self.stage.get_or_insert_default(),
        };
        let held = stage.hold(policy, shared(), broadcast.cloned(), (class, gap), now);
        if held == Held::Overflow && self.lost.is_none() {
            self.lost = Some("slow_consumer");
            session.lost.cancel();
        }
        if !self.backlogged {
            session.waiting.notify_one();
        }
        true
    }

    /// The connection is gone (parked, handed over, released for a full edge queue): what
    /// waited in the stage is counted and kept now, in order, for the resume or the adopter;
    /// a resumed client gets the newest state of each key and every event (PROTOCOL.md §16).
    fn unstage(&mut self, session: &Continuity) {
        self.backlogged = false;
        if let Some(mut stage) = self.stage.take() {
            for waiting in stage.take_all() {
                self.record(session, &waiting.packet, waiting.broadcast.as_ref());
            }
        }
    }

    /// Whether `packet` is counted and kept: a resumable session's, not a heartbeat reply.
    fn counts(&self, packet: &Packet) -> bool {
        (self.redeemable.is_some() || self.moving) && system::is_counted(packet)
    }

    fn advance(&mut self, next_index: i32) {
        if next_index > self.next_index {
            self.next_index = next_index;
        }
    }

    fn ack(&mut self, received: u64) {
        let oldest = self.sent - self.kept.len() as u64;
        let drop = received.saturating_sub(oldest).min(self.kept.len() as u64);
        self.kept.drain(..drop as usize);
    }

    /// Counts and keeps the next packet for the client (heartbeat replies are neither, §13.2),
    /// tagged with its `broadcast` while detached (an adopter may be sent it).
    /// Past the capacity the oldest is forgotten; while parked that is a hole no resume could
    /// fill, so `overflow` is cancelled. A handed-over copy forgets freely what its edge holds
    /// and what went to the adopter.
    fn record(&mut self, session: &Continuity, packet: &Arc<Packet>, broadcast: Broadcast<'_>) {
        if !self.counts(packet) {
            return;
        }
        if self.kept.len() >= self.capacity {
            let oldest = self.sent - self.kept.len() as u64;
            self.kept.pop_front();
            let needed = !self.moving || oldest >= self.moved_at.max(self.forwarded);
            if self.at.is_none() && needed && self.lost.is_none() {
                self.lost = Some("resume_overflow");
                session.lost.cancel();
            }
        }
        self.sent += 1;
        self.kept.push_back(packet.clone());
        let oldest = self.sent - self.kept.len() as u64;
        while self.tagged.front().is_some_and(|(n, _)| *n <= oldest) {
            self.tagged.pop_front();
        }
        if self.at.is_none() {
            if let Some(id) = broadcast {
                self.tagged.push_back((self.sent, id.clone()));
            }
            session.changed.notify_one();
        }
    }
}

/// Which body of which broadcast a packet is (PROTOCOL.md §13.5): a re-attached session takes
/// each once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BroadcastBody {
    /// The broadcast's id (`BrokerPush.broadcast_id`).
    pub id: Arc<str>,
    /// The body's place among the broadcast's bodies, from 0.
    pub body: u32,
}

#[cfg(test)]
impl BroadcastBody {
    /// Body `body` of broadcast `id`.
    pub(crate) fn of(id: &str, body: u32) -> Self {
        Self {
            id: Arc::from(id),
            body,
        }
    }
}

/// The broadcast body a packet is, for one that is.
pub type Broadcast<'a> = Option<&'a BroadcastBody>;

/// Queues `packet` (of `broadcast`, if it is a broadcast's) for every session of `sessions`
/// attached to `edge`, if there is room now; parked ones record it. Returns how many got it
/// and whether the edge queue was full (then none did). Sessions found elsewhere (moved since
/// the grouping) are returned to be sent on their own, the broadcast not taken yet.
pub fn multicast(
    edge: &Arc<EdgeHandle>,
    sessions: &[Arc<Continuity>],
    packet: &Arc<Packet>,
    broadcast: Broadcast<'_>,
    class: Option<Class>,
) -> Multicast {
    let mut result = Multicast::default();
    let Some(permit) = edge.try_reserve() else {
        full(edge, sessions, packet, (broadcast, class), &mut result);
        return result;
    };
    let _order = edge.order();
    let mut ids = Vec::with_capacity(sessions.len());
    for session in sessions {
        let mut state = session.lock();
        let elsewhere = state
            .at
            .as_ref()
            .is_some_and(|at| !std::ptr::eq(Arc::as_ptr(&at.edge), Arc::as_ptr(edge)));
        if elsewhere && !state.ended {
            // Taken where it is sent on to, not here.
            result.moved.push(session.clone());
            continue;
        }
        if !state.ended
            && (!state.first_time(broadcast) || state.wait_in_line(session, packet, broadcast))
        {
            result.delivered += 1;
            continue;
        }
        match &state.at {
            _ if state.ended => {}
            None => {
                state.record(session, packet, broadcast);
                result.delivered += 1;
            }
            Some(at) => {
                let id = at.session_id;
                if state.stages(session, packet, || packet.clone(), broadcast, class) {
                    result.delivered += 1;
                    continue;
                }
                state.record(session, packet, broadcast);
                ids.push(id);
                result.delivered += 1;
            }
        }
    }
    if ids.is_empty() {
        drop(permit);
    } else {
        permit.send(deliver_frame(ids, packet));
    }
    result
}

/// `edge`'s queue is full (the edge is slow, or dead and not yet known to be): a resumable
/// session there is parked with the packet kept, and its connection is released as soon as the
/// queue moves (the client resumes and gets it); for any other session the packet is dropped.
/// A counted packet is never left out of a resumable session's record.
fn full(
    edge: &Arc<EdgeHandle>,
    sessions: &[Arc<Continuity>],
    packet: &Arc<Packet>,
    (broadcast, class): (Broadcast<'_>, Option<Class>),
    result: &mut Multicast,
) {
    for session in sessions {
        let mut state = session.lock();
        let here = state
            .at
            .as_ref()
            .filter(|at| std::ptr::eq(Arc::as_ptr(&at.edge), Arc::as_ptr(edge)))
            .map(|at| at.session_id);
        match here {
            _ if state.ended => {}
            None if state.at.is_some() => result.moved.push(session.clone()),
            _ if !state.first_time(broadcast) => result.delivered += 1,
            _ if state.wait_in_line(session, packet, broadcast) => result.delivered += 1,
            Some(_) if state.stages(session, packet, || packet.clone(), broadcast, class) => {
                result.delivered += 1
            }
            Some(id) if state.counts(packet) => {
                state.at = None;
                state.unstage(session);
                state.record(session, packet, broadcast);
                drop(state);
                edge.release_later(id);
                session.parked.notify_one();
                result.delivered += 1;
            }
            Some(_) => result.dropped += 1,
            None => {
                state.record(session, packet, broadcast);
                result.delivered += 1;
            }
        }
    }
}

/// What [`multicast`] did.
#[derive(Debug, Default)]
pub struct Multicast {
    /// Sessions that got the packet (queued or, parked, kept).
    pub delivered: usize,
    /// Sessions that did not: the edge queue was full and they cannot resume.
    pub dropped: usize,
    /// Sessions now attached elsewhere.
    pub moved: Vec<Arc<Continuity>>,
}

fn deliver_frame(session_ids: Vec<u64>, packet: &Packet) -> BrokerFrame {
    BrokerFrame {
        kind: Some(broker_frame::Kind::Deliver(Deliver {
            session_ids,
            packet: Some(packet.clone()),
        })),
    }
}

#[cfg(test)]
mod tests {
    use janus_proto::janus::internal::v1::broker_frame::Kind;
    use janus_protocol::handshake::resume_proof;
    use tokio::sync::mpsc;

    use super::*;

    const KEY: [u8; 32] = [3; 32];
    const PUB: [u8; 32] = [9; 32];

    fn edge(name: &str) -> (Arc<EdgeHandle>, mpsc::Receiver<BrokerFrame>) {
        let (tx, rx) = mpsc::channel(16);
        (Arc::new(EdgeHandle::new(name.into(), tx)), rx)
    }

    /// A resumable session at session 1 of `at`, keeping at most `capacity` packets.
    fn session(at: &Arc<EdgeHandle>, capacity: usize) -> Arc<Continuity> {
        Arc::new(resumable(at, capacity))
    }

    /// [`session`], not yet shared.
    fn resumable(at: &Arc<EdgeHandle>, capacity: usize) -> Continuity {
        let open = SessionOpen {
            uid: 7,
            continuity: Some(Given {
                resume_key: KEY.to_vec(),
                ticket: b"t1".to_vec(),
                window_secs: 30,
                ..Default::default()
            }),
            ..Default::default()
        };
        let attachment = Attachment {
            edge: at.clone(),
            session_id: 1,
        };
        Continuity::new(Some(attachment), &open, capacity)
    }

    fn push(n: i32) -> Arc<Packet> {
        Arc::new(Packet {
            r#mod: 9,
            seq: n,
            ..Default::default()
        })
    }

    fn claim(ticket: &[u8], received: u64) -> ResumeClaim {
        ResumeClaim {
            ticket: ticket.to_vec(),
            client_pub: PUB,
            timestamp: 5,
            received,
            proof: resume_proof(&KEY, ticket, &PUB, 5, received).to_vec(),
        }
    }

    fn next(ticket: &[u8]) -> Redeemable {
        Redeemable {
            ticket: ticket.to_vec(),
            key: [4; 32],
        }
    }

    fn delivered(rx: &mut mpsc::Receiver<BrokerFrame>) -> Vec<i32> {
        let mut seqs = Vec::new();
        while let Ok(frame) = rx.try_recv() {
            if let Some(Kind::Deliver(d)) = frame.kind {
                seqs.push(d.packet.unwrap().seq);
            }
        }
        seqs
    }

    #[test]
    fn a_parked_session_keeps_what_comes_and_the_first_resume_gets_it_in_order() {
        let (a, mut a_rx) = edge("a");
        let (b, mut b_rx) = edge("b");
        let s = session(&a, 8);
        for n in 1..=3 {
            assert_eq!(
                multicast(&a, std::slice::from_ref(&s), &push(n), None, None).delivered,
                1
            );
        }
        assert_eq!(delivered(&mut a_rx), vec![1, 2, 3]);
        assert!(s.park(&a, 1, None));
        assert!(s.try_deliver(&push(4), None, None), "kept while parked");
        assert_eq!(s.counts(), (4, 4));

        // The client had 2 of them; it resumes at edge b as session 5 there.
        s.redeem(&claim(b"t1", 2), next(b"t2"), &b, 5).unwrap();
        let Some(Kind::Granted(granted)) = b_rx.try_recv().unwrap().kind else {
            panic!("the grant first")
        };
        let replayed: Vec<i32> = granted.replay.iter().map(|p| p.seq).collect();
        assert_eq!((granted.session_id, granted.sent), (5, 4));
        assert_eq!(replayed, vec![3, 4]);
        assert_eq!(granted.session.unwrap().uid, 7);
        assert!(s.is_at(&b, 5));
        assert!(s.try_deliver(&push(5), None, None));
        assert_eq!(
            delivered(&mut b_rx),
            vec![5],
            "newer packets follow the grant"
        );

        // The same ticket again (a racing or replayed resume) finds it spent.
        assert_eq!(
            s.redeem(&claim(b"t1", 2), next(b"t3"), &a, 9),
            Err("resume_unknown")
        );
        assert!(s.is_at(&b, 5));
    }

    #[test]
    fn a_resume_that_moves_a_live_session_releases_its_old_connection_and_ignores_it() {
        let (a, mut a_rx) = edge("a");
        let (b, _b_rx) = edge("b");
        let s = session(&a, 8);
        s.redeem(&claim(b"t1", 0), next(b"t2"), &b, 2).unwrap();
        let Some(Kind::Release(release)) = a_rx.try_recv().unwrap().kind else {
            panic!("the old connection is released")
        };
        assert_eq!(release.session_ids, vec![1]);
        assert!(
            !s.took(&a, 1, 1),
            "packets of the old connection are dropped"
        );
        assert!(!s.park(&a, 1, None), "its close does not park the session");
        assert!(s.took(&b, 2, 1));
    }

    #[tokio::test]
    async fn a_handover_answers_after_the_last_packet_and_keeps_later_ones_for_the_adopter() {
        let (a, mut a_rx) = edge("a");
        let s = session(&a, 8);
        for n in 1..=2 {
            assert!(s.try_deliver(&push(n), None, None));
        }
        assert!(s.hand_over(&a, 1).await);
        let kinds: Vec<Option<Kind>> = std::iter::from_fn(|| a_rx.try_recv().ok())
            .map(|f| f.kind)
            .collect();
        assert!(
            matches!(kinds[..], [Some(Kind::Deliver(_)), Some(Kind::Deliver(_)), Some(Kind::HandedOver(ref h))] if h.session_id == 1)
        );
        assert!(!s.hand_over(&a, 1).await, "once only");
        assert!(!s.took(&a, 1, 1), "its client packets no longer count here");
        for n in 3..=4 {
            assert!(s.try_deliver(&push(n), None, None), "kept for the adopter");
        }
        assert!(
            delivered(&mut a_rx).is_empty(),
            "nothing more goes to the edge"
        );
        // The adopter started from the edge's count, 2: it gets 3 and 4, and then only newer.
        let seqs = |packets: Vec<Packet>| packets.iter().map(|p| p.seq).collect::<Vec<_>>();
        assert_eq!(seqs(s.take_after(2).packets), vec![3, 4]);
        assert!(s.try_deliver(&push(5), None, None));
        assert_eq!(seqs(s.take_after(2).packets), vec![5]);
        assert!(s.take_after(2).is_empty());
    }

    #[tokio::test]
    async fn a_session_without_a_ticket_keeps_packets_only_once_handed_over() {
        let (a, mut a_rx) = edge("a");
        let open = SessionOpen {
            uid: 8,
            ..Default::default()
        };
        let attachment = Attachment {
            edge: a.clone(),
            session_id: 1,
        };
        let s = Arc::new(Continuity::new(Some(attachment), &open, 8));
        assert!(s.try_deliver(&push(1), None, None));
        assert_eq!(s.counts(), (0, 0), "nothing counted while attached");
        assert!(s.hand_over(&a, 1).await);
        assert!(s.try_deliver(&push(2), None, None));
        assert_eq!(delivered(&mut a_rx), vec![1]);
        let taken: Vec<i32> = s.take_after(0).packets.iter().map(|p| p.seq).collect();
        assert_eq!(
            taken,
            vec![2],
            "what came after the handover goes to the adopter"
        );
    }

    /// A resumable session moved to `at` from a live broker (handed over), as the adopter
    /// opens it: the edge had counted `sent` packets.
    fn moved_in(at: &Arc<EdgeHandle>, sent: u64) -> Arc<Continuity> {
        let open = SessionOpen {
            uid: 7,
            reattach: true,
            handed_over: true,
            continuity: Some(Given {
                resume_key: KEY.to_vec(),
                ticket: b"t1".to_vec(),
                window_secs: 30,
                sent,
                ..Default::default()
            }),
            ..Default::default()
        };
        let attachment = Attachment {
            edge: at.clone(),
            session_id: 1,
        };
        Arc::new(Continuity::new(Some(attachment), &open, 8))
    }

    fn packets(seqs: &[i32]) -> Forwarded {
        Forwarded {
            packets: seqs.iter().map(|n| (*push(*n)).clone()).collect(),
            broadcasts: Vec::new(),
            bodies: Vec::new(),
            had: Vec::new(),
        }
    }

    /// Packets `seqs` forwarded with their broadcast ids (`""`: not a broadcast's), each its
    /// broadcast's first body.
    fn tagged(seqs: &[(i32, &str)]) -> Forwarded {
        Forwarded {
            packets: seqs.iter().map(|(n, _)| (*push(*n)).clone()).collect(),
            broadcasts: seqs.iter().map(|(_, id)| (*id).to_owned()).collect(),
            bodies: vec![0; seqs.len()],
            had: Vec::new(),
        }
    }

    /// The first body of broadcast `id`.
    fn id(id: &str) -> BroadcastBody {
        BroadcastBody::of(id, 0)
    }

    #[tokio::test]
    async fn a_handed_over_copy_tells_the_adopter_which_packets_are_broadcasts() {
        let (a, _a_rx) = edge("a");
        let s = session(&a, 8);
        assert!(s.try_deliver(&push(1), Some(&id("x/0")), None));
        assert!(s.hand_over(&a, 1).await);
        assert!(s.try_deliver(&push(2), Some(&id("x/1")), None));
        assert!(s.try_deliver(&push(3), None, None));
        assert_eq!(s.take_after(1), tagged(&[(2, "x/1"), (3, "")]));
        assert!(s.try_deliver(&push(4), None, None));
        assert_eq!(s.take_after(1), packets(&[4]), "no broadcast among them");
        assert!(s.try_deliver(&push(5), Some(&id("x/2")), None));
        assert_eq!(s.leave(1), tagged(&[(5, "x/2")]));
    }

    #[tokio::test]
    async fn an_adopter_takes_a_broadcast_both_brokers_delivered_once_in_the_old_brokers_order() {
        let (b, mut b_rx) = edge("b");
        let s = moved_in(&b, 2);
        // Broadcast x/1 reaches the session here while held, then a push.
        assert!(s.try_deliver(&push(11), Some(&id("x/1")), None));
        assert!(s.try_deliver(&push(5), None, None));
        // The old broker delivered x/1 and x/2 to its copy after the edge left it; x/2 has
        // not reached this broker yet.
        s.forwarded(tagged(&[(3, ""), (11, "x/1"), (12, "x/2")]), true);
        s.drain().await;
        assert_eq!(
            delivered(&mut b_rx),
            vec![3, 11, 12, 5],
            "x/1 once, in the old broker's place, before x/2"
        );
        // x/2 reaches this broker now: the session has it.
        assert!(
            s.try_deliver(&push(12), Some(&id("x/2")), None),
            "taken as had"
        );
        // x/3 here first, then from the old copy (which got it after the adoption).
        assert!(s.try_deliver(&push(13), Some(&id("x/3")), None));
        s.forwarded(tagged(&[(13, "x/3"), (6, "")]), false);
        s.drain().await;
        assert_eq!(delivered(&mut b_rx), vec![13, 6]);
        assert_eq!(s.counts().0, 2 + 6, "each counted once");
    }

    #[tokio::test]
    async fn an_adopter_drops_its_own_copy_of_a_broadcast_the_old_broker_gave_but_not_a_forward() {
        let (b, mut b_rx) = edge("b");
        let s = moved_in(&b, 2);
        // x/1 reaches the session here while held; the old broker says the session had x/1 and
        // x/2 there.
        assert!(s.try_deliver(&push(11), Some(&id("x/1")), None));
        assert!(s.try_deliver(&push(5), None, None));
        let reply = Forwarded {
            had: vec!["x/1".into(), "x/2".into()],
            ..Forwarded::default()
        };
        s.forwarded(reply, true);
        s.drain().await;
        assert_eq!(delivered(&mut b_rx), vec![5], "x/1 is in the edge's tail");
        assert!(
            s.try_deliver(&push(12), Some(&id("x/2")), None),
            "taken as had"
        );
        assert!(
            s.try_deliver(&push(11), Some(&id("x/1")), None),
            "taken as had"
        );
        // x/1 reached the old copy only after the move after all: its forward goes out, once.
        s.forwarded(tagged(&[(11, "x/1")]), false);
        s.forwarded(tagged(&[(11, "x/1")]), false);
        s.drain().await;
        assert_eq!(delivered(&mut b_rx), vec![11]);
    }

    #[tokio::test]
    async fn a_re_attached_session_takes_every_body_of_a_broadcast() {
        let (b, mut b_rx) = edge("b");
        let s = moved_in(&b, 0);
        s.forwarded(packets(&[]), true);
        // One broadcast of two bodies, as the broker delivers it: body by body.
        assert!(s.try_deliver(&push(1), Some(&BroadcastBody::of("x/1", 0)), None));
        assert!(s.try_deliver(&push(2), Some(&BroadcastBody::of("x/1", 1)), None));
        assert!(s.try_deliver(&push(2), Some(&BroadcastBody::of("x/1", 1)), None));
        assert_eq!(delivered(&mut b_rx), vec![1, 2], "each body once");
        // Forwarded by the old broker: both bodies of x/2.
        let x2 = Forwarded {
            bodies: vec![0, 1],
            ..tagged(&[(3, "x/2"), (4, "x/2")])
        };
        s.forwarded(x2, false);
        s.drain().await;
        assert_eq!(delivered(&mut b_rx), vec![3, 4]);
        assert!(s.try_deliver(&push(4), Some(&BroadcastBody::of("x/2", 1)), None));
        assert!(delivered(&mut b_rx).is_empty(), "x/2 was taken from there");
    }

    #[tokio::test]
    async fn a_broadcast_for_a_session_found_at_another_edge_goes_out_there() {
        let (a, mut a_rx) = edge("a");
        let (b, mut b_rx) = edge("b");
        let s = moved_in(&a, 0);
        s.forwarded(packets(&[]), true);
        // Grouped under edge b, but the session is at a by now: it is sent on on its own.
        let sent = multicast(
            &b,
            std::slice::from_ref(&s),
            &push(1),
            Some(&id("x/1")),
            None,
        );
        assert_eq!(sent.moved.len(), 1);
        assert!(s.try_deliver(&push(1), Some(&id("x/1")), None));
        assert_eq!(delivered(&mut a_rx), vec![1]);
        assert!(delivered(&mut b_rx).is_empty());
        // The same under an edge whose queue is full.
        let (tx, _c_rx) = mpsc::channel(1);
        let c = Arc::new(EdgeHandle::new("c".into(), tx));
        c.try_reserve()
            .unwrap()
            .send(deliver_frame(vec![9], &push(0)));
        let sent = multicast(
            &c,
            std::slice::from_ref(&s),
            &push(2),
            Some(&id("x/2")),
            None,
        );
        assert_eq!(sent.moved.len(), 1);
        assert!(s.try_deliver(&push(2), Some(&id("x/2")), None));
        assert_eq!(delivered(&mut a_rx), vec![2]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_takes_broadcasts_once_only_for_the_instant_of_its_adoption() {
        let (b, mut b_rx) = edge("b");
        let s = moved_in(&b, 0);
        s.forwarded(packets(&[]), true);
        assert!(s.try_deliver(&push(1), Some(&id("x/1")), None));
        assert!(s.try_deliver(&push(1), Some(&id("x/1")), None));
        assert_eq!(delivered(&mut b_rx), vec![1]);
        tokio::time::advance(ONCE_FOR).await;
        // Long after: a broadcast id is no longer looked at (ids are unique per broadcast).
        assert!(s.try_deliver(&push(1), Some(&id("x/1")), None));
        assert_eq!(delivered(&mut b_rx), vec![1]);
        // A session that was not re-attached never looks.
        let (a, mut a_rx) = edge("a");
        let t = session(&a, 8);
        assert!(t.try_deliver(&push(2), Some(&id("x/2")), None));
        assert!(t.try_deliver(&push(2), Some(&id("x/2")), None));
        assert_eq!(delivered(&mut a_rx), vec![2, 2]);
    }

    #[tokio::test]
    async fn an_adopter_delivers_what_the_old_broker_kept_before_its_own_and_later_forwards_after()
    {
        let (b, mut b_rx) = edge("b");
        let s = moved_in(&b, 2);
        assert!(s.holding());
        // Pushes resolved here, and a tunnel reply, while the old broker's reply is on its way.
        assert!(s.try_deliver(&push(5), None, None));
        assert!(s.deliver((*push(6)).clone()).await);
        assert!(delivered(&mut b_rx).is_empty(), "held for the reply");
        s.drain().await;
        assert!(delivered(&mut b_rx).is_empty(), "still held");
        // The old broker kept 3 and 4 after the edge left it.
        s.forwarded(packets(&[3, 4]), true);
        assert!(!s.holding());
        // More arrives before the actor drains: it waits behind the line.
        assert!(s.try_deliver(&push(7), None, None));
        s.drain().await;
        assert_eq!(delivered(&mut b_rx), vec![3, 4, 5, 6, 7]);
        // A packet that reached the old broker later (a reply in flight) comes after.
        s.forwarded(packets(&[8]), false);
        s.drain().await;
        assert!(s.try_deliver(&push(9), None, None));
        assert_eq!(
            delivered(&mut b_rx),
            vec![8, 9],
            "then straight through again"
        );
        assert_eq!(s.counts().0, 2 + 7, "all counted from the edge's count on");
    }

    #[tokio::test]
    async fn an_adopter_with_no_reply_in_time_delivers_what_it_held_in_order() {
        let (b, mut b_rx) = edge("b");
        let s = moved_in(&b, 0);
        assert!(s.try_deliver(&push(1), None, None));
        assert!(s.try_deliver(&push(2), None, None));
        s.stop_holding();
        assert!(s.try_deliver(&push(3), None, None), "behind what was held");
        s.drain().await;
        assert_eq!(delivered(&mut b_rx), vec![1, 2, 3]);
        // A reply that comes late is delivered after, not before.
        s.forwarded(packets(&[4]), true);
        s.drain().await;
        assert_eq!(delivered(&mut b_rx), vec![4]);
    }

    #[tokio::test]
    async fn a_parked_sessions_copy_must_hold_what_was_kept_and_an_attached_ones_need_not() {
        let (a, _a_rx) = edge("a");
        let s = session(&a, 8);
        assert!(s.try_deliver(&push(1), None, None));
        assert_eq!(s.copy_due(), None, "attached: its edge holds the tail");
        assert!(s.park(&a, 1, None));
        assert!(s.try_deliver(&push(2), None, None));
        assert_eq!(s.copy_due(), Some(2));
        assert!(s.copy_behind());
        let short = std::time::Duration::from_millis(50);
        assert!(!s.copy_holds(2, short).await, "not written yet");
        s.copied(2);
        assert!(s.copy_holds(2, short).await);
        assert!(!s.copy_behind());
        s.copied(1);
        assert!(s.copy_holds(2, short).await, "a count never goes back");
    }

    #[test]
    fn a_session_that_did_not_move_from_a_live_broker_holds_nothing() {
        let (a, mut a_rx) = edge("a");
        let s = session(&a, 8);
        assert!(!s.holding());
        assert!(s.try_deliver(&push(1), None, None));
        assert_eq!(delivered(&mut a_rx), vec![1]);
    }

    #[tokio::test]
    async fn a_handed_over_copy_forgets_what_its_edge_and_its_adopter_hold_without_being_lost() {
        let (a, _a_rx) = edge("a");
        let s = session(&a, 4);
        for n in 1..=4 {
            assert!(s.try_deliver(&push(n), None, None));
        }
        assert!(s.hand_over(&a, 1).await);
        // Four more than the edge holds: the copy forgets 1–4 (the edge has them).
        for n in 5..=8 {
            assert!(s.try_deliver(&push(n), None, None));
        }
        assert!(!s.lost.is_cancelled());
        let seqs: Vec<i32> = s.take_after(4).packets.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![5, 6, 7, 8]);
        // 5–8 went to the adopter: forgetting them loses nothing either.
        assert!(s.try_deliver(&push(9), None, None));
        assert!(!s.lost.is_cancelled());
        // Past that, a packet the adopter never got would be forgotten: the copy is lost.
        for n in 10..=13 {
            assert!(s.try_deliver(&push(n), None, None));
        }
        assert!(s.lost.is_cancelled());
        assert_eq!(s.lost_reason(), "resume_overflow");
    }

    #[test]
    fn a_grant_whose_reply_was_lost_can_be_retried_with_the_same_ticket_until_confirmed() {
        let (a, _a_rx) = edge("a");
        let (b, _b_rx) = edge("b");
        let (c, mut c_rx) = edge("c");
        let s = session(&a, 8);
        assert!(s.park(&a, 1, None));
        s.redeem(&claim(b"t1", 0), next(b"t2"), &b, 2).unwrap();
        assert_eq!(
            s.redeem(&claim(b"t1", 0), next(b"t3"), &c, 3),
            Err("resume_unknown"),
            "while the granted connection is up, the first resume wins"
        );
        // The reply was lost with that connection, which went without a word from the client:
        // it comes back with t1.
        assert!(s.park(&b, 2, None));
        s.redeem(&claim(b"t1", 0), next(b"t3"), &c, 3).unwrap();
        assert!(s.is_at(&c, 3));
        assert!(matches!(
            c_rx.try_recv().unwrap().kind,
            Some(Kind::Granted(_))
        ));
        assert_eq!(
            s.redeem(&claim(b"t2", 0), next(b"t4"), &b, 4),
            Err("resume_unknown"),
            "the ticket of the grant nobody got is void"
        );
        // A packet over the new connection shows the client has its new ticket: t1 is spent.
        assert!(s.took(&c, 3, 1));
        assert!(s.park(&c, 3, None));
        assert_eq!(
            s.redeem(&claim(b"t1", 0), next(b"t5"), &b, 5),
            Err("resume_unknown")
        );
        assert!(s.attachment().is_none(), "still parked for its client's t3");
    }

    #[test]
    fn a_wrong_proof_is_denied_and_leaves_the_session_alone() {
        let (a, _a_rx) = edge("a");
        let (b, _b_rx) = edge("b");
        let s = session(&a, 8);
        let mut forged = claim(b"t1", 0);
        forged.proof[0] ^= 1;
        assert_eq!(s.redeem(&forged, next(b"t2"), &b, 2), Err("resume_denied"));
        assert!(s.is_at(&a, 1));
        s.redeem(&claim(b"t1", 0), next(b"t2"), &b, 2).unwrap();
    }

    #[test]
    fn a_gap_or_an_overflow_while_parked_loses_the_session_with_its_reason() {
        let (a, _a_rx) = edge("a");
        let s = session(&a, 2);
        for n in 1..=3 {
            multicast(&a, std::slice::from_ref(&s), &push(n), None, None);
        }
        assert!(
            !s.lost.is_cancelled(),
            "a connected client may still have them all"
        );
        assert_eq!(
            s.redeem(&claim(b"t1", 0), next(b"t2"), &a, 2),
            Err("resume_gap")
        );
        assert!(s.lost.is_cancelled());
        assert_eq!(s.lost_reason(), "resume_gap");

        let parked = session(&a, 2);
        assert!(parked.park(&a, 1, None));
        parked.try_deliver(&push(1), None, None);
        parked.try_deliver(&push(2), None, None);
        assert!(!parked.lost.is_cancelled());
        parked.try_deliver(&push(3), None, None);
        assert!(parked.lost.is_cancelled(), "a hole no resume could fill");
        assert_eq!(parked.lost_reason(), "resume_overflow");
    }

    #[test]
    fn a_full_edge_queue_parks_a_resumable_session_with_the_packet_kept_and_drops_it_for_others() {
        let (tx, mut rx) = mpsc::channel(1);
        let a = Arc::new(EdgeHandle::new("a".into(), tx));
        let resumable = session(&a, 8);
        let plain = Arc::new(Continuity::new(
            Some(Attachment {
                edge: a.clone(),
                session_id: 2,
            }),
            &SessionOpen::default(),
            8,
        ));
        let both = [resumable.clone(), plain.clone()];
        assert_eq!(multicast(&a, &both, &push(1), None, None).delivered, 2);
        let sent = multicast(&a, &both, &push(2), None, None);
        assert_eq!((sent.delivered, sent.dropped), (1, 1), "the queue is full");
        assert_eq!(resumable.attachment().map(|a| a.session_id), None, "parked");
        assert_eq!(resumable.counts(), (2, 2), "push 2 is kept for its resume");
        assert_eq!(a.take_released(), vec![1], "its connection is released");
        assert!(
            plain.is_at(&a, 2),
            "a session without a ticket stays and misses it"
        );
        assert_eq!(delivered(&mut rx), vec![1]);
    }

    /// Module 9's seq 1 is state (PROTOCOL.md §16), at most `max_rate_hz` per key (0: no cap).
    fn with_state_rule(session: Continuity, max_rate_hz: f64) -> Arc<Continuity> {
        let config = crate::config::DeliveryConfig {
            rules: vec![crate::config::DeliveryRule {
                module: 9,
                seqs: vec![1],
                class: crate::config::RuleClass::State,
                max_rate_hz,
            }],
            ..Default::default()
        };
        let counted =
            prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["class", "outcome"])
                .unwrap();
        Arc::new(session.with_delivery(&Arc::new(Delivery::new(&config, counted))))
    }

    fn state(obj: i64) -> Arc<Packet> {
        Arc::new(Packet {
            r#mod: 9,
            seq: 1,
            obj,
            ..Default::default()
        })
    }

    #[tokio::test]
    async fn a_backlogged_session_counts_only_what_it_releases_and_a_park_keeps_what_waited() {
        let (a, mut a_rx) = edge("a");
        let s = with_state_rule(resumable(&a, 64), 0.0);
        assert_eq!(
            multicast(&a, std::slice::from_ref(&s), &state(1), None, None).delivered,
            1
        );
        s.backlog(&a, 1, true);
        // Three updates of key 1, one of key 2, an event: the event and the newest of each key
        // wait, uncounted.
        for packet in [state(1), state(1), push(5), state(2), state(1)] {
            assert_eq!(
                multicast(&a, std::slice::from_ref(&s), &packet, None, None).delivered,
                1
            );
        }
        assert!(s.deliver((*push(6)).clone()).await);
        assert_eq!(delivered(&mut a_rx), vec![1]);
        assert_eq!(s.counts(), (1, 1), "only what went out is counted");
        // A System packet is never held.
        assert!(s.deliver(system::packet(4, 0, Vec::new())).await);
        assert_eq!(delivered(&mut a_rx), vec![4]);
        s.backlog(&a, 1, false);
        assert_eq!(s.release().await, None);
        let objs: Vec<(i32, i64)> = std::iter::from_fn(|| a_rx.try_recv().ok())
            .filter_map(|f| match f.kind {
                Some(Kind::Deliver(d)) => d.packet.map(|p| (p.seq, p.obj)),
                _ => None,
            })
            .collect();
        assert_eq!(
            objs,
            [(5, 0), (1, 2), (1, 1), (6, 0)],
            "in the order they came"
        );
        assert_eq!(s.counts(), (6, 6));

        // Backlogged again, then the connection goes: what waited is counted and kept for
        // the resume, the newest of each key only.
        s.backlog(&a, 1, true);
        for packet in [state(3), state(3), push(7)] {
            multicast(&a, std::slice::from_ref(&s), &packet, None, None);
        }
        assert_eq!(s.counts(), (6, 6));
        assert!(s.park(&a, 1, None));
        assert_eq!(s.counts(), (8, 8));
        let (b, mut b_rx) = edge("b");
        s.redeem(&claim(b"t1", 6), next(b"t2"), &b, 3).unwrap();
        let Some(Kind::Granted(granted)) = b_rx.try_recv().unwrap().kind else {
            panic!("a grant")
        };
        let replay: Vec<(i32, i64)> = granted.replay.iter().map(|p| (p.seq, p.obj)).collect();
        assert_eq!(replay, [(1, 3), (7, 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_paced_key_goes_out_at_its_rate_with_its_newest_packet() {
        let (a, mut a_rx) = edge("a");
        let s = with_state_rule(
            Continuity::new(
                Some(Attachment {
                    edge: a.clone(),
                    session_id: 1,
                }),
                &SessionOpen::default(),
                8,
            ),
            10.0,
        );
        let start = tokio::time::Instant::now();
        for obj in [1, 1, 1, 2] {
            multicast(&a, std::slice::from_ref(&s), &state(obj), None, None);
        }
        multicast(&a, std::slice::from_ref(&s), &push(5), None, None);
        let first: Vec<(i32, i64)> = std::iter::from_fn(|| a_rx.try_recv().ok())
            .filter_map(|f| match f.kind {
                Some(Kind::Deliver(d)) => d.packet.map(|p| (p.seq, p.obj)),
                _ => None,
            })
            .collect();
        assert_eq!(
            first,
            [(1, 1), (1, 2), (5, 0)],
            "the event passes the waiting state"
        );
        let due = s.release().await;
        assert_eq!(due, Some(start + std::time::Duration::from_millis(100)));
        assert_eq!(
            delivered(&mut a_rx),
            Vec::<i32>::new(),
            "key 1 is not due yet"
        );
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert_eq!(s.release().await, None);
        assert_eq!(delivered(&mut a_rx), vec![1], "the newest of key 1, once");
    }

    #[test]
    fn heartbeat_replies_are_not_counted_and_acks_trim() {
        let (a, _a_rx) = edge("a");
        let s = session(&a, 8);
        let beat = Arc::new(system::heartbeat_reply(3, 7, 0, 1));
        multicast(&a, std::slice::from_ref(&s), &beat, None, None);
        multicast(&a, std::slice::from_ref(&s), &push(1), None, None);
        multicast(&a, std::slice::from_ref(&s), &push(2), None, None);
        s.progress(&a, 1, 1, 4);
        assert_eq!(s.counts(), (2, 1));
        assert!(s.took(&a, 1, 9));
        s.progress(&a, 1, 1, 5);
        assert_eq!(s.lock().next_index, 10, "the index only moves forward");
    }
}
