//! No single process death loses a push or a player (PROTOCOL.md §13.5), on the whole split
//! deployment in containers (see [`janus_integration_tests::cluster`]: two edges, here two
//! brokers, Redis, NATS, etcd, the demo game), with the brokers' bus on NATS and then on Redis. 500 resumable players, half on each edge, over
//! TCP and WebSocket, receive numbered pushes that a game service sends through the broadcaster
//! push API (`Multicast`, one stream per broker for the players whose session it holds), paced
//! so that the stream spans each death:
//!
//! 1. edge 0 is SIGKILLed: its players find their connection gone and resume at edge 1 (a
//!    retry loop with backoff and jitter, as a game client would); their broker parked their
//!    sessions meanwhile. Nobody is logged out, every push arrives exactly once and in order.
//!    Edge 0 is started again and its players move back to it (a resume while connected).
//! 2. broker 1 is SIGKILLed: the edges re-attach its sessions to broker 0, handing over the
//!    unacknowledged tail; the game service pushes through broker 0 once broker 1 stops
//!    answering. Nobody is logged out, nothing arrives twice or out of order, and nothing is
//!    lost but pushes whose call failed (a push call is answered once the edge holds the push,
//!    §13.5). A push through the surviving broker while the route still named the dead one
//!    waits for the session's new route and arrives in order. Any push whose call succeeded
//!    and that never arrived fails the test. Broadcasts through broker 0 meanwhile reach every
//!    player exactly once and in order, those sent while the victim's sessions were between
//!    brokers included.
//!
//! 3. broker 1 is started again: the edges move the sessions the hash gives it back there,
//!    paced, while pushes flow (PROTOCOL.md §13.5). Nobody reconnects or is logged out, and
//!    every push arrives exactly once and in order.
//!
//! Players acknowledge what they received (the client library's `CSResumeAck`, carried by a
//! heartbeat every second). UDP transports (KCP, QUIC) are left out: they have no close that
//! tells a client its edge died, only a heartbeat timeout, which would make the resume time a
//! measure of that timeout. What the deaths cost is printed as `chaos: …` lines.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use janus_client::{Client, Endpoint, unix_now};
use janus_edge::rendezvous_score;
use janus_integration_tests::cluster::Cluster;
use janus_integration_tests::stack::{COLOR, GameKind, http_get};
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::message::{ScServerLogout, ScServerUnexpectedErr};
use janus_proto::packet::Packet;
use janus_protocol::handshake::Mode;
use janus_protocol::system;
use prost::Message;
use testcontainers::core::IntoContainerPort;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Players, uids `FIRST_UID..FIRST_UID + PLAYERS`.
const PLAYERS: i64 = 500;
const FIRST_UID: i64 = 20_000;
/// The module of the numbered pushes.
const PUSH_MODULE: i32 = 9;
/// The module of the numbered broadcasts (the broker-kill and rebalance phases).
const BROADCAST_MODULE: i32 = 10;
/// Pause between two broadcasts (each waited for).
const BROADCAST_PAUSE: Duration = Duration::from_millis(250);
/// Pause between two pushes of one stream (one `Multicast` per broker, each waited for).
const PUSH_PAUSE: Duration = Duration::from_millis(100);
/// How long a push call may take before it counts as failed (the stream then goes on through
/// the next broker). Generous: 500 resumes at once keep a debug build busy.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeats (which carry the acknowledgements) per player.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// A player gives up resuming after this long (the resume window is 30 s).
const RESUME_DEADLINE: Duration = Duration::from_secs(25);
/// How long one resume attempt may take. Generous: 250 resumes at once take seconds on a
/// debug build, and a client that gives up on an attempt the broker has granted holds a spent
/// ticket (its next attempts are refused).
const RESUME_TIMEOUT: Duration = Duration::from_secs(15);
/// Once the pushes stop, a player stops listening after this long without one.
const QUIET: Duration = Duration::from_millis(1500);
/// Transports the players use, by index into [`Cluster::endpoints`]: TCP and WebSocket.
const TRANSPORTS: [usize; 2] = [0, 1];

/// One resumable player.
struct Player {
    uid: i64,
    client: Client,
    /// The edge it is connected to now.
    edge: usize,
    /// Index into [`TRANSPORTS`].
    transport: usize,
}

/// Where every player can connect: `[edge][transport]`.
type Targets = Arc<Vec<Vec<Endpoint>>>;

async fn endpoints_of(cluster: &Cluster) -> Targets {
    let mut all = Vec::new();
    for edge in 0..cluster.edges.len() {
        let endpoints = cluster.endpoints(edge).await;
        all.push(TRANSPORTS.iter().map(|t| endpoints[*t].1.clone()).collect());
    }
    Arc::new(all)
}

/// A random duration in `[0, max)`.
fn jitter(max: Duration) -> Duration {
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    max.mul_f64((random % 1000) as f64 / 1000.0)
}

