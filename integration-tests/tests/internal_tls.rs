//! Mutual TLS on the internal links (PROTOCOL.md §15), in-process on loopback: a whole gateway
//! with every link under TLS; a broker refusing edges without a valid certificate, with one of
//! the wrong role, and in plaintext; the push API's roles and its plaintext choice; a grpc-go
//! game service (the Go Roma peer, crypto/tls) on both of its links; and every certificate and
//! the CA rotated under load with no failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use janus_broker::Broker;
use janus_client::Client;
use janus_demo_game as demo;
use janus_edge::Edge;
use janus_edge::config::EdgeConfig;
use janus_integration_tests::gopeer;
use janus_integration_tests::pki::Pki;
use janus_integration_tests::ports;
use janus_integration_tests::stack::{
    COLOR, Game, Ground, assert_quiet, echo, metric, recv, request, tcp, wait_metric,
};
use janus_ops::internal_tls::{self, Authority, InternalTls, InternalTlsConfig, Role};
use janus_proto::broadcaster::service::push::v1 as bc;

/// A game service, a broker and an edge, every link under `pki`'s material; `tune` may change
/// the broker's configuration first.
struct Tls {
    ground: Ground,
    pki: Pki,
    game: Game,
    game_tls: InternalTlsConfig,
    broker: Broker,
    broker_tls: InternalTlsConfig,
    edge: Edge,
    edge_tls: InternalTlsConfig,
}

impl Tls {
    async fn start(tune: impl FnOnce(&mut janus_broker::config::BrokerConfig)) -> Self {
        let (ground, pki) = (Ground::in_memory(), Pki::new());
        let listener = ports::tokio_listener();
        let broker_addr = listener.local_addr().unwrap().to_string();
        let game_tls = pki.issue(&pki.ca, Role::Game);
        let game = Game::start_with_tls(ports::listener(), &broker_addr, load(&game_tls));
        let broker_tls = pki.issue(&pki.ca, Role::Broker);
        let mut config = ground.broker_config(&[&game.endpoint]);
        config.internal_tls = broker_tls.clone();
        tune(&mut config);
        let broker = ground.broker_on(config, listener).await;
        let edge_tls = pki.issue(&pki.ca, Role::Edge);
        let edge = ground.edge(edge_config(&ground, &broker, &edge_tls)).await;
        Self {
            ground,
            pki,
            game,
            game_tls,
            broker,
            broker_tls,
            edge,
            edge_tls,
        }
    }

    /// The count of `janus_broker_internal_refused_total` for `api` and `reason`.
    async fn refused(&self, api: &str, reason: &str) -> f64 {
        let series =
            format!("janus_broker_internal_refused_total{{api=\"{api}\",reason=\"{reason}\"}}");
        metric(self.broker.admin_addr, &series).await.unwrap_or(0.0)
    }

    /// Waits for `janus_broker_internal_refused_total{api, reason}` to reach 1.
    async fn wait_refused(&self, api: &str, reason: &str) {
        let series =
            format!("janus_broker_internal_refused_total{{api=\"{api}\",reason=\"{reason}\"}}");
        wait_metric(self.broker.admin_addr, &series, |v| v >= 1.0).await;
    }
}

fn load(config: &InternalTlsConfig) -> Option<InternalTls> {
    Some(InternalTls::load(config).unwrap().expect("internal TLS on"))
}

fn edge_config(ground: &Ground, broker: &Broker, tls: &InternalTlsConfig) -> EdgeConfig {
    let mut config = ground.edge_config(&[&broker.addr.to_string()]);
    config.internal_tls = tls.clone();
    config
}

/// Starts an edge without waiting for a link; whether one comes up within two seconds.
async fn edge_links(ground: &Ground, config: EdgeConfig) -> bool {
    let keys = &ground.keys;
    let handshake = config.handshake_config(keys.signing.clone(), &keys.token, None);
    let edge = Edge::start(config, Arc::new(handshake)).await.unwrap();
    let up = edge.wait_for_broker(Duration::from_secs(2)).await;
    edge.drain(Duration::ZERO).await;
    up
}

