//! The echo peer: Debian's nginx as a TLS-terminating `stream` proxy (its own prefix in a
//! scratch directory, `daemon off`, a fresh self-signed certificate) in front of the raw echo
//! server, and the TLS connections the echo generator drives through it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::gateway::{Process, RawEcho, Scratch, accepts, free_ports};
use super::raw::RawConn;

/// Where Debian's libnginx-mod-stream installs the module.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// The name the certificate is issued to and the clients ask for.
const SERVER_NAME: &str = "localhost";

/// nginx terminating TLS in front of a raw echo server (both killed when dropped).
pub(crate) struct Nginx {
    _process: Process,
    _echo: RawEcho,
    _dir: Scratch,
    addr: SocketAddr,
    connector: TlsConnector,
}

impl Nginx {
    /// Starts a raw echo server and nginx in front of it, and waits until nginx accepts.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        anyhow::ensure!(
            Path::new(STREAM_MODULE).is_file(),
            "nginx's stream module {STREAM_MODULE} is not installed: apt-get install libnginx-mod-stream"
        );
        let echo = RawEcho::start().await?;
        let [addr] = free_ports()?;
        let dir = Scratch::new("nginx")?;
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])?;
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.file("cert.pem"), &cert_pem)?;
        std::fs::write(dir.file("key.pem"), certified.signing_key.serialize_pem())?;
        let file = |name: &str| dir.file(name).display().to_string();
        let config = format!(
            "load_module {STREAM_MODULE};\ndaemon off;\nworker_processes auto;\n\
             pid {};\nerror_log stderr warn;\nevents {{ worker_connections 4096; }}\n\
             stream {{\n  server {{\n    listen {addr} ssl;\n    ssl_certificate {};\n    \
             ssl_certificate_key {};\n    tcp_nodelay on;\n    proxy_pass {};\n  }}\n}}\n",
            file("nginx.pid"),
            file("cert.pem"),
            file("key.pem"),
            echo.addr,
        );
        std::fs::write(dir.file("nginx.conf"), config)?;
        let prefix = format!("{}/", dir.path().display());
        let mut process = Process::spawn_installed(
            "nginx",
            "nginx",
            "nginx libnginx-mod-stream",
            &["-p", &prefix, "-e", "stderr", "-c", &file("nginx.conf")],
            &dir,
        )?;
        process.wait_ready(async || accepts(addr).await).await?;
        Ok(Self {
            _process: process,
            _echo: echo,
            _dir: dir,
            addr,
            connector: connector(&cert_pem)?,
        })
    }

    /// A TLS connection through nginx to the raw echo server.
    pub(crate) async fn connect(&self) -> anyhow::Result<RawConn<TlsStream<TcpStream>>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(SERVER_NAME)?;
        let tls = self
            .connector
            .connect(name, tcp)
            .await
            .context("the TLS handshake with nginx")?;
        Ok(RawConn::over(tls))
    }
}

/// A TLS client that trusts only `cert_pem`.
fn connector(cert_pem: &str) -> anyhow::Result<TlsConnector> {
    janus_transport::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in janus_transport::tls::load_certs(cert_pem)? {
        roots.add(cert)?;
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
