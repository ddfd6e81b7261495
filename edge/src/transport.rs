//! Frames over the transports: a byte stream (TCP, and later KCP and QUIC streams) carries
//! length-prefixed frames back to back; a WebSocket carries one whole frame, prefix included,
//! per binary message. Nothing above this module knows which transport it runs on.

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use janus_proto::janus::internal::v1::Transport;
use janus_shared::frame;
use janus_shared::transport::ByteStream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::error::Close;

/// A client connection carrying frames.
pub(crate) enum FrameIo {
    /// Frames back to back on a byte stream.
    Stream(Box<dyn ByteStream>),
    /// One frame per binary WebSocket message.
    WebSocket(Box<WebSocketStream<Box<dyn ByteStream>>>),
}

impl std::fmt::Debug for FrameIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameIo::Stream(_) => "FrameIo::Stream",
            FrameIo::WebSocket(_) => "FrameIo::WebSocket",
        })
    }
}

/// What one read produced.
#[derive(Debug)]
pub(crate) enum Read {
    /// `n` bytes were appended to the input buffer (byte streams).
    Bytes(usize),
    /// One whole frame's payload (WebSocket), `n` bytes on the wire.
    Frame(BytesMut, usize),
    /// Nothing to hand up (a WebSocket ping or pong).
    Nothing,
}

/// The metric label of a transport.
pub(crate) fn label(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "tcp",
        Transport::Websocket => "websocket",
        Transport::Kcp => "kcp",
        Transport::Quic => "quic",
        Transport::Unspecified => "unspecified",
    }
}

/// Spare room a stream read waits with. Small, because an idle session spends its life waiting
/// in a read with this much allocated; a larger frame gets the room it still needs (its length
/// prefix says how much) before the next read.
const READ_SPARE: usize = 512;

/// Buffers that grew past this for one large frame are given back once they are empty.
const KEEP_CAPACITY: usize = 4096;

/// Makes room in `input` for the next read: the rest of a partly read frame, at least
/// [`READ_SPARE`], and nothing kept from an earlier large frame.
fn make_room(input: &mut BytesMut, max_frame: usize) {
    if input.is_empty() && input.capacity() > KEEP_CAPACITY {
        *input = BytesMut::new();
    }
    let pending = match input.get(..frame::HEADER_LEN) {
        Some(mut header) => {
            let frame_len = frame::HEADER_LEN + (header.get_u32() as usize).min(max_frame);
            frame_len.saturating_sub(input.len())
        }
        None => 0,
    };
    let want = pending.max(READ_SPARE);
    if input.capacity() - input.len() < want / 2 {
        input.reserve(want);
    }
}

impl FrameIo {
    /// Reads more from the client. Cancel-safe: nothing read is lost if the future is dropped.
    pub(crate) async fn read(
        &mut self,
        input: &mut BytesMut,
        max_frame: usize,
    ) -> Result<Read, Close> {
        match self {
            FrameIo::Stream(stream) => {
                make_room(input, max_frame);
                match stream.read_buf(input).await {
                    Ok(0) => Err(Close::ClientClosed),
                    Ok(n) => Ok(Read::Bytes(n)),
                    Err(_) => Err(Close::ClientClosed),
                }
            }
            FrameIo::WebSocket(ws) => match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Err(Close::ClientClosed),
                Some(Ok(Message::Binary(bytes))) => {
                    let n = bytes.len();
                    let payload = frame::decode_message(bytes, max_frame)?;
                    Ok(Read::Frame(BytesMut::from(payload), n))
                }
                Some(Ok(Message::Text(_))) => Err(Close::TextMessage),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    Ok(Read::Nothing)
                }
            },
        }
    }

    /// Writes every whole frame in `out` and empties it.
    pub(crate) async fn write(&mut self, out: &mut BytesMut) -> std::io::Result<()> {
        match self {
            FrameIo::Stream(stream) => {
                stream.write_all(out).await?;
                out.clear();
                if out.capacity() > KEEP_CAPACITY {
                    *out = BytesMut::new();
                }
                stream.flush().await
            }
            FrameIo::WebSocket(ws) => {
                while let Some(message) = frame::take_message(out) {
                    ws.feed(Message::Binary(message))
                        .await
                        .map_err(std::io::Error::other)?;
                }
                ws.flush().await.map_err(std::io::Error::other)
            }
        }
    }

    /// Closes the connection politely (best effort).
    pub(crate) async fn close(&mut self) {
        match self {
            FrameIo::Stream(stream) => {
                let _ = stream.shutdown().await;
            }
            FrameIo::WebSocket(ws) => {
                let _ = SinkExt::close(ws.as_mut()).await;
            }
        }
    }
}
