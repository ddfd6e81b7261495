//! The whole split deployment in containers on a private network, as compose runs it (see
//! [`janus_integration_tests::cluster`]). Players log in and echo over every transport through
//! both edges, pushes cross brokers, Prometheus finds and scrapes every edge and broker, a client
//! resumes at the other edge the session the first one holds; then the
//! chaos steps, each while sessions echo: one edge is partitioned from one broker and then
//! reconnected, a broker is SIGKILLed, Redis restarts, NATS restarts, etcd is stopped for 30 s,
//! and an edge drains on SIGTERM. The chaos steps assert outcomes only; what they measure
//! (failover window, requests lost, recovery times) is printed as `chaos: …` lines for
//! SECURITY.md's chaos table. A second, short test runs the same deployment with the Go game
//! service written like Roma in place of the demo game, through login, echo, tunnel pushes and
//! a room multicast.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use janus_broker::bus::{NatsBus, PushBus, subject};
use janus_broker::state::broker_id;
use janus_client::{Client, Endpoint};
use janus_demo_game as demo;
use janus_edge::rendezvous_score;
use janus_integration_tests::cluster::{BrokerStats, Cluster, LinkStats, container_logs};
use janus_integration_tests::stack::{COLOR, GameKind, echo, recv, request};
use janus_ops::discovery::BROKER_SERVICE;
use janus_proto::broadcaster::service::push::v1 as bc;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::message::{ScServerLogout, ScServerUnexpectedErr};
use janus_proto::packet::Packet;
use janus_protocol::handshake::Mode;
use janus_protocol::system;
use prost::Message;
use testcontainers::core::IntoContainerPort;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long a request under load waits for its reply before it counts as unanswered and the
/// session goes on with the next one (the edge numbers packets as they are sent, so a lost one
/// does not break the session). A reply that comes later still is counted late, not lost.
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// Sessions added for the load steps, spread over both edges and all four transports.
const EXTRA_SESSIONS: i64 = 16;

/// Where `uid` logged in: (edge, transport as an index into [`Cluster::endpoints`]). The first
/// players are 101–108 (edge 0, then edge 1, one per transport), the load sessions 1000 on
/// (alternating edges).
fn entry(uid: i64) -> (usize, usize) {
    if uid >= 1000 {
        let i = uid - 1000;
        ((i % 2) as usize, (i / 2 % 4) as usize)
    } else {
        let i = uid - 101;
        ((i / 4) as usize, (i % 4) as usize)
    }
}

/// The edge `uid` logged in through.
fn edge_of(uid: i64) -> usize {
    entry(uid).0
}

/// One player per transport of each edge (uids 101, 102, …), each logged in and answering a
/// round trip.
async fn log_in_on_every_transport(cluster: &Cluster) -> BTreeMap<i64, Client> {
    let mut players = BTreeMap::new();
    let mut uid = 100;
    for edge in 0..2 {
        for (name, endpoint) in cluster.endpoints(edge).await {
            uid += 1;
            let mut client = cluster.login(&endpoint, uid).await;
            round_trip(&mut client, &format!("{name} via edge {edge}")).await;
            players.insert(uid, client);
        }
    }
    players
}

async fn round_trip(client: &mut Client, text: &str) {
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(echo(text.as_bytes()), |_| {}),
    )
    .await
    .unwrap_or_else(|_| panic!("no answer to {text}"))
    .unwrap_or_else(|e| panic!("{text}: {e}"));
    assert_eq!(reply.data, text.as_bytes());
}

/// What one session saw during a load run.
struct Record {
    uid: i64,
    client: Client,
    sent: usize,
    /// When each reply arrived, in order (late ones included).
    replies: Vec<Instant>,
    /// Replies that came after their request had timed out.
    late: usize,
    /// Requests never answered, not even late.
    unanswered: usize,
    /// Why the session stopped before the run did (logged out, closed), if it did.
    broken: Option<String>,
    /// The SCServerLogout that ended the session: its code, and when it came.
    logout: Option<(i32, Instant)>,
    /// What SCServerUnexpectedErr pushes said.
    errors: Vec<String>,
}

impl Record {
    /// Takes in `packet`; whether it answers `current`. A logout is an error.
    fn on_packet(
        &mut self,
        packet: &Packet,
        current: Option<i32>,
        timed_out: &mut BTreeSet<i32>,
        last_reply: &watch::Sender<Instant>,
    ) -> Result<bool, String> {
        if packet.r#mod == system::MODULE && packet.seq == system::SEQ_UNEXPECTED_ERR {
            let error = ScServerUnexpectedErr::decode(&packet.data[..]).unwrap_or_default();
            self.errors.push(error.msg);
        }
        if (packet.r#mod, packet.seq) == (system::MODULE, system::SEQ_LOGOUT) {
            let code = ScServerLogout::decode(&packet.data[..]).map_or(-1, |l| l.code);
            self.logout = Some((code, Instant::now()));
            return Err(format!(
                "logged out with code {code}; errors before: {:?}",
                self.errors
            ));
        }
        let now = Instant::now();
        let answers = Some(packet.index) == current;
        if answers || timed_out.remove(&packet.index) {
            self.late += usize::from(!answers);
            self.replies.push(now);
            last_reply.send_replace(now);
        }
        Ok(answers)
    }

    /// The longest wait between consecutive replies, from the last reply before `t` on.
    fn longest_gap_from(&self, t: Instant) -> Duration {
        let start = self.replies.partition_point(|r| *r <= t);
        let mut previous = start.checked_sub(1).map_or(t, |i| self.replies[i]);
        let mut gap = Duration::ZERO;
        for reply in &self.replies[start..] {
            gap = gap.max(*reply - previous);
            previous = *reply;
        }
        gap
    }
}

