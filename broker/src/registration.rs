//! What a broker writes into discovery about itself: one `janus.gate.interface` record per
//! colour it serves, shaped as go-pantheon's gate registers (PROTOCOL.md §12.1), and one
//! `janus.broker` record for edges. Pure: the server registers what these return.

use janus_ops::discovery::{BROKER_SERVICE, GATE_SERVICE, Instance};

use crate::config::DiscoveryConfig;
use crate::state::broker_id;

/// Where this broker is reached, as discovery lists it.
#[derive(Debug, Clone, Copy)]
pub struct Addresses<'a> {
    /// The advertised gRPC `host:port` (the value of its gateway routes).
    pub endpoint: &'a str,
    /// The admin HTTP port.
    pub admin_port: u16,
}

impl Addresses<'_> {
    /// The admin endpoint on the advertised host.
    fn admin(&self) -> String {
        let host = self
            .endpoint
            .rsplit_once(':')
            .map_or(self.endpoint, |(host, _)| host);
        format!("{host}:{}", self.admin_port)
    }
}

/// The registry id of the gateway record for `color`: the broker id, suffixed with `-<color>`
/// when the colour is not empty (one broker, one record per colour).
pub fn gate_id(endpoint: &str, color: &str) -> String {
    let id = broker_id(endpoint);
    if color.is_empty() {
        id
    } else {
        format!("{id}-{color}")
    }
}

/// The `janus.gate.interface` records: one per colour in `discovery.colors`, with the metadata
/// go-pantheon's gate registers (`svc`, `profile`, `ver`, `color`) and its endpoint list (the
/// client endpoints configured, then `http://` admin, then `grpc://`, kratos's server order).
pub fn gate_instances(discovery: &DiscoveryConfig, at: Addresses<'_>) -> Vec<Instance> {
    let version = env!("CARGO_PKG_VERSION");
    let endpoints: Vec<String> = discovery
        .client_endpoints
        .iter()
        .cloned()
        .chain([
            format!("http://{}", at.admin()),
            format!("grpc://{}", at.endpoint),
        ])
        .collect();
    discovery
        .colors
        .iter()
        .map(|color| Instance {
            id: gate_id(at.endpoint, color),
            name: GATE_SERVICE.to_owned(),
            version: version.to_owned(),
            metadata: [
                ("svc", GATE_SERVICE),
                ("profile", discovery.profile.as_str()),
                ("ver", version),
                ("color", color.as_str()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            endpoints: endpoints.clone(),
        })
        .collect()
}

/// The `janus.broker` record edges find this broker by.
pub fn broker_instance(at: Addresses<'_>) -> Instance {
    Instance {
        id: broker_id(at.endpoint),
        name: BROKER_SERVICE.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        metadata: [("admin".to_owned(), at.admin())].into(),
        endpoints: vec![format!("grpc://{}", at.endpoint)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_registers_as_the_go_gate_once_per_colour() {
        let discovery = DiscoveryConfig {
            colors: vec!["blue".into(), "red".into()],
            profile: "prod".into(),
            client_endpoints: vec!["tcp://gate.example:7001".into()],
            ..DiscoveryConfig::default()
        };
        let at = Addresses {
            endpoint: "10.0.0.5:17100",
            admin_port: 18101,
        };
        let records = gate_instances(&discovery, at);
        assert_eq!(records.len(), 2);
        for (record, color) in records.iter().zip(["blue", "red"]) {
            assert_eq!(record.id, format!("10_0_0_5_17100-{color}"));
            assert_eq!(record.name, "janus.gate.interface");
            assert_eq!(record.color(), color);
            let mut keys: Vec<&str> = record.metadata.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["color", "profile", "svc", "ver"]);
            assert_eq!(record.metadata["svc"], "janus.gate.interface");
            assert_eq!(record.metadata["profile"], "prod");
            assert_eq!(record.metadata["ver"], record.version);
            assert_eq!(
                record.endpoints,
                [
                    "tcp://gate.example:7001",
                    "http://10.0.0.5:18101",
                    "grpc://10.0.0.5:17100"
                ]
            );
            assert_eq!(record.grpc_endpoint(), Some("10.0.0.5:17100"));
        }
    }

    #[test]
    fn the_default_colour_keeps_the_broker_id() {
        let at = Addresses {
            endpoint: "b:1",
            admin_port: 2,
        };
        let records = gate_instances(&DiscoveryConfig::default(), at);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].id, "b_1");
        assert_eq!(records[0].color(), "");
        assert_eq!(broker_instance(at).id, "b_1");
        assert_eq!(broker_instance(at).metadata["admin"], "b:2");
    }
}
