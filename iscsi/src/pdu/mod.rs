//! PDUs: the Basic Header Segment, Additional Header Segments, the data
//! segment with its padding, and the optional CRC32C digests.
//!
//! Two layers, so a proxy can forward exactly what it received and a target
//! can answer a malformed PDU instead of dropping the connection:
//!
//! * [`Frame`]: one PDU as bytes, its boundaries found and its digests
//!   checked ([`Frame::decode`], and [`crate::codec::PduCodec`] for streams).
//!   Fails only when the stream itself can no longer be trusted.
//! * [`Pdu`]: the typed view ([`Frame::parse`]); a parse failure names the
//!   field and maps to a Reject reason, and the connection can go on.
//!
//! ```
//! use iscsi::pdu::{Frame, Header, NopOut, Pdu, Digests, RESERVED_TAG};
//! let ping = Pdu::new(Header::NopOut(NopOut { itt: 7, ttt: RESERVED_TAG, ..Default::default() }),
//!                     &b"ping"[..]);
//! let mut wire = bytes::BytesMut::new();
//! ping.encode(Digests::NONE, &mut wire);
//! let frame = Frame::decode(&mut wire, Digests::NONE, 8192).unwrap().unwrap();
//! assert_eq!(frame.parse().unwrap(), ping);
//! ```

mod error;
mod fields;
mod header;
mod wire;

pub use error::{PduError, RejectReason};
pub use fields::{Lun, Stage, TaskAttribute, TmfFunction, TmfResponse, RESERVED_TAG};
pub use header::{
    opcode, opcode_name, AsyncMessage, DataIn, DataOut, Header, LoginRequest, LoginResponse,
    LogoutRequest, LogoutResponse, NopIn, NopOut, R2t, Reject, ScsiCommand, ScsiResponse, Snack,
    TaskMgmtRequest, TaskMgmtResponse, TextRequest, TextResponse,
};
pub use wire::{pad_len, Bhs, BHS_LEN};

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Which digests are on the wire (RFC 7143 §13.1, HeaderDigest/DataDigest);
/// both are off until login negotiates them, and take effect for the first
/// PDU after the Login Response that completes the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// CRC32C after BHS+AHS.
    pub header: bool,
    /// CRC32C after the padded data segment.
    pub data: bool,
}

impl Digests {
    /// No digests (the state during login).
    pub const NONE: Digests = Digests {
        header: false,
        data: false,
    };
}

/// Longest AHS area: TotalAHSLength is one byte of 4-byte words.
pub const MAX_AHS_LEN: usize = 255 * 4;

/// Largest DataSegmentLength the 24-bit field can express.
pub const MAX_DATA_SEGMENT: u32 = 0x00ff_ffff;

/// A typed PDU: header plus data segment (padding and digests stripped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// The typed Basic Header Segment (with the AHS it implies).
    pub header: Header,
    /// The data segment, unpadded.
    pub data: Bytes,
}

impl Pdu {
    /// A PDU with a data segment.
    pub fn new(header: Header, data: impl Into<Bytes>) -> Pdu {
        Pdu {
            header,
            data: data.into(),
        }
    }

    /// A PDU with an empty data segment.
    pub fn header_only(header: Header) -> Pdu {
        Pdu {
            header,
            data: Bytes::new(),
        }
    }

    /// Appends the wire form to `dst`: BHS, AHS, header digest, data,
    /// padding, data digest.
    ///
    /// The data segment is truncated to the 24-bit DataSegmentLength limit;
    /// callers split larger transfers into Data-In/Data-Out sequences.
    pub fn encode(&self, digests: Digests, dst: &mut BytesMut) {
        let data = &self.data[..self.data.len().min(MAX_DATA_SEGMENT as usize)];
        let mut ahs = Vec::new();
        let bhs = self.header.encode(data.len() as u32, &mut ahs);
        encode_parts(&bhs, &ahs, data, digests, dst);
    }

    /// Bytes [`Pdu::encode`] would append.
    pub fn encoded_len(&self, digests: Digests) -> usize {
        let mut ahs = Vec::new();
        let _ = self.header.encode(0, &mut ahs);
        let d = self.data.len().min(MAX_DATA_SEGMENT as usize);
        BHS_LEN
            + ahs.len()
            + if digests.header { 4 } else { 0 }
            + d
            + pad_len(d)
            + if digests.data && d > 0 { 4 } else { 0 }
    }
}

