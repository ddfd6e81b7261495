//! Helpers for the integration suites: real Redis, NATS and etcd in containers ([`infra`]) and
//! a whole gateway assembled from the real crates ([`stack`]): demo game service, brokers and
//! edges in this process, talking over loopback sockets to each other and to the containers;
//! the split deployment with every Janus process in its own container ([`cluster`]);
//! real Go peers built like go-pantheon's game service and client ([`gopeer`]); and Roma's
//! pushes as go-pantheon sends them, by grpc-go and by Redis ([`roma`]).

pub mod cluster;
pub mod gopeer;
pub mod infra;
pub mod pki;
pub mod ports;
pub mod roma;
pub mod stack;

pub use infra::{Service, etcd, nats, redis};

/// The `janus` binary `cargo build -p janus-cli` put beside the running test's profile
/// directory (`<target>/<profile>/janus`).
pub fn janus_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let path = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("a test executable under <target>/<profile>/deps")
        .join("janus");
    assert!(
        path.is_file(),
        "{} is missing: run cargo build -p janus-cli (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A fresh, empty directory under the system's temporary directory, removed when the returned
/// guard is dropped: `janus-<name>-…`.
pub fn scratch_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("janus-{name}-"))
        .tempdir()
        .expect("a scratch directory under the temporary directory")
}
