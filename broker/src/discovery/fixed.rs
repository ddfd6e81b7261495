//! Static discovery: the game-service instances listed in config. Nothing changes at run time
//! and nothing is registered anywhere (the other side is configured with this broker's address).

use std::collections::HashMap;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Discovery, Instance, Registration};
use crate::config::StaticInstance;
use crate::error::Result;

/// A fixed list of instances.
#[derive(Debug)]
pub struct StaticDiscovery {
    instances: Vec<Instance>,
}

impl StaticDiscovery {
    /// Discovery over `instances`.
    pub fn new(instances: &[StaticInstance]) -> Self {
        let instances = instances
            .iter()
            .enumerate()
            .map(|(i, s)| Instance {
                id: format!("static-{i}"),
                name: s.name.clone(),
                version: String::new(),
                metadata: HashMap::from([
                    ("color".to_owned(), s.color.clone()),
                    ("weight".to_owned(), s.weight.to_string()),
                ]),
                endpoints: vec![format!("grpc://{}", s.endpoint)],
            })
            .collect();
        Self { instances }
    }
}

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn register(&self, _instance: Instance) -> Result<Registration> {
        Ok(Registration {
            _keepalive: CancellationToken::new().drop_guard(),
        })
    }

    async fn watch(&self, name: &str) -> Result<watch::Receiver<Vec<Instance>>> {
        let matching = self
            .instances
            .iter()
            .filter(|i| i.name == name)
            .cloned()
            .collect();
        // The sender is dropped at once: the list never changes, receivers keep the value.
        Ok(watch::channel(matching).1)
    }
}
