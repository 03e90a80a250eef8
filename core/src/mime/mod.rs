//! MIME, pure Rust: building outgoing messages (`build`), summarising received ones
//! (`summary`), and reading what a received message reports — bounce, complaint, auto-reply
//! (`bounce`).

pub mod bounce;
pub mod build;
pub mod summary;