/// What a player saw during a phase.
struct Seen {
    player: Player,
    /// The numbered pushes of the phase, in arrival order, and when each arrived.
    got: Vec<(u32, Instant)>,
    /// The numbered broadcasts of the phase, in arrival order.
    broadcasts: Vec<u32>,
    /// The code of the SCServerLogout that ended the session, if one came.
    logout: Option<i32>,
    /// Other packets (SCServerUnexpectedErr and anything unexpected), described.
    other: Vec<String>,
    /// Every resume: when the connection was found lost, when the resume succeeded, after how
    /// many attempts, and what the loss looked like.
    resumes: Vec<(Instant, Instant, usize, String)>,
    /// Why the player gave up resuming, if it did.
    failed: Option<String>,
}

impl Seen {
    /// Takes in a packet; `false` once the session has ended.
    fn take(&mut self, packet: &Packet, tag: &str) -> bool {
        if system::is_heartbeat(packet) {
            return true;
        }
        match (packet.r#mod, packet.seq) {
            (system::MODULE, system::SEQ_LOGOUT) => {
                self.logout = Some(ScServerLogout::decode(&packet.data[..]).map_or(-1, |l| l.code));
                return false;
            }
            (system::MODULE, system::SEQ_UNEXPECTED_ERR) => self.other.push(format!(
                "SCServerUnexpectedErr {:?}",
                ScServerUnexpectedErr::decode(&packet.data[..]).map(|e| e.msg)
            )),
            (module @ (PUSH_MODULE | BROADCAST_MODULE), _) => {
                let text = String::from_utf8_lossy(&packet.data);
                match text.split_once('/').map(|(t, n)| (t, n.parse::<u32>())) {
                    Some((t, Ok(n))) if t == tag && module == PUSH_MODULE => {
                        self.got.push((n, Instant::now()));
                    }
                    Some((t, Ok(n))) if t == tag => self.broadcasts.push(n),
                    _ => self
                        .other
                        .push(format!("push {text:?} outside phase {tag}")),
                }
            }
            (m, s) => self
                .other
                .push(format!("packet mod {m} seq {s} index {}", packet.index)),
        }
        true
    }
}

/// Resumes `player`'s session after its connection was lost: at the other edge first, then
/// alternating, with exponential backoff (50 ms to 1 s) plus jitter, for at most
/// [`RESUME_DEADLINE`]. The number of attempts it took.
async fn resume_with_retry(player: &mut Player, targets: &Targets) -> Result<usize, String> {
    let deadline = Instant::now() + RESUME_DEADLINE;
    let mut backoff = Duration::from_millis(50);
    let mut errors = Vec::new();
    for attempt in 0.. {
        let edge = (player.edge + 1 + attempt) % targets.len();
        let endpoint = &targets[edge][player.transport];
        match player.client.resume(endpoint, RESUME_TIMEOUT).await {
            Ok(()) => {
                player.edge = edge;
                return Ok(attempt + 1);
            }
            Err(e) => errors.push(format!("edge {edge}: {e}")),
        }
        if Instant::now() + backoff >= deadline {
            break;
        }
        tokio::time::sleep(backoff / 2 + jitter(backoff)).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
    Err(format!(
        "uid {} could not resume within {RESUME_DEADLINE:?}: {errors:?}",
        player.uid
    ))
}

/// One player's part of a phase: receives pushes and heartbeats every second until `stop` and
/// [`QUIET`]; a lost connection is resumed ([`resume_with_retry`]).
async fn play(
    player: Player,
    tag: &'static str,
    targets: Targets,
    stop: CancellationToken,
    resumed: Arc<AtomicUsize>,
) -> Seen {
    let mut seen = Seen {
        player,
        got: Vec::new(),
        broadcasts: Vec::new(),
        logout: None,
        other: Vec::new(),
        resumes: Vec::new(),
        failed: None,
    };
    let mut last_push = Instant::now();
    let mut next_beat = Instant::now() + jitter(HEARTBEAT_EVERY);
    loop {
        if stop.is_cancelled() && last_push.elapsed() >= QUIET {
            break;
        }
        let wait = next_beat
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        let lost = match tokio::time::timeout(wait, seen.player.client.recv()).await {
            Ok(Ok(packet)) => {
                if !seen.take(&packet, tag) {
                    break;
                }
                if packet.r#mod == PUSH_MODULE {
                    last_push = Instant::now();
                }
                None
            }
            Ok(Err(e)) => Some(format!("receive: {e}")),
            Err(_) if Instant::now() >= next_beat => {
                next_beat += HEARTBEAT_EVERY;
                let beat = system::heartbeat(unix_now());
                seen.player
                    .client
                    .send(beat)
                    .await
                    .err()
                    .map(|e| format!("heartbeat: {e}"))
            }
            Err(_) => None,
        };
        if let Some(loss) = lost {
            let at = Instant::now();
            match resume_with_retry(&mut seen.player, &targets).await {
                Ok(attempts) => {
                    seen.resumes.push((at, Instant::now(), attempts, loss));
                    resumed.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    seen.failed = Some(format!("{loss}; then {e}"));
                    break;
                }
            }
        }
    }
    seen
}

