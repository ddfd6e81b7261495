//! `janus bench idle`: what held, heartbeating sessions that do nothing else cost in CPU. N
//! sessions are opened and held for a minute at the client libraries' default heartbeat
//! interval, and the CPU time edge, broker and game service use over that minute is read from
//! `/proc`; the figure is idle sessions per consumed core. The baseline, in the same run: the
//! raw tokio echo server holding as many plain TCP connections, each sending a frame of a
//! heartbeat's size at the same interval and reading its echo (no crypto, no session, no
//! idle rule, no broker).

use std::time::Duration;

use clap::Args;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::echo::EchoConn;
use super::fleet::{self, Failures, Target};
use super::gateway::{Gateway, RawEcho};
use super::raw::RawConn;
use super::report::{Report, count};
use crate::connect::Transport;

/// The heartbeat interval of the client libraries (the JavaScript SDK's `heartbeatMs` and
/// `janus connect --heartbeat-secs` both default to 10 s).
const CLIENT_HEARTBEAT_SECS: u64 = 10;

/// Bytes of payload in each baseline frame: with the raw frame's 12-byte header, about the
/// size of a sealed heartbeat frame on the wire.
const BASELINE_PAYLOAD: usize = 32;

/// `janus bench idle`.
#[derive(Debug, Clone, Args)]
pub(crate) struct IdleArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "tcp")]
    pub(crate) transport: Transport,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) sessions: usize,
    /// Seconds between one session's heartbeats.
    #[arg(long, default_value_t = CLIENT_HEARTBEAT_SECS)]
    pub(crate) heartbeat_secs: u64,
    /// Seconds the CPU time is measured over, after the ramp.
    #[arg(long, default_value_t = 60)]
    pub(crate) hold_secs: u64,
}

/// What `idle` measured.
#[derive(Debug, Serialize)]
pub(crate) struct IdleFigures {
    pub(crate) transport: String,
    pub(crate) sessions: u64,
    pub(crate) heartbeat_secs: u64,
    pub(crate) hold_secs: u64,
    /// CPU time of edge, broker and game service over the hold.
    pub(crate) gateway_cpu_secs: f64,
    /// `sessions / (gateway_cpu_secs / hold_secs)`.
    pub(crate) sessions_per_core: f64,
    pub(crate) raw_connections: u64,
    pub(crate) raw_cpu_secs: f64,
    pub(crate) raw_connections_per_core: f64,
    /// `sessions_per_core / raw_connections_per_core`.
    pub(crate) ratio: f64,
    pub(crate) open_failures: u64,
    pub(crate) hold_failures: u64,
    pub(crate) raw_failures: u64,
}

/// Idle sessions per consumed core: the gateway's, then the raw baseline's.
pub(crate) async fn idle(args: &IdleArgs) -> anyhow::Result<Report<IdleFigures>> {
    fleet::raise_fd_limit(args.transport, args.sessions)?;
    let hold = Duration::from_secs(args.hold_secs.max(1));
    let heartbeat = Duration::from_secs(args.heartbeat_secs.max(1));

    let gateway = Gateway::start().await?;
    let target = Target::new(&gateway, args.transport, args.sessions)?;
    let (held, open_failures, _) =
        fleet::open_and_hold(&target, 1..args.sessions as i64 + 1, 256, heartbeat).await;
    let sessions = held.len();
    // Let the ramp's last handshakes and the first round of heartbeats settle.
    tokio::time::sleep(heartbeat).await;
    let cpu0 = gateway.cpu_secs()?;
    tokio::time::sleep(hold).await;
    let cpu = gateway.cpu_secs()? - cpu0;
    let hold_failures = held.release().await;
    gateway.stop().await;

    let raw = RawEcho::start().await?;
    let (connections, raw_cpu, raw_failures) =
        hold_raw(&raw, args.sessions, heartbeat, hold).await?;

    let per_core = |n: usize, cpu: f64| n as f64 / (cpu / hold.as_secs_f64()).max(1e-9);
    let sessions_per_core = per_core(sessions, cpu);
    let raw_per_core = per_core(connections, raw_cpu);
    let mut report = Report::new(
        "idle",
        IdleFigures {
            transport: format!("{:?}", args.transport).to_lowercase(),
            sessions: sessions as u64,
            heartbeat_secs: heartbeat.as_secs(),
            hold_secs: hold.as_secs(),
            gateway_cpu_secs: cpu,
            sessions_per_core,
            raw_connections: connections as u64,
            raw_cpu_secs: raw_cpu,
            raw_connections_per_core: raw_per_core,
            ratio: sessions_per_core / raw_per_core.max(1e-9),
            open_failures: count(&open_failures),
            hold_failures: count(&hold_failures),
            raw_failures: count(&raw_failures),
        },
    );
    report.say(format!(
        "{sessions} of {} {:?} sessions held {} s, heartbeating every {} s: edge + broker + game \
         used {cpu:.2} CPU s = {sessions_per_core:.0} idle sessions per consumed core",
        args.sessions,
        args.transport,
        hold.as_secs(),
        heartbeat.as_secs()
    ));
    report.say(format!(
        "raw tokio echo, {connections} connections, a {BASELINE_PAYLOAD}-byte frame each every \
         {} s: {raw_cpu:.2} CPU s = {raw_per_core:.0} connections per consumed core",
        heartbeat.as_secs()
    ));
    report.say_failures("open_failures", &open_failures);
    report.say_failures("hold_failures", &hold_failures);
    report.say_failures("raw_failures", &raw_failures);
    Ok(report)
}

/// Holds `n` connections to the raw echo server, each sending a frame every `interval` (from
/// a random point of it) and reading the echo, for `hold` after a settling interval; returns
/// how many were held, the server's CPU seconds over `hold`, and the failures.
async fn hold_raw(
    raw: &RawEcho,
    n: usize,
    interval: Duration,
    hold: Duration,
) -> anyhow::Result<(usize, f64, Failures)> {
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut failures = Failures::new();
    for _ in 0..n {
        let mut conn = match RawConn::connect(raw.addr).await {
            Ok(conn) => conn,
            Err(e) => {
                *failures.entry(format!("{e:#}")).or_default() += 1;
                continue;
            }
        };
        let stop = stop.clone();
        tasks.spawn(async move {
            let offset =
                Duration::from_millis(rand::random::<u64>() % interval.as_millis().max(1) as u64);
            let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            let payload = [0u8; BASELINE_PAYLOAD];
            loop {
                tokio::select! {
                    () = stop.cancelled() => return anyhow::Ok(()),
                    _ = beat.tick() => {
                        conn.send(&payload).await?;
                        conn.recv().await?;
                    }
                }
            }
        });
    }
    let held = tasks.len();
    tokio::time::sleep(interval).await;
    let cpu0 = raw.cpu_secs()?;
    tokio::time::sleep(hold).await;
    let cpu = raw.cpu_secs()? - cpu0;
    stop.cancel();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => *failures.entry(format!("{e:#}")).or_default() += 1,
            Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    Ok((held, cpu, failures))
}
