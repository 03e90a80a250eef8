//! MIME, pure Rust: building outgoing messages (`build`), summarising received ones
//! (`summary`), and reading what a received message reports — bounce, complaint, auto-reply
//! (`bounce`); what is cleaned (`clean`) and which structures are too absurd to read
//! (`structure`) before anything of a stranger's message is stored.

pub mod bounce;
pub mod build;
pub mod clean;
pub mod structure;
pub mod summary;
