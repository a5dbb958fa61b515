//! Self-describing block data: every classification from a hand-made block,
//! fill/classify round trips at 512 and 4096 bytes, the documented byte
//! layout and generator pinned, and hostile buffers never panicking.

use proptest::prelude::*;
use trace::pattern::{
    classify, fill_block, fill_blocks, inspect, read_tag, BlockState, BlockTag, Classification,
    HEADER_LEN, MAGIC,
};

const SIZES: [usize; 2] = [512, 4096];

fn block(lba: u64, generation: u32, seed: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    fill_block(
        &BlockTag {
            lba,
            generation,
            seed,
        },
        &mut b,
    );
    b
}

fn tag(lba: u64, generation: u32, seed: u64) -> BlockTag {
    BlockTag {
        lba,
        generation,
        seed,
    }
}

mod classification {
    use super::*;

    #[test]
    fn ok() {
        for len in SIZES {
            assert_eq!(
                classify(&block(10, 3, 7, len), &tag(10, 3, 7)),
                Classification::Ok
            );
        }
    }

    #[test]
    fn stale_is_an_older_generation_of_the_same_lba() {
        for len in SIZES {
            let found = classify(&block(10, 2, 7, len), &tag(10, 3, 7));
            assert_eq!(
                found,
                Classification::Stale {
                    found_generation: 2
                }
            );
        }
    }

    #[test]
    fn newer_is_a_later_generation_of_the_same_lba() {
        let found = classify(&block(10, 9, 7, 4096), &tag(10, 3, 7));
        assert_eq!(
            found,
            Classification::Newer {
                found_generation: 9
            }
        );
    }

    #[test]
    fn misdirected_is_a_whole_block_written_for_another_lba() {
        for len in SIZES {
            let found = classify(&block(1234, 3, 7, len), &tag(10, 3, 7));
            assert_eq!(
                found,
                Classification::Misdirected {
                    from_lba: 1234,
                    generation: 3
                }
            );
        }
    }

    #[test]
    fn misdirected_wins_over_generation_and_seed() {
        let found = classify(&block(11, 1, 99, 512), &tag(10, 3, 7));
        assert_eq!(
            found,
            Classification::Misdirected {
                from_lba: 11,
                generation: 1
            }
        );
    }

    #[test]
    fn foreign_is_this_lba_from_another_stream() {
        let found = classify(&block(10, 3, 8, 512), &tag(10, 3, 7));
        assert_eq!(
            found,
            Classification::Foreign {
                seed: 8,
                generation: 3
            }
        );
    }

    #[test]
    fn dropped_is_all_zeros() {
        for len in SIZES {
            assert_eq!(
                classify(&vec![0u8; len], &tag(10, 3, 7)),
                Classification::Dropped
            );
        }
    }

    #[test]
    fn torn_is_a_new_header_over_an_old_tail() {
        // A 4 KiB block whose first 512-byte sector landed and whose other
        // seven kept the previous generation: a power cut mid-block.
        let mut b = block(10, 3, 7, 4096);
        let old = block(10, 2, 7, 4096);
        b[512..].copy_from_slice(&old[512..]);
        assert_eq!(classify(&b, &tag(10, 3, 7)), Classification::Torn);
        assert_eq!(inspect(&b), BlockState::Torn { tag: tag(10, 3, 7) });
    }

    #[test]
    fn torn_is_a_single_flipped_body_bit() {
        for len in SIZES {
            for at in [HEADER_LEN, len / 2, len - 1] {
                let mut b = block(10, 3, 7, len);
                b[at] ^= 0x10;
                assert_eq!(
                    classify(&b, &tag(10, 3, 7)),
                    Classification::Torn,
                    "len {len} byte {at}"
                );
            }
        }
    }

    #[test]
    fn torn_is_a_header_sector_over_zeros() {
        // Only the first sector of the DMA landed; the rest was never written.
        let mut b = block(10, 3, 7, 4096);
        b[512..].fill(0);
        assert_eq!(classify(&b, &tag(10, 3, 7)), Classification::Torn);
    }

