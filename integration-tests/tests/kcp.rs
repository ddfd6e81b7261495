//! KCP at the edge with the Rust client library: every mode (FEC + smux as go-pantheon, FEC
//! alone, smux alone, plain), several smux streams of one conversation each a session of its
//! own, an edge with the defaults serving clients of every mode, and stray datagrams that open
//! no session.
//! The compatibility with real kcp-go and smux clients is `go_kcp.rs`.

use std::time::Duration;

use janus_client::{Client, Endpoint};
use janus_edge::Edge;
use janus_integration_tests::stack::{self, Game, Ground, echo, metric, wait_metric};
use janus_protocol::handshake::Mode;
use janus_transport::kcp::KcpSettings;
use janus_transport::kcp::driver::KcpConnection;
use tokio::net::{TcpListener, UdpSocket};

/// go-pantheon's settings without smux, without FEC, and without either.
fn modes() -> [(&'static str, KcpSettings); 4] {
    [
        ("fec+smux", KcpSettings::default()),
        (
            "fec",
            KcpSettings {
                smux: false,
                ..KcpSettings::default()
            },
        ),
        (
            "smux",
            KcpSettings {
                fec_data_shards: 0,
                fec_parity_shards: 0,
                ..KcpSettings::default()
            },
        ),
        ("plain", KcpSettings::plain()),
    ]
}

struct Gateway {
    ground: Ground,
    _game: Game,
    _broker: janus_broker::Broker,
    broker_addr: String,
}

impl Gateway {
    async fn start() -> Self {
        let ground = Ground::start().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let broker_addr = listener.local_addr().unwrap().to_string();
        let game = Game::start(&broker_addr).await;
        let broker = ground
            .broker_on(ground.broker_config(&[&game.endpoint]), listener)
            .await;
        Self {
            ground,
            _game: game,
            _broker: broker,
            broker_addr,
        }
    }

    async fn edge(&self, settings: KcpSettings) -> Edge {
        self.edge_with(|config| config.kcp.params = settings).await
    }

    async fn edge_with(&self, tune: impl FnOnce(&mut janus_edge::config::EdgeConfig)) -> Edge {
        let mut config = self.ground.edge_config(&[&self.broker_addr]);
        tune(&mut config);
        self.ground.edge(config).await
    }

    async fn client_over(&self, stream: Box<dyn janus_transport::ByteStream>, uid: i64) -> Client {
        let keys = &self.ground.keys;
        Client::over_stream(stream, &keys.client_config(Mode::V2), &keys.token(uid))
            .await
            .unwrap_or_else(|e| panic!("client {uid}: {e}"))
    }
}

async fn echoes(client: &mut Client, data: &[u8]) {
    let reply = tokio::time::timeout(Duration::from_secs(10), client.request(echo(data), |_| {}))
        .await
        .expect("a reply within 10 s")
        .expect("the session stays up");
    assert_eq!(reply.data, data);
}

#[tokio::test]
async fn every_kcp_mode_carries_sessions_and_each_smux_stream_is_one() {
    let gateway = Gateway::start().await;
    for (i, (mode, settings)) in modes().into_iter().enumerate() {
        let edge = gateway.edge(settings).await;
        let addr = edge.kcp_addr.unwrap();
        let connection = KcpConnection::connect(addr, settings).await.unwrap();
        let uid = 100 + 10 * i as i64;
        let mut first = gateway
            .client_over(Box::new(connection.open_stream().await.unwrap()), uid)
            .await;
        // A frame larger than an smux frame and a KCP segment.
        echoes(&mut first, &vec![7; 20_000]).await;
        if settings.smux {
            let mut second = gateway
                .client_over(Box::new(connection.open_stream().await.unwrap()), uid + 1)
                .await;
            echoes(&mut second, b"second stream").await;
            echoes(&mut first, b"first stream").await;
            assert_eq!(edge.sessions(), 2, "{mode}: one session per stream");
            second.close().await.unwrap();
        } else {
            assert_eq!(edge.sessions(), 1, "{mode}");
        }
        // The endpoint form the CLI and the bench use.
        let endpoint = Endpoint::KcpWith {
            addr: addr.to_string(),
            settings,
        };
        let mut other = gateway.ground.client(&endpoint, uid + 5, 1).await;
        echoes(&mut other, mode.as_bytes()).await;
        first.close().await.unwrap();
        other.close().await.unwrap();
        edge.drain(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn a_default_edge_serves_clients_without_fec_or_smux_in_kind() {
    let gateway = Gateway::start().await;
    let edge = gateway.edge(KcpSettings::default()).await;
    for (i, (mode, settings)) in modes().into_iter().enumerate() {
        let endpoint = Endpoint::KcpWith {
            addr: edge.kcp_addr.unwrap().to_string(),
            settings,
        };
        let mut client = gateway.ground.client(&endpoint, 7 + i as i64, 1).await;
        echoes(&mut client, mode.as_bytes()).await;
        echoes(&mut client, &vec![1; 30_000]).await;
        client.close().await.unwrap();
    }
    // And the default endpoint is go-pantheon's, the edge's default too.
    let mut default = gateway.ground.client(&stack::kcp(&edge), 20, 1).await;
    echoes(&mut default, b"fec and smux").await;
}

/// A valid first push of conversation `conv` with sequence number `sn` and no data.
fn push(conv: u32, sn: u32) -> Vec<u8> {
    let mut segment = Vec::new();
    segment.extend_from_slice(&conv.to_le_bytes());
    segment.extend_from_slice(&[81, 0, 128, 0]);
    segment.extend_from_slice(&0u32.to_le_bytes());
    segment.extend_from_slice(&sn.to_le_bytes());
    segment.extend_from_slice(&0u32.to_le_bytes());
    segment.extend_from_slice(&0u32.to_le_bytes());
    segment
}

#[tokio::test]
async fn stray_datagrams_open_no_conversation_and_are_counted() {
    let gateway = Gateway::start().await;
    let edge = gateway.edge(KcpSettings::default()).await;
    let addr = edge.kcp_addr.unwrap();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut fec_garbage = vec![0, 0, 0, 0, 0xf1, 0, 9, 0];
    fec_garbage.extend_from_slice(&[1; 7]);
    let invalid: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        // A go-pantheon frame sent straight over UDP.
        vec![0, 0, 0, 4, 1, 2, 3, 4],
        // An smux SYN without KCP.
        vec![2, 0, 0, 0, 3, 0, 0, 0],
        // A KCP header with an unknown command.
        {
            let mut bad = push(1, 0);
            bad[4] = 99;
            bad
        },
        // A FEC data packet whose size field lies.
        fec_garbage,
        vec![0xff; 1400],
    ];
    for datagram in &invalid {
        socket.send_to(datagram, addr).await.unwrap();
    }
    // Well-formed, but not a conversation's first push: a retransmission of a conversation
    // this edge does not have.
    socket.send_to(&push(42, 5), addr).await.unwrap();
    let admin = edge.admin_addr;
    let series = |reason: &str| format!("janus_edge_refused_total{{reason=\"{reason}\"}}");
    wait_metric(admin, &series("kcp_invalid"), |n| n == invalid.len() as f64).await;
    wait_metric(admin, &series("kcp_no_conversation"), |n| n == 1.0).await;
    // Nothing opened a session, and nothing answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(edge.sessions(), 0);
    let mut buf = [0; 64];
    let answer = tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await;
    assert!(answer.is_err(), "no reply to stray datagrams");
    // A real first push opens a conversation (and, without smux, a session until the
    // handshake times out); with smux a conversation opens no session before a stream does.
    socket.send_to(&push(43, 0), addr).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .expect("the conversation acknowledges")
        .unwrap();
    assert_eq!(n, 24, "one segment");
    assert_eq!(&buf[..4], &43u32.to_le_bytes());
    assert_eq!(buf[4], 82, "a plain KCP ack: the push came without FEC");
    assert_eq!(edge.sessions(), 0, "no smux stream, no session");
    assert_eq!(
        metric(admin, &series("kcp_invalid")).await,
        Some(invalid.len() as f64)
    );
    // Real clients are unaffected.
    let mut client = gateway.ground.client(&stack::kcp(&edge), 9, 1).await;
    echoes(&mut client, b"still serving").await;
}

#[tokio::test]
async fn one_ip_holds_at_most_its_share_of_conversations() {
    let gateway = Gateway::start().await;
    let edge = gateway
        .edge_with(|config| config.limits.max_sessions_per_ip = 2)
        .await;
    let addr = edge.kcp_addr.unwrap();
    let mut sockets = Vec::new();
    for conv in 0..3u32 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&push(100 + conv, 0), addr).await.unwrap();
        sockets.push(socket);
    }
    let series = "janus_edge_refused_total{reason=\"kcp_conversations_per_ip\"}";
    wait_metric(edge.admin_addr, series, |n| n == 1.0).await;
    // The first two were answered (acknowledged); the third was not.
    let mut buf = [0; 64];
    for (i, socket) in sockets.iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf)).await;
        assert_eq!(answer.is_ok(), i < 2, "conversation {i}");
    }
}
