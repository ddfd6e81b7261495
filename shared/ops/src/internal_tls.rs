//! Mutual TLS on the deployment's internal gRPC links (PROTOCOL.md §15): the roles a
//! certificate names, the deployment CA that issues them, the material a process holds (loaded
//! once, re-read when its files change or on SIGHUP), the accept side (TLS, or plaintext where
//! a link allows it, told apart by the first byte), the connect side, and the per-API check of
//! who may call. The decisions ([`role_of`], [`admit`], [`Material::load`]) are plain functions
//! over bytes; the tokio parts (accept loop, connector, watch) only carry them out.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use janus_transport::tls::{install_crypto_provider, load_certs, load_key};
use parking_lot::{Mutex, RwLock};
use prometheus::IntCounterVec;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use serde::Deserialize;
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Problems;
use crate::error::{Error, Result};

/// What every role's name ends with: a certificate of role `edge` names the DNS name
/// `edge.janus.internal` (subject alternative name), whatever address its process has.
pub const IDENTITY_SUFFIX: &str = ".janus.internal";

/// How long an accepted connection may take to show its first byte and finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Accepted connections waiting for the gRPC server to take them; when full, the accept loop
/// waits (and connections wait in the kernel's backlog).
const ACCEPTED_QUEUE: usize = 64;
/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What a process is to the others; its certificate names it (PROTOCOL.md §15.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An edge: opens edge links to brokers.
    Edge,
    /// A broker: serves edge links and the push APIs; opens tunnels to game services.
    Broker,
    /// A game service: serves tunnels; calls the push APIs.
    Game,
    /// An operator's tool (`janus push`): calls the push APIs.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Edge, Role::Broker, Role::Game, Role::Admin];

    /// Its name in configs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Edge => "edge",
            Role::Broker => "broker",
            Role::Game => "game",
            Role::Admin => "admin",
        }
    }

    /// The DNS name its certificates carry (and what a client checks a server's against).
    pub fn identity(self) -> &'static str {
        match self {
            Role::Edge => "edge.janus.internal",
            Role::Broker => "broker.janus.internal",
            Role::Game => "game.janus.internal",
            Role::Admin => "admin.janus.internal",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role (edge, broker, game, admin)"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The role `certificate` names, when it names exactly one. Only the name is looked at: the
/// chain to the deployment CA is the verifier's business.
pub fn role_of(certificate: &CertificateDer<'_>) -> Option<Role> {
    let cert = webpki::EndEntityCert::try_from(certificate).ok()?;
    let mut named = Role::ALL.into_iter().filter(|role| {
        let name = ServerName::try_from(role.identity()).expect("a valid DNS name");
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    });
    match (named.next(), named.next()) {
        (Some(role), None) => Some(role),
        _ => None,
    }
}

/// `[internal_tls]`: this process's certificate and the deployment CA. Empty `ca_file`: the
/// internal links are plaintext (the standalone mode, development).
#[serde_with::serde_as]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InternalTlsConfig {
    /// The deployment CA's certificate(s), PEM: peers must chain to one of them.
    pub ca_file: String,
    /// This process's certificate chain, PEM; it names the process's role
    /// (`<role>.janus.internal`).
    pub cert_file: String,
    /// Its private key, PEM.
    pub key_file: String,
    /// Time between looks at the three files (the file gives milliseconds); changed material
    /// is used by new connections (open ones stay up). SIGHUP looks at once.
    #[serde_as(as = "serde_with::DurationMilliSeconds<u64>")]
    pub reload_ms: Duration,
}

impl Default for InternalTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            reload_ms: Duration::from_millis(5000),
        }
    }
}

impl InternalTlsConfig {
    /// Whether internal links use TLS.
    pub fn enabled(&self) -> bool {
        !self.ca_file.is_empty()
    }

    /// Records the problems of this section (under `internal_tls.`).
    pub fn check(&self, problems: &mut Problems) {
        let set = [&self.ca_file, &self.cert_file, &self.key_file].map(|f| !f.is_empty());
        if set.contains(&true) {
            for (field, set) in ["ca_file", "cert_file", "key_file"].into_iter().zip(set) {
                problems.check(
                    set,
                    &format!("internal_tls.{field}"),
                    "must be set with the other two (ca_file, cert_file, key_file)",
                );
            }
        }
        problems.check_nonzero("internal_tls.reload_ms", self.reload_ms);
    }
}

