//! `janus connect`: a player on the command line. Logs in over any transport with a token it
//! mints from the token key (or one given), then either sends one message and prints the answer,
//! or reads lines: plain text is echoed by the demo game, `/join R`, `/leave R` and `/say R text`
//! use its chat rooms, `/quit` leaves. Replies and pushes are printed as they arrive, System
//! packets as what they say; a heartbeat keeps the session past the edge's idle timeout, and a
//! logout or a close ends the command with its reason (exit status 1). A v2 session is resumable:
//! after a lost connection or the edge's reconnect hint (a deploy) it resumes by itself, at the
//! same edge or one of `--also`, and says so.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use janus_client::{Client, ClientConfig, Endpoint, Reconnect, unix_now};
use janus_demo_game as demo;
use janus_proto::message::sc_server_logout::Code as LogoutCode;
use janus_proto::message::{ScServerLogout, ScServerUnexpectedErr};
use janus_proto::packet::Packet;
use janus_protocol::handshake::{ClientHandshakeConfig, Mode};
use janus_protocol::keys::VerifyingKey;
use janus_protocol::session::SessionConfig;
use janus_protocol::system;
use janus_transport::kcp::KcpSettings;
use prost::Message;
use tokio::io::AsyncBufReadExt;

use crate::keys::{self, TokenArgs};

/// Which transport to connect over.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Transport {
    /// TCP (default port 17001).
    Tcp,
    /// WebSocket (default port 17002, path /ws).
    Ws,
    /// KCP over UDP (default port 17003).
    Kcp,
    /// QUIC over UDP (default port 17004).
    Quic,
}

/// `janus connect`.
#[derive(Debug, Args)]
pub(crate) struct ConnectArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "tcp")]
    transport: Transport,
    /// Edge host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Edge port (default: the transport's default port).
    #[arg(long)]
    port: Option<u16>,
    /// The edge's public key: SPKI PEM (`server.pub.pem`) or its X.509 certificate
    /// (`server.crt`); a signing key (PKCS#8 PEM) is read too, but clients should never hold it.
    #[arg(long, default_value = ".janus/server.pub.pem")]
    server_key: PathBuf,
    /// A token to log in with; by default one is minted with --token-key-file.
    #[arg(long)]
    token: Option<String>,
    #[command(flatten)]
    mint: TokenArgs,
    /// Speak the go-pantheon v1 (legacy) handshake.
    #[arg(long)]
    legacy: bool,
    /// The version of the signing key --server-key holds (`CSHandshake.cert_version`): during
    /// a rollover the edge answers with that key (PROTOCOL.md §3.4); 0 takes the current one.
    #[arg(long, default_value_t = 0)]
    cert_version: i32,
    /// Send this message and print the answer (repeat to send several, one after the other),
    /// then exit.
    #[arg(long)]
    send: Vec<String>,
    /// Seconds between heartbeats; keep it below the edge's `session.idle_timeout_secs`.
    #[arg(long, default_value_t = 10.0, value_parser = heartbeat_secs)]
    heartbeat_secs: f64,
    /// KCP: FEC data shards per group (0 with --kcp-fec-parity-shards 0: no FEC); the edge
    /// must agree.
    #[arg(long, default_value_t = KcpSettings::default().fec_data_shards)]
    kcp_fec_data_shards: usize,
    /// KCP: FEC parity shards per group.
    #[arg(long, default_value_t = KcpSettings::default().fec_parity_shards)]
    kcp_fec_parity_shards: usize,
    /// Ask for a resume ticket (v2) and resume by itself after a lost connection or the edge's
    /// reconnect hint (PROTOCOL.md §13.6); `--resumable false` turns it off.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    resumable: bool,
    /// Other edges (host:port, same transport) to resume at, tried in turn after this one.
    #[arg(long)]
    also: Vec<String>,
    /// KCP: run the session on an smux v2 stream (`--kcp-smux false`: straight on the
    /// conversation); the edge must agree.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    kcp_smux: bool,
}

fn heartbeat_secs(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(secs),
        _ => Err("a positive number of seconds".into()),
    }
}

fn server_key(path: &PathBuf) -> anyhow::Result<VerifyingKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.contains("PUBLIC KEY") {
        Ok(VerifyingKey::from_public_key_pem(&text)?)
    } else if text.contains("CERTIFICATE") {
        Ok(VerifyingKey::from_certificate_pem(&text)?)
    } else {
        Ok(keys::read_signing_key(path)?.verifying_key())
    }
}