/// One push of a stream: a `Multicast` of `"{tag}/{n}"` to the stream's uids.
struct Round {
    n: u32,
    /// The broker whose push API was called.
    via: usize,
    started: Instant,
    ended: Instant,
    /// `pushed_uids`, or why the call failed.
    pushed: Result<BTreeSet<i64>, String>,
}

use janus_integration_tests::cluster::PushApi;

/// The push stream to the players whose session broker `group` holds, through that broker's
/// push API until a call fails, then through the next broker's, until `stop`.
async fn push_stream(
    tag: &'static str,
    group: usize,
    uids: Vec<i64>,
    mut apis: Vec<PushApi>,
    stop: CancellationToken,
) -> Vec<Round> {
    let mut rounds = Vec::new();
    let mut via = group;
    for n in 0.. {
        if stop.is_cancelled() {
            break;
        }
        let request = bc::MulticastRequest {
            bodies: vec![bc::PushBody {
                data: format!("{tag}/{n}").into_bytes(),
                r#mod: PUSH_MODULE,
                ..Default::default()
            }],
            uids: uids.clone(),
            color: COLOR.into(),
        };
        let started = Instant::now();
        let pushed = match tokio::time::timeout(PUSH_TIMEOUT, apis[via].multicast(request)).await {
            Ok(Ok(response)) => Ok(response.into_inner().pushed_uids.into_iter().collect()),
            Ok(Err(status)) => Err(status.to_string()),
            Err(_) => Err(format!("no answer within {PUSH_TIMEOUT:?}")),
        };
        let failed = pushed.is_err();
        rounds.push(Round {
            n,
            via,
            started,
            ended: Instant::now(),
            pushed,
        });
        if failed {
            via = (via + 1) % apis.len();
        } else {
            tokio::time::sleep(PUSH_PAUSE).await;
        }
    }
    rounds
}

/// Numbered broadcasts `"{tag}/{n}"` to every player (all on sid 1) through `api`, each
/// waited for, until `stop`: whether each call succeeded.
async fn broadcast_stream(
    tag: &'static str,
    mut api: PushApi,
    stop: CancellationToken,
) -> Vec<Result<(), String>> {
    let mut calls = Vec::new();
    while !stop.is_cancelled() {
        let request = bc::BroadcastRequest {
            bodies: vec![bc::PushBody {
                data: format!("{tag}/{}", calls.len()).into_bytes(),
                r#mod: BROADCAST_MODULE,
                ..Default::default()
            }],
            color: COLOR.into(),
            sid: 1,
        };
        calls.push(
            match tokio::time::timeout(PUSH_TIMEOUT, api.broadcast(request)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(status)) => Err(status.to_string()),
                Err(_) => Err(format!("no answer within {PUSH_TIMEOUT:?}")),
            },
        );
        tokio::time::sleep(BROADCAST_PAUSE).await;
    }
    calls
}

/// Checks that every player got the broadcasts exactly once and in order, and every one whose
/// call succeeded; the uids that missed some, with the broadcasts they missed.
fn missed_broadcasts(seen: &[Seen], calls: &[Result<(), String>]) -> Vec<(i64, Vec<usize>)> {
    let mut missed = Vec::new();
    for s in seen {
        let uid = s.player.uid;
        assert!(
            s.broadcasts.windows(2).all(|w| w[0] < w[1]),
            "uid {uid}: broadcasts repeated or out of order: {:?}",
            s.broadcasts
        );
        let lost: Vec<usize> = (0..calls.len())
            .filter(|n| calls[*n].is_ok() && !s.broadcasts.contains(&(*n as u32)))
            .collect();
        if !lost.is_empty() {
            missed.push((uid, lost));
        }
    }
    missed
}

/// A phase: every player listening, one push stream per broker.
struct Phase {
    tag: &'static str,
    stop_pushing: CancellationToken,
    stop_playing: CancellationToken,
    resumed: Arc<AtomicUsize>,
    streams: Vec<JoinHandle<Vec<Round>>>,
    players: Vec<JoinHandle<Seen>>,
}

impl Phase {
    /// Starts the players and a push stream per broker; `home` names the broker of a uid.
    async fn start(
        cluster: &Cluster,
        tag: &'static str,
        players: Vec<Player>,
        home: impl Fn(i64) -> usize,
        targets: Targets,
    ) -> Self {
        let stop_pushing = CancellationToken::new();
        let stop_playing = CancellationToken::new();
        let resumed = Arc::new(AtomicUsize::new(0));
        let mut groups = vec![Vec::new(); cluster.brokers.len()];
        for p in &players {
            groups[home(p.uid)].push(p.uid);
        }
        let players = players
            .into_iter()
            .map(|p| {
                tokio::spawn(play(
                    p,
                    tag,
                    targets.clone(),
                    stop_playing.clone(),
                    resumed.clone(),
                ))
            })
            .collect();
        let apis = push_apis(cluster).await;
        let streams = groups
            .into_iter()
            .enumerate()
            .map(|(group, uids)| {
                tokio::spawn(push_stream(
                    tag,
                    group,
                    uids,
                    apis.clone(),
                    stop_pushing.clone(),
                ))
            })
            .collect();
        Self {
            tag,
            stop_pushing,
            stop_playing,
            resumed,
            streams,
            players,
        }
    }