/// Appends one PDU's wire form from its parts.
pub fn encode_parts(bhs: &Bhs, ahs: &[u8], data: &[u8], digests: Digests, dst: &mut BytesMut) {
    dst.reserve(BHS_LEN + ahs.len() + 8 + data.len() + 3);
    dst.put_slice(bhs);
    dst.put_slice(ahs);
    if digests.header {
        let crc = crc32c::crc32c_append(crc32c::crc32c(bhs), ahs);
        dst.put_u32_le(crc);
    }
    if !data.is_empty() {
        dst.put_slice(data);
        let pad = pad_len(data.len());
        dst.put_bytes(0, pad);
        if digests.data {
            let crc = crc32c::crc32c_append(crc32c::crc32c(data), &[0u8; 3][..pad]);
            dst.put_u32_le(crc);
        }
    }
}

/// One PDU as received: boundaries found, digests checked, fields not yet
/// interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The Basic Header Segment.
    pub bhs: Bhs,
    /// The AHS area (TotalAHSLength × 4 bytes).
    pub ahs: Bytes,
    /// The data segment, unpadded.
    pub data: Bytes,
    /// A data digest mismatch, kept rather than failed so a target can
    /// Reject the PDU and keep the connection (RFC 7143 §7.8).
    pub data_digest_error: Option<(u32, u32)>,
}

impl Frame {
    /// Opcode (without the I bit).
    pub fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }

    /// Initiator Task Tag field.
    pub fn itt(&self) -> u32 {
        u32::from_be_bytes([self.bhs[16], self.bhs[17], self.bhs[18], self.bhs[19]])
    }

    /// Takes one whole PDU off the front of `src`.
    ///
    /// `Ok(None)` means more bytes are needed; nothing is consumed then.
    /// `max_data` caps DataSegmentLength (this side's
    /// MaxRecvDataSegmentLength): a larger value is an error before any
    /// allocation, since a peer could otherwise make us buffer 16 MiB per PDU.
    pub fn decode(
        src: &mut BytesMut,
        digests: Digests,
        max_data: u32,
    ) -> Result<Option<Frame>, PduError> {
        if src.len() < BHS_LEN {
            src.reserve(BHS_LEN - src.len());
            return Ok(None);
        }
        let ahs_len = usize::from(src[4]) * 4;
        let data_len = u32::from_be_bytes([0, src[5], src[6], src[7]]);
        if data_len > max_data {
            return Err(PduError::DataSegmentTooLong {
                len: data_len,
                max: max_data,
            });
        }
        let data_len = data_len as usize;
        let hd = if digests.header { 4 } else { 0 };
        let dd = if digests.data && data_len > 0 { 4 } else { 0 };
        let total = BHS_LEN + ahs_len + hd + data_len + pad_len(data_len) + dd;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut pdu = src.split_to(total);
        if digests.header {
            let at = BHS_LEN + ahs_len;
            let received = u32::from_le_bytes([pdu[at], pdu[at + 1], pdu[at + 2], pdu[at + 3]]);
            let computed = crc32c::crc32c(&pdu[..at]);
            if received != computed {
                return Err(PduError::HeaderDigest { received, computed });
            }
        }
        let mut data_digest_error = None;
        if dd != 0 {
            let at = BHS_LEN + ahs_len + hd;
            let end = at + data_len + pad_len(data_len);
            let received = u32::from_le_bytes([pdu[end], pdu[end + 1], pdu[end + 2], pdu[end + 3]]);
            let computed = crc32c::crc32c(&pdu[at..end]);
            if received != computed {
                data_digest_error = Some((received, computed));
            }
        }
        let mut bhs = [0u8; BHS_LEN];
        bhs.copy_from_slice(&pdu[..BHS_LEN]);
        pdu.advance(BHS_LEN);
        let ahs = pdu.split_to(ahs_len).freeze();
        pdu.advance(hd);
        let data = pdu.split_to(data_len).freeze();
        Ok(Some(Frame {
            bhs,
            ahs,
            data,
            data_digest_error,
        }))
    }

    /// Decodes the typed header.
    pub fn parse(&self) -> Result<Pdu, PduError> {
        if let Some((received, computed)) = self.data_digest_error {
            return Err(PduError::DataDigest { received, computed });
        }
        Ok(Pdu {
            header: Header::decode(&self.bhs, &self.ahs)?,
            data: self.data.clone(),
        })
    }

    /// Appends the wire form again (with `digests`, which may differ from
    /// those it arrived with).
    pub fn encode(&self, digests: Digests, dst: &mut BytesMut) {
        encode_parts(&self.bhs, &self.ahs, &self.data, digests, dst);
    }
}

#[cfg(test)]
mod tests;
