//! Protocol buffers of Janus, generated from `proto/` and checked in under `src/gen/` (the test
//! `generated_is_current` proves they match the sources; no `protoc` is needed to build).
//!
//! Owns the wire types only, no logic: the client envelope ([`packet`]), the System messages
//! ([`message`]) and the token claims ([`gate::intra::v1`]), all wire-compatible with
//! go-pantheon. Field numbers are fixed forever.

/// The client envelope `packet.Packet`.
#[allow(missing_docs, clippy::all)]
pub mod packet {
    include!("gen/packet.rs");
}

/// System module messages: handshake, heartbeat, unexpected error, logout.
#[allow(missing_docs, clippy::all)]
pub mod message {
    include!("gen/message.rs");
}

/// The gateway's internal APIs of go-pantheon.
pub mod gate {
    /// Intra-cluster messages.
    pub mod intra {
        /// Token claims issued by the auth service (Lares).
        #[allow(missing_docs, clippy::all)]
        pub mod v1 {
            include!("gen/gate.intra.v1.rs");
        }
    }
}
