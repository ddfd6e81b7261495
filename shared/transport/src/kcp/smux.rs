//! An xtaci/smux session as a sans-IO state machine: the frame layout, stream ids, version 2's
//! per-stream windows and the keepalive, byte for byte as smux 1.5 writes them. Bytes and time
//! in; frames to send, stream events and the next deadline out. No tokio here.
//!
//! A frame is `ver: u8`, `cmd: u8`, `length: u16 LE`, `sid: u32 LE`, then `length` bytes for
//! PSH. Commands: SYN 0 (open), FIN 1 (no more data from the sender), PSH 2 (data), NOP 3
//! (keepalive), and in version 2 UPD 4, whose 8 bytes are `consumed: u32 LE` (bytes read so far
//! on that stream) and `window: u32 LE` (the reader's buffer). A writer keeps
//! `written - consumed` below the window, starting from 256 KiB. As in smux, SYN, FIN and NOP
//! carry no payload whatever their length field says, UPD always carries 8 bytes, and frames for
//! a stream that is not open are dropped. A client opens odd stream ids from 3 on, a server
//! even ones. Every `keepalive` a NOP is sent; a session that receives nothing for
//! `keepalive_timeout` is dead (smux checks at ticks of the timeout, so it notices between one
//! and two timeouts; this one at one).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// ver + cmd + length + sid.
pub const HEADER_LEN: usize = 8;
/// The payload of an UPD frame.
const UPD_LEN: usize = 8;
/// What a writer may send before the reader's first window update (smux's slow-start guess).
pub const INITIAL_PEER_WINDOW: u32 = 262_144;

const SYN: u8 = 0;
const FIN: u8 = 1;
const PSH: u8 = 2;
const NOP: u8 = 3;
const UPD: u8 = 4;

/// smux settings; both ends must agree on the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Protocol version, 1 or 2 (go-pantheon: 2).
    pub version: u8,
    /// Largest PSH payload this end sends (go-pantheon: 4096).
    pub max_frame: usize,
    /// How often a NOP is sent (go-pantheon: 10 s).
    pub keepalive: Duration,
    /// Silence after which the session is dead (go-pantheon: 30 s).
    pub keepalive_timeout: Duration,
    /// The window this end advertises per stream, in bytes (smux's default: 65536).
    pub max_stream_buffer: u32,
}

/// Which end of the session this is: it decides the stream ids this end opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd stream ids.
    Client,
    /// Opens even stream ids.
    Server,
}

/// What the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer opened stream `sid`.
    Opened(u32),
    /// Data for stream `sid`.
    Data(u32, Bytes),
    /// The peer will send no more on stream `sid`.
    Finished(u32),
}

#[derive(Debug, Default)]
struct Stream {
    written: u32,
    peer_consumed: u32,
    peer_window: u32,
    read: u32,
    unreported: u32,
}

/// One smux session.
#[derive(Debug)]
pub struct Session {
    config: Config,
    next_sid: u32,
    streams: HashMap<u32, Stream>,
    input: BytesMut,
    output: BytesMut,
    events: VecDeque<Event>,
    last_input: Instant,
    next_ping: Instant,
}

impl Session {
    /// A session started at `now`.
    pub fn new(config: Config, role: Role, now: Instant) -> Self {
        Self {
            config,
            next_sid: match role {
                Role::Client => 1,
                Role::Server => 0,
            },
            streams: HashMap::new(),
            input: BytesMut::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            last_input: now,
            next_ping: now + config.keepalive,
        }
    }

    fn frame(&mut self, cmd: u8, sid: u32, payload: &[u8]) {
        self.output.reserve(HEADER_LEN + payload.len());
        self.output.put_u8(self.config.version);
        self.output.put_u8(cmd);
        self.output.put_u16_le(payload.len() as u16);
        self.output.put_u32_le(sid);
        self.output.put_slice(payload);
    }

