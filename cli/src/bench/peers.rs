//! `janus bench peers`: what a studio would use instead, driven by the same generator on the
//! same box, beside Janus's figures from the same run. Broadcast: `nats-server` delivering the
//! same message to the same number of plain subscribers. Echo: nginx terminating TLS in front
//! of the raw echo server, under the same load. The peers do less: no encryption per session
//! with keys of its own (one TLS or no TLS), no routing to a game service, no resume.

use clap::Args;
use serde::Serialize;

use super::echo;
use super::nats::{self, NatsServer};
use super::nginx::Nginx;
use super::report::{Report, count};
use super::scenarios::{self, EchoArgs, EchoFigures, FanoutArgs, FanoutFigures, PUSH_PAYLOAD};
use crate::connect::Transport;

/// `janus bench peers`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PeersArgs {
    /// Subscribers of the broadcast (sessions of Janus's, plain connections of nats-server's).
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// Broadcasts, one after the other.
    #[arg(long, default_value_t = 5)]
    rounds: i32,
    /// Echo connections (sessions of Janus's, TLS connections through nginx).
    #[arg(long, default_value_t = 64)]
    echo_sessions: usize,
    /// Echo requests in flight per connection.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Bytes per echo request.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Seconds of echo load before measuring.
    #[arg(long, default_value_t = 2)]
    warmup_secs: u64,
    /// Seconds of echo measured.
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

/// Runs Janus's broadcast and echo, then the peers under the same load.
pub(crate) async fn peers(args: &PeersArgs) -> anyhow::Result<Report<PeersFigures>> {
    let fanout = FanoutArgs {
        transport: Transport::Tcp,
        sessions: args.subscribers,
        rounds: args.rounds,
    };
    let broadcast = scenarios::fanout(&fanout, false).await?;
    let echo_args = EchoArgs {
        transport: Transport::Tcp,
        sessions: args.echo_sessions,
        inflight: args.inflight,
        rate: None,
        payload: args.payload,
        warmup_secs: args.warmup_secs,
        secs: args.secs,
        moved: false,
    };
    let echo = scenarios::echo(&echo_args).await?;
    compare(&broadcast, &echo_args, &echo).await
}

/// What the peers measured, beside Janus's figures from the same run.
#[derive(Debug, Serialize)]
pub(crate) struct PeersFigures {
    pub(crate) subscribers: u64,
    pub(crate) rounds: i32,
    pub(crate) push_payload: u64,
    pub(crate) janus_broadcast_median_ms: f64,
    pub(crate) nats_median_ms: f64,
    pub(crate) nats_best_ms: f64,
    pub(crate) janus_delivered_per_sec: f64,
    pub(crate) nats_delivered_per_sec: f64,
    /// `janus_delivered_per_sec / nats_delivered_per_sec`.
    pub(crate) broadcast_ratio: f64,
    pub(crate) nats_deliveries: u64,
    pub(crate) nats_missing: u64,
    pub(crate) nats_connect_failures: u64,
    pub(crate) echo_sessions: u64,
    pub(crate) inflight: u64,
    pub(crate) payload: u64,
    pub(crate) janus_msgs_per_sec: f64,
    pub(crate) nginx_msgs_per_sec: f64,
    /// `janus_msgs_per_sec / nginx_msgs_per_sec`.
    pub(crate) echo_ratio: f64,
    pub(crate) janus_p50_ms: f64,
    pub(crate) janus_p99_ms: f64,
    pub(crate) nginx_p50_ms: f64,
    pub(crate) nginx_p99_ms: f64,
    pub(crate) nginx_replies: u64,
    pub(crate) nginx_failures: u64,
}

