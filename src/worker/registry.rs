//! The workers' shared memory: one slot per database the gateway serves (its state, its
//! workers' pids, whether it is paused), and the launcher's pid. The launcher writes the states
//! it decides, each worker its own pid; commits wake workers through it (`wake`), and the
//! utility hook pauses a database's workers through it (`hooks`).

use std::sync::atomic::{AtomicBool, Ordering};

use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use pgrx::{PgLwLock, pg_shmem_init};

/// Databases served at once (each needs `mail_gateway.senders` + 1 worker processes).
pub const MAX_DATABASES: usize = 64;

/// At most this many senders per database.
pub const MAX_SENDERS: usize = 16;

/// A database's fetcher's index, after its senders'.
pub const FETCHER: usize = MAX_SENDERS;

/// What the launcher knows of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum DatabaseState {
    /// Not looked at yet.
    #[default]
    Unknown = 0,
    /// Its first worker was started to look for the extension.
    Checking = 1,
    /// It has the extension: its workers run.
    Serving = 2,
    /// No `mail_gateway` extension there (looked at `since`).
    NoExtension = 3,
}

impl DatabaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseState::Unknown => "unknown",
            DatabaseState::Checking => "starting",
            DatabaseState::Serving => "serving",
            DatabaseState::NoExtension => "no extension",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// The database's oid; 0 = a free slot.
    pub database: u32,
    pub state: DatabaseState,
    /// Unix milliseconds: when the state was set.
    pub since: i64,
    /// Unix milliseconds until which the launcher starts no worker here (a DROP or RENAME
    /// DATABASE is waiting for the workers to leave); 0 = not paused.
    pub paused_until: i64,
    /// Pids of the senders (by index), then the fetcher; 0 = not running.
    pub pids: [i32; MAX_SENDERS + 1],
    /// A worker it needs could not be started: no free background worker slot.
    pub starved: bool,
}

impl Slot {
    const FREE: Slot = Slot {
        database: 0,
        state: DatabaseState::Unknown,
        since: 0,
        paused_until: 0,
        pids: [0; MAX_SENDERS + 1],
        starved: false,
    };

    pub fn paused(&self, now: i64) -> bool {
        self.paused_until > now
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Registry {
    pub launcher: i32,
    /// Set by a CREATE EXTENSION or CREATE DATABASE that committed: look at every database
    /// again now, not at the next periodic look.
    pub rescan: bool,
    pub slots: [Slot; MAX_DATABASES],
}

// SAFETY: plain old data (integers and arrays of them), no pointers: valid in shared memory.
unsafe impl PGRXSharedMemory for Registry {}

// SAFETY: the name is unique to this library and the lock is initialised by pg_shmem_init! in
// _PG_init before any use.
pub static REGISTRY: PgLwLock<Registry> = unsafe { PgLwLock::new(c"mail_gateway_registry") };

/// Set in the postmaster when the library is preloaded; inherited by every backend it forks.
/// Without it there is no shared memory, no launcher and nobody to wake.
static SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

/// Called from `_PG_init` while preloading.
pub fn init() {
    pg_shmem_init!(
        REGISTRY = Registry {
            launcher: 0,
            rescan: false,
            slots: [Slot::FREE; MAX_DATABASES],
        }
    );
    SHARED_MEMORY.store(true, Ordering::Relaxed);
}

pub fn available() -> bool {
    SHARED_MEMORY.load(Ordering::Relaxed)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Registry {
    pub fn slot(&self, database: u32) -> Option<&Slot> {
        self.slots.iter().find(|s| s.database == database)
    }

    pub fn slot_mut(&mut self, database: u32) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.database == database)
    }

    /// The database's slot, taking a free one for it when it has none (None: all taken).
    pub fn slot_for(&mut self, database: u32) -> Option<&mut Slot> {
        let index = self
            .slots
            .iter()
            .position(|s| s.database == database)
            .or_else(|| self.slots.iter().position(|s| s.database == 0))?;
        let slot = &mut self.slots[index];
        if slot.database != database {
            *slot = Slot {
                database,
                ..Slot::FREE
            };
        }
        Some(slot)
    }

    pub fn free(&mut self, database: u32) {
        if let Some(slot) = self.slot_mut(database) {
            *slot = Slot::FREE;
        }
    }
}

/// A worker of this database announces itself: false, and nothing recorded, when the database
/// is paused, and the worker must then leave without serving. The pause and the pids are read
/// and written under one lock, so a worker either is seen (and asked to stop) by the command
/// that pauses, or sees the pause: none slips in between and holds the database.
pub fn publish(index: usize, pid: i32) -> bool {
    if !available() || index > FETCHER {
        return true;
    }
    // SAFETY: MyDatabaseId is set once when the backend connects and only read here.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let mut registry = REGISTRY.exclusive();
    match registry.slot_for(database) {
        Some(slot) if slot.paused(now_ms()) => false,
        Some(slot) => {
            slot.pids[index] = pid;
            true
        }
        None => true,
    }
}

/// A worker of this database announces its end.
pub fn withdraw(index: usize) {
    if !available() || index > FETCHER {
        return;
    }
    // SAFETY: MyDatabaseId is set once when the backend connects and only read here.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    if let Some(slot) = REGISTRY.exclusive().slot_mut(database) {
        slot.pids[index] = 0;
    }
}

/// Records the state of this database (a worker found the extension, or found it gone).
pub fn set_state(state: DatabaseState) {
    if !available() {
        return;
    }
    // SAFETY: MyDatabaseId is set once when the backend connects and only read here.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let mut registry = REGISTRY.exclusive();
    if let Some(slot) = registry.slot_for(database) {
        slot.state = state;
        slot.since = now_ms();
    }
}

/// Sets the latch of process `pid`, if it is still there.
pub fn set_latch(pid: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: BackendPidGetProc returns the PGPROC of a live process or NULL; its latch lives in
    // shared memory as long as the process does.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&mut (*proc_).procLatch);
        }
    }
}

/// Wakes the launcher (it looks at every database again when `rescan`).
pub fn wake_launcher(rescan: bool) {
    if !available() {
        return;
    }
    let launcher = {
        let mut registry = REGISTRY.exclusive();
        registry.rescan |= rescan;
        registry.launcher
    };
    set_latch(launcher);
}
