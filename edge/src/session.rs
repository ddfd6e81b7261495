//! One client session on the edge, whatever its transport: the thin tokio driver around the
//! sans-IO [`machine`]. One loop feeds the machine what happened (a read from the client, an
//! item of the broker's downlink, the edge's phase, its deadline), does what it asks (write to
//! the client, send to the broker, attach or re-attach the session, redeem a resume ticket) and
//! sleeps until its next deadline. The session ends for exactly one [`Close`] reason, which is
//! logged, counted and, where the protocol allows, told to the client. A session whose client
//! holds a resume ticket outlives its connection at its broker, which parks it; a connection
//! that presents the ticket, at this edge or any other, asks that broker for it (PROTOCOL.md
//! §13). The edge keeps nothing of a session once its connection is gone.

mod machine;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use janus_proto::janus::internal::v1::{EdgeFrame, Transport};
use janus_protocol::handshake::{HandshakeKeys, IssueTicket, ResumeOffer, SessionIdentity};
use janus_protocol::session::ServerSession;
use janus_protocol::token::OpenedUnder;
use janus_transport::frames::{FrameIo, Read};
use prometheus::IntGauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::context::EdgeState;
use crate::drain::Phase;
use crate::error::Close;
use crate::link::{BrokerLink, Downlink, SessionSlot, backlog_frame};
use crate::metrics::label;
use crate::outbox;
use machine::{Action, Machine, Now, Opening, Traffic};

/// Spare room a read waits with. Small, because an idle session spends its life waiting in a
/// read with this much allocated; a larger frame gets the room it still needs (its length prefix
/// says how much) before the next read.
const READ_SPARE: usize = 512;

/// Runs a freshly accepted connection from `peer` to its end.
pub(crate) async fn serve(
    state: Arc<EdgeState>,
    io: FrameIo,
    peer: SocketAddr,
    transport: Transport,
) {
    let slot = match Slot::admit(&state, peer, transport) {
        Ok(slot) => slot,
        Err(refusal) => {
            tracing::info!(%peer, reason = refusal.kind(), "connection refused");
            state
                .metrics
                .refused
                .with_label_values(&[refusal.kind()])
                .inc();
            let mut io = io;
            let _ = io.close().await;
            return;
        }
    };
    let id = state.next_session_id();
    let span = tracing::info_span!("session", %peer, transport = label(transport), session = id, uid = tracing::field::Empty);
    let mut session = Session::new(state, io, (id, peer, transport), slot);
    let close = session.run().instrument(span.clone()).await;
    session.finish(&close).instrument(span).await;
}

/// Issues a login's ticket naming the broker its session goes to (the rendezvous pick).
struct LoginTickets(Arc<EdgeState>);

impl IssueTicket for LoginTickets {
    fn issue(&self, identity: &SessionIdentity) -> ResumeOffer {
        let broker = self.0.links.pick(identity.uid);
        self.0
            .offer(identity.uid, broker.as_ref().map_or("", |b| &b.endpoint))
    }
}

/// A connection's place on the edge: admitted for its IP and counted in the session gauge of
/// its transport until dropped.
#[derive(Debug)]
struct Slot {
    state: Arc<EdgeState>,
    ip: std::net::IpAddr,
    gauge: IntGauge,
}

