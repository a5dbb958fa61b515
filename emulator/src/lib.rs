//! An SBC disk behind a volatile write-back cache, a host-memory/DMA model with HBA constraints, power loss and a catalogue of injectable driver bugs: the device replays and fuzz campaigns run against when no hardware is at hand.

#![deny(missing_docs)]
