//! The launcher ("mail_gateway launcher"): one process per cluster that starts and stops the
//! workers of every database the gateway serves — `mail_gateway.database`, or every database
//! when it is `*` (or empty). It connects to no database: it reads only shared catalogs (which
//! databases exist; whether the workers' role does), runs no SQL and no one's code, so it alone
//! keeps the postmaster's default role; the workers it starts connect as `mail_gateway.role`.
//!
//! For a database it knows nothing of, it starts the first worker, which looks for the
//! extension: found, the database is `Serving` and the launcher starts its other senders and its
//! fetcher; not found, `NoExtension`, looked at again after `RECHECK` — or at once when a
//! CREATE EXTENSION or CREATE DATABASE commits (`wake::Target::Launcher`). A worker that stops is
//! started again after `RESTART_DELAY`, unless its database is paused (a DROP, RENAME or
//! template copy of it is waiting for the workers to leave: `hooks`) or no longer served.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker};
use pgrx::bgworkers::{BackgroundWorkerStatus, SignalWakeFlags};
use pgrx::prelude::*;

use super::registry::{self, DatabaseState, FETCHER, REGISTRY, Slot};
use crate::gucs;

/// A stopped worker is started again this long after it was last started.
pub const RESTART_DELAY: Duration = Duration::from_secs(5);

/// A database without the extension is looked at again this often (CREATE EXTENSION wakes the
/// launcher at once; this is the safety net).
const RECHECK: Duration = Duration::from_secs(300);

/// A database whose first worker said nothing for this long is looked at again.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// What a worker is: its database, and its index (senders 0.., the fetcher `FETCHER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId {
    pub database: u32,
    pub index: usize,
}

impl WorkerId {
    /// The worker's arguments, in `bgw_extra`: database oid, role oid, index.
    fn extra(self, role: pg_sys::Oid) -> String {
        format!("{} {} {}", self.database, role.to_u32(), self.index)
    }

    /// The arguments of the running worker.
    pub fn parse(extra: &str) -> Option<(WorkerId, pg_sys::Oid)> {
        let mut parts = extra.split_whitespace().map(|p| p.parse::<u32>().ok());
        let database = parts.next()??;
        let role = parts.next()??;
        let index = parts.next()?? as usize;
        Some((WorkerId { database, index }, pg_sys::Oid::from(role)))
    }

    fn names(self) -> (String, &'static str, &'static str) {
        match self.index {
            FETCHER => (
                "mail_gateway fetcher".into(),
                "mail_gateway fetcher",
                "mail_gateway_fetcher_main",
            ),
            0 => (
                "mail_gateway worker".into(),
                "mail_gateway worker",
                "mail_gateway_worker_main",
            ),
            n => (
                format!("mail_gateway sender {n}"),
                "mail_gateway sender",
                "mail_gateway_worker_main",
            ),
        }
    }
}

/// A database as the launcher sees it in `pg_database`.
struct Database {
    oid: u32,
    name: String,
}

/// The databases `mail_gateway.database` names (all, for `*`) that accept connections and are
/// not templates. Read from the shared catalog directly: the launcher has no database.
fn databases() -> Vec<Database> {
    let wanted = gucs::database();
    let all = wanted.is_empty() || wanted == "*";
    BackgroundWorker::transaction(move || {
        let mut out = Vec::new();
        // SAFETY: a heap scan of the shared catalog pg_database, inside a transaction, closed
        // before it ends; each tuple is read through its FormData as PostgreSQL's own
        // get_database_list() does.
        unsafe {
            let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as _);
            let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let form =
                    pgrx::pg_sys::heap_tuple_get_struct::<pg_sys::FormData_pg_database>(tuple);
                let name = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                if (*form).datallowconn && !(*form).datistemplate && (all || name == wanted) {
                    out.push(Database {
                        oid: (*form).oid.to_u32(),
                        name,
                    });
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
        }
        out
    })
}

/// The workers' role, when it exists (CREATE EXTENSION creates it).
fn role() -> Option<pg_sys::Oid> {
    let name = std::ffi::CString::new(gucs::role()).ok()?;
    // SAFETY: a syscache lookup of the shared catalog pg_authid, inside a transaction.
    let oid =
        BackgroundWorker::transaction(move || unsafe { pg_sys::get_role_oid(name.as_ptr(), true) });
    (oid != pg_sys::InvalidOid).then_some(oid)
}

