//! The background workers: registered at `shared_preload_libraries` time, connected to the
//! database named by `mail_gateway.database`. Worker 0 ("mail_gateway worker") and the extra
//! senders ("mail_gateway sender N", `mail_gateway.senders`) sleep on their latches and, on
//! each wake-up, send due mail in rounds (claim → deliver → record), never holding a
//! transaction open across network I/O.

mod send;
pub mod wake;

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::{gucs, store};

/// The postmaster restarts a worker that died this long after it died.
const RESTART_DELAY: Duration = Duration::from_secs(5);

pub fn register() {
    // A library loaded by a plain backend (LOAD, or the first call of one of its functions)
    // must not register a worker: only the postmaster can.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    wake::init();
    for index in 0..gucs::senders() as i32 {
        let (name, kind) = if index == 0 {
            ("mail_gateway worker".to_string(), "mail_gateway worker")
        } else {
            (
                format!("mail_gateway sender {index}"),
                "mail_gateway sender",
            )
        };
        BackgroundWorkerBuilder::new(&name)
            .set_type(kind)
            .set_library("mail_gateway")
            .set_function("mail_gateway_worker_main")
            .set_argument(index.into_datum())
            .enable_spi_access()
            .set_restart_time(Some(RESTART_DELAY))
            .load();
    }
}

/// Runs `f` in its own transaction. An ERROR inside is logged and rolled back and the worker
/// goes on: a bad row must never stop the gateway.
pub(crate) fn in_transaction<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    let f = AssertUnwindSafe(f);
    PgTryBuilder::new(AssertUnwindSafe(|| Some(BackgroundWorker::transaction(f))))
        .catch_others(|e| {
            unsafe { pg_sys::AbortCurrentTransaction() };
            let message = match &e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r) => r.message().to_string(),
                pg_sys::panic::CaughtError::RustPanic { ereport, .. } => {
                    ereport.message().to_string()
                }
            };
            warning!("mail_gateway worker: {what} failed: {message}");
            None
        })
        .execute()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn mail_gateway_worker_main(arg: pg_sys::Datum) {
    let index = unsafe { i32::from_polymorphic_datum(arg, false, pg_sys::INT4OID) }.unwrap_or(0);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    let role = if index == 0 {
        "worker".to_string()
    } else {
        format!("sender {index}")
    };
    log!(
        "mail_gateway {role} started: database \"{database}\", pid {}",
        std::process::id()
    );
    wake::publish(index as usize, std::process::id() as i32);

    let mut installed = None;
    let mut leases_checked = std::time::Instant::now();
    'main: loop {
        let now_installed =
            in_transaction("checking the extension", store::config::extension_installed)
                .unwrap_or(false);
        if installed != Some(now_installed) {
            if !now_installed {
                log!(
                    "mail_gateway {role}: extension not created in database \"{database}\"; waiting for CREATE EXTENSION mail_gateway"
                );
            } else {
                // Mail this sender held when it last died goes back to the queue.
                in_transaction("releasing abandoned mail", || {
                    store::queue::release_own(index)
                });
            }
            installed = Some(now_installed);
        }
        let mut wait = gucs::poll_interval();
        if now_installed {
            // Full batches mean more is due: go on without sleeping.
            while send::round(index) as i64 >= gucs::send_batch_size() {
                if unsafe { pg_sys::ShutdownRequestPending } != 0 {
                    break 'main;
                }
            }
            // Another sender's expired leases (it died and was not restarted): rare, so
            // looked at once per poll interval rather than on every wake-up.
            if leases_checked.elapsed() >= gucs::poll_interval() {
                in_transaction("releasing expired leases", || {
                    store::queue::release_expired()
                });
                leases_checked = std::time::Instant::now();
            }
            if let Some(Some(due)) = in_transaction("looking for due mail", store::queue::next_due)
            {
                wait = wait.min(due.max(Duration::from_millis(10)));
            }
        }

        if !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            if gucs::database() != database {
                // A worker cannot switch databases: exit, and the postmaster starts a new one.
                log!(
                    "mail_gateway {role}: mail_gateway.database changed to \"{}\"; restarting",
                    gucs::database()
                );
                break;
            }
        }
    }
    wake::publish(index as usize, 0);
    log!("mail_gateway {role} stopped");
    // Exit code 1: the postmaster restarts a worker that was terminated on its own
    // (pg_terminate_backend); at shutdown it restarts nothing.
    unsafe { pg_sys::proc_exit(1) };
}
