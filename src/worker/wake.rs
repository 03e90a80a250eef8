//! Waking the workers when a transaction commits (no polling delay): `send_mail` (the
//! senders), `fetch_now` (the fetcher) and `CREATE EXTENSION` (the launcher) register, once per
//! transaction, a commit callback that sets the latches of this database's workers, whose pids
//! are in the registry. A rolled-back transaction wakes nobody.

use std::cell::Cell;

use pgrx::prelude::*;
use pgrx::{PgXactCallbackEvent, register_xact_callback};

use super::registry::{self, FETCHER, MAX_SENDERS, REGISTRY};

/// Whom a commit wakes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Senders,
    Fetcher,
    /// The launcher, to look at every database again (a new extension or database).
    Launcher,
}

impl Target {
    fn bit(self) -> u8 {
        match self {
            Target::Senders => 1,
            Target::Fetcher => 2,
            Target::Launcher => 4,
        }
    }
}

thread_local! {
    /// Targets to wake at the end of the current transaction (bits of `Target`); 0 = no
    /// callback registered yet.
    static PENDING: Cell<u8> = const { Cell::new(0) };
}

/// Wakes `target` when the current transaction commits.
pub fn at_commit(target: Target) {
    if !registry::available() {
        return;
    }
    let pending = PENDING.get();
    PENDING.set(pending | target.bit());
    if pending != 0 {
        return;
    }
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        let pending = PENDING.replace(0);
        for target in [Target::Senders, Target::Fetcher, Target::Launcher] {
            if pending & target.bit() != 0 {
                wake(target);
            }
        }
    });
    register_xact_callback(PgXactCallbackEvent::Abort, || PENDING.set(0));
}

fn wake(target: Target) {
    if target == Target::Launcher {
        return registry::wake_launcher(true);
    }
    // SAFETY: MyDatabaseId is set once when the backend connects and only read here.
    let here = unsafe { pg_sys::MyDatabaseId.to_u32() };
    let pids = match REGISTRY.share().slot(here) {
        Some(slot) => slot.pids,
        None => return,
    };
    let slots = match target {
        Target::Fetcher => FETCHER..FETCHER + 1,
        _ => 0..MAX_SENDERS,
    };
    for pid in &pids[slots] {
        registry::set_latch(*pid);
    }
}