impl Slot {
    fn admit(
        state: &Arc<EdgeState>,
        peer: SocketAddr,
        transport: Transport,
    ) -> Result<Self, crate::limits::Refusal> {
        state.admission.admit(peer.ip(), Instant::now())?;
        let gauge = state
            .metrics
            .sessions
            .with_label_values(&[label(transport)]);
        gauge.inc();
        Ok(Self {
            state: state.clone(),
            ip: peer.ip(),
            gauge,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gauge.dec();
        self.state.admission.release(self.ip, Instant::now());
    }
}

/// At most this many queued replies and pushes are sealed into one write.
const COALESCE: usize = 64;

/// How long a move waits for the old broker's `HandedOver` before it opens the session at the
/// new one anyway (what the old broker kept after the edge's count is forwarded on adoption).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// The I/O half of a session: the connection, the broker link and the timer.
struct Session {
    state: Arc<EdgeState>,
    io: FrameIo,
    input: BytesMut,
    machine: Machine,
    broker: Option<Arc<BrokerLink>>,
    downlink: Option<outbox::Receiver<Downlink>>,
    /// The player of the slot the session holds on its broker link.
    slot_uid: i64,
    /// While a resume waits for the rendezvous pick's verdict: the ticket's broker and the
    /// request, to ask there if the pick does not know the session.
    fallback: Option<(Arc<BrokerLink>, Box<EdgeFrame>)>,
    /// Cancelled by the link when the downlink queue overflowed.
    overflow: CancellationToken,
    /// The edge's phase.
    phase: watch::Receiver<Phase>,
    _slot: Slot,
}

/// What woke the driver.
enum Wake {
    Phase,
    Overflow,
    Down(Option<Downlink>),
    Read(Result<Read, Close>),
    Timer,
}

impl Session {
    fn new(
        state: Arc<EdgeState>,
        io: FrameIo,
        (id, peer, transport): (u64, SocketAddr, Transport),
        slot: Slot,
    ) -> Self {
        let proto = ServerSession::new(
            state.handshake.clone(),
            state.config.session.session_config(),
        );
        let tickets: Arc<dyn IssueTicket> = Arc::new(LoginTickets(state.clone()));
        let mut machine = Machine::new(
            state.config.clone(),
            proto,
            Some(tickets),
            (id, peer, transport),
            Traffic::new(&state.metrics, transport),
            Instant::now(),
        );
        let mut phase = state.lifecycle.watch();
        machine.on_phase(*phase.borrow_and_update());
        Self {
            state,
            io,
            input: BytesMut::new(),
            machine,
            broker: None,
            downlink: None,
            slot_uid: 0,
            fallback: None,
            overflow: CancellationToken::new(),
            phase,
            _slot: slot,
        }
    }

    /// The one loop: write what the machine has for the client, wait for whatever comes first,
    /// hand it to the machine and do what it asks.
    async fn run(&mut self) -> Close {
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        loop {
            if !self.machine.transmit().is_empty()
                && let Err(close) = self.write().await
            {
                return close;
            }
            let armed = match self.machine.deadline() {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    if timer.deadline() != at || timer.is_elapsed() {
                        timer.as_mut().reset(at);
                    }
                    true
                }
                None => false,
            };
            let reading = self.machine.reading();
            let max_frame = self.machine.max_frame();
            let wake = tokio::select! {
                biased;
                changed = self.phase.changed() => match changed {
                    Ok(()) => Wake::Phase,
                    // The edge is gone.
                    Err(_) => return Close::Shutdown,
                },
                _ = self.overflow.cancelled() => Wake::Overflow,
                down = next(&mut self.downlink) => Wake::Down(down),
                read = self.io.read::<READ_SPARE>(&mut self.input, max_frame), if reading => {
                    Wake::Read(read.map_err(Close::from))
                }
                () = &mut timer, if armed => Wake::Timer,
            };
            if let Err(close) = self.on_wake(wake).await {
                return close;
            }
        }
    }

    async fn on_wake(&mut self, wake: Wake) -> Result<(), Close> {
        let now = Now::system();
        match wake {
            Wake::Phase => {
                let phase = *self.phase.borrow_and_update();
                self.machine.on_phase(phase);
                Ok(())
            }
            Wake::Overflow => Err(self.overflowed()),
            Wake::Timer => self.machine.on_timeout(&now),
            Wake::Down(down) => {
                // Seal whatever else is already queued too, so one write carries it all.
                let mut action = self.machine.on_downlink(down, &now)?;
                for _ in 1..COALESCE {
                    if action.is_some() {
                        break;
                    }
                    let Some(down) = self.downlink.as_mut().and_then(outbox::Receiver::try_recv)
                    else {
                        break;
                    };
                    action = self.machine.on_downlink(Some(down), &now)?;
                }
                match action {
                    Some(action) => self.act(action).await,
                    None => Ok(()),
                }
            }
            Wake::Read(read) => match read? {
                Read::Nothing => self.machine.on_read(0, &now),
                Read::Bytes(n) => {
                    self.machine.on_read(n, &now)?;
                    while let Some(action) = self.machine.poll_input(&mut self.input, &now)? {
                        self.act(action).await?;
                    }
                    Ok(())
                }
                Read::Frame(payload, n) => {
                    self.machine.on_read(n, &now)?;
                    match self.machine.handle_frame(payload, &now)? {
                        Some(action) => self.act(action).await,
                        None => Ok(()),
                    }
                }
            },
        }
    }

    /// Does what the machine asked.
    async fn act(&mut self, action: Action) -> Result<(), Close> {
        match action {
            Action::Forward(frame) => {
                let started = Instant::now();
                let broker = self.broker.clone().ok_or(Close::NoBroker)?;
                if !broker.send(frame).await {
                    // The link dropped: the session re-attaches. The packet is lost with the
                    // link, like any in flight on it.
                    return Box::pin(self.reattach(Opening::Reattach)).await;
                }
                let transport = label(self.machine.transport());
                self.state
                    .metrics
                    .forward_seconds
                    .with_label_values(&[transport])
                    .observe(started.elapsed().as_secs_f64());
                Ok(())
            }
            Action::Report(frame) => match self.broker.clone() {
                Some(broker) if !broker.send(frame).await => {
                    Box::pin(self.reattach(Opening::Reattach)).await
                }
                _ => Ok(()),
            },
            Action::Reattach => Box::pin(self.reattach(Opening::Reattach)).await,
            Action::Move => Box::pin(self.move_broker()).await,
            Action::Redeem(ticket) => Box::pin(self.redeem(ticket)).await,
            Action::RedeemElsewhere => Box::pin(self.redeem_elsewhere()).await,
            Action::Opened {
                resumed,
                took,
                keys,
            } => Box::pin(self.opened(resumed, took, keys)).await,
        }
    }

    /// The handshake is done: counted; a login's reply is written and the session attached.
    async fn opened(
        &mut self,
        resumed: bool,
        took: Duration,
        keys: Option<HandshakeKeys>,
    ) -> Result<(), Close> {
        let metrics = &self.state.metrics;
        let transport = label(self.machine.transport());
        metrics.handshakes.with_label_values(&["ok"]).inc();
        if let Some(keys) = keys {
            let kind = if resumed { "resume" } else { "login" };
            let token_key = keys.token_key.map_or("none", OpenedUnder::as_str);
            metrics
                .handshake_keys
                .with_label_values(&[kind, &keys.cert_version.to_string(), token_key])
                .inc();
        }
        metrics
            .handshake_seconds
            .with_label_values(&[transport])
            .observe(took.as_secs_f64());
        if resumed {
            metrics.resumes.with_label_values(&["ok"]).inc();
            tracing::info!(transport, "session resumed");
            return Ok(());
        }
        self.write().await?;
        self.attach(Opening::New).await
    }

    /// The connection presented `ticket`: ask the broker holding its session to decide. Its
    /// verdict comes on the downlink.
    async fn redeem(&mut self, ticket: Vec<u8>) -> Result<(), Close> {
        let unknown = |detail: &str| Close::Protocol("resume_unknown", detail.to_owned());
        let links = &self.state.links;
        let named = self
            .state
            .tickets
            .open(&ticket)
            .ok_or_else(|| unknown("not a ticket of this deployment"))?;
        // The broker the hash picks now first: where a session is once moved (PROTOCOL.md
        // §13.5), and where a parked one whose broker died is restored. The ticket's broker
        // next, if that one does not know the session.
        let named_up = links.up_at(&named.broker);
        let broker = links
            .pick(named.uid)
            .or_else(|| named_up.clone())
            .ok_or_else(|| unknown("no broker is reachable"))?;
        let next = self.state.offer(named.uid, &broker.endpoint);
        let frame = self.machine.resume_request(named.uid, next)?;
        self.fallback = named_up
            .filter(|named| !Arc::ptr_eq(named, &broker))
            .map(|named| (named, frame.clone()));
        if self.fallback.is_some() {
            self.machine.ask_again_if_unknown();
        }
        self.attach_to(broker.clone(), named.uid);
        if !broker.send(frame).await {
            return Err(unknown("the session's broker is unreachable"));
        }
        Ok(())
    }

    /// The broker asked first refused the resume as `resume_unknown`: asks the ticket's broker
    /// with the same request.
    async fn redeem_elsewhere(&mut self) -> Result<(), Close> {
        let unreachable = || {
            Close::Protocol(
                "resume_unknown",
                "the ticket's broker is unreachable".into(),
            )
        };
        let (pick, frame) = self.fallback.take().ok_or_else(unreachable)?;
        if let Some(old) = self.broker.take() {
            old.detach(self.machine.id());
        }
        let uid = self.slot_uid;
        self.attach_to(pick.clone(), uid);
        if pick.send(frame).await {
            Ok(())
        } else {
            Err(unreachable())
        }
    }

    /// Routes `broker`'s frames for this session (of player `uid`) to a fresh downlink.
    fn attach_to(&mut self, broker: Arc<BrokerLink>, uid: i64) {
        let session = &self.state.config.session;
        let (tx, rx) = outbox::outbox(session.outbound_queue, session.backlog_mark);
        broker.attach(
            self.machine.id(),
            SessionSlot {
                tx,
                overflow: self.overflow.clone(),
                uid,
            },
        );
        self.slot_uid = uid;
        self.broker = Some(broker);
        self.downlink = Some(rx);
    }

    /// Moves the session to the broker the hash picks now (PROTOCOL.md §13.5): the old broker
    /// stops delivering and says so after its last packet (those before it go to the client as
    /// usual), then the session opens at the new broker with everything it had. The client is
    /// not read meanwhile, so none of its packets goes to a broker that let go.
    async fn move_broker(&mut self) -> Result<(), Close> {
        let uid = self.machine.identity().map_or(0, |i| i.uid);
        let (Some(old), Some(new)) = (self.broker.clone(), self.state.links.pick(uid)) else {
            return Ok(());
        };
        if Arc::ptr_eq(&old, &new) {
            return Ok(());
        }
        let mut opening = Opening::Reattach;
        if old.send(self.machine.handover()).await {
            let deadline = tokio::time::Instant::now() + HANDOVER_TIMEOUT;
            loop {
                let down = match tokio::time::timeout_at(deadline, next(&mut self.downlink)).await {
                    Ok(Some(Downlink::HandedOver)) => {
                        opening = Opening::HandedOver;
                        break;
                    }
                    Err(_) => break,
                    Ok(down) => down,
                };
                // A packet is written to the client as usual; a lost link ends the wait.
                if let Some(Action::Reattach) = self.machine.on_downlink(down, &Now::system())? {
                    break;
                }
            }
        }
        tracing::debug!(from = %old.endpoint, to = %new.endpoint, "moving the session");
        self.state.metrics.moves.inc();
        self.reattach(opening).await
    }

    /// Moves the session to the broker the hash picks now (its link dropped).
    /// No broker up (all of them replaced at once, say): the session waits for one, up to the
    /// re-attach grace, instead of ending.
    async fn reattach(&mut self, opening: Opening) -> Result<(), Close> {
        if let Some(old) = self.broker.take() {
            old.detach(self.machine.id());
        }
        let links = &self.state.links;
        if !links.any_up() {
            let grace = self.state.config.brokers.reattach_grace_secs;
            tracing::info!(?grace, "no broker is up; the session waits for one");
            let waiting = self.state.metrics.waiting_for_broker.clone();
            waiting.inc();
            let up = links.wait_up(grace).await;
            waiting.dec();
            if !up {
                return Err(Close::NoBroker);
            }
        }
        self.attach(opening).await
    }

    /// Opens the session on the broker the hash picks; a link found dead on the way is marked
    /// down by the failed send, so the next pick is another broker.
    async fn attach(&mut self, opening: Opening) -> Result<(), Close> {
        for _ in 0..self.state.links.all().len().max(1) {
            let broker = self
                .state
                .links
                .pick(self.machine.identity().map_or(0, |i| i.uid))
                .ok_or(Close::NoBroker)?;
            let frame = self
                .machine
                .open(opening, &self.state.edge_id, &Now::system())?;
            let uid = self.machine.identity().map_or(0, |i| i.uid);
            self.attach_to(broker.clone(), uid);
            if broker.send(frame).await {
                if opening != Opening::New {
                    tracing::info!(broker = %broker.endpoint, "session re-attached");
                }
                return Ok(());
            }
            broker.detach(self.machine.id());
            self.broker = None;
            self.downlink = None;
        }
        Err(Close::NoBroker)
    }

    /// The session's outbound queue overflowed: counted, and the session ends as a slow
    /// consumer.
    fn overflowed(&self) -> Close {
        self.state
            .metrics
            .queue_overflows
            .with_label_values(&["session_outbound"])
            .inc();
        Close::SlowConsumer
    }

    async fn write(&mut self) -> Result<(), Close> {
        let out = self.machine.transmit();
        let n = out.len();
        let timeout = self.state.config.session.write_timeout_secs;
        // A client that stopped reading overflows its queue while a write waits for room: it
        // is cut off then, not only at the write timeout.
        let written = tokio::select! {
            _ = self.overflow.cancelled() => None,
            written = tokio::time::timeout(timeout, self.io.write(out)) => Some(written),
        };
        let Some(written) = written else {
            return Err(self.overflowed());
        };
        match written {
            Err(_) => Err(Close::SlowConsumer),
            Ok(Err(_)) => Err(Close::ClientClosed),
            Ok(Ok(())) => {
                self.machine.wrote(n);
                self.tell_caught_up().await;
                Ok(())
            }
        }
    }

    /// After a write: a backlogged client whose queue is empty has caught up, and its broker
    /// hears so (PROTOCOL.md §16); with no room on the link now, once there is (the broker
    /// holds the session's packets until it hears).
    async fn tell_caught_up(&mut self) {
        let (Some(rx), Some(broker)) = (self.downlink.as_mut(), &self.broker) else {
            return;
        };
        let id = self.machine.id();
        if rx.caught_up(|| broker.backlog(id, false)) == Some(false)
            && Box::pin(broker.send(Box::new(backlog_frame(id, false)))).await
        {
            rx.told();
        }
    }

    /// Logs and counts `close`, tells the client and the broker what the machine decides.
    async fn finish(&mut self, close: &Close) {
        let metrics = &self.state.metrics;
        if !self.machine.opened() {
            metrics.handshakes.with_label_values(&[close.kind()]).inc();
            if self.machine.redeeming() {
                metrics.resumes.with_label_values(&[close.kind()]).inc();
                tracing::info!(reason = close.kind(), detail = %close, "resume refused");
            }
        }
        metrics.closes.with_label_values(&[close.kind()]).inc();
        match close {
            Close::ClientClosed => tracing::debug!("session closed by the client"),
            other => tracing::info!(reason = other.kind(), detail = %other, "session closed"),
        }
        let farewell = self.machine.close(close, &Now::system());
        if farewell.logout {
            let out = self.machine.transmit();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.io.write(out)).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.close()).await;
        if let Some(broker) = self.broker.take() {
            broker.detach(self.machine.id());
            if let Some(frame) = farewell.to_broker {
                let _ = tokio::time::timeout(Duration::from_secs(1), broker.send(frame)).await;
            }
        }
    }
}

/// The next item of `downlink`; pending while the session has none.
async fn next(downlink: &mut Option<outbox::Receiver<Downlink>>) -> Option<Downlink> {
    match downlink {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
