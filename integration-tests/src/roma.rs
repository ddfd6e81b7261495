//! Roma's push side, as go-pantheon's Roma sends pushes to its gateways ([`Pusher`]):
//! - the broadcaster API (`broadcaster.service.push.v1.PushService` on `janus.gate.interface`)
//!   called with grpc-go by the Go pusher (`gopeers/pusher`, see [`crate::gopeer::pusher`]),
//!   which does what fabrica-kit's connection does: instances read from etcd, kept only if
//!   their colour is the caller's, the one the caller's gateway route names picked;
//! - Redis `PUBLISH` of a `PushMessage`, as Roma's broadcaster does: on the channel named by a
//!   player's gateway-route value for pushes and multicasts, on [`BROADCAST_CHANNEL`] for
//!   broadcasts.
//!
//! The route keys and channel names are spelled out here as go-pantheon spells them, never
//! taken from the broker's code, so the suites check the broker against go-pantheon's layout
//! rather than against itself. The Roma game service (tunnels) is [`crate::gopeer::Roma`].

use std::collections::BTreeMap;
use std::time::Duration;

use janus_proto::broadcaster::service::push::v1 as bc;
use prost::Message;
use redis::aio::MultiplexedConnection;

use crate::{Service, gopeer};

/// The channel Roma's broadcaster publishes broadcasts on.
pub const BROADCAST_CHANNEL: &str = "gate.broadcast.message";
/// The module of every push [`body`] makes.
pub const PUSH_MOD: i32 = 3;
/// The seq of every push [`body`] makes.
pub const PUSH_SEQ: i32 = 7;

/// How long one call of the Go pusher may run.
const PUSHER_TIMEOUT: Duration = Duration::from_secs(20);

/// The push body of `text`: [`PUSH_MOD`], [`PUSH_SEQ`].
pub fn body(text: &str) -> bc::PushBody {
    bc::PushBody {
        data: text.as_bytes().to_vec(),
        r#mod: PUSH_MOD,
        seq: PUSH_SEQ,
        ..Default::default()
    }
}

/// `r_janus.gate.interface_{<color>}_{<uid>}`, fabrica-kit's gateway route key.
pub fn route_key(color: &str, uid: i64) -> String {
    format!("r_janus.gate.interface_{{{color}}}_{{{uid}}}")
}