/// A push-API client of `broker` under `tls` (plaintext when `None`).
fn pusher(
    broker: &Broker,
    tls: Option<&InternalTls>,
) -> bc::push_service_client::PushServiceClient<tonic::transport::Channel> {
    let channel =
        internal_tls::channel(&broker.addr.to_string(), tls, Role::Broker, |e| e).unwrap();
    bc::push_service_client::PushServiceClient::new(channel)
}

fn multicast(uid: i64, text: &str) -> bc::MulticastRequest {
    bc::MulticastRequest {
        bodies: vec![bc::PushBody {
            data: text.as_bytes().to_vec(),
            r#mod: 9,
            seq: 1,
            ..Default::default()
        }],
        uids: vec![uid],
        color: COLOR.into(),
    }
}

#[tokio::test]
async fn every_link_runs_over_mutual_tls() {
    let tls = Tls::start(|_| {}).await;
    let mut alice = tls.ground.client(&tcp(&tls.edge), 3001, 1).await;
    let mut bob = tls.ground.client(&tcp(&tls.edge), 3002, 1).await;
    // Edge → broker → game (tunnel) and back.
    let reply = alice.request(echo(b"over tls"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"over tls");
    // Game → broker (the push API, role game) → edge: a room message.
    for client in [&mut alice, &mut bob] {
        let ok = client
            .request(request(6, demo::JOIN, 5, b""), |_| {})
            .await
            .unwrap();
        assert_eq!(ok.data, b"ok");
    }
    let ok = alice
        .request(request(6, demo::SAY, 5, b"hi"), |_| {})
        .await
        .unwrap();
    assert_eq!(ok.data, b"ok");
    assert_eq!(recv(&mut bob).await.data, b"3001: hi");
    // An operator's push (role admin).
    let admin = load(&tls.pki.issue(&tls.pki.ca, Role::Admin));
    let pushed = pusher(&tls.broker, admin.as_ref())
        .multicast(multicast(3002, "from admin"))
        .await
        .unwrap();
    assert_eq!(pushed.into_inner().pushed_uids, vec![3002]);
    assert_eq!(recv(&mut bob).await.data, b"from admin");
    assert_eq!(tls.refused("connection", "plaintext").await, 0.0);
}

#[tokio::test]
async fn a_grpc_go_game_service_takes_tunnels_and_pushes_over_mutual_tls() {
    let (ground, pki) = (Ground::in_memory(), Pki::new());
    let listener = ports::tokio_listener();
    let broker_addr = listener.local_addr().unwrap().to_string();
    let game = pki.issue(&pki.ca, Role::Game);
    let flags = [
        "-tls-ca",
        &game.ca_file,
        "-tls-cert",
        &game.cert_file,
        "-tls-key",
        &game.key_file,
    ];
    let roma = gopeer::Roma::start_with(&broker_addr, &flags);
    let mut config = ground.broker_config(&[&roma.endpoint]);
    config.internal_tls = pki.issue(&pki.ca, Role::Broker);
    let broker = ground.broker_on(config, listener).await;
    let edge_tls = pki.issue(&pki.ca, Role::Edge);
    let edge = ground.edge(edge_config(&ground, &broker, &edge_tls)).await;
    let mut alice = ground.client(&tcp(&edge), 3401, 1).await;
    let mut bob = ground.client(&tcp(&edge), 3402, 1).await;
    let reply = alice.request(echo(b"to go"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"to go");
    for client in [&mut alice, &mut bob] {
        let ok = client
            .request(request(6, demo::JOIN, 9, b""), |_| {})
            .await
            .unwrap();
        assert_eq!(ok.data, b"ok");
    }
    let ok = alice
        .request(request(6, demo::SAY, 9, b"hi"), |_| {})
        .await
        .unwrap();
    assert_eq!(ok.data, b"ok", "grpc-go's push over TLS");
    assert_eq!(recv(&mut bob).await.data, b"3401: hi");
}

#[tokio::test]
async fn a_broker_refuses_edges_without_a_valid_certificate_of_the_edge_role() {
    let tls = Tls::start(|_| {}).await;
    let ground = &tls.ground;
    let mut before = ground.client(&tcp(&tls.edge), 3101, 1).await;

    // Plaintext on the TLS port.
    let plain = edge_config(ground, &tls.broker, &InternalTlsConfig::default());
    assert!(!edge_links(ground, plain).await, "a plaintext edge linked");
    tls.wait_refused("connection", "plaintext").await;

    // A certificate the deployment CA did not issue (the edge trusts its own CA besides).
    let rogue = Authority::generate().unwrap();
    let foreign = tls
        .pki
        .issue_trusting(&[&tls.pki.ca, &rogue], &rogue, Role::Edge);
    let config = edge_config(ground, &tls.broker, &foreign);
    assert!(
        !edge_links(ground, config).await,
        "an edge of another CA linked"
    );
    tls.wait_refused("connection", "bad_certificate").await;

    // A valid certificate of another role.
    let game = tls.pki.issue(&tls.pki.ca, Role::Game);
    let config = edge_config(ground, &tls.broker, &game);
    assert!(
        !edge_links(ground, config).await,
        "a game certificate linked as an edge"
    );
    tls.wait_refused("edge_link", "wrong_role").await;

    // The same edge with its own certificate links, and the session opened before the
    // refusals went on through them.
    let config = edge_config(ground, &tls.broker, &tls.edge_tls);
    assert!(
        edge_links(ground, config).await,
        "an edge certificate did not link"
    );
    let reply = before.request(echo(b"still"), |_| {}).await.unwrap();
    assert_eq!(reply.data, b"still");
}

#[tokio::test]
async fn the_push_api_takes_the_configured_roles_and_plaintext_only_when_allowed() {
    let strict = Tls::start(|_| {}).await;
    let mut client = strict.ground.client(&tcp(&strict.edge), 3201, 1).await;
    let err = pusher(&strict.broker, None)
        .multicast(multicast(3201, "plain"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::Unavailable | tonic::Code::Cancelled
        ),
        "{err}"
    );
    strict.wait_refused("connection", "plaintext").await;
    let edge = load(&strict.edge_tls);
    let err = pusher(&strict.broker, edge.as_ref())
        .multicast(multicast(3201, "as an edge"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert_eq!(err.message(), "push does not admit role edge");
    assert_eq!(strict.refused("push", "wrong_role").await, 1.0);
    assert_quiet(&mut client, "a player pushed to by refused callers").await;

    // go-pantheon's Roma pushes in plaintext: a broker that allows it takes those pushes, and
    // nothing else from plaintext connections.
    let permissive = Tls::start(|config| config.push_api.plaintext = true).await;
    let mut client = permissive
        .ground
        .client(&tcp(&permissive.edge), 3202, 1)
        .await;
    let pushed = pusher(&permissive.broker, None)
        .multicast(multicast(3202, "plain"))
        .await
        .unwrap();
    assert_eq!(pushed.into_inner().pushed_uids, vec![3202]);
    assert_eq!(recv(&mut client).await.data, b"plain");
    let ground = &permissive.ground;
    let plain = edge_config(ground, &permissive.broker, &InternalTlsConfig::default());
    assert!(!edge_links(ground, plain).await, "a plaintext edge linked");
    permissive.wait_refused("edge_link", "plaintext").await;
}

/// Connections made from scratch under the material in force at `step`: a new edge's link, and
/// an operator's push (`admin`) on a new connection to `watcher`, a player outside the traffic.
async fn fresh_connections(
    tls: &Tls,
    admin: &InternalTlsConfig,
    (watcher, uid): (&mut Client, i64),
    step: &str,
) {
    let config = edge_config(&tls.ground, &tls.broker, &tls.edge_tls);
    assert!(
        edge_links(&tls.ground, config).await,
        "no new edge link {step}"
    );
    let pushed = pusher(&tls.broker, load(admin).as_ref())
        .multicast(multicast(uid, step))
        .await
        .unwrap_or_else(|e| panic!("no new admin push {step}: {e}"));
    assert_eq!(pushed.into_inner().pushed_uids, vec![uid], "{step}");
    assert_eq!(recv(watcher).await.data, step.as_bytes());
}

#[tokio::test]
async fn rotating_the_ca_and_every_certificate_under_load_fails_no_request() {
    let tls = Tls::start(|_| {}).await;
    let (pki, ground) = (&tls.pki, &tls.ground);
    let mut clients = Vec::new();
    for uid in 3301..3309 {
        clients.push(ground.client(&tcp(&tls.edge), uid, 1).await);
    }
    let (stop, answered) = (AtomicBool::new(false), AtomicUsize::new(0));
    let traffic = futures_util::future::join_all(clients.iter_mut().map(|client| async {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let data = format!("request {n}").into_bytes();
            let reply = client.request(echo(&data), |_| {}).await.unwrap();
            assert_eq!(reply.data, data);
            answered.fetch_add(1, Ordering::Relaxed);
            n += 1;
            // Within the session's message rate (50 a second by default).
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }));
    let next = Authority::generate().unwrap();
    let admin = pki.issue(&pki.ca, Role::Admin);
    let roles = [
        (&tls.broker_tls, Role::Broker),
        (&tls.edge_tls, Role::Edge),
        (&tls.game_tls, Role::Game),
        (&admin, Role::Admin),
    ];
    let mut watcher = ground.client(&tcp(&tls.edge), 3330, 1).await;
    let reloads = |n: f64| async move {
        let broker = "janus_broker_internal_tls_reloads_total{result=\"ok\"}";
        wait_metric(tls.broker.admin_addr, broker, |v| v >= n).await;
        let edge = "janus_edge_internal_tls_reloads_total{result=\"ok\"}";
        wait_metric(tls.edge.admin_addr, edge, |v| v >= n).await;
    };
    let rotate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = answered.load(Ordering::Relaxed);
        // Trust both CAs; move every certificate to the new CA; trust the new CA alone.
        pki.trust(&[&pki.ca, &next]);
        reloads(1.0).await;
        fresh_connections(&tls, &admin, (&mut watcher, 3330), "trusting both CAs").await;
        for (config, role) in roles {
            pki.reissue(config, &next, role);
        }
        reloads(2.0).await;
        fresh_connections(
            &tls,
            &admin,
            (&mut watcher, 3330),
            "with certificates of the new CA",
        )
        .await;
        pki.trust(&[&next]);
        reloads(3.0).await;
        fresh_connections(
            &tls,
            &admin,
            (&mut watcher, 3330),
            "trusting the new CA alone",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        before
    };
    // Every request is answered (an error panics in `traffic`), before and through it all.
    let (_, before) = tokio::join!(traffic, rotate);
    assert!(before > 0, "no request answered before the rotation");
    assert!(
        answered.load(Ordering::Relaxed) > before + 8,
        "requests stopped during the rotation"
    );
    assert_eq!(tls.refused("connection", "bad_certificate").await, 0.0);

    // New connections use the new material: an edge issued by the new CA alone links, and
    // the game service, restarted with its new certificate, takes the broker's new one.
    let fresh = pki.issue(&next, Role::Edge);
    let edge = ground.edge(edge_config(ground, &tls.broker, &fresh)).await;
    let mut client = ground.client(&tcp(&edge), 3320, 1).await;
    let game_addr = tls.game.endpoint.clone();
    tls.game.kill();
    let listener = ports::rebind(&game_addr).await.into_std().unwrap();
    let _game = Game::start_with_tls(listener, &tls.broker.addr.to_string(), load(&tls.game_tls));
    let mut answer = None;
    for _ in 0..20 {
        match client.request(echo(b"after"), |_| {}).await {
            Ok(packet) if packet.data == b"after" => {
                answer = Some(packet);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert!(answer.is_some(), "no tunnel under the new material");
}
