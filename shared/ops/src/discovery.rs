//! Service discovery: registering a process and finding instances of services (game services
//! for brokers, brokers for edges). One seam, two implementations: etcd (kratos layout, leases
//! kept alive, changes watched, never polled) and a static list from config.
//!
//! Layout (PROTOCOL.md §14.6): key `/microservices/<name>/<id>`, value JSON
//! `{id, name, version, metadata, endpoints: ["grpc://host:port"]}`; instances are filtered by
//! `metadata.color` equal to the session's colour.

mod etcd;
mod fixed;

use std::collections::HashMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::error::Result;

pub use self::etcd::EtcdDiscovery;
pub use self::fixed::StaticDiscovery;

/// The discovery name of the gateway (its brokers), written into gateway routes.
pub const GATE_SERVICE: &str = "janus.gate.interface";

/// The discovery name brokers register under for edges to find them.
pub const BROKER_SERVICE: &str = "janus.broker";

/// This host's name (a container's own under Docker or Kubernetes), when it has one.
pub fn host_name() -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let host = host.trim();
    (!host.is_empty()).then(|| host.to_owned())
}

/// The `ip:port` others reach this host at, for a process listening on every interface: the
/// address its host name resolves to (a container's own IP under Docker or Kubernetes), else
/// loopback with a warning.
pub async fn own_address(port: u16) -> String {
    let host = host_name().unwrap_or_default();
    if !host.is_empty()
        && let Ok(mut addrs) = tokio::net::lookup_host((host.as_str(), port)).await
        && let Some(addr) = addrs.find(|a| a.is_ipv4() && !a.ip().is_loopback())
    {
        tracing::info!(%addr, "no advertised address set: using the host name's address");
        return addr.to_string();
    }
    tracing::warn!("no advertised address set and the host name does not resolve: using 127.0.0.1");
    format!("127.0.0.1:{port}")
}

/// One registered instance of a service (the kratos registry record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique instance id.
    pub id: String,
    /// Discovery name, e.g. `roma.player.service`.
    pub name: String,
    /// Software version.
    #[serde(default)]
    pub version: String,
    /// Free-form metadata; `color` selects instances for a session, `weight` weighs them.
    #[serde(default)]
    pub metadata: HashMap<String, String>,
    /// Endpoints such as `grpc://10.0.0.5:9000`.
    #[serde(default)]
    pub endpoints: Vec<String>,
}

impl Instance {
    /// The `host:port` of the first `grpc://` endpoint.
    pub fn grpc_endpoint(&self) -> Option<&str> {
        self.endpoints
            .iter()
            .find_map(|e| e.strip_prefix("grpc://"))
    }

    /// The instance's colour (`metadata.color`, empty when unset).
    pub fn color(&self) -> &str {
        self.metadata.get("color").map(String::as_str).unwrap_or("")
    }

    /// The instance's weight for load balancing (`metadata.weight`, default 1, at least 1).
    pub fn weight(&self) -> i64 {
        self.metadata
            .get("weight")
            .and_then(|w| w.parse::<i64>().ok())
            .unwrap_or(1)
            .max(1)
    }
}

/// Registers instances and watches services.
#[async_trait]
pub trait Discovery: Send + Sync + 'static {
    /// Registers `instance` until the returned guard is dropped or the process exits (etcd: a
    /// lease kept alive in the background; deregistered on drop).
    async fn register(&self, instance: Instance) -> Result<Registration>;

    /// The live instances of service `name`, updated whenever they change.
    async fn watch(&self, name: &str) -> Result<watch::Receiver<Vec<Instance>>>;
}

/// Keeps a registration alive; [`Registration::deregister`] removes it and waits for that,
/// dropping it removes it in the background.
pub struct Registration {
    /// Cancels the keepalive task when dropped; the task then deregisters.
    stop: Option<tokio_util::sync::DropGuard>,
    /// The keepalive task, if there is one.
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Registration {
    pub(crate) fn new(
        stop: tokio_util::sync::CancellationToken,
        task: Option<tokio::task::JoinHandle<()>>,
    ) -> Self {
        Self {
            stop: Some(stop.drop_guard()),
            task,
        }
    }

    /// Removes the registration and waits until it is gone (or has failed to go, logged).
    pub async fn deregister(mut self) {
        drop(self.stop.take());
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registration")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kratos_records_parse_and_expose_endpoint_and_color() {
        let json = r#"{"id":"p1","name":"roma.player.service","version":"v1","metadata":{"color":"blue"},"endpoints":["http://h:8000","grpc://h:9000"]}"#;
        let instance: Instance = serde_json::from_str(json).unwrap();
        assert_eq!(instance.grpc_endpoint(), Some("h:9000"));
        assert_eq!(instance.color(), "blue");
    }
}
