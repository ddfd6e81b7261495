//! Discovery through a real etcd: registrations appear in watches and vanish on deregister;
//! a broker finds its game service there and registers itself; an edge finds the broker
//! there, and when that broker leaves, its sessions re-attach to the one that remains.

use std::time::Duration;

use janus_broker::config::DiscoveryBackend;
use janus_edge::config::BrokerDiscovery;
use janus_integration_tests::stack::{COLOR, Game, Ground, tcp};
use janus_ops::discovery::{Discovery, EtcdDiscovery, Instance};
use janus_proto::packet::Packet;
use tokio::net::TcpListener;
use tokio::sync::watch;

fn instance(name: &str, id: &str, endpoint: &str) -> Instance {
    Instance {
        id: id.into(),
        name: name.into(),
        version: "test".into(),
        metadata: [("color".to_owned(), COLOR.to_owned())].into(),
        endpoints: vec![format!("grpc://{endpoint}")],
    }
}

async fn wait_for(rx: &mut watch::Receiver<Vec<Instance>>, ids: &[&str]) {
    let want: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut have: Vec<String> = rx
                .borrow_and_update()
                .iter()
                .map(|i| i.id.clone())
                .collect();
            have.sort();
            if have == want {
                return;
            }
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert!(
        got.is_ok(),
        "the watch never showed exactly {want:?}: {:?}",
        *rx.borrow()
    );
}

#[tokio::test]
async fn registrations_are_watched_and_removed_on_deregister() {
    let etcd = janus_integration_tests::etcd().await;
    let discovery = EtcdDiscovery::connect(&[format!("http://{}", etcd.addr)])
        .await
        .unwrap();
    let mut rx = discovery.watch("demo.service").await.unwrap();
    wait_for(&mut rx, &[]).await;
    let a = discovery
        .register(instance("demo.service", "a", "10.0.0.1:1"))
        .await
        .unwrap();
    wait_for(&mut rx, &["a"]).await;
    let b = discovery
        .register(instance("demo.service", "b", "10.0.0.2:1"))
        .await
        .unwrap();
    let _other = discovery
        .register(instance("other.service", "c", "10.0.0.3:1"))
        .await
        .unwrap();
    wait_for(&mut rx, &["a", "b"]).await;
    assert_eq!(
        rx.borrow()
            .iter()
            .find(|i| i.id == "b")
            .unwrap()
            .grpc_endpoint(),
        Some("10.0.0.2:1")
    );
    a.deregister().await;
    wait_for(&mut rx, &["b"]).await;
    drop(b);
    wait_for(&mut rx, &[]).await;
    let late = discovery.watch("demo.service").await.unwrap();
    assert!(
        late.borrow().is_empty(),
        "a new watch starts from the current state"
    );
}

#[tokio::test]
async fn edges_and_brokers_find_each_other_and_sessions_move_when_a_broker_leaves() {
    let ground = Ground::start().await;
    let etcd = janus_integration_tests::etcd().await;
    let etcd_url = format!("http://{}", etcd.addr);
    let discovery = EtcdDiscovery::connect(std::slice::from_ref(&etcd_url))
        .await
        .unwrap();

    let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let game = Game::start(&l1.local_addr().unwrap().to_string()).await;
    let _game_registration = discovery
        .register(instance("roma.player.service", "player-1", &game.endpoint))
        .await
        .unwrap();

    let broker_config = || {
        let mut config = ground.broker_config(&[]);
        config.discovery.backend = DiscoveryBackend::Etcd;
        config.discovery.etcd_endpoints = vec![etcd_url.clone()];
        config
    };
    let b1 = ground.broker_on(broker_config(), l1).await;
    let mut brokers = discovery.watch("janus.broker").await.unwrap();
    wait_for(
        &mut brokers,
        &[&janus_broker::state::broker_id(b1.endpoint())],
    )
    .await;

    let mut edge_config = ground.edge_config(&[]);
    edge_config.brokers.discovery = BrokerDiscovery::Etcd;
    edge_config.brokers.etcd_endpoints = vec![etcd_url.clone()];
    let edge = ground.edge(edge_config).await;

    let mut client = ground.client(&tcp(&edge), 701, 1).await;
    let echo = |data: &[u8]| Packet {
        r#mod: 2,
        seq: 1,
        data: data.to_vec(),
        ..Packet::default()
    };
    assert_eq!(
        client.request(echo(b"one"), |_| {}).await.unwrap().data,
        b"one"
    );
    assert_eq!(b1.sessions(), 1);

    let b2 = ground.broker_on(broker_config(), l2).await;
    wait_for(
        &mut brokers,
        &{
            let mut ids = vec![
                janus_broker::state::broker_id(b1.endpoint()),
                janus_broker::state::broker_id(b2.endpoint()),
            ];
            ids.sort();
            ids
        }
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    )
    .await;

    b1.shutdown(Duration::from_secs(5)).await;
    // The edge re-attaches the session to b2 with the identity and keys it still holds; the
    // client sees nothing but, at most, a request lost with the broker.
    let mut moved = false;
    for _ in 0..50 {
        if b2.sessions() == 1 {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(moved, "the session re-attached to the remaining broker");
    assert_eq!(
        client.request(echo(b"two"), |_| {}).await.unwrap().data,
        b"two"
    );
}
