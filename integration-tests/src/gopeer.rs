//! Real Go peers for the suites: the go-pantheon-style game service ([`Roma`]) and client
//! ([`client`]) under `integration-tests/go/src/gopeers`, built from Debian's Go packages
//! offline in GOPATH mode, once per test process, into `<target>/<profile>/gopeers/`.
//!
//! A missing Go toolchain or package is a failure that names the `apt-get install` command,
//! never a skip: compatibility with go-pantheon is only proven against real Go peers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::watch;

/// `package  dir-under-/usr/share/gocode/src` lines, `#` comments.
const PACKAGES: &str = include_str!("../go/debian-packages");
/// Where Debian installs Go sources.
const GOCODE: &str = "/usr/share/gocode";

/// The Go peers' source tree (the first GOPATH entry).
fn gopath() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("go")
}

/// The command that installs every package the peers need.
pub fn install_command() -> String {
    let packages: Vec<&str> = package_lines().map(|(package, _)| package).collect();
    format!("apt-get install {}", packages.join(" "))
}

fn package_lines() -> impl Iterator<Item = (&'static str, &'static str)> {
    PACKAGES
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
}

/// Where the binaries go: beside this test executable's profile directory
/// (`<target>/<profile>/deps/<test>` → `<target>/<profile>/gopeers`).
fn out_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    exe.parent()
        .and_then(Path::parent)
        .expect("a test executable under <target>/<profile>/deps")
        .join("gopeers")
}

/// Builds `gopeers/<name>` (once per process) and returns the binary's path; panics naming
/// the install command when Go or a package is missing, with go's own output otherwise.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Mutex::default);
    let mut built = built.lock();
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let path = build(name);
    built.insert(name.to_owned(), path.clone());
    path
}

