//! MIME, pure Rust: building outgoing messages (`build`), summarising received ones
//! (`summary`), and reading what a received message reports — bounce, complaint, auto-reply
//! (`report`); what is cleaned (`clean`) and which structures are too absurd to read
//! (`structure`) before anything of a stranger's message is stored.

pub mod build;
pub mod clean;
pub mod report;
pub mod structure;
pub mod summary;
