//! Stream framing: whole PDUs from a byte stream, for `tokio_util`'s
//! `Framed`/`FramedRead`/`FramedWrite`.
//!
//! Digests and the receive limit change during a connection's life (login
//! runs without digests and with the 8192-byte default), so they are plain
//! fields the owner updates through `framed.codec_mut()` after the final
//! Login Response.
//!
//! Without `Framed`, [`read_frame`] pulls the next PDU from any
//! `AsyncRead` with a caller-owned buffer:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use iscsi::codec::{read_frame, PduCodec};
//! use iscsi::pdu::{Header, NopOut, Pdu};
//! let mut wire = bytes::BytesMut::new();
//! Pdu::header_only(Header::NopOut(NopOut::default())).encode(Default::default(), &mut wire);
//! let mut stream = &wire[..];
//! let mut buf = bytes::BytesMut::new();
//! let frame = read_frame(&mut stream, &mut buf, &PduCodec::default()).await.unwrap().unwrap();
//! assert!(matches!(frame.parse().unwrap().header, Header::NopOut(_)));
//! assert!(read_frame(&mut stream, &mut buf, &PduCodec::default()).await.unwrap().is_none());
//! # });
//! ```

use crate::pdu::{Digests, Frame, Pdu, PduError};
use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::{Decoder, Encoder};

/// RFC 7143 §13.12: the MaxRecvDataSegmentLength every side assumes until
/// its peer declares another.
pub const DEFAULT_MAX_RECV_DATA_SEGMENT: u32 = 8192;

/// A framing failure: the stream cannot be read further.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The PDU boundary was lost (header digest, over-long segment).
    #[error("framing: {0}")]
    Pdu(#[from] PduError),
}

/// Frames PDUs on a stream.
#[derive(Debug, Clone, Copy)]
pub struct PduCodec {
    /// Digests in force in both directions.
    pub digests: Digests,
    /// Largest DataSegmentLength accepted from the peer: what this side
    /// declared as MaxRecvDataSegmentLength.
    pub max_recv_data_segment: u32,
}

impl Default for PduCodec {
    fn default() -> Self {
        PduCodec {
            digests: Digests::NONE,
            max_recv_data_segment: DEFAULT_MAX_RECV_DATA_SEGMENT,
        }
    }
}

impl Decoder for PduCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        Ok(Frame::decode(
            src,
            self.digests,
            self.max_recv_data_segment,
        )?)
    }
}

impl Encoder<Pdu> for PduCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Pdu, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(self.digests, dst);
        Ok(())
    }
}

impl Encoder<&Pdu> for PduCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Pdu, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(self.digests, dst);
        Ok(())
    }
}

impl Encoder<Frame> for PduCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(self.digests, dst);
        Ok(())
    }
}

/// Reads the next whole PDU from `r`, buffering in `buf` (which may hold
/// bytes of following PDUs afterwards). `Ok(None)` on a clean end of stream
/// at a PDU boundary; an end of stream inside a PDU is a
/// [`PduError::Truncated`] error.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
    codec: &PduCodec,
) -> Result<Option<Frame>, CodecError> {
    loop {
        if let Some(f) = Frame::decode(buf, codec.digests, codec.max_recv_data_segment)? {
            return Ok(Some(f));
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        if r.read_buf(buf).await? == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(PduError::Truncated {
                what: "PDU at end of stream",
                need: crate::pdu::BHS_LEN.max(buf.len() + 1),
                have: buf.len(),
            }
            .into());
        }
    }
}
