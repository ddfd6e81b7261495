//! QUIC as Janus runs it: the ALPN id, the client's TLS configuration and endpoint, and the
//! one bidirectional stream of a connection as a byte stream (both ends).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::tls::{install_crypto_provider, load_certs};

/// The ALPN protocol id of Janus over QUIC.
pub const QUIC_ALPN: &[u8] = b"janus";

/// A rustls client configuration for QUIC: trusting `ca_pem` when given; otherwise accepting
/// any certificate, which is safe only because the Janus handshake authenticates the server
/// with its Ed25519 key (use it for development and self-signed edges).
pub fn quic_client_tls(ca_pem: Option<&str>) -> Result<rustls::ClientConfig> {
    install_crypto_provider();
    let builder = rustls::ClientConfig::builder();
    let mut config = match ca_pem {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in load_certs(pem)? {
                roots.add(cert).map_err(|e| Error::key("TLS CA", e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![QUIC_ALPN.to_vec()];
    Ok(config)
}

/// The flow-control window of a Janus QUIC connection, bytes: what one side may have in flight
/// towards the other on its stream (and in all, there being one stream). quinn's defaults
/// (1.25 MB per stream, 10 MB to send) are sized for bulk transfer; game traffic is small
/// frames, and a frame larger than the window still flows, a window at a time, as the reader
/// takes it.
pub const GAME_WINDOW: u32 = 128 * 1024;

/// A QUIC transport configuration sized for Janus: one bidirectional stream per connection,
/// opened by the client (so `peer_bidi_streams` is 1 on the server and 0 on the client), no
/// unidirectional streams, no datagrams, and `window` bytes of flow control each way. quinn
/// keeps state for every stream the peer may open from the start (100 of each kind by default),
/// and a small send window makes a slow reader back up in the writer's own queue, where it is
/// seen, instead of in megabytes of QUIC buffer.
pub fn game_transport(peer_bidi_streams: u32, window: u32) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(peer_bidi_streams.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window(window.into())
        .receive_window(window.into())
        .send_window(window.into())
        .datagram_receive_buffer_size(None)
        .datagram_send_buffer_size(0);
    transport
}

/// How often a client's QUIC connection pings when nothing else is sent.
const QUIC_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// The one client-opened bidirectional QUIC stream of a Janus connection, as a byte stream,
/// holding the connection (and, on the client, the endpoint) it lives on.
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    connection: quinn::Connection,
    endpoint: Option<quinn::Endpoint>,
    /// Set by shutdown: resolves once the peer has acknowledged everything sent.
    acknowledged: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicStream")
            .field("remote", &self.connection.remote_address())
            .finish()
    }
}

impl QuicStream {
    /// The stream a server accepted on `connection`.
    pub fn accepted(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        connection: quinn::Connection,
    ) -> Self {
        Self {
            send,
            recv,
            connection,
            endpoint: None,
            acknowledged: None,
        }
    }

    /// A client endpoint (one UDP socket) for connections to servers of `family` (the address
    /// they will be reached at), verifying them with `ca_pem` (see [`quic_client_tls`]). One
    /// endpoint can carry any number of connections.
    pub fn client_endpoint(
        family: std::net::SocketAddr,
        ca_pem: Option<&str>,
    ) -> Result<quinn::Endpoint> {
        let bind: std::net::SocketAddr = if family.is_ipv6() {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        }
        .parse()
        .expect("valid wildcard address");
        let mut endpoint = quinn::Endpoint::client(bind)?;
        let tls = quic_client_tls(ca_pem)?;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| quic(&e))?;
        let mut config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
        // QUIC pings keep a quiet connection (and its NAT binding) alive; whether the session
        // is still wanted is the heartbeat's business, not QUIC's idle timer.
        let mut transport = game_transport(0, GAME_WINDOW);
        transport
            .keep_alive_interval(Some(QUIC_KEEP_ALIVE))
            .max_idle_timeout(quinn::IdleTimeout::try_from(QUIC_KEEP_ALIVE * 8).ok());
        config.transport_config(std::sync::Arc::new(transport));
        endpoint.set_default_client_config(config);
        Ok(endpoint)
    }

    /// Connects to `addr` (`ip:port`) on an endpoint of its own, verifying the server as
    /// `server_name` (see [`quic_client_tls`] for `ca_pem`), and opens the stream.
    pub async fn connect(addr: &str, server_name: &str, ca_pem: Option<&str>) -> Result<Self> {
        let addr = tokio::net::lookup_host(addr)
            .await?
            .next()
            .ok_or_else(|| quic(&"the address resolves to nothing"))?;
        let endpoint = Self::client_endpoint(addr, ca_pem)?;
        let mut stream = Self::connect_on(&endpoint, addr, server_name).await?;
        stream.endpoint = Some(endpoint);
        Ok(stream)
    }

    /// Connects to `addr` over an existing client `endpoint` (shared with other connections)
    /// and opens the stream.
    pub async fn connect_on(
        endpoint: &quinn::Endpoint,
        addr: std::net::SocketAddr,
        server_name: &str,
    ) -> Result<Self> {
        let connection = endpoint
            .connect(addr, server_name)
            .map_err(|e| quic(&e))?
            .await
            .map_err(|e| quic(&e))?;
        let (send, recv) = connection.open_bi().await.map_err(|e| quic(&e))?;
        Ok(Self {
            send,
            recv,
            connection,
            endpoint: None,
            acknowledged: None,
        })
    }
}

/// A QUIC failure as this crate's error.
fn quic(e: &dyn std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("quic: {e}")))
}

impl tokio::io::AsyncRead for QuicStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for QuicStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        tokio::io::AsyncWrite::poll_write(std::pin::Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.send).poll_flush(cx)
    }

    /// Finishes the stream and waits until the peer has acknowledged all of it, so closing the
    /// connection afterwards loses nothing (a final logout, say).
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.acknowledged.is_none() {
            let _ = self.send.finish();
            let stopped = self.send.stopped();
            self.acknowledged = Some(Box::pin(async move {
                let _ = stopped.await;
            }));
        }
        match self.acknowledged.as_mut() {
            Some(acknowledged) => acknowledged.as_mut().poll(cx).map(Ok),
            None => std::task::Poll::Ready(Ok(())),
        }
    }
}

impl Drop for QuicStream {
    /// Dropping a QUIC connection closes it at once and can discard data the peer has not
    /// acknowledged yet (a final logout, say). So the stream is finished and the connection
    /// kept open in the background until the peer has everything, for at most two seconds.
    fn drop(&mut self) {
        let _ = self.send.finish();
        let stopped = self.send.stopped();
        let connection = self.connection.clone();
        let endpoint = self.endpoint.take();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stopped).await;
                connection.close(0u32.into(), b"");
                if let Some(endpoint) = endpoint {
                    endpoint.wait_idle().await;
                }
            });
        }
    }
}

/// Accepts every server certificate (see [`quic_client_tls`]); signatures are still checked so
/// the TLS session itself is sound.
#[derive(Debug)]
struct AnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
