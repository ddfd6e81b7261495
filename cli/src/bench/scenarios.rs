//! The scenarios of `janus bench`: each starts a fresh gateway (and its baseline), drives it,
//! and returns a [`Report`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use janus_proto::broadcaster::service::push::v1 as bc;

use super::echo::{self, Plan};
use super::fleet::{self, Failures, PUSH_MODULE, Target, ZONE};
use super::gateway::{Gateway, RawEcho};
use super::raw::{self, RawConn};
use super::report::{Quantiles, Report, count};
use crate::connect::Transport;
use crate::keys;
use serde::Serialize;

/// The transport's name in the figures.
fn transport_name(transport: Transport) -> String {
    format!("{transport:?}").to_lowercase()
}

const MIB: f64 = 1024.0 * 1024.0;

/// `janus bench connect`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ConnectArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub(crate) transport: Transport,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) sessions: usize,
    /// Handshakes in flight while ramping up.
    #[arg(long, default_value_t = 256)]
    pub(crate) concurrency: usize,
    /// Seconds between one session's heartbeats.
    #[arg(long, default_value_t = 10)]
    pub(crate) heartbeat_secs: u64,
    /// Seconds to hold the sessions (heartbeating) before measuring memory.
    #[arg(long, default_value_t = 10)]
    pub(crate) hold_secs: u64,
    /// Ask for resume tickets (what resumable sessions cost the edge).
    #[arg(long)]
    pub(crate) resumable: bool,
}

/// What `connect` measured.
#[derive(Debug, Serialize)]
pub(crate) struct ConnectFigures {
    pub(crate) transport: String,
    pub(crate) resumable: bool,
    /// Sessions opened and held.
    pub(crate) sessions: u64,
    pub(crate) ramp_handshakes_per_sec: f64,
    pub(crate) edge_rss_mib: f64,
    pub(crate) broker_rss_mib: f64,
    pub(crate) edge_bytes_per_session: f64,
    pub(crate) broker_bytes_per_session: f64,
    pub(crate) open_failures: u64,
    pub(crate) hold_failures: u64,
}

/// Ramps to `sessions`, holds them, and reports handshakes/s and memory per session.
pub(crate) async fn connect(args: &ConnectArgs) -> anyhow::Result<Report<ConnectFigures>> {
    fleet::raise_fd_limit(args.transport, args.sessions)?;
    let gateway = Gateway::start().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (edge0, broker0) = (gateway.edge.rss()?, gateway.broker.rss()?);
    let target = Target::new(&gateway, args.transport, args.sessions)?.resumable(args.resumable);
    let (held, open_failures, ramp) = fleet::open_and_hold(
        &target,
        1..args.sessions as i64 + 1,
        args.concurrency,
        Duration::from_secs(args.heartbeat_secs),
    )
    .await;
    let opened = held.len();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let (edge1, broker1) = (gateway.edge.rss()?, gateway.broker.rss()?);
    let hold_failures = held.release().await;
    gateway.stop().await;

    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / opened.max(1) as f64;
    let rate = opened as f64 / ramp.as_secs_f64();
    let mut report = Report::new(
        "connect",
        ConnectFigures {
            transport: transport_name(args.transport),
            resumable: args.resumable,
            sessions: opened as u64,
            ramp_handshakes_per_sec: rate,
            edge_rss_mib: edge1 as f64 / MIB,
            broker_rss_mib: broker1 as f64 / MIB,
            edge_bytes_per_session: per(edge0, edge1),
            broker_bytes_per_session: per(broker0, broker1),
            open_failures: count(&open_failures),
            hold_failures: count(&hold_failures),
        },
    );
    report.say(format!(
        "{opened} of {} {:?} sessions open in {:.1} s ({rate:.0} handshakes/s), held {} s heartbeating every {} s",
        args.sessions, args.transport, ramp.as_secs_f64(), args.hold_secs, args.heartbeat_secs
    ));
    report.say(format!(
        "edge RSS {:.1} MiB ({:.0} B/session), broker RSS {:.1} MiB ({:.0} B/session)",
        edge1 as f64 / MIB,
        per(edge0, edge1),
        broker1 as f64 / MIB,
        per(broker0, broker1)
    ));
    report.say_failures("open_failures", &open_failures);
    report.say_failures("hold_failures", &hold_failures);
    Ok(report)
}

/// `janus bench echo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct EchoArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub(crate) transport: Transport,
    /// Connections (sessions).
    #[arg(long, default_value_t = 64)]
    pub(crate) sessions: usize,
    /// Requests in flight per connection (closed loop).
    #[arg(long, default_value_t = 8)]
    pub(crate) inflight: usize,
    /// Offer this many requests per second in all instead (open loop).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Bytes per request.
    #[arg(long, default_value_t = 64)]
    pub(crate) payload: usize,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2)]
    pub(crate) warmup_secs: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub(crate) secs: u64,
    /// Log in at one edge, then resume at a second edge and echo through it: a client that
    /// came back at another edge (its broker hands the session over; nothing is forwarded).
    #[arg(long)]
    pub(crate) moved: bool,
}

