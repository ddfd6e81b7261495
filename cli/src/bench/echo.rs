//! Request/reply load: each connection keeps `inflight` requests outstanding (closed loop), or
//! sends at a fixed rate (open loop, latency measured from each request's scheduled time so a
//! stall is not hidden), and records every round trip that starts and ends inside the
//! measurement window. The same driver runs over a gateway session and over the raw baseline.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use janus_client::Client;
use janus_proto::message::ScServerUnexpectedErr;
use janus_proto::packet::Packet;
use janus_protocol::system;
use prost::Message;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::fleet::Failures;
use super::report::Latency;

/// The demo game's echo: module 2 (player service), sequence 1.
const ECHO_MODULE: i32 = 2;
const ECHO_SEQ: i32 = 1;

/// A connection requests can be echoed over.
pub(crate) trait EchoConn: Send + 'static {
    /// Sends one request carrying `payload`; returns the id its reply will carry.
    fn send(&mut self, payload: &[u8]) -> impl Future<Output = anyhow::Result<u64>> + Send;
    /// The id of the next reply (`None` for anything else). Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = anyhow::Result<Option<u64>>> + Send;
}

impl EchoConn for Client {
    async fn send(&mut self, payload: &[u8]) -> anyhow::Result<u64> {
        let packet = Packet {
            r#mod: ECHO_MODULE,
            seq: ECHO_SEQ,
            data: payload.to_vec(),
            ..Packet::default()
        };
        Ok(Client::send(self, packet).await? as u64)
    }

    async fn recv(&mut self) -> anyhow::Result<Option<u64>> {
        let packet = Client::recv(self).await?;
        if packet.r#mod == system::MODULE && packet.seq == system::SEQ_UNEXPECTED_ERR {
            let err = ScServerUnexpectedErr::decode(&packet.data[..])?;
            bail!("the gateway answered an error: {}", err.msg);
        }
        Ok((packet.index != 0).then_some(packet.index as u64))
    }
}

/// How the load is offered.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    /// Requests outstanding per connection (closed loop).
    pub(crate) inflight: usize,
    /// Requests per second per connection (open loop) instead of `inflight`.
    pub(crate) rate: Option<f64>,
    /// Bytes of each request.
    pub(crate) payload: usize,
    /// Load before measuring starts.
    pub(crate) warmup: Duration,
    /// The measurement window.
    pub(crate) measure: Duration,
}

/// What the connections saw.
pub(crate) struct Outcome {
    /// Round trips inside the window.
    pub(crate) latency: Latency,
    /// Connections that failed, by reason.
    pub(crate) failures: Failures,
}

impl Outcome {
    /// Round trips per second inside the window.
    pub(crate) fn throughput(&self, plan: &Plan) -> f64 {
        self.latency.count() as f64 / plan.measure.as_secs_f64()
    }
}

/// Runs `plan` over every connection at once.
pub(crate) async fn run<C: EchoConn>(conns: Vec<C>, plan: Plan) -> Outcome {
    let from = Instant::now() + plan.warmup;
    let until = from + plan.measure;
    let mut tasks = JoinSet::new();
    for conn in conns {
        tasks.spawn(drive(conn, plan, from, until));
    }
    let mut outcome = Outcome {
        latency: Latency::new(),
        failures: Failures::new(),
    };
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(latency)) => outcome.latency.merge(&latency),
            Ok(Err(e)) => *outcome.failures.entry(format!("{e:#}")).or_default() += 1,
            Err(e) => *outcome.failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    outcome
}

/// How long after the window a connection waits for its last replies.
const DRAIN: Duration = Duration::from_secs(5);

async fn drive<C: EchoConn>(
    mut conn: C,
    plan: Plan,
    from: Instant,
    until: Instant,
) -> anyhow::Result<Latency> {
    let payload = vec![0x5a; plan.payload];
    let mut latency = Latency::new();
    let mut pending: HashMap<u64, Instant> = HashMap::new();
    let record = |sent: Instant, latency: &mut Latency| {
        let now = Instant::now();
        if sent >= from && now <= until {
            latency.record(now - sent);
        }
    };
    match plan.rate {
        None => {
            for _ in 0..plan.inflight.max(1) {
                let id = conn.send(&payload).await?;
                pending.insert(id, Instant::now());
            }
            while !pending.is_empty() {
                let Ok(reply) = tokio::time::timeout_at(until + DRAIN, conn.recv()).await else {
                    bail!(
                        "{} replies still missing {DRAIN:?} after the window",
                        pending.len()
                    );
                };
                let Some(sent) = reply?.and_then(|id| pending.remove(&id)) else {
                    continue;
                };
                record(sent, &mut latency);
                if Instant::now() < until {
                    let id = conn.send(&payload).await?;
                    pending.insert(id, Instant::now());
                }
            }
        }
        Some(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            // Connections start at random points of the period so the offered load is smooth.
            let offset = period.mul_f64(rand::random::<f64>());
            let mut ticks = tokio::time::interval_at(Instant::now() + offset, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    scheduled = ticks.tick(), if Instant::now() < until => {
                        let id = conn.send(&payload).await?;
                        pending.insert(id, scheduled);
                    }
                    reply = conn.recv() => {
                        if let Some(sent) = reply?.and_then(|id| pending.remove(&id)) {
                            record(sent, &mut latency);
                        }
                        if pending.is_empty() && Instant::now() >= until {
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(until), if pending.is_empty() => break,
                    () = tokio::time::sleep_until(until + DRAIN) => {
                        bail!("{} replies still missing {DRAIN:?} after the window", pending.len());
                    }
                }
            }
        }
    }
    Ok(latency)
}
