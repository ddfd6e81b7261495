//! Starting and stopping a broker: builds the three seams from config, serves the edge link and
//! both push APIs on one gRPC listener, subscribes to the bus, and shuts down in order
//! (stop accepting → sessions end → routes released → tasks joined).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use janus_ops::discovery::{Discovery, EtcdDiscovery, Registration, StaticDiscovery};
use janus_ops::internal_tls::{self, Admit, InternalTls, Role};
use janus_proto::broadcaster::service::push::v1::push_service_server::PushServiceServer as BroadcasterPush;
use janus_proto::gate::service::push::v1::push_service_server::PushServiceServer as GatePushServer;
use janus_proto::janus::internal::LINK_MAX_MESSAGE;
use janus_proto::janus::internal::v1::edge_link_server::EdgeLinkServer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::bus::{MemoryBus, NatsBus, PushBus, RedisBus};
use crate::config::{BrokerConfig, BusBackend, DiscoveryBackend, RoutesBackend, Services};
use crate::delivery::Delivery;
use crate::error::{Error, Result};
use crate::link::LinkService;
use crate::metrics::Metrics;
use crate::push::{GatePush, Pusher};
use crate::registration::{self, Addresses};
use crate::registry::Registry;
use crate::route::{MemoryRoutes, RedisRoutes, RouteStore};
use crate::state::BrokerState;
use crate::tunnel::{TunnelSettings, Tunnels};

/// A running broker.
#[derive(Debug)]
pub struct Broker {
    /// The address its gRPC server listens on.
    pub addr: SocketAddr,
    /// The address of its admin endpoint.
    pub admin_addr: SocketAddr,
    state: Arc<BrokerState>,
    server: tokio::task::JoinHandle<()>,
    registrations: Vec<Registration>,
}

