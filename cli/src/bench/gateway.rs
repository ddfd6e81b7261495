//! The system under test, started as real processes of this binary: `janus game-demo`,
//! `janus broker` (memory routes, in-process bus, static discovery) and `janus edge`, each
//! with its own configuration file and fresh keys in a scratch directory, or the raw TCP echo
//! server of the baseline. Separate processes so that each tier's memory and CPU time can be
//! read from `/proc`, and so the load generator's own work is not counted against them.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use janus_edge::config::EdgeConfig;
use janus_shared::handshake::ServerHandshakeConfig;
use janus_shared::keys::VerifyingKey;
use janus_shared::token::TokenCodec;
use tokio::process::{Child, Command};

use crate::{http, keys};

/// One running process of the system under test.
pub(crate) struct Process {
    name: &'static str,
    child: Child,
}

impl Process {
    fn spawn(name: &'static str, args: &[&str], log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(std::env::current_exe()?)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        Ok(Self { name, child })
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child
            .id()
            .with_context(|| format!("the {} has exited", self.name))
    }

    /// Resident memory, bytes (`VmRSS`).
    pub(crate) fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?))?;
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    /// CPU time used so far (user + system), seconds.
    pub(crate) fn cpu_secs(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?))?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = stat
            .rsplit_once(')')
            .context("malformed /proc/<pid>/stat")?
            .1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        let hz = rustix::param::clock_ticks_per_second().max(1) as f64;
        Ok(ticks as f64 / hz)
    }
}

/// A free local TCP (and, for the UDP transports, UDP) port.
fn free_port() -> anyhow::Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// Waits until `ready` returns true, up to 20 s.
async fn wait_for(
    what: &str,
    log: &Path,
    mut ready: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready().await {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("the {what} did not become ready in 20 s; its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Edge, broker and demo game service, started and ready.
pub(crate) struct Gateway {
    dir: PathBuf,
    /// The edge process.
    pub(crate) edge: Process,
    /// The broker process.
    pub(crate) broker: Process,
    _game: Process,
    /// Client listeners of the edge.
    pub(crate) tcp: SocketAddr,
    pub(crate) ws: SocketAddr,
    pub(crate) kcp: SocketAddr,
    pub(crate) quic: SocketAddr,
    /// The broker's gRPC address (push API).
    pub(crate) broker_addr: SocketAddr,
    /// What clients verify the edge with, and mint tokens with.
    pub(crate) server_key: VerifyingKey,
    pub(crate) tokens: Arc<TokenCodec>,
    /// The edge's handshake configuration, for the single-thread crypto ceiling.
    pub(crate) handshake: Arc<ServerHandshakeConfig>,
}

impl Gateway {
    /// Starts game service, broker and edge with limits opened wide (the generator is one
    /// address sending as fast as it can), and waits until the edge is ready.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "janus-bench-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        keys::write_key_set(&dir, true)?;
        let mut ports = Vec::new();
        for _ in 0..8 {
            ports.push(SocketAddr::from(([127, 0, 0, 1], free_port()?)));
        }
        let [tcp, ws, kcp, quic, admin, broker, broker_admin, game] = ports[..] else {
            unreachable!("eight ports were taken")
        };
        let file = |name: &str| dir.join(name).display().to_string();

        let game_toml = format!("listen = \"{game}\"\npush = \"{broker}\"\n");
        let broker_toml = format!(
            "listen = \"{broker}\"\nadmin_listen = \"{broker_admin}\"\n\
             [[discovery.instances]]\nname = \"roma.player.service\"\nendpoint = \"{game}\"\n\
             [[discovery.instances]]\nname = \"roma.room.service\"\nendpoint = \"{game}\"\n"
        );
        let edge_toml = format!(
            "admin_listen = \"{admin}\"\ndrain_grace_secs = 0\n\
             [tcp]\nenabled = true\nlisten = \"{tcp}\"\n[websocket]\nenabled = true\nlisten = \"{ws}\"\n\
             [kcp]\nenabled = true\nlisten = \"{kcp}\"\n[quic]\nenabled = true\nlisten = \"{quic}\"\n\
             [keys]\nsigning_key_file = \"{}\"\ntoken_key_file = \"{}\"\n\
             [session]\nidle_timeout_secs = 600\nmessages_per_sec = 4000000000\nmessage_burst = 4000000000\n\
             bytes_per_sec = 4000000000\nbyte_burst = 4000000000\n\
             [limits]\nmax_sessions = 10000000\nmax_sessions_per_ip = 10000000\nhandshakes_per_ip_per_sec = 10000000\n\
             [brokers]\nendpoints = [\"{broker}\"]\n",
            file(keys::SERVER_KEY),
            file(keys::TOKEN_KEY),
        );
        for (name, text) in [
            ("game.toml", &game_toml),
            ("broker.toml", &broker_toml),
            ("edge.toml", &edge_toml),
        ] {
            std::fs::write(dir.join(name), text)?;
        }
        let edge_config: EdgeConfig =
            janus_shared::config::parse(&edge_toml, "the bench's edge configuration")?;
        let handshake = edge_config.load_handshake()?;

        let game_log = dir.join("game.log");
        let game_process = Process::spawn(
            "game service",
            &["game-demo", "--config", &file("game.toml")],
            &game_log,
        )?;
        wait_for("game service", &game_log, async || {
            tokio::net::TcpStream::connect(game).await.is_ok()
        })
        .await?;
        let broker_log = dir.join("broker.log");
        let broker_process = Process::spawn(
            "broker",
            &["broker", "--config", &file("broker.toml")],
            &broker_log,
        )?;
        let ready = format!("http://{broker_admin}/ready");
        wait_for("broker", &broker_log, async || {
            matches!(http::status(&ready).await, Ok(200))
        })
        .await?;
        let edge_log = dir.join("edge.log");
        let edge_process =
            Process::spawn("edge", &["edge", "--config", &file("edge.toml")], &edge_log)?;
        let ready = format!("http://{admin}/ready");
        wait_for("edge", &edge_log, async || {
            matches!(http::status(&ready).await, Ok(200))
        })
        .await?;

        Ok(Self {
            server_key: keys::read_signing_key(&dir.join(keys::SERVER_KEY))?.verifying_key(),
            tokens: Arc::new(TokenCodec::new(&keys::read_token_key(
                &dir.join(keys::TOKEN_KEY),
            )?)),
            dir,
            edge: edge_process,
            broker: broker_process,
            _game: game_process,
            tcp,
            ws,
            kcp,
            quic,
            broker_addr: broker,
            handshake,
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The baseline: a raw tokio TCP echo server (length-prefixed frames, no gateway) in its own
/// process.
pub(crate) struct RawEcho {
    _process: Process,
    dir: PathBuf,
    /// Its listener.
    pub(crate) addr: SocketAddr,
}

impl RawEcho {
    /// Starts `janus bench raw-echo-server` and waits until it accepts.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let dir = std::env::temp_dir().join(format!(
            "janus-bench-raw-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("raw.log");
        let process = Process::spawn(
            "raw echo server",
            &["bench", "raw-echo-server", "--listen", &addr.to_string()],
            &log,
        )?;
        wait_for("raw echo server", &log, async || {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await?;
        Ok(Self {
            _process: process,
            dir,
            addr,
        })
    }
}

impl Drop for RawEcho {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
