//! MIME, pure Rust: building outgoing messages (`build`); later summarising incoming ones and
//! reading delivery-status reports.

pub mod build;
pub mod summary;
