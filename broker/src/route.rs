//! Routes: which broker holds a player's session, and which game-service instance owns an
//! object. One seam, two implementations: Redis (the real deployment; fabrica-kit compatible
//! keys) and memory (standalone mode). Everything above it speaks only [`RouteStore`].
//!
//! Keys (PROTOCOL.md §14.5): `r_<service>_{<color>}_{<oid>}`, fabrica-kit's layout, which Roma
//! reads too. Redis Cluster hashes only the first `{…}` tag, the colour, so every route of one
//! colour lives in one slot (one cluster node carries a colour's whole route traffic); the
//! layout is Roma's, so it stays. Values are `host:port` gRPC endpoints.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;

pub use self::memory::MemoryRoutes;
pub use self::redis::RedisRoutes;

pub use janus_ops::discovery::GATE_SERVICE;

/// `r_<service>_{<color>}_{<oid>}`.
pub fn route_key(service: &str, color: &str, oid: i64) -> String {
    format!("r_{service}_{{{color}}}_{{{oid}}}")
}

/// The gateway route of a player: `r_janus.gate.interface_{<color>}_{<uid>}`.
pub fn gate_route_key(color: &str, uid: i64) -> String {
    route_key(GATE_SERVICE, color, uid)
}

/// Where a parked session's copy waits for a resume at another broker (PROTOCOL.md §13.5):
/// `janus.gate.parked_{<uid>}`, a base64 `SessionOpen` with its continuity.
pub fn parked_key(uid: i64) -> String {
    format!("janus.gate.parked_{{{uid}}}")
}

/// A store of routes with expiry. Every method is one atomic operation on the store.
#[async_trait]
pub trait RouteStore: Send + Sync + 'static {
    /// The value of `key`, if it exists and has not expired.
    async fn get(&self, key: &str) -> Result<Option<String>>;

    /// Values of several keys at once (`None` for each missing one), in order.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>>;

    /// Sets `key` to `value` with `ttl` unconditionally and returns the value it replaced, if
    /// any (Redis `SET … GET EX`). Used to claim a gateway route and learn who held it.
    async fn swap(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>>;

    /// Sets `key` to `value` with `ttl` only if it does not exist (Redis `SET NX EX`); returns
    /// the value that holds afterwards: `value` if this call won, the winner's otherwise.
    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<String>;

    /// Extends `key`'s `ttl` only if it still holds `value`; returns the value found (`None` if
    /// the key is gone). Atomic (a Lua script on Redis).
    async fn renew(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>>;

    /// Deletes `key` only if it holds `value` (compare-and-delete, a Lua script on Redis), so
    /// a newer owner's route is never removed; returns whether it deleted.
    async fn delete_if(&self, key: &str, value: &str) -> Result<bool>;
}

/// Checks a [`RouteStore`] against the semantics above. The memory store's unit tests and the
/// integration suite against a real Redis both run it, so the two cannot drift apart.
pub mod conformance {
    use std::time::Duration;

    use super::RouteStore;

    /// Runs every check on `store` with keys unique to this call; panics on the first mismatch.
    pub async fn run(store: &dyn RouteStore) {
        let unique = format!("{:x}", rand_suffix());
        let key = |n: u32| super::route_key("conformance", &unique, n.into());
        let ttl = Duration::from_secs(30);

        assert_eq!(
            store.get(&key(1)).await.unwrap(),
            None,
            "fresh key is absent"
        );
        assert_eq!(
            store.swap(&key(1), "a:1", ttl).await.unwrap(),
            None,
            "first swap"
        );
        assert_eq!(
            store.swap(&key(1), "b:2", ttl).await.unwrap().as_deref(),
            Some("a:1"),
            "swap returns the value it replaced"
        );
        assert_eq!(store.get(&key(1)).await.unwrap().as_deref(), Some("b:2"));

        assert_eq!(
            store.claim(&key(2), "a:1", ttl).await.unwrap(),
            "a:1",
            "claim wins"
        );
        assert_eq!(
            store.claim(&key(2), "b:2", ttl).await.unwrap(),
            "a:1",
            "loser sees winner"
        );

        assert_eq!(
            store.renew(&key(2), "b:2", ttl).await.unwrap().as_deref(),
            Some("a:1"),
            "renew by a non-owner reports the owner"
        );
        assert_eq!(
            store.renew(&key(2), "a:1", ttl).await.unwrap().as_deref(),
            Some("a:1")
        );
        assert_eq!(
            store.renew(&key(3), "a:1", ttl).await.unwrap(),
            None,
            "renew of a gone key"
        );

        assert!(
            !store.delete_if(&key(2), "b:2").await.unwrap(),
            "non-owner cannot delete"
        );
        assert!(
            store.delete_if(&key(2), "a:1").await.unwrap(),
            "owner deletes"
        );
        assert_eq!(store.get(&key(2)).await.unwrap(), None);

        assert_eq!(
            store.get_many(&[key(1), key(2), key(1)]).await.unwrap(),
            vec![Some("b:2".to_owned()), None, Some("b:2".to_owned())]
        );
        assert!(store.get_many(&[]).await.unwrap().is_empty());

        store
            .swap(&key(4), "a:1", Duration::from_secs(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(store.get(&key(4)).await.unwrap(), None, "routes expire");
        assert!(store.delete_if(&key(1), "b:2").await.unwrap());
    }

    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_fabrica_kit_with_hash_tags() {
        assert_eq!(
            gate_route_key("blue", 42),
            "r_janus.gate.interface_{blue}_{42}"
        );
        assert_eq!(
            route_key("roma.player.service", "", 7),
            "r_roma.player.service_{}_{7}"
        );
    }
}