impl EchoArgs {
    /// The load each connection offers.
    pub(crate) fn plan(&self) -> Plan {
        Plan {
            inflight: self.inflight,
            rate: self.rate.map(|total| total / self.sessions.max(1) as f64),
            payload: self.payload,
            warmup: Duration::from_secs(self.warmup_secs),
            measure: Duration::from_secs(self.secs),
        }
    }
}

/// What `echo` measured: the gateway's figures, and the raw echo baseline's under the same
/// load (`raw_…`).
#[derive(Debug, Serialize)]
pub(crate) struct EchoFigures {
    pub(crate) transport: String,
    pub(crate) moved: bool,
    pub(crate) sessions: u64,
    pub(crate) inflight: u64,
    pub(crate) offered_per_sec: Option<f64>,
    pub(crate) payload: u64,
    pub(crate) msgs_per_sec: f64,
    pub(crate) raw_msgs_per_sec: f64,
    /// `msgs_per_sec / raw_msgs_per_sec`.
    pub(crate) ratio: f64,
    #[serde(flatten)]
    pub(crate) latency: Quantiles,
    pub(crate) raw_p50_ms: f64,
    pub(crate) raw_p99_ms: f64,
    pub(crate) raw_p999_ms: f64,
    pub(crate) raw_max_ms: f64,
    /// The gateway's p99 less the raw echo's.
    pub(crate) added_p99_ms: f64,
    pub(crate) gateway_cpu_secs: f64,
    pub(crate) failures: u64,
    pub(crate) raw_failures: u64,
}

/// Echo through edge → broker → demo game and back (with `moved`, every session resumed at a
/// second edge first), then the same load against the raw echo baseline.
pub(crate) async fn echo(args: &EchoArgs) -> anyhow::Result<Report<EchoFigures>> {
    fleet::raise_fd_limit(args.transport, args.sessions)?;
    let plan = args.plan();
    let gateway = Gateway::start().await?;
    let target = Target::new(&gateway, args.transport, args.sessions)?.resumable(args.moved);
    let (clients, open_failures, _) =
        fleet::open_many(&target, 1..args.sessions as i64 + 1, 64).await;
    anyhow::ensure!(
        open_failures.is_empty(),
        "sessions failed to open: {open_failures:?}"
    );
    let mut clients: Vec<_> = clients.into_iter().map(|(_, c)| c).collect();
    let second = match args.moved {
        false => None,
        true => {
            let second = gateway.start_second_edge().await?;
            let endpoint = target.endpoint_among(second.listeners);
            for client in &mut clients {
                client
                    .resume(&endpoint, Duration::from_secs(10))
                    .await
                    .context("a resume at the second edge")?;
            }
            Some(second)
        }
    };
    let cpu_used = || -> anyhow::Result<f64> {
        let other = match &second {
            Some(second) => second.process.cpu_secs()?,
            None => 0.0,
        };
        Ok(gateway.edge.cpu_secs()? + gateway.broker.cpu_secs()? + other)
    };
    let cpu0 = cpu_used()?;
    let janus = echo::run(clients, plan).await;
    let cpu = cpu_used()? - cpu0;
    drop(second);
    gateway.stop().await;

    let raw_server = RawEcho::start().await?;
    let mut conns = Vec::with_capacity(args.sessions);
    for _ in 0..args.sessions {
        conns.push(RawConn::connect(raw_server.addr).await?);
    }
    let raw = echo::run(conns, plan).await;

    let name = match (args.rate.is_some(), args.moved) {
        (false, false) => "echo",
        (true, false) => "echo_rate",
        (false, true) => "echo_moved",
        (true, true) => "echo_rate_moved",
    };
    let (ours, theirs) = (janus.throughput(&plan), raw.throughput(&plan));
    let raw_latency = raw.latency.quantiles();
    let mut report = Report::new(
        name,
        EchoFigures {
            transport: transport_name(args.transport),
            moved: args.moved,
            sessions: args.sessions as u64,
            inflight: args.inflight as u64,
            offered_per_sec: args.rate,
            payload: args.payload as u64,
            msgs_per_sec: ours,
            raw_msgs_per_sec: theirs,
            ratio: ours / theirs.max(1e-9),
            latency: janus.latency.quantiles(),
            raw_p50_ms: raw_latency.p50_ms,
            raw_p99_ms: raw_latency.p99_ms,
            raw_p999_ms: raw_latency.p999_ms,
            raw_max_ms: raw_latency.max_ms,
            added_p99_ms: janus.latency.ms(0.99) - raw_latency.p99_ms,
            gateway_cpu_secs: cpu,
            failures: count(&janus.failures),
            raw_failures: count(&raw.failures),
        },
    );
    let load = match args.rate {
        Some(rate) => format!("{rate:.0} req/s offered"),
        None => format!("{} in flight each", args.inflight),
    };
    report.say(format!(
        "{} {:?} sessions, {load}, {} B: {ours:.0} req/s; raw tokio echo {theirs:.0} req/s; ratio {:.2}",
        args.sessions,
        args.transport,
        args.payload,
        ours / theirs.max(1e-9)
    ));
    report.say(format!("janus: {}", janus.latency.summary()));
    report.say(format!("raw:   {}", raw.latency.summary()));
    report.say(format!(
        "edge(s) + broker CPU {cpu:.1} s over {} s (game service and generator not counted)",
        args.secs + args.warmup_secs
    ));
    report.say_failures("failures", &janus.failures);
    report.say_failures("raw_failures", &raw.failures);
    Ok(report)
}

