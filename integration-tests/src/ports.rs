//! Loopback ports a test lets go of and binds again (a service restarted where its peers know
//! it). They come from below the kernel's ephemeral range: a port `bind(":0")` hands out is
//! one any outgoing connection — of this process or another on the machine — may take as its
//! source port while the test has let it go, and the rebind then fails with `AddrInUse`.

use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::time::Duration;

/// Where the ports come from: above the well-known and registered services most machines
/// run, below Linux's default ephemeral range (32768–60999).
const RANGE: std::ops::Range<u16> = 20_000..32_768;

/// A listener on a free loopback port that no outgoing connection takes in the meantime.
pub fn listener() -> TcpListener {
    let seed = RandomState::new().hash_one(std::process::id());
    let span = u64::from(RANGE.end - RANGE.start);
    for attempt in 0..span {
        let port = RANGE.start + ((seed + attempt) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener;
        }
    }
    panic!("no free loopback port in {RANGE:?}");
}

/// [`listener`] for tokio (inside a runtime).
pub fn tokio_listener() -> tokio::net::TcpListener {
    let listener = listener();
    listener.set_nonblocking(true).unwrap();
    tokio::net::TcpListener::from_std(listener).unwrap()
}

/// A free loopback address of [`listener`], given up: nothing listens there until the test
/// binds it again with [`rebind`].
pub fn address() -> String {
    listener().local_addr().unwrap().to_string()
}

/// Binds `address` again. A listener the test just dropped may close a moment later (a
/// runtime shut down in the background), so `AddrInUse` is retried for a few seconds.
pub async fn rebind(address: &str) -> tokio::net::TcpListener {
    let mut left = 50;
    loop {
        match tokio::net::TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && left > 0 => {
                left -= 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("binding {address} again: {e}"),
        }
    }
}
