//! What the workers are doing, cluster-wide (`worker_status`): each database the launcher knows
//! of, its state — serving, starting, no extension, no worker slot — and its workers' pids. An
//! administrator sees here why a database's mail does not move (max_worker_processes used up,
//! say), which the log also says once.

use pgrx::prelude::*;

use crate::worker::registry::{self, FETCHER, REGISTRY};

#[pg_extern]
#[allow(clippy::type_complexity)]
pub fn workers() -> TableIterator<
    'static,
    (
        name!(database, Option<String>),
        name!(state, String),
        name!(since, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(paused, bool),
        name!(senders, Vec<i32>),
        name!(fetcher, Option<i32>),
    ),
> {
    if !registry::available() {
        return TableIterator::new(vec![]);
    }
    let registry = *REGISTRY.share();
    let now = registry::now_ms();
    let rows: Vec<_> = registry
        .slots
        .iter()
        .filter(|s| s.database != 0)
        .map(|s| {
            // SAFETY: a syscache lookup of a database's name; NULL when it no longer exists.
            let name = unsafe {
                let n = pg_sys::get_database_name(pg_sys::Oid::from(s.database));
                (!n.is_null()).then(|| std::ffi::CStr::from_ptr(n).to_string_lossy().into_owned())
            };
            let since = (s.since > 0).then(|| {
                pgrx::datum::TimestampWithTimeZone::try_from((s.since - 946_684_800_000) * 1000)
                    .ok()
            });
            (
                name,
                if s.starved {
                    "no worker slot".to_string()
                } else {
                    s.state.as_str().to_string()
                },
                since.flatten(),
                s.paused(now),
                s.pids[..FETCHER]
                    .iter()
                    .copied()
                    .filter(|p| *p != 0)
                    .collect(),
                Some(s.pids[FETCHER]).filter(|p| *p != 0),
            )
        })
        .collect();
    TableIterator::new(rows)
}
