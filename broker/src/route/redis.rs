//! The Redis route store: standalone Redis (a reconnecting connection manager) or Redis
//! Cluster, chosen in config. Every call has a deadline, so an unreachable Redis turns into a
//! prompt [`Error::RouteStore`] instead of a hung session. Every write is a Lua script, so it
//! is atomic on the server and needs nothing newer than Redis 2.6 (`SET … GET` would need 6.2,
//! `SET … NX GET` 7.0, and go-pantheon deployments run older ones). Each script touches one key,
//! so it runs on Redis Cluster too. `Script` sends `EVALSHA` and falls back to `EVAL` when the
//! server answers `NOSCRIPT` (after a restart or `SCRIPT FLUSH`).

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Script};

use super::RouteStore;
use crate::error::{Error, Result};

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

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Routes in Redis.
pub struct RedisRoutes {
    conn: Conn,
    timeout: Duration,
    swap: Script,
    claim: Script,
    renew: Script,
    delete_if: Script,
}

impl std::fmt::Debug for RedisRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRoutes")
            .field("cluster", &matches!(self.conn, Conn::Cluster(_)))
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn store_err(e: impl std::fmt::Display) -> Error {
    Error::RouteStore(e.to_string())
}

impl RedisRoutes {
    /// Connects to a standalone Redis at `url` (`redis://host:port/db`). The connection is made
    /// lazily and re-made after failures, so a broker starts while Redis is down and recovers
    /// when it returns.
    pub fn standalone(url: &str, timeout: Duration) -> Result<Self> {
        let client = redis::Client::open(url).map_err(store_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(store_err)?;
        Ok(Self::with_conn(Conn::Single(manager), timeout))
    }

    /// Connects to a Redis Cluster through its seed `urls`.
    pub async fn cluster(urls: &[String], timeout: Duration) -> Result<Self> {
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(store_err)?;
        let conn = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| store_err("timed out connecting to the cluster"))?
            .map_err(store_err)?;
        Ok(Self::with_conn(Conn::Cluster(conn), timeout))
    }

    fn with_conn(conn: Conn, timeout: Duration) -> Self {
        Self {
            conn,
            timeout,
            swap: Script::new(SWAP),
            claim: Script::new(CLAIM),
            renew: Script::new(RENEW),
            delete_if: Script::new(DELETE_IF),
        }
    }

    /// Runs `op` under the deadline. A command that failed because the connection had dropped
    /// (Redis restarted: the manager learns its connection is dead only from a failed command)
    /// is sent once more, on the connection the manager makes again. Every operation here is
    /// idempotent or converges when repeated (a repeated swap or claim finds its own value).
    async fn deadline<T, Fut>(&self, op: impl Fn() -> Fut) -> Result<T>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut result = self.within(op()).await?;
        if let Err(e) = &result
            && (e.is_connection_dropped() || e.is_io_error())
        {
            tracing::debug!(error = %e, "route store connection dropped; trying again");
            result = self.within(op()).await?;
        }
        result.map_err(store_err)
    }

    async fn within<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>> {
        tokio::time::timeout(self.timeout, op)
            .await
            .map_err(|_| store_err(format!("no answer within {:?}", self.timeout)))
    }

    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T> {
        self.deadline(|| async {
            match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    async fn script<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[&str],
    ) -> Result<T> {
        async fn run<C: ConnectionLike + Send, T: FromRedisValue>(
            script: &Script,
            key: &str,
            args: &[&str],
            conn: &mut C,
        ) -> redis::RedisResult<T> {
            script.key(key).arg(args).invoke_async(conn).await
        }
        self.deadline(|| async {
            match self.conn.clone() {
                Conn::Single(mut c) => run(script, key, args, &mut c).await,
                Conn::Cluster(mut c) => run(script, key, args, &mut c).await,
            }
        })
        .await
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
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("GET").arg(key);
        }
        match self.conn.clone() {
            Conn::Single(c) => {
                self.deadline(|| {
                    let mut c = c.clone();
                    let pipe = &pipe;
                    async move { pipe.query_async(&mut c).await }
                })
                .await
            }
            Conn::Cluster(c) => {
                futures_util::future::try_join_all(keys.iter().map(|key| {
                    let c = &c;
                    self.deadline(move || {
                        let mut c = c.clone();
                        async move { redis::cmd("GET").arg(key).query_async(&mut c).await }
                    })
                }))
                .await
            }
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
