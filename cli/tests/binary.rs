//! The `janus` binary as an operator and a newcomer run it: a bad edge configuration is refused
//! with the field named, SIGTERM drains an edge and exits with status 0, and the standalone
//! default starts, creates its dev keys, and answers `janus connect`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use janus_protocol::keys::{SigningKey, TokenKey};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let key = dir.join("server.pem");
    std::fs::write(&key, SigningKey::generate().to_pkcs8_pem().unwrap()).unwrap();
    let token = dir.join("token.hex");
    std::fs::write(&token, hex::encode(TokenKey::generate().as_bytes())).unwrap();
    let config = dir.join("edge.toml");
    let text = format!(
        "admin_listen = \"127.0.0.1:{admin}\"\ndrain_grace_secs = 1\n{extra}\n\
         [tcp]\nenabled = true\nlisten = \"127.0.0.1:0\"\n\
         [websocket]\nlisten = \"127.0.0.1:0\"\n[kcp]\nlisten = \"127.0.0.1:0\"\n[quic]\nlisten = \"127.0.0.1:0\"\n\
         [keys]\nsigning_key_file = {key:?}\ntoken_key_file = {token:?}\n\
         [brokers]\nendpoints = [\"127.0.0.1:1\"]\n",
        admin = free_port(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("janus-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn admin_port(config: &std::path::Path) -> u16 {
    let text = std::fs::read_to_string(config).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("admin_listen"))
        .unwrap();
    line.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}

/// A GET of `path` on a loopback port: the whole response, empty when nothing answers.
fn get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

/// The status code of an HTTP response.
fn status_of(response: &str) -> &str {
    response.split_whitespace().nth(1).unwrap_or("")
}

fn healthy(port: u16) -> bool {
    status_of(&get(port, "/health")) == "200"
}

#[test]
fn a_bad_configuration_is_refused_naming_the_field() {
    let dir = temp_dir("bad");
    let config = write_config(&dir, "[session]\nmax_frame = 1\n");
    let output = Command::new(env!("CARGO_BIN_EXE_janus"))
        .arg("edge")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("session.max_frame"), "{stderr}");

    let good = write_config(&dir, "");
    let output = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args(["edge", "--config"])
        .arg(&good)
        .env("JANUS_EDGE__LIMITS__MAX_SESSIONS_PER_IP", "0")
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "an environment override is validated like the file"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("JANUS_EDGE__LIMITS__MAX_SESSIONS_PER_IP")
            && stderr.contains("limits.max_sessions_per_ip"),
        "{stderr}"
    );
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = temp_dir("term");
    let config = write_config(&dir, "");
    let port = admin_port(&config);
    let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
        .arg("edge")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !healthy(port) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the edge never became healthy"
        );
        assert!(child.try_wait().unwrap().is_none(), "the edge exited early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the edge did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "a drain ends with exit status 0");
}

/// A standalone started from a config with free ports (and `edge_extra` appended to its edge
/// table), killed on drop.
struct Standalone {
    dir: std::path::PathBuf,
    child: std::process::Child,
    tcp_port: u16,
    kcp_port: u16,
    /// The browser demo's HTTP port.
    demo_port: u16,
}

