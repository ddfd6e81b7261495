//! `janus bench slow`: clients that read at a fixed rate, slower than the game pushes to them
//! (30 Hz state for 10 keys), over a small TCP receive window (a slow mobile link), in two
//! fleets of the same run, each against its own gateway: one whose broker's `[delivery]` makes
//! the module state (PROTOCOL.md §16), one with no rule (today's policy). How old the state a
//! client reads is when it reads it, and how many sessions are still up at the end.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use janus_client::Client;
use janus_proto::broadcaster::service::push::v1 as bc;
use serde::Serialize;
use tokio::time::{Instant, MissedTickBehavior};

use super::fleet::Target;
use super::gateway::Gateway;
use super::report::{Latency, Quantiles, Report};
use crate::connect::Transport;

/// The module pushed to: state at the first gateway, events at the second.
const MODULE: i32 = 20;
/// Seconds of the run whose ages are not recorded (the fleets fill their windows first).
const WARMUP: Duration = Duration::from_secs(3);

/// `janus bench slow`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SlowArgs {
    /// Sessions per policy.
    #[arg(long, default_value_t = 100)]
    pub(crate) sessions: usize,
    /// Seconds the pushes go on.
    #[arg(long, default_value_t = 20)]
    pub(crate) secs: u64,
    /// State keys per session (objects), each updated `hz` times a second.
    #[arg(long, default_value_t = 10)]
    pub(crate) keys: i64,
    /// Updates per second of each key.
    #[arg(long, default_value_t = 30)]
    pub(crate) hz: u32,
    /// Packets each client reads per second.
    #[arg(long, default_value_t = 100)]
    pub(crate) read_per_sec: u32,
    /// The TCP receive buffer each client's socket asks for, bytes.
    #[arg(long, default_value_t = 4096)]
    pub(crate) recv_buffer: u32,
    /// The edge's `[session] unsent_limit_bytes`: what the kernel may hold unsent per client.
    #[arg(long, default_value_t = 4096)]
    pub(crate) unsent_limit: usize,
}

/// What one fleet saw.
#[derive(Debug, Serialize)]
pub(crate) struct PolicyFigures {
    /// Sessions still up when the pushes ended.
    pub(crate) kept: u64,
    /// Age of each packet when its client read it (after the warm-up).
    pub(crate) age: Quantiles,
    /// Packets read, all sessions.
    pub(crate) read: u64,
}

/// What `slow` measured.
#[derive(Debug, Serialize)]
pub(crate) struct SlowFigures {
    pub(crate) sessions: u64,
    pub(crate) secs: u64,
    pub(crate) keys: i64,
    pub(crate) hz: u32,
    pub(crate) read_per_sec: u32,
    pub(crate) recv_buffer: u32,
    pub(crate) unsent_limit: usize,
    /// Packets pushed to each session.
    pub(crate) pushed_per_session: u64,
    /// The fleet whose packets are state.
    pub(crate) state: PolicyFigures,
    /// The fleet whose packets are events (today's policy).
    pub(crate) events: PolicyFigures,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Reads one packet every `1 / read_per_sec` until `end`, recording each one's age after
/// `record_from`; false if the session ended first.
async fn read_slowly(
    mut client: Client,
    read_per_sec: u32,
    record_from: Instant,
    end: Instant,
) -> (bool, Latency, u64) {
    let mut ages = Latency::new();
    let mut read = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / read_per_sec);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if tokio::time::timeout_at(end, tick.tick()).await.is_err() {
            return (true, ages, read);
        }
        let packet = match tokio::time::timeout_at(end, client.recv()).await {
            Err(_) => return (true, ages, read),
            Ok(Err(_)) => return (false, ages, read),
            Ok(Ok(packet)) => packet,
        };
        let Some(sent) = packet.data.get(..8) else {
            continue;
        };
        read += 1;
        if Instant::now() >= record_from {
            let sent = u64::from_be_bytes(sent.try_into().unwrap_or_default());
            ages.record(Duration::from_micros(now_micros().saturating_sub(sent)));
        }
    }
}

