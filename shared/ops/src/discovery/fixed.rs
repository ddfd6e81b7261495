//! Static discovery: the game-service instances listed in config. Nothing changes at run time
//! and nothing is registered anywhere (the other side is configured with this broker's address).

use async_trait::async_trait;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Discovery, Instance, Registration};
use crate::error::Result;

/// A fixed list of instances.
#[derive(Debug)]
pub struct StaticDiscovery {
    instances: Vec<Instance>,
}

impl StaticDiscovery {
    /// Discovery over `instances`.
    pub fn new(instances: Vec<Instance>) -> Self {
        Self { instances }
    }
}

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn register(&self, _instance: Instance) -> Result<Registration> {
        Ok(Registration::new(CancellationToken::new(), None))
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