    /// Stops the pushes, then the players once they have had [`QUIET`]: every stream's rounds
    /// (by broker) and what every player saw.
    async fn finish(self) -> (Vec<Vec<Round>>, Vec<Seen>) {
        self.stop_pushing.cancel();
        let mut streams = Vec::new();
        for stream in self.streams {
            streams.push(stream.await.unwrap());
        }
        self.stop_playing.cancel();
        let mut seen = Vec::new();
        for player in self.players {
            seen.push(player.await.unwrap());
        }
        (streams, seen)
    }
}

/// A push API client per broker.
async fn push_apis(cluster: &Cluster) -> Vec<PushApi> {
    let mut apis = Vec::new();
    for broker in 0..cluster.brokers.len() {
        apis.push(cluster.push_api(broker).await);
    }
    apis
}

/// Logs every player in, resumable, `concurrency` at a time: uid `FIRST_UID + i` at edge
/// `i % 2` over transport `i / 2 % 2`.
async fn log_in(cluster: &Cluster, targets: &Targets) -> Vec<Player> {
    let mut config = cluster.keys.client_config(Mode::V2);
    config.handshake.resumable = true;
    config.handshake_timeout = Duration::from_secs(20);
    let config = &config;
    let logins = (0..PLAYERS).map(|i| async move {
        let uid = FIRST_UID + i;
        let (edge, transport) = ((i % 2) as usize, (i / 2 % 2) as usize);
        let endpoint = &targets[edge][transport];
        let client = Client::connect(endpoint, config, &cluster.keys.token(uid))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "uid {uid} cannot log in at {endpoint:?}: {e}\n{}",
                    cluster.diagnostics()
                )
            });
        assert!(client.resume_ticket().is_some(), "uid {uid} has a ticket");
        Player {
            uid,
            client,
            edge,
            transport,
        }
    });
    let mut players: Vec<Player> = futures_util::stream::iter(logins)
        .buffer_unordered(16)
        .collect()
        .await;
    players.sort_by_key(|p| p.uid);
    players
}

/// Checks that `seen`'s pushes came exactly once and in order; the numbers it was owed
/// (`pushed_uids` named it) and did not get.
fn missing(seen: &Seen, rounds: &[Round]) -> Vec<u32> {
    let numbers: Vec<u32> = seen.got.iter().map(|(n, _)| *n).collect();
    let out_of_order: Vec<&[u32]> = numbers.windows(2).filter(|w| w[0] >= w[1]).collect();
    assert!(
        out_of_order.is_empty(),
        "uid {}: pushes repeated or out of order at {out_of_order:?}: {numbers:?}",
        seen.player.uid
    );
    let got: BTreeSet<u32> = numbers.into_iter().collect();
    rounds
        .iter()
        .filter(|r| {
            r.pushed
                .as_ref()
                .is_ok_and(|uids| uids.contains(&seen.player.uid))
        })
        .map(|r| r.n)
        .filter(|n| !got.contains(n))
        .collect()
}

/// Asserts that nobody was logged out or gave up, and that no unexpected packet came.
fn assert_nobody_lost(cluster: &Cluster, seen: &[Seen], what: &str) {
    for s in seen {
        assert!(
            s.logout.is_none() && s.failed.is_none() && s.other.is_empty(),
            "{what}: uid {} (edge {}): logout {:?}, gave up: {:?}, other packets: {:?}\n{}",
            s.player.uid,
            s.player.edge,
            s.logout,
            s.failed,
            s.other,
            cluster.diagnostics()
        );
    }
}

/// "max …, median …" of `values`, in milliseconds.
fn spread(mut values: Vec<Duration>) -> String {
    values.sort();
    match (values.last(), values.get(values.len() / 2)) {
        (Some(max), Some(median)) => {
            format!(
                "max {} ms, median {} ms",
                max.as_millis(),
                median.as_millis()
            )
        }
        _ => "none".into(),
    }
}

