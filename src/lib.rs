//! mail_gateway: the email gateway of an ERP database, as a PostgreSQL extension.
//!
//! Data flows one way: the SQL API (`api`) writes tables through `store`; the background
//! `worker` reads them and does the network I/O; pure decisions live in `routing`.
//! This file only wires the modules together.

use pgrx::prelude::*;

pub mod api;
mod chatter;
pub mod deliverability;
pub mod delivery;
pub mod dkim;
pub mod dns;
mod error;
mod gucs;
pub mod imap;
pub mod mailbox;
pub mod mime;
pub mod net;
pub mod pop3;
mod router;
pub mod routing;
pub mod smtp;
mod store;
mod worker;

pg_module_magic!();

extension_sql_file!("../sql/bootstrap.sql", bootstrap);
extension_sql_file!(
    "../sql/validation.sql",
    name = "validation",
    requires = [
        api::config::normalize_email,
        api::config::normalize_domain,
        api::config::normalize_local_part,
        api::config::normalize_from_filter
    ]
);
extension_sql_file!(
    "../sql/queue.sql",
    name = "queue",
    requires = ["validation"]
);
extension_sql_file!("../sql/inbound.sql", name = "inbound", requires = ["queue"]);
extension_sql_file!(
    "../sql/chatter.sql",
    name = "chatter",
    requires = ["inbound"]
);
extension_sql_file!("../sql/finalize.sql", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    worker::register();
}

/// Settings of the `cargo pgrx test` cluster.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        // The worker runs in the test cluster too, serving a database without the extension.
        vec!["shared_preload_libraries = 'mail_gateway'"]
    }
}
