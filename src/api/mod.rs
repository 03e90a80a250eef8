//! The SQL API: thin `#[pg_extern]` functions that check their arguments, call `store` and
//! `routing`, and raise clear errors.

pub mod chatter;
pub mod config;
pub mod dkim;
pub mod domain;
pub mod inbound;
pub mod oauth;
pub mod oauth_account;
pub mod outbox;
pub mod queue;
pub mod servers;
pub mod workers;

#[cfg(any(test, feature = "pg_test"))]
mod chatter_tests;
#[cfg(any(test, feature = "pg_test"))]
mod inbound_tests;
#[cfg(any(test, feature = "pg_test"))]
mod oauth_tests;
#[cfg(any(test, feature = "pg_test"))]
mod queue_tests;
#[cfg(any(test, feature = "pg_test"))]
mod tests;
