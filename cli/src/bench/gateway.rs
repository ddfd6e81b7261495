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
use janus_protocol::handshake::ServerHandshakeConfig;
use janus_protocol::keys::{TokenKeyFormat, VerifyingKey};
use janus_protocol::token::TokenCodec;
use tokio::process::{Child, Command};

use crate::{http, keys};

/// A scratch directory for configuration, keys and logs, removed when dropped.
pub(crate) struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A fresh directory named after `what`.
    pub(crate) fn new(what: &str) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("janus-bench-{what}-"))
            .tempdir()
            .context("cannot create a scratch directory")?;
        Ok(Self(dir))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// The path of `name` inside it.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }
}

/// One running process of the system under test (killed when dropped).
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
    /// Whether it leads its own process group (an installed peer, whose workers are ended
    /// with it).
    group: bool,
}

impl Drop for Process {
    fn drop(&mut self) {
        if let (true, Some(pid)) = (
            self.group,
            self.child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
        ) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Where `program` is installed: on `PATH`, or in the sbin directories Debian puts daemons in
/// (not on a user's `PATH`).
fn installed(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl Process {
    /// Starts `janus ARGS…` with its stderr in `NAME.log` of `dir`. When the environment
    /// variable `wrapper` names a command (e.g. `valgrind --tool=dhat`), the process runs
    /// under it: how to profile a tier under the generator's load.
    fn spawn(
        name: &'static str,
        args: &[&str],
        dir: &Scratch,
        wrapper: Option<&str>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let prefix = wrapper
            .and_then(|var| std::env::var(var).ok())
            .unwrap_or_default();
        let mut command: Vec<String> = prefix.split_whitespace().map(str::to_owned).collect();
        command.push(exe.display().to_string());
        command.extend(args.iter().map(|a| (*a).to_owned()));
        Self::spawn_command(name, command, dir, false)
    }

    /// Starts an installed program (`program ARGS…`, a peer the gateway is compared with, from
    /// Debian's `package`) as its own process group, with its stderr in `NAME.log` of `dir`;
    /// fails with the `apt-get` command when it is not installed.
    pub(crate) fn spawn_installed(
        name: &'static str,
        program: &str,
        package: &str,
        args: &[&str],
        dir: &Scratch,
    ) -> anyhow::Result<Self> {
        let path = installed(program)
            .with_context(|| format!("{program} is not installed: apt-get install {package}"))?;
        let mut command = vec![path.display().to_string()];
        command.extend(args.iter().map(|a| (*a).to_owned()));
        Self::spawn_command(name, command, dir, true)
    }

    fn spawn_command(
        name: &'static str,
        command: Vec<String>,
        dir: &Scratch,
        group: bool,
    ) -> anyhow::Result<Self> {
        let log = dir.file(&format!("{}.log", name.replace(' ', "-")));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut builder = Command::new(&command[0]);
        if group {
            builder.process_group(0);
        }
        let child = builder
            .args(&command[1..])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the {name} ({})", command.join(" ")))?;
        Ok(Self {
            name,
            child,
            log,
            group,
        })
    }

    /// Asks the process to stop (SIGTERM: the edge drains, a profiler wrapping it writes its
    /// report) and waits up to `patience` before it is killed.
    async fn stop(&mut self, patience: Duration) {
        if let Some(pid) = self
            .child
            .id()
            .and_then(|id| rustix::process::Pid::from_raw(id as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(patience, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    /// Waits until `ready` returns true, up to 20 s; fails at once, with the process's log,
    /// if it exits first.
    pub(crate) async fn wait_ready(
        &mut self,
        mut ready: impl AsyncFnMut() -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready().await {
            let exited = self.child.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let what = match exited {
                    Some(status) => format!("exited ({status})"),
                    None => "did not become ready in 20 s".to_owned(),
                };
                bail!("the {} {what}; its log:\n{log}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
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

/// `n` distinct free local ports, each free for TCP and UDP (the sockets that proved it are
/// held until all are found, so no port is handed out twice).
pub(crate) fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let mut held = Vec::new();
    while held.len() < N {
        let tcp = TcpListener::bind("127.0.0.1:0")?;
        let addr = tcp.local_addr()?;
        if let Ok(udp) = UdpSocket::bind(addr) {
            held.push((addr, tcp, udp));
        }
    }
    let addrs: Vec<SocketAddr> = held.iter().map(|(addr, _, _)| *addr).collect();
    Ok(addrs.try_into().expect("N addresses were collected"))
}

/// Whether `addr` accepts a TCP connection.
pub(crate) async fn accepts(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

async fn ready(admin: SocketAddr) -> bool {
    matches!(
        http::status(&format!("http://{admin}/ready")).await,
        Ok(200)
    )
}

/// Environment variables naming a command to run the edge or the broker under (a profiler).
const WRAP_EDGE: &str = "JANUS_BENCH_WRAP_EDGE";
const WRAP_BROKER: &str = "JANUS_BENCH_WRAP_BROKER";

/// The configuration of a bench edge: every listener at the given addresses, limits opened wide
/// (the generator is one address sending as fast as it can), linked to `broker`, with
/// `session_extra` (lines of `[session]`) added.
fn edge_toml(
    dir: &Scratch,
    listeners: [SocketAddr; 5],
    broker: SocketAddr,
    session_extra: &str,
) -> String {
    let [tcp, ws, kcp, quic, admin] = listeners;
    let file = |name: &str| dir.file(name).display().to_string();
    format!(
        "admin_listen = \"{admin}\"\ndrain_grace_secs = 0\n\
         [tcp]\nenabled = true\nlisten = \"{tcp}\"\n[websocket]\nenabled = true\nlisten = \"{ws}\"\n\
         [kcp]\nenabled = true\nlisten = \"{kcp}\"\n[quic]\nenabled = true\nlisten = \"{quic}\"\n\
         [keys]\nsigning_key_file = \"{}\"\ntoken_key_file = \"{}\"\n\
         [session]\nidle_timeout_secs = 600\nmessages_per_sec = 4000000000\nmessage_burst = 4000000000\n\
         bytes_per_sec = 4000000000\nbyte_burst = 4000000000\n{session_extra}\
         [limits]\nmax_sessions = 10000000\nmax_sessions_per_ip = 10000000\nhandshakes_per_ip_per_sec = 10000000\n\
         [brokers]\nendpoints = [\"{broker}\"]\n",
        file(keys::SERVER_KEY),
        file(keys::TOKEN_KEY),
    )
}

/// A second edge of the same gateway, for clients that come back at another edge.
pub(crate) struct SecondEdge {
    /// Its process.
    pub(crate) process: Process,
    /// Its client listeners: TCP, WebSocket, KCP, QUIC.
    pub(crate) listeners: [SocketAddr; 4],
}

/// Edge, broker and demo game service, started and ready.
pub(crate) struct Gateway {
    dir: Scratch,
    /// The edge process.
    pub(crate) edge: Process,
    /// The broker process.
    pub(crate) broker: Process,
    game: Process,
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
    /// Stops edge, broker and game service with SIGTERM, giving each time to exit (a profiler
    /// wrapping one gets a minute to write its report).
    pub(crate) async fn stop(mut self) {
        let patience =
            if std::env::var_os(WRAP_EDGE).is_some() || std::env::var_os(WRAP_BROKER).is_some() {
                Duration::from_secs(60)
            } else {
                Duration::from_secs(5)
            };
        self.edge.stop(patience).await;
        self.broker.stop(patience).await;
        self.game.stop(patience).await;
    }

    /// CPU time edge, broker and game service have used so far, seconds.
    pub(crate) fn cpu_secs(&self) -> anyhow::Result<f64> {
        Ok(self.edge.cpu_secs()? + self.broker.cpu_secs()? + self.game.cpu_secs()?)
    }

    /// Starts a second edge like the first, linked to the same broker, and waits until it is
    /// ready.
    pub(crate) async fn start_second_edge(&self) -> anyhow::Result<SecondEdge> {
        let [tcp, ws, kcp, quic, admin] = free_ports()?;
        let path = self.dir.file("second-edge.toml");
        let text = edge_toml(&self.dir, [tcp, ws, kcp, quic, admin], self.broker_addr, "");
        std::fs::write(&path, text)?;
        let mut process = Process::spawn(
            "second edge",
            &["edge", "--config", &path.display().to_string()],
            &self.dir,
            None,
        )?;
        process.wait_ready(async || ready(admin).await).await?;
        Ok(SecondEdge {
            process,
            listeners: [tcp, ws, kcp, quic],
        })
    }

    /// Starts game service, broker and edge with limits opened wide (the generator is one
    /// address sending as fast as it can), and waits until the edge is ready.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        Self::start_with("", "").await
    }

    /// [`Gateway::start`] with `broker_extra` appended to the broker's configuration file and
    /// `edge_session` (lines of its `[session]`) to the edge's.
    pub(crate) async fn start_with(broker_extra: &str, edge_session: &str) -> anyhow::Result<Self> {
        let dir = Scratch::new("gateway")?;
        keys::write_key_set(dir.path(), true)?;
        let [tcp, ws, kcp, quic, admin, broker, broker_admin, game] = free_ports()?;
        let file = |name: &str| dir.file(name).display().to_string();

        let game_toml = format!("listen = \"{game}\"\npush = \"{broker}\"\n");
        let broker_toml = format!(
            "listen = \"{broker}\"\nadmin_listen = \"{broker_admin}\"\n\
             [[discovery.instances]]\nname = \"roma.player.service\"\nendpoint = \"{game}\"\n\
             [[discovery.instances]]\nname = \"roma.room.service\"\nendpoint = \"{game}\"\n\
             {broker_extra}"
        );
        let edge_toml = edge_toml(&dir, [tcp, ws, kcp, quic, admin], broker, edge_session);
        for (name, text) in [
            ("game.toml", &game_toml),
            ("broker.toml", &broker_toml),
            ("edge.toml", &edge_toml),
        ] {
            std::fs::write(dir.file(name), text)?;
        }
        let edge_config: EdgeConfig =
            janus_ops::config::parse(&edge_toml, "the bench's edge configuration")?;
        let handshake = edge_config.load_handshake()?;

        let mut game_process = Process::spawn(
            "game service",
            &["game-demo", "--config", &file("game.toml")],
            &dir,
            None,
        )?;
        game_process
            .wait_ready(async || accepts(game).await)
            .await?;
        let mut broker_process = Process::spawn(
            "broker",
            &["broker", "--config", &file("broker.toml")],
            &dir,
            Some(WRAP_BROKER),
        )?;
        broker_process
            .wait_ready(async || ready(broker_admin).await)
            .await?;
        let mut edge_process = Process::spawn(
            "edge",
            &["edge", "--config", &file("edge.toml")],
            &dir,
            Some(WRAP_EDGE),
        )?;
        edge_process.wait_ready(async || ready(admin).await).await?;

        Ok(Self {
            server_key: keys::read_signing_key(&dir.file(keys::SERVER_KEY))?.verifying_key(),
            tokens: Arc::new(TokenCodec::new(&keys::read_token_key(
                &dir.file(keys::TOKEN_KEY),
                TokenKeyFormat::Hex,
            )?)),
            dir,
            edge: edge_process,
            broker: broker_process,
            game: game_process,
            tcp,
            ws,
            kcp,
            quic,
            broker_addr: broker,
            handshake,
        })
    }
}

/// The baseline: a raw tokio TCP echo server (no gateway) in its own process.
pub(crate) struct RawEcho {
    process: Process,
    _dir: Scratch,
    /// Its listener.
    pub(crate) addr: SocketAddr,
}

impl RawEcho {
    /// Starts `janus bench raw-echo-server` and waits until it accepts.
    pub(crate) async fn start() -> anyhow::Result<Self> {
        let [addr] = free_ports()?;
        let dir = Scratch::new("raw")?;
        let listen = addr.to_string();
        let mut process = Process::spawn(
            "raw echo server",
            &["bench", "raw-echo-server", "--listen", &listen],
            &dir,
            None,
        )?;
        process.wait_ready(async || accepts(addr).await).await?;
        Ok(Self {
            process,
            _dir: dir,
            addr,
        })
    }

    /// CPU time the server has used so far, seconds.
    pub(crate) fn cpu_secs(&self) -> anyhow::Result<f64> {
        self.process.cpu_secs()
    }
}
