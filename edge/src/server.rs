//! Starting and draining an edge. The order on shutdown, all of it steps of the one lifecycle
//! (`crate::drain`): draining (not ready, the listeners stop accepting, the links tell the
//! brokers) → sessions go on for the grace period → logging out (the rest are logged out, or
//! parked) → stopped (the links, the KCP socket and the admin endpoint close).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use janus_ops::discovery::{BROKER_SERVICE, Discovery, EtcdDiscovery, Instance};
use janus_ops::internal_tls::InternalTls;
use janus_protocol::handshake::ServerHandshakeConfig;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::admin::{self, Admin};
use crate::config::{BrokerDiscovery, BrokersConfig, EdgeConfig};
use crate::context::EdgeState;
use crate::drain::{self, Lifecycle, Phase};
use crate::error::{Error, Result};
use crate::link::Links;
use crate::{listener, quic, tls};

/// A running edge.
#[derive(Debug)]
pub struct Edge {
    /// The TCP listener's address, when enabled.
    pub tcp_addr: Option<SocketAddr>,
    /// The WebSocket listener's address, when enabled.
    pub ws_addr: Option<SocketAddr>,
    /// The KCP listener's address, when enabled.
    pub kcp_addr: Option<SocketAddr>,
    /// The QUIC listener's address, when enabled.
    pub quic_addr: Option<SocketAddr>,
    /// The admin endpoint's address.
    pub admin_addr: SocketAddr,
    state: Arc<EdgeState>,
    sessions: TaskTracker,
    background: TaskTracker,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Keeps the broker set equal to what discovery reports, until the edge whose `phase` this
/// follows has stopped.
async fn follow_brokers(
    mut found: watch::Receiver<Vec<Instance>>,
    links: Arc<Links>,
    phase: watch::Receiver<Phase>,
) {
    let stopped = drain::stopped(phase);
    tokio::pin!(stopped);
    loop {
        let endpoints: Vec<String> = found
            .borrow_and_update()
            .iter()
            .filter_map(|i| i.grpc_endpoint().map(str::to_owned))
            .collect();
        tracing::info!(brokers = ?endpoints, "broker set from etcd");
        links.set_endpoints(&endpoints);
        tokio::select! {
            changed = found.changed() => if changed.is_err() { return },
            () = &mut stopped => return,
        }
    }
}

impl Edge {
    /// Binds every enabled listener and starts the broker links.
    pub async fn start(config: EdgeConfig, handshake: Arc<ServerHandshakeConfig>) -> Result<Self> {
        let background = TaskTracker::new();
        let lifecycle = Lifecycle::new();
        let brokers = &config.brokers;
        let tls = InternalTls::load(&config.internal_tls)?;
        // Resolved once: the links and every session read it from here on.
        let edge_id = config.edge_id().to_owned();
        let links = match brokers.discovery {
            BrokerDiscovery::Static => Links::start(
                brokers,
                &edge_id,
                &background,
                lifecycle.watch(),
                tls.clone(),
            ),
            BrokerDiscovery::Etcd => {
                let empty = BrokersConfig {
                    endpoints: Vec::new(),
                    ..brokers.clone()
                };
                let links = Links::start(
                    &empty,
                    &edge_id,
                    &background,
                    lifecycle.watch(),
                    tls.clone(),
                );
                let etcd = EtcdDiscovery::connect(&brokers.etcd_endpoints).await?;
                let found = etcd.watch(BROKER_SERVICE).await?;
                background.spawn(follow_brokers(found, links.clone(), lifecycle.watch()));
                links
            }
        };
        let tcp = match config.tcp.enabled {
            true => Some(bind(config.tcp.listen).await?),
            false => None,
        };
        let ws = match config.websocket.enabled {
            true => Some((
                bind(config.websocket.listen).await?,
                tls::websocket_acceptor(&config.websocket)?,
            )),
            false => None,
        };
        let kcp = match config.kcp.enabled {
            true => Some(
                tokio::net::UdpSocket::bind(config.kcp.listen)
                    .await
                    .map_err(|source| Error::Bind {
                        addr: config.kcp.listen,
                        source,
                    })?,
            ),
            false => None,
        };
        let quic = match config.quic.enabled {
            true => quic::endpoints(
                &config.quic,
                config.session.idle_timeout_secs,
                config.session.max_frame,
            )?,
            false => Vec::new(),
        };
        let admin_listener = bind(config.admin_listen).await?;
        let local = |l: &TcpListener| l.local_addr().map_err(|e| Error::Config(e.to_string()));
        let tcp_addr = tcp.as_ref().map(local).transpose()?;
        let ws_addr = ws.as_ref().map(|(l, _)| local(l)).transpose()?;
        let admin_addr = local(&admin_listener)?;
        let kcp_addr = kcp
            .as_ref()
            .map(|l| l.local_addr().map_err(|e| Error::Config(e.to_string())))
            .transpose()?;
        // Every endpoint is on the first one's address.
        let quic_addr = quic
            .first()
            .map(|e| e.local_addr().map_err(|e| Error::Config(e.to_string())))
            .transpose()?;

        let state = Arc::new(EdgeState::new(config, edge_id, handshake, links, lifecycle));
        if let Some(tls) = tls {
            let reloads = Some(state.metrics.tls_reloads.clone());
            background.spawn(tls.watch(reloads, state.links.stopped()));
        }
        let sessions = TaskTracker::new();
        if let Some(listener) = tcp {
            background.spawn(listener::tcp(listener, state.clone(), sessions.clone()));
        }
        if let Some((listener, tls)) = ws {
            background.spawn(listener::websocket(
                listener,
                tls,
                state.clone(),
                sessions.clone(),
            ));
        }
        if let Some(socket) = kcp {
            background.spawn(crate::kcp::serve_kcp(
                socket,
                state.clone(),
                sessions.clone(),
            ));
        }
        for endpoint in quic {
            background.spawn(listener::quic(endpoint, state.clone(), sessions.clone()));
        }
        let admin = Admin {
            state: state.clone(),
        };
        background.spawn(admin::serve(admin_listener, admin));
        tracing::info!(edge = %state.edge_id, ?tcp_addr, ?ws_addr, ?kcp_addr, ?quic_addr, %admin_addr, "edge started");
        Ok(Self {
            tcp_addr,
            ws_addr,
            kcp_addr,
            quic_addr,
            admin_addr,
            state,
            sessions,
            background,
        })
    }