/// Bytes of every bench push.
pub(crate) const PUSH_PAYLOAD: usize = 64;

/// How long a fan-out round waits for its last delivery.
pub(crate) const ROUND_WAIT: Duration = Duration::from_secs(30);

/// `janus bench broadcast` / `janus bench multicast`.
#[derive(Debug, Clone, Args)]
pub(crate) struct FanoutArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub(crate) transport: Transport,
    /// Sessions that receive every push.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) sessions: usize,
    /// Pushes, one after the other (each waits for the last session).
    #[arg(long, default_value_t = 5)]
    pub(crate) rounds: i32,
}

/// What `broadcast` and `multicast` measured.
#[derive(Debug, Serialize)]
pub(crate) struct FanoutFigures {
    pub(crate) transport: String,
    /// Sessions open, each of which should get every push.
    pub(crate) sessions: u64,
    pub(crate) rounds: i32,
    /// Until the last session had the push: the median round, and the best.
    pub(crate) median_ms_to_last: f64,
    pub(crate) best_ms_to_last: f64,
    pub(crate) delivered_per_sec: f64,
    /// Deliveries that did not arrive within a round's 30 s.
    pub(crate) missing: u64,
    pub(crate) open_failures: u64,
    pub(crate) hold_failures: u64,
}

/// Opens `sessions`, then pushes to all of them `rounds` times through the broker's push API
/// (one broadcast, or one multicast naming every uid) and times each until the last session
/// has it.
pub(crate) async fn fanout(
    args: &FanoutArgs,
    multicast: bool,
) -> anyhow::Result<Report<FanoutFigures>> {
    fleet::raise_fd_limit(args.transport, args.sessions)?;
    let gateway = Gateway::start().await?;
    let target = Target::new(&gateway, args.transport, args.sessions)?;
    let uids = 1..args.sessions as i64 + 1;
    let (mut held, open_failures, _) =
        fleet::open_and_hold(&target, uids.clone(), 256, Duration::from_secs(30)).await;
    // Every session that opened must receive every push; those that did not open are reported.
    let sessions = held.len();
    anyhow::ensure!(sessions > 0, "no session opened: {open_failures:?}");
    let mut push = bc::push_service_client::PushServiceClient::connect(format!(
        "http://{}",
        gateway.broker_addr
    ))
    .await
    .context("cannot reach the broker's push API")?
    .max_encoding_message_size(64 << 20);

    let mut times = Vec::new();
    let mut missing = 0;
    for round in 1..=args.rounds {
        let body = bc::PushBody {
            r#mod: PUSH_MODULE,
            seq: round,
            data: vec![0x5a; PUSH_PAYLOAD],
            ..Default::default()
        };
        let started = Instant::now();
        if multicast {
            push.multicast(bc::MulticastRequest {
                bodies: vec![body],
                uids: uids.clone().collect(),
                color: String::new(),
            })
            .await?;
        } else {
            push.broadcast(bc::BroadcastRequest {
                bodies: vec![body],
                color: String::new(),
                sid: ZONE,
            })
            .await?;
        }
        let (received, last) =
            fleet::await_round(&mut held.arrivals, round, sessions, started, ROUND_WAIT).await;
        anyhow::ensure!(received > 0, "round {round}: no session received the push");
        missing += sessions - received;
        times.push(last - started);
    }
    let hold_failures = held.release().await;
    gateway.stop().await;

    times.sort();
    let median = times[times.len() / 2];
    let name = if multicast { "multicast" } else { "broadcast" };
    let rate = sessions as f64 / median.as_secs_f64();
    let mut report = Report::new(
        name,
        FanoutFigures {
            transport: transport_name(args.transport),
            sessions: sessions as u64,
            rounds: args.rounds,
            median_ms_to_last: median.as_secs_f64() * 1000.0,
            best_ms_to_last: times[0].as_secs_f64() * 1000.0,
            delivered_per_sec: rate,
            missing: missing as u64,
            open_failures: count(&open_failures),
            hold_failures: count(&hold_failures),
        },
    );
    report.say(format!(
        "{name} to {sessions} {:?} sessions: last one has it after {:.1} ms (median of {}; best {:.1} ms), {rate:.0} deliveries/s, {missing} missing",
        args.transport,
        median.as_secs_f64() * 1000.0,
        args.rounds,
        times[0].as_secs_f64() * 1000.0
    ));
    report.say_failures("open_failures", &open_failures);
    report.say_failures("hold_failures", &hold_failures);
    Ok(report)
}

