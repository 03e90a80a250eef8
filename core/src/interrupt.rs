//! Long loops over a stranger's message ask here whether to stop. The extension installs
//! PostgreSQL's `CHECK_FOR_INTERRUPTS` (on its main thread only), so `statement_timeout`,
//! `pg_cancel_backend` and `pg_terminate_backend` end the analysis of any message at once;
//! without a hook (unit tests, fuzzing) it does nothing.

use std::sync::OnceLock;

static HOOK: OnceLock<fn()> = OnceLock::new();

/// Installs the check (once per process; later calls are ignored).
pub fn install(hook: fn()) {
    let _ = HOOK.set(hook);
}

/// Runs the installed check: it may not return (PostgreSQL raises its error as a panic).
#[inline]
pub fn check() {
    if let Some(hook) = HOOK.get() {
        hook();
    }
}