/// The three files' contents as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Files {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Files {
    fn read(config: &InternalTlsConfig) -> Result<Self> {
        let read = |field: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| Error::InternalTls(format!("internal_tls.{field} {path}: {e}")))
        };
        Ok(Self {
            ca: read("ca_file", &config.ca_file)?,
            cert: read("cert_file", &config.cert_file)?,
            key: read("key_file", &config.key_file)?,
        })
    }
}

/// One generation of TLS material: what new connections use.
#[derive(Debug)]
pub struct Material {
    /// The role this process's certificate names.
    pub role: Role,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl Material {
    /// Builds the material from PEM bytes: the CA, this process's chain and its key. Refused
    /// when the chain does not lead to the CA, names no single role, or the key is not its key.
    pub fn load(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<Self> {
        install_crypto_provider();
        let bad = |field: &str, e: &dyn std::fmt::Display| {
            Error::InternalTls(format!("internal_tls.{field}: {e}"))
        };
        let text = |field: &str, bytes: &[u8]| {
            std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| bad(field, &e))
        };
        let mut roots = rustls::RootCertStore::empty();
        for ca in load_certs(&text("ca_file", ca)?).map_err(|e| bad("ca_file", &e))? {
            roots.add(ca).map_err(|e| bad("ca_file", &e))?;
        }
        let roots = Arc::new(roots);
        let chain = load_certs(&text("cert_file", cert)?).map_err(|e| bad("cert_file", &e))?;
        let key = load_key(&text("key_file", key)?).map_err(|e| bad("key_file", &e))?;
        let role = role_of(&chain[0]).ok_or_else(|| {
            bad(
                "cert_file",
                &format!("names no single role (a DNS name <role>{IDENTITY_SUFFIX})"),
            )
        })?;
        let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
            .build()
            .map_err(|e| bad("ca_file", &e))?;
        verifier
            .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
            .map_err(|e| bad("cert_file", &format!("not valid under ca_file: {e}")))?;
        let mut server = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| bad("key_file", &e))?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let mut client = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| bad("key_file", &e))?;
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            role,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// A process's internal TLS: the material in force, swapped when its files change.
#[derive(Debug, Clone)]
pub struct InternalTls {
    config: InternalTlsConfig,
    current: Arc<RwLock<Arc<Material>>>,
    seen: Arc<Mutex<Files>>,
}

impl InternalTls {
    /// Loads the material `config` names; `None` when internal TLS is off.
    pub fn load(config: &InternalTlsConfig) -> Result<Option<Self>> {
        if !config.enabled() {
            return Ok(None);
        }
        let files = Files::read(config)?;
        let material = Material::load(&files.ca, &files.cert, &files.key)?;
        Ok(Some(Self {
            config: config.clone(),
            current: Arc::new(RwLock::new(Arc::new(material))),
            seen: Arc::new(Mutex::new(files)),
        }))
    }

    /// The material new connections use.
    pub fn current(&self) -> Arc<Material> {
        self.current.read().clone()
    }

    /// Reads the files again; when they changed, builds and swaps in the new material
    /// (`Ok(true)`). Material that does not load is refused and the old stays in force; the
    /// same bytes are not tried again.
    pub fn reload(&self) -> Result<bool> {
        let files = Files::read(&self.config)?;
        {
            let mut seen = self.seen.lock();
            if *seen == files {
                return Ok(false);
            }
            *seen = files.clone();
        }
        let material = Material::load(&files.ca, &files.cert, &files.key)?;
        *self.current.write() = Arc::new(material);
        Ok(true)
    }

    /// Looks at the files every `reload_ms` and on SIGHUP until `stop`, counting each new
    /// generation and each refused one in `reloads` (label `result`: `ok`, `error`).
    pub async fn watch(self, reloads: Option<IntCounterVec>, stop: CancellationToken) {
        let count = |result: &str| {
            if let Some(reloads) = &reloads {
                reloads.with_label_values(&[result]).inc();
            }
        };
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let period = self.config.reload_ms;
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
                _ = hup => {}
            }
            match self.reload() {
                Ok(false) => {}
                Ok(true) => {
                    count("ok");
                    tracing::info!(role = %self.current().role, "internal TLS material reloaded");
                }
                Err(e) => {
                    count("error");
                    tracing::warn!(error = %e, "internal TLS material refused; the old stays in force");
                }
            }
        }
    }

    /// Opens a TLS connection to `addr` (`host:port`), a server of role `peer`.
    pub async fn connect(
        &self,
        addr: &str,
        peer: Role,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(peer.identity()).expect("a valid DNS name");
        tokio_rustls::TlsConnector::from(self.current().client.clone())
            .connect(name, tcp)
            .await
    }
}

