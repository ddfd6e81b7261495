//! The in-memory route store of the standalone mode: one process, one map, the same semantics
//! as Redis (expiry, set-and-get, set-if-absent, compare-and-renew, compare-and-delete).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;

use super::RouteStore;
use crate::error::Result;

/// Routes in a map; expired entries read as absent and are dropped when touched.
#[derive(Debug, Default)]
pub struct MemoryRoutes {
    map: Mutex<HashMap<String, (String, Instant)>>,
}

impl MemoryRoutes {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, (String, Instant)>, Instant) -> R) -> R {
        let mut map = self.map.lock();
        f(&mut map, Instant::now())
    }
}

fn live<'a>(
    map: &'a mut HashMap<String, (String, Instant)>,
    key: &str,
    now: Instant,
) -> Option<&'a mut (String, Instant)> {
    if map.get(key).is_some_and(|(_, expiry)| *expiry <= now) {
        map.remove(key);
    }
    map.get_mut(key)
}

#[async_trait]
impl RouteStore for MemoryRoutes {
    async fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self.with(|map, now| live(map, key, now).map(|(v, _)| v.clone())))
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        Ok(self.with(|map, now| {
            keys.iter()
                .map(|key| live(map, key, now).map(|(v, _)| v.clone()))
                .collect()
        }))
    }

    async fn swap(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        Ok(self.with(|map, now| {
            let old = live(map, key, now).map(|(v, _)| v.clone());
            map.insert(key.to_owned(), (value.to_owned(), now + ttl));
            old
        }))
    }

    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<String> {
        Ok(self.with(|map, now| match live(map, key, now) {
            Some((winner, _)) => winner.clone(),
            None => {
                map.insert(key.to_owned(), (value.to_owned(), now + ttl));
                value.to_owned()
            }
        }))
    }

    async fn renew(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        Ok(self.with(|map, now| {
            live(map, key, now).map(|(current, expiry)| {
                if current == value {
                    *expiry = now + ttl;
                }
                current.clone()
            })
        }))
    }

    async fn delete_if(&self, key: &str, value: &str) -> Result<bool> {
        Ok(self.with(|map, now| {
            let owned = live(map, key, now).is_some_and(|(current, _)| current == value);
            if owned {
                map.remove(key);
            }
            owned
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::conformance;

    #[tokio::test]
    async fn behaves_like_the_redis_store() {
        conformance::run(&MemoryRoutes::new()).await;
    }
}
