//! Janus broker: the session tier. Owns where each session lives (routes in Redis), the gRPC
//! tunnels to the game services that own its objects, and delivery of pushes (over NATS or
//! Redis). Any broker can take any session.
//!
//! The seams with more than one real implementation — [`route::RouteStore`] (Redis | memory),
//! [`bus::PushBus`] (NATS | Redis | in-process) and [`janus_ops::discovery::Discovery`]
//! (etcd | static) — are the only difference between the split deployment and the
//! single-process standalone mode. `redis_conn` is the one Redis connection layer under the
//! route store, the Redis bus and go-pantheon's Redis push channels.
//!
//! [`server::Broker`] starts one; [`link`] is the edge-facing API, [`session`] a session's actor,
//! [`tunnel`] the Roma tunnels and [`push`] the fan-out. The demo game service is a crate of
//! its own (`broker/demo`, `janus-demo-game`).

pub mod admin;
pub mod balance;
pub mod bus;
pub mod config;
pub mod continuity;
pub mod delivery;
pub mod error;
pub mod link;
pub mod metrics;
mod missed;
pub mod push;
mod redis_conn;
pub mod registration;
pub mod registry;
pub mod route;
pub mod server;
pub mod session;
pub mod state;
pub mod tunnel;

pub use error::{Error, Result};
pub use server::Broker;
