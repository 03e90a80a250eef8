//! The background worker: registered at `shared_preload_libraries` time, connected to the
//! database named by `mail_gateway.database`. It sleeps on its latch and, on each wake-up, runs
//! the loops of later issues (send, fetch) in short transactions, never holding one open across
//! network I/O.

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
    BackgroundWorkerBuilder::new("mail_gateway worker")
        .set_type("mail_gateway worker")
        .set_library("mail_gateway")
        .set_function("mail_gateway_worker_main")
        .enable_spi_access()
        .set_restart_time(Some(RESTART_DELAY))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn mail_gateway_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!(
        "mail_gateway worker started: database \"{database}\", pid {}",
        std::process::id()
    );

    let mut installed = None;
    loop {
        let now_installed = BackgroundWorker::transaction(store::config::extension_installed);
        if installed != Some(now_installed) {
            if !now_installed {
                log!(
                    "mail_gateway worker: extension not created in database \"{database}\"; waiting for CREATE EXTENSION mail_gateway"
                );
            }
            installed = Some(now_installed);
        }
        // Later issues run the send and fetch loops here when `now_installed`.

        if !BackgroundWorker::wait_latch(Some(gucs::poll_interval())) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            if gucs::database() != database {
                // A worker cannot switch databases: exit, and the postmaster starts a new one.
                log!(
                    "mail_gateway worker: mail_gateway.database changed to \"{}\"; restarting",
                    gucs::database()
                );
                break;
            }
        }
    }
    log!("mail_gateway worker stopped");
    // Exit code 1: the postmaster restarts a worker that was terminated on its own
    // (pg_terminate_backend); at shutdown it restarts nothing.
    unsafe { pg_sys::proc_exit(1) };
}
