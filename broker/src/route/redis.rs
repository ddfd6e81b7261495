//! The Redis route store: standalone Redis or Redis Cluster, chosen in config, on the broker's
//! shared command connection ([`Commands`]). Every call has a deadline, so an unreachable Redis
//! turns into a prompt [`Error::RouteStore`] instead of a hung session. Every write is a Lua
//! script, so it is atomic on the server and needs nothing newer than Redis 2.6 (`SET … GET`
//! would need 6.2, `SET … NX GET` 7.0, and go-pantheon deployments run older ones). Each script
//! touches one key, so it runs on Redis Cluster too. `Script` sends `EVALSHA` and falls back to
//! `EVAL` when the server answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).

use std::time::Duration;

use async_trait::async_trait;
use redis::{FromRedisValue, Script};

use super::RouteStore;
use crate::error::{Error, Result};
use crate::redis_conn::{Commands, Resend};

/// Sets `KEYS[1]` to `ARGV[1]` for `ARGV[2]` seconds; returns the value it replaced (`SET … GET
/// EX`).
const SWAP: &str = r"
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return previous";

/// Sets `KEYS[1]` to `ARGV[1]` for `ARGV[2]` seconds unless it exists; returns the value that
/// holds afterwards (`SET … NX GET EX`, answering the winner's value).
const CLAIM: &str = r"
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]";

/// Renews `KEYS[1]` for `ARGV[2]` seconds if it holds `ARGV[1]`; returns the value found.
const RENEW: &str = r"
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return current";

/// Deletes `KEYS[1]` if it holds `ARGV[1]`; returns 1 if it deleted.
const DELETE_IF: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Routes in Redis.
#[derive(Debug)]
pub struct RedisRoutes {
    redis: Commands,
    swap: Script,
    claim: Script,
    renew: Script,
    delete_if: Script,
}

impl RedisRoutes {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`). The connection is made
    /// lazily and re-made after failures, so a broker starts while Redis is down and recovers
    /// when it returns.
    pub fn standalone(url: &str, timeout: Duration) -> Result<Self> {
        Ok(Self::with(Commands::standalone(
            url,
            timeout,
            Error::RouteStore,
        )?))
    }

    /// Connects to a Redis Cluster through its seed `urls`.
    pub async fn cluster(urls: &[String], timeout: Duration) -> Result<Self> {
        Ok(Self::with(
            Commands::cluster(urls, timeout, Error::RouteStore).await?,
        ))
    }

    fn with(redis: Commands) -> Self {
        Self {
            redis,
            swap: Script::new(SWAP),
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            delete_if: Script::new(DELETE_IF),
        }
    }

    // Every operation here is idempotent or converges when repeated (a repeated swap or claim
    // finds its own value), so a call whose connection dropped is sent again.
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        self.redis.query(cmd, Resend::IfDropped).await
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[&str],
    ) -> Result<T> {
        let mut invocation = script.prepare_invoke();
        invocation.key(key).arg(args);
        self.redis.script(&invocation, Resend::IfDropped).await
    }
}

fn secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

#[async_trait]
impl RouteStore for RedisRoutes {
    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        // Keys of different players live in different cluster slots, so no MGET.
        if self.redis.is_cluster() {
            futures_util::future::try_join_all(keys.iter().map(|key| async move {
                let mut get = redis::cmd("GET");
                get.arg(key);
                self.query(&get).await
            }))
            .await
        } else {
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("GET").arg(key);
            }
            self.redis.pipeline(&pipe, Resend::IfDropped).await
        }
    }

    async fn swap(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        self.script(&self.swap, key, &[value, &secs(ttl).to_string()])
            .await
    }

    async fn claim(&self, key: &str, value: &str, ttl: Duration) -> Result<String> {
        self.script(&self.claim, key, &[value, &secs(ttl).to_string()])
            .await
    }

    async fn renew(&self, key: &str, value: &str, ttl: Duration) -> Result<Option<String>> {
        self.script(&self.renew, key, &[value, &secs(ttl).to_string()])
            .await
    }

    async fn delete_if(&self, key: &str, value: &str) -> Result<bool> {
        let deleted: i64 = self.script(&self.delete_if, key, &[value]).await?;
        Ok(deleted == 1)
    }
}