/// One session's part of a load run: echo requests one after the other (`pause` between a
/// reply and the next request), each given [`REPLY_TIMEOUT`], until `stop`; then a short wait
/// for late replies.
async fn echo_until(
    uid: i64,
    client: Client,
    pause: Duration,
    last_reply: watch::Sender<Instant>,
    stop: CancellationToken,
) -> Record {
    let mut record = Record {
        uid,
        client,
        sent: 0,
        replies: Vec::new(),
        late: 0,
        unanswered: 0,
        broken: None,
        logout: None,
        errors: Vec::new(),
    };
    let mut timed_out = BTreeSet::new();
    'run: while !stop.is_cancelled() {
        let index = match record.client.send(echo(b"load")).await {
            Ok(index) => index,
            Err(e) => {
                record.broken = Some(format!("send failed: {e}"));
                break;
            }
        };
        record.sent += 1;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, record.client.recv()).await {
                Err(_) => {
                    timed_out.insert(index);
                    break;
                }
                Ok(Err(e)) => {
                    record.broken = Some(format!("receive failed: {e}"));
                    break 'run;
                }
                Ok(Ok(packet)) => {
                    match record.on_packet(&packet, Some(index), &mut timed_out, &last_reply) {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => {
                            record.broken = Some(e);
                            break 'run;
                        }
                    }
                }
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    let deadline = Instant::now() + 4 * REPLY_TIMEOUT;
    while record.broken.is_none() && !timed_out.is_empty() {
        let Ok(Ok(packet)) = tokio::time::timeout_at(deadline, record.client.recv()).await else {
            break;
        };
        if let Err(e) = record.on_packet(&packet, None, &mut timed_out, &last_reply) {
            record.broken = Some(e);
        }
    }
    record.unanswered = timed_out.len();
    record
}

/// Sessions echoing until [`Load::finish`].
struct Load {
    started: Instant,
    stop: CancellationToken,
    last_reply: Vec<watch::Receiver<Instant>>,
    tasks: Vec<tokio::task::JoinHandle<Record>>,
}

impl Load {
    fn start(sessions: impl IntoIterator<Item = (i64, Client)>, pause: Duration) -> Self {
        let started = Instant::now();
        let stop = CancellationToken::new();
        let (mut last_reply, mut tasks) = (Vec::new(), Vec::new());
        for (uid, client) in sessions {
            let (tx, rx) = watch::channel(started);
            last_reply.push(rx);
            tasks.push(tokio::spawn(echo_until(
                uid,
                client,
                pause,
                tx,
                stop.clone(),
            )));
        }
        Self {
            started,
            stop,
            last_reply,
            tasks,
        }
    }

    /// Waits until every session has had a reply after `since`, or `cap` has passed.
    async fn until_all_answered_since(&self, since: Instant, cap: Duration) {
        let deadline = Instant::now() + cap;
        while Instant::now() < deadline && self.last_reply.iter().any(|r| *r.borrow() <= since) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the run: every session's record, and how long the run took.
    async fn finish(self) -> (Vec<Record>, Duration) {
        self.stop.cancel();
        let mut records = Vec::new();
        for task in self.tasks {
            records.push(task.await.unwrap());
        }
        (records, self.started.elapsed())
    }
}

/// Gives every session of a run back to `players` (uids below 1000) or `extra`.
fn give_back(
    records: Vec<Record>,
    players: &mut BTreeMap<i64, Client>,
    extra: &mut BTreeMap<i64, Client>,
) {
    for r in records {
        if r.uid >= 1000 {
            extra.insert(r.uid, r.client);
        } else {
            players.insert(r.uid, r.client);
        }
    }
}

/// Sessions per broker (in `stats` order) as the edges count them: the sessions attached to
/// each edge's link to that broker.
async fn attached(cluster: &Cluster, stats: &[BrokerStats]) -> Vec<usize> {
    let mut by_broker = vec![0; stats.len()];
    for edge in 0..cluster.edges.len() {
        for link in cluster.edge_links(edge).await {
            if let Some(b) = stats.iter().position(|s| s.endpoint == link.endpoint) {
                by_broker[b] += link.sessions;
            }
        }
    }
    by_broker
}

/// Asserts that every session of a run stayed up and was answered after `since`.
fn assert_all_answered_since<'a>(
    cluster: &Cluster,
    records: impl IntoIterator<Item = &'a Record>,
    since: Instant,
    what: &str,
) {
    for r in records {
        assert!(
            r.broken.is_none(),
            "{what}: uid {} broke: {:?}\n{}",
            r.uid,
            r.broken,
            cluster.diagnostics()
        );
        assert!(
            r.replies.last().is_some_and(|t| *t > since),
            "{what}: uid {} was never answered again ({} sent, {} answered)\n{}",
            r.uid,
            r.sent,
            r.replies.len(),
            cluster.diagnostics()
        );
    }
}

/// Logs `uid` in at `endpoint` and echoes `text`; on failure, panics with what the edges and
/// brokers logged.
async fn login_and_echo(cluster: &Cluster, endpoint: &Endpoint, uid: i64, text: &str) {
    let attempt = async {
        let mut client = cluster.try_login(endpoint, uid).await?;
        let reply = tokio::time::timeout(
            Duration::from_secs(10),
            client.request(echo(text.as_bytes()), |_| {}),
        )
        .await
        .map_err(|_| janus_client::Error::Timeout("echo"))??;
        client.close().await?;
        Ok::<_, janus_client::Error>(reply)
    };
    match attempt.await {
        Ok(reply) => assert_eq!(reply.data, text.as_bytes()),
        Err(e) => panic!(
            "{text}: uid {uid} at {endpoint:?}: {e}\n{}",
            cluster.diagnostics()
        ),
    }
}

/// The time of day, in seconds, of an RFC 3339 timestamp (`2026-01-02T03:04:05.678Z…`).
fn seconds_of_day(timestamp: &str) -> Option<f64> {
    let time = timestamp.split_once('T')?.1;
    let mut parts = time.splitn(3, ':');
    let hours: f64 = parts.next()?.parse().ok()?;
    let minutes: f64 = parts.next()?.parse().ok()?;
    let seconds: String = parts
        .next()?
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    Some(hours * 3600.0 + minutes * 60.0 + seconds.parse::<f64>().ok()?)
}

