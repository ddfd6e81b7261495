//! Arbitrary datagrams into the KCP edge's path: the segment check, a conversation with FEC
//! (decoder and KCP core), and the smux session fed whatever KCP delivers. Every outcome is a
//! refusal, dropped input or bounded output, never a panic.
#![no_main]

use std::time::Instant;

use bytes::BytesMut;
use janus_transport::kcp::KcpSettings;
use janus_transport::kcp::conv::{Conversation, Datagram, classify};
use janus_transport::kcp::smux::{Role, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let settings = KcpSettings::default();
    let now = Instant::now();
    let mut conversation = Conversation::new(1, &settings, true, now).unwrap();
    let mut smux = Session::new(settings.smux_config(), Role::Server, now);
    // The input is a sequence of datagrams, each prefixed with its length (one byte).
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let (datagram, tail) = tail.split_at((len as usize).min(tail.len()));
        rest = tail;
        if let Ok(Datagram::Segments { .. } | Datagram::Parity) = classify(datagram, true) {
            let _ = conversation.handle_datagram(datagram, now);
        }
        let mut bytes = BytesMut::new();
        conversation.recv(&mut bytes, 1 << 20);
        if smux.handle_input(&bytes, now).is_err() {
            return;
        }
        while smux.poll_event().is_some() {}
        while conversation.poll_transmit().is_some() {}
    }
});