/// A gRPC channel to `endpoint` (`host:port`, a server of role `peer`): TLS when `tls` is
/// given, else plaintext. `configure` sets the endpoint's options (timeouts, keep-alive);
/// TCP_NODELAY is on. Lazy: it connects on first use and again after a loss, each time with
/// the material then in force.
pub fn channel(
    endpoint: &str,
    tls: Option<&InternalTls>,
    peer: Role,
    configure: impl FnOnce(tonic::transport::Endpoint) -> tonic::transport::Endpoint,
) -> std::result::Result<tonic::transport::Channel, tonic::transport::Error> {
    let target = configure(
        tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))?.tcp_nodelay(true),
    );
    Ok(match tls {
        None => target.connect_lazy(),
        Some(tls) => {
            let (tls, addr) = (tls.clone(), endpoint.to_owned());
            target.connect_with_connector_lazy(tower::service_fn(move |_| {
                let (tls, addr) = (tls.clone(), addr.clone());
                async move {
                    let stream = tls.connect(&addr, peer).await?;
                    Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
        }
    })
}

/// How an accepted connection came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Internal TLS is off on this server: nothing is checked.
    Open,
    /// Plaintext on a TLS server, which lets some APIs take it (go-pantheon's Roma pushes).
    Plaintext,
    /// Mutual TLS; the client's certificate names this role.
    Tls(Role),
}

/// Who is on the other end of an accepted connection: in every request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address.
    pub remote: SocketAddr,
    /// How it came in.
    pub link: Link,
}

/// Why a request is refused, when it is: its metric label.
pub fn admit(link: Link, roles: &[Role], plaintext: bool) -> std::result::Result<(), &'static str> {
    match link {
        Link::Open => Ok(()),
        Link::Plaintext if plaintext => Ok(()),
        Link::Plaintext => Err("plaintext"),
        Link::Tls(role) if roles.contains(&role) => Ok(()),
        Link::Tls(_) => Err("wrong_role"),
    }
}

/// A tonic interceptor that lets through the requests of one API (`edge_link`, `push`,
/// `tunnel`) that [`admit`] admits; the others get `PERMISSION_DENIED` (naming the API and the
/// role, never an address) and are counted in `refused` (labels `api`, `reason`).
#[derive(Debug, Clone)]
pub struct Admit {
    api: &'static str,
    roles: Arc<[Role]>,
    plaintext: bool,
    refused: Option<IntCounterVec>,
}

impl Admit {
    /// Admits `roles` (and plaintext connections when `plaintext`) to `api`.
    pub fn new(
        api: &'static str,
        roles: &[Role],
        plaintext: bool,
        refused: Option<IntCounterVec>,
    ) -> Self {
        Self {
            api,
            roles: roles.into(),
            plaintext,
            refused,
        }
    }
}

impl tonic::service::Interceptor for Admit {
    fn call(
        &mut self,
        request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        // Fail closed: a request that did not come through [`incoming`] says nothing of its
        // link, so nothing is known of who sent it.
        let peer = request.extensions().get::<Peer>().copied();
        let refusal = match peer {
            None => Err("no_peer"),
            Some(peer) => admit(peer.link, &self.roles, self.plaintext),
        };
        let Err(reason) = refusal else {
            return Ok(request);
        };
        if let Some(refused) = &self.refused {
            refused.with_label_values(&[self.api, reason]).inc();
        }
        let who = match peer.map(|peer| peer.link) {
            Some(Link::Tls(role)) => format!("role {role}"),
            Some(_) => "a plaintext connection".to_owned(),
            None => "a connection it did not accept".to_owned(),
        };
        let remote = peer.map(|peer| peer.remote.to_string());
        tracing::warn!(api = self.api, remote = remote.as_deref().unwrap_or("?"), %who, "internal API refused");
        Err(tonic::Status::permission_denied(format!(
            "{} does not admit {who}",
            self.api
        )))
    }
}

/// An accepted internal connection.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    peer: Peer,
}

#[derive(Debug)]
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The metric label of a refused TLS handshake.
fn handshake_refusal(e: &io::Error) -> &'static str {
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => "no_certificate",
        Some(rustls::Error::InvalidCertificate(_)) => "bad_certificate",
        _ if e.kind() == io::ErrorKind::TimedOut => "timeout",
        _ => "handshake",
    }
}

