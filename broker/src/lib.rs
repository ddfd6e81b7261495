//! Janus broker: the session tier. Owns where each session lives (routes in Redis), the gRPC
//! tunnels to the game services that own its objects, and delivery of pushes (NATS). Any broker
//! can take any session; brokers register in and discover through etcd.
//!
//! The three seams with two real implementations each — [`route::RouteStore`] (Redis | memory),
//! [`bus::PushBus`] (NATS | in-process) and [`discovery::Discovery`] (etcd | static) — are the
//! only difference between the split deployment and the single-process standalone mode.

pub mod bus;
pub mod discovery;
pub mod error;
pub mod route;

pub use error::{Error, Result};
