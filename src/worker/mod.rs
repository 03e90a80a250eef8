//! The background workers: registered at `shared_preload_libraries` time, connected to the
//! database named by `mail_gateway.database`. Worker 0 ("mail_gateway worker") and the extra
//! senders ("mail_gateway sender N", `mail_gateway.senders`) send due mail in rounds
//! (claim → deliver → record); the fetcher ("mail_gateway fetcher") fetches due mailboxes
//! (list → fetch → store and commit → flag). Each sleeps on its latch between rounds and
//! never holds a transaction open across network I/O.

mod fetch;
mod prepare;
mod send;
pub mod wake;

use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::error::Caught;
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
        if index == 0 {
            start(
                "mail_gateway worker",
                "mail_gateway worker",
                "mail_gateway_worker_main",
                0,
            );
        } else {
            let name = format!("mail_gateway sender {index}");
            start(
                &name,
                "mail_gateway sender",
                "mail_gateway_worker_main",
                index,
            );
        }
    }
    start(
        "mail_gateway fetcher",
        "mail_gateway fetcher",
        "mail_gateway_fetcher_main",
        0,
    );
}

fn start(name: &str, kind: &str, function: &str, argument: i32) {
    BackgroundWorkerBuilder::new(name)
        .set_type(kind)
        .set_library("mail_gateway")
        .set_function(function)
        .set_argument(argument.into_datum())
        .enable_spi_access()
        .set_restart_time(Some(RESTART_DELAY))
        .load();
}

/// Whether the postmaster asked this worker to stop (SIGTERM).
pub(crate) fn shutting_down() -> bool {
    unsafe { pg_sys::ShutdownRequestPending != 0 }
}

/// Runs `f` in its own transaction. An ERROR inside is logged and rolled back and the worker
/// goes on: a bad row must never stop the gateway.
pub(crate) fn in_transaction<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    try_transaction(what, f).ok()
}

thread_local! {
    /// Whether a transaction of this worker failed since `serve` last looked.
    static FAILED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `in_transaction`, handing PostgreSQL's SQLSTATE and message back to the caller.
pub(crate) fn try_transaction<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, Caught> {
    let f = AssertUnwindSafe(f);
    PgTryBuilder::new(AssertUnwindSafe(|| Ok(BackgroundWorker::transaction(f))))
        .catch_others(|e| {
            unsafe { pg_sys::AbortCurrentTransaction() };
            let caught = Caught::from_error(&e);
            warning!("mail_gateway: {what} failed: {caught}");
            FAILED.set(true);
            Err(caught)
        })
        .execute()
}

/// How long to wait after `failures` rounds in a row had an ERROR (a full disk, a lost
/// table): the poll interval, doubling up to 30 s (or the poll interval, if longer), so that a
/// lasting problem costs a WARNING now and then, not a busy loop and a flooded log.
fn backoff(failures: u32) -> Duration {
    let poll = gucs::poll_interval();
    let cap = poll.max(Duration::from_secs(30));
    poll.saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(cap)
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn mail_gateway_worker_main(arg: pg_sys::Datum) {
    let index = unsafe { i32::from_polymorphic_datum(arg, false, pg_sys::INT4OID) }.unwrap_or(0);
    let role = if index == 0 {
        "worker".to_string()
    } else {
        format!("sender {index}")
    };
    let mut sending = send::Sending::new(index);
    let wake = sending.wake_fd();
    serve(
        &role,
        index as usize,
        Some(wake),
        // Mail this sender held when it last died goes back to the queue.
        || {
            in_transaction("releasing abandoned mail", || {
                store::claim::release_own(index);
                store::claim::prefer_generic_plans();
            });
        },
        || sending.turn(),
    );
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn mail_gateway_fetcher_main(_arg: pg_sys::Datum) {
    serve(
        "fetcher",
        wake::FETCHER,
        None,
        || {},
        || {
            fetch::round();
            match in_transaction("looking for due mailboxes", store::inbound::next_fetch_in) {
                Some(Some(due)) => due.max(Duration::from_millis(10)),
                _ => gucs::poll_interval(),
            }
        },
    );
}

/// Sleeps until the latch is set, `socket` (a sender's connections reporting) is readable, or
/// `wait` has passed; returns `false` when the worker must stop.
fn sleep(wait: Duration, socket: Option<RawFd>) -> bool {
    let Some(fd) = socket else {
        return BackgroundWorker::wait_latch(Some(wait));
    };
    let events = unsafe {
        let flags = pg_sys::WL_LATCH_SET
            | pg_sys::WL_SOCKET_READABLE
            | pg_sys::WL_TIMEOUT
            | pg_sys::WL_POSTMASTER_DEATH;
        let events = pg_sys::WaitLatchOrSocket(
            pg_sys::MyLatch,
            flags as i32,
            fd,
            wait.as_millis().min(i32::MAX as u128) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        events
    };
    pg_sys::check_for_interrupts!();
    events & pg_sys::WL_POSTMASTER_DEATH as i32 == 0 && !BackgroundWorker::sigterm_received()
}

/// The life of a worker: connect, then wait for the extension, then do `work` (which returns
/// how long to sleep, at most the poll interval) on every wake-up until SIGTERM; on a change of
/// `mail_gateway.database`, exit so that the postmaster starts a worker for the new one.
fn serve(
    role: &str,
    slot: usize,
    socket: Option<RawFd>,
    mut on_install: impl FnMut(),
    mut work: impl FnMut() -> Duration,
) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = gucs::database();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    log!(
        "mail_gateway {role} started: database \"{database}\", pid {}",
        std::process::id()
    );
    wake::publish(slot, std::process::id() as i32);

    let mut installed = None;
    let mut checked = Instant::now();
    let mut failures = 0;
    loop {
        // A busy sender wakes for every result: the extension is looked up at most once a
        // second while it is there (a DROP EXTENSION makes the work's own statements fail).
        let now_installed = if installed == Some(true) && checked.elapsed() < Duration::from_secs(1)
        {
            true
        } else {
            checked = Instant::now();
            in_transaction("checking the extension", store::config::extension_installed)
                .unwrap_or(false)
        };
        if installed != Some(now_installed) {
            if now_installed {
                on_install();
            } else {
                log!(
                    "mail_gateway {role}: extension not created in database \"{database}\"; waiting for CREATE EXTENSION mail_gateway"
                );
            }
            installed = Some(now_installed);
        }
        let mut wait = if now_installed {
            work().min(gucs::poll_interval())
        } else {
            gucs::poll_interval()
        };
        failures = if FAILED.replace(false) {
            failures + 1
        } else {
            0
        };
        if failures > 0 {
            wait = wait.max(backoff(failures));
        }
        if shutting_down() || !sleep(wait, socket) {
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
    wake::publish(slot, 0);
    log!("mail_gateway {role} stopped");
    // Exit code 1: the postmaster restarts a worker that was terminated on its own
    // (pg_terminate_backend); at shutdown it restarts nothing.
    unsafe { pg_sys::proc_exit(1) };
}