/// The broker each uid's session is on, from the edges' rendezvous hash over the brokers that
/// are up, checked against the brokers' own counts.
async fn homes(cluster: &Cluster, players: &[Player]) -> (Vec<String>, BTreeMap<i64, usize>) {
    let stats = cluster.broker_stats().await;
    let endpoints: Vec<String> = stats
        .iter()
        .map(|s| s.as_ref().expect("every broker answers").endpoint.clone())
        .collect();
    let home: BTreeMap<i64, usize> = players
        .iter()
        .map(|p| {
            let b = (0..endpoints.len())
                .max_by_key(|b| rendezvous_score(p.uid, &endpoints[*b]))
                .unwrap();
            (p.uid, b)
        })
        .collect();
    let mut predicted = vec![0; endpoints.len()];
    for b in home.values() {
        predicted[*b] += 1;
    }
    let counted: Vec<usize> = stats.iter().map(|s| s.as_ref().unwrap().sessions).collect();
    assert_eq!(predicted, counted, "sessions per broker: hash vs /stats");
    assert!(
        counted.iter().all(|n| *n > 0),
        "sessions on every broker: {counted:?}"
    );
    (endpoints, home)
}

/// Waits (at most `cap`) until `done` holds.
async fn until(cap: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + cap;
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The suite on the NATS bus, then on the Redis bus (a go-pantheon deployment's, with no NATS),
/// one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_single_process_death_loses_a_push_or_a_player() {
    suite("nats").await;
    suite("redis").await;
}

async fn suite(bus: &'static str) {
    eprintln!("chaos: continuity suite on the {bus} bus");
    let test_started = Instant::now();
    let cluster = Cluster::start_on_bus(GameKind::Demo, 2, bus).await;
    let cluster_up = test_started.elapsed();
    let targets = endpoints_of(&cluster).await;
    let login_started = Instant::now();
    let players = log_in(&cluster, &targets).await;
    let login_took = login_started.elapsed();
    let (_, home) = homes(&cluster, &players).await;

    // 1. Edge 0 is SIGKILLed while pushes flow.
    let killed_edge = 0;
    let on_killed: BTreeSet<i64> = players
        .iter()
        .filter(|p| p.edge == killed_edge)
        .map(|p| p.uid)
        .collect();
    let phase = Phase::start(&cluster, "edge", players, |uid| home[&uid], targets.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kill = Instant::now();
    let kill_wall = std::time::SystemTime::now();
    cluster.sigkill(&cluster.edges[killed_edge]).await;
    let kill_took = kill.elapsed();
    until(Duration::from_secs(30), || {
        phase.resumed.load(Ordering::Relaxed) >= on_killed.len()
    })
    .await;
    let all_resumed = kill.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tag = phase.tag;
    let (streams, seen) = phase.finish().await;
    assert_nobody_lost(&cluster, &seen, "edge kill");
    // A failed call (the game service's connection broke) loses nothing the API confirmed; the
    // stream goes on through the other broker. What a call confirms names every session of its
    // stream, parked ones included.
    let mut failed_calls = 0;
    for (b, rounds) in streams.iter().enumerate() {
        let wanted = seen.iter().filter(|s| home[&s.player.uid] == b).count();
        for r in rounds {
            match &r.pushed {
                Ok(uids) => assert_eq!(
                    uids.len(),
                    wanted,
                    "{tag} push {} of broker {b}'s stream (through broker {}): every session \
                     counts as pushed, parked ones included",
                    r.n,
                    r.via
                ),
                Err(_) => failed_calls += 1,
            }
        }
    }
    let mut resume_done = Vec::new();
    let mut attempts = Vec::new();
    // Pushes owed and never received, by (broker, push number): the uids.
    let mut losses: BTreeMap<(usize, u32), Vec<i64>> = BTreeMap::new();
    for s in &seen {
        let uid = s.player.uid;
        for n in missing(s, &streams[home[&uid]]) {
            losses.entry((home[&uid], n)).or_default().push(uid);
        }
        if on_killed.contains(&uid) {
            assert_eq!(
                s.resumes.len(),
                1,
                "uid {uid} of the killed edge resumed once"
            );
            assert_eq!(
                s.player.edge,
                1 - killed_edge,
                "uid {uid} is at the other edge"
            );
            let (_, done, n, _) = &s.resumes[0];
            resume_done.push(*done - kill);
            attempts.push(*n);
        } else {
            assert!(
                s.resumes.is_empty(),
                "uid {uid} of the surviving edge lost its connection: {:?}",
                s.resumes.iter().map(|r| &r.3).collect::<Vec<_>>()
            );
        }
    }
    let pushes: usize = seen.iter().map(|s| s.got.len()).sum();
    let calls = spread(
        streams
            .iter()
            .flatten()
            .map(|r| r.ended - r.started)
            .collect(),
    );
    eprintln!(
        "chaos: edge kill: {} sessions resumed at the other edge, last resume {} ms after the \
         kill (`docker kill` took {} ms; resume done: {}; attempts per session: max {}, {} needed more than one); \
         {} sessions on the surviving edge kept their connection; {pushes} numbered pushes to \
         {} sessions in order and none twice, {} owed and never received (push calls took \
         {calls}, {failed_calls} failed); logged out: none",
        resume_done.len(),
        resume_done.iter().max().unwrap().as_millis(),
        kill_took.as_millis(),
        spread(resume_done.clone()),
        attempts.iter().max().unwrap(),
        attempts.iter().filter(|n| **n > 1).count(),
        seen.len() - on_killed.len(),
        seen.len(),
        losses.values().map(Vec::len).sum::<usize>(),
    );
    let mut failures = Vec::new();
    if !losses.is_empty() {
        failures.push(format!(
            "edge kill: pushes reported pushed (pushed_uids) never arrived, at {}: {}\n{}",
            wall_clock(kill_wall),
            describe_losses(&losses, &streams, &on_killed, kill),
            logged(&cluster, "edge queue full").await,
        ));
    }
    assert_eq!(
        cluster.sessions_by_broker().await.iter().sum::<usize>(),
        seen.len(),
        "every session is still on its broker"
    );
    assert!(all_resumed < Duration::from_secs(30));

    // Edge 0 comes back; its players move back to it (a resume while connected).
    let restarted = Instant::now();
    cluster.restart_edge(killed_edge).await;
    let restart_took = restarted.elapsed();
    let targets = endpoints_of(&cluster).await;
    let mut players: Vec<Player> = seen.into_iter().map(|s| s.player).collect();
    let moving = Instant::now();
    let moves = players
        .iter_mut()
        .filter(|p| on_killed.contains(&p.uid))
        .map(|p| {
            let targets = targets.clone();
            async move {
                let endpoint = &targets[killed_edge][p.transport];
                p.client
                    .resume(endpoint, Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("uid {} moves back to edge 0: {e}", p.uid));
                p.edge = killed_edge;
            }
        });
    futures_util::stream::iter(moves)
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let moved_back = moving.elapsed();
    let mut on_edges = Vec::new();
    for edge in 0..cluster.edges.len() {
        let mut links = cluster.edge_links(edge).await;
        for _ in 0..50 {
            if links.iter().map(|l| l.sessions).sum::<usize>() == players.len() / 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            links = cluster.edge_links(edge).await;
        }
        on_edges.push(links.iter().map(|l| l.sessions).sum::<usize>());
    }
    assert_eq!(
        on_edges,
        vec![players.len() / 2; 2],
        "sessions per edge after the move back"
    );
    eprintln!(
        "chaos: edge restart: edge {killed_edge} linked every broker {} ms after `docker start`; \
         its {} players moved back to it by resuming while connected in {} ms",
        restart_took.as_millis(),
        on_killed.len(),
        moved_back.as_millis(),
    );

    // 2. Broker 1 is SIGKILLed while pushes flow.
    let (endpoints, home) = homes(&cluster, &players).await;
    let victim = 1;
    let survivor = 0;
    let phase = Phase::start(&cluster, "broker", players, |uid| home[&uid], targets).await;
    // Broadcasts through the survivor too: those that find the victim gone reach its sessions
    // where they are re-attached (PROTOCOL.md §13.5).
    let stop_broadcasts = CancellationToken::new();
    let broadcasts = tokio::spawn(broadcast_stream(
        phase.tag,
        push_apis(&cluster).await.swap_remove(survivor),
        stop_broadcasts.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kill = Instant::now();
    let kill_wall = std::time::SystemTime::now();
    cluster.sigkill(&cluster.brokers[victim]).await;
    let killed = Instant::now();
    // Pacing, not an assertion: the pushes go on long enough for every session to be
    // re-attached and receive again; what follows checks that they did.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let tag = phase.tag;
    stop_broadcasts.cancel();
    let broadcasts = broadcasts.await.unwrap();
    let (streams, seen) = phase.finish().await;
    assert_nobody_lost(&cluster, &seen, "broker kill");
    let lost_broadcasts = missed_broadcasts(&seen, &broadcasts);
    let admin = cluster.brokers[survivor]
        .get_host_port_ipv4(18101.tcp())
        .await
        .unwrap();
    let (_, metrics) = http_get(([127, 0, 0, 1], admin).into(), "/metrics").await;
    let noticed: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("janus_broker_missed_broadcasts_total"))
        .collect();
    eprintln!(
        "chaos: broker kill: {} broadcasts through the survivor to all {} players, one every {} \
         ms; {} calls failed (the caller's to repeat); confirmed and missed by a player: {}; \
         repeated or out of order: none; the survivor's {noticed:?}; {}",
        broadcasts.len(),
        seen.len(),
        BROADCAST_PAUSE.as_millis(),
        broadcasts.iter().filter(|c| c.is_err()).count(),
        lost_broadcasts.len(),
        logged(&cluster, "a broadcast found brokers gone")
            .await
            .trim_end()
    );
    if !lost_broadcasts.is_empty() {
        failures.push(format!(
            "broker kill: broadcasts whose call succeeded never reached these players (uid, \
             broadcasts): {:?}",
            &lost_broadcasts[..lost_broadcasts.len().min(20)]
        ));
    }
    let mut lost_early = Vec::new();
    let mut flowing_again = Vec::new();
    let mut calm = Vec::new();
    for s in &seen {
        let uid = s.player.uid;
        let group = home[&uid];
        let rounds = &streams[group];
        let lost = missing(s, rounds);
        let round = |n: u32| &rounds[n as usize];
        // Pushes flow again: one sent after the kill arrived.
        if !s.got.iter().any(|(n, _)| round(*n).started > killed) {
            panic!(
                "{tag}: uid {uid} (broker {group}) got no push sent after the kill; last \
                     got {:?}\n{}",
                s.got.last().map(|(n, _)| n),
                cluster.diagnostics()
            )
        }
        if group == survivor {
            if !lost.is_empty() {
                failures.push(format!(
                    "broker kill: uid {uid} on the surviving broker lost pushes {lost:?}"
                ));
            }
            calm.push(longest_gap_from(s, kill));
            continue;
        }
        flowing_again.push(longest_gap_from(s, kill));
        // A push call is answered once the edge holds the push (§13.5): every confirmed one,
        // up to the kill's last instant, must arrive.
        for n in lost {
            let r = round(n);
            lost_early.push((uid, n, kill.saturating_duration_since(r.ended)));
        }
        assert!(
            s.resumes.is_empty(),
            "uid {uid}: its edge closed the connection instead of re-attaching the session: \
             {:?}",
            s.resumes.iter().map(|r| &r.3).collect::<Vec<_>>()
        );
    }
    let failed_calls = streams[victim].iter().filter(|r| r.pushed.is_err()).count();
    // How long the surviving broker took to answer push calls while the sessions moved in.
    let survivor_calls = spread(
        streams
            .iter()
            .flatten()
            .filter(|r| {
                r.via == survivor
                    && r.started > killed
                    && r.started < killed + Duration::from_secs(3)
            })
            .map(|r| r.ended - r.started)
            .collect(),
    );
    let after: Vec<usize> = cluster.sessions_by_broker().await;
    let affected = flowing_again.len();
    eprintln!(
        "chaos: broker kill: {affected} sessions on the killed broker were re-attached by their \
         edges to broker {survivor} ({}); `docker kill` took {} ms; pushes to them stopped for \
         (longest wait between two pushes from the kill on, pushed every {} ms): {}; to the \
         {} sessions of the surviving broker: {} (its push calls in the 3 s after the kill \
         took {survivor_calls}); lost by \
         design: {failed_calls} calls that failed (the caller's to repeat); confirmed and lost: \
         {}; repeated or out of order: none; logged out: none; sessions per broker after: \
         {after:?}",
        endpoints[survivor],
        (killed - kill).as_millis(),
        PUSH_PAUSE.as_millis(),
        spread(flowing_again.clone()),
        calm.len(),
        spread(calm),
        lost_early.len(),
    );
    eprintln!(
        "chaos: broker kill: pushes through the survivor while the route named the dead broker, \
         held for the session's new route and sent on: {}",
        logged(&cluster, "waited for their sessions' new routes")
            .await
            .trim_end()
    );
    if !lost_early.is_empty() {
        failures.push(format!(
            "broker kill at {}: pushes whose call succeeded never arrived (uid, push, confirmed \
             this long before the kill): \
             {lost_early:?}\n{}\n{}",
            wall_clock(kill_wall),
            logged(&cluster, "edge queue full").await,
            cluster.diagnostics()
        ));
    }
    assert_eq!(
        after,
        vec![seen.len(), 0],
        "every session on the surviving broker"
    );

    // 3. Broker 1 starts again: the edges move the sessions the hash gives it back there (one
    // second after it is up, paced over their `rebalance_spread_secs`, 3 s here) while pushes
    // flow. Nobody notices: no reconnect, no logout, every push once and in order.
    let players: Vec<Player> = seen.into_iter().map(|s| s.player).collect();
    let want: Vec<usize> = (0..endpoints.len())
        .map(|b| {
            players
                .iter()
                .filter(|p| {
                    (0..endpoints.len()).max_by_key(|e| rendezvous_score(p.uid, &endpoints[*e]))
                        == Some(b)
                })
                .count()
        })
        .collect();
    let restarting = Instant::now();
    cluster.restart_broker(victim).await;
    let linked = restarting.elapsed();
    // The moves begin a second after the edges linked it (their settle time): the phase, with
    // the restarted broker's new published port, starts before that.
    let targets = endpoints_of(&cluster).await;
    let phase = Phase::start(&cluster, "rebalance", players, |_| survivor, targets).await;
    // Broadcasts while the sessions move: both brokers deliver each, and a session adopted in
    // between still gets it once (PROTOCOL.md §13.5).
    let stop_broadcasts = CancellationToken::new();
    let broadcasts = tokio::spawn(broadcast_stream(
        phase.tag,
        push_apis(&cluster).await.swap_remove(survivor),
        stop_broadcasts.clone(),
    ));
    let pushing = Instant::now();
    let mut split = Vec::new();
    for _ in 0..120 {
        split = cluster.sessions_by_broker().await;
        if split == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled = restarting.elapsed();
    // Pacing, not an assertion: pushes go on past the moves before the phase ends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tag = phase.tag;
    stop_broadcasts.cancel();
    let broadcasts = broadcasts.await.unwrap();
    let (streams, seen) = phase.finish().await;
    assert_nobody_lost(&cluster, &seen, "rebalance");
    let lost_broadcasts = missed_broadcasts(&seen, &broadcasts);
    if !lost_broadcasts.is_empty() {
        failures.push(format!(
            "rebalance: broadcasts whose call succeeded never reached these players (uid, \
             broadcasts): {:?}",
            &lost_broadcasts[..lost_broadcasts.len().min(20)]
        ));
    }
    let mut gaps = Vec::new();
    for s in &seen {
        let uid = s.player.uid;
        assert!(
            s.resumes.is_empty(),
            "{tag}: uid {uid} lost its connection: {:?}",
            s.resumes.iter().map(|r| &r.3).collect::<Vec<_>>()
        );
        let lost = missing(s, &streams[survivor]);
        if !lost.is_empty() {
            failures.push(format!(
                "rebalance: uid {uid} never got pushes {lost:?} the API confirmed"
            ));
        }
        gaps.push(longest_gap_from(s, pushing));
    }
    assert_eq!(
        split,
        want,
        "sessions per broker after the rebalance are the hash's\n{}",
        cluster.diagnostics()
    );
    let pushes: usize = seen.iter().map(|s| s.got.len()).sum();
    eprintln!(
        "chaos: broker restart: broker {victim} linked by both edges {} ms after `docker start`; \
         {} sessions moved to it without reconnecting, the split matching the hash {} ms after \
         the start (1 s settle, 3 s spread, adopted copies ending 2 s later); {pushes} numbered \
         pushes to {} sessions in order, none twice, none missing; longest wait between two \
         pushes while they moved: {}; {} broadcasts meanwhile ({} calls failed), each once and in \
         order at every player; logged out: none; sessions per broker after: {split:?}",
        linked.as_millis(),
        want[victim],
        settled.as_millis(),
        seen.len(),
        spread(gaps),
        broadcasts.len(),
        broadcasts.iter().filter(|c| c.is_err()).count(),
    );
    eprintln!(
        "chaos: continuity suite on the {bus} bus: cluster up in {} ms, {PLAYERS} resumable \
         logins in {} ms, the whole suite {} ms",
        cluster_up.as_millis(),
        login_took.as_millis(),
        test_started.elapsed().as_millis()
    );
    assert!(
        failures.is_empty(),
        "on the {bus} bus: {}",
        failures.join("\n\n")
    );
}

/// The longest wait between two consecutive pushes `seen` received, from the last one before
/// `t` on.
fn longest_gap_from(seen: &Seen, t: Instant) -> Duration {
    let start = seen.got.partition_point(|(_, at)| *at <= t);
    let mut previous = start.checked_sub(1).map_or(t, |i| seen.got[i].1);
    let mut gap = Duration::ZERO;
    for (_, at) in &seen.got[start..] {
        gap = gap.max(*at - previous);
        previous = *at;
    }
    gap
}

/// A moment as the time of day (UTC) the containers' logs use, `HH:MM:SS.mmm`.
fn wall_clock(at: std::time::SystemTime) -> String {
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Each lost push: its broker stream, number, when its call ran relative to the kill, and how
/// many sessions (of the killed edge) lost it.
fn describe_losses(
    losses: &BTreeMap<(usize, u32), Vec<i64>>,
    streams: &[Vec<Round>],
    on_killed: &BTreeSet<i64>,
    kill: Instant,
) -> String {
    let relative = |t: Instant| {
        if t >= kill {
            format!("+{}", (t - kill).as_millis())
        } else {
            format!("-{}", (kill - t).as_millis())
        }
    };
    losses
        .iter()
        .map(|((b, n), uids)| {
            let r = &streams[*b][*n as usize];
            format!(
                "push {n} through broker {b} (call {}..{} ms from the kill): lost by {} sessions, \
                 {} of them on the killed edge, e.g. uids {:?}",
                relative(r.started),
                relative(r.ended),
                uids.len(),
                uids.iter().filter(|u| on_killed.contains(u)).count(),
                &uids[..uids.len().min(5)]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The lines of the brokers' logs that contain `text`, at most 10 per broker.
async fn logged(cluster: &Cluster, text: &str) -> String {
    let mut out = String::new();
    for (b, broker) in cluster.brokers.iter().enumerate() {
        let logs = janus_integration_tests::cluster::container_logs(broker.id()).await;
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(text)).collect();
        out += &format!(
            "broker {b}: {} lines with {text:?}: {}\n",
            lines.len(),
            lines[..lines.len().min(10)].join("\n")
        );
    }
    out
}
