//! An SBC disk behind a volatile write-back cache, a host-memory/DMA model
//! with HBA constraints, power loss and a catalogue of injectable driver
//! bugs: the device replays and fuzz campaigns run against when no hardware
//! is at hand.
//!
//! A task enters through [`Emulator::submit`] as the OS hands it to an HBA
//! driver: a CDB and a scatter-gather list into [`HostMemory`]. The driver
//! model ([`hba`]) builds the controller's SG list (bouncing what the
//! controller cannot address, splitting what it cannot take in one
//! command), the controller moves the data, and the device server ([`sbc`])
//! executes each command against a [`Cache`] in front of a sparse
//! [`Medium`]. Bugs from the [`Bug`] catalogue replace one correct step
//! each. Transports that hold data as byte buffers (the iSCSI target) use
//! [`Emulator::execute`] / [`Emulator::execute_from`] (which names the
//! initiator, for unit attentions and reservations), which stage them in
//! host memory first. An initiator that writes self-describing blocks can
//! place them as tags ([`HostMemory::write_pattern`]) and, with
//! [`Emulator::set_tagged_reads`], get READ data back as tags
//! ([`HostMemory::read_runs`]), so no block is generated or checksummed on
//! the way, and a transfer of one stream's consecutive blocks moves as one
//! run ([`runs::TagPiece`]) through host memory, the controller, the cache's
//! write-back and the medium; every byte read sees the same bytes either way.
//!
//! Around the data path: [`Emulator::power_loss`] (a seeded subset of dirty
//! lines survives), [`Emulator::reset`] / [`Emulator::reset_lun`] (cache
//! kept, unit attention 29/00), [`Emulator::settle`] (background work
//! completes), [`Emulator::enable_coverage`] / [`Emulator::coverage`] (the
//! fuzzer's state-transition map, [`coverage`]). The consistency oracle that
//! judges what reads return lives in `trace::oracle`, so it can judge any
//! device. `docs/bug-catalogue.md` describes every [`Bug`].
//!
//! | module | concept |
//! |---|---|
//! | [`memory`] | sparse 64-bit host physical address space, pages of bytes or of self-describing block tags |
//! | [`runs`] | data in flight as runs of bytes, zeros and tag pieces (gather, scatter, bounce, Data-Out, Data-In) |
//! | [`hba`] | driver (SG list, bounce, split) and controller limits |
//! | [`sbc`] | the SBC-3 device server of one LUN |
//! | [`cache`], [`medium`], [`content`] | write-back cache, sparse extents, compact block content |
//! | `recent` | self-describing blocks just written, so reads of them copy instead of regenerating |
//! | [`mode`], [`vpd`], [`pr`] | mode pages, INQUIRY data, persistent reservations |
//! | [`command`] | CDB decoding for the executor |
//! | [`bugs`], [`coverage`], [`rng`] | bug catalogue, coverage map, seeded randomness |
//! | [`error`] | errors and the sense data they become |
//!
//! ```
//! use emulator::{Emulator, EmulatorConfig};
//! let mut emu = Emulator::new(EmulatorConfig::default()).unwrap();
//! let write10 = [0x2a, 0, 0, 0, 0, 8, 0, 0, 1, 0]; // WRITE(10) LBA 8, 1 block
//! let out = emu.execute(0, &write10, &[0xab; 512], &mut Vec::new(), 512);
//! assert!(out.is_good());
//! let mut back = Vec::new();
//! let read10 = [0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0];
//! emu.execute(0, &read10, &[], &mut back, 512);
//! assert_eq!(back, vec![0xab; 512]);
//! ```

#![deny(missing_docs)]

pub mod bugs;
pub mod cache;
pub mod command;
pub mod config;
pub mod content;
pub mod coverage;
mod emulator;
pub mod error;
pub mod hba;
pub mod medium;
pub mod memory;
pub mod mode;
mod opcodes;
pub mod pr;
mod recent;
pub mod rng;
pub mod runs;
pub mod sbc;
pub mod vpd;

pub use bugs::{Bug, BugSet, UnknownBug};
pub use cache::{Cache, CacheConfig, Destage};
pub use config::EmulatorConfig;
pub use emulator::{Emulator, Outcome, STAGING_WINDOW};
pub use error::{CheckCondition, CommandError, EmulatorError, SenseKey};
pub use hba::Task;
pub use medium::Medium;
pub use memory::HostMemory;
pub use sbc::InitiatorId;
