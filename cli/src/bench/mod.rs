//! `janus bench`: the load generator. Each scenario starts the system under test as separate
//! processes (edge, broker, demo game service; or the raw tokio echo server of the baseline),
//! drives it through the client library, and prints a human summary and one JSON line. `all`
//! runs every scenario and ends with the table BENCHMARKS.md quotes: every figure beside its
//! baseline from the same run, as a ratio, and the goal it is held against.

mod echo;
mod fleet;
mod gateway;
mod raw;
mod report;
mod scenarios;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::connect::Transport;
use report::Report;
use scenarios::{ConnectArgs, EchoArgs, FanoutArgs, HandshakeArgs};

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
    let report = match args.scenario {
        Scenario::Connect(a) => scenarios::connect(&a).await?,
        Scenario::Echo(a) => scenarios::echo(&a).await?,
        Scenario::Broadcast(a) => scenarios::fanout(&a, false).await?,
        Scenario::Multicast(a) => scenarios::fanout(&a, true).await?,
        Scenario::Handshake(a) => scenarios::handshake(&a).await?,
        Scenario::RawEchoServer { listen } => return raw::serve(&listen).await,
        Scenario::All(a) => return all(&a, json).await,
    };
    report.print(json)
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

    // Last: its thousands of short connections leave ports in TIME_WAIT for a minute.
    let handshake = scenarios::handshake(&HandshakeArgs {
        transport: tcp,
        concurrency: 32,
        secs: args.secs,
    })
    .await?;
    handshake.print(json)?;

    let n = |report: &Report, key: &str| report.number(key).unwrap_or(f64::NAN);
    println!("\n| figure | Janus | baseline (same run) | ratio | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| v2 handshakes per edge core-second | {:.0} | {:.0} (one thread, crypto only) | {:.2} | ≥ 0.70 |",
        n(&handshake, "handshakes_per_edge_cpu_sec"),
        n(&handshake, "ceiling_per_thread_sec"),
        n(&handshake, "ratio")
    );
    println!(
        "| echo throughput, 64 × 8 in flight, 64 B | {:.0} req/s | {:.0} req/s (raw tokio echo) | {:.2} | ≥ 0.30 |",
        n(&throughput, "msgs_per_sec"),
        n(&throughput, "raw_msgs_per_sec"),
        n(&throughput, "ratio")
    );
    println!(
        "| echo p99 at 10k req/s | {:.3} ms | {:.3} ms (raw tokio echo) | +{:.3} ms | ≤ +1 ms |",
        n(&latency, "p99_ms"),
        n(&latency, "raw_p99_ms"),
        n(&latency, "added_p99_ms")
    );
    println!(
        "| echo p99 at 10k req/s, resumed at a second edge | {:.3} ms | {:.3} ms (raw tokio echo) | +{:.3} ms | — |",
        n(&moved, "p99_ms"),
        n(&moved, "raw_p99_ms"),
        n(&moved, "added_p99_ms")
    );
    println!(
        "| edge memory per held session ({} sessions) | {:.0} B | — | — | ≤ 6144 B |",
        n(&connect, "sessions"),
        n(&connect, "edge_bytes_per_session")
    );
    println!(
        "| broker memory per held session | {:.0} B | — | — | ≤ 6144 B |",
        n(&connect, "broker_bytes_per_session")
    );
    for report in [&broadcast, &multicast] {
        println!(
            "| {} to {} sessions, last delivery | {:.1} ms ({:.0}/s) | — | — | ≤ 300 ms for 100k |",
            if std::ptr::eq(report, &broadcast) {
                "broadcast"
            } else {
                "multicast"
            },
            n(report, "sessions"),
            n(report, "median_ms_to_last"),
            n(report, "delivered_per_sec")
        );
    }
    Ok(())
}
