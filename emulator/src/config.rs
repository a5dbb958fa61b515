//! How to build an emulator: geometry, controller, bugs, cache, seed.

use crate::bugs::BugSet;
use crate::cache::CacheConfig;
use crate::error::EmulatorError;
use trace::HbaPreset;

/// Everything that fixes an emulator's behaviour. Two emulators built from
/// equal configurations and fed the same calls behave identically.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EmulatorConfig {
    /// Logical block size: 512 or 4096.
    pub block_size: u32,
    /// Capacity of each LUN in logical blocks.
    pub capacity_blocks: u64,
    /// Number of LUNs (0 .. luns-1).
    pub luns: u32,
    /// Controller model and the limits that reached the OS splitter.
    pub hba: HbaPreset,
    /// Catalogued bugs switched on.
    pub bugs: BugSet,
    /// Seed for every random choice.
    pub seed: u64,
    /// Write-back cache of each LUN.
    pub cache: CacheConfig,
    /// Thin provisioning (UNMAP, GET LBA STATUS, VPD B2h).
    pub thin_provisioning: bool,
}

impl Default for EmulatorConfig {
    /// One 1 GiB LUN of 512-byte blocks behind a generic 64-bit HBA, write
    /// caching on, thin provisioned, no bugs, seed 0.
    fn default() -> Self {
        EmulatorConfig {
            block_size: 512,
            capacity_blocks: 2 * 1024 * 1024,
            luns: 1,
            hba: HbaPreset::generic(),
            bugs: BugSet::NONE,
            seed: 0,
            cache: CacheConfig::default(),
            thin_provisioning: true,
        }
    }
}

impl EmulatorConfig {
    /// Check the configuration, naming the first bad field.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        if self.block_size != 512 && self.block_size != 4096 {
            return Err(EmulatorError::BlockSize(self.block_size));
        }
        let fits = self
            .capacity_blocks
            .checked_mul(u64::from(self.block_size))
            .is_some();
        if self.capacity_blocks == 0 || !fits || self.capacity_blocks == u64::MAX {
            return Err(EmulatorError::Capacity(self.capacity_blocks));
        }
        if self.luns == 0 || self.luns > 256 {
            return Err(EmulatorError::Luns(self.luns));
        }
        if self.cache.capacity_blocks == 0 {
            return Err(EmulatorError::CacheCapacity);
        }
        Ok(())
    }
}
