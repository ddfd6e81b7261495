//! Frames over a client connection, at either end (PROTOCOL.md §1): a byte stream (TCP, KCP
//! and QUIC streams) carries length-prefixed frames back to back; a WebSocket carries one whole
//! frame, prefix included, per binary message, and a text message is a protocol error. Nothing
//! above this module knows which transport it runs on.

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use janus_protocol::frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::ByteStream;
use crate::error::{Error, Result};

/// A client connection carrying frames; `W` is what the WebSocket runs on (the edge boxes its
/// accepted streams, the client library keeps tungstenite's own).
pub enum FrameIo<W = Box<dyn ByteStream>> {
    /// Frames back to back on a byte stream.
    Stream(Box<dyn ByteStream>),
    /// One frame per binary WebSocket message.
    WebSocket(Box<WebSocketStream<W>>),
}

impl<W> std::fmt::Debug for FrameIo<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameIo::Stream(_) => "FrameIo::Stream",
            FrameIo::WebSocket(_) => "FrameIo::WebSocket",
        })
    }
}

/// What one read produced.
#[derive(Debug)]
pub enum Read {
    /// `n` bytes were appended to the input buffer (byte streams).
    Bytes(usize),
    /// One whole frame's payload (WebSocket), `n` bytes on the wire.
    Frame(BytesMut, usize),
    /// Nothing to hand up (a WebSocket ping or pong).
    Nothing,
}

/// An output buffer that grew past this for one large write is given back once it is empty.
const KEEP_CAPACITY: usize = 4096;

/// Makes room in `input` for the next read: the rest of a partly read frame, at least `spare`,
/// and nothing kept from an earlier large frame (an empty buffer above eight times `spare` is
/// given back).
fn make_room(input: &mut BytesMut, max_frame: usize, spare: usize) {
    if input.is_empty() && input.capacity() > 8 * spare {
        *input = BytesMut::new();
    }
    let pending = match input.get(..frame::HEADER_LEN) {
        Some(mut header) => {
            let frame_len = frame::HEADER_LEN + (header.get_u32() as usize).min(max_frame);
            frame_len.saturating_sub(input.len())
        }
        None => 0,
    };
    let want = pending.max(spare);
    if input.capacity() - input.len() < want / 2 {
        input.reserve(want);
    }
}

impl<W: AsyncRead + AsyncWrite + Unpin> FrameIo<W> {
    /// Reads more from the peer: a byte stream's read waits with at least `SPARE` bytes of room
    /// (the edge keeps it small, since an idle session spends its life in this read; a client
    /// reads in larger pieces), more when a partly read frame needs it. A constant, not an
    /// argument: the future every idle session holds carries no word for it (its task is
    /// allocated in 128-byte steps, and a few bytes more cost the edge 128 per session).
    /// Cancel-safe: nothing read is lost if the future is dropped.
    /// The end of the connection (or a WebSocket close) is [`Error::Closed`]; a message that
    /// is not exactly one frame, and a text message, are the protocol core's
    /// [`janus_protocol::Error::MessageFraming`].
    pub async fn read<const SPARE: usize>(
        &mut self,
        input: &mut BytesMut,
        max_frame: usize,
    ) -> Result<Read> {
        match self {
            FrameIo::Stream(stream) => {
                make_room(input, max_frame, SPARE);
                match stream.read_buf(input).await? {
                    0 => Err(Error::Closed),
                    n => Ok(Read::Bytes(n)),
                }
            }
            FrameIo::WebSocket(ws) => match ws.next().await {
                None | Some(Ok(Message::Close(_))) => Err(Error::Closed),
                Some(Err(e)) => Err(Error::websocket(e)),
                Some(Ok(Message::Binary(bytes))) => {
                    let n = bytes.len();
                    let payload = frame::decode_message(bytes, max_frame)?;
                    Ok(Read::Frame(BytesMut::from(payload), n))
                }
                Some(Ok(Message::Text(_))) => {
                    Err(janus_protocol::Error::MessageFraming(frame::TEXT_MESSAGE))?
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                    Ok(Read::Nothing)
                }
            },
        }
    }

    /// Writes every whole frame in `out` (several may be queued: an acknowledgement before a
    /// request, the packets a resume sends again) and empties it.
    pub async fn write(&mut self, out: &mut BytesMut) -> Result<()> {
        match self {
            FrameIo::Stream(stream) => {
                stream.write_all(out).await?;
                out.clear();
                if out.capacity() > KEEP_CAPACITY {
                    *out = BytesMut::new();
                }
                stream.flush().await?;
            }
            FrameIo::WebSocket(ws) => {
                while let Some(message) = frame::take_message(out) {
                    ws.feed(Message::Binary(message))
                        .await
                        .map_err(Error::websocket)?;
                }
                ws.flush().await.map_err(Error::websocket)?;
            }
        }
        Ok(())
    }

    /// Closes the connection politely: shuts the stream down or sends a WebSocket close.
    pub async fn close(&mut self) -> Result<()> {
        match self {
            FrameIo::Stream(stream) => stream.shutdown().await?,
            FrameIo::WebSocket(ws) => SinkExt::close(ws.as_mut())
                .await
                .map_err(Error::websocket)?,
        }
        Ok(())
    }
}
