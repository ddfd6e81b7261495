//! etcd discovery in the kratos layout: a registration is a key under a lease that a background
//! task keeps alive (re-registering if the lease is lost, e.g. after an etcd restart) and
//! revokes when dropped; a watch reads the prefix once, then follows etcd's watch stream from
//! the next revision, and starts over from a fresh read whenever the stream breaks.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Discovery, Instance, Registration};
use crate::error::{Error, Result};

/// Lease TTL of registrations, seconds: kratos's (go-pantheon's) 15 s, so a dead process leaves
/// discovery in the time Roma and fabrica-kit expect.
const LEASE_TTL: i64 = 15;
/// How long to wait before retrying after an etcd failure.
const RETRY: Duration = Duration::from_secs(1);

fn err(e: impl std::fmt::Display) -> Error {
    Error::Discovery(e.to_string())
}

/// The kratos key of `name`'s instance `id`.
pub(super) fn instance_key(name: &str, id: &str) -> String {
    format!("/microservices/{name}/{id}")
}

/// Discovery through an etcd cluster.
#[derive(Clone)]
pub struct EtcdDiscovery {
    client: Client,
}

impl std::fmt::Debug for EtcdDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EtcdDiscovery")
    }
}

impl EtcdDiscovery {
    /// Connects to the etcd `endpoints` (`http://host:2379`).
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(err)?;
        Ok(Self { client })
    }

    async fn put_with_lease(client: &mut Client, key: &str, value: &str) -> Result<i64> {
        let lease = client.lease_grant(LEASE_TTL, None).await.map_err(err)?.id();
        client
            .put(key, value, Some(PutOptions::new().with_lease(lease)))
            .await
            .map_err(err)?;
        Ok(lease)
    }
}

/// Keeps `key` registered until `stop`, then revokes its lease.
async fn keep_registered(
    mut client: Client,
    key: String,
    value: String,
    mut lease: i64,
    stop: CancellationToken,
) {
    let every = Duration::from_secs((LEASE_TTL / 3).max(1) as u64);
    loop {
        let kept = async {
            let (mut keeper, mut responses) = client.lease_keep_alive(lease).await.map_err(err)?;
            loop {
                keeper.keep_alive().await.map_err(err)?;
                match responses.message().await.map_err(err)? {
                    Some(response) if response.ttl() > 0 => {}
                    _ => return Err::<(), Error>(err("lease expired")),
                }
                tokio::time::sleep(every).await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            Err(e) = kept => tracing::warn!(%key, error = %e, "registration lost; registering again"),
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(RETRY) => {}
            }
            match EtcdDiscovery::put_with_lease(&mut client, &key, &value).await {
                Ok(new_lease) => {
                    lease = new_lease;
                    break;
                }
                Err(e) => tracing::warn!(%key, error = %e, "cannot register yet"),
            }
        }
    }
    if let Err(e) = client.lease_revoke(lease).await {
        tracing::warn!(%key, error = %e, "could not deregister; the lease will expire");
    }
}

/// Follows `prefix` and publishes the instances under it until every receiver is gone.
async fn follow(mut client: Client, prefix: String, tx: watch::Sender<Vec<Instance>>) {
    loop {
        let run = async {
            let response = client
                .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(err)?;
            let revision = response.header().map_or(0, |h| h.revision());
            let mut instances: BTreeMap<String, Instance> = BTreeMap::new();
            for kv in response.kvs() {
                if let Some(instance) = parse(kv.value()) {
                    instances.insert(String::from_utf8_lossy(kv.key()).into_owned(), instance);
                }
            }
            tx.send_replace(instances.values().cloned().collect());
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(revision + 1);
            let mut stream = client
                .watch(prefix.as_str(), Some(options))
                .await
                .map_err(err)?;
            while let Some(response) = stream.message().await.map_err(err)? {
                if response.canceled() {
                    return Err(err("watch cancelled (compacted)"));
                }
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    match event.event_type() {
                        EventType::Put => match parse(kv.value()) {
                            Some(instance) => {
                                instances.insert(key, instance);
                            }
                            None => tracing::warn!(%key, "ignored a malformed registration"),
                        },
                        EventType::Delete => {
                            instances.remove(&key);
                        }
                    }
                }
                tx.send_replace(instances.values().cloned().collect());
            }
            Err::<(), Error>(err("watch stream ended"))
        };
        tokio::select! {
            _ = tx.closed() => return,
            Err(e) = run => tracing::warn!(%prefix, error = %e, "watch broke; reading again"),
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
}

fn parse(value: &[u8]) -> Option<Instance> {
    serde_json::from_slice(value).ok()
}

#[async_trait]
impl Discovery for EtcdDiscovery {
    async fn register(&self, instance: Instance) -> Result<Registration> {
        let key = instance_key(&instance.name, &instance.id);
        let value = serde_json::to_string(&instance).map_err(err)?;
        let mut client = self.client.clone();
        let lease = Self::put_with_lease(&mut client, &key, &value).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_registered(client, key, value, lease, stop.clone()));
        Ok(Registration::new(stop, Some(task)))
    }

    async fn watch(&self, name: &str) -> Result<watch::Receiver<Vec<Instance>>> {
        let (tx, rx) = watch::channel(Vec::new());
        let prefix = format!("/microservices/{name}/");
        let mut first = rx.clone();
        tokio::spawn(follow(self.client.clone(), prefix, tx));
        // Hand out the receiver once the first read is in (or has failed loudly in the log).
        let _ = tokio::time::timeout(Duration::from_secs(5), first.changed()).await;
        Ok(rx)
    }
}
