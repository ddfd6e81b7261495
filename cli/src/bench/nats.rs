//! The broadcast peer: `nats-server` (the push bus Pitaya uses) in its own process, N plain
//! subscribers of one subject (one connection each, no encryption, no routing), and one
//! publisher timing each message until the last subscriber has it, as the broadcast scenario
//! times a Janus broadcast.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::fleet::{self, Arrival, Failures};
use super::gateway::{Process, Scratch, accepts, free_ports};
use super::scenarios::{PUSH_PAYLOAD, ROUND_WAIT};

/// The subject every subscriber listens on.
const SUBJECT: &str = "bench.broadcast";

/// Connections opened at once.
const CONNECTING: usize = 256;

/// `nats-server` on a free loopback port (killed when dropped).
pub(crate) struct NatsServer {
    _process: Process,
    _dir: Scratch,
    addr: SocketAddr,
}

impl NatsServer {
    /// Starts `nats-server` with a configuration of its own and waits until it accepts.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let [addr] = free_ports()?;
        let dir = Scratch::new("nats")?;
        let config = dir.file("nats.conf");
        std::fs::write(&config, format!("listen: \"{addr}\"\n"))?;
        let mut process = Process::spawn_installed(
            "nats-server",
            "nats-server",
            "nats-server",
            &["-c", &config.display().to_string()],
            &dir,
        )?;
        process.wait_ready(async || accepts(addr).await).await?;
        Ok(Self {
            _process: process,
            _dir: dir,
            addr,
        })
    }
}

/// What the subscribers saw.
pub(crate) struct NatsFanout {
    /// Subscribers connected (each should get every message).
    pub(crate) subscribers: usize,
    /// Until the last subscriber had a message, each round.
    pub(crate) times: Vec<Duration>,
    /// Deliveries counted across the rounds.
    pub(crate) delivered: u64,
    /// Deliveries that did not arrive within a round's wait.
    pub(crate) missing: u64,
    /// Subscribers that failed to connect, by reason.
    pub(crate) connect_failures: Failures,
}

/// Connects `subscribers` to `server`, then publishes `rounds` messages of the bench push's
/// size one after the other, each timed until the last subscriber has it.
pub(crate) async fn fanout(
    server: &NatsServer,
    subscribers: usize,
    rounds: i32,
) -> anyhow::Result<NatsFanout> {
    let url = format!("nats://{}", server.addr);
    let (tx, mut arrivals) = mpsc::channel(subscribers.max(1) * 4);
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut connect_failures = Failures::new();
    let mut connecting = futures_util::stream::iter(0..subscribers)
        .map(|_| subscribe(&url))
        .buffer_unordered(CONNECTING);
    while let Some(result) = connecting.next().await {
        match result {
            Ok((client, subscriber)) => {
                tasks.spawn(report(client, subscriber, tx.clone(), stop.clone()));
            }
            Err(e) => *connect_failures.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    let connected = tasks.len();
    anyhow::ensure!(
        connected > 0,
        "no subscriber connected: {connect_failures:?}"
    );
    let publisher = async_nats::connect(&url)
        .await
        .context("the publisher cannot connect to nats-server")?;

    // Round 0, repeated until every subscriber has had one: every subscription is in place.
    let started = Instant::now();
    let mut ready = 0;
    while ready < connected && started.elapsed() < ROUND_WAIT {
        publish(&publisher, 0).await?;
        let wait = Duration::from_millis(200);
        ready += fleet::await_round(&mut arrivals, 0, connected - ready, started, wait)
            .await
            .0;
    }
    anyhow::ensure!(
        ready == connected,
        "only {ready} of {connected} subscribers are subscribed after {ROUND_WAIT:?}"
    );

    let (mut times, mut delivered, mut missing) = (Vec::new(), 0, 0);
    for round in 1..=rounds {
        let started = Instant::now();
        publish(&publisher, round).await?;
        let (received, last) =
            fleet::await_round(&mut arrivals, round, connected, started, ROUND_WAIT).await;
        anyhow::ensure!(received > 0, "round {round}: no subscriber received it");
        delivered += received as u64;
        missing += (connected - received) as u64;
        times.push(last - started);
    }
    stop.cancel();
    while let Some(result) = tasks.join_next().await {
        result?;
    }
    Ok(NatsFanout {
        subscribers: connected,
        times,
        delivered,
        missing,
        connect_failures,
    })
}

/// One subscriber: its own connection, subscribed (the subscription sent).
async fn subscribe(url: &str) -> anyhow::Result<(async_nats::Client, async_nats::Subscriber)> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(30))
        .connect(url)
        .await?;
    let subscriber = client.subscribe(SUBJECT).await?;
    client.flush().await?;
    Ok((client, subscriber))
}

/// Publishes round `round`'s message: the bench push's size, the round first.
async fn publish(publisher: &async_nats::Client, round: i32) -> anyhow::Result<()> {
    let mut payload = vec![0x5a; PUSH_PAYLOAD];
    payload[..4].copy_from_slice(&round.to_be_bytes());
    publisher.publish(SUBJECT, payload.into()).await?;
    publisher.flush().await?;
    Ok(())
}

/// Reports the first arrival of each round until `stop` (holding the connection open).
async fn report(
    _client: async_nats::Client,
    mut subscriber: async_nats::Subscriber,
    arrivals: mpsc::Sender<Arrival>,
    stop: CancellationToken,
) {
    let mut last = -1;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            message = subscriber.next() => {
                let Some(message) = message else { return };
                let Some(round) = message.payload.get(..4).and_then(|b| b.try_into().ok()) else {
                    continue;
                };
                let round = i32::from_be_bytes(round);
                if round > last {
                    last = round;
                    let _ = arrivals.try_send(Arrival { seq: round, at: Instant::now() });
                }
            }
        }
    }
}