/// Takes one accepted connection through its handshake.
async fn handshake(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<&InternalTls>,
    plaintext: bool,
) -> std::result::Result<Conn, &'static str> {
    let plain = |tcp, link| {
        Ok(Conn {
            io: Io::Plain(tcp),
            peer: Peer { remote, link },
        })
    };
    let Some(tls) = tls else {
        return plain(tcp, Link::Open);
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        Ok(_) => return Err("closed"),
        Err(_) => return Err("timeout"),
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        return if plaintext {
            plain(tcp, Link::Plaintext)
        } else {
            Err("plaintext")
        };
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current().server.clone());
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "internal TLS handshake refused");
            return Err(handshake_refusal(&e));
        }
        Err(_) => return Err("timeout"),
    };
    let role = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(role_of)
        .ok_or("no_role")?;
    Ok(Conn {
        io: Io::Tls(Box::new(stream)),
        peer: Peer {
            remote,
            link: Link::Tls(role),
        },
    })
}

/// The connections `listener` accepts until `stop`, each through its handshake: TLS under
/// `tls`'s material in force, or plaintext (when `tls` is `None`, or `plaintext` lets a TLS
/// server take it). Refused connections are closed, logged and counted in `refused` (labels
/// `api` = `connection`, `reason`). For `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    tls: Option<InternalTls>,
    plaintext: bool,
    refused: Option<IntCounterVec>,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(async move {
        loop {
            let (tcp, remote) = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (tx, tls, refused) = (tx.clone(), tls.clone(), refused.clone());
            tokio::spawn(async move {
                match handshake(tcp, remote, tls.as_ref(), plaintext).await {
                    Ok(conn) => {
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Err(reason) => {
                        if let Some(refused) = &refused {
                            refused.with_label_values(&["connection", reason]).inc();
                        }
                        tracing::warn!(%remote, reason, "internal connection refused");
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The deployment CA: makes role certificates (`janus keygen`).
pub struct Authority {
    key: rcgen::KeyPair,
    params: rcgen::CertificateParams,
}

/// A certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

/// How far back a certificate's validity starts: hosts whose clocks run a little behind the
/// one that made it take it at once.
const CLOCK_SKEW: time::Duration = time::Duration::minutes(5);

/// Sets `params` valid from now (less [`CLOCK_SKEW`]) for `years`.
fn valid_for(params: &mut rcgen::CertificateParams, years: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + time::Duration::days(365 * years);
}

impl Authority {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Self> {
        let key = rcgen::KeyPair::generate().map_err(|e| Error::InternalTls(e.to_string()))?;
        Ok(Self::with_key(key))
    }

    /// The CA of `key_pem` (its key, as [`Authority::key_pem`] wrote it): what it issues chains
    /// to the CA certificate first made with that key.
    pub fn from_key_pem(key_pem: &str) -> Result<Self> {
        let key = rcgen::KeyPair::from_pem(key_pem)
            .map_err(|e| Error::InternalTls(format!("CA key: {e}")))?;
        Ok(Self::with_key(key))
    }

    fn with_key(key: rcgen::KeyPair) -> Self {
        let mut params = rcgen::CertificateParams::default();
        // Named by its key, so two CAs trusted side by side during a rotation (§15.4) are told
        // apart; the same key always gives the same name, so a CA rebuilt from its key issues
        // certificates that chain to the first.
        let id = sha2::Sha256::digest(key.public_key_raw());
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("Janus deployment CA {}", hex::encode(&id[..4])),
        );
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        valid_for(&mut params, 10);
        Self { key, params }
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> Result<String> {
        self.params
            .self_signed(&self.key)
            .map(|cert| cert.pem())
            .map_err(|e| Error::InternalTls(e.to_string()))
    }

    /// The CA's private key, PEM (keep it offline: it issues every role).
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A fresh key and a certificate of `role` (valid for two years), for servers and clients.
    pub fn issue(&self, role: Role) -> Result<Issued> {
        let fail = |e: rcgen::Error| Error::InternalTls(format!("issuing {role}: {e}"));
        let key = rcgen::KeyPair::generate().map_err(fail)?;
        let mut params =
            rcgen::CertificateParams::new(vec![role.identity().to_owned()]).map_err(fail)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, role.identity());
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        valid_for(&mut params, 2);
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(fail)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests;
