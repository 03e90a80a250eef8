//! The background workers. At `shared_preload_libraries` time one launcher is registered
//! (`launcher`, connected to no database); it starts, per database the gateway serves, worker 0
//! ("mail_gateway worker") and the extra senders ("mail_gateway sender N",
//! `mail_gateway.senders`), which send due mail in rounds (claim → deliver → record), and the
//! fetcher ("mail_gateway fetcher"), which fetches due mailboxes (list → fetch → store and
//! commit → flag). They connect as `mail_gateway.role`, sleep on their latch between rounds
//! and never hold a transaction open across network I/O. `registry` is their shared memory,
//! `wake` wakes them at commit, `hooks` keeps them out of the way of DROP/RENAME DATABASE.

mod fetch;
pub mod hooks;
pub mod launcher;
mod lmtp;
mod prepare;
pub(crate) mod refresh;
pub mod registry;
mod send;
pub mod wake;

use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::error::Caught;
use crate::{gucs, store};
use launcher::WorkerId;
use registry::DatabaseState;

pub fn register() {
    // A library loaded by a plain backend (LOAD, or the first call of one of its functions)
    // must not register a worker: only the postmaster can.
    // SAFETY: a global flag PostgreSQL sets while it loads shared_preload_libraries; read on the
    // backend's own thread.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        return;
    }
    registry::init();
    hooks::install();
    BackgroundWorkerBuilder::new("mail_gateway launcher")
        .set_type("mail_gateway launcher")
        .set_library("mail_gateway")
        .set_function("mail_gateway_launcher_main")
        .enable_spi_access()
        .set_restart_time(Some(launcher::RESTART_DELAY))
        .load();
}