impl Standalone {
    fn start(name: &str, edge_extra: &str) -> Self {
        let dir = temp_dir(name);
        let _ = std::fs::remove_dir_all(dir.join(".janus"));
        let ports: Vec<u16> = (0..8).map(|_| free_port()).collect();
        let udp_port = || {
            std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let kcp_port = udp_port();
        let config = dir.join("standalone.toml");
        std::fs::write(
            &config,
            format!(
                "game_listen = \"127.0.0.1:{}\"\n\
                 demo_listen = \"127.0.0.1:{}\"\n\
                 [edge]\nadmin_listen = \"127.0.0.1:{}\"\n\
                 [edge.tcp]\nenabled = true\nlisten = \"127.0.0.1:{}\"\n\
                 [edge.websocket]\nlisten = \"127.0.0.1:{}\"\n\
                 [edge.kcp]\nlisten = \"127.0.0.1:{}\"\n\
                 [edge.quic]\nlisten = \"127.0.0.1:{}\"\n{edge_extra}\n\
                 [broker]\nlisten = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\n",
                ports[0],
                ports[6],
                ports[1],
                ports[2],
                ports[3],
                kcp_port,
                udp_port(),
                ports[4],
                ports[5],
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_janus"))
            .current_dir(&dir)
            .env("JANUS_STANDALONE_CONFIG", &config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while !healthy(ports[1]) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "standalone never became healthy"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "standalone exited early"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Self {
            dir,
            child,
            tcp_port: ports[2],
            kcp_port,
            demo_port: ports[6],
        }
    }

    /// `janus connect` against this standalone, from its directory (its dev keys).
    fn connect(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_janus"));
        command.current_dir(&self.dir).arg("connect").args(args);
        command
    }

    /// SIGTERM, then the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
fn the_standalone_default_starts_creates_dev_keys_and_answers_connect() {
    let standalone = Standalone::start("standalone", "");
    let dir = &standalone.dir;
    assert!(dir.join(".janus/server.pem").exists() && dir.join(".janus/token.hex").exists());
    let tcp_port = standalone.tcp_port.to_string();
    // Clients get the public key, written beside the signing key.
    let output = standalone
        .connect(&[
            "--uid",
            "7",
            "--server-key",
            ".janus/server.pub.pem",
            "--port",
            &tcp_port,
            "--send",
            "hello standalone",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // KCP with go-pantheon's FEC and smux, the edge's default too.
    let kcp_port = standalone.kcp_port.to_string();
    let kcp = standalone
        .connect(&[
            "--uid",
            "8",
            "--transport",
            "kcp",
            "--port",
            &kcp_port,
            "--send",
            "hello kcp",
        ])
        .output()
        .unwrap();
    let kcp_stdout = String::from_utf8_lossy(&kcp.stdout);
    // --send repeats: each message's reply before the next goes out.
    let twice = standalone
        .connect(&[
            "--uid", "9", "--port", &tcp_port, "--send", "first", "--send", "second",
        ])
        .output()
        .unwrap();
    let twice_stdout = String::from_utf8_lossy(&twice.stdout);
    // The browser demo: the page, the SDK it imports, where the edge is, dev tokens.
    let demo = |path: &str| get(standalone.demo_port, path);
    let page = demo("/");
    let sdk = demo("/sdk/janus.js");
    let config = demo("/config.json");
    let token = demo("/token?uid=7");
    let no_uid = demo("/token?uid=0");
    let status = standalone.stop();
    assert!(
        status_of(&page) == "200" && page.contains("/demo.js"),
        "{page}"
    );
    assert!(
        status_of(&sdk) == "200" && sdk.contains("text/javascript"),
        "{sdk}"
    );
    assert!(sdk.contains("export async function connect"), "{sdk}");
    assert!(
        config.contains("\"wsPath\":\"/ws\"") && config.contains("BEGIN PUBLIC KEY"),
        "{config}"
    );
    assert!(status_of(&token) == "200", "{token}");
    assert!(status_of(&no_uid) == "400", "{no_uid}");
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("< reply mod=2 seq=1 obj=7 hello standalone"),
        "{stdout}"
    );
    assert!(
        kcp_stdout.contains("< reply mod=2 seq=1 obj=8 hello kcp"),
        "{kcp_stdout}\n{}",
        String::from_utf8_lossy(&kcp.stderr)
    );
    assert!(twice.status.success(), "{twice_stdout}");
    let first = twice_stdout.find("< reply mod=2 seq=1 obj=9 first");
    let second = twice_stdout.find("< reply mod=2 seq=1 obj=9 second");
    assert!(
        matches!((first, second), (Some(a), Some(b)) if a < b),
        "{twice_stdout}"
    );
    assert_eq!(status.code(), Some(0));
}

/// An interactive `janus connect` heartbeats: with a 2 s idle timeout on the edge it is still
/// logged in after three idle periods without typing anything. A second login of the same
/// player logs it out, and it says so and exits with status 1, over KCP too (which has no
/// close of its own).
#[test]
fn connect_heartbeats_past_the_idle_timeout_and_names_its_logout() {
    let standalone = Standalone::start("heartbeat", "[edge.session]\nidle_timeout_secs = 2\n");
    let idle = Duration::from_secs(2);
    for (uid, transport, port) in [
        ("21", "tcp", standalone.tcp_port),
        ("22", "kcp", standalone.kcp_port),
    ] {
        let port = port.to_string();
        let mut first = standalone
            .connect(&[
                "--uid",
                uid,
                "--transport",
                transport,
                "--port",
                &port,
                "--heartbeat-secs",
                "0.5",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(3 * idle);
        assert!(
            first.try_wait().unwrap().is_none(),
            "{transport}: connect ended within three idle periods: {:?}",
            first.wait_with_output().unwrap()
        );
        let second = standalone
            .connect(&[
                "--uid",
                uid,
                "--port",
                &standalone.tcp_port.to_string(),
                "--send",
                "me again",
            ])
            .output()
            .unwrap();
        assert!(second.status.success(), "{second:?}");
        // Its stdin stays open: only the logout can end it.
        let output = first.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(1),
            "{transport}: {stdout}\n{stderr}"
        );
        assert!(
            stderr.contains("logged out: ConflictingLogin"),
            "{transport}: {stdout}\n{stderr}"
        );
        assert!(
            !stdout.contains("mod=1"),
            "{transport}: system packets raw: {stdout}"
        );
    }
    assert_eq!(standalone.stop().code(), Some(0));
}

#[test]
fn push_over_nats_fails_naming_an_unreachable_server() {
    let output = Command::new(env!("CARGO_BIN_EXE_janus"))
        .args([
            "push",
            "--uid",
            "1",
            "--text",
            "hi",
            "--nats",
            "nats://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "stdout: {stdout}");
    assert!(!stdout.contains("published"), "stdout: {stdout}");
    assert!(
        stderr.contains("cannot connect to NATS at nats://127.0.0.1:1"),
        "stderr: {stderr}"
    );
}
