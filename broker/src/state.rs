//! What every part of a running broker shares: its configuration and identity, the three
//! seams (routes, bus, discovery through the tunnels), the local session registry, the task
//! tracker and the root cancellation token.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::PushBus;
use crate::config::{BrokerConfig, Services};
use crate::delivery::Delivery;
use crate::metrics::Metrics;
use crate::missed::Missed;
use crate::registry::Registry;
use crate::route::RouteStore;
use crate::tunnel::Tunnels;

/// Broker-wide state, behind one `Arc`.
pub struct BrokerState {
    /// The validated configuration.
    pub config: BrokerConfig,
    /// `config.tunnels`, resolved.
    pub services: Services,
    /// `config.delivery`, resolved (PROTOCOL.md §16).
    pub delivery: Arc<Delivery>,
    /// This broker's endpoint (`host:port`), the value of its gateway routes.
    pub endpoint: String,
    /// Routes.
    pub routes: Arc<dyn RouteStore>,
    /// Pushes and control between brokers.
    pub bus: Arc<dyn PushBus>,
    /// Live sessions here.
    pub registry: Registry,
    /// Broadcasts the sessions of dead brokers missed, for the ones adopted here.
    pub(crate) missed: Missed,
    /// Tunnels to game services.
    pub tunnels: Tunnels,
    /// Metrics.
    pub metrics: Metrics,
    /// Every task the broker spawns.
    pub tasks: TaskTracker,
    /// Cancelled when the broker shuts down.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState")
            .field("endpoint", &self.endpoint)
            .field("sessions", &self.registry.len())
            .finish()
    }
}

impl BrokerState {
    /// The TTL of gateway routes.
    pub fn gate_ttl(&self) -> Duration {
        self.config.routes.gate_ttl_secs
    }
}

/// The bus name of the broker whose endpoint is `endpoint`: NATS subject tokens cannot hold
/// `.`, `*`, `>` or spaces, so everything but letters, digits, `-` and `_` becomes `_`.
pub fn broker_id(endpoint: &str) -> String {
    endpoint
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn broker_ids_are_single_subject_tokens() {
        assert_eq!(super::broker_id("10.0.0.5:17100"), "10_0_0_5_17100");
        assert_eq!(super::broker_id("broker-1.svc:1"), "broker-1_svc_1");
    }
}
