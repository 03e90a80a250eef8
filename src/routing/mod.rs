//! Routing decisions, pure Rust: which outgoing server sends a mail and with which From
//! (SPEC §2.3); later, which route an incoming message takes (SPEC §2.8).

pub mod address;
pub mod server;
