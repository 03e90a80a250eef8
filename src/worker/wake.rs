//! Waking the workers when a transaction that queued mail commits (no polling delay): the
//! workers publish their pids in shared memory; `send_mail` registers, once per transaction, a
//! commit callback that sets their latches. A rolled-back transaction wakes nobody.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{PgLwLock, PgXactCallbackEvent, pg_shmem_init, register_xact_callback};

/// At most this many workers (the main one and the extra senders).
pub const MAX_WORKERS: usize = 16;

/// The pid of each worker and the database it serves (0 = none).
static WORKERS: PgLwLock<[(i32, u32); MAX_WORKERS]> =
    unsafe { PgLwLock::new(c"mail_gateway_workers") };

/// Set in the postmaster when the library is preloaded; inherited by every backend it forks.
/// Without it there is no shared memory, and nobody to wake.
static SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

thread_local! {
    static WAKE_REGISTERED: Cell<bool> = const { Cell::new(false) };
}

/// Called from `_PG_init` while preloading.
pub fn init() {
    pg_shmem_init!(WORKERS);
    SHARED_MEMORY.store(true, Ordering::Relaxed);
}

/// A worker announces itself (pid, and the database it is connected to) or its end (0).
pub fn publish(index: usize, pid: i32) {
    if SHARED_MEMORY.load(Ordering::Relaxed) && index < MAX_WORKERS {
        let database = if pid == 0 {
            0
        } else {
            unsafe { pg_sys::MyDatabaseId.to_u32() }
        };
        WORKERS.exclusive()[index] = (pid, database);
    }
}

/// Wakes the workers that serve this database when the current transaction commits.
pub fn at_commit() {
    if !SHARED_MEMORY.load(Ordering::Relaxed) || WAKE_REGISTERED.get() {
        return;
    }
    WAKE_REGISTERED.set(true);
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        WAKE_REGISTERED.set(false);
        wake_all();
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || WAKE_REGISTERED.set(false));
}

fn wake_all() {
    let workers = *WORKERS.share();
    let here = unsafe { pg_sys::MyDatabaseId.to_u32() };
    for (pid, _) in workers
        .into_iter()
        .filter(|(pid, db)| *pid != 0 && *db == here)
    {
        unsafe {
            let proc_ = pg_sys::BackendPidGetProc(pid);
            if !proc_.is_null() {
                pg_sys::SetLatch(&mut (*proc_).procLatch);
            }
        }
    }
}
