//! How the gateway behaves when its dependencies fail: a game service that crashes and comes
//! back, and a Redis that stops answering.

use std::time::Duration;

use janus_client::Client;
use janus_integration_tests::ports;
use janus_integration_tests::stack::{Game, Ground, Stack, assert_logout, echo, recv, tcp};
use janus_proto::message::ScServerUnexpectedErr;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::packet::Packet;
use janus_protocol::system;
use prost::Message;
use tokio::net::TcpListener;

/// Sends `packet` and returns the first packet back within two seconds, if any.
async fn try_request(client: &mut Client, packet: Packet) -> Option<Packet> {
    client.send(packet).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), client.recv())
        .await
        .ok()
        .map(|r| r.unwrap())
}

fn is_unexpected_error(packet: &Packet) -> bool {
    (packet.r#mod, packet.seq) == (system::MODULE, system::SEQ_UNEXPECTED_ERR)
}

#[tokio::test]
async fn a_tunnel_is_reopened_after_the_game_service_restarts() {
    let ground = Ground::start().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let broker_addr = listener.local_addr().unwrap().to_string();
    let game = Game::start(&broker_addr).await;
    let game_addr = game.endpoint.clone();
    let _broker = ground
        .broker_on(ground.broker_config(&[&game_addr]), listener)
        .await;
    let edge = ground.edge(ground.edge_config(&[&broker_addr])).await;
    let mut client = ground.client(&tcp(&edge), 401, 1).await;
    assert_eq!(
        client.request(echo(b"before"), |_| {}).await.unwrap().data,
        b"before"
    );

    game.kill();
    // Until the broker notices the broken stream a request may vanish with it; after that,
    // every request is answered with SCServerUnexpectedErr while the service is down.
    let mut refused = None;
    for _ in 0..10 {
        if let Some(packet) = try_request(&mut client, echo(b"down")).await {
            refused = Some(packet);
            break;
        }
    }
    let refused = refused.expect("an answer while the game service is down");
    assert!(is_unexpected_error(&refused), "{refused:?}");
    let err = ScServerUnexpectedErr::decode(&refused.data[..]).unwrap();
    assert_eq!((err.r#mod, err.seq), (2, 1));

    let _game = Game::start_on(
        ports::rebind(&game_addr).await.into_std().unwrap(),
        &broker_addr,
    );
    let mut answer = None;
    for _ in 0..10 {
        match try_request(&mut client, echo(b"after")).await {
            Some(packet) if !is_unexpected_error(&packet) => {
                answer = Some(packet);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    assert_eq!(answer.expect("the tunnel reopens").data, b"after");
}

#[tokio::test]
async fn without_redis_new_sessions_are_refused_and_open_ones_go_on() {
    let stack = Stack::start(|_| {}).await;
    let mut open = stack.client(&stack.tcp(), 501).await;
    assert_eq!(open.request(echo(b"a"), |_| {}).await.unwrap().data, b"a");

    stack.ground.redis().container.pause().await.unwrap();

    assert_eq!(
        open.request(echo(b"b"), |_| {}).await.unwrap().data,
        b"b",
        "an open tunnel needs no Redis"
    );
    // A tunnel not yet open needs its app route: the request is answered with the reason (as
    // a System push, index 0), and the session goes on.
    let room = Packet {
        r#mod: 6,
        seq: 1,
        obj: 5,
        ..Packet::default()
    };
    open.send(room).await.unwrap();
    let refused = recv(&mut open).await;
    assert!(is_unexpected_error(&refused), "{refused:?}");
    let err = ScServerUnexpectedErr::decode(&refused.data[..]).unwrap();
    assert_eq!((err.r#mod, err.seq), (6, 1));
    assert!(err.msg.contains("route store"), "{}", err.msg);

    let mut newcomer = stack.client(&stack.tcp(), 502).await;
    let explained = recv(&mut newcomer).await;
    assert!(is_unexpected_error(&explained), "{explained:?}");
    let why = ScServerUnexpectedErr::decode(&explained.data[..])
        .unwrap()
        .msg;
    assert!(why.contains("route store"), "{why}");
    let logout = recv(&mut newcomer).await;
    assert_logout(&logout, LogoutCode::Server);

    stack.ground.redis().container.unpause().await.unwrap();
    let mut later = None;
    for _ in 0..20 {
        let mut client = stack.client(&stack.tcp(), 503).await;
        if let Some(packet) = try_request(&mut client, echo(b"back")).await
            && packet.data == b"back"
        {
            later = Some(packet);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        later.is_some(),
        "new sessions are accepted again once Redis is back"
    );
    assert_eq!(open.request(echo(b"c"), |_| {}).await.unwrap().data, b"c");
}
