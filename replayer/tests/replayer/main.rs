//! Integration tests of the replayer: real synthesized traces replayed to
//! the real emulator.

mod common;
mod engine;
mod hostile;
mod iscsi;
mod report;
