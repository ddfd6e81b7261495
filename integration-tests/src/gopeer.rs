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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::Value;

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
    let mut built = built.lock().unwrap_or_else(|p| p.into_inner());
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
        let mut child = Command::new(binary("roma"))
            .args(["-listen", listen, "-push", push_endpoint])
            .args(extra)
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
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(event);
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
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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

/// What one run of the Go client (`gopeers/client`) printed.
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

    /// Asserts that it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.success, "the Go client failed: {self:#?}");
        self
    }
}

/// Runs the Go client with `args` (its flags, see its package doc), within `timeout`.
pub async fn client(args: &[&str], timeout: Duration) -> ClientRun {
    let run = tokio::process::Command::new(binary("client"))
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| panic!("the Go client {args:?} ran longer than {timeout:?}"))
        .expect("the Go client runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    ClientRun {
        success: output.status.success(),
        lines: stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("the Go client printed a non-JSON line ({e}): {l}"))
            })
            .collect(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
