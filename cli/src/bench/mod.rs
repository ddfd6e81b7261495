//! `janus bench`: the load generator. Each scenario starts the system under test as separate
//! processes (edge, broker, demo game service; or the raw tokio echo server of the baseline),
//! drives it through the client library, and prints a human summary and one JSON line. `all`
//! runs every scenario and ends with the table BENCHMARKS.md quotes: every figure beside its
//! baseline from the same run, as a ratio, and the goal it is held against.

mod echo;
mod fleet;
mod gateway;
mod goals;
mod idle;
mod nats;
mod nginx;
mod peers;
mod raw;
mod report;
mod scenarios;
mod slow;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::connect::Transport;
use goals::Goal;
use idle::IdleArgs;
use peers::PeersArgs;
use scenarios::{ConnectArgs, EchoArgs, FanoutArgs, HandshakeArgs};
use slow::SlowArgs;

/// `janus bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
    /// Append each scenario's JSON line to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Ramp to N concurrent encrypted sessions, hold them heartbeating; handshakes/s and memory
    /// per session of the edge and the broker.
    Connect(ConnectArgs),
    /// Requests through edge → broker → demo game and back; throughput and latency beside a
    /// raw tokio echo server driven the same way.
    Echo(EchoArgs),
    /// One broadcast to N sessions: time until the last has it, deliveries/s.
    Broadcast(FanoutArgs),
    /// One multicast naming N sessions: time until the last has it, deliveries/s.
    Multicast(FanoutArgs),
    /// Handshakes/s beside the single-thread cost of the same crypto.
    Handshake(HandshakeArgs),
    /// Clients reading slower than 30 Hz state for 10 keys: state age and sessions kept, with
    /// the state class (PROTOCOL.md §16) beside today's policy.
    Slow(SlowArgs),
    /// Sessions held a minute at the client libraries' heartbeat interval: idle sessions per
    /// consumed core, beside a raw tokio echo server holding as many connections.
    Idle(IdleArgs),
    /// Broadcast beside nats-server to as many plain subscribers, echo beside nginx
    /// terminating TLS in front of the raw echo server: what a studio would use instead.
    Peers(PeersArgs),
    /// Every scenario, then the summary table.
    All(AllArgs),
    /// The raw tokio echo server of the baseline (started by the other scenarios).
    #[command(hide = true)]
    RawEchoServer {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
    },
}

/// `janus bench all`.
#[derive(Debug, Args)]
struct AllArgs {
    /// Sessions for the connect and fan-out scenarios.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Seconds each echo and handshake measurement runs.
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

/// Runs `janus bench …`.
pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let json = args.json.as_deref();
    match args.scenario {
        Scenario::Connect(a) => scenarios::connect(&a).await?.print(json),
        Scenario::Echo(a) => scenarios::echo(&a).await?.print(json),
        Scenario::Broadcast(a) => scenarios::fanout(&a, false).await?.print(json),
        Scenario::Multicast(a) => scenarios::fanout(&a, true).await?.print(json),
        Scenario::Handshake(a) => scenarios::handshake(&a).await?.print(json),
        Scenario::Slow(a) => slow::slow(&a).await?.print(json),
        Scenario::Idle(a) => idle::idle(&a).await?.print(json),
        Scenario::Peers(a) => peers::peers(&a).await?.print(json),
        Scenario::RawEchoServer { listen } => raw::serve(&listen).await,
        Scenario::All(a) => all(&a, json).await,
    }
}

