//! Protocol buffers of Janus, generated from `proto/` and checked in under `src/gen/` (the test
//! `generated_is_current` proves they match the sources; no `protoc` is needed to build).
//!
//! Owns the wire types only, no logic: the client envelope ([`packet`]), the System messages
//! ([`message`]), the token claims ([`gate::intra::v1`]) — all wire-compatible with go-pantheon —
//! Roma's tunnels ([`player::intra::v1`], [`room::intra::v1`]), the push APIs
//! ([`gate::service::push::v1`], [`broadcaster::service::push::v1`]) and Janus's own edge↔broker
//! link ([`janus::internal::v1`]). Field numbers are fixed forever. The services and their messages
//! come with the feature `grpc`; without it only the client's wire (envelope, System messages,
//! token claims) is built, and nothing of tonic.

/// The client envelope `packet.Packet`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod packet {
    include!("gen/packet.rs");
}

/// System module messages: handshake, heartbeat, unexpected error, logout.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod message {
    include!("gen/message.rs");
}

/// The gateway's APIs as go-pantheon names them.
pub mod gate {
    /// Intra-cluster messages.
    pub mod intra {
        /// Token claims issued by the auth service (Lares).
        #[allow(missing_docs, unreachable_pub, clippy::all)]
        pub mod v1 {
            include!("gen/gate.intra.v1.rs");
        }
    }
    /// Services the gateway offers.
    #[cfg(feature = "grpc")]
    pub mod service {
        /// Per-session push.
        pub mod push {
            /// `gate.service.push.v1.PushService`.
            #[allow(missing_docs, unreachable_pub, clippy::all)]
            pub mod v1 {
                include!("gen/gate.service.push.v1.rs");
            }
        }
    }
}

/// Roma's player service.
#[cfg(feature = "grpc")]
pub mod player {
    /// Intra-cluster API.
    pub mod intra {
        /// `player.intra.v1.TunnelService`.
        #[allow(missing_docs, unreachable_pub, clippy::all)]
        pub mod v1 {
            include!("gen/player.intra.v1.rs");
        }
    }
}

/// Roma's room service.
#[cfg(feature = "grpc")]
pub mod room {
    /// Intra-cluster API.
    pub mod intra {
        /// `room.intra.v1.TunnelService`.
        #[allow(missing_docs, unreachable_pub, clippy::all)]
        pub mod v1 {
            include!("gen/room.intra.v1.rs");
        }
    }
}

/// The broadcaster's push API.
#[cfg(feature = "grpc")]
pub mod broadcaster {
    /// Services.
    pub mod service {
        /// Pushes.
        pub mod push {
            /// `broadcaster.service.push.v1.PushService` and the bus message `PushMessage`.
            #[allow(missing_docs, unreachable_pub, clippy::all)]
            pub mod v1 {
                include!("gen/broadcaster.service.push.v1.rs");
            }
        }
    }
}

/// Janus's own APIs.
#[cfg(feature = "grpc")]
pub mod janus {
    /// Between Janus tiers.
    pub mod internal {
        /// The largest message either end of the link takes: a resume's grant or a
        /// re-attach carries a session's whole unacknowledged tail (up to `retain_packets`
        /// packets of up to `max_frame` bytes: 16 MiB at the defaults), beyond gRPC's 4 MiB.
        pub const LINK_MAX_MESSAGE: usize = 64 << 20;

        /// The edge↔broker link (`janus.internal.v1.EdgeLink`).
        #[allow(missing_docs, unreachable_pub, clippy::all)]
        pub mod v1 {
            include!("gen/janus.internal.v1.rs");
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use crate::message::CsHandshake;
    use crate::packet::Packet;

    #[test]
    fn packet_round_trips_with_every_field() {
        let packet = Packet {
            data: b"d".to_vec(),
            data_version: 2,
            obj: -3,
            r#mod: 4,
            seq: 5,
            ver: 6,
            index: 7,
            conn_id: 8,
            frag_id: 9,
            frag_count: 10,
            frag_index: 11,
            compress: true,
        };
        assert_eq!(Packet::decode(&packet.encode_to_vec()[..]).unwrap(), packet);
    }

    #[test]
    fn field_numbers_are_pinned_on_the_wire() {
        // Field 20, varint: tag (20 << 3 | 0) = 160 = 0xA0 0x01.
        let compress = Packet {
            compress: true,
            ..Default::default()
        };
        assert_eq!(compress.encode_to_vec(), [0xA0, 0x01, 0x01]);
        // mod = field 4, index = field 7.
        let ids = Packet {
            r#mod: 1,
            index: 2,
            ..Default::default()
        };
        assert_eq!(ids.encode_to_vec(), [0x20, 0x01, 0x38, 0x02]);
        // Janus's CSHandshake.version is field 7.
        let hello = CsHandshake {
            version: 2,
            ..Default::default()
        };
        assert_eq!(hello.encode_to_vec(), [0x38, 0x02]);
    }
}
