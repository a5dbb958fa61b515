use super::*;

fn roundtrip(pdu: Pdu, digests: Digests) {
    let mut wire = BytesMut::new();
    pdu.encode(digests, &mut wire);
    assert_eq!(wire.len(), pdu.encoded_len(digests));
    assert_eq!(wire.len() % 4, 0, "PDUs end on a 4-byte boundary");
    let frame = Frame::decode(&mut wire, digests, 1 << 20).unwrap().unwrap();
    assert!(wire.is_empty());
    assert_eq!(frame.parse().unwrap(), pdu);
}

fn all_kinds() -> Vec<Header> {
    vec![
        Header::NopOut(NopOut {
            immediate: true,
            lun: Lun::from_flat(3),
            itt: 1,
            ttt: RESERVED_TAG,
            cmd_sn: 9,
            exp_stat_sn: 4,
        }),
        Header::ScsiCommand(ScsiCommand {
            immediate: false,
            final_: true,
            read: true,
            write: false,
            attr: TaskAttribute::Ordered,
            lun: Lun::from_flat(1),
            itt: 0x1234,
            expected_length: 4096,
            cmd_sn: 77,
            exp_stat_sn: 5,
            cdb: vec![0x28, 0, 0, 0, 0, 8, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0],
            bidi_read_length: None,
        }),
        Header::ScsiCommand(ScsiCommand {
            final_: true,
            write: true,
            read: true,
            cdb: (0u8..32).collect(),
            bidi_read_length: Some(512),
            ..Default::default()
        }),
        Header::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: TmfFunction::ABORT_TASK,
            lun: Lun::from_flat(0),
            itt: 5,
            referenced_tt: 4,
            cmd_sn: 10,
            exp_stat_sn: 2,
            ref_cmd_sn: 9,
            exp_data_sn: 0,
        }),
        Header::LoginRequest(LoginRequest {
            transit: true,
            cont: false,
            csg: Stage::Operational,
            nsg: Stage::FullFeature,
            version_max: 0,
            version_min: 0,
            isid: [0x80, 1, 2, 3, 4, 5],
            tsih: 0,
            itt: 0,
            cid: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
        }),
        Header::TextRequest(TextRequest {
            final_: true,
            itt: 3,
            ttt: RESERVED_TAG,
            ..Default::default()
        }),
        Header::DataOut(DataOut {
            final_: true,
            itt: 3,
            ttt: 8,
            data_sn: 2,
            buffer_offset: 8192,
            ..Default::default()
        }),
        Header::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: 0,
            itt: 4,
            cid: 1,
            cmd_sn: 3,
            exp_stat_sn: 3,
        }),
        Header::Snack(Snack {
            kind: 1,
            itt: 2,
            beg_run: 5,
            run_length: 1,
            ..Default::default()
        }),
        Header::NopIn(NopIn {
            itt: 1,
            ttt: RESERVED_TAG,
            stat_sn: 3,
            exp_cmd_sn: 4,
            max_cmd_sn: 35,
            ..Default::default()
        }),
        Header::ScsiResponse(ScsiResponse {
            underflow: true,
            status: 2,
            itt: 8,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            residual: 512,
            ..Default::default()
        }),
        Header::TaskMgmtResponse(TaskMgmtResponse {
            response: 1,
            itt: 5,
            ..Default::default()
        }),
        Header::LoginResponse(LoginResponse {
            transit: false,
            cont: true,
            csg: Stage::Security,
            nsg: Stage::Security,
            version_max: 0,
            version_active: 0,
            isid: [1; 6],
            tsih: 9,
            itt: 0,
            stat_sn: 0,
            exp_cmd_sn: 1,
            max_cmd_sn: 1,
            status_class: 2,
            status_detail: 1,
        }),
        Header::TextResponse(TextResponse {
            final_: true,
            ttt: RESERVED_TAG,
            ..Default::default()
        }),
        Header::DataIn(DataIn {
            final_: true,
            status: Some(0),
            overflow: true,
            residual: 3,
            data_sn: 1,
            buffer_offset: 8192,
            ..Default::default()
        }),
        Header::LogoutResponse(LogoutResponse {
            itt: 4,
            time2wait: 2,
            time2retain: 20,
            ..Default::default()
        }),
        Header::R2t(R2t {
            itt: 1,
            ttt: 2,
            r2t_sn: 3,
            buffer_offset: 65536,
            desired_length: 262144,
            ..Default::default()
        }),
        Header::AsyncMessage(AsyncMessage {
            event: 1,
            parameter3: 2,
            ..Default::default()
        }),
        Header::Reject(Reject {
            reason: 9,
            stat_sn: 1,
            ..Default::default()
        }),
    ]
}

#[test]
fn every_kind_roundtrips_with_and_without_digests() {
    for h in all_kinds() {
        for digests in [
            Digests::NONE,
            Digests {
                header: true,
                data: true,
            },
        ] {
            roundtrip(Pdu::header_only(h.clone()), digests);
            roundtrip(Pdu::new(h.clone(), &b"abcde"[..]), digests);
        }
    }
}

