//! The wire: iSCSI (RFC 7143) PDU codec, a target that serves the emulator, and an async initiator that reaches any real target.

#![deny(missing_docs)]