fn build(name: &str) -> PathBuf {
    let missing: Vec<&str> = package_lines()
        .filter(|(_, dir)| *dir != "-" && !Path::new(GOCODE).join("src").join(dir).is_dir())
        .map(|(package, _)| package)
        .collect();
    let go = Command::new("go").arg("version").output();
    if go.is_err() || !missing.is_empty() {
        panic!(
            "the Go test peers need Go and Debian's Go packages ({}); install them with: {}",
            if missing.is_empty() {
                "`go` is not on PATH".to_owned()
            } else {
                format!("missing {}", missing.join(", "))
            },
            install_command()
        );
    }
    let dir = out_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(name);
    let tmp = dir.join(format!("{name}.{}.tmp", std::process::id()));
    let gopath = format!("{}:{GOCODE}", gopath().display());
    let result = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg(format!("gopeers/{name}"))
        .env("GOPATH", gopath)
        .env("GO111MODULE", "off")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        // Static binaries (pure-Go resolver, no libc): they also run in the images the
        // full-stack cluster builds on whatever Debian base it has.
        .env("CGO_ENABLED", "0")
        .env("GOCACHE", dir.join("gocache"))
        .output()
        .expect("go runs");
    assert!(
        result.status.success(),
        "go build gopeers/{name} failed ({}); if a package is missing: {}\n{}",
        result.status,
        install_command(),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The Go game service written like Roma's tunnel handlers (`gopeers/roma`): see its package
/// doc for what it answers. Killed when dropped.
pub struct Roma {
    /// `host:port` of its gRPC server.
    pub endpoint: String,
    child: Child,
    // Dropping it closes the peer's stdin, which also stops it.
    _stdin: ChildStdin,
    events: Arc<Mutex<Vec<Value>>>,
}

impl Roma {
    /// Starts it on an ephemeral port; room pushes go to the broker at `push_endpoint`.
    pub fn start(push_endpoint: &str) -> Self {
        Self::start_with(push_endpoint, &[])
    }

    /// Starts it with extra flags (e.g. `-clock-offset 60s`).
    pub fn start_with(push_endpoint: &str, extra: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", push_endpoint, extra)
    }

    /// Starts it on `listen` (to restart it on the same address).
    pub fn start_on(listen: &str, push_endpoint: &str, extra: &[&str]) -> Self {
        let mut command = Command::new(binary("roma"));
        command
            .args(["-listen", listen, "-push", push_endpoint])
            .args(extra);
        Self::spawn(command)
    }

    /// Starts it on an ephemeral port as a kratos app (`gopeers/kratosapp`): registered in the
    /// etcd at `etcd_url` as Roma's services register (`/microservices/roma.player.service/<id>`
    /// and `roma.room.service`, kratos JSON, `metadata.color` = `color`, `grpc://<endpoint>`,
    /// under a 15 s lease kept alive); returns once the registration is written.
    pub async fn start_registered(
        etcd_url: &str,
        color: &str,
        push_endpoint: &str,
        extra: &[&str],
    ) -> Self {
        let roma = binary("roma");
        let mut command = Command::new(binary("kratosapp"));
        command
            .args(["-etcd", etcd_url, "-color", color, "--"])
            .arg(roma)
            .args(["-listen", "127.0.0.1:0", "-push", push_endpoint])
            .args(extra);
        let roma = Self::spawn(command);
        roma.wait_event("registered", |_| true).await;
        roma
    }

    /// Runs `command` (the peer, or a wrapper that prints what the peer prints).
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the roma peer starts");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut endpoint = String::new();
        stdout.read_line(&mut endpoint).unwrap();
        let endpoint = endpoint.trim().to_owned();
        assert!(
            !endpoint.is_empty(),
            "the roma peer exited before listening"
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let event = serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("roma printed a line that is not JSON ({e}): {line}")
                });
                sink.lock().push(event);
            }
        });
        Self {
            endpoint,
            child,
            _stdin: stdin,
            events,
        }
    }

    /// Every event it printed so far (one JSON object each; `event` names the kind).
    pub fn events(&self) -> Vec<Value> {
        self.events.lock().clone()
    }

    /// The events named `kind` so far.
    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// Waits up to five seconds for an event named `kind` that satisfies `want`.
    pub async fn wait_event(&self, kind: &str, want: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..100 {
            if let Some(e) = self.events_of(kind).into_iter().find(&want) {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no matching {kind:?} event; roma printed {:#?}",
            self.events()
        );
    }

    /// Kills it like a crash.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for Roma {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one run of the Go client (`gopeers/client`), or of another Go peer that prints JSON
/// lines, printed.
#[derive(Debug)]
pub struct ClientRun {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stdout lines, one JSON object each.
    pub lines: Vec<Value>,
    /// Its stderr (the reason of a failure).
    pub stderr: String,
}

impl ClientRun {
    /// The line of check `name`; panics with the whole output when there is none.
    pub fn check(&self, name: &str) -> &Value {
        self.lines
            .iter()
            .find(|l| l["check"] == name)
            .unwrap_or_else(|| panic!("the Go client printed no {name:?} check: {self:#?}"))
    }

    /// The line of check `name` for session `session`; panics with the whole output when
    /// there is none.
    pub fn line(&self, name: &str, session: usize) -> &Value {
        self.lines
            .iter()
            .find(|l| l["check"] == name && l["session"] == session)
            .unwrap_or_else(|| panic!("no {name:?} check of session {session}: {self:#?}"))
    }

    /// Asserts that the run succeeded and that every one of `sessions` sessions (uid, uid + 1,
    /// …) passed every check with go-pantheon's values: index 1 first, a Succeeded heartbeat
    /// whose reply carries the uid, echoes with obj = uid, a 12000-byte reply zlib-compressed
    /// on the wire, the push on the tunnel; and that `done` counts the sessions.
    pub fn assert_sessions(&self, uid: i64, sessions: usize) -> &Self {
        self.assert_success();
        for session in 0..sessions {
            let uid = uid + session as i64;
            let handshake = self.line("handshake", session);
            assert_eq!(
                (&handshake["uid"], &handshake["start_index"]),
                (&uid.into(), &1.into()),
                "{self:#?}"
            );
            let heartbeat = self.line("heartbeat", session);
            assert_eq!(
                (&heartbeat["code"], &heartbeat["obj"], &heartbeat["index"]),
                (&1.into(), &uid.into(), &1.into()),
                "Succeeded, obj = uid, the first index: {self:#?}"
            );
            assert!(heartbeat["skew"].as_i64().unwrap().abs() <= 2, "{self:#?}");
            let echo = self.line("echo", session);
            assert_eq!(
                (&echo["obj"], &echo["index"]),
                (&uid.into(), &2.into()),
                "{self:#?}"
            );
            let compressed = self.line("compressed", session);
            assert_eq!(compressed["bytes"], 12_000, "{self:#?}");
            assert!(
                compressed["wire_bytes"].as_u64().unwrap() < 12_000,
                "the reply was zlib on the wire: {self:#?}"
            );
            let push = self.line("push", session);
            assert_eq!(
                (&push["data"], &push["obj"]),
                (&"pushed".into(), &uid.into()),
                "{self:#?}"
            );
        }
        assert_eq!(self.check("done")["sessions"], sessions, "{self:#?}");
        self
    }

    /// The data of every push session `session` received (`-await-pushes`), in order.
    pub fn received(&self, session: usize) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l["check"] == "received" && l["session"] == session)
            .map(|l| l["data"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Asserts that it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success, "the Go client failed: {self:#?}");
        self
    }
}

/// Runs the Go client with `args` (its flags, see its package doc), within `timeout`.
pub async fn client(args: &[&str], timeout: Duration) -> ClientRun {
    GoProcess::spawn(args).finish(timeout).await
}

/// Runs the grpc-go pusher (`gopeers/pusher`, one broadcaster call as fabrica-kit makes it)
/// with `args`, within `timeout`; on success its one line says what it found and called.
pub async fn pusher(args: &[&str], timeout: Duration) -> ClientRun {
    GoProcess::spawn_peer("pusher", args).finish(timeout).await
}

/// A Go peer that prints JSON lines (the client, the pusher) running in the background, its
/// lines read as they come. Killed when dropped.
pub struct GoProcess {
    name: &'static str,
    args: Vec<String>,
    child: tokio::process::Child,
    /// Every stdout line so far; the sender goes when stdout closes (the peer exited).
    lines: watch::Receiver<Vec<Value>>,
    reader: tokio::task::JoinHandle<()>,
    stderr: tokio::task::JoinHandle<String>,
}

impl GoProcess {
    /// Starts the Go client with `args`.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_peer("client", args)
    }

    /// Starts the Go peer `name` with `args`.
    fn spawn_peer(name: &'static str, args: &[&str]) -> Self {
        let mut child = tokio::process::Command::new(binary(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("the Go {name} does not start: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (sink, lines) = watch::channel(Vec::new());
        let reader = tokio::spawn(async move {
            let mut stdout = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = stdout.next_line().await {
                let line = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("a Go peer printed a non-JSON line ({e}): {line}"));
                sink.send_modify(|lines| lines.push(line));
            }
        });
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text).await;
            text
        });
        Self {
            name,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child,
            lines,
            reader,
            stderr,
        }
    }

    /// Every line it printed so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.borrow().clone()
    }

    /// Waits up to `timeout` for a line satisfying `want` and returns it; panics with what the
    /// peer printed (and its stderr, when it exited) otherwise.
    pub async fn wait_line(&mut self, want: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
        let found = tokio::time::timeout(
            timeout,
            self.lines.wait_for(|lines| lines.iter().any(&want)),
        )
        .await;
        let found = found.map(|r| r.map(|lines| lines.iter().find(|l| want(l)).cloned()));
        match found {
            Ok(Ok(line)) => line.expect("the line waited for"),
            Ok(Err(_)) => {
                let _ = self.child.wait().await;
                let stderr = (&mut self.stderr).await.unwrap_or_default();
                panic!(
                    "the Go {} {:?} exited without the line waited for; it printed {:#?}, stderr: {stderr}",
                    self.name,
                    self.args,
                    self.lines()
                )
            }
            Err(_) => panic!(
                "the Go {} {:?} printed no such line within {timeout:?}: {:#?}",
                self.name,
                self.args,
                self.lines()
            ),
        }
    }

    /// Waits up to `timeout` for the `ready` line of every one of `sessions` sessions (it
    /// prints them with `-await-pushes`).
    pub async fn wait_ready(&mut self, sessions: usize, timeout: Duration) {
        for session in 0..sessions {
            self.wait_line(
                |l| l["check"] == "ready" && l["session"] == session,
                timeout,
            )
            .await;
        }
    }

    /// Waits up to `timeout` for it to exit; what it printed.
    pub async fn finish(mut self, timeout: Duration) -> ClientRun {
        let status = tokio::time::timeout(timeout, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the Go {} {:?} ran longer than {timeout:?}; it printed {:#?}",
                    self.name,
                    self.args,
                    self.lines()
                )
            })
            .expect("waiting for the Go peer");
        let stderr = self.stderr.await.unwrap_or_default();
        self.reader
            .await
            .expect("every stdout line of the Go peer is JSON");
        let lines = self.lines.borrow().clone();
        ClientRun {
            success: status.success(),
            lines,
            stderr,
        }
    }
}