/// Waits until `channel` has `want` subscribers.
pub async fn wait_subscribers(redis: &mut MultiplexedConnection, channel: &str, want: i64) {
    let mut n = 0;
    for _ in 0..200 {
        let (_, got): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(redis)
            .await
            .unwrap();
        n = got;
        if n == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{channel} has {n} subscribers, not {want}");
}

/// What one call of the Go pusher printed.
#[derive(Debug)]
pub struct GoPush {
    /// The nodes the colour filter kept, sorted.
    pub nodes: Vec<String>,
    /// The gateway route of the calling context's (colour, oid), "" without one.
    pub route: String,
    /// The node it called.
    pub node: String,
    /// `PushResponse.pushed`.
    pub pushed: bool,
    /// `MulticastResponse.pushed_uids`, sorted.
    pub pushed_uids: Vec<i64>,
}

/// Roma's pushing side: the Go pusher on one etcd and Redis, and a Redis client (its
/// broadcaster), for a deployment of `brokers` brokers.
pub struct Pusher {
    etcd_url: String,
    redis_addr: String,
    brokers: usize,
    redis: MultiplexedConnection,
}

impl Pusher {
    /// Roma on the etcd at `etcd_url` (`http://…`) and on `redis`, pushing to a deployment of
    /// `brokers` brokers (each subscribes to the broadcast channel).
    pub async fn connect(etcd_url: &str, redis: &Service, brokers: usize) -> Self {
        Self {
            etcd_url: etcd_url.to_owned(),
            redis_addr: redis.addr.clone(),
            brokers,
            redis: redis.redis_connection().await,
        }
    }

    /// Its Redis connection, for commands of a test's own.
    pub fn redis(&mut self) -> &mut MultiplexedConnection {
        &mut self.redis
    }

    /// One broadcaster call by the Go pusher from the worker of `oid` in `color` (`call`: its
    /// `-call …` flags; the body is [`body`]'s); what it printed, or its stderr when it failed.
    pub async fn call(&self, color: &str, oid: i64, call: &[&str]) -> Result<GoPush, String> {
        let oid = oid.to_string();
        let (module, seq) = (PUSH_MOD.to_string(), PUSH_SEQ.to_string());
        let mut args = vec![
            "-etcd",
            &self.etcd_url,
            "-redis",
            &self.redis_addr,
            "-color",
            color,
            "-oid",
            &oid,
            "-mod",
            &module,
            "-seq",
            &seq,
        ];
        args.extend_from_slice(call);
        let run = gopeer::pusher(&args, PUSHER_TIMEOUT).await;
        if !run.success {
            return Err(run.stderr);
        }
        let line = run
            .lines
            .first()
            .unwrap_or_else(|| panic!("the Go pusher {args:?} printed nothing"));
        let strings = |v: &serde_json::Value| -> Vec<String> {
            serde_json::from_value(v.clone()).unwrap_or_default()
        };
        let pushed = GoPush {
            nodes: strings(&line["nodes"]),
            route: line["route"].as_str().unwrap_or_default().to_owned(),
            node: line["node"].as_str().unwrap_or_default().to_owned(),
            pushed: line["pushed"].as_bool().unwrap_or_default(),
            pushed_uids: serde_json::from_value(line["pushed_uids"].clone()).unwrap_or_default(),
        };
        // fabrica-kit's reader balancer: the route's node when the filter kept it.
        if pushed.nodes.contains(&pushed.route) {
            assert_eq!(pushed.node, pushed.route, "{pushed:?}");
        }
        Ok(pushed)
    }

    /// Roma's `Publisher.Push` from the worker of player `uid` in `color`: no colour, no sid.
    pub async fn grpc_push(&self, color: &str, uid: i64, text: &str) -> GoPush {
        let player = uid.to_string();
        self.call(
            color,
            uid,
            &["-call", "push", "-uid", &player, "-data", text],
        )
        .await
        .unwrap_or_else(|e| panic!("push to {uid}: {e}"))
    }

    /// Roma's `Publisher.Multicast` from the worker of `oid` in `color`.
    pub async fn grpc_multicast(&self, color: &str, oid: i64, uids: &[i64], text: &str) -> GoPush {
        let list: Vec<String> = uids.iter().map(i64::to_string).collect();
        let list = list.join(",");
        self.call(
            color,
            oid,
            &["-call", "multicast", "-uids", &list, "-data", text],
        )
        .await
        .unwrap_or_else(|e| panic!("multicast to {list}: {e}"))
    }

    /// Roma's `Publisher.Broadcast` from the worker of `oid` in `color` on server `sid`.
    pub async fn grpc_broadcast(&self, color: &str, oid: i64, sid: i64, text: &str) -> GoPush {
        let sid = sid.to_string();
        self.call(
            color,
            oid,
            &["-call", "broadcast", "-sid", &sid, "-data", text],
        )
        .await
        .unwrap_or_else(|e| panic!("broadcast to {color}/{sid}: {e}"))
    }

    /// PUBLISH `message` on `channel`; the number of subscribers that received it.
    pub async fn publish(&mut self, channel: &str, message: &bc::PushMessage) -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message.encode_to_vec())
            .query_async(&mut self.redis)
            .await
            .unwrap()
    }

    /// The gateway route of player `uid` in `color`: the broker holding its session.
    pub async fn route(&mut self, color: &str, uid: i64) -> Option<String> {
        redis::cmd("GET")
            .arg(route_key(color, uid))
            .query_async(&mut self.redis)
            .await
            .unwrap()
    }

    /// Roma's broadcaster `Push`/`Multicast` to `players` (colour, uid): their gateway routes,
    /// then one message per route value (the gateway's `host:port`) carrying only uids and
    /// bodies, which exactly one subscriber (that broker) takes.
    pub async fn redis_multicast(&mut self, players: &[(&str, i64)], text: &str) {
        let keys: Vec<String> = players
            .iter()
            .map(|(color, uid)| route_key(color, *uid))
            .collect();
        let routes: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut self.redis)
            .await
            .unwrap();
        let mut by_gate: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for ((color, uid), route) in players.iter().zip(routes) {
            let route = route.unwrap_or_else(|| panic!("no gateway route of {color}/{uid}"));
            by_gate.entry(route).or_default().push(*uid);
        }
        for (gate, uids) in by_gate {
            let message = bc::PushMessage {
                bodies: vec![body(text)],
                uids,
                ..Default::default()
            };
            assert_eq!(
                self.publish(&gate, &message).await,
                1,
                "exactly one subscriber, the broker at {gate}, takes its channel"
            );
        }
    }

    /// Roma's broadcaster `Broadcast`: colour and sid, the `broadcast` flag left unset; every
    /// broker takes it.
    pub async fn redis_broadcast(&mut self, color: &str, sid: i64, text: &str) {
        let message = bc::PushMessage {
            bodies: vec![body(text)],
            color: color.into(),
            sid,
            ..Default::default()
        };
        assert_eq!(
            self.publish(BROADCAST_CHANNEL, &message).await,
            self.brokers as i64,
            "every broker subscribes to the broadcast channel"
        );
    }

    /// Waits until `channel` has `want` subscribers.
    pub async fn wait_subscribers(&mut self, channel: &str, want: i64) {
        wait_subscribers(&mut self.redis, channel, want).await;
    }

    /// Waits until every broker subscribes to the broadcast channel and each of `endpoints`
    /// (the brokers' own channels) has its one subscriber.
    pub async fn wait_brokers<'e>(&mut self, endpoints: impl IntoIterator<Item = &'e str>) {
        for endpoint in endpoints {
            self.wait_subscribers(endpoint, 1).await;
        }
        self.wait_subscribers(BROADCAST_CHANNEL, self.brokers as i64)
            .await;
    }
}