/// `janus bench handshake`.
#[derive(Debug, Clone, Args)]
pub(crate) struct HandshakeArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub(crate) transport: Transport,
    /// Handshakes in flight.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    pub(crate) secs: u64,
}

/// What `handshake` measured.
#[derive(Debug, Serialize)]
pub(crate) struct HandshakeFigures {
    pub(crate) transport: String,
    pub(crate) concurrency: u64,
    /// Handshakes a second, the whole machine.
    pub(crate) handshakes_per_sec: f64,
    pub(crate) edge_cpu_secs: f64,
    pub(crate) handshakes_per_edge_cpu_sec: f64,
    /// The server side of the same handshake on one thread, no I/O.
    pub(crate) ceiling_per_thread_sec: f64,
    /// `handshakes_per_edge_cpu_sec / ceiling_per_thread_sec`.
    pub(crate) ratio: f64,
    pub(crate) aes_gcm_seal_1k_mib_per_sec: f64,
    pub(crate) failures: u64,
}

/// Connect + handshake + close in a loop, beside the single-thread cost of the same crypto.
pub(crate) async fn handshake(args: &HandshakeArgs) -> anyhow::Result<Report<HandshakeFigures>> {
    fleet::raise_fd_limit(args.transport, args.concurrency * 4)?;
    let gateway = Gateway::start().await?;
    let target = Arc::new(Target::new(&gateway, args.transport, args.concurrency * 4)?);
    let next = Arc::new(AtomicI64::new(1));
    let until = Instant::now() + Duration::from_secs(args.secs);
    let cpu0 = gateway.edge.cpu_secs()?;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (target, next) = (target.clone(), next.clone());
        tasks.spawn(async move {
            let (mut done, mut failed) = (0u64, Failures::new());
            while Instant::now() < until {
                match target.open(next.fetch_add(1, Ordering::Relaxed)).await {
                    Ok(client) => {
                        done += 1;
                        let _ = client.close().await;
                    }
                    Err(e) => *failed.entry(format!("{e:#}")).or_default() += 1,
                }
            }
            (done, failed)
        });
    }
    let (mut done, mut failed) = (0u64, Failures::new());
    while let Some(result) = tasks.join_next().await {
        let (n, f) = result?;
        done += n;
        for (reason, count) in f {
            *failed.entry(reason).or_default() += count;
        }
    }
    let edge_cpu = gateway.edge.cpu_secs()? - cpu0;
    let token = keys::mint_with(&gateway.tokens, 1, ZONE, "", 3600);
    let (server, client) = (gateway.handshake.clone(), target.client_config().clone());
    gateway.stop().await;
    let ceiling = tokio::task::spawn_blocking(move || {
        raw::handshake_ceiling(server, &client, &token, Duration::from_secs(3))
    })
    .await??;
    let seal =
        tokio::task::spawn_blocking(|| raw::seal_ceiling(1024, Duration::from_secs(1))).await?;

    let rate = done as f64 / args.secs as f64;
    let per_core = done as f64 / edge_cpu.max(1e-9);
    let mut report = Report::new(
        "handshake",
        HandshakeFigures {
            transport: transport_name(args.transport),
            concurrency: args.concurrency as u64,
            handshakes_per_sec: rate,
            edge_cpu_secs: edge_cpu,
            handshakes_per_edge_cpu_sec: per_core,
            ceiling_per_thread_sec: ceiling,
            ratio: per_core / ceiling,
            aes_gcm_seal_1k_mib_per_sec: seal / MIB,
            failures: count(&failed),
        },
    );
    report.say(format!(
        "{done} {:?} handshakes in {} s: {rate:.0}/s; the edge used {edge_cpu:.1} CPU s = {per_core:.0} handshakes per edge core-second",
        args.transport, args.secs
    ));
    report.say(format!(
        "single-thread ceiling (server side of the same v2 handshake, no I/O): {ceiling:.0}/s; ratio {:.2}",
        per_core / ceiling
    ));
    report.say(format!(
        "raw AES-256-GCM seal, 1 KiB messages, one thread: {:.0} MiB/s",
        seal / MIB
    ));
    report.say_failures("failures", &failed);
    Ok(report)
}
