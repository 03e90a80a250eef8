//! A one-off background worker that refreshes one OAuth2 account's token for a SQL caller
//! (`test_outgoing_server`, `test_incoming_server`): it runs the workers' refresh — short
//! transactions of its own, the token endpoint outside any — so that a rotated refresh token
//! is committed at once, whatever becomes of the caller's transaction (a failed test raises an
//! ERROR, which would roll back a refresh stored in it). The caller waits for it to end, then
//! reads what it stored.

use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use super::{in_transaction, shutting_down};
use crate::access_token::{self, Ask, Caller};
use crate::net::Limits;
use crate::store;

/// Refreshes account `id` in a helper worker and waits for it. `false` when no helper could
/// run (no free background worker slot): the caller refreshes in its own transaction then.
pub fn in_helper(id: i64, timeout: Duration) -> bool {
    // SAFETY: plain reads of this backend's globals.
    let (database, pid) = unsafe { (pg_sys::MyDatabaseId, pg_sys::MyProcPid) };
    let role = store::role_oid(store::GATEWAY_ROLE);
    let extra = format!(
        "{} {} {id} {}",
        u32::from(database),
        u32::from(role),
        timeout.as_millis()
    );
    let Ok(helper) = BackgroundWorkerBuilder::new("mail_gateway oauth refresh")
        .set_type("mail_gateway oauth refresh")
        .set_library("mail_gateway")
        .set_function("mail_gateway_oauth_refresh_main")
        .set_extra(&extra)
        .enable_spi_access()
        .set_restart_time(None)
        .set_notify_pid(pid)
        .load_dynamic()
    else {
        return false;
    };
    if helper.wait_for_startup().is_err() {
        return false;
    }
    // Bounded by the helper's own timeout; a cancel of the caller interrupts the wait.
    let _ = helper.wait_for_shutdown();
    true
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn mail_gateway_oauth_refresh_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let numbers: Vec<u64> = BackgroundWorker::get_extra()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [database, role, id, timeout_ms] = numbers[..] else {
        return;
    };
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(database as u32)),
        Some(pg_sys::Oid::from(role as u32)),
    );
    // Never wait long for a row the caller's own transaction changed: it waits for us.
    let name = in_transaction("reading an OAuth2 account", || {
        store::oauth::prepare_helper();
        store::oauth::name_of(id as i64)
    })
    .flatten();
    if let Some(name) = name {
        let ask = Ask {
            account: &name,
            caller: Caller::Worker,
            limits: Limits {
                timeout: Duration::from_millis(timeout_ms),
                cancelled: shutting_down,
            },
            rejected: None,
        };
        // What it got, or why not, is in the account's row.
        let _ = access_token::get(&ask);
    }
    // SAFETY: ends this background worker process the way PostgreSQL expects; nothing of ours
    // runs after it.
    unsafe { pg_sys::proc_exit(0) };
}