async fn all(args: &AllArgs, json: Option<&std::path::Path>) -> anyhow::Result<()> {
    let tcp = Transport::Tcp;
    let connect = scenarios::connect(&ConnectArgs {
        transport: tcp,
        sessions: args.sessions,
        concurrency: 256,
        heartbeat_secs: 10,
        hold_secs: 10,
        resumable: false,
    })
    .await?;
    connect.print(json)?;
    let idle = idle::idle(&IdleArgs {
        transport: tcp,
        sessions: args.sessions,
        heartbeat_secs: 10,
        hold_secs: 60,
    })
    .await?;
    idle.print(json)?;
    let echo = EchoArgs {
        transport: tcp,
        sessions: 64,
        inflight: 8,
        rate: None,
        payload: 64,
        warmup_secs: 2,
        secs: args.secs,
        moved: false,
    };
    let throughput = scenarios::echo(&echo).await?;
    throughput.print(json)?;
    let at_rate = EchoArgs {
        sessions: 100,
        inflight: 1,
        rate: Some(10_000.0),
        ..echo
    };
    let latency = scenarios::echo(&at_rate).await?;
    latency.print(json)?;
    let moved = scenarios::echo(&EchoArgs {
        moved: true,
        ..at_rate
    })
    .await?;
    moved.print(json)?;
    let fanout = FanoutArgs {
        transport: tcp,
        sessions: args.sessions,
        rounds: 5,
    };
    let broadcast = scenarios::fanout(&fanout, false).await?;
    broadcast.print(json)?;
    let multicast = scenarios::fanout(&fanout, true).await?;
    multicast.print(json)?;
    let slow = slow::slow(&SlowArgs {
        sessions: 100,
        secs: 20,
        keys: 10,
        hz: 30,
        read_per_sec: 100,
        recv_buffer: 4096,
        unsent_limit: 4096,
    })
    .await?;
    slow.print(json)?;
    let peers = peers::compare(&broadcast, &echo, &throughput).await?;
    peers.print(json)?;

    // Last: its thousands of short connections leave ports in TIME_WAIT for a minute.
    let handshake = scenarios::handshake(&HandshakeArgs {
        transport: tcp,
        concurrency: 32,
        secs: args.secs,
    })
    .await?;
    handshake.print(json)?;

    let row = |goal: Goal, janus: String, baseline: String, ratio: String| {
        println!(
            "| {} | {janus} | {baseline} | {ratio} | {} |",
            goal.figure, goal.goal
        );
    };
    let (h, t, l, m, c) = (
        &handshake.figures,
        &throughput.figures,
        &latency.figures,
        &moved.figures,
        &connect.figures,
    );
    println!("\n| figure | Janus | baseline (same run) | ratio | goal |");
    println!("|---|---|---|---|---|");
    row(
        goals::HANDSHAKES,
        format!("{:.0}", h.handshakes_per_edge_cpu_sec),
        format!("{:.0} (one thread, crypto only)", h.ceiling_per_thread_sec),
        format!("{:.2}", h.ratio),
    );
    row(
        goals::ECHO_THROUGHPUT,
        format!("{:.0} req/s", t.msgs_per_sec),
        format!("{:.0} req/s (raw tokio echo)", t.raw_msgs_per_sec),
        format!("{:.2}", t.ratio),
    );
    row(
        goals::ECHO_AT_RATE,
        format!("p99 {:.3} ms", l.latency.p99_ms),
        format!("p99 {:.3} ms (raw tokio echo)", l.raw_p99_ms),
        format!("+{:.3} ms", l.added_p99_ms),
    );
    println!(
        "| the same, resumed at a second edge | p99 {:.3} ms | p99 {:.3} ms (raw tokio echo) | +{:.3} ms | — |",
        m.latency.p99_ms, m.raw_p99_ms, m.added_p99_ms
    );
    row(
        goals::EDGE_MEMORY,
        format!(
            "{:.0} B ({} sessions)",
            c.edge_bytes_per_session, c.sessions
        ),
        "—".into(),
        "—".into(),
    );
    row(
        goals::BROKER_MEMORY,
        format!("{:.0} B", c.broker_bytes_per_session),
        "—".into(),
        "—".into(),
    );
    let i = &idle.figures;
    row(
        goals::IDLE,
        format!(
            "{:.0} ({} sessions, {} s)",
            i.sessions_per_core, i.sessions, i.hold_secs
        ),
        format!(
            "{:.0} (raw tokio echo, same frames)",
            i.raw_connections_per_core
        ),
        format!("{:.2}", i.ratio),
    );
    let b = &broadcast.figures;
    row(
        goals::BROADCAST,
        format!(
            "{:.1} ms to {} sessions ({:.0}/s)",
            b.median_ms_to_last, b.sessions, b.delivered_per_sec
        ),
        "—".into(),
        "—".into(),
    );
    let mc = &multicast.figures;
    println!(
        "| multicast naming every uid, last delivery (median of 5) | {:.1} ms to {} sessions ({:.0}/s) | — | — | — |",
        mc.median_ms_to_last, mc.sessions, mc.delivered_per_sec
    );
    let p = &peers.figures;
    println!(
        "| broadcast beside nats-server to as many plain subscribers (median of {}) | {:.1} ms ({:.0}/s) | {:.1} ms ({:.0}/s, nats-server) | {:.2} | — |",
        p.rounds,
        p.janus_broadcast_median_ms,
        p.janus_delivered_per_sec,
        p.nats_median_ms,
        p.nats_delivered_per_sec,
        p.broadcast_ratio
    );
    println!(
        "| echo beside nginx terminating TLS before the raw echo | {:.0} req/s, p99 {:.3} ms | {:.0} req/s, p99 {:.3} ms (nginx TLS) | {:.2} | — |",
        p.janus_msgs_per_sec, p.janus_p99_ms, p.nginx_msgs_per_sec, p.nginx_p99_ms, p.echo_ratio
    );
    let s = &slow.figures;
    println!(
        "| slow consumers: state age p99, 30 Hz × 10 keys, clients reading 100 packets/s | {:.0} ms, {} of {} kept (state) | {:.0} ms, {} of {} kept (today's policy) | {:.3} | — |",
        s.state.age.p99_ms,
        s.state.kept,
        s.sessions,
        s.events.age.p99_ms,
        s.events.kept,
        s.sessions,
        s.state.age.p99_ms / s.events.age.p99_ms
    );
    Ok(())
}