/// Whether the postmaster asked this worker to stop (SIGTERM).
pub(crate) fn shutting_down() -> bool {
    // SAFETY: a sig_atomic_t flag the SIGTERM handler sets; reading it is what PostgreSQL's own
    // loops do.
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
            // SAFETY: called on the worker's thread after an ERROR inside the transaction it
            // started, as PostgreSQL's own workers recover.
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

/// Whether this database has the extension at this library's version. A database still at
/// an older version (the library was replaced, `ALTER EXTENSION mail_gateway UPDATE` not run
/// yet) is not served: its tables are not what this code expects.
fn extension_ready(role: &str, database: &str) -> bool {
    let Some(installed) =
        in_transaction("checking the extension", store::config::installed_version)
    else {
        return true; // could not tell (logged): the next wake-up looks again
    };
    match installed {
        None => false,
        Some(v) if v == env!("CARGO_PKG_VERSION") => true,
        Some(v) => {
            log!(
                "mail_gateway {role}: database \"{database}\" has mail_gateway {v}, this library is {}; waiting for ALTER EXTENSION mail_gateway UPDATE",
                env!("CARGO_PKG_VERSION")
            );
            false
        }
    }
}

/// This worker's database and index, from the launcher's arguments.
fn this_worker() -> (WorkerId, pg_sys::Oid) {
    WorkerId::parse(BackgroundWorker::get_extra()).unwrap_or((
        WorkerId {
            database: 0,
            index: 0,
        },
        pg_sys::InvalidOid,
    ))
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn mail_gateway_worker_main(_arg: pg_sys::Datum) {
    let (id, login) = this_worker();
    let index = id.index as i32;
    let role = if index == 0 {
        "worker".to_string()
    } else {
        format!("sender {index}")
    };
    let mut sending = send::Sending::new(index);
    let wake = sending.wake_fd();
    serve(
        &role,
        id,
        login,
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
    let (id, login) = this_worker();
    let mut lmtp = lmtp::Lmtp::new();
    let wake = lmtp.wake_fd();
    // When the next fetch round is due: a wake-up that only brought LMTP mail skips it.
    let mut due_at = Instant::now();
    serve(
        "fetcher",
        id,
        login,
        wake,
        || {},
        || {
            lmtp.configure();
            let pushed = lmtp.store_arrived();
            if pushed == 0 || Instant::now() >= due_at {
                fetch::round(&mut || {
                    lmtp.store_arrived();
                });
            }
            let wait =
                match in_transaction("looking for due mailboxes", store::incoming::next_fetch_in) {
                    Some(Some(due)) => due.max(Duration::from_millis(10)),
                    _ => gucs::poll_interval(),
                };
            due_at = Instant::now() + wait;
            wait
        },
    );
}

/// Sleeps until the latch is set, `socket` (a sender's connections or the fetcher's LMTP
/// sessions reporting) is readable, or
/// `wait` has passed; returns `false` when the worker must stop.
fn sleep(wait: Duration, socket: Option<RawFd>) -> bool {
    let Some(fd) = socket else {
        return BackgroundWorker::wait_latch(Some(wait));
    };
    // SAFETY: MyLatch is this process's own latch; `fd` stays open while the sender lives.
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

/// The life of a worker: connect to its database as the gateway's role, check that the
/// extension is there (worker 0 tells the launcher either way), then do `work` (which returns
/// how long to sleep, at most the poll interval) on every wake-up until SIGTERM or until the
/// extension is dropped. The launcher starts it again if it should run.
fn serve(
    role: &str,
    id: WorkerId,
    login: pg_sys::Oid,
    socket: Option<RawFd>,
    mut on_install: impl FnMut(),
    mut work: impl FnMut() -> Duration,
) {
    let database = start(role, id, login);
    on_install();
    run(role, &database, socket, &mut work);
    registry::withdraw(id.index);
    log!("mail_gateway {role} stopped");
    // SAFETY: ends this background worker process the way PostgreSQL expects; nothing of ours runs
    // after it.
    unsafe { pg_sys::proc_exit(0) };
}

/// Connects, checks that this worker may serve its database, and registers it; returns the
/// database's name. Ends the process when it may not serve.
fn start(role: &str, id: WorkerId, login: pg_sys::Oid) -> String {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // As mail_gateway.role, never as a superuser: the worker runs nothing with more rights
    // than the gateway needs (alias handlers run as their owners).
    BackgroundWorker::connect_worker_to_spi_by_oid(
        Some(pg_sys::Oid::from(id.database)),
        Some(login),
    );
    // SAFETY: inside a transaction, as get_database_name needs; the returned name is checked for
    // NULL and copied before the transaction ends.
    let database = in_transaction("naming the database", || unsafe {
        let name = pg_sys::get_database_name(pg_sys::MyDatabaseId);
        if name.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        }
    })
    .unwrap_or_default();
    // SAFETY: reads the session user of this connected backend.
    if unsafe { pg_sys::superuser_arg(pg_sys::GetUserId()) } {
        warning!(
            "mail_gateway {role}: mail_gateway.role \"{}\" is a superuser; the workers never run as one. Set mail_gateway.role to a member of mail_gateway_worker that is not a superuser, and reload.",
            gucs::role()
        );
        registry::set_state(DatabaseState::NoExtension);
        // SAFETY: ends this background worker process the way PostgreSQL expects; nothing of ours
        // runs after it.
        unsafe { pg_sys::proc_exit(0) };
    }
    if !extension_ready(role, &database) {
        // Worker 0 was started to find out: the launcher looks again after CREATE (or ALTER)
        // EXTENSION.
        registry::set_state(DatabaseState::NoExtension);
        // SAFETY: ends this background worker process the way PostgreSQL expects; nothing of ours
        // runs after it.
        unsafe { pg_sys::proc_exit(0) };
    }
    if !registry::publish(id.index, std::process::id() as i32) {
        // A DROP, RENAME or TEMPLATE copy of this database is waiting for its sessions to leave.
        // SAFETY: as above.
        unsafe { pg_sys::proc_exit(0) };
    }
    if id.index == 0 {
        registry::set_state(DatabaseState::Serving);
        registry::wake_launcher(false);
    }
    log!(
        "mail_gateway {role} started: database \"{database}\", role \"{}\", pid {}",
        gucs::role(),
        std::process::id()
    );
    database
}

/// Does `work` on every wake-up until SIGTERM or until the extension is dropped; after failed
/// rounds (a full disk, say) the wait doubles up to 30 s, so that a lasting problem does not
/// flood the log.
fn run(role: &str, database: &str, socket: Option<RawFd>, work: &mut impl FnMut() -> Duration) {
    let mut checked = Instant::now();
    let mut failures = 0;
    loop {
        let mut wait = work().min(gucs::poll_interval());
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
            // SAFETY: the documented way for a background worker to reload its configuration after
            // SIGHUP, on its main thread.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        // A busy sender wakes for every result: the extension is looked up at most once a
        // second (a DROP EXTENSION in between makes the work's own statements fail, no more).
        if checked.elapsed() < Duration::from_secs(1) {
            continue;
        }
        checked = Instant::now();
        if !extension_ready(role, database) {
            log!(
                "mail_gateway {role}: extension dropped from database \"{database}\" (or changed); stopping"
            );
            registry::set_state(DatabaseState::NoExtension);
            break;
        }
    }
}