/// The edge `--host`/`--port` name.
fn endpoint(args: &ConnectArgs) -> Endpoint {
    let default_port = match args.transport {
        Transport::Tcp => 17001,
        Transport::Ws => 17002,
        Transport::Kcp => 17003,
        Transport::Quic => 17004,
    };
    endpoint_at(
        args,
        format!("{}:{}", args.host, args.port.unwrap_or(default_port)),
    )
}

/// The edge at `addr` over `--transport`.
fn endpoint_at(args: &ConnectArgs, addr: String) -> Endpoint {
    match args.transport {
        Transport::Tcp => Endpoint::Tcp(addr),
        Transport::Ws => Endpoint::WebSocket(format!("ws://{addr}/ws")),
        Transport::Kcp => Endpoint::KcpWith {
            addr,
            settings: KcpSettings {
                fec_data_shards: args.kcp_fec_data_shards,
                fec_parity_shards: args.kcp_fec_parity_shards,
                smux: args.kcp_smux,
                ..KcpSettings::default()
            },
        },
        Transport::Quic => Endpoint::Quic {
            addr,
            server_name: "localhost".into(),
            ca_pem: None,
        },
    }
}

/// What a typed line asks for.
fn parse_line(line: &str) -> anyhow::Result<Option<Packet>> {
    let mut words = line.split_whitespace();
    let room = |w: Option<&str>| -> anyhow::Result<i64> {
        w.context("which room? e.g. /join 7")?
            .parse()
            .context("a room is a number")
    };
    let packet = match words.next() {
        None => return Ok(None),
        Some("/join") => Packet {
            r#mod: 6,
            seq: demo::JOIN,
            obj: room(words.next())?,
            ..Packet::default()
        },
        Some("/leave") => Packet {
            r#mod: 6,
            seq: demo::LEAVE,
            obj: room(words.next())?,
            ..Packet::default()
        },
        Some("/say") => {
            let obj = room(words.next())?;
            let text: Vec<&str> = words.collect();
            Packet {
                r#mod: 6,
                seq: demo::SAY,
                obj,
                data: text.join(" ").into_bytes(),
                ..Packet::default()
            }
        }
        Some(word) if word.starts_with('/') => {
            bail!("unknown command {word}: /join R, /leave R, /say R text, /quit")
        }
        Some(_) => Packet {
            r#mod: 2,
            seq: 1,
            data: line.as_bytes().to_vec(),
            ..Packet::default()
        },
    };
    Ok(Some(packet))
}

/// What a System packet from the gateway means for the user.
#[derive(Debug, PartialEq)]
enum Notice {
    /// Nothing to say (a heartbeat reply).
    Quiet,
    /// A line to print.
    Say(String),
    /// The gateway refused a request of this module and sequence id, saying this.
    Refused {
        /// The request's module.
        module: i32,
        /// The request's sequence id.
        seq: i32,
        /// What to print.
        line: String,
    },
    /// The gateway logged this session out, for this reason.
    LoggedOut(String),
}

/// Reads a System packet (`mod` 1); `None` for every other packet.
fn system_notice(packet: &Packet) -> Option<Notice> {
    if packet.r#mod != system::MODULE {
        return None;
    }
    Some(match packet.seq {
        system::SEQ_HEARTBEAT => Notice::Quiet,
        system::SEQ_RECONNECT => Notice::Say("the edge asks this client to reconnect".into()),
        system::SEQ_LOGOUT => {
            let reason = match ScServerLogout::decode(&packet.data[..]) {
                Ok(logout) => match LogoutCode::try_from(logout.code) {
                    Ok(code) => code.as_str_name().to_owned(),
                    Err(_) => format!("code {}", logout.code),
                },
                Err(e) => format!("unreadable SCServerLogout ({e})"),
            };
            Notice::LoggedOut(reason)
        }
        system::SEQ_UNEXPECTED_ERR => match ScServerUnexpectedErr::decode(&packet.data[..]) {
            Ok(err) => Notice::Refused {
                module: err.r#mod,
                seq: err.seq,
                line: format!(
                    "error from the gateway: {} (request mod={} seq={})",
                    err.msg, err.r#mod, err.seq
                ),
            },
            Err(e) => Notice::Say(format!(
                "error from the gateway: unreadable SCServerUnexpectedErr ({e})"
            )),
        },
        seq => Notice::Say(format!(
            "system packet seq={seq} ({} bytes)",
            packet.data.len()
        )),
    })
}

fn show(packet: &Packet) {
    let kind = if packet.index == 0 { "push" } else { "reply" };
    println!(
        "< {kind} mod={} seq={} obj={} {}",
        packet.r#mod,
        packet.seq,
        packet.obj,
        String::from_utf8_lossy(&packet.data)
    );
}

