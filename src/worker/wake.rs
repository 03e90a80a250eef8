//! Waking the workers when a transaction commits (no polling delay): the workers publish their
//! pids in shared memory; `send_mail` (the senders) and `fetch_now` (the fetcher) register,
//! once per transaction, a commit callback that sets their latches. A rolled-back
//! transaction wakes nobody.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::{PgLwLock, PgXactCallbackEvent, pg_shmem_init, register_xact_callback};

/// At most this many senders (the main worker and the extra senders).
pub const MAX_WORKERS: usize = 16;

/// The fetcher's slot, after the senders'.
pub const FETCHER: usize = MAX_WORKERS;

/// Whom a commit wakes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Senders,
    Fetcher,
}

impl Target {
    fn bit(self) -> u8 {
        match self {
            Target::Senders => 1,
            Target::Fetcher => 2,
        }
    }

    fn slots(self) -> std::ops::Range<usize> {
        match self {
            Target::Senders => 0..MAX_WORKERS,
            Target::Fetcher => FETCHER..FETCHER + 1,
        }
    }
}

/// The pid of each worker and the database it serves (0 = none).
static WORKERS: PgLwLock<[(i32, u32); MAX_WORKERS + 1]> =
    unsafe { PgLwLock::new(c"mail_gateway_workers") };

/// Set in the postmaster when the library is preloaded; inherited by every backend it forks.
/// Without it there is no shared memory, and nobody to wake.
static SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Targets to wake at the end of the current transaction (bits of `Target`); 0 = no
    /// callback registered yet.
    static PENDING: Cell<u8> = const { Cell::new(0) };
}

/// Called from `_PG_init` while preloading.
pub fn init() {
    pg_shmem_init!(WORKERS);
    SHARED_MEMORY.store(true, Ordering::Relaxed);
}

/// A worker announces itself (pid, and the database it is connected to) or its end (0).
pub fn publish(index: usize, pid: i32) {
    if SHARED_MEMORY.load(Ordering::Relaxed) && index <= FETCHER {
        let database = if pid == 0 {
            0
        } else {
            unsafe { pg_sys::MyDatabaseId.to_u32() }
        };
        WORKERS.exclusive()[index] = (pid, database);
    }
}

/// Wakes `target`, if it serves this database, when the current transaction commits.
pub fn at_commit(target: Target) {
    if !SHARED_MEMORY.load(Ordering::Relaxed) {
        return;
    }
    let pending = PENDING.get();
    PENDING.set(pending | target.bit());
    if pending != 0 {
        return;
    }
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        let pending = PENDING.replace(0);
        for target in [Target::Senders, Target::Fetcher] {
            if pending & target.bit() != 0 {
                wake(target);
            }
        }
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || PENDING.set(0));
}

fn wake(target: Target) {
    let workers = *WORKERS.share();
    let here = unsafe { pg_sys::MyDatabaseId.to_u32() };
    for (pid, _) in workers[target.slots()]
        .iter()
        .copied()
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
