//! Integration tests of the recorder crate: one binary, a module per concern.

mod dext;
mod ftrace;
mod iolog;
mod proxy;
mod synth;