impl Broker {
    /// Starts a broker on `listener` with `config`; the admin endpoint binds
    /// `config.admin_listen`.
    pub async fn start(config: BrokerConfig, listener: TcpListener) -> Result<Self> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Bind(e.to_string()))?;
        let admin_listener = TcpListener::bind(config.admin_listen)
            .await
            .map_err(|e| Error::Bind(format!("admin_listen {}: {e}", config.admin_listen)))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(|e| Error::Bind(e.to_string()))?;
        let admin_token = admin::read_token(&config.admin_token_file)?;
        let tls = InternalTls::load(&config.internal_tls)
            .map_err(|e| Error::InternalTls(e.to_string()))?;
        let endpoint = match &config.advertise {
            Some(advertise) => advertise.clone(),
            None if addr.ip().is_unspecified() => {
                janus_ops::discovery::own_address(addr.port()).await
            }
            None => addr.to_string(),
        };
        let routes: Arc<dyn RouteStore> = match config.routes.backend {
            RoutesBackend::Memory => Arc::new(MemoryRoutes::new()),
            RoutesBackend::Redis => Arc::new(RedisRoutes::standalone(
                &config.routes.redis_urls[0],
                config.routes.timeout_ms,
            )?),
            RoutesBackend::RedisCluster => Arc::new(
                RedisRoutes::cluster(&config.routes.redis_urls, config.routes.timeout_ms).await?,
            ),
        };
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let bus: Arc<dyn PushBus> = match config.bus.backend {
            BusBackend::Memory => Arc::new(MemoryBus::new()),
            BusBackend::Nats => Arc::new(
                NatsBus::connect(&config.bus.nats_url, &format!("janus-broker {endpoint}")).await?,
            ),
            BusBackend::Redis => Arc::new(
                RedisBus::connect(
                    &config.routes.redis_urls,
                    config.routes.backend == RoutesBackend::RedisCluster,
                    config.routes.timeout_ms,
                    (&tasks, shutdown.clone()),
                )
                .await?,
            ),
        };
        let discovery: Arc<dyn Discovery> = match config.discovery.backend {
            DiscoveryBackend::Static => Arc::new(StaticDiscovery::new(
                config
                    .discovery
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(i, s)| s.to_instance(i))
                    .collect(),
            )),
            DiscoveryBackend::Etcd => Arc::new(
                EtcdDiscovery::connect(&config.discovery.etcd_endpoints)
                    .await
                    .map_err(|e| Error::Discovery(e.to_string()))?,
            ),
        };
        let tunnels = Tunnels::new(
            routes.clone(),
            discovery.clone(),
            TunnelSettings {
                app_ttl: config.routes.app_ttl_secs,
                queue: config.tunnels.queue,
                keepalive: config.tunnels.keepalive_secs,
            },
            endpoint.clone(),
            tasks.clone(),
            tls.clone(),
        );
        let services = Services::resolve(&config.tunnels)?;
        let metrics = Metrics::default();
        let delivery = Arc::new(Delivery::new(&config.delivery, metrics.delivery.clone()));
        let state = Arc::new(BrokerState {
            services,
            delivery,
            config,
            endpoint,
            routes,
            bus,
            registry: Registry::default(),
            missed: Default::default(),
            metrics,
            tunnels,
            tasks,
            shutdown,
        });
        state
            .tasks
            .spawn(admin::serve(admin_listener, state.clone(), admin_token));
        let pusher = Pusher::new(state.clone());
        pusher.serve_bus().await?;
        let routes = &state.config.routes;
        if routes.backend != RoutesBackend::Memory && routes.redis_pushes {
            pusher.serve_redis(routes.redis_urls.clone(), routes.timeout_ms);
        }
        let shutdown = state.shutdown.clone();
        let keepalive = state.config.edge_keepalive_ms;
        let refused = state.metrics.internal_refused.clone();
        let push_api = &state.config.push_api;
        let pushers = Admit::new(
            "push",
            &push_api.roles,
            push_api.plaintext,
            Some(refused.clone()),
        );
        let edges = Admit::new("edge_link", &[Role::Edge], false, Some(refused.clone()));
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(keepalive))
            .http2_keepalive_timeout(Some(keepalive))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                EdgeLinkServer::new(LinkService::new(state.clone()))
                    .max_decoding_message_size(LINK_MAX_MESSAGE)
                    .max_encoding_message_size(LINK_MAX_MESSAGE),
                edges,
            ))
            .add_service(BroadcasterPush::with_interceptor(
                pusher.clone(),
                pushers.clone(),
            ))
            .add_service(GatePushServer::with_interceptor(GatePush(pusher), pushers));
        if let Some(tls) = &tls {
            let watch = tls
                .clone()
                .watch(Some(state.metrics.tls_reloads.clone()), shutdown.clone());
            state.tasks.spawn(watch);
        }
        // TCP_NODELAY on every accepted connection (the builder's TCP settings do not apply to
        // a server given its incoming connections): a reply must not wait for an ACK.
        let incoming = internal_tls::incoming(
            listener,
            tls,
            state.config.push_api.plaintext,
            Some(refused),
            shutdown.clone(),
        );
        let server = tokio::spawn(async move {
            if let Err(e) = router
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "broker gRPC server failed");
            }
        });
        let mut registrations = Vec::new();
        let at = Addresses {
            endpoint: &state.endpoint,
            admin_port: admin_addr.port(),
        };
        let mut instances = registration::gate_instances(&state.config.discovery, at);
        instances.push(registration::broker_instance(at));
        for instance in instances {
            let registration = discovery
                .register(instance)
                .await
                .map_err(|e| Error::Discovery(e.to_string()))?;
            registrations.push(registration);
        }
        tracing::info!(%addr, endpoint = %state.endpoint, "broker started");
        Ok(Self {
            addr,
            admin_addr,
            state,
            server,
            registrations,
        })
    }

    /// The endpoint written into gateway routes.
    pub fn endpoint(&self) -> &str {
        &self.state.endpoint
    }

    /// How many sessions this broker holds.
    pub fn sessions(&self) -> usize {
        self.state.registry.len()
    }

    /// Stops serving, ends every session (each releases its route), and waits up to `grace`
    /// for all tasks to finish.
    pub async fn shutdown(self, grace: Duration) {
        for registration in self.registrations {
            registration.deregister().await;
        }
        self.state.shutdown.cancel();
        self.state.tasks.close();
        if tokio::time::timeout(grace, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(?grace, "broker tasks still running after the grace period");
        }
        let _ = tokio::time::timeout(grace, self.server).await;
    }
}
