//! Server-level settings (GUCs), all under the `mail_gateway.` prefix.

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

static DATABASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(10_000);

pub fn init() {
    GucRegistry::define_string_guc(
        c"mail_gateway.database",
        c"Database whose mail the background worker serves.",
        c"On reload, a worker serving another database restarts to connect to this one.",
        &DATABASE,
        // Not Postmaster: the library may also be loaded after startup (without preloading),
        // and PostgreSQL refuses to define postmaster-level settings then.
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"mail_gateway.poll_interval",
        c"How often the worker looks for due work when nothing wakes it.",
        c"A safety net: committed mail wakes the worker at once.",
        &POLL_INTERVAL_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    // Typos such as mail_gateway.databse are refused instead of silently ignored.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"mail_gateway".as_ptr()) };
}

pub fn database() -> String {
    DATABASE
        .get()
        .and_then(|s| s.into_string().ok())
        .unwrap_or_else(|| "postgres".to_string())
}

pub fn poll_interval() -> std::time::Duration {
    std::time::Duration::from_millis(POLL_INTERVAL_MS.get().max(100) as u64)
}
