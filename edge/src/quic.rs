//! The QUIC listener's endpoints: `quic.endpoints` quinn endpoints on the one UDP port, each its
//! own socket (`SO_REUSEPORT`: the kernel spreads clients over them by address) and its own
//! driver task, which carries every packet of its connections; one endpoint for all of them is
//! one task for every packet of the edge. Accepting is `crate::listener`'s, the certificate
//! `crate::tls`'s.
//!
//! The endpoints share one `EndpointConfig`: one stateless-reset key and one connection-id key.
//! When a client's address changes (a NAT rebinding, a new network) the kernel may hand its
//! packets to another endpoint, which does not know the connection; since that endpoint
//! recognises the connection id as one of the edge's and derives the same reset token, it answers
//! with a stateless reset the client accepts at once (instead of it waiting out its idle timer),
//! and the client reconnects and resumes its session (PROTOCOL.md §13).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use janus_transport::quic::{GAME_WINDOW, game_transport};

use crate::config::QuicConfig;
use crate::error::{Error, Result};
use crate::tls;

/// `config.endpoints` server endpoints on `config.listen` (with port 0, on the port the first
/// one was given), bound and ready to accept. `session_idle` is the session idle timeout,
/// `max_frame` the largest frame a session allows.
pub(crate) fn endpoints(
    config: &QuicConfig,
    session_idle: Duration,
    max_frame: usize,
) -> Result<Vec<quinn::Endpoint>> {
    let crypto = tls::quic_crypto(config)?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    // The one stream must take the largest frame within a window or two.
    let window = u32::try_from(2 * max_frame).map_or(u32::MAX, |w| w.max(GAME_WINDOW));
    let mut transport = game_transport(1, window);
    // The session's idle rule (which tells the client why) decides when a quiet session ends,
    // not QUIC's own idle timer: it is set past the session idle timeout.
    transport.max_idle_timeout(
        quinn::IdleTimeout::try_from(session_idle + Duration::from_secs(10)).ok(),
    );
    server.transport_config(Arc::new(transport));
    let cid_key: u64 = rand::random();
    let mut shared = quinn::EndpointConfig::default();
    shared.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    let runtime = quinn::default_runtime()
        .ok_or_else(|| Error::Config("quic: no async runtime to run the endpoints".into()))?;
    let mut addr = config.listen;
    let mut bound = Vec::with_capacity(config.endpoints);
    for _ in 0..config.endpoints {
        let at = addr;
        let bind_error = move |source| Error::Bind { addr: at, source };
        let socket = reuse_port_socket(at).map_err(bind_error)?;
        addr = socket.local_addr().map_err(bind_error)?;
        let endpoint = quinn::Endpoint::new(
            shared.clone(),
            Some(server.clone()),
            socket,
            runtime.clone(),
        )
        .map_err(bind_error)?;
        bound.push(endpoint);
    }
    Ok(bound)
}

/// A UDP socket bound to `addr` that other sockets of this user may bind too.
fn reuse_port_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use janus_transport::quic::QuicStream;

    use super::*;

    fn two_endpoints() -> (Vec<quinn::Endpoint>, SocketAddr) {
        let config = QuicConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            endpoints: 2,
            ..QuicConfig::default()
        };
        let endpoints = endpoints(&config, Duration::from_secs(60), 16384).unwrap();
        let addr = endpoints[0].local_addr().unwrap();
        (endpoints, addr)
    }

    /// Accepts connections on `endpoint`, reporting each with the endpoint's index.
    fn accept(
        index: usize,
        endpoint: quinn::Endpoint,
        accepted: tokio::sync::mpsc::UnboundedSender<(usize, quinn::Connection)>,
    ) {
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                if let Ok(connection) = incoming.await {
                    let _ = accepted.send((index, connection));
                }
            }
        });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn endpoints_share_the_port_and_the_kernel_spreads_clients_over_them() {
        let (endpoints, addr) = two_endpoints();
        assert_ne!(addr.port(), 0);
        assert_eq!(endpoints[1].local_addr().unwrap(), addr);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, endpoint) in endpoints.into_iter().enumerate() {
            accept(i, endpoint, tx.clone());
        }
        let mut clients = Vec::new();
        for _ in 0..32 {
            let client = QuicStream::client_endpoint(addr, None).unwrap();
            client.connect(addr, "localhost").unwrap().await.unwrap();
            clients.push(client);
        }
        let mut per_endpoint = [0; 2];
        for _ in 0..32 {
            let (i, _) = rx.recv().await.unwrap();
            per_endpoint[i] += 1;
        }
        assert!(per_endpoint.iter().all(|&n| n > 0), "{per_endpoint:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frame_far_larger_than_the_window_flows() {
        let (endpoints, addr) = two_endpoints();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, endpoint) in endpoints.into_iter().enumerate() {
            accept(i, endpoint, tx.clone());
        }
        let client = QuicStream::client_endpoint(addr, None).unwrap();
        let connection = client.connect(addr, "localhost").unwrap().await.unwrap();
        let big = vec![7u8; 16 * 1024 * 1024];
        let (mut send, _recv) = connection.open_bi().await.unwrap();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            send.write_all(&sent).await.unwrap();
            send.finish().unwrap();
            send
        });
        let (_, server) = rx.recv().await.unwrap();
        let (_send, mut recv) = server.accept_bi().await.unwrap();
        let got = recv.read_to_end(big.len()).await.unwrap();
        assert!(got == big);
        drop(writer.await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_moved_to_the_other_endpoint_is_reset_at_once() {
        let (endpoints, addr) = two_endpoints();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, endpoint) in endpoints.into_iter().enumerate() {
            accept(i, endpoint, tx.clone());
        }
        let client = QuicStream::client_endpoint(addr, None).unwrap();
        let connection = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (_, _server) = rx.recv().await.unwrap();
        // A new source address lands on either endpoint; on the other one, the connection is
        // reset (the idle timer is a minute away). On its own, it migrates and goes on.
        for _ in 0..40 {
            client
                .rebind(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                .unwrap();
            match tokio::time::timeout(Duration::from_millis(300), connection.closed()).await {
                Ok(quinn::ConnectionError::Reset) => return,
                Ok(other) => panic!("closed for another reason: {other}"),
                Err(_) => continue,
            }
        }
        panic!("forty new addresses never reached the other endpoint");
    }
}
