//! The wire: iSCSI (RFC 7143) for Scuzz.
//!
//! Every real initiator and target speaks iSCSI, so this crate is how the
//! emulator reaches QEMU, open-iscsi and libiscsi's compliance suite, how the
//! replayer reaches real targets, and what the recording proxy sits on.
//!
//! * [`pdu`]: the codec. [`pdu::Frame`] is one PDU's bytes with boundaries
//!   found and digests checked; [`pdu::Frame::parse`] gives a typed
//!   [`pdu::Pdu`] (a [`pdu::Header`] per PDU kind plus the data segment).
//!   Decode failures are [`pdu::PduError`]s that name the field and map to a
//!   Reject reason; lengths are capped before anything is allocated.
//! * [`codec`]: stream framing ([`codec::PduCodec`] for `tokio_util`'s
//!   `Framed`, [`codec::read_frame`] without it).
//! * [`text`]: `key=value` text segments and their reassembly.
//! * [`login`]: login-phase logic shared by initiator and target: the
//!   operational keys and their negotiation ([`login::Negotiated`]), CHAP,
//!   login status codes.
//! * [`initiator`]: a tokio initiator ([`initiator::Session`]) for the
//!   replayer and the fuzzer, and the one parser of `iscsi://` URLs.
//! * `testing` (feature `test-utils`): a guard that runs a real `tgtd` on
//!   free loopback ports for interop tests in any crate.
//! * [`target`]: a tokio target serving any [`target::ScsiDevice`] (the
//!   emulator in `scuzz serve`).
//!
//! ```
//! use iscsi::pdu::{Digests, Frame, Header, Pdu, ScsiCommand};
//! let read10 = Pdu::header_only(Header::ScsiCommand(ScsiCommand {
//!     final_: true, read: true, itt: 1, expected_length: 4096,
//!     cdb: vec![0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
//!     ..Default::default()
//! }));
//! let mut wire = bytes::BytesMut::new();
//! read10.encode(Digests::NONE, &mut wire);
//! assert_eq!(wire.len(), 48);
//! let back = Frame::decode(&mut wire, Digests::NONE, 8192).unwrap().unwrap().parse().unwrap();
//! assert_eq!(back, read10);
//! ```

#![deny(missing_docs)]

pub mod codec;
pub mod initiator;
pub mod login;
pub mod pdu;
pub mod sn;
pub mod target;
#[cfg(feature = "test-utils")]
pub mod testing;
pub mod text;