    #[test]
    fn garbage_is_no_valid_header() {
        // Host memory that held something else.
        let text: Vec<u8> = b"not a Scuzz block "
            .iter()
            .copied()
            .cycle()
            .take(512)
            .collect();
        assert_eq!(classify(&text, &tag(10, 3, 7)), Classification::Garbage);
        // A Scuzz block whose header was overwritten (first sector lost).
        let mut b = block(10, 3, 7, 4096);
        b[..512].fill(0xa5);
        assert_eq!(classify(&b, &tag(10, 3, 7)), Classification::Garbage);
        // A flipped header bit fails the header CRC.
        let mut b = block(10, 3, 7, 512);
        b[9] ^= 0x01;
        assert_eq!(read_tag(&b), None);
        assert_eq!(classify(&b, &tag(10, 3, 7)), Classification::Garbage);
        // A 512-byte slice of a 4096-byte block: its header names another length.
        let b = block(10, 3, 7, 4096);
        assert_eq!(classify(&b[..512], &tag(10, 3, 7)), Classification::Garbage);
    }

    #[test]
    fn a_zero_block_with_one_stray_byte_is_garbage_not_dropped() {
        let mut b = vec![0u8; 4096];
        b[4095] = 1;
        assert_eq!(inspect(&b), BlockState::Garbage);
    }

    #[test]
    fn display_wording() {
        let cases = [
            (Classification::Ok, "ok"),
            (
                Classification::Misdirected {
                    from_lba: 1234,
                    generation: 3,
                },
                "misdirected: block holds data written for LBA 1234 (generation 3)",
            ),
            (
                Classification::Dropped,
                "dropped: block was never written (all zeros)",
            ),
            (
                Classification::Stale {
                    found_generation: 2,
                },
                "stale: block holds an older write to this LBA (generation 2)",
            ),
            (
                Classification::Newer {
                    found_generation: 9,
                },
                "newer: block holds a later write to this LBA (generation 9)",
            ),
            (
                Classification::Foreign {
                    seed: 0xab,
                    generation: 1,
                },
                "foreign: block holds data of another stream (seed 0xab, generation 1)",
            ),
            (
                Classification::Torn,
                "torn: header valid but block CRC mismatch (partial write)",
            ),
            (
                Classification::Garbage,
                "garbage: no valid block header and not zeros (data Scuzz never wrote)",
            ),
        ];
        for (c, shown) in cases {
            assert_eq!(c.to_string(), shown);
            assert!(shown.starts_with(c.name()));
            assert_eq!(c.is_ok(), c == Classification::Ok);
        }
    }
}

mod layout {
    use super::*;