/// Runs the peers under the load of `broadcast` and of `echo_args` (whose Janus figures are
/// `echo`) and reports them beside Janus's.
pub(crate) async fn compare(
    broadcast: &Report<FanoutFigures>,
    echo_args: &EchoArgs,
    echo: &Report<EchoFigures>,
) -> anyhow::Result<Report<PeersFigures>> {
    let b = &broadcast.figures;
    let server = NatsServer::start().await?;
    let mut nats = nats::fanout(&server, b.sessions as usize, b.rounds).await?;
    drop(server);
    nats.times.sort();
    let nats_median = nats.times[nats.times.len() / 2].as_secs_f64() * 1000.0;
    let nats_rate = nats.subscribers as f64 / (nats_median / 1000.0).max(1e-9);

    let plan = echo_args.plan();
    let nginx = Nginx::start().await?;
    let mut conns = Vec::with_capacity(echo_args.sessions);
    for _ in 0..echo_args.sessions {
        conns.push(nginx.connect().await?);
    }
    let proxied = echo::run(conns, plan).await;
    drop(nginx);

    let e = &echo.figures;
    let nginx_rate = proxied.throughput(&plan);
    let nginx_latency = proxied.latency.quantiles();
    let figures = PeersFigures {
        subscribers: nats.subscribers as u64,
        rounds: b.rounds,
        push_payload: PUSH_PAYLOAD as u64,
        janus_broadcast_median_ms: b.median_ms_to_last,
        nats_median_ms: nats_median,
        nats_best_ms: nats.times[0].as_secs_f64() * 1000.0,
        janus_delivered_per_sec: b.delivered_per_sec,
        nats_delivered_per_sec: nats_rate,
        broadcast_ratio: b.delivered_per_sec / nats_rate.max(1e-9),
        nats_deliveries: nats.delivered,
        nats_missing: nats.missing,
        nats_connect_failures: count(&nats.connect_failures),
        echo_sessions: e.sessions,
        inflight: e.inflight,
        payload: e.payload,
        janus_msgs_per_sec: e.msgs_per_sec,
        nginx_msgs_per_sec: nginx_rate,
        echo_ratio: e.msgs_per_sec / nginx_rate.max(1e-9),
        janus_p50_ms: e.latency.p50_ms,
        janus_p99_ms: e.latency.p99_ms,
        nginx_p50_ms: nginx_latency.p50_ms,
        nginx_p99_ms: nginx_latency.p99_ms,
        nginx_replies: proxied.latency.count(),
        nginx_failures: count(&proxied.failures),
    };
    let mut report = Report::new("peers", figures);
    let f = &report.figures;
    let lines = [
        format!(
            "broadcast of {} B to {} subscribers, median of {}: Janus {:.1} ms ({:.0}/s, encrypted sessions); nats-server {:.1} ms ({:.0}/s, plain connections, best {:.1} ms, {} missing); ratio Janus/nats {:.2}",
            f.push_payload,
            f.subscribers,
            f.rounds,
            f.janus_broadcast_median_ms,
            f.janus_delivered_per_sec,
            f.nats_median_ms,
            f.nats_delivered_per_sec,
            f.nats_best_ms,
            f.nats_missing,
            f.broadcast_ratio
        ),
        format!(
            "echo, {} connections, {} in flight each, {} B: Janus {:.0} req/s (p50 {:.3} ms, p99 {:.3} ms); nginx TLS → raw echo {:.0} req/s (p50 {:.3} ms, p99 {:.3} ms); ratio Janus/nginx {:.2}",
            f.echo_sessions,
            f.inflight,
            f.payload,
            f.janus_msgs_per_sec,
            f.janus_p50_ms,
            f.janus_p99_ms,
            f.nginx_msgs_per_sec,
            f.nginx_p50_ms,
            f.nginx_p99_ms,
            f.echo_ratio
        ),
        "the peers do not: encrypt each session with keys of its own (nats: none; nginx: TLS to the proxy only), route to a game service, or resume a session".to_owned(),
    ];
    for line in lines {
        report.say(line);
    }
    report.say_failures("nats_connect_failures", &nats.connect_failures);
    report.say_failures("nginx_failures", &proxied.failures);
    Ok(report)
}
