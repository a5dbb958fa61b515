//! HBA constraints: the limits a driver reports for its controller, and which
//! of them the OS layer that splits I/O actually honours.
//!
//! The split matters for DriverKit: `UserReportHBAConstraints` carries segment
//! counts, segment sizes, alignment and address bits, but public reports say
//! the splitter takes its byte limits from the DEXT's registry properties.
//! A driver that passes `kIOMaximumByteCountWriteKey` through that call (as
//! the LSI 3108 report does) may receive transfers larger than its
//! controller accepts. [`HbaPreset::splitter`] models what reached the OS;
//! [`HbaPreset::controller`] what the hardware takes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Limits of one side (controller or OS splitter) of the transfer path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HbaConstraints {
    /// `kIOMaximumSegmentAddressableBitCountKey`: highest DMA address bit + 1.
    pub address_bits: u8,
    /// `kIOMaximumSegmentCountReadKey`.
    pub max_segments_read: u32,
    /// `kIOMaximumSegmentCountWriteKey`.
    pub max_segments_write: u32,
    /// `kIOMaximumSegmentByteCountReadKey` / `...WriteKey` (one value: no
    /// controller we model distinguishes them).
    pub max_segment_bytes: u32,
    /// `kIOMaximumByteCountReadKey`: largest transfer of one command.
    pub max_bytes_read: u32,
    /// `kIOMaximumByteCountWriteKey`: largest transfer of one command.
    pub max_bytes_write: u32,
    /// `kIOMinimumSegmentAlignmentByteCountKey`: every segment's address and
    /// length is a multiple of this.
    pub segment_alignment: u32,
}

impl HbaConstraints {
    /// No limits beyond 64-bit addressing.
    pub const UNLIMITED: HbaConstraints = HbaConstraints {
        address_bits: 64,
        max_segments_read: u32::MAX,
        max_segments_write: u32::MAX,
        max_segment_bytes: u32::MAX,
        max_bytes_read: u32::MAX,
        max_bytes_write: u32::MAX,
        segment_alignment: 1,
    };

    /// Highest DMA address the controller can reach, plus one (saturating at
    /// 2^64 for 64-bit controllers).
    pub fn address_limit(&self) -> u64 {
        if self.address_bits >= 64 {
            u64::MAX
        } else {
            1u64 << self.address_bits
        }
    }

    /// Max segment count for a transfer in the given direction.
    pub fn max_segments(&self, write: bool) -> u32 {
        if write {
            self.max_segments_write
        } else {
            self.max_segments_read
        }
    }

    /// Max bytes per command in the given direction.
    pub fn max_bytes(&self, write: bool) -> u32 {
        if write {
            self.max_bytes_write
        } else {
            self.max_bytes_read
        }
    }
}

/// A named controller model: what the controller accepts, and what the OS
/// splitter was told.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HbaPreset {
    /// CLI name (`lsi3108`, `generic`, ...).
    pub name: String,
    /// What the controller hardware accepts per command.
    pub controller: HbaConstraints,
    /// What the OS layer that splits I/O enforces before the driver sees it.
    pub splitter: HbaConstraints,
}

/// A preset name that is not in [`HbaPreset::NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown HBA preset `{0}` (known: {known})", known = HbaPreset::NAMES.join(", "))]
pub struct UnknownPreset(pub String);

impl HbaPreset {
    /// Every preset [`HbaPreset::by_name`] knows.
    pub const NAMES: &'static [&'static str] = &["generic", "lsi3108", "lsi3108-unsplit"];

    /// 64-bit addressing, no limits: a modern HBA behind an IOMMU.
    pub fn generic() -> HbaPreset {
        HbaPreset {
            name: "generic".into(),
            controller: HbaConstraints::UNLIMITED,
            splitter: HbaConstraints::UNLIMITED,
        }
    }

    /// The LSI 3108 (MegaRAID SAS-3 3108) as the report's DEXT describes it:
    /// 32-bit DMA addressing, 129 SG entries per write, 512 KiB per write,
    /// with every limit reaching the OS splitter.
    ///
    /// The read limits mirror the write ones (the report gives only writes;
    /// Linux's megaraid_sas uses one `sg_tablesize` and `max_sectors` for both).
    pub fn lsi3108() -> HbaPreset {
        let c = HbaConstraints {
            address_bits: 32,
            max_segments_read: 129,
            max_segments_write: 129,
            max_segment_bytes: 0x10_0000,
            max_bytes_read: 0x8_0000,
            max_bytes_write: 0x8_0000,
            segment_alignment: 4,
        };
        HbaPreset {
            name: "lsi3108".into(),
            controller: c,
            splitter: c,
        }
    }

    /// The LSI 3108 where the byte limits never reached the splitter (passed
    /// through `UserReportHBAConstraints`, which does not honour them): the
    /// OS splits at its default of 1 MiB instead, so oversize transfers reach
    /// the driver.
    pub fn lsi3108_unsplit() -> HbaPreset {
        let mut p = Self::lsi3108();
        p.name = "lsi3108-unsplit".into();
        p.splitter.max_bytes_read = 0x10_0000;
        p.splitter.max_bytes_write = 0x10_0000;
        p
    }

    /// Look a preset up by its CLI name.
    pub fn by_name(name: &str) -> Result<HbaPreset, UnknownPreset> {
        match name {
            "generic" => Ok(Self::generic()),
            "lsi3108" => Ok(Self::lsi3108()),
            "lsi3108-unsplit" => Ok(Self::lsi3108_unsplit()),
            other => Err(UnknownPreset(other.to_string())),
        }
    }

    /// This preset with the OS splitter's byte limit replaced (the CLI's
    /// `--os-max-transfer`), renamed so traces and reports show the change.
    pub fn with_os_max_transfer(mut self, bytes: u32) -> HbaPreset {
        self.splitter.max_bytes_read = bytes;
        self.splitter.max_bytes_write = bytes;
        self.name = format!("{}+os-max-transfer={}", self.name, bytes);
        self
    }
}

impl fmt::Display for HbaConstraints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lim = |v: u32| {
            if v == u32::MAX {
                "unlimited".to_string()
            } else {
                v.to_string()
            }
        };
        write!(
            f,
            "{}-bit, segments r/w {}/{}, bytes r/w {}/{}, segment <= {}, align {}",
            self.address_bits,
            lim(self.max_segments_read),
            lim(self.max_segments_write),
            lim(self.max_bytes_read),
            lim(self.max_bytes_write),
            lim(self.max_segment_bytes),
            self.segment_alignment
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_preset_resolves() {
        for n in HbaPreset::NAMES {
            assert_eq!(HbaPreset::by_name(n).unwrap().name, *n);
        }
        assert!(HbaPreset::by_name("lsi9999")
            .unwrap_err()
            .to_string()
            .contains("lsi3108"));
    }

    #[test]
    fn unsplit_variant_differs_only_in_splitter_bytes() {
        let a = HbaPreset::lsi3108();
        let b = HbaPreset::lsi3108_unsplit();
        assert_eq!(a.controller, b.controller);
        assert_eq!(b.splitter.max_bytes_write, 0x10_0000);
        assert_eq!(a.splitter.max_segments_write, b.splitter.max_segments_write);
    }
}
