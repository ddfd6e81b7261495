//! Transport settings both ends must agree on: the KCP parameters (go-pantheon's defaults) and
//! QUIC's ALPN and TLS plumbing, and the byte-stream trait both ends' drivers box their
//! streams as. The sockets themselves belong to the edge and the client driver.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use serde::Deserialize;

use crate::error::{Error, Result};

/// A byte stream frames run over, at either end: TCP (plain or TLS), a KCP or smux stream, a
/// QUIC stream.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// The ALPN protocol id of Janus over QUIC.
pub const QUIC_ALPN: &[u8] = b"janus";

/// KCP parameters; defaults are go-pantheon's (fabrica-net's `conf.KCP`): nodelay 1,
/// interval 10 ms, resend 2, nc 1, windows 128/128, MTU 1400, FEC with 10 data and 3 parity
/// shards, and smux version 2 streams on top (frames of at most 4096 bytes, a keepalive every
/// 10 s, dead after 30 s of silence). An edge with these defaults serves every kind of client:
/// it reads FEC and plain datagrams alike and answers a conversation the way it opened, and it
/// tells smux from frames by a conversation's first byte. With FEC or smux off it serves only
/// clients without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KcpSettings {
    /// Nodelay mode.
    pub nodelay: bool,
    /// Internal update interval, milliseconds.
    pub interval: i32,
    /// Fast resend after this many duplicate ACKs (0 = off).
    pub resend: i32,
    /// Turn congestion control off.
    pub nc: bool,
    /// Send window, segments.
    pub send_window: u16,
    /// Receive window, segments.
    pub recv_window: u16,
    /// MTU, bytes: the largest datagram, FEC header included.
    pub mtu: usize,
    /// FEC data shards per group (kcp-go's `dataShards`); 0 with `fec_parity_shards` 0 turns
    /// FEC off.
    pub fec_data_shards: usize,
    /// FEC parity shards per group (kcp-go's `parityShards`).
    pub fec_parity_shards: usize,
    /// Run smux streams on the conversation, each its own session; off, the conversation's
    /// bytes are one session's frames. An edge with smux on serves both: a conversation whose
    /// first byte is a frame's (0) rather than the smux version is one session's frames.
    pub smux: bool,
    /// smux protocol version, 1 or 2.
    pub smux_version: u8,
    /// Largest smux data frame this end sends, bytes.
    pub smux_max_frame: usize,
    /// How often smux sends a keepalive, seconds.
    pub smux_keepalive_secs: u64,
    /// smux silence after which the conversation is dead, seconds.
    pub smux_keepalive_timeout_secs: u64,
    /// The receive window this end advertises per smux stream (version 2), bytes.
    pub smux_max_stream_buffer: u32,
}

impl Default for KcpSettings {
    fn default() -> Self {
        Self {
            nodelay: true,
            interval: 10,
            resend: 2,
            nc: true,
            send_window: 128,
            recv_window: 128,
            mtu: 1400,
            fec_data_shards: 10,
            fec_parity_shards: 3,
            smux: true,
            smux_version: 2,
            smux_max_frame: 4096,
            smux_keepalive_secs: 10,
            smux_keepalive_timeout_secs: 30,
            smux_max_stream_buffer: 65536,
        }
    }
}

impl KcpSettings {
    /// Plain KCP: no FEC, no smux (what Janus spoke before FEC and smux).
    pub fn plain() -> Self {
        Self {
            fec_data_shards: 0,
            fec_parity_shards: 0,
            smux: false,
            ..Self::default()
        }
    }

    /// Whether datagrams carry FEC.
    pub fn fec(&self) -> bool {
        self.fec_data_shards > 0 && self.fec_parity_shards > 0
    }

    /// The smux settings.
    pub fn smux_config(&self) -> crate::kcp::smux::Config {
        crate::kcp::smux::Config {
            version: self.smux_version,
            max_frame: self.smux_max_frame,
            keepalive: std::time::Duration::from_secs(self.smux_keepalive_secs),
            keepalive_timeout: std::time::Duration::from_secs(self.smux_keepalive_timeout_secs),
            max_stream_buffer: self.smux_max_stream_buffer,
        }
    }
}