/// What the launcher started, and when.
struct Started {
    handle: DynamicBackgroundWorker,
    at: Instant,
}

struct Launcher {
    started: HashMap<WorkerId, Started>,
    /// Databases whose "no worker slot" or "too many databases" was logged already.
    told: std::collections::HashSet<u32>,
    role_missing_told: bool,
}

impl Launcher {
    /// Whether the worker runs, or is about to (registered, not yet started).
    fn running(&self, id: WorkerId, pids: &[i32]) -> bool {
        if pids[id.index] != 0 {
            return true;
        }
        self.started.get(&id).is_some_and(|s| {
            matches!(
                s.handle.pid(),
                Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted)
            )
        })
    }

    fn may_start(&self, id: WorkerId) -> bool {
        self.started
            .get(&id)
            .is_none_or(|s| s.at.elapsed() >= RESTART_DELAY)
    }

    /// Registers worker `id`; false when no background worker slot is free.
    fn start(&mut self, id: WorkerId, role: pg_sys::Oid) -> bool {
        let (name, kind, function) = id.names();
        let loaded = BackgroundWorkerBuilder::new(&name)
            .set_type(kind)
            .set_library("mail_gateway")
            .set_function(function)
            .set_extra(&id.extra(role))
            .enable_spi_access()
            .set_restart_time(None)
            // SAFETY: MyProcPid is set once at process start and only read here.
            .set_notify_pid(unsafe { pg_sys::MyProcPid })
            .load_dynamic();
        match loaded {
            Ok(handle) => {
                self.started.insert(
                    id,
                    Started {
                        handle,
                        at: Instant::now(),
                    },
                );
                true
            }
            Err(_) => false,
        }
    }

    /// One look at every database; returns how soon to look again.
    fn round(&mut self, rescan: bool) -> Duration {
        let Some(role) = role() else {
            if !self.role_missing_told {
                log!(
                    "mail_gateway launcher: role \"{}\" does not exist yet; waiting for CREATE EXTENSION mail_gateway",
                    gucs::role()
                );
                self.role_missing_told = true;
            }
            return gucs::poll_interval();
        };
        self.role_missing_told = false;
        let databases = databases();
        self.stop_unwanted(&databases);
        let mut soon = false;
        for db in &databases {
            soon |= self.serve(db, role, rescan);
        }
        if soon {
            Duration::from_millis(500).min(gucs::poll_interval())
        } else {
            gucs::poll_interval()
        }
    }

    /// Starts what database `db` needs; returns whether to look again soon.
    fn serve(&mut self, db: &Database, role: pg_sys::Oid, rescan: bool) -> bool {
        let now = registry::now_ms();
        let Some(mut slot) = self.slot(db) else {
            return false;
        };
        if slot.paused(now) {
            return true;
        }
        if rescan && slot.state == DatabaseState::NoExtension {
            self.look_again(db, &mut slot);
        }
        let age = Duration::from_millis(now.saturating_sub(slot.since).max(0) as u64);
        let first = WorkerId {
            database: db.oid,
            index: 0,
        };
        let wanted: Vec<WorkerId> = match slot.state {
            DatabaseState::Serving => (0..gucs::senders())
                .chain([FETCHER])
                .map(|index| WorkerId {
                    database: db.oid,
                    index,
                })
                .collect(),
            DatabaseState::NoExtension if !rescan && age < RECHECK => return false,
            DatabaseState::Checking if self.running(first, &slot.pids) || age < CHECK_TIMEOUT => {
                return true;
            }
            _ => vec![first],
        };
        if slot.starved
            && wanted.iter().all(|id| self.running(*id, &slot.pids))
            && let Some(s) = REGISTRY.exclusive().slot_mut(db.oid)
        {
            s.starved = false;
        }
        self.start_missing(db, role, &slot, wanted, now)
    }

    /// A copy of the database's slot in the registry; `None` (said once) when the registry
    /// is full.
    fn slot(&mut self, db: &Database) -> Option<Slot> {
        let mut registry = REGISTRY.exclusive();
        if let Some(slot) = registry.slot_for(db.oid) {
            return Some(*slot);
        }
        if self.told.insert(db.oid) {
            warning!(
                "mail_gateway launcher: more than {} databases; \"{}\" is not served",
                registry::MAX_DATABASES,
                db.name
            );
        }
        None
    }

    /// A CREATE EXTENSION or CREATE DATABASE committed: look again, now and until the first
    /// worker has looked (it may have to wait for its restart delay).
    fn look_again(&mut self, db: &Database, slot: &mut Slot) {
        slot.state = DatabaseState::Unknown;
        if let Some(s) = REGISTRY.exclusive().slot_mut(db.oid) {
            s.state = DatabaseState::Unknown;
        }
        // Its first worker ended cleanly when it found nothing: no restart delay.
        self.started.remove(&WorkerId {
            database: db.oid,
            index: 0,
        });
    }

    /// Starts the `wanted` workers that are not running (those whose restart delay has
    /// passed); returns whether some are still missing.
    fn start_missing(
        &mut self,
        db: &Database,
        role: pg_sys::Oid,
        slot: &Slot,
        wanted: Vec<WorkerId>,
        now: i64,
    ) -> bool {
        let mut pending = false;
        for id in wanted {
            if self.running(id, &slot.pids) {
                continue;
            }
            pending = true;
            if !self.may_start(id) {
                continue;
            }
            let started = self.start(id, role);
            let mut registry = REGISTRY.exclusive();
            let Some(slot) = registry.slot_mut(db.oid) else {
                break;
            };
            if !started {
                if !slot.starved {
                    warning!(
                        "mail_gateway launcher: no free background worker for database \"{}\" (max_worker_processes is used up); its mail waits. Each database needs mail_gateway.senders + 1 = {} workers, plus one launcher: raise max_worker_processes.",
                        db.name,
                        gucs::senders() + 1
                    );
                    slot.starved = true;
                }
                break;
            }
            if slot.state != DatabaseState::Serving {
                slot.state = DatabaseState::Checking;
                slot.since = now;
            }
        }
        pending
    }

    /// Stops the workers of databases no longer served (dropped, or no longer named by
    /// `mail_gateway.database`) and frees their slots once they are gone.
    fn stop_unwanted(&mut self, databases: &[Database]) {
        let wanted: std::collections::HashSet<u32> = databases.iter().map(|d| d.oid).collect();
        let mut registry = REGISTRY.exclusive();
        let mut gone = Vec::new();
        for slot in registry.slots.iter().filter(|s| s.database != 0) {
            if wanted.contains(&slot.database) {
                continue;
            }
            if slot.pids.iter().all(|p| *p == 0) {
                gone.push(slot.database);
            } else {
                terminate(&slot.pids);
            }
        }
        for database in gone {
            registry.free(database);
        }
        self.started.retain(|id, _| wanted.contains(&id.database));
    }
}

