//! Integration tests of the fuzzer crate: one binary, a module per concern.

mod campaign;
mod scenarios;
