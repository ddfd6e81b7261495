//! Redis connections, written once for everything in the broker that talks to Redis: the route
//! store, the Redis push bus and the go-pantheon push subscription. [`Commands`] is a command
//! connection to a standalone Redis (a reconnecting connection manager) or a Redis Cluster,
//! every call under a deadline; [`Subscription`] is one SUBSCRIBE connection that keeps a set of
//! channels subscribed across losses. Neither knows what the keys or channels mean.

mod subscription;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, ScriptInvocation};

pub(crate) use self::subscription::Subscription;
use crate::error::{Error, Result};

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Whether a call that failed because its connection had dropped is sent once more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// Sent again on the connection the manager makes anew: for calls that are idempotent or
    /// converge when repeated (the dropped attempt may have run).
    IfDropped,
    /// Never sent twice: for calls that must run at most once (a publish).
    Never,
}

/// A command connection with a deadline on every call; errors become `fail(reason)`, the
/// caller's own error variant.
#[derive(Clone)]
pub(crate) struct Commands {
    conn: Conn,
    timeout: Duration,
    fail: fn(String) -> Error,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands")
            .field("cluster", &self.is_cluster())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Commands {
    /// A standalone Redis at `url` (`redis://host:port/db`). The connection is made lazily and
    /// re-made after failures, so its owner starts while Redis is down and recovers when it
    /// returns.
    pub(crate) fn standalone(
        url: &str,
        timeout: Duration,
        fail: fn(String) -> Error,
    ) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| fail(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            conn: Conn::Single(manager),
            timeout,
            fail,
        })
    }

    /// A Redis Cluster through its seed `urls`.
    pub(crate) async fn cluster(
        urls: &[String],
        timeout: Duration,
        fail: fn(String) -> Error,
    ) -> Result<Self> {
        let client = ClusterClient::builder(urls.iter().map(String::as_str))
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let conn = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| fail("timed out connecting to the cluster".into()))?
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            conn: Conn::Cluster(conn),
            timeout,
            fail,
        })
    }

    /// A standalone Redis at `urls[0]`, or with `cluster` a Redis Cluster through the seeds
    /// `urls`: a connection of its own each time.
    pub(crate) async fn connect(
        urls: &[String],
        cluster: bool,
        timeout: Duration,
        fail: fn(String) -> Error,
    ) -> Result<Self> {
        match urls.first() {
            _ if cluster => Self::cluster(urls, timeout, fail).await,
            Some(url) => Self::standalone(url, timeout, fail),
            None => Err(fail("no Redis URL".into())),
        }
    }

    /// Whether this is a Redis Cluster connection.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// Runs `cmd`.
    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd, resend: Resend) -> Result<T> {
        self.deadline(resend, || async {
            match self.conn.clone() {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        })
        .await
    }

    /// Runs `pipe` (standalone Redis; on a cluster each command's keys decide its node).
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        resend: Resend,
    ) -> Result<T> {
        self.deadline(resend, || async {
            match self.conn.clone() {
                Conn::Single(mut c) => pipe.query_async(&mut c).await,
                Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
            }
        })
        .await
    }

    /// Runs a script invocation (`EVALSHA`, falling back to `EVAL` after `NOSCRIPT`).
    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        resend: Resend,
    ) -> Result<T> {
        self.deadline(resend, || async {
            match self.conn.clone() {
                Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
        })
        .await
    }

    /// Runs `op` under the deadline. With [`Resend::IfDropped`], a call that failed because the
    /// connection had dropped (Redis restarted: the manager learns its connection is dead only
    /// from a failed command) is sent once more, on the connection the manager makes again.
    async fn deadline<T, Fut>(&self, resend: Resend, op: impl Fn() -> Fut) -> Result<T>
    where
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut result = self.within(op()).await?;
        if resend == Resend::IfDropped
            && let Err(e) = &result
            && (e.is_connection_dropped() || e.is_io_error())
        {
            tracing::debug!(error = %e, "Redis connection dropped; trying again");
            result = self.within(op()).await?;
        }
        result.map_err(|e| (self.fail)(e.to_string()))
    }

    async fn within<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<redis::RedisResult<T>> {
        tokio::time::timeout(self.timeout, op)
            .await
            .map_err(|_| (self.fail)(format!("no answer within {:?}", self.timeout)))
    }
}
