//! Replay: an async engine that runs a trace against a backend (in-process emulator, iSCSI, SG_IO) with bounded queue depth, verifies data, and reports latency with HdrHistogram.

#![deny(missing_docs)]
