//! Janus's KCP against a real go-pantheon-style client (`gopeers/client`, built from Debian's
//! kcp-go, smux and reedsolomon): fabrica-net's defaults (FEC 10+3 and smux v2, two streams,
//! each its own session), smux off, and FEC off, against an edge in legacy mode in front of a
//! broker and the demo game; clients of every mode at an edge with the defaults; and FEC
//! recovery of the client's real parity through a lossy relay.

use std::sync::Arc;
use std::time::Duration;

use janus_edge::Edge;
use janus_integration_tests::gopeer;
use janus_integration_tests::stack::{COLOR, GameKind, Ground, Keys, Stack, metric};
use janus_protocol::keys::{SigningKey, TokenKey};
use janus_transport::kcp::KcpSettings;

/// A go-pantheon config holds its Lares token key as a raw string (32 bytes: AES-256-GCM).
const TOKEN_KEY: &str = "go-pantheon-kcp-test-token-key32";

/// A legacy-mode stack with `settings` on its KCP listener; returns it and the PEM file of the
/// server's public key for the Go client.
async fn legacy_stack(settings: KcpSettings) -> (Stack, std::path::PathBuf) {
    let mut ground = Ground::start().await;
    let signing = SigningKey::generate();
    let public = std::env::temp_dir().join(format!(
        "janus-go-kcp-{}-{}.pem",
        std::process::id(),
        settings.fec() as u8 * 2 + settings.smux as u8
    ));
    std::fs::write(
        &public,
        signing.verifying_key().to_public_key_pem().unwrap(),
    )
    .unwrap();
    ground.keys = Arc::new(Keys {
        signing,
        token: TokenKey::from_bytes(TOKEN_KEY.as_bytes()).unwrap(),
    });
    let stack = Stack::start_on(ground, GameKind::Demo, |config| {
        config.handshake.allow_legacy = true;
        config.kcp.params = settings;
    })
    .await;
    (stack, public)
}

/// Runs the Go client over KCP against `edge` as `uid` with `extra` flags.
async fn go_client(
    edge: &Edge,
    public: &std::path::Path,
    uid: i64,
    extra: &[&str],
) -> gopeer::ClientRun {
    go_client_at(edge.kcp_addr.unwrap(), public, uid, extra).await
}

/// Runs the Go client over KCP against `addr`.
async fn go_client_at(
    addr: std::net::SocketAddr,
    public: &std::path::Path,
    uid: i64,
    extra: &[&str],
) -> gopeer::ClientRun {
    let addr = addr.to_string();
    let public = public.display().to_string();
    let uid = uid.to_string();
    let mut args = vec![
        "-transport",
        "kcp",
        "-addr",
        &addr,
        "-server-pub",
        &public,
        "-token-key",
        TOKEN_KEY,
        "-uid",
        &uid,
        "-color",
        COLOR,
    ];
    args.extend_from_slice(extra);
    gopeer::client(&args, Duration::from_secs(60)).await
}

#[tokio::test]
async fn a_fabrica_net_kcp_client_with_fec_and_two_smux_streams_gets_two_sessions() {
    let (stack, public) = legacy_stack(KcpSettings::default()).await;
    let run = go_client(&stack.edge, &public, 5001, &["-streams", "2"]).await;
    run.assert_sessions(5001, 2);
    // Nothing the real client sent was refused.
    let series = "janus_edge_refused_total{reason=\"kcp_invalid\"}";
    let refused = metric(stack.edge.admin_addr, series).await;
    assert_eq!(refused.unwrap_or(0.0), 0.0);
}

#[tokio::test]
async fn a_go_kcp_client_with_fec_and_without_smux() {
    let settings = KcpSettings {
        smux: false,
        ..KcpSettings::default()
    };
    let (stack, public) = legacy_stack(settings).await;
    let run = go_client(&stack.edge, &public, 5101, &["-smux=false"]).await;
    run.assert_sessions(5101, 1);
}

#[tokio::test]
async fn a_go_kcp_client_with_smux_and_without_fec() {
    let settings = KcpSettings {
        fec_data_shards: 0,
        fec_parity_shards: 0,
        ..KcpSettings::default()
    };
    let (stack, public) = legacy_stack(settings).await;
    let run = go_client(&stack.edge, &public, 5201, &["-fec=false", "-streams", "3"]).await;
    run.assert_sessions(5201, 3);
}

#[tokio::test]
async fn go_kcp_clients_without_fec_or_smux_reach_an_edge_with_the_defaults() {
    // kcp-go reads FEC and plain datagrams alike, and so does the edge: it answers a
    // conversation that opened without FEC without it; and it tells smux from frames by the
    // conversation's first byte.
    let (stack, public) = legacy_stack(KcpSettings::default()).await;
    let run = go_client(&stack.edge, &public, 5301, &["-fec=false", "-streams", "1"]).await;
    run.assert_sessions(5301, 1);
    let run = go_client(&stack.edge, &public, 5311, &["-smux=false"]).await;
    run.assert_sessions(5311, 1);
    let run = go_client(&stack.edge, &public, 5321, &["-smux=false", "-fec=false"]).await;
    run.assert_sessions(5321, 1);
}

/// A UDP relay to `target` that drops every `nth` FEC data packet in each direction (never the
/// conversation's first, so the edge sees it open); returns the address clients dial.
async fn lossy_relay(target: std::net::SocketAddr, nth: usize) -> std::net::SocketAddr {
    let front = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(target).await.unwrap();
    let addr = front.local_addr().unwrap();
    let client = Arc::new(std::sync::Mutex::new(None));
    let drops = move |datagram: &[u8], count: &mut usize| {
        let data = datagram.len() > 6 && datagram[4..6] == [0xf1, 0];
        if data {
            *count += 1;
        }
        data && *count > 1 && (*count).is_multiple_of(nth)
    };
    let (f, b, c) = (front.clone(), back.clone(), client.clone());
    tokio::spawn(async move {
        let (mut buf, mut count) = (vec![0; 65536], 0);
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            *c.lock().unwrap() = Some(from);
            if !drops(&buf[..n], &mut count) {
                let _ = b.send(&buf[..n]).await;
            }
        }
    });
    tokio::spawn(async move {
        let (mut buf, mut count) = (vec![0; 65536], 0);
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *client.lock().unwrap();
            if let Some(to) = to
                && !drops(&buf[..n], &mut count)
            {
                let _ = front.send_to(&buf[..n], to).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn lost_datagrams_are_recovered_from_the_real_clients_parity() {
    let (stack, public) = legacy_stack(KcpSettings::default()).await;
    let relay = lossy_relay(stack.edge.kcp_addr.unwrap(), 7).await;
    let run = go_client_at(relay, &public, 5401, &["-streams", "2"]).await;
    run.assert_sessions(5401, 2);
    // Every seventh data packet of kcp-go's was lost on the way; the edge rebuilt some of
    // them from kcp-go's parity before a retransmission came (KCP retransmits the rest).
    let series = "janus_edge_kcp_fec_recovered_total";
    let recovered = metric(stack.edge.admin_addr, series).await.unwrap_or(0.0);
    assert!(recovered >= 1.0, "{series} = {recovered}");
}
