//! What a trace says about itself before its first event: the fixed
//! preamble (magic, version, compression) and the header frame (producer,
//! device geometry, HBA, payload mode, labels).

use super::{crc32c, Compression, TraceError, MAGIC, PREAMBLE_LEN, VERSION_MAJOR, VERSION_MINOR};
use crate::command::Payload;
use crate::hba::HbaPreset;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which kind of payload the trace's data commands carry: what its writer
/// promises, so a consumer knows before reading whether it can verify data.
///
/// Commands without a data phase always carry [`Payload::None`], whatever the
/// mode. The variant order is the wire order (see `docs/trace-format.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum PayloadMode {
    /// No data kept: timing and command shapes only.
    #[default]
    None,
    /// Every byte of every transfer.
    Full,
    /// Per-block CRC32C digests.
    Digest,
    /// Self-describing blocks, regenerated from a seed and generation.
    Pattern,
    /// Any kind, chosen per command (fuzzer findings, merged traces).
    Mixed,
}

impl PayloadMode {
    /// Whether a trace in this mode may carry `payload`.
    pub fn permits(self, payload: &Payload) -> bool {
        matches!(
            (self, payload),
            (_, Payload::None)
                | (PayloadMode::Mixed, _)
                | (PayloadMode::Full, Payload::Full(_))
                | (PayloadMode::Digest, Payload::Digests { .. })
                | (PayloadMode::Pattern, Payload::Pattern { .. })
        )
    }

    /// Lower-case name, as the CLI prints it.
    pub fn name(self) -> &'static str {
        match self {
            PayloadMode::None => "none",
            PayloadMode::Full => "full",
            PayloadMode::Digest => "digest",
            PayloadMode::Pattern => "pattern",
            PayloadMode::Mixed => "mixed",
        }
    }
}

/// The name of a payload's kind, for messages.
pub(crate) fn payload_kind(p: &Payload) -> &'static str {
    match p {
        Payload::None => "none",
        Payload::Full(_) => "full",
        Payload::Digests { .. } => "digest",
        Payload::Pattern { .. } => "pattern",
    }
}

/// Everything a trace records about where it came from and the device it
/// describes. Field order is the wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceHeader {
    /// Program and version that wrote the trace (`scuzz-recorder 0.1.0`,
    /// `dext-shim 3`), so a bad trace can be traced to its writer.
    pub producer: String,
    /// When recording started, seconds since the Unix epoch (0 if unknown).
    pub created_unix_s: u64,
    /// Logical block size of the device in bytes (512 or 4096 usually; 0 if
    /// unknown).
    pub block_size: u32,
    /// Device capacity in logical blocks (0 if unknown).
    pub capacity_blocks: u64,
    /// The HBA model the trace was recorded through or is meant to replay
    /// against.
    pub hba: Option<HbaPreset>,
    /// What the data commands' payloads hold.
    pub payload_mode: PayloadMode,
    /// Free-form `key=value` annotations (host, workload, kernel...).
    pub labels: BTreeMap<String, String>,
}

impl TraceHeader {
    /// A header for `producer`, created now, with unknown geometry, no HBA,
    /// no payloads and no labels: fill in what you know.
    pub fn new(producer: impl Into<String>) -> TraceHeader {
        let created_unix_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        TraceHeader {
            producer: producer.into(),
            created_unix_s,
            block_size: 0,
            capacity_blocks: 0,
            hba: None,
            payload_mode: PayloadMode::None,
            labels: BTreeMap::new(),
        }
    }
}

/// The decoded 16-byte preamble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Preamble {
    pub major: u16,
    pub minor: u16,
    pub compression_code: u8,
}

impl Preamble {
    pub(crate) fn current(compression: Compression) -> Preamble {
        Preamble {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR,
            compression_code: compression.code(),
        }
    }

    pub(crate) fn encode(self) -> [u8; PREAMBLE_LEN] {
        let mut p = [0u8; PREAMBLE_LEN];
        p[0..4].copy_from_slice(&MAGIC);
        p[4..6].copy_from_slice(&self.major.to_le_bytes());
        p[6..8].copy_from_slice(&self.minor.to_le_bytes());
        p[8] = self.compression_code;
        let crc = crc32c(&p[0..12]);
        p[12..16].copy_from_slice(&crc.to_le_bytes());
        p
    }

    /// Checks magic, then version, then CRC, in that order: a future major
    /// version may change everything after byte 8, so its preamble must be
    /// refused for its version rather than called corrupt.
    pub(crate) fn decode(p: &[u8; PREAMBLE_LEN]) -> Result<Preamble, TraceError> {
        let found = [p[0], p[1], p[2], p[3]];
        if found != MAGIC {
            return Err(TraceError::BadMagic { found });
        }
        let major = u16::from_le_bytes([p[4], p[5]]);
        let minor = u16::from_le_bytes([p[6], p[7]]);
        if major > VERSION_MAJOR {
            return Err(TraceError::UnsupportedVersion {
                found_major: major,
                found_minor: minor,
                supported: VERSION_MAJOR,
            });
        }
        let want = u32::from_le_bytes([p[12], p[13], p[14], p[15]]);
        if crc32c(&p[0..12]) != want {
            return Err(TraceError::Corrupt {
                offset: 0,
                reason: "preamble CRC mismatch".into(),
            });
        }
        if major == 0 {
            return Err(TraceError::Corrupt {
                offset: 0,
                reason: "format major version 0 was never written".into(),
            });
        }
        let newer_minor = minor > VERSION_MINOR;
        if p[9..12] != [0, 0, 0] && !newer_minor {
            return Err(TraceError::Corrupt {
                offset: 0,
                reason: "reserved preamble bytes 9..12 are not zero".into(),
            });
        }
        Ok(Preamble {
            major,
            minor,
            compression_code: p[8],
        })
    }

    pub(crate) fn compression(self) -> Result<Compression, TraceError> {
        match self.compression_code {
            0 => Ok(Compression::None),
            // The level is a writer's choice; a reader does not need it.
            1 => Ok(Compression::ZSTD_DEFAULT),
            code => Err(TraceError::UnsupportedCompression { code }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_round_trips() {
        let p = Preamble::current(Compression::ZSTD_DEFAULT);
        assert_eq!(Preamble::decode(&p.encode()).unwrap(), p);
    }

    #[test]
    fn newer_major_is_refused_before_crc_is_checked() {
        let mut p = Preamble::current(Compression::None).encode();
        p[4] = 2;
        p[12] ^= 0xff;
        let e = Preamble::decode(&p).unwrap_err();
        assert!(matches!(
            e,
            TraceError::UnsupportedVersion {
                found_major: 2,
                supported: 1,
                ..
            }
        ));
        assert!(
            e.to_string().contains("newer than this scuzz supports"),
            "{e}"
        );
    }

    #[test]
    fn newer_minor_is_accepted() {
        let p = Preamble {
            major: VERSION_MAJOR,
            minor: VERSION_MINOR + 3,
            compression_code: 0,
        };
        assert_eq!(
            Preamble::decode(&p.encode()).unwrap().minor,
            VERSION_MINOR + 3
        );
    }

    #[test]
    fn payload_mode_permits_none_everywhere_and_its_own_kind() {
        let full = Payload::Full(vec![1]);
        assert!(PayloadMode::Digest.permits(&Payload::None));
        assert!(PayloadMode::Full.permits(&full));
        assert!(!PayloadMode::Digest.permits(&full));
        assert!(PayloadMode::Mixed.permits(&full));
    }
}