/// Opens both fleets, pushes to them for `secs`, and reports what their clients read.
pub(crate) async fn slow(args: &SlowArgs) -> anyhow::Result<Report<SlowFigures>> {
    let rule = format!("[[delivery.rules]]\nmodule = {MODULE}\nclass = \"state\"\n");
    let session = format!("unsent_limit_bytes = {}\n", args.unsent_limit);
    let gateways = [
        Gateway::start_with(&rule, &session).await?,
        Gateway::start_with("", &session).await?,
    ];
    let n = args.sessions as i64;
    let uids: Arc<[i64]> = (1..=n).collect();
    let mut clients = Vec::new();
    let mut pushers = Vec::new();
    for (fleet, gateway) in gateways.iter().enumerate() {
        let target =
            Target::new(gateway, Transport::Tcp, args.sessions)?.recv_buffer(args.recv_buffer);
        for &uid in uids.iter() {
            let client = target
                .open(uid)
                .await
                .with_context(|| format!("player {uid} could not log in"))?;
            clients.push((fleet == 0, client));
        }
        let push = bc::push_service_client::PushServiceClient::connect(format!(
            "http://{}",
            gateway.broker_addr
        ))
        .await
        .context("cannot reach the broker's push API")?;
        pushers.push(push);
    }

    let start = Instant::now();
    let end = start + Duration::from_secs(args.secs);
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(state, client)| {
            let reader = read_slowly(client, args.read_per_sec, start + WARMUP, end);
            (state, tokio::spawn(reader))
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.hz);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut rounds = 0u64;
    while Instant::now() < end {
        tick.tick().await;
        rounds += 1;
        let sent = now_micros().to_be_bytes();
        let calls = pushers.iter().flat_map(|push| {
            (1..=args.keys).map(|obj| {
                let mut data = sent.to_vec();
                data.resize(128, 0x5a);
                let request = bc::MulticastRequest {
                    bodies: vec![bc::PushBody {
                        r#mod: MODULE,
                        seq: 1,
                        obj,
                        data,
                        ..Default::default()
                    }],
                    uids: uids.to_vec(),
                    color: String::new(),
                };
                let mut push = push.clone();
                async move { push.multicast(request).await }
            })
        });
        for answer in futures_util::future::join_all(calls).await {
            answer.context("a push failed")?;
        }
    }
    let mut fleets_seen = [(0, Latency::new(), 0), (0, Latency::new(), 0)];
    for (state, reader) in readers {
        let (kept, ages, read) = reader.await?;
        let seen = &mut fleets_seen[usize::from(!state)];
        seen.0 += u64::from(kept);
        seen.1.merge(&ages);
        seen.2 += read;
    }
    for gateway in gateways {
        gateway.stop().await;
    }
    let [state, events] = fleets_seen.map(|(kept, ages, read)| PolicyFigures {
        kept,
        age: ages.quantiles(),
        read,
    });
    let pushed_per_session = rounds * args.keys as u64;
    let mut report = Report::new(
        "slow",
        SlowFigures {
            sessions: args.sessions as u64,
            secs: args.secs,
            keys: args.keys,
            hz: args.hz,
            read_per_sec: args.read_per_sec,
            recv_buffer: args.recv_buffer,
            unsent_limit: args.unsent_limit,
            pushed_per_session,
            state,
            events,
        },
    );
    let f = &report.figures;
    let line = |name: &str, p: &PolicyFigures| {
        format!(
            "{name}: {} of {} sessions kept, state age p50 {:.0} ms p99 {:.0} ms, {} packets read",
            p.kept, args.sessions, p.age.p50_ms, p.age.p99_ms, p.read
        )
    };
    let lines = [
        format!(
            "{} keys at {} Hz ({} packets per session in {} s), clients reading {} packets/s over a {} B receive buffer, the edge holding at most {} B unsent per client",
            args.keys,
            args.hz,
            pushed_per_session,
            args.secs,
            args.read_per_sec,
            args.recv_buffer,
            args.unsent_limit
        ),
        line("state (latest wins)", &f.state),
        line("events (today's policy)", &f.events),
    ];
    for l in lines {
        report.say(l);
    }
    Ok(report)
}
