//! The login phase, shared by initiator and target: operational keys and
//! their negotiation ([`keys`]), CHAP ([`chap`]), and login status codes
//! ([`status`]).
//!
//! The functions here are pure: they turn received keys into answers and
//! negotiated values. The target (`crate::target`) and an initiator drive
//! them from their own state machines.

pub mod chap;
pub mod keys;
pub mod status;

pub use keys::{Negotiated, OperationalParams};
pub use status::LoginStatus;
