//! mail_gateway: the email gateway of an ERP database, as a PostgreSQL extension.
//!
//! Data flows one way: the SQL API (`api`) writes tables through `store`; the background
//! `worker` reads them and does the network I/O; pure decisions live in `routing`.
//! This file only wires the modules together.

use pgrx::prelude::*;

mod access_token;
pub mod api;
mod chatter;
mod error;
mod gucs;
mod router;
mod store;
mod worker;

// The mail logic that needs no PostgreSQL lives in its own crate (core/); `crate::mime` and
// friends keep their names here.
pub use mail_gateway_core::{
    authentication, deliverability, delivery, dkim, dns, lmtp, mailbox, mime, model, net, oauth,
    outbox, parameters, provider_hints, routing, smtp,
};

pg_module_magic!();

extension_sql_file!("../sql/bootstrap.sql", bootstrap);
extension_sql_file!(
    "../sql/validation.sql",
    name = "validation",
    requires = [
        api::config::normalize_email,
        api::config::normalize_domain,
        api::config::normalize_local_part,
        api::config::normalize_from_filter,
        api::config::parameter_default,
        api::config::parameter_kind,
        api::oauth_account::oauth_account_validate
    ]
);
extension_sql_file!(
    "../sql/parameters.sql",
    name = "parameters",
    requires = [
        "validation",
        api::config::parameter_default,
        api::config::parameter_kind,
        api::config::parameter_defaults
    ]
);
extension_sql_file!(
    "../sql/queue.sql",
    name = "queue",
    requires = ["parameters", api::outbox::outbox_insert]
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
    MAIN_THREAD.get_or_init(|| std::thread::current().id());
    mail_gateway_core::interrupt::install(check_for_interrupts);
}

/// The backend's own thread: the only one that may call into PostgreSQL.
static MAIN_THREAD: std::sync::OnceLock<std::thread::ThreadId> = std::sync::OnceLock::new();

/// The core crate's long loops over a received message call this: `statement_timeout`, a
/// cancel or a terminate end them at once (as an ERROR). Never from another thread.
fn check_for_interrupts() {
    if MAIN_THREAD.get() == Some(&std::thread::current().id()) {
        pg_sys::check_for_interrupts!();
    }
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