/// SIGTERM to a worker.
unsafe fn libc_kill(pid: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    const SIGTERM: i32 = 15;
    // SAFETY: kill(2) with a pid and a signal number.
    unsafe { kill(pid, SIGTERM) };
}

/// SIGTERM to the workers of a database (used by the utility hook before a DROP, RENAME or
/// template copy of it).
pub fn terminate(pids: &[i32]) {
    for pid in pids.iter().copied().filter(|p| *p != 0) {
        // SAFETY: as above.
        unsafe { libc_kill(pid) };
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn mail_gateway_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    REGISTRY.exclusive().launcher = std::process::id() as i32;
    log!(
        "mail_gateway launcher started: serving {}, workers as role \"{}\", pid {}",
        match gucs::database().as_str() {
            "" | "*" => "every database with the extension".to_string(),
            name => format!("database \"{name}\""),
        },
        gucs::role(),
        std::process::id()
    );
    let mut launcher = Launcher {
        started: HashMap::new(),
        told: Default::default(),
        role_missing_told: false,
    };
    let mut rescan = true;
    loop {
        let wait = launcher.round(rescan);
        if super::shutting_down() || !BackgroundWorker::wait_latch(Some(wait)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: the documented way for a background worker to reload its configuration after
            // SIGHUP, on its main thread.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            launcher.told.clear();
        }
        rescan = std::mem::take(&mut REGISTRY.exclusive().rescan);
    }
    REGISTRY.exclusive().launcher = 0;
    log!("mail_gateway launcher stopped");
    // Exit code 1: restarted by the postmaster unless the server is shutting down.
    // SAFETY: ends this background worker process the way PostgreSQL expects; nothing of ours runs
    // after it.
    unsafe { pg_sys::proc_exit(1) };
}
