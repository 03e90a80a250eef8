//! The utility hook: our workers never block a command on their database. `DROP DATABASE`,
//! `ALTER DATABASE … RENAME` and `… SET TABLESPACE`, and `CREATE DATABASE … TEMPLATE` refuse to
//! run while other sessions are connected to the database; before they run, the database's
//! workers are paused (the launcher starts none) and asked to stop, and afterwards — whether the
//! command succeeded or not — the pause ends. `CREATE EXTENSION mail_gateway`, `ALTER EXTENSION
//! mail_gateway UPDATE` and `CREATE DATABASE` wake the launcher when they commit, so that the
//! database is served at once.

use std::time::{Duration, Instant};

use pgrx::prelude::*;
use pgrx::{PgList, PgTryBuilder};

use super::registry::{self, REGISTRY};
use super::{launcher, wake};

/// How long a paused database stays paused if the session that paused it dies before it
/// resumes it.
const PAUSE_AT_MOST: Duration = Duration::from_secs(120);

/// How long the hook waits for the workers to leave before it runs the command (which itself
/// waits another 5 s for other sessions).
const LEAVE_WITHIN: Duration = Duration::from_secs(10);

static mut PREVIOUS: pg_sys::ProcessUtility_hook_type = None;

/// Called from `_PG_init` while preloading.
pub fn install() {
    // SAFETY: the postmaster loads the library once, single-threaded, before any backend runs.
    unsafe {
        PREVIOUS = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

/// What a utility statement means for the workers.
#[derive(Default)]
struct Effect {
    /// Databases whose workers must leave first.
    pause: Vec<u32>,
    /// The launcher looks at every database again after the commit.
    rescan: bool,
}

fn database_oid(name: *const std::os::raw::c_char) -> Option<u32> {
    if name.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated name from the parse tree; missing_ok.
    let oid = unsafe { pg_sys::get_database_oid(name, true) };
    (oid != pg_sys::InvalidOid).then(|| oid.to_u32())
}

/// The value of option `name` among a statement's `DefElem`s.
fn option(options: *mut pg_sys::List, name: &str) -> Option<*mut pg_sys::DefElem> {
    // SAFETY: a list of DefElem nodes from the parse tree.
    let list = unsafe { PgList::<pg_sys::DefElem>::from_pg(options) };
    list.iter_ptr().find(|d| {
        // SAFETY: each element is a DefElem with a NUL-terminated defname.
        unsafe { std::ffi::CStr::from_ptr((**d).defname) }.to_bytes() == name.as_bytes()
    })
}

/// # Safety
/// `stmt` is a utility statement's parse tree.
unsafe fn effect(stmt: *mut pg_sys::Node) -> Effect {
    let mut e = Effect::default();
    if stmt.is_null() {
        return e;
    }
    // SAFETY: the node's tag says which struct it is.
    unsafe {
        match (*stmt).type_ {
            pg_sys::NodeTag::T_DropdbStmt => {
                e.pause
                    .extend(database_oid((*(stmt as *mut pg_sys::DropdbStmt)).dbname));
            }
            pg_sys::NodeTag::T_RenameStmt => {
                let r = stmt as *mut pg_sys::RenameStmt;
                if (*r).renameType == pg_sys::ObjectType::OBJECT_DATABASE {
                    e.pause.extend(database_oid((*r).subname));
                }
            }
            pg_sys::NodeTag::T_AlterDatabaseStmt => {
                let a = stmt as *mut pg_sys::AlterDatabaseStmt;
                if option((*a).options, "tablespace").is_some() {
                    e.pause.extend(database_oid((*a).dbname));
                }
            }
            pg_sys::NodeTag::T_CreatedbStmt => {
                let c = stmt as *mut pg_sys::CreatedbStmt;
                if let Some(template) = option((*c).options, "template") {
                    e.pause.extend(database_oid(pg_sys::defGetString(template)));
                }
                e.rescan = true;
            }
            pg_sys::NodeTag::T_CreateExtensionStmt => {
                let c = stmt as *mut pg_sys::CreateExtensionStmt;
                e.rescan = std::ffi::CStr::from_ptr((*c).extname).to_bytes() == b"mail_gateway";
            }
            pg_sys::NodeTag::T_AlterExtensionStmt => {
                let a = stmt as *mut pg_sys::AlterExtensionStmt;
                e.rescan = std::ffi::CStr::from_ptr((*a).extname).to_bytes() == b"mail_gateway";
            }
            _ => {}
        }
    }
    e
}

/// Pauses database `oid` and asks its workers to stop; waits (a while) until they have.
fn pause(oid: u32) {
    let pids = {
        let mut registry = REGISTRY.exclusive();
        let Some(slot) = registry.slot_mut(oid) else {
            return;
        };
        slot.paused_until = registry::now_ms() + PAUSE_AT_MOST.as_millis() as i64;
        slot.pids
    };
    launcher::terminate(&pids);
    let started = Instant::now();
    while started.elapsed() < LEAVE_WITHIN {
        let left = REGISTRY
            .share()
            .slot(oid)
            .is_some_and(|s| s.pids.iter().any(|p| *p != 0));
        if !left {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
        pg_sys::check_for_interrupts!();
    }
}

fn resume(oid: u32) {
    if let Some(slot) = REGISTRY.exclusive().slot_mut(oid) {
        slot.paused_until = 0;
    }
    registry::wake_launcher(false);
}

#[pg_guard]
#[allow(clippy::too_many_arguments)]
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query: *const std::os::raw::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: the arguments are PostgreSQL's, passed on unchanged.
    let effect = unsafe { effect((*pstmt).utilityStmt) };
    if registry::available() {
        for oid in &effect.pause {
            pause(*oid);
        }
    }
    let run = || unsafe {
        // SAFETY: as above.
        match PREVIOUS {
            Some(previous) => {
                previous(pstmt, query, read_only_tree, context, params, env, dest, qc)
            }
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query,
                read_only_tree,
                context,
                params,
                env,
                dest,
                qc,
            ),
        }
    };
    if effect.pause.is_empty() {
        run();
    } else {
        PgTryBuilder::new(run)
            .finally(|| effect.pause.iter().for_each(|oid| resume(*oid)))
            .execute();
    }
    if effect.rescan {
        wake::at_commit(wake::Target::Launcher);
    }
}