    /// The generator exactly as the module documentation specifies it,
    /// written again from the text: a C reader or a later Scuzz must
    /// regenerate the same bytes from a trace's `Payload::Pattern`.
    fn documented_block(t: &BlockTag, len: usize) -> Vec<u8> {
        fn mix(mut z: u64) -> u64 {
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let mut state =
            mix(t.seed ^ mix(t.lba ^ mix(u64::from(t.generation) ^ 0x5cb5_b10c_0000_0000)));
        let mut fill = Vec::new();
        while fill.len() < len - 40 {
            state = state.wrapping_add(0xa076_1d64_78bd_642f);
            let p = u128::from(state) * u128::from(state ^ 0xe703_7ed1_a0b4_28db);
            let (lo, hi) = (p as u64, (p >> 64) as u64);
            fill.extend_from_slice(&(lo ^ hi).to_le_bytes());
            fill.extend_from_slice(&hi.to_le_bytes());
        }
        fill.truncate(len - 40);
        let mut b = Vec::with_capacity(len);
        b.extend_from_slice(b"SCUZZBLK");
        b.extend_from_slice(&t.lba.to_le_bytes());
        b.extend_from_slice(&t.generation.to_le_bytes());
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(&t.seed.to_le_bytes());
        b.extend_from_slice(&crc32c::crc32c(&fill).to_le_bytes());
        let hcrc = crc32c::crc32c(&b);
        b.extend_from_slice(&hcrc.to_le_bytes());
        b.extend_from_slice(&fill);
        b
    }

    #[test]
    fn blocks_follow_the_documented_layout_and_generator() {
        for len in [512, 4096, 520, 45] {
            let t = tag(0x0123_4567_89ab_cdef, 0xfeed_beef, 0x5eed);
            assert_eq!(
                block(t.lba, t.generation, t.seed, len),
                documented_block(&t, len),
                "len {len}"
            );
        }
    }

    #[test]
    fn header_fields_at_their_offsets() {
        let b = block(
            0x0102_0304_0506_0708,
            0x0a0b_0c0d,
            0x1112_1314_1516_1718,
            512,
        );
        assert_eq!(&b[0..8], &MAGIC);
        assert_eq!(&b[8..16], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[16..20], &[0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(&b[20..24], &[0x00, 0x02, 0, 0]);
        assert_eq!(
            &b[24..32],
            &[0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11]
        );
        assert_eq!(b[32..36], crc32c::crc32c(&b[40..]).to_le_bytes());
        assert_eq!(b[36..40], crc32c::crc32c(&b[..36]).to_le_bytes());
    }

    #[test]
    fn generator_is_pinned() {
        // CRC32C of whole blocks for fixed tags. A change here breaks every
        // trace that stores `Payload::Pattern` recipes: bump the trace
        // format version instead of editing these numbers.
        assert_eq!(crc32c::crc32c(&block(0, 1, 0, 512)), 0x5164_ca50);
        assert_eq!(
            crc32c::crc32c(&block(2048, 3, 0xdead_beef, 4096)),
            0xdf80_396b
        );
    }

    #[test]
    fn fill_does_not_compress() {
        // Devices that compress or deduplicate must still store every byte.
        let b = block(5, 1, 1, 4096);
        let packed = zstd::bulk::compress(&b, 19).unwrap();
        assert!(
            packed.len() > 4000,
            "4 KiB block compressed to {} bytes",
            packed.len()
        );
    }

    #[test]
    fn each_key_part_changes_the_fill() {
        let base = block(5, 1, 1, 512);
        for other in [
            block(6, 1, 1, 512),
            block(5, 2, 1, 512),
            block(5, 1, 2, 512),
        ] {
            let same = base[HEADER_LEN..]
                .iter()
                .zip(&other[HEADER_LEN..])
                .filter(|(a, b)| a == b)
                .count();
            assert!(same < 16, "{same} equal fill bytes");
        }
    }

    #[test]
    fn fill_blocks_tags_consecutive_lbas() {
        for bs in SIZES {
            let mut buf = vec![0u8; bs * 8];
            fill_blocks(42, 7, 1000, bs, &mut buf);
            for (i, b) in buf.chunks(bs).enumerate() {
                assert_eq!(
                    inspect(b),
                    BlockState::Valid {
                        tag: tag(1000 + i as u64, 7, 42)
                    }
                );
                assert_eq!(b, block(1000 + i as u64, 7, 42, bs));
            }
        }
    }

    #[test]
    #[should_panic(expected = "cannot hold the 40-byte header")]
    fn a_block_smaller_than_the_header_is_a_caller_bug() {
        fill_block(&tag(0, 0, 0), &mut [0u8; 39]);
    }

    #[test]
    #[should_panic(expected = "not a whole number")]
    fn fill_blocks_wants_whole_blocks() {
        fill_blocks(0, 0, 0, 512, &mut [0u8; 700]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fill_then_classify_round_trips(
        lba in any::<u64>(), generation in any::<u32>(), seed in any::<u64>(), big in any::<bool>(),
    ) {
        let len = if big { 4096 } else { 512 };
        let t = tag(lba, generation, seed);
        let b = block(lba, generation, seed, len);
        prop_assert_eq!(read_tag(&b), Some(t));
        prop_assert_eq!(inspect(&b), BlockState::Valid { tag: t });
        prop_assert_eq!(classify(&b, &t), Classification::Ok);
    }

    #[test]
    fn any_single_bit_flip_is_detected(at in 0usize..4096, bit in 0u8..8) {
        let t = tag(77, 5, 3);
        let mut b = block(77, 5, 3, 4096);
        b[at] ^= 1 << bit;
        let verdict = classify(&b, &t);
        // A flip in the header makes it unreadable; in the body, torn.
        let expected = if at < HEADER_LEN { Classification::Garbage } else { Classification::Torn };
        prop_assert_eq!(verdict, expected);
    }

    #[test]
    fn hostile_buffers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600), with_magic in any::<bool>()) {
        let mut bytes = bytes;
        if with_magic && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(&MAGIC);
        }
        let _ = read_tag(&bytes);
        let _ = inspect(&bytes);
        let _ = classify(&bytes, &tag(0, 0, 0)).to_string();
    }
}
