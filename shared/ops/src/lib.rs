//! What the Janus binaries run on, beside the protocol: loading their typed configuration
//! ([`config`]), logging, tracing and signals ([`telemetry`]), the Prometheus registry and the
//! admin routes both tiers serve ([`metrics`]), service discovery in etcd or a static list
//! ([`discovery`]), and mutual TLS on the internal gRPC links with the one channel builder both
//! tiers dial with ([`internal_tls`]).

pub mod config;
pub mod discovery;
pub mod error;
pub mod internal_tls;
pub mod metrics;
pub mod telemetry;

pub use error::{Error, Result};
