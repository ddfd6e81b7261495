//! The System module (mod 1): its sequence ids and the packets the gateway itself sends.
//!
//! Handshake, heartbeat, unexpected-error and logout are answered or pushed by the gateway, not
//! by a game service. Pushes carry index 0; replies echo the request's index.

use janus_proto::message::{
    CsHeartbeat, ScHeartbeat, ScReconnect, ScServerLogout, ScServerUnexpectedErr,
};
use janus_proto::packet::Packet;
use prost::Message;

/// Module id of System messages.
pub const MODULE: i32 = 1;
/// `CSHandshake` / `SCHandshake`.
pub const SEQ_HANDSHAKE: i32 = 1;
/// `CSHeartbeat` / `SCHeartbeat`.
pub const SEQ_HEARTBEAT: i32 = 2;
/// `SCServerUnexpectedErr` push.
pub const SEQ_UNEXPECTED_ERR: i32 = 3;
/// `SCServerLogout` push.
pub const SEQ_LOGOUT: i32 = 4;
/// `CSResumeAck`: the client acknowledges server-to-client packets (PROTOCOL.md §13).
pub const SEQ_RESUME_ACK: i32 = 5;
/// `CSBye`: the client is leaving; its session is not kept for a resume.
pub const SEQ_BYE: i32 = 6;
/// `SCReconnect`: the edge asks a resumable client to resume elsewhere (PROTOCOL.md §13.6).
pub const SEQ_RECONNECT: i32 = 7;

/// A System packet with the given sequence id, index and body.
pub fn packet(seq: i32, index: i32, data: Vec<u8>) -> Packet {
    Packet {
        data,
        r#mod: MODULE,
        seq,
        index,
        ..Default::default()
    }
}

/// A client's heartbeat (`CSHeartbeat`) at unix time `client_time`; the client's session
/// gives it its index.
pub fn heartbeat(client_time: i64) -> Packet {
    packet(
        SEQ_HEARTBEAT,
        0,
        CsHeartbeat { client_time }.encode_to_vec(),
    )
}

/// Whether `packet` is a heartbeat (request or reply).
pub fn is_heartbeat(packet: &Packet) -> bool {
    packet.r#mod == MODULE && packet.seq == SEQ_HEARTBEAT
}

/// Whether a server packet counts for a resume (PROTOCOL.md §13.2): everything but heartbeat
/// replies and reconnect hints, which the edge answers or sends itself.
pub fn is_counted(packet: &Packet) -> bool {
    !(packet.r#mod == MODULE && matches!(packet.seq, SEQ_HEARTBEAT | SEQ_RECONNECT))
}

/// The push asking a resumable client to resume its session elsewhere, saying why.
pub fn reconnect(reason: impl Into<String>) -> Packet {
    packet(
        SEQ_RECONNECT,
        0,
        ScReconnect {
            reason: reason.into(),
        }
        .encode_to_vec(),
    )
}

/// The reply to a heartbeat that carried `index`, from player `uid` (its `obj`, as Roma
/// answers heartbeats in go-pantheon).
pub fn heartbeat_reply(index: i32, uid: i64, server_time: i64, code: i32) -> Packet {
    Packet {
        obj: uid,
        ..packet(
            SEQ_HEARTBEAT,
            index,
            ScHeartbeat { server_time, code }.encode_to_vec(),
        )
    }
}

/// The push telling a client its request (`module`, `seq`) failed in the gateway.
pub fn unexpected_error(module: i32, seq: i32, msg: impl Into<String>) -> Packet {
    packet(
        SEQ_UNEXPECTED_ERR,
        0,
        ScServerUnexpectedErr {
            r#mod: module,
            seq,
            msg: msg.into(),
        }
        .encode_to_vec(),
    )
}

/// The push telling a client it is being logged out, with an `SCServerLogout` code.
pub fn logout(code: i32) -> Packet {
    packet(SEQ_LOGOUT, 0, ScServerLogout { code }.encode_to_vec())
}