    /// Waits until a broker is reachable, up to `timeout`.
    pub async fn wait_for_broker(&self, timeout: Duration) -> bool {
        self.state.links.wait_up(timeout).await
    }

    /// Live sessions.
    pub fn sessions(&self) -> usize {
        self.state.admission.sessions()
    }

    /// Drains: stops accepting, tells the brokers, tells resumable clients to reconnect
    /// elsewhere over the spread, lets sessions run for `grace`, logs out the rest (parks the
    /// resumable ones), then stops the links and the admin endpoint.
    pub async fn drain(self, grace: Duration) {
        let lifecycle = &self.state.lifecycle;
        lifecycle.set(Phase::Draining {
            since: Instant::now(),
        });
        self.sessions.close();
        tracing::info!(sessions = self.sessions(), ?grace, "draining");
        if tokio::time::timeout(grace, self.sessions.wait())
            .await
            .is_err()
        {
            tracing::info!(
                sessions = self.sessions(),
                "grace period over; logging sessions out"
            );
            lifecycle.set(Phase::LoggingOut {
                since: Instant::now(),
            });
            let _ = tokio::time::timeout(Duration::from_secs(5), self.sessions.wait()).await;
        }
        lifecycle.set(Phase::Stopped {
            since: Instant::now(),
        });
        self.background.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.background.wait()).await;
        tracing::info!("edge stopped");
    }
}
