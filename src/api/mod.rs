//! The SQL API: thin `#[pg_extern]` functions that check their arguments, call `store` and
//! `routing`, and raise clear errors.

pub mod config;

#[cfg(any(test, feature = "pg_test"))]
mod tests;
