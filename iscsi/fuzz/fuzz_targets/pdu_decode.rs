//! Fuzzes the PDU framing and typed decoding with arbitrary bytes, under
//! every digest setting, and checks that whatever decodes re-encodes to a
//! PDU that decodes to the same header.
#![no_main]

use bytes::BytesMut;
use iscsi::pdu::{Digests, Frame};
use iscsi::text::TextKeys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, bytes)) = input.split_first() else {
        return;
    };
    let digests = Digests {
        header: mode & 1 != 0,
        data: mode & 2 != 0,
    };
    let cap = if mode & 4 != 0 { 512 } else { 262_144 };
    let mut src = BytesMut::from(bytes);
    while let Ok(Some(frame)) = Frame::decode(&mut src, digests, cap) {
        let _ = TextKeys::parse(&frame.data);
        if let Ok(pdu) = frame.parse() {
            let mut wire = BytesMut::new();
            pdu.encode(digests, &mut wire);
            let again = Frame::decode(&mut wire, digests, 1 << 24)
                .expect("re-encoded PDU frames")
                .expect("re-encoded PDU is whole");
            assert_eq!(again.parse().expect("re-encoded PDU parses").header, pdu.header);
        }
    }
});