/// What a packet that is not the expected reply says.
fn describe(packet: &Packet) -> String {
    match (packet.r#mod, packet.seq) {
        (system::MODULE, system::SEQ_UNEXPECTED_ERR) => format!(
            "SCServerUnexpectedErr {:?}",
            ScServerUnexpectedErr::decode(&packet.data[..]).map(|e| e.msg)
        ),
        (system::MODULE, system::SEQ_LOGOUT) => format!(
            "SCServerLogout {:?}",
            ScServerLogout::decode(&packet.data[..]).map(|l| l.code)
        ),
        (m, s) => format!("packet mod {m} seq {s}"),
    }
}

/// "n sessions, max …, median …" of `values`, in milliseconds.
fn summary(mut values: Vec<Duration>) -> String {
    values.sort();
    match (values.last(), values.get(values.len() / 2)) {
        (Some(max), Some(median)) => format!(
            "{} sessions, max {} ms, median {} ms",
            values.len(),
            max.as_millis(),
            median.as_millis()
        ),
        _ => "no sessions".into(),
    }
}

/// Held by each test for its whole run: two clusters at once would share the machine's cores
/// and skew what the chaos steps measure.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_split_deployment_in_containers() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let cluster = Cluster::start().await;

    // Every transport through both edges.
    let mut players = log_in_on_every_transport(&cluster).await;
    let spread = cluster.sessions_by_broker().await;
    assert_eq!(spread.iter().sum::<usize>(), players.len(), "{spread:?}");

    // Every process in these containers is pid 1: ids come from the host name and a random
    // suffix (edges) or the container's address (brokers), never from the pid.
    let edge_ids = [cluster.edge_id(0).await, cluster.edge_id(1).await];
    assert!(
        edge_ids.iter().all(|id| id.starts_with("edge-")) && edge_ids[0] != edge_ids[1],
        "two edges, two ids: {edge_ids:?}"
    );
    let broker_ids: BTreeSet<String> = cluster
        .broker_stats()
        .await
        .into_iter()
        .map(|stats| stats.expect("every broker answers").endpoint)
        .collect();
    assert_eq!(
        broker_ids.len(),
        3,
        "three brokers, three ids: {broker_ids:?}"
    );
    // The hash spreads them; a link that was briefly down at a login (a keepalive missed on a
    // loaded machine) put that session elsewhere, and its edge moves it to its pick once the
    // links are stable again (1 s settle, 3 s spread here).
    let mut spread = spread;
    let settling = std::time::Instant::now();
    while spread.iter().filter(|n| **n > 0).count() < 2
        && settling.elapsed() < Duration::from_secs(15)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        spread = cluster.sessions_by_broker().await;
    }
    if settling.elapsed() > Duration::from_millis(100) {
        eprintln!(
            "chaos: login spread {spread:?} after {} ms of rebalancing",
            settling.elapsed().as_millis()
        );
    }
    assert!(
        spread.iter().filter(|n| **n > 0).count() >= 2,
        "sessions spread over brokers: {spread:?}\n{}",
        cluster.diagnostics()
    );

    // Prometheus finds every edge and broker by DNS and sees the sessions they hold.
    for (query, want) in [
        ("count(up{job=\"janus-edge\"} == 1)", 2.0),
        ("count(up{job=\"janus-broker\"} == 1)", 3.0),
        ("sum(janus_edge_sessions)", players.len() as f64),
        (
            "sum(janus_broker_live{what=\"sessions\"})",
            players.len() as f64,
        ),
    ] {
        let seen = cluster.prometheus_until(query, want).await;
        assert_eq!(seen, Some(want), "Prometheus: {query}");
    }

    // A multicast through one broker reaches players on every broker.
    let mut push = cluster.push_api(0).await;
    let uids: Vec<i64> = players.keys().copied().collect();
    let request = bc::MulticastRequest {
        bodies: vec![bc::PushBody {
            data: b"to all".to_vec(),
            r#mod: 9,
            ..Default::default()
        }],
        uids: uids.clone(),
        color: COLOR.into(),
    };
    let mut pushed = push
        .multicast(request)
        .await
        .unwrap()
        .into_inner()
        .pushed_uids;
    pushed.sort();
    assert_eq!(pushed, uids);
    for (uid, client) in players.iter_mut() {
        let packet = tokio::time::timeout(Duration::from_secs(10), client.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(packet.data, b"to all", "uid {uid}");
    }

    // A client whose address changed comes back at the other edge: that edge asks the broker
    // the ticket names, which holds the session and resumes it there.
    let mut config = cluster.keys.client_config(Mode::V2);
    config.handshake.resumable = true;
    let (to_edge0, to_edge1) = (cluster.endpoints(0).await, cluster.endpoints(1).await);
    let mut mover = Client::connect(&to_edge0[0].1, &config, &cluster.keys.token(900))
        .await
        .unwrap();
    round_trip(&mut mover, "before the move").await;
    mover.disconnect();
    mover
        .resume(&to_edge1[1].1, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("resume at the other edge: {e}\n{}", cluster.diagnostics()));
    round_trip(&mut mover, "after the move").await;
    let resumed = "sum(janus_broker_resumes_total{result=\"ok\"})";
    assert_eq!(cluster.prometheus_until(resumed, 1.0).await, Some(1.0));
    mover.close().await.unwrap();
    let settled = Instant::now();
    while cluster.sessions_by_broker().await.iter().sum::<usize>() != players.len() {
        assert!(
            settled.elapsed() < Duration::from_secs(10),
            "the moved session never ended on its broker\n{}",
            cluster.diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Broker failover under load. More sessions, spread over both edges and every transport;
    // which broker holds each follows from the edges' rendezvous hash over the brokers'
    // endpoints, and that prediction must match what the brokers report.
    let endpoints = [to_edge0, to_edge1];
    let mut extra: BTreeMap<i64, Client> = BTreeMap::new();
    for i in 0..EXTRA_SESSIONS {
        let (_, endpoint) = &endpoints[(i % 2) as usize][(i / 2 % 4) as usize];
        let mut client = cluster.login(endpoint, 1000 + i).await;
        round_trip(&mut client, "extra").await;
        extra.insert(1000 + i, client);
    }
    let stats: Vec<_> = cluster
        .broker_stats()
        .await
        .into_iter()
        .map(|s| s.expect("every broker is up"))
        .collect();
    let home = |uid: i64| {
        (0..stats.len())
            .max_by_key(|b| rendezvous_score(uid, &stats[*b].endpoint))
            .unwrap()
    };
    let mut predicted = vec![0; stats.len()];
    for uid in players.keys().chain(extra.keys()) {
        predicted[home(*uid)] += 1;
    }
    let before: Vec<usize> = stats.iter().map(|s| s.sessions).collect();
    assert_eq!(predicted, before, "sessions per broker: hash vs /stats");

    // Edge 0 partitioned from one broker while every session echoes every 100 ms: the broker
    // holding the most of edge 0's sessions is cut off from edge 0 only (see the cluster's link
    // networks); edge 1 still reaches it. Edge 0's sessions there move to the broker the hash
    // picks without it once edge 0 finds the link dead; then the network is reconnected.
    let mut on_edge0 = vec![0; stats.len()];
    for uid in players.keys().chain(extra.keys()) {
        if edge_of(*uid) == 0 {
            on_edge0[home(*uid)] += 1;
        }
    }
    let cut = (0..stats.len()).max_by_key(|b| on_edge0[*b]).unwrap();
    let cut_endpoint = stats[cut].endpoint.clone();
    let next_home = |uid: i64| {
        (0..stats.len())
            .filter(|b| *b != cut)
            .max_by_key(|b| rendezvous_score(uid, &stats[*b].endpoint))
            .unwrap()
    };
    let cut_link = |links: &[LinkStats]| {
        links
            .iter()
            .find(|l| l.endpoint == cut_endpoint)
            .cloned()
            .unwrap_or_else(|| panic!("no link to {cut_endpoint} in {links:?}"))
    };
    let load = Load::start(
        std::mem::take(&mut players)
            .into_iter()
            .chain(std::mem::take(&mut extra)),
        Duration::from_millis(100),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let home_before = cut_link(&cluster.edge_links(0).await).sessions;
    let cut_at = Instant::now();
    cluster.partition(0, cut).await;
    let (mut noticed, mut edge1_up) = (None, true);
    while noticed.is_none() && cut_at.elapsed() < Duration::from_secs(60) {
        if !cut_link(&cluster.edge_links(0).await).up {
            noticed = Some(Instant::now());
        }
        edge1_up &= cut_link(&cluster.edge_links(1).await).up;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let noticed = noticed.unwrap_or_else(|| {
        panic!(
            "edge 0 never found its link to broker {cut} dead\n{}",
            cluster.diagnostics()
        )
    });
    load.until_all_answered_since(noticed, Duration::from_secs(30))
        .await;
    // The link stays down while the partition lasts (edge 0 retries every 500 ms).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = cluster.edge_links(0).await;
    edge1_up &= cut_link(&cluster.edge_links(1).await).up;
    cluster.heal(0, cut).await;
    let healed = Instant::now();
    let mut relinked = None;
    while relinked.is_none() && healed.elapsed() < Duration::from_secs(60) {
        if cut_link(&cluster.edge_links(0).await).up {
            relinked = Some(healed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let relinked = relinked.unwrap_or_else(|| {
        panic!(
            "edge 0's link to broker {cut} never came back\n{}",
            cluster.diagnostics()
        )
    });
    // Once the link is back, edge 0 moves the sessions it had moved away back to their broker
    // (paced over `rebalance_spread_secs`, 3 s in this cluster), under the same echo load.
    let mut after_heal = cluster.edge_links(0).await;
    while cut_link(&after_heal).sessions < home_before && healed.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after_heal = cluster.edge_links(0).await;
    }
    let moved_back = healed.elapsed();
    let (records, _) = load.finish().await;
    assert!(
        !cut_link(&during).up,
        "edge 0's link to broker {cut} stays down while partitioned: {during:?}"
    );
    assert!(edge1_up, "edge 1's link to broker {cut} stayed up");
    assert_eq!(
        cut_link(&after_heal).sessions,
        home_before,
        "after the heal, edge 0's sessions of broker {cut} are back there\n{}",
        cluster.diagnostics()
    );
    assert_all_answered_since(&cluster, &records, noticed, "partition");
    let (moved, unmoved): (Vec<&Record>, Vec<&Record>) = records
        .iter()
        .partition(|r| edge_of(r.uid) == 0 && home(r.uid) == cut);
    assert!(!moved.is_empty());
    for r in &unmoved {
        assert_eq!(
            r.unanswered,
            0,
            "uid {} (edge {}, broker {}) lost requests in the partition",
            r.uid,
            edge_of(r.uid),
            home(r.uid)
        );
    }
    // Where edge 0's sessions are while partitioned: the moved ones on the next broker by hash.
    let mut expected = vec![0; stats.len()];
    for r in &records {
        if edge_of(r.uid) == 0 {
            let b = home(r.uid);
            expected[if b == cut { next_home(r.uid) } else { b }] += 1;
        }
    }
    let placed: Vec<usize> = stats
        .iter()
        .map(|s| {
            during
                .iter()
                .find(|l| l.endpoint == s.endpoint)
                .map_or(0, |l| l.sessions)
        })
        .collect();
    assert_eq!(
        placed, expected,
        "edge 0's sessions per broker while partitioned"
    );
    // The cut-off broker finds edge 0's old link dead by its own keepalive and ends the
    // sessions that moved away: it counts only what the edges have on it.
    let (mut broker_view, mut edges_view) = (usize::MAX, 0);
    let cleaned = Instant::now();
    while broker_view != edges_view && cleaned.elapsed() < Duration::from_secs(15) {
        broker_view = cluster.broker_stats().await[cut]
            .as_ref()
            .map_or(0, |s| s.sessions);
        edges_view = cut_link(&cluster.edge_links(0).await).sessions
            + cut_link(&cluster.edge_links(1).await).sessions;
        if broker_view != edges_view {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(
        broker_view,
        edges_view,
        "broker {cut} still holds sessions that moved away\n{}",
        cluster.diagnostics()
    );
    let on_cut_edge1 = unmoved
        .iter()
        .filter(|r| home(r.uid) == cut && edge_of(r.uid) == 1)
        .count();
    let lost: Vec<usize> = moved.iter().map(|r| r.unanswered).collect();
    eprintln!(
        "chaos: edge 0 partitioned from broker {cut} while {} sessions echo every 100 ms: edge 0 \
         marked the link down {} ms after `docker network disconnect` (edge 1's link to it stayed \
         up); edge 0's {} sessions there moved to the next broker by hash, failover window \
         (longest wait between replies) {}; requests lost: {} in all, {}–{} per moved session; \
         SCServerUnexpectedErr pushes seen: {}; logged out: none; edge 1's {} sessions on that \
         broker and the {} others lost nothing, longest wait between replies {}; late replies: \
         {}",
        records.len(),
        (noticed - cut_at).as_millis(),
        moved.len(),
        summary(moved.iter().map(|r| r.longest_gap_from(cut_at)).collect()),
        lost.iter().sum::<usize>(),
        lost.iter().min().unwrap(),
        lost.iter().max().unwrap(),
        moved.iter().map(|r| r.errors.len()).sum::<usize>(),
        on_cut_edge1,
        unmoved.len() - on_cut_edge1,
        summary(unmoved.iter().map(|r| r.longest_gap_from(cut_at)).collect()),
        records.iter().map(|r| r.late).sum::<usize>(),
    );
    eprintln!(
        "chaos: partition healed: edge 0's link to broker {cut} up again {} ms after `docker \
         network connect`; edge 0 moved its {} sessions back there, without a reconnect or a lost \
         request, {} ms after the heal (1 s settle, 3 s spread); broker {cut}'s /stats counts \
         {broker_view} sessions, as many as the edges have on it",
        relinked.as_millis(),
        cut_link(&after_heal).sessions,
        moved_back.as_millis(),
    );
    let moved_uids: Vec<i64> = moved.iter().map(|r| r.uid).collect();
    give_back(records, &mut players, &mut extra);

    // A push for the moved sessions through the broker they left when they moved back.
    let mut push_cut = cluster.push_api(next_home(moved_uids[0])).await;
    let pushed = push_cut
        .multicast(bc::MulticastRequest {
            bodies: vec![bc::PushBody {
                data: b"after the partition".to_vec(),
                r#mod: 9,
                ..Default::default()
            }],
            uids: moved_uids.clone(),
            color: COLOR.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pushed_uids;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut arrived = 0;
    for uid in &moved_uids {
        let client = players.get_mut(uid).or(extra.get_mut(uid)).unwrap();
        while let Ok(Ok(packet)) = tokio::time::timeout_at(deadline, client.recv()).await {
            if packet.data == b"after the partition" {
                arrived += 1;
                break;
            }
        }
    }
    assert_eq!(
        pushed.len(),
        moved_uids.len(),
        "pushed to every moved session"
    );
    assert_eq!(
        arrived,
        moved_uids.len(),
        "a push through the broker a session left reaches it where it is now"
    );

    // Every session echoes back to back; the broker holding the most sessions is SIGKILLed.
    // Edge 0's moved sessions are back home, so every session is where the hash says.
    let placed = home;
    let mut predicted = vec![0; stats.len()];
    for uid in players.keys().chain(extra.keys()) {
        predicted[placed(*uid)] += 1;
    }
    let before = attached(&cluster, &stats).await;
    assert_eq!(predicted, before, "sessions per broker: hash vs edges");
    let victim = (0..3).max_by_key(|i| before[*i]).unwrap();
    let victim_endpoint = stats[victim].endpoint.clone();
    let load = Load::start(
        std::mem::take(&mut players).into_iter().chain(extra),
        Duration::ZERO,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kill = Instant::now();
    cluster.brokers[victim]
        .stop_with_timeout(Some(0))
        .await
        .unwrap();
    let killed = Instant::now();
    load.until_all_answered_since(killed, Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (records, ran) = load.finish().await;
    assert_all_answered_since(&cluster, &records, killed, "broker kill");
    let (affected, others): (Vec<&Record>, Vec<&Record>) =
        records.iter().partition(|r| placed(r.uid) == victim);
    assert!(!affected.is_empty());
    for r in &others {
        assert_eq!(
            r.unanswered, 0,
            "uid {} on a surviving broker lost requests",
            r.uid
        );
    }
    let windows = |lost: bool| {
        let gaps = affected
            .iter()
            .filter(|r| (r.unanswered > 0) == lost)
            .map(|r| r.longest_gap_from(kill));
        summary(gaps.collect())
    };
    let calm = summary(others.iter().map(|r| r.longest_gap_from(kill)).collect());
    let answered: usize = records.iter().map(|r| r.replies.len()).sum();
    eprintln!(
        "chaos: broker SIGKILL under load: {} sessions echoing back to back ({:.0} replies/s), {} \
         on the killed broker; failover window (longest wait between replies) of those that lost \
         a request: {} (the lost request waited out the {} ms reply timeout; {} requests lost in \
         all), of those that lost none: {}; sessions on the other brokers lost nothing, longest \
         wait between replies: {}; late replies: {}",
        records.len(),
        answered as f64 / ran.as_secs_f64(),
        affected.len(),
        windows(true),
        REPLY_TIMEOUT.as_millis(),
        affected.iter().map(|r| r.unanswered).sum::<usize>(),
        windows(false),
        calm,
        records.iter().map(|r| r.late).sum::<usize>(),
    );
    let mut extra = BTreeMap::new();
    give_back(records, &mut players, &mut extra);
    assert_eq!(cluster.sessions_by_broker().await[victim], 0);
    let after = attached(&cluster, &stats).await;
    assert_eq!(after[victim], 0, "{after:?}");
    assert_eq!(
        after.iter().sum::<usize>(),
        players.len() + extra.len(),
        "every session re-attached: {after:?}"
    );

    // Redis restarts: open sessions go on, and new logins work again once it is back, on
    // every broker. A broker finds its pooled Redis connection dead only when a command fails
    // on it, and sends that command once more on a new connection; the test logs in through
    // each surviving broker until one is accepted, and counts and prints any refusals (a login
    // before Redis is listening again is refused with a reason).
    cluster.redis.stop().await.unwrap();
    cluster.redis.start().await.unwrap();
    let redis_back = Instant::now();
    let redis_id = cluster.redis.id().to_owned();
    let redis_ready = tokio::spawn(async move {
        while redis_back.elapsed() < Duration::from_secs(30) {
            let logs = container_logs(&redis_id).await;
            if logs.matches("Ready to accept connections").count() >= 2 {
                return Some(redis_back.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    });
    for client in players.values_mut() {
        round_trip(client, "after redis restart").await;
    }
    let live: Vec<usize> = (0..stats.len()).filter(|b| *b != victim).collect();
    let home_now = |uid: i64| {
        *live
            .iter()
            .max_by_key(|b| rendezvous_score(uid, &stats[**b].endpoint))
            .unwrap()
    };
    let (_, tcp0) = &endpoints[0][0];
    let mut late = Vec::new();
    let mut refused = Vec::new();
    let mut accepted = Vec::new();
    for &broker in &live {
        let uid = (900..).find(|uid| home_now(*uid) == broker).unwrap();
        for _ in 0..30 {
            let mut client = cluster.login(tcp0, uid).await;
            client.send(echo(b"late")).await.unwrap();
            let reason = match tokio::time::timeout(Duration::from_secs(2), client.recv()).await {
                Ok(Ok(reply)) if reply.data == b"late" => {
                    accepted.push(redis_back.elapsed());
                    late.push(client);
                    break;
                }
                Ok(Ok(packet)) => describe(&packet),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer within 2 s".into(),
            };
            refused.push((redis_back.elapsed(), reason));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        assert_eq!(
            late.len(),
            live.iter().position(|b| *b == broker).unwrap() + 1,
            "no new session on broker {broker} after Redis came back\n{}",
            cluster.diagnostics()
        );
    }
    let redis_ready = redis_ready
        .await
        .unwrap()
        .expect("Redis says it is ready again");
    // The first login a broker takes once Redis is back is not refused (its dead pooled
    // connection is replaced on the way); only logins before Redis listened may be.
    for (at, reason) in &refused {
        assert!(
            *at < redis_ready,
            "login refused {at:?} after `docker start`, Redis ready after {redis_ready:?}: \
             {reason}\n{}",
            cluster.diagnostics()
        );
    }
    eprintln!(
        "chaos: Redis restart: open sessions went on; Redis logged it was ready {} ms after \
         `docker start`; a new login through each of the {} brokers was accepted {:?} ms after \
         `docker start`; refused before: {} ({refused:?})",
        redis_ready.as_millis(),
        live.len(),
        accepted.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        refused.len(),
    );

    // NATS restarts: open sessions never notice, and pushes published on NATS reach players
    // again once the brokers have reconnected (NATS delivers at most once: what is published
    // while it is down is lost, so the test publishes until one arrives).
    cluster.nats.stop().await.unwrap();
    for client in players.values_mut() {
        round_trip(client, "nats down").await;
    }
    cluster.nats.start().await.unwrap();
    let back = std::time::Instant::now();
    let port = cluster.nats.get_host_port_ipv4(4222.tcp()).await.unwrap();
    let bus = NatsBus::connect(&format!("nats://127.0.0.1:{port}"), "fullstack")
        .await
        .unwrap();
    // Not a session the partition moved: the broker it left may still hold it and take the
    // push for it (see the partition step).
    let (&uid, client) = players
        .iter_mut()
        .find(|(uid, _)| !moved_uids.contains(uid))
        .unwrap();
    let message = bc::PushMessage {
        bodies: vec![bc::PushBody {
            data: b"via nats".to_vec(),
            r#mod: 9,
            ..Default::default()
        }],
        uids: vec![uid],
        color: COLOR.into(),
        ..Default::default()
    };
    let mut resumed = None;
    for _ in 0..150 {
        bus.publish(subject::INGRESS, message.encode_to_vec().into())
            .await
            .unwrap();
        if let Ok(Ok(push)) = tokio::time::timeout(Duration::from_millis(200), client.recv()).await
            && push.data == b"via nats"
        {
            resumed = Some(back.elapsed());
            break;
        }
    }
    let resumed = resumed.expect("pushes over NATS resume after a restart");
    eprintln!("chaos: NATS restart: pushes over NATS resumed {resumed:?} after it was back");

    // etcd stopped for 30 s under load. First the killed broker's registrations expire with
    // their lease; what is left is renewed after etcd comes back.
    let victim_id = broker_id(&victim_endpoint);
    let mut registered = Err(String::new());
    for _ in 0..60 {
        registered = cluster.registrations().await;
        if registered
            .as_ref()
            .is_ok_and(|r| !r.keys().any(|k| k.ends_with(&victim_id)))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let registered = registered.expect("etcd answers");
    assert!(
        !registered.keys().any(|k| k.ends_with(&victim_id)),
        "the killed broker's registrations expire: {registered:?}"
    );
    for (b, s) in stats.iter().enumerate().filter(|(b, _)| *b != victim) {
        let key = format!("/microservices/{BROKER_SERVICE}/{}", broker_id(&s.endpoint));
        assert!(
            registered.contains_key(&key),
            "broker {b} is registered: {registered:?}"
        );
    }
    let load = Load::start(
        std::mem::take(&mut players)
            .into_iter()
            .chain(std::mem::take(&mut extra)),
        Duration::from_millis(100),
    );
    cluster.etcd.stop().await.unwrap();
    let down = Instant::now();
    for (edge, endpoints) in endpoints.iter().enumerate() {
        let (_, tcp) = &endpoints[0];
        login_and_echo(
            &cluster,
            tcp,
            3000 + edge as i64,
            "login while etcd is down",
        )
        .await;
    }
    tokio::time::sleep_until(down + Duration::from_secs(30)).await;
    cluster.etcd.start().await.unwrap();
    let up = Instant::now();
    let (mut answering, mut renewed) = (None, None);
    while renewed.is_none() && up.elapsed() < Duration::from_secs(60) {
        if let Ok(now) = cluster.registrations().await {
            answering.get_or_insert(up.elapsed());
            if registered
                .iter()
                .all(|(key, lease)| now.get(key).is_some_and(|l| l != lease))
            {
                renewed = Some(up.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answering = answering.expect("etcd answers again after a restart");
    let renewed = renewed.expect("every registration is renewed after etcd comes back");
    for (edge, endpoints) in endpoints.iter().enumerate() {
        let (_, tcp) = &endpoints[0];
        login_and_echo(
            &cluster,
            tcp,
            3010 + edge as i64,
            "login after etcd is back",
        )
        .await;
    }
    let (records, _) = load.finish().await;
    assert_all_answered_since(&cluster, &records, up, "etcd down");
    for r in &records {
        assert_eq!(
            r.unanswered, 0,
            "uid {} lost requests while etcd was down",
            r.uid
        );
    }
    let gaps = summary(records.iter().map(|r| r.longest_gap_from(down)).collect());
    eprintln!(
        "chaos: etcd stopped for 30 s: {} sessions echoing every 100 ms, {} requests, 0 lost, \
         {} late, longest wait between replies per session: {gaps}; a new login through each \
         edge worked while it was down; after `docker start` etcd answered in {} ms and all {} \
         registrations (brokers, game) were renewed with new leases {} ms after the start",
        records.len(),
        records.iter().map(|r| r.sent).sum::<usize>(),
        records.iter().map(|r| r.late).sum::<usize>(),
        answering.as_millis(),
        registered.len(),
        renewed.as_millis(),
    );
    give_back(records, &mut players, &mut extra);

    // Drain edge 1 with SIGTERM while every session echoes back to back: its players are
    // logged out (code Server) once the drain grace is over, edge 0's lose nothing, exit 0.
    let load = Load::start(
        std::mem::take(&mut players)
            .into_iter()
            .chain(std::mem::take(&mut extra)),
        Duration::ZERO,
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let edge1 = cluster.edges[1].id().to_owned();
    let sigterm = Instant::now();
    cluster.edges[1].stop_with_timeout(Some(30)).await.unwrap();
    let stopped = sigterm.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (records, _) = load.finish().await;
    let (drained, kept): (Vec<&Record>, Vec<&Record>) =
        records.iter().partition(|r| edge_of(r.uid) == 1);
    for r in &drained {
        if r.logout.map(|(code, _)| code) != Some(LogoutCode::Server as i32) {
            let logs = std::process::Command::new("docker")
                .args(["logs", &edge1])
                .output()
                .unwrap();
            panic!(
                "uid {}: no SCServerLogout code Server ({:?}, {:?}); edge log:\n{}{}",
                r.uid,
                r.logout,
                r.broken,
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
    }
    assert_all_answered_since(
        &cluster,
        kept.iter().copied(),
        sigterm + stopped,
        "edge drain",
    );
    for r in &kept {
        assert_eq!(r.unanswered, 0, "uid {} on edge 0 lost requests", r.uid);
    }
    let logouts: Vec<Duration> = drained
        .iter()
        .filter_map(|r| r.logout.map(|(_, at)| at - sigterm))
        .collect();
    let answered_after =
        |r: &&Record| r.replies.len() - r.replies.partition_point(|t| *t <= sigterm);
    eprintln!(
        "chaos: edge 1 drained with SIGTERM while {} sessions echo back to back: its {} sessions \
         got SCServerLogout (code Server) {}–{} ms after the SIGTERM (drain grace 1 s), after {} \
         replies in the grace period; requests unanswered before the logout: {}, in flight at \
         the logout: {}; exit code 0, `docker stop` returned {} ms after the SIGTERM; edge 0's {} \
         sessions: {} requests in the run, {} replies after the SIGTERM, 0 lost, longest wait \
         between replies from the SIGTERM on: {}",
        records.len(),
        drained.len(),
        logouts.iter().min().unwrap().as_millis(),
        logouts.iter().max().unwrap().as_millis(),
        drained.iter().map(answered_after).sum::<usize>(),
        drained.iter().map(|r| r.unanswered).sum::<usize>(),
        drained
            .iter()
            .map(|r| r.sent.saturating_sub(r.replies.len() + r.unanswered))
            .sum::<usize>(),
        stopped.as_millis(),
        kept.len(),
        kept.iter().map(|r| r.sent).sum::<usize>(),
        kept.iter().map(answered_after).sum::<usize>(),
        summary(kept.iter().map(|r| r.longest_gap_from(sigterm)).collect()),
    );
    let exit = std::process::Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.State.ExitCode}} {{.State.FinishedAt}}",
            &edge1,
        ])
        .output()
        .unwrap();
    let exit = String::from_utf8_lossy(&exit.stdout);
    let (code, finished_at) = exit.trim().split_once(' ').unwrap_or_default();
    assert_eq!(code, "0", "a drained edge exits 0");
    // The edge's own account, on the host's clock: SIGTERM received → edge stopped → exit.
    let logs = container_logs(&edge1).await;
    let logged = |message: &str| {
        logs.lines()
            .find(|l| l.contains(&format!("\"message\":\"{message}\"")))
            .and_then(|l| l.split("\"timestamp\":\"").nth(1))
            .and_then(seconds_of_day)
    };
    let since_sigterm = |at: Option<f64>| match (logged("SIGTERM received"), at) {
        (Some(from), Some(to)) => format!("{:.0} ms", ((to - from).rem_euclid(86_400.0)) * 1e3),
        _ => "?".into(),
    };
    eprintln!(
        "chaos: edge 1's drain as it logged it: \"edge stopped\" {} after \"SIGTERM received\", \
         the process exited (Docker's FinishedAt) {} after it; `docker stop` returned after {} ms",
        since_sigterm(logged("edge stopped")),
        since_sigterm(seconds_of_day(finished_at)),
        stopped.as_millis(),
    );
}

/// The full-stack path against the Go game service written like Roma (grpc-go, headers only
/// with the first reply, registered in etcd by `gopeers/kratosapp` as a kratos app registers
/// Roma's services) instead of the demo game: one cluster start and no chaos steps, which try
/// the tiers rather than the game service. Every transport through both edges logs in, echoes
/// and gets a push on its tunnel; everyone joins one room and a multicast the game service sends
/// through broker 0 reaches the members on every broker; the service saw every stream with the
/// metadata Roma reads.
#[tokio::test]
async fn the_split_deployment_with_a_go_roma_game_service() {
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let started = Instant::now();
    let cluster = Cluster::start_with(GameKind::GoRoma(&[])).await;
    let registrations = cluster.registrations().await.unwrap();
    for service in ["roma.player.service", "roma.room.service"] {
        let prefix = format!("/microservices/{service}/");
        assert!(
            registrations
                .iter()
                .any(|(key, lease)| key.starts_with(&prefix) && *lease != 0),
            "{service} registered under a lease: {registrations:?}"
        );
    }
    let up = started.elapsed();

    let room = 7;
    let mut players = log_in_on_every_transport(&cluster).await;
    for (&uid, client) in players.iter_mut() {
        let reply = client
            .request(request(2, demo::ECHO_AND_PUSH, 0, b"p"), |p| {
                panic!("uid {uid}: {} before the reply", describe(&p))
            })
            .await
            .unwrap_or_else(|e| panic!("uid {uid}: {e}\n{}", cluster.diagnostics()));
        assert_eq!(reply.data, b"p");
        let push = recv(client).await;
        assert_eq!(
            (push.r#mod, push.seq, push.index, push.data.as_slice()),
            (2, demo::ECHO_AND_PUSH, 0, &b"pushed"[..]),
            "uid {uid}: the push on its tunnel"
        );
        let joined = client
            .request(request(6, demo::JOIN, room, b""), |_| {})
            .await
            .unwrap();
        assert_eq!(joined.data, b"ok", "uid {uid} joins");
    }
    let spread = cluster.sessions_by_broker().await;
    assert!(
        spread.iter().filter(|n| **n > 0).count() >= 2,
        "sessions spread over brokers: {spread:?}"
    );

    let said = players
        .get_mut(&101)
        .unwrap()
        .request(request(6, demo::SAY, room, b"hello"), |_| {})
        .await
        .unwrap();
    assert_eq!(said.data, b"ok");
    for (uid, client) in players.iter_mut().filter(|(uid, _)| **uid != 101) {
        let push = recv(client).await;
        assert_eq!(
            (push.r#mod, push.seq, push.obj, push.index),
            (6, demo::SAID, room, 0),
            "uid {uid}: {}",
            describe(&push)
        );
        assert_eq!(push.data, b"101: hello", "uid {uid}");
    }

    // What the service saw, from its JSON lines: one player and one room stream per session,
    // each with Roma's metadata, none refused; the multicast reached the seven others.
    let logs = container_logs(cluster.game.id()).await;
    let events: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let of = |kind: &'static str| events.iter().filter(move |e| e["event"] == kind);
    assert_eq!(of("rejected").count(), 0, "{logs}");
    for service in ["player", "room"] {
        let mut uids: Vec<i64> = of("stream")
            .filter(|e| e["service"] == service)
            .map(|e| {
                let md = &e["metadata"];
                assert_eq!(md["x-md-global-status"], "1", "{e}");
                assert_eq!(md["x-md-global-color"], COLOR, "{e}");
                let oid = if service == "room" {
                    room.to_string()
                } else {
                    md["x-md-global-uid"].as_str().unwrap().to_owned()
                };
                assert_eq!(md["x-md-global-oid"], oid.as_str(), "{e}");
                md["x-md-global-uid"].as_str().unwrap().parse().unwrap()
            })
            .collect();
        uids.sort_unstable();
        assert_eq!(uids, (101..=108).collect::<Vec<_>>(), "{service} streams");
    }
    let multicast: Vec<&serde_json::Value> = of("multicast").collect();
    assert_eq!(multicast.len(), 1, "{logs}");
    let mut pushed: Vec<i64> = serde_json::from_value(multicast[0]["pushed"].clone()).unwrap();
    pushed.sort_unstable();
    assert_eq!(pushed, (102..=108).collect::<Vec<_>>(), "{logs}");
    eprintln!(
        "go-roma full stack: cluster up in {} ms, the whole test {} ms",
        up.as_millis(),
        started.elapsed().as_millis()
    );
}