impl crate::config::Validate for KcpSettings {
    fn validate(&self, problems: &mut crate::config::Problems) {
        let field = |name: &str| name.to_owned();
        problems.check(
            (10..=5000).contains(&self.interval),
            &field("interval"),
            format!("must be 10..=5000 ms, got {}", self.interval),
        );
        problems.check(
            (64..=1500).contains(&self.mtu),
            &field("mtu"),
            format!("must be 64..=1500, got {}", self.mtu),
        );
        problems.check_positive(&field("send_window"), self.send_window);
        problems.check_positive(&field("recv_window"), self.recv_window);
        let (data, parity) = (self.fec_data_shards, self.fec_parity_shards);
        problems.check(
            (data == 0) == (parity == 0),
            &field("fec_parity_shards"),
            format!(
                "fec_data_shards and fec_parity_shards are both 0 (FEC off) or both positive, got {data} and {parity}"
            ),
        );
        problems.check(
            data + parity <= 256,
            &field("fec_data_shards"),
            format!(
                "data and parity shards are at most 256 together, got {}",
                data + parity
            ),
        );
        if self.smux {
            problems.check(
                matches!(self.smux_version, 1 | 2),
                &field("smux_version"),
                format!("must be 1 or 2, got {}", self.smux_version),
            );
            problems.check(
                (1..=65535).contains(&self.smux_max_frame),
                &field("smux_max_frame"),
                format!("must be 1..=65535, got {}", self.smux_max_frame),
            );
            problems.check_positive(&field("smux_keepalive_secs"), self.smux_keepalive_secs);
            problems.check(
                self.smux_keepalive_timeout_secs > self.smux_keepalive_secs,
                &field("smux_keepalive_timeout_secs"),
                format!(
                    "must be greater than smux_keepalive_secs ({}), got {}",
                    self.smux_keepalive_secs, self.smux_keepalive_timeout_secs
                ),
            );
            problems.check(
                self.smux_max_stream_buffer as usize >= self.smux_max_frame,
                &field("smux_max_stream_buffer"),
                format!(
                    "must be at least smux_max_frame ({}), got {}",
                    self.smux_max_frame, self.smux_max_stream_buffer
                ),
            );
        }
    }
}

/// Installs ring as the process's rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Reads a PEM certificate chain.
pub fn load_certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::key("TLS certificate", e))?;
    if certs.is_empty() {
        return Err(Error::key("TLS certificate", "no certificate in the PEM"));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(pem: &str) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| Error::key("TLS key", e))?
        .ok_or_else(|| Error::key("TLS key", "no private key in the PEM"))
}

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
        let mut transport = quinn::TransportConfig::default();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcp_defaults_are_go_pantheons() {
        let s = KcpSettings::default();
        assert!(s.nodelay && s.nc);
        assert_eq!((s.interval, s.resend), (10, 2));
        assert_eq!((s.send_window, s.recv_window, s.mtu), (128, 128, 1400));
        assert_eq!((s.fec_data_shards, s.fec_parity_shards), (10, 3));
        assert!(s.fec() && s.smux);
        let smux = s.smux_config();
        assert_eq!((smux.version, smux.max_frame), (2, 4096));
        assert_eq!(smux.keepalive, std::time::Duration::from_secs(10));
        assert_eq!(smux.keepalive_timeout, std::time::Duration::from_secs(30));
        assert!(!KcpSettings::plain().fec() && !KcpSettings::plain().smux);
    }

    #[test]
    fn kcp_validation_names_the_fields() {
        let mut problems = crate::config::Problems::default();
        problems.section("kcp.params", &KcpSettings::default());
        assert_eq!(format!("{problems:?}"), "Problems([])");
        let bad = KcpSettings {
            fec_data_shards: 10,
            fec_parity_shards: 0,
            smux_version: 3,
            smux_keepalive_timeout_secs: 5,
            mtu: 9000,
            ..KcpSettings::default()
        };
        let mut problems = crate::config::Problems::default();
        problems.section("kcp.params", &bad);
        let text = format!("{problems:?}");
        for field in [
            "kcp.params.fec_parity_shards",
            "kcp.params.smux_version",
            "kcp.params.smux_keepalive_timeout_secs",
            "kcp.params.mtu",
        ] {
            assert!(text.contains(field), "{field} in {text}");
        }
    }

    #[test]
    fn pem_without_a_certificate_or_key_is_a_key_error() {
        assert_eq!(load_certs("nothing").unwrap_err().kind(), "key");
        assert_eq!(load_key("nothing").unwrap_err().kind(), "key");
    }
}
