//! Per-class delivery (PROTOCOL.md §16): the class of each server packet (state, event, reply,
//! control) from `[delivery]`, and the [`Stage`] a session's packets wait in at the broker while
//! its edge reports the client backlogged, or while a state packet's key waits for its rate
//! cap. The stage is where latest-wins happens: a packet replaced there was never numbered, so
//! it is never counted as sent (§13.2) and a resume cannot ask for it. Sans-IO: packets and the
//! time in, packets out, in order.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use janus_proto::packet::Packet;
use janus_protocol::system;
use prometheus::IntCounterVec;
use tokio::time::Instant;

use crate::config::{DeliveryConfig, RuleClass};
use crate::continuity::BroadcastBody;

/// What a server packet is, for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Latest wins per (module, seq, obj); never a reason to disconnect.
    State,
    /// Kept in order, bounded.
    Event,
    /// The answer to a client's request (its index echoed): kept in order, bounded.
    Reply,
    /// A System packet: never held, never replaced.
    Control,
}

impl Class {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Class::State => "state",
            Class::Event => "event",
            Class::Reply => "reply",
            Class::Control => "control",
        }
    }
}

/// A state packet's key.
type Key = (i32, i32, i64);

fn key(packet: &Packet) -> Key {
    (packet.r#mod, packet.seq, packet.obj)
}

/// `[delivery]` resolved: what each packet is, and the bounds of a session's stage.
#[derive(Debug)]
pub struct Delivery {
    /// (module, seq) → class and the gap its rate cap leaves between two packets of a key;
    /// `seq` `None` for a rule over the whole module.
    rules: HashMap<(i32, Option<i32>), (Class, Option<Duration>)>,
    max_pending: usize,
    max_state_keys: usize,
    /// Some rule makes packets state.
    active: bool,
    counted: IntCounterVec,
}

impl Delivery {
    /// Resolves `config` (validated); outcomes are counted in `counted` by class and outcome.
    pub fn new(config: &DeliveryConfig, counted: IntCounterVec) -> Self {
        let mut rules = HashMap::new();
        for rule in &config.rules {
            let class = match rule.class {
                RuleClass::State => Class::State,
                RuleClass::Event => Class::Event,
            };
            let gap =
                (rule.max_rate_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / rule.max_rate_hz));
            let seqs: Vec<Option<i32>> = if rule.seqs.is_empty() {
                vec![None]
            } else {
                rule.seqs.iter().copied().map(Some).collect()
            };
            for seq in seqs {
                // The first rule naming a (module, seq), or a whole module, wins.
                rules.entry((rule.module, seq)).or_insert((class, gap));
            }
        }
        Self {
            active: rules.values().any(|(class, _)| *class == Class::State),
            rules,
            max_pending: config.max_pending,
            max_state_keys: config.max_state_keys,
            counted,
        }
    }

    /// Whether a backlog holds events and replies too: with no state rule only packets a push
    /// asked to be state are held, and everything else goes on as before (an edge's backlog is
    /// its own: it ends the session when its queue is full).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The class of `packet` (`asked` by its push, if it said) and its key's pacing gap.
    pub fn classify(&self, packet: &Packet, asked: Option<Class>) -> (Class, Option<Duration>) {
        if packet.r#mod == system::MODULE {
            return (Class::Control, None);
        }
        if packet.index != 0 {
            return (Class::Reply, None);
        }
        let rule = self
            .rules
            .get(&(packet.r#mod, Some(packet.seq)))
            .or_else(|| self.rules.get(&(packet.r#mod, None)))
            .copied()
            .unwrap_or((Class::Event, None));
        match asked {
            Some(Class::State) if rule.0 == Class::State => rule,
            Some(class @ (Class::State | Class::Event)) => (class, None),
            _ => rule,
        }
    }

    fn count(&self, class: Class, outcome: &str) {
        self.counted
            .with_label_values(&[class.label(), outcome])
            .inc();
    }
}

/// A packet waiting in a stage, with the broadcast body it is, if it is one.
#[derive(Debug, Clone)]
pub struct Waiting {
    /// The packet.
    pub packet: Arc<Packet>,
    /// The broadcast body it is.
    pub broadcast: Option<BroadcastBody>,
    class: Class,
    gap: Option<Duration>,
}

/// What [`Stage::hold`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// The packet waits.
    Waiting,
    /// It waits, and an older one of its key will never be sent.
    Replaced,
    /// An event or reply found `max_pending` waiting: the session ends as `slow_consumer`.
    Overflow,
}

/// One session's packets waiting at its broker, oldest first: every event and reply, and the
/// newest state packet of each key, each where it arrived (a replaced one leaves a hole).
/// Allocated only for a session that has something waiting or a paced key.
#[derive(Debug, Default)]
pub struct Stage {
    slots: VecDeque<Option<Waiting>>,
    /// The number of `slots[0]` since the stage was made.
    head: u64,
    /// Each waiting state packet's key → its slot's number.
    states: HashMap<Key, u64>,
    /// Events and replies waiting.
    pending: usize,
    /// When each paced key that went out lately may go out again.
    due: HashMap<Key, Instant>,
}

impl Stage {
    /// Whether a packet of `class` must wait here rather than go out now, its session not
    /// backlogged: behind waiting events and replies (their order is kept), behind a waiting
    /// packet of its key, or for its key's rate cap.
    pub fn must_wait(&self, packet: &Packet, class: Class, now: Instant) -> bool {
        match class {
            Class::Control => false,
            Class::Event | Class::Reply => self.pending > 0,
            Class::State => {
                let key = key(packet);
                self.pending > 0 || self.states.contains_key(&key) || !self.is_due(key, now)
            }
        }
    }

    fn is_due(&self, key: Key, now: Instant) -> bool {
        self.due.get(&key).is_none_or(|due| now >= *due)
    }

    /// A state packet with pacing `gap` went out now without waiting here. Keys no longer
    /// held back are forgotten once there are more than `max_state_keys` of them.
    pub fn went_out(
        &mut self,
        policy: &Delivery,
        packet: &Packet,
        gap: Option<Duration>,
        now: Instant,
    ) {
        if let Some(gap) = gap {
            self.due.insert(key(packet), now + gap);
            self.forget_due(policy, now);
        }
    }

    fn forget_due(&mut self, policy: &Delivery, now: Instant) {
        if self.due.len() > policy.max_state_keys {
            self.due.retain(|_, due| *due > now);
        }
    }

    /// Holds `packet` of `class` (not control; `gap` its pacing) until [`Stage::next`] gives it
    /// back.
    pub fn hold(
        &mut self,
        policy: &Delivery,
        packet: Arc<Packet>,
        broadcast: Option<BroadcastBody>,
        (class, gap): (Class, Option<Duration>),
        now: Instant,
    ) -> Held {
        let mut held = Held::Waiting;
        if class == Class::State {
            let key = key(&packet);
            if let Some(old) = self.states.remove(&key) {
                self.slots[(old - self.head) as usize] = None;
                policy.count(class, "replaced");
                held = Held::Replaced;
            } else if self.states.len() >= policy.max_state_keys {
                self.drop_oldest_state(policy);
            }
            self.states.insert(key, self.head + self.slots.len() as u64);
            if !self.is_due(key, now) {
                policy.count(class, "paced");
            }
            self.forget_due(policy, now);
        } else {
            if self.pending >= policy.max_pending {
                policy.count(class, "overflow");
                return Held::Overflow;
            }
            self.pending += 1;
        }
        policy.count(class, "held");
        self.slots.push_back(Some(Waiting {
            packet,
            broadcast,
            class,
            gap,
        }));
        self.trim();
        held
    }

    fn drop_oldest_state(&mut self, policy: &Delivery) {
        let oldest = self
            .slots
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|w| w.class == Class::State));
        if let Some(waiting) = oldest.and_then(Option::take) {
            self.states.remove(&key(&waiting.packet));
            policy.count(Class::State, "dropped");
        }
    }

    /// The oldest waiting packet that may go out now, taken out of the stage. A state packet
    /// whose key is not yet due is passed over: it stays, and may still be replaced.
    pub fn next(&mut self, now: Instant) -> Option<Waiting> {
        let at = self.slots.iter().position(|slot| {
            slot.as_ref()
                .is_some_and(|w| w.class != Class::State || self.is_due(key(&w.packet), now))
        })?;
        let waiting = self.slots[at].take()?;
        if waiting.class == Class::State {
            let key = key(&waiting.packet);
            self.states.remove(&key);
            if let Some(gap) = waiting.gap {
                self.due.insert(key, now + gap);
            }
        } else {
            self.pending -= 1;
        }
        self.trim();
        Some(waiting)
    }

    fn trim(&mut self) {
        while self.slots.front().is_some_and(Option::is_none) {
            self.slots.pop_front();
            self.head += 1;
        }
    }

    /// When the first paced packet waiting is due, if one waits.
    pub fn next_due(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|w| self.due.get(&key(&w.packet)).copied())
            .min()
    }

    /// Everything waiting, oldest first, pacing aside: what a session that loses its
    /// connection keeps for its resume (numbered then).
    pub fn take_all(&mut self) -> Vec<Waiting> {
        let all = self.slots.drain(..).flatten().collect();
        self.states.clear();
        self.pending = 0;
        self.head = 0;
        all
    }

    /// Whether nothing waits and no key's rate cap holds one back any more: the stage can go.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.slots.is_empty() && self.due.values().all(|due| *due <= now)
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;

    use super::*;
    use crate::config::DeliveryRule;

    const POSITION: i32 = 7;
    const CHAT: i32 = 8;

    fn policy(max_rate_hz: f64, max_pending: usize, max_state_keys: usize) -> Delivery {
        let config = DeliveryConfig {
            max_pending,
            max_state_keys,
            rules: vec![DeliveryRule {
                module: 5,
                seqs: vec![POSITION],
                class: RuleClass::State,
                max_rate_hz,
            }],
        };
        let counted = IntCounterVec::new(Opts::new("t", "t"), &["class", "outcome"]).unwrap();
        Delivery::new(&config, counted)
    }

    fn packet(seq: i32, obj: i64, n: u8) -> Arc<Packet> {
        Arc::new(Packet {
            r#mod: 5,
            seq,
            obj,
            data: vec![n],
            ..Packet::default()
        })
    }

    fn hold(stage: &mut Stage, policy: &Delivery, packet: Arc<Packet>, now: Instant) -> Held {
        let class = policy.classify(&packet, None);
        stage.hold(policy, packet, None, class, now)
    }

    fn drain(stage: &mut Stage, now: Instant) -> Vec<(i32, i64, u8)> {
        std::iter::from_fn(|| stage.next(now))
            .map(|w| (w.packet.seq, w.packet.obj, w.packet.data[0]))
            .collect()
    }

    fn counted(policy: &Delivery, class: &str, outcome: &str) -> u64 {
        policy.counted.with_label_values(&[class, outcome]).get()
    }

    #[test]
    fn classes_come_from_the_rules_and_replies_and_system_packets_are_what_they_are() {
        let policy = policy(0.0, 8, 8);
        assert!(policy.is_active());
        assert_eq!(
            policy.classify(&packet(POSITION, 1, 0), None).0,
            Class::State
        );
        assert_eq!(policy.classify(&packet(CHAT, 1, 0), None).0, Class::Event);
        let reply = Packet {
            index: 3,
            ..(*packet(POSITION, 1, 0)).clone()
        };
        assert_eq!(policy.classify(&reply, Some(Class::State)).0, Class::Reply);
        let logout = system::packet(4, 0, Vec::new());
        assert_eq!(
            policy.classify(&logout, Some(Class::State)).0,
            Class::Control
        );
        let none = Delivery::new(&DeliveryConfig::default(), policy.counted.clone());
        assert!(!none.is_active());
        assert_eq!(none.classify(&packet(POSITION, 1, 0), None).0, Class::Event);
        // A push may ask: its class wins over the rules, the rule's pacing only for state.
        assert_eq!(
            none.classify(&packet(CHAT, 1, 0), Some(Class::State)),
            (Class::State, None)
        );
        assert_eq!(
            policy
                .classify(&packet(POSITION, 1, 0), Some(Class::Event))
                .0,
            Class::Event
        );
    }

    #[test]
    fn the_latest_state_of_each_key_and_every_event_go_out_in_the_order_they_came() {
        let policy = policy(0.0, 64, 64);
        let now = Instant::now();
        let mut stage = Stage::default();
        for n in 0..200u8 {
            let held = hold(
                &mut stage,
                &policy,
                packet(POSITION, i64::from(n % 3), n),
                now,
            );
            assert_eq!(held == Held::Replaced, n >= 3);
            if n % 50 == 0 {
                hold(&mut stage, &policy, packet(CHAT, 0, n), now);
            }
        }
        assert_eq!(
            drain(&mut stage, now),
            [
                (CHAT, 0, 0),
                (CHAT, 0, 50),
                (CHAT, 0, 100),
                (CHAT, 0, 150),
                (POSITION, 2, 197),
                (POSITION, 0, 198),
                (POSITION, 1, 199),
            ]
        );
        assert!(stage.is_idle(now));
        assert_eq!(counted(&policy, "state", "replaced"), 197);
        assert_eq!(counted(&policy, "event", "held"), 4);
    }

    #[test]
    fn events_beyond_the_bound_overflow_and_state_beyond_its_keys_drops_the_oldest() {
        let policy = policy(0.0, 2, 2);
        let now = Instant::now();
        let mut stage = Stage::default();
        assert_eq!(
            hold(&mut stage, &policy, packet(CHAT, 0, 1), now),
            Held::Waiting
        );
        assert_eq!(
            hold(&mut stage, &policy, packet(CHAT, 0, 2), now),
            Held::Waiting
        );
        assert_eq!(
            hold(&mut stage, &policy, packet(CHAT, 0, 3), now),
            Held::Overflow
        );
        for obj in 0..3 {
            assert_eq!(
                hold(&mut stage, &policy, packet(POSITION, obj, 9), now),
                Held::Waiting
            );
        }
        assert_eq!(counted(&policy, "state", "dropped"), 1);
        assert_eq!(
            drain(&mut stage, now),
            [
                (CHAT, 0, 1),
                (CHAT, 0, 2),
                (POSITION, 1, 9),
                (POSITION, 2, 9)
            ]
        );
    }

    #[test]
    fn a_paced_key_goes_out_at_its_rate_with_the_newest_packet_and_events_pass_it() {
        let policy = policy(10.0, 64, 64);
        let gap = Duration::from_millis(100);
        let start = Instant::now();
        let mut stage = Stage::default();
        let first = packet(POSITION, 1, 0);
        let class = policy.classify(&first, None);
        assert_eq!(class, (Class::State, Some(gap)));
        assert!(!stage.must_wait(&first, class.0, start));
        stage.went_out(&policy, &first, class.1, start);
        let later = start + Duration::from_millis(30);
        for n in 1..5 {
            assert!(stage.must_wait(&packet(POSITION, 1, n), Class::State, later));
            hold(&mut stage, &policy, packet(POSITION, 1, n), later);
        }
        assert!(!stage.must_wait(&packet(CHAT, 0, 9), Class::Event, later));
        assert_eq!(drain(&mut stage, later), []);
        assert_eq!(stage.next_due(), Some(start + gap));
        assert_eq!(drain(&mut stage, start + gap), [(POSITION, 1, 4)]);
        assert!(
            !stage.is_idle(start + gap),
            "the key went out again just now"
        );
        assert!(stage.is_idle(start + gap * 2));
        assert_eq!(counted(&policy, "state", "paced"), 4);
    }

    #[test]
    fn a_lost_connection_takes_everything_waiting_pacing_aside() {
        let policy = policy(1.0, 64, 64);
        let now = Instant::now();
        let mut stage = Stage::default();
        stage.went_out(
            &policy,
            &packet(POSITION, 1, 0),
            Some(Duration::from_secs(1)),
            now,
        );
        hold(&mut stage, &policy, packet(POSITION, 1, 1), now);
        hold(&mut stage, &policy, packet(CHAT, 0, 2), now);
        let all: Vec<u8> = stage.take_all().iter().map(|w| w.packet.data[0]).collect();
        assert_eq!(all, [1, 2]);
        assert!(stage.is_idle(now + Duration::from_secs(1)));
    }
}