/// Runs `janus connect`.
pub(crate) async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    let token = match &args.token {
        Some(token) => token.clone(),
        None => keys::mint(&args.mint)?,
    };
    let config = ClientConfig {
        handshake: ClientHandshakeConfig {
            server_key: server_key(&args.server_key)?,
            client_key: None,
            mode: if args.legacy { Mode::Legacy } else { Mode::V2 },
            server_id: 0,
            cert_version: args.cert_version,
            resumable: args.resumable && !args.legacy,
        },
        session: SessionConfig::default(),
        handshake_timeout: Duration::from_secs(10),
    };
    let endpoint = endpoint(&args);
    let mut client = Client::connect(&endpoint, &config, &token)
        .await
        .with_context(|| format!("cannot log in at {endpoint:?}"))?;
    println!(
        "logged in as player {} over {:?}",
        args.mint.uid, args.transport
    );
    if client.resume_ticket().is_some() {
        let mut endpoints = vec![endpoint.clone()];
        endpoints.extend(
            args.also
                .iter()
                .map(|addr| endpoint_at(&args, addr.clone())),
        );
        client.reconnect_with(Reconnect::to(endpoints));
    }
    let mut to_send = args
        .send
        .iter()
        .map(|text| parse_line(text)?.context("nothing to send"))
        .collect::<anyhow::Result<VecDeque<Packet>>>()?;
    let interactive = to_send.is_empty();
    // With --send: the request whose reply (index) is awaited before the next goes out, and
    // its module and sequence id, which an SCServerUnexpectedErr push names.
    let mut awaiting = None;
    if let Some(packet) = to_send.pop_front() {
        let (module, seq) = (packet.r#mod, packet.seq);
        awaiting = Some((client.send(packet).await?, module, seq));
    }
    let period = Duration::from_secs_f64(args.heartbeat_secs);
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line(), if interactive => {
                let Some(line) = line? else { break };
                if line.trim() == "/quit" {
                    break;
                }
                match parse_line(&line) {
                    Ok(Some(packet)) => { client.send(packet).await?; }
                    Ok(None) => {}
                    Err(e) => eprintln!("{e}"),
                }
            }
            _ = heartbeat.tick() => { client.send(system::heartbeat(unix_now())).await?; }
            packet = client.recv() => {
                let packet = packet.context("the gateway closed the session")?;
                for resumed in client.take_resumed() {
                    println!(
                        "resumed the session at {:?} ({}; {} failed attempts before)",
                        resumed.endpoint, resumed.cause, resumed.failed_attempts
                    );
                }
                if packet.index != 0 && awaiting.is_some_and(|(index, ..)| index == packet.index) {
                    show(&packet);
                    let Some(next) = to_send.pop_front() else { break };
                    let (module, seq) = (next.r#mod, next.seq);
                    awaiting = Some((client.send(next).await?, module, seq));
                    continue;
                }
                match system_notice(&packet) {
                    None => show(&packet),
                    Some(Notice::Quiet) => {}
                    Some(Notice::Say(line)) => println!("< {line}"),
                    Some(Notice::Refused { module, seq, line }) => {
                        // --send waits for no reply that will never come.
                        if awaiting.is_some_and(|(_, m, s)| (m, s) == (module, seq)) {
                            bail!("{line}");
                        }
                        println!("< {line}");
                    }
                    // The edge closes the session after a logout; over KCP nothing says so.
                    Some(Notice::LoggedOut(reason)) => bail!("logged out: {reason}"),
                }
            }
        }
    }
    client.close().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_packets_are_named() {
        let logout = system::logout(LogoutCode::ConflictingLogin as i32);
        assert_eq!(
            system_notice(&logout),
            Some(Notice::LoggedOut("ConflictingLogin".into()))
        );
        assert_eq!(
            system_notice(&system::logout(42)),
            Some(Notice::LoggedOut("code 42".into()))
        );
        let err = system::unexpected_error(6, 3, "no such room");
        assert_eq!(
            system_notice(&err),
            Some(Notice::Refused {
                module: 6,
                seq: 3,
                line: "error from the gateway: no such room (request mod=6 seq=3)".into()
            })
        );
        let reply = system::heartbeat_reply(5, 7, 0, 0);
        assert_eq!(system_notice(&reply), Some(Notice::Quiet));
        let game = Packet {
            r#mod: 2,
            ..Packet::default()
        };
        assert_eq!(system_notice(&game), None);
    }
}
