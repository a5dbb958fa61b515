//! Integration tests of the replayer: real synthesized traces replayed to
//! the real emulator.

mod common;
mod engine;
mod iscsi;
mod report;