#[test]
fn extended_cdb_travels_in_an_ahs() {
    let h = Header::ScsiCommand(ScsiCommand {
        cdb: (0u8..32).collect(),
        ..Default::default()
    });
    let mut wire = BytesMut::new();
    Pdu::header_only(h).encode(Digests::NONE, &mut wire);
    // 16 extra CDB bytes + AHS header (3) + reserved (1) = 20 = 5 words.
    assert_eq!(wire[4], 5);
    assert_eq!(&wire[48..52], &[0, 17, 1, 0]);
}

#[test]
fn partial_input_waits_for_more() {
    let mut wire = BytesMut::new();
    Pdu::new(Header::NopOut(NopOut::default()), vec![1u8; 100]).encode(Digests::NONE, &mut wire);
    let full = wire.clone();
    for cut in [0, 1, 47, 48, 100, full.len() - 1] {
        let mut part = BytesMut::from(&full[..cut]);
        assert_eq!(Frame::decode(&mut part, Digests::NONE, 8192).unwrap(), None);
        assert_eq!(part.len(), cut, "nothing consumed");
    }
}

#[test]
fn oversized_data_segment_fails_before_allocation() {
    let mut bhs = [0u8; 48];
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    let mut wire = BytesMut::from(&bhs[..]);
    let err = Frame::decode(&mut wire, Digests::NONE, 8192).unwrap_err();
    assert!(matches!(
        err,
        PduError::DataSegmentTooLong {
            len: 0xffffff,
            max: 8192
        }
    ));
    assert!(err.is_fatal());
    assert!(wire.capacity() < 1 << 20);
}

#[test]
fn header_digest_mismatch_is_fatal_data_digest_is_not() {
    let d = Digests {
        header: true,
        data: true,
    };
    let mut wire = BytesMut::new();
    Pdu::new(Header::NopOut(NopOut::default()), &b"1234"[..]).encode(d, &mut wire);
    let mut bad_header = wire.clone();
    bad_header[20] ^= 1;
    let e = Frame::decode(&mut bad_header, d, 8192).unwrap_err();
    assert!(matches!(e, PduError::HeaderDigest { .. }) && e.is_fatal());
    let mut bad_data = wire.clone();
    bad_data[53] ^= 1;
    let f = Frame::decode(&mut bad_data, d, 8192).unwrap().unwrap();
    let e = f.parse().unwrap_err();
    assert_eq!(e.reject_reason(), RejectReason::DATA_DIGEST_ERROR);
    assert!(!e.is_fatal());
}

#[test]
fn known_crc32c_vector() {
    // RFC 7143 Appendix B.4: 32 bytes of zeros have CRC32C 0x8a9136aa.
    assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
}

#[test]
fn unknown_opcode_maps_to_command_not_supported() {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x1c;
    let e = Header::decode(&bhs, &[]).unwrap_err();
    assert_eq!(e.reject_reason(), RejectReason::COMMAND_NOT_SUPPORTED);
}

#[test]
fn malformed_ahs_is_an_invalid_field() {
    let mut bhs = [0u8; 48];
    bhs[0] = opcode::SCSI_COMMAND;
    bhs[1] = 0x81;
    for ahs in [
        &[0u8, 200, 1, 0][..],
        &[0, 1, 1, 0],
        &[0, 4, 9, 0, 0, 0, 0, 0],
        &[0, 5, 2, 0],
    ] {
        let e = Header::decode(&bhs, ahs).unwrap_err();
        assert_eq!(
            e.reject_reason(),
            RejectReason::INVALID_PDU_FIELD,
            "{ahs:?}"
        );
    }
}

#[test]
fn login_with_transit_and_continue_is_rejected() {
    let mut bhs = [0u8; 48];
    bhs[0] = 0x43;
    bhs[1] = 0xc0 | 0x04 | 0x03;
    assert!(matches!(
        Header::decode(&bhs, &[]),
        Err(PduError::InvalidField {
            field: "T and C",
            ..
        })
    ));
}

#[test]
fn lun_flat_addressing() {
    assert_eq!(Lun::from_flat(1).0, 0x0001_0000_0000_0000);
    assert_eq!(Lun::from_flat(1).flat(), Some(1));
    assert_eq!(Lun::from_flat(300).flat(), Some(300));
    assert_eq!(Lun(0x0001_0000_0000_0001).flat(), None);
}

/// A few thousand random byte strings, plain and shaped like PDUs: the
/// decoder returns a value or an error, never panics, and never asks for
/// more than the cap.
#[test]
fn random_inputs_never_panic() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..5000 {
        let len = (next() % 400) as usize;
        let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if i % 2 == 0 && buf.len() >= 48 {
            // Keep the lengths plausible so the AHS and data paths run.
            buf[4] = (next() % 8) as u8;
            buf[5] = 0;
            buf[6] = 0;
            buf[7] = (next() % 64) as u8;
            buf[0] = [0x01, 0x03, 0x05, 0x21, 0x25, 0x3f][(next() % 6) as usize];
        }
        let digests = Digests {
            header: i % 3 == 0,
            data: i % 5 == 0,
        };
        let mut src = BytesMut::from(&buf[..]);
        while let Ok(Some(f)) = Frame::decode(&mut src, digests, 4096) {
            if let Ok(p) = f.parse() {
                let mut again = BytesMut::new();
                p.encode(Digests::NONE, &mut again);
                let g = Frame::decode(&mut again, Digests::NONE, 1 << 24)
                    .unwrap()
                    .unwrap();
                assert_eq!(g.parse().unwrap().header, p.header);
            }
        }
    }
}