    /// Feeds bytes the peer sent (any split) at `now`. An error means the session is broken
    /// and must be dropped.
    pub fn handle_input(&mut self, bytes: &[u8], now: Instant) -> Result<()> {
        self.input.extend_from_slice(bytes);
        while self.input.len() >= HEADER_LEN {
            let header = &self.input[..HEADER_LEN];
            if header[0] != self.config.version {
                return Err(Error::Smux("frame of another protocol version"));
            }
            let cmd = header[1];
            let length = u16::from_le_bytes([header[2], header[3]]) as usize;
            let sid = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let payload = match cmd {
                SYN | FIN | NOP => 0,
                PSH => length,
                UPD if self.config.version >= 2 => UPD_LEN,
                _ => return Err(Error::Smux("unknown command")),
            };
            if self.input.len() < HEADER_LEN + payload {
                break;
            }
            self.last_input = now;
            self.input.advance(HEADER_LEN);
            let mut payload = self.input.split_to(payload);
            match cmd {
                SYN => {
                    if let std::collections::hash_map::Entry::Vacant(e) = self.streams.entry(sid) {
                        e.insert(Stream {
                            peer_window: INITIAL_PEER_WINDOW,
                            ..Stream::default()
                        });
                        self.events.push_back(Event::Opened(sid));
                    }
                }
                FIN if self.streams.contains_key(&sid) => {
                    self.events.push_back(Event::Finished(sid));
                }
                PSH if !payload.is_empty() && self.streams.contains_key(&sid) => {
                    self.events.push_back(Event::Data(sid, payload.freeze()));
                }
                UPD => {
                    if let Some(stream) = self.streams.get_mut(&sid) {
                        stream.peer_consumed = payload.get_u32_le();
                        stream.peer_window = payload.get_u32_le();
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The next thing the peer did, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Opens a stream (SYN) and returns its id.
    pub fn open(&mut self) -> u32 {
        self.next_sid = self.next_sid.wrapping_add(2);
        let sid = self.next_sid;
        self.streams.insert(
            sid,
            Stream {
                peer_window: INITIAL_PEER_WINDOW,
                ..Stream::default()
            },
        );
        self.frame(SYN, sid, &[]);
        sid
    }

    /// Streams open on this end.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// How many bytes stream `sid` may send now: the peer's window less what is in flight
    /// (unbounded in version 1; 0 for a stream that is not open, or whose peer acknowledged
    /// more than was sent).
    pub fn window(&self, sid: u32) -> usize {
        let Some(stream) = self.streams.get(&sid) else {
            return 0;
        };
        if self.config.version < 2 {
            return usize::MAX;
        }
        let inflight = stream.written.wrapping_sub(stream.peer_consumed) as i32;
        if inflight < 0 {
            return 0;
        }
        (stream.peer_window as i64 - inflight as i64).max(0) as usize
    }

    /// Sends as much of `data` on stream `sid` as its window allows, in PSH frames of at most
    /// `max_frame` bytes; returns how much it took.
    pub fn send(&mut self, sid: u32, data: &[u8]) -> usize {
        let n = data.len().min(self.window(sid));
        for chunk in data[..n].chunks(self.config.max_frame.max(1)) {
            self.frame(PSH, sid, chunk);
        }
        if let Some(stream) = self.streams.get_mut(&sid) {
            stream.written = stream.written.wrapping_add(n as u32);
        }
        n
    }

    /// Records that the application read `n` more bytes of stream `sid`. In version 2 this
    /// tells the peer (UPD) after the first read and then whenever half a window was read
    /// since the last report, as smux does.
    pub fn consumed(&mut self, sid: u32, n: usize) {
        if self.config.version < 2 || n == 0 {
            return;
        }
        let half = self.config.max_stream_buffer / 2;
        let Some(stream) = self.streams.get_mut(&sid) else {
            return;
        };
        let first = stream.read == 0;
        stream.read = stream.read.wrapping_add(n as u32);
        stream.unreported = stream.unreported.wrapping_add(n as u32);
        if stream.unreported >= half || first {
            stream.unreported = 0;
            let mut upd = [0; UPD_LEN];
            upd[..4].copy_from_slice(&stream.read.to_le_bytes());
            upd[4..].copy_from_slice(&self.config.max_stream_buffer.to_le_bytes());
            self.frame(UPD, sid, &upd);
        }
    }

    /// Closes stream `sid` on this end (FIN); later frames for it are dropped.
    pub fn close(&mut self, sid: u32) {
        if self.streams.remove(&sid).is_some() {
            self.frame(FIN, sid, &[]);
        }
    }

    /// When [`Session::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_ping
            .min(self.last_input + self.config.keepalive_timeout)
    }

    /// Runs the keepalive at `now`: a NOP when one is due; an error when the peer has been
    /// silent for the keepalive timeout (the session is dead).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<()> {
        if now >= self.last_input + self.config.keepalive_timeout {
            return Err(Error::Smux("keepalive timeout"));
        }
        if now >= self.next_ping {
            self.frame(NOP, 0, &[]);
            while self.next_ping <= now {
                self.next_ping += self.config.keepalive;
            }
        }
        Ok(())
    }

    /// Frames waiting to be sent, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| self.output.split().freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            version: 2,
            max_frame: 4096,
            keepalive: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(30),
            max_stream_buffer: 65536,
        }
    }

    /// What a real smux v2 client ("c") and server ("s") wrote, in order: open, "hello",
    /// window update, "world", window update, close; see `testdata/kcp/gen_vectors.go`.
    fn go_frames() -> Vec<(char, Vec<u8>)> {
        include_str!("../../testdata/kcp/smux_v2.hex")
            .lines()
            .map(|line| {
                let (who, bytes) = line.split_once(' ').expect("who and bytes");
                (who.chars().next().unwrap(), hex::decode(bytes).unwrap())
            })
            .collect()
    }

    fn transmit(session: &mut Session) -> Vec<u8> {
        session
            .poll_transmit()
            .map(|b| b.to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn a_server_answers_a_go_client_byte_for_byte() {
        let go = go_frames();
        let now = Instant::now();
        let mut server = Session::new(config(), Role::Server, now);
        server.handle_input(&go[0].1, now).unwrap();
        // The PSH arrives split.
        server.handle_input(&go[1].1[..5], now).unwrap();
        assert_eq!(server.poll_event(), Some(Event::Opened(3)));
        assert_eq!(server.poll_event(), None);
        server.handle_input(&go[1].1[5..], now).unwrap();
        assert_eq!(
            server.poll_event(),
            Some(Event::Data(3, Bytes::from_static(b"hello")))
        );
        server.consumed(3, 5);
        assert_eq!(transmit(&mut server), go[2].1, "window update");
        assert_eq!(server.send(3, b"world"), 5);
        assert_eq!(transmit(&mut server), go[3].1);
        server.handle_input(&go[4].1, now).unwrap();
        server.handle_input(&go[5].1, now).unwrap();
        assert_eq!(server.poll_event(), Some(Event::Finished(3)));
        assert_eq!(server.window(3), 65536, "the client's window update counts");
    }

    #[test]
    fn a_client_writes_what_a_go_client_writes() {
        let go = go_frames();
        let now = Instant::now();
        let mut client = Session::new(config(), Role::Client, now);
        let sid = client.open();
        assert_eq!(sid, 3);
        assert_eq!(transmit(&mut client), go[0].1);
        client.send(sid, b"hello");
        assert_eq!(transmit(&mut client), go[1].1);
        client
            .handle_input(&[go[2].1.clone(), go[3].1.clone()].concat(), now)
            .unwrap();
        assert_eq!(
            client.poll_event(),
            Some(Event::Data(3, Bytes::from_static(b"world")))
        );
        client.consumed(sid, 5);
        assert_eq!(transmit(&mut client), go[4].1);
        client.close(sid);
        assert_eq!(transmit(&mut client), go[5].1);
        assert_eq!(client.streams(), 0);
    }

    #[test]
    fn writes_stop_at_the_peers_window_and_resume_on_update() {
        let now = Instant::now();
        let mut client = Session::new(config(), Role::Client, now);
        let sid = client.open();
        let _ = transmit(&mut client);
        let data = vec![7u8; 300_000];
        assert_eq!(client.send(sid, &data), INITIAL_PEER_WINDOW as usize);
        assert_eq!(client.window(sid), 0);
        let frames = transmit(&mut client);
        assert_eq!(
            frames.len(),
            64 * (HEADER_LEN + 4096),
            "4096-byte PSH frames"
        );
        assert_eq!(&frames[..4], &[2, PSH, 0x00, 0x10]);
        // The reader consumed everything and advertises 64 KiB.
        let mut upd = vec![2, UPD, 8, 0];
        upd.extend_from_slice(&sid.to_le_bytes());
        upd.extend_from_slice(&INITIAL_PEER_WINDOW.to_le_bytes());
        upd.extend_from_slice(&65536u32.to_le_bytes());
        client.handle_input(&upd, now).unwrap();
        assert_eq!(client.window(sid), 65536);
        assert_eq!(client.send(sid, &data), 65536);
    }

    #[test]
    fn window_updates_go_out_after_the_first_read_and_each_half_window() {
        let now = Instant::now();
        let mut server = Session::new(config(), Role::Server, now);
        server
            .handle_input(&[2, SYN, 0, 0, 5, 0, 0, 0], now)
            .unwrap();
        server.consumed(5, 100);
        assert_eq!(
            transmit(&mut server).len(),
            HEADER_LEN + UPD_LEN,
            "first read"
        );
        server.consumed(5, 30_000);
        assert!(transmit(&mut server).is_empty());
        server.consumed(5, 2_768);
        let upd = transmit(&mut server);
        assert_eq!(&upd[8..12], &32_868u32.to_le_bytes(), "consumed so far");
        assert_eq!(&upd[12..16], &65536u32.to_le_bytes(), "the window");
    }

    #[test]
    fn the_keepalive_pings_and_a_silent_peer_times_out() {
        let start = Instant::now();
        let mut session = Session::new(config(), Role::Server, start);
        assert_eq!(session.poll_timeout(), start + Duration::from_secs(10));
        session
            .handle_timeout(start + Duration::from_secs(10))
            .unwrap();
        assert_eq!(transmit(&mut session), vec![2, NOP, 0, 0, 0, 0, 0, 0]);
        // Input keeps it alive.
        session
            .handle_input(&[2, NOP, 0, 0, 0, 0, 0, 0], start + Duration::from_secs(25))
            .unwrap();
        session
            .handle_timeout(start + Duration::from_secs(40))
            .unwrap();
        assert!(
            session
                .handle_timeout(start + Duration::from_secs(55))
                .is_err()
        );
    }

    #[test]
    fn broken_frames_break_the_session() {
        let now = Instant::now();
        let mut v2 = Session::new(config(), Role::Server, now);
        assert!(
            v2.handle_input(&[1, SYN, 0, 0, 3, 0, 0, 0], now).is_err(),
            "version 1"
        );
        let mut v2 = Session::new(config(), Role::Server, now);
        assert!(
            v2.handle_input(&[2, 5, 0, 0, 3, 0, 0, 0], now).is_err(),
            "command 5"
        );
        let mut v1 = Session::new(
            Config {
                version: 1,
                ..config()
            },
            Role::Server,
            now,
        );
        assert!(
            v1.handle_input(&[1, UPD, 8, 0, 3, 0, 0, 0], now).is_err(),
            "UPD in v1"
        );
        // A go-pantheon frame (a 4-byte big-endian length) is no smux frame.
        let mut v2 = Session::new(config(), Role::Server, now);
        assert!(v2.handle_input(&[0, 0, 0, 12, 1, 2, 3, 4], now).is_err());
    }

    #[test]
    fn frames_for_unknown_streams_are_dropped() {
        let now = Instant::now();
        let mut server = Session::new(config(), Role::Server, now);
        server
            .handle_input(
                &[
                    2, PSH, 2, 0, 9, 0, 0, 0, b'h', b'i', 2, FIN, 0, 0, 9, 0, 0, 0,
                ],
                now,
            )
            .unwrap();
        assert_eq!(server.poll_event(), None);
        // Closing a stream drops what follows for it.
        server
            .handle_input(&[2, SYN, 0, 0, 9, 0, 0, 0], now)
            .unwrap();
        assert_eq!(server.poll_event(), Some(Event::Opened(9)));
        server.close(9);
        assert_eq!(transmit(&mut server), vec![2, FIN, 0, 0, 9, 0, 0, 0]);
        server
            .handle_input(&[2, PSH, 1, 0, 9, 0, 0, 0, b'x'], now)
            .unwrap();
        assert_eq!(server.poll_event(), None);
    }

    proptest::proptest! {
        #[test]
        fn frames_split_anywhere_give_the_same_events(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 1..5000), 1..6),
            cut in proptest::collection::vec(1usize..3000, 0..20),
        ) {
            let now = Instant::now();
            let mut client = Session::new(config(), Role::Client, now);
            let sid = client.open();
            for chunk in &chunks {
                client.send(sid, chunk);
            }
            client.close(sid);
            let wire = transmit(&mut client);
            let mut server = Session::new(config(), Role::Server, now);
            let mut rest = &wire[..];
            for n in cut {
                let n = n.min(rest.len());
                server.handle_input(&rest[..n], now).unwrap();
                rest = &rest[n..];
            }
            server.handle_input(rest, now).unwrap();
            proptest::prop_assert_eq!(server.poll_event(), Some(Event::Opened(sid)));
            let mut data = Vec::new();
            let mut finished = false;
            while let Some(event) = server.poll_event() {
                match event {
                    Event::Data(s, bytes) => {
                        proptest::prop_assert_eq!(s, sid);
                        proptest::prop_assert!(bytes.len() <= 4096);
                        data.extend_from_slice(&bytes);
                    }
                    Event::Finished(s) => finished = s == sid,
                    Event::Opened(_) => proptest::prop_assert!(false, "one stream"),
                }
            }
            proptest::prop_assert!(finished);
            proptest::prop_assert_eq!(data, chunks.concat());
        }

        #[test]
        fn arbitrary_input_is_an_error_or_events_never_a_panic(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        ) {
            let now = Instant::now();
            let mut server = Session::new(config(), Role::Server, now);
            let _ = server.handle_input(&bytes, now);
            while server.poll_event().is_some() {}
        }
    }
}
